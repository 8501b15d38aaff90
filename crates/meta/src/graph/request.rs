//! Graph API requests as plain data, and reply parsing. The HTTP client in `rt` only moves
//! these bytes; every body and path is decided here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{GraphError, MetaError, MetaErrorCode};
use super::settings::{CallingSettings, PhoneSettings};
use crate::event::SessionDescription;
use crate::id::{MessageId, PhoneNumberId, WaCallId, WaId, cut};

/// Graph API version path segment, e.g. `v23.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiVersion(String);

impl ApiVersion {
    /// The default version, `v23.0` (reference §0: current integrations use v21–v23).
    pub fn v23() -> Self {
        Self("v23.0".into())
    }

    /// Parses `v<major>.<minor>`.
    pub fn parse(s: &str) -> Result<Self, GraphError> {
        let bad = || GraphError::InvalidRequest {
            reason: format!("api version {:?} is not v<major>.<minor>", cut(s, 64)),
        };
        let rest = s.strip_prefix('v').ok_or_else(bad)?;
        let (major, minor) = rest.split_once('.').ok_or_else(bad)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return Err(bad());
        }
        Ok(Self(s.to_owned()))
    }

    /// As written in paths.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ApiVersion {
    fn default() -> Self {
        Self::v23()
    }
}

/// HTTP method of a Graph request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST with a JSON body.
    Post,
}

/// A Graph request: method, path below the version segment, query, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphRequest {
    /// Method.
    pub method: HttpMethod,
    /// Path after `/{version}`, starting with `/`, e.g. `/106540352242922/calls`.
    pub path: String,
    /// Query parameters (not yet percent-encoded).
    pub query: Vec<(String, String)>,
    /// JSON body for POST.
    pub body: Option<Value>,
    /// Whether sending it twice has the effect of sending it once (GETs). Decides retries.
    pub idempotent: bool,
    /// Short name for logs and metrics (`connect`, `accept`, `call_permissions`, ...).
    pub name: &'static str,
}

impl GraphRequest {
    fn get(name: &'static str, path: String, query: Vec<(String, String)>) -> Self {
        Self {
            method: HttpMethod::Get,
            path,
            query,
            body: None,
            idempotent: true,
            name,
        }
    }

    fn post(name: &'static str, path: String, body: Value) -> Self {
        Self {
            method: HttpMethod::Post,
            path,
            query: Vec::new(),
            body: Some(body),
            idempotent: false,
            name,
        }
    }

    /// The full URL below `base` (e.g. `https://graph.facebook.com`), percent-encoding
    /// the query.
    pub fn url(&self, base: &str, version: &ApiVersion) -> String {
        let mut url = format!(
            "{}/{}{}",
            base.trim_end_matches('/'),
            version.as_str(),
            self.path
        );
        for (i, (k, v)) in self.query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&percent_encode(k));
            url.push('=');
            url.push_str(&percent_encode(v));
        }
        url
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An action on `POST /{phone-number-id}/calls` (reference §2). Meta's words.
#[derive(Debug, Clone, PartialEq)]
pub enum CallAction {
    /// Business-initiated call with the business's SDP offer (§2.2).
    Connect {
        /// The user.
        to: WaId,
        /// The business's SDP offer (a plain string, CRLF line ends).
        offer_sdp: String,
        /// Echoed in later webhooks; at most 512 chars.
        biz_opaque_callback_data: Option<String>,
    },
    /// Answer a user-initiated call early so ICE/DTLS can complete (§2.1).
    PreAccept {
        /// The call.
        call_id: WaCallId,
        /// The business's SDP answer.
        answer_sdp: String,
    },
    /// Answer the call; the SDP must equal the one sent in `pre_accept` (§2.1).
    Accept {
        /// The call.
        call_id: WaCallId,
        /// The same SDP answer as `pre_accept`.
        answer_sdp: String,
        /// Echoed in later webhooks; at most 512 chars.
        biz_opaque_callback_data: Option<String>,
    },
    /// Decline a user-initiated call not yet accepted.
    Reject {
        /// The call.
        call_id: WaCallId,
    },
    /// End a call, either direction; required for billing even after RTCP BYE (§2.3).
    Terminate {
        /// The call.
        call_id: WaCallId,
    },
}

impl CallAction {
    /// Meta's `action` value.
    pub fn action(&self) -> &'static str {
        match self {
            CallAction::Connect { .. } => "connect",
            CallAction::PreAccept { .. } => "pre_accept",
            CallAction::Accept { .. } => "accept",
            CallAction::Reject { .. } => "reject",
            CallAction::Terminate { .. } => "terminate",
        }
    }

    /// The call the action is about (`None` for `connect`, whose id comes in the reply).
    pub fn call_id(&self) -> Option<&WaCallId> {
        match self {
            CallAction::Connect { .. } => None,
            CallAction::PreAccept { call_id, .. }
            | CallAction::Accept { call_id, .. }
            | CallAction::Reject { call_id }
            | CallAction::Terminate { call_id } => Some(call_id),
        }
    }
}

/// The maximum length Meta allows for `biz_opaque_callback_data`.
pub const MAX_BIZ_OPAQUE_CALLBACK_DATA: usize = 512;

#[derive(Serialize)]
struct CallsBody<'a> {
    messaging_product: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a WaId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    call_id: Option<&'a WaCallId>,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<SessionDescription>,
    #[serde(skip_serializing_if = "Option::is_none")]
    biz_opaque_callback_data: Option<&'a str>,
}

/// `POST /{phone-number-id}/calls` with `action`. Refuses `biz_opaque_callback_data` over
/// 512 characters, which Meta would reject.
pub fn call_action_request(
    phone_number_id: &PhoneNumberId,
    action: &CallAction,
) -> Result<GraphRequest, GraphError> {
    let mut body = CallsBody {
        messaging_product: "whatsapp",
        to: None,
        call_id: action.call_id(),
        action: action.action(),
        session: None,
        biz_opaque_callback_data: None,
    };
    match action {
        CallAction::Connect {
            to,
            offer_sdp,
            biz_opaque_callback_data,
        } => {
            body.to = Some(to);
            body.session = Some(SessionDescription::offer(offer_sdp.clone()));
            body.biz_opaque_callback_data = biz_opaque_callback_data.as_deref();
        }
        CallAction::PreAccept { answer_sdp, .. } => {
            body.session = Some(SessionDescription::answer(answer_sdp.clone()));
        }
        CallAction::Accept {
            answer_sdp,
            biz_opaque_callback_data,
            ..
        } => {
            body.session = Some(SessionDescription::answer(answer_sdp.clone()));
            body.biz_opaque_callback_data = biz_opaque_callback_data.as_deref();
        }
        CallAction::Reject { .. } | CallAction::Terminate { .. } => {}
    }
    if let Some(data) = body.biz_opaque_callback_data
        && data.chars().count() > MAX_BIZ_OPAQUE_CALLBACK_DATA
    {
        return Err(GraphError::InvalidRequest {
            reason: "biz_opaque_callback_data longer than 512 characters".into(),
        });
    }
    let body = serde_json::to_value(&body).map_err(|e| GraphError::InvalidRequest {
        reason: e.to_string(),
    })?;
    Ok(GraphRequest::post(
        action.action(),
        format!("/{phone_number_id}/calls"),
        body,
    ))
}

/// `GET /{phone-number-id}/call_permissions?user_wa_id=` (reference §3.5).
pub fn call_permissions_request(phone_number_id: &PhoneNumberId, user: &WaId) -> GraphRequest {
    GraphRequest::get(
        "call_permissions",
        format!("/{phone_number_id}/call_permissions"),
        vec![("user_wa_id".into(), user.as_str().into())],
    )
}

/// `POST /{phone-number-id}/messages` with a free-form interactive `call_permission_request`
/// (reference §3.2); only inside the customer-service window. `body_text` is optional.
pub fn call_permission_request_message(
    phone_number_id: &PhoneNumberId,
    to: &WaId,
    body_text: Option<&str>,
) -> GraphRequest {
    let mut interactive = serde_json::json!({
        "type": "call_permission_request",
        "action": { "name": "call_permission_request" },
    });
    if let (Some(text), Some(obj)) = (body_text, interactive.as_object_mut()) {
        obj.insert("body".into(), serde_json::json!({ "text": text }));
    }
    let body = serde_json::json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to.as_str(),
        "type": "interactive",
        "interactive": interactive,
    });
    GraphRequest::post(
        "call_permission_request",
        format!("/{phone_number_id}/messages"),
        body,
    )
}

/// `GET /{phone-number-id}/settings`, with SIP credentials if asked (reference §4.2).
pub fn settings_request(
    phone_number_id: &PhoneNumberId,
    include_sip_credentials: bool,
) -> GraphRequest {
    let query = if include_sip_credentials {
        vec![("include_sip_credentials".into(), "true".into())]
    } else {
        Vec::new()
    };
    GraphRequest::get(
        "get_settings",
        format!("/{phone_number_id}/settings"),
        query,
    )
}

/// `POST /{phone-number-id}/settings` with `{"calling": …}` (reference §4.1). Only the keys
/// set are sent; remember `call_hours` is replaced wholesale.
pub fn update_settings_request(
    phone_number_id: &PhoneNumberId,
    calling: &CallingSettings,
) -> Result<GraphRequest, GraphError> {
    let body = serde_json::to_value(serde_json::json!({ "calling": calling })).map_err(|e| {
        GraphError::InvalidRequest {
            reason: e.to_string(),
        }
    })?;
    let mut req = GraphRequest::post(
        "update_settings",
        format!("/{phone_number_id}/settings"),
        body,
    );
    // Setting the same values twice leaves the same state.
    req.idempotent = true;
    Ok(req)
}

// ---------------------------------------------------------------------------------------
// Replies

/// `{"success": true}` (with or without `messaging_product`), the reply to `pre_accept`,
/// `accept`, `reject`, `terminate` and settings updates.
pub fn parse_success_reply(http_status: u16, body: &[u8]) -> Result<(), GraphError> {
    let v = reply_json(http_status, body)?;
    match v.get("success") {
        Some(Value::Bool(true)) => Ok(()),
        _ => Err(GraphError::InvalidReply {
            reason: format!("expected success:true, got {}", excerpt(body)),
        }),
    }
}

/// The reply to a business-initiated `connect`: `{"calls":[{"id":"wacid…"}]}`.
pub fn parse_connect_reply(http_status: u16, body: &[u8]) -> Result<WaCallId, GraphError> {
    let v = reply_json(http_status, body)?;
    let id = v
        .get("calls")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("id"))
        .and_then(Value::as_str)
        .ok_or_else(|| GraphError::InvalidReply {
            reason: format!("connect reply without calls[0].id: {}", excerpt(body)),
        })?;
    WaCallId::parse(id).map_err(|e| GraphError::InvalidReply {
        reason: e.to_string(),
    })
}

/// `permission.status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionStatus {
    /// `no_permission` (also what an uncallable number returns).
    NoPermission,
    /// `temporary`, with its expiry.
    Temporary,
    /// `permanent`.
    Permanent,
    /// Anything else, as sent.
    Other(String),
}

/// One `limits[]` entry of a permission action.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ActionLimit {
    /// ISO-8601 period (`PT24H`, `P7D`).
    pub time_period: String,
    /// Allowed in the period.
    pub max_allowed: u64,
    /// Used in the period.
    pub current_usage: u64,
    /// Only once `current_usage` reached `max_allowed`: Unix seconds when it resets.
    #[serde(default)]
    pub limit_expiration_time: Option<u64>,
}

/// One `actions[]` entry (`send_call_permission_request`, `start_call`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PermissionAction {
    /// The action.
    pub action_name: String,
    /// Whether it is allowed now.
    pub can_perform_action: bool,
    /// Its limits.
    #[serde(default)]
    pub limits: Vec<ActionLimit>,
}

/// The reply to `GET call_permissions` (reference §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPermissions {
    /// The permission.
    pub status: PermissionStatus,
    /// Expiry of a temporary permission, Unix seconds (`expiration_time` or `expiration`).
    pub expiration: Option<u64>,
    /// What the business may do now.
    pub actions: Vec<PermissionAction>,
}

impl CallPermissions {
    /// Whether `start_call` is allowed now (permission present and limits not hit).
    pub fn can_start_call(&self) -> bool {
        self.actions
            .iter()
            .any(|a| a.action_name == "start_call" && a.can_perform_action)
    }

    /// Whether a permission request may be sent now.
    pub fn can_request_permission(&self) -> bool {
        self.actions
            .iter()
            .any(|a| a.action_name == "send_call_permission_request" && a.can_perform_action)
    }
}

/// Parses the `call_permissions` reply.
pub fn parse_call_permissions_reply(
    http_status: u16,
    body: &[u8],
) -> Result<CallPermissions, GraphError> {
    let v = reply_json(http_status, body)?;
    let invalid = |what: &str| GraphError::InvalidReply {
        reason: format!("call_permissions reply: {what}"),
    };
    let permission = v
        .get("permission")
        .ok_or_else(|| invalid("no permission object"))?;
    let status = match permission.get("status").and_then(Value::as_str) {
        Some("no_permission") => PermissionStatus::NoPermission,
        Some("temporary") => PermissionStatus::Temporary,
        Some("permanent") => PermissionStatus::Permanent,
        Some(other) => PermissionStatus::Other(other.to_owned()),
        None => return Err(invalid("no permission.status")),
    };
    // The sample says `expiration_time`, the parameter table `expiration` (reference §3.5).
    let expiration = ["expiration_time", "expiration"]
        .iter()
        .find_map(|k| permission.get(*k))
        .and_then(|t| {
            t.as_u64()
                .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
        });
    let actions = match v.get("actions") {
        None | Some(Value::Null) => Vec::new(),
        Some(a) => serde_json::from_value(a.clone()).map_err(|e| invalid(&e.to_string()))?,
    };
    Ok(CallPermissions {
        status,
        expiration,
        actions,
    })
}

/// The reply to a message send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSent {
    /// `messages[0].id`, the wamid a permission reply's `context.id` will name.
    pub message_id: MessageId,
    /// `contacts[0].wa_id`.
    pub wa_id: Option<WaId>,
}

/// Parses a message send reply.
pub fn parse_message_reply(http_status: u16, body: &[u8]) -> Result<MessageSent, GraphError> {
    let v = reply_json(http_status, body)?;
    let id = v
        .get("messages")
        .and_then(|m| m.get(0))
        .and_then(|m| m.get("id"))
        .and_then(Value::as_str)
        .ok_or_else(|| GraphError::InvalidReply {
            reason: format!("message reply without messages[0].id: {}", excerpt(body)),
        })?;
    let message_id = MessageId::parse(id).map_err(|e| GraphError::InvalidReply {
        reason: e.to_string(),
    })?;
    let wa_id = v
        .get("contacts")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("wa_id"))
        .and_then(Value::as_str)
        .and_then(|s| WaId::parse(s).ok());
    Ok(MessageSent { message_id, wa_id })
}

/// Parses the `GET settings` reply.
pub fn parse_settings_reply(http_status: u16, body: &[u8]) -> Result<PhoneSettings, GraphError> {
    let v = reply_json(http_status, body)?;
    serde_json::from_value(v).map_err(|e| GraphError::InvalidReply {
        reason: format!("settings reply: {e}"),
    })
}

/// Turns any non-2xx reply into a [`GraphError`]: Meta's error body when it parses, else
/// [`GraphError::UnexpectedStatus`].
pub fn parse_error_reply(http_status: u16, body: &[u8]) -> GraphError {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let code = err.and_then(|e| e.get("code")).and_then(Value::as_i64);
    let (Some(err), Some(code)) = (err, code) else {
        return GraphError::UnexpectedStatus {
            http_status,
            body: excerpt(body),
        };
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(|s| cut(s, 512).to_owned());
    GraphError::Meta(Box::new(MetaError {
        http_status,
        code: MetaErrorCode::from_code(code),
        subcode: err.get("error_subcode").and_then(Value::as_i64),
        message: text(err.get("message")).unwrap_or_default(),
        error_type: text(err.get("type")),
        details: text(err.get("error_data").and_then(|d| d.get("details"))),
        fbtrace_id: text(err.get("fbtrace_id")),
    }))
}

fn reply_json(http_status: u16, body: &[u8]) -> Result<Value, GraphError> {
    if !(200..300).contains(&http_status) {
        return Err(parse_error_reply(http_status, body));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| GraphError::InvalidReply {
        reason: format!("not json ({e}): {}", excerpt(body)),
    })?;
    // Graph sometimes reports errors with 200 in batch contexts; honour an error body.
    if v.get("error").is_some() {
        return Err(parse_error_reply(http_status, body));
    }
    Ok(v)
}

fn excerpt(body: &[u8]) -> String {
    cut(&String::from_utf8_lossy(&body[..body.len().min(256)]), 64).to_owned()
}
