//! The TOML schema as read by serde. Every table refuses unknown keys; values that need
//! checking beyond their type keep their span so errors can point at them.
//! Defaults are applied in `config::convert`, not here.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) meta: Option<S<RawMeta>>,
    #[serde(default)]
    pub(crate) business_numbers: Vec<S<RawBusinessNumber>>,
    pub(crate) webhook: Option<S<RawWebhook>>,
    pub(crate) sip: Option<S<RawSip>>,
    pub(crate) pbx: Option<S<RawPbx>>,
    pub(crate) media: Option<S<RawMedia>>,
    pub(crate) headers: Option<S<RawHeaders>>,
    pub(crate) logging: Option<S<RawLogging>>,
    pub(crate) cdr: Option<S<RawCdr>>,
    pub(crate) admin: Option<S<RawAdmin>>,
    pub(crate) outbound: Option<S<RawOutbound>>,
    #[serde(default)]
    pub(crate) schedules: BTreeMap<String, S<RawSchedule>>,
    pub(crate) dialplan: Option<S<RawDialPlan>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMeta {
    pub(crate) graph_base_url: Option<S<String>>,
    pub(crate) api_version: Option<S<String>>,
    pub(crate) waba_id: Option<S<String>>,
    pub(crate) access_token: Option<S<toml::Value>>,
    pub(crate) app_secret: Option<S<toml::Value>>,
    pub(crate) verify_token: Option<S<toml::Value>>,
    pub(crate) request_timeout_ms: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBusinessNumber {
    pub(crate) phone_number_id: S<String>,
    pub(crate) number: S<String>,
    pub(crate) label: Option<String>,
    pub(crate) business_initiated_calls: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub(crate) listen: Option<S<String>>,
    pub(crate) path: Option<S<String>>,
    pub(crate) tls_cert: Option<S<String>>,
    pub(crate) tls_key: Option<S<String>>,
    pub(crate) max_event_age_s: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSip {
    #[serde(default)]
    pub(crate) listen: Vec<S<RawSipListen>>,
    pub(crate) user_agent: Option<S<String>>,
    pub(crate) advertised_host: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSipListen {
    pub(crate) transport: S<String>,
    pub(crate) address: S<String>,
    pub(crate) tls_cert: Option<S<String>>,
    pub(crate) tls_key: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPbx {
    pub(crate) address: S<String>,
    pub(crate) transport: Option<S<String>>,
    pub(crate) domain: Option<S<String>>,
    pub(crate) outbound_auth: Option<S<RawDigest>>,
    pub(crate) inbound_auth: Option<S<RawDigest>>,
    #[serde(default)]
    pub(crate) allowed_sources: Vec<S<String>>,
    pub(crate) codecs: Option<S<Vec<S<String>>>>,
    pub(crate) options_ping_interval_s: Option<S<u64>>,
    pub(crate) tls_ca: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDigest {
    pub(crate) username: S<String>,
    pub(crate) password: Option<S<toml::Value>>,
    pub(crate) realm: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMedia {
    pub(crate) bind: Option<S<String>>,
    pub(crate) public_address: Option<S<String>>,
    pub(crate) rtp_port_min: Option<S<u32>>,
    pub(crate) rtp_port_max: Option<S<u32>>,
    pub(crate) opus_complexity: Option<S<u32>>,
    pub(crate) ptime_ms: Option<S<u32>>,
    pub(crate) webrtc_sockets: Option<S<u32>>,
    pub(crate) webrtc_socket_buffer_bytes: Option<S<u64>>,
    pub(crate) jitter_buffer_frames: Option<S<u32>>,
    pub(crate) rtp_socket_buffer_bytes: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaders {
    pub(crate) call_id: Option<S<String>>,
    pub(crate) customer_number: Option<S<String>>,
    pub(crate) customer_name: Option<S<String>>,
    pub(crate) cta_payload: Option<S<String>>,
    pub(crate) deeplink_payload: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogging {
    pub(crate) format: Option<S<String>>,
    pub(crate) level: Option<S<String>>,
    pub(crate) redact_phone_numbers: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCdr {
    pub(crate) path: Option<S<String>>,
    pub(crate) jsonl_path: Option<S<String>>,
    pub(crate) rate_currency: Option<S<String>>,
    #[serde(default)]
    pub(crate) rates: BTreeMap<String, S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) listen: Option<S<String>>,
    pub(crate) drain_timeout_s: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutbound {
    pub(crate) auto_permission_request: Option<bool>,
    pub(crate) permission_request_text: Option<S<String>>,
    pub(crate) max_consecutive_unanswered: Option<S<u32>>,
    pub(crate) max_connected_calls_per_user_per_day: Option<S<u32>>,
    pub(crate) ring_timeout_s: Option<S<u64>>,
    pub(crate) rejected_status: Option<S<u16>>,
    pub(crate) early_ringback: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub(crate) time_zone: S<String>,
    #[serde(default)]
    pub(crate) open: Vec<S<String>>,
    #[serde(default)]
    pub(crate) holidays: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDialPlan {
    pub(crate) ring_timeout_s: Option<S<u64>>,
    #[serde(default)]
    pub(crate) rule: Vec<S<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) name: Option<S<String>>,
    pub(crate) direction: S<String>,
    // --- matches ---
    pub(crate) business: Option<S<String>>,
    pub(crate) customer: Option<S<RawMatch>>,
    pub(crate) cta_payload: Option<S<RawMatch>>,
    pub(crate) deeplink_payload: Option<S<RawMatch>>,
    pub(crate) schedule: Option<S<String>>,
    // --- actions, inbound ---
    pub(crate) target: Option<S<String>>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, S<String>>,
    pub(crate) ring_timeout_s: Option<S<u64>>,
    #[serde(default)]
    pub(crate) fallback: Vec<S<RawFallback>>,
    pub(crate) closed: Option<S<String>>,
    pub(crate) reject: Option<bool>,
    // --- actions, outbound ---
    pub(crate) whatsapp_user: Option<S<String>>,
    pub(crate) from_business: Option<S<String>>,
    pub(crate) auto_permission_request: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    pub(crate) exact: Option<S<String>>,
    pub(crate) prefix: Option<S<String>>,
    pub(crate) regex: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFallback {
    pub(crate) on: S<Vec<S<String>>>,
    pub(crate) target: S<String>,
    pub(crate) ring_timeout_s: Option<S<u64>>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, S<String>>,
}
