//! Webhook payloads built independently of `whatsip-meta`, following reference §1.2–§1.6,
//! §3.4 and §4.5 (numeric-looking values as strings, `duration` an integer).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

use crate::ids::{PhoneNumberId, WaCallId, WaId, WabaId, Wamid};

/// One change to deliver: the deliverer wraps it in Meta's envelope (§1.2) and may batch
/// several changes in one POST.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Webhook {
    /// `entry[].id`.
    pub waba_id: WabaId,
    /// `changes[].field`: `calls`, `messages` or `account_settings_update`.
    pub field: &'static str,
    /// `changes[].value`.
    pub value: Value,
    /// The call this change is about, for fault rules and per-call ordering.
    pub call_id: Option<WaCallId>,
    /// Short name for logs and fault matching: `connect`, `terminate`, `RINGING`,
    /// `ACCEPTED`, `REJECTED`, `call_permission_reply`, `message_status`,
    /// `account_settings_update`.
    pub label: String,
}

/// Seconds since the epoch as Meta sends them: a decimal string.
pub(crate) fn epoch_str(t: SystemTime) -> String {
    epoch_secs(t).to_string()
}

pub(crate) fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Identity of the business number in payloads.
pub(crate) struct NumberMeta<'a> {
    pub(crate) pnid: &'a PhoneNumberId,
    pub(crate) display: &'a str,
}

pub(crate) fn metadata(n: &NumberMeta<'_>) -> Value {
    json!({ "display_phone_number": n.display, "phone_number_id": n.pnid.as_str() })
}

pub(crate) fn contacts(user: &WaId, name: &str) -> Value {
    json!([{ "profile": { "name": name }, "wa_id": user.as_str() }])
}

/// `value` of a `calls` change with one call object (§1.2).
pub(crate) fn calls_value(
    n: &NumberMeta<'_>,
    user: &WaId,
    name: &str,
    call: Value,
    errors: Option<Value>,
) -> Value {
    let mut v = json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(n),
        "contacts": contacts(user, name),
        "calls": [call],
    });
    if let (Some(errors), Some(obj)) = (errors, v.as_object_mut()) {
        obj.insert("errors".into(), errors);
    }
    v
}

/// `value` of a business-initiated status change (§1.5).
pub(crate) fn status_value(
    n: &NumberMeta<'_>,
    user: &WaId,
    name: &str,
    id: &WaCallId,
    status: &str,
    at: SystemTime,
    biz_opaque: Option<&str>,
) -> Value {
    let mut st = json!({
        "id": id.as_str(),
        "timestamp": epoch_str(at),
        "type": "call",
        "status": status,
        "recipient_id": user.as_str(),
    });
    if let (Some(b), Some(obj)) = (biz_opaque, st.as_object_mut()) {
        obj.insert("biz_opaque_callback_data".into(), Value::from(b));
    }
    json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(n),
        "contacts": contacts(user, name),
        "statuses": [st],
    })
}

/// A `terminate` / `connect` error entry (§1.6).
pub(crate) fn call_error(code: u32, title: &str, details: &str) -> Value {
    json!([{
        "code": code,
        "title": title,
        "message": title,
        "error_data": { "details": details },
    }])
}

/// The reply of §3.4.
pub(crate) struct PermissionReplyPayload<'a> {
    pub(crate) accept: bool,
    pub(crate) permanent: bool,
    pub(crate) expires: Option<SystemTime>,
    pub(crate) automatic: bool,
    /// `context.id`: the request's wamid or the call's wacid.
    pub(crate) context_id: Option<&'a str>,
}

pub(crate) fn permission_reply_value(
    n: &NumberMeta<'_>,
    user: &WaId,
    name: &str,
    msg_id: &Wamid,
    at: SystemTime,
    r: &PermissionReplyPayload<'_>,
) -> Value {
    let mut reply = serde_json::Map::new();
    reply.insert(
        "response".into(),
        Value::from(if r.accept { "accept" } else { "reject" }),
    );
    if r.accept {
        reply.insert("is_permanent".into(), Value::from(r.permanent));
        if let Some(e) = r.expires {
            reply.insert("expiration_timestamp".into(), Value::from(epoch_str(e)));
        }
    }
    reply.insert(
        "response_source".into(),
        Value::from(if r.automatic {
            "automatic"
        } else {
            "user_action"
        }),
    );
    let mut msg = json!({
        "from": user.as_str(),
        "id": msg_id.as_str(),
        "timestamp": epoch_str(at),
        "type": "interactive",
        "interactive": {
            "type": "call_permission_reply",
            "call_permission_reply": Value::Object(reply),
        },
    });
    if let (Some(ctx), Some(obj)) = (r.context_id, msg.as_object_mut()) {
        obj.insert(
            "context".into(),
            json!({ "from": user.as_str(), "id": ctx }),
        );
    }
    json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(n),
        "contacts": contacts(user, name),
        "messages": [msg],
    })
}

/// A message status (`sent`, `delivered`) on the `messages` field.
pub(crate) fn message_status_value(
    n: &NumberMeta<'_>,
    user: &WaId,
    msg_id: &Wamid,
    status: &str,
    at: SystemTime,
) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(n),
        "statuses": [{
            "id": msg_id.as_str(),
            "status": status,
            "timestamp": epoch_str(at),
            "recipient_id": user.as_str(),
        }],
    })
}

/// `account_settings_update` (§4.5).
pub(crate) fn settings_update_value(
    pnid: &PhoneNumberId,
    calling: &Value,
    at: SystemTime,
) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "timestamp": epoch_str(at),
        "type": "phone_number_settings",
        "phone_number_settings": { "phone_number_id": pnid.as_str(), "calling": calling },
    })
}

/// Wraps changes in Meta's envelope (§1.2): one `entry` per WABA, changes in order.
pub fn envelope(changes: &[Webhook]) -> Value {
    let mut entries: Vec<(String, Vec<Value>)> = Vec::new();
    for c in changes {
        let change = json!({ "field": c.field, "value": c.value });
        match entries.iter_mut().find(|(id, _)| id == c.waba_id.as_str()) {
            Some((_, list)) => list.push(change),
            None => entries.push((c.waba_id.as_str().to_owned(), vec![change])),
        }
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": entries
            .into_iter()
            .map(|(id, changes)| json!({ "id": id, "changes": changes }))
            .collect::<Vec<_>>(),
    })
}

/// Serialises a JSON value with object keys in the order Meta's samples use (§1.2–§1.6,
/// §3.4) instead of serde_json's alphabetical order. Unknown keys follow, alphabetically.
pub struct MetaOrder<'a>(pub &'a Value);

const KEY_ORDER: &[&str] = &[
    "object",
    "entry",
    "id",
    "changes",
    "field",
    "value",
    "messaging_product",
    "metadata",
    "display_phone_number",
    "phone_number_id",
    "contacts",
    "profile",
    "name",
    "wa_id",
    "input",
    "calls",
    "statuses",
    "messages",
    "from",
    "to",
    "event",
    "timestamp",
    "direction",
    "start_time",
    "end_time",
    "duration",
    "type",
    "status",
    "recipient_id",
    "success",
    "biz_opaque_callback_data",
    "deeplink_payload",
    "cta_payload",
    "session",
    "sdp_type",
    "sdp",
    "context",
    "interactive",
    "call_permission_reply",
    "response",
    "is_permanent",
    "expiration_timestamp",
    "response_source",
    "permission",
    "expiration_time",
    "actions",
    "action_name",
    "can_perform_action",
    "limits",
    "time_period",
    "max_allowed",
    "current_usage",
    "limit_expiration_time",
    "errors",
    "error",
    "message",
    "code",
    "title",
    "error_data",
    "details",
    "fbtrace_id",
    "phone_number_settings",
    "calling",
];

impl Serialize for MetaOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(m) => {
                let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                entries.sort_by_key(|(k, _)| {
                    (
                        KEY_ORDER.iter().position(|o| o == k).unwrap_or(usize::MAX),
                        k.as_str(),
                    )
                });
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, &MetaOrder(v))?;
                }
                map.end()
            }
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&MetaOrder(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}
