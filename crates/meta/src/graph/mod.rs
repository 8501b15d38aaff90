//! Graph API: request building, reply parsing, Meta's error codes, the settings object.

mod error;
mod request;
mod settings;

pub use error::{DOCUMENTED_CODES, GraphError, MetaError, MetaErrorCode};
pub use request::{
    ActionLimit, ApiVersion, CallAction, CallPermissions, GraphRequest, HttpMethod,
    MAX_BIZ_OPAQUE_CALLBACK_DATA, MessageSent, PermissionAction, PermissionStatus,
    call_action_request, call_permission_request_message, call_permissions_request,
    parse_call_permissions_reply, parse_connect_reply, parse_error_reply, parse_message_reply,
    parse_settings_reply, parse_success_reply, settings_request, update_settings_request,
};
pub use settings::{
    AudioSettings, CallHours, CallIconVisibility, CallIcons, CallingSettings, Holiday,
    OperatingHours, PhoneSettings, Restriction, Restrictions, SipServer, SipSettings,
    SrtpKeyExchange, Toggle,
};
