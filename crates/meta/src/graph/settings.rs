//! The calling settings object of `GET`/`POST /{phone-number-id}/settings` (reference §4) and
//! of the `account_settings_update` webhook (§4.5).
//!
//! Every key is optional (a POST sends only what it changes) and unknown keys are kept in
//! `extra`, so settings Meta adds later survive a read-modify-write. Note Meta's rule:
//! `call_hours` is replaced wholesale on each POST and omitting `holiday_schedule` deletes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::secret::SipPassword;
use crate::wire_enum::wire_enum;

wire_enum!(
    /// `ENABLED` / `DISABLED`.
    Toggle { /// `ENABLED`
        Enabled = "ENABLED", /// `DISABLED`
        Disabled = "DISABLED" }
);

wire_enum!(
    /// `call_icon_visibility`.
    CallIconVisibility { /// Icon shown.
        Default = "DEFAULT", /// Icon and external entry points hidden.
        DisableAll = "DISABLE_ALL", /// Mentioned by the FAQ.
        HideInChat = "HIDE_IN_CHAT" }
);

wire_enum!(
    /// `srtp_key_exchange_protocol`.
    SrtpKeyExchange { /// DTLS-SRTP (default).
        Dtls = "DTLS", /// SDES (`a=crypto`).
        Sdes = "SDES" }
);

/// The `calling` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallingSettings {
    /// Calling on/off (controls the call icon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Toggle>,
    /// Where the call icon shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_icon_visibility: Option<CallIconVisibility>,
    /// Country restriction of the call icon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_icons: Option<CallIcons>,
    /// Opening hours; replaced wholesale on each POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_hours: Option<CallHours>,
    /// Whether a user's call grants a temporary permission (reference §3.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_permission_status: Option<Toggle>,
    /// DTLS (default) or SDES; GET omits it unless set explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtp_key_exchange_protocol: Option<SrtpKeyExchange>,
    /// Extra codecs Meta transcodes to (`PCMA`, `PCMU`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioSettings>,
    /// SIP mode (reference §5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipSettings>,
    /// Calling restrictions (GET only, reference §4.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restrictions: Option<Restrictions>,
    /// Keys this version does not know, kept as sent.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `call_icons`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallIcons {
    /// ISO-3166 alpha-2 list; `[]` means no restriction.
    #[serde(default)]
    pub restrict_to_user_countries: Vec<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `call_hours`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallHours {
    /// Disabled means open 24×7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Toggle>,
    /// IANA time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone_id: Option<String>,
    /// At most 2 entries per day, open before close, no overlap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekly_operating_hours: Vec<OperatingHours>,
    /// At most 20 entries; omitting it on POST deletes the existing schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holiday_schedule: Option<Vec<Holiday>>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One `weekly_operating_hours` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatingHours {
    /// `MONDAY` … `SUNDAY`.
    pub day_of_week: String,
    /// `"HHMM"`.
    pub open_time: String,
    /// `"HHMM"`.
    pub close_time: String,
}

/// One `holiday_schedule` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holiday {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `"HHMM"`.
    pub start_time: String,
    /// `"HHMM"`.
    pub end_time: String,
}

/// `audio`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudioSettings {
    /// `["PCMA","PCMU"]` or `[]`.
    #[serde(default)]
    pub additional_codecs: Vec<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `sip`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SipSettings {
    /// SIP mode on/off. On, Graph calling returns 131055 and calls webhooks stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Toggle>,
    /// One server per number; `[]` deletes this app's server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<SipServer>>,
    /// Unknown keys (e.g. the reported `webhook_delivery`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One SIP server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SipServer {
    /// Required on POST.
    pub hostname: String,
    /// TLS port, default 5061.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Appended to the user part of Meta's Request-URI.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request_uri_user_params: BTreeMap<String, String>,
    /// The app that configured the server (GET only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<Value>,
    /// Digest password (GET with `include_sip_credentials=true` only); never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_user_password: Option<SipPassword>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `restrictions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Restrictions {
    /// Active restrictions.
    #[serde(default)]
    pub restrictions_list: Vec<Restriction>,
}

/// One restriction (`RESTRICTED_BUSINESS_INITIATED_CALLING`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restriction {
    /// Restriction type as sent.
    #[serde(rename = "type")]
    pub restriction_type: String,
    /// Human-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds when it lifts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
}

/// The `GET /{id}/settings` reply: `calling` plus the number's other settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhoneSettings {
    /// The calling settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calling: Option<CallingSettings>,
    /// Non-calling settings, kept as sent.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}
