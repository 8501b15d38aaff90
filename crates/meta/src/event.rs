//! Typed webhook events and the tolerant envelope parser.
//!
//! Parsing is reachable only through [`crate::VerifiedWebhook::parse`], so nothing is parsed
//! before its signature is checked. The parser never fails on unknown fields, unknown change
//! fields, unknown call events or one malformed item: each becomes a [`ParseNote`] and the
//! rest of the batch is still delivered (Meta batches up to 1000 updates per POST).

use std::time::Duration;

use serde_json::Value;

use crate::graph::{CallingSettings, MetaErrorCode};
use crate::id::{MessageId, PhoneNumberId, UnixTime, WaCallId, WaId, WabaId, cut};
use crate::json::{FieldError, Obj};
use crate::wire_enum::wire_enum;

/// Everything one POST carried: the typed events in delivery order, plus notes on what was
/// skipped or not understood.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedWebhook {
    /// Recognised events.
    pub events: Vec<WebhookEvent>,
    /// Unknown fields, unknown events, skipped invalid items.
    pub notes: Vec<ParseNote>,
}

/// Something the parser tolerated rather than failed on. Paths look like
/// `entry[0].changes[1].value.calls[0].recording`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseNote {
    /// A field this version does not know.
    UnknownField {
        /// Where.
        path: String,
    },
    /// A change `field` this crate does not handle (e.g. `message_template_status_update`).
    UnknownChangeField {
        /// Where.
        path: String,
        /// The `field` value.
        field: String,
    },
    /// A `calls[]` item with an unknown `event` (e.g. `call_created` in SIP mode).
    UnknownEvent {
        /// Where.
        path: String,
        /// The `event` value.
        event: String,
    },
    /// Known but of no interest to calling (text messages, delivery receipts).
    Ignored {
        /// Where.
        path: String,
        /// What it was.
        what: String,
    },
    /// An item that was malformed and skipped.
    InvalidItem {
        /// Where the problem is.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The top-level `object` is not `whatsapp_business_account`.
    UnexpectedObject {
        /// The value sent.
        object: String,
    },
}

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventContext {
    /// `entry[].id`, the WhatsApp Business Account.
    pub waba_id: Option<WabaId>,
    /// `metadata.phone_number_id`, the business number the event is for.
    pub phone_number_id: Option<PhoneNumberId>,
    /// `metadata.display_phone_number` (digits).
    pub display_phone_number: Option<String>,
}

/// One event with its context.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// Which WABA and business number.
    pub context: EventContext,
    /// The event.
    pub event: Event,
    /// Set by the webhook server on a `connect` whose `terminate` arrived first: the caller
    /// hung up before the offer reached us. Record the attempt; never start the call.
    pub after_terminate: bool,
}

/// A typed event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `calls[].event = connect`: a user-initiated call offered (SDP offer), or the SDP
    /// answer to a business-initiated call.
    Connect(CallConnect),
    /// `calls[].event = terminate`: the call ended, whatever the reason.
    Terminate(CallTerminate),
    /// `statuses[]` on `calls`: RINGING / ACCEPTED / REJECTED of a business-initiated call.
    Status(CallStatus),
    /// `messages[].interactive.call_permission_reply`.
    PermissionReply(PermissionReply),
    /// A message send failed (`messages` field `statuses[].status = failed`), e.g. 131026
    /// for a permission request to an old client.
    MessageFailed(MessageFailed),
    /// `value.errors[]` not attached to any call or message (e.g. 131044 payment problem).
    Errors(ErrorsEvent),
    /// `account_settings_update`.
    AccountSettingsUpdate(AccountSettingsUpdate),
    /// `account_update` (calling quality enforcement).
    AccountUpdate(AccountUpdate),
}

impl Event {
    /// The call id, for call events.
    pub fn call_id(&self) -> Option<&WaCallId> {
        match self {
            Event::Connect(c) => Some(&c.call_id),
            Event::Terminate(t) => Some(&t.call_id),
            Event::Status(s) => Some(&s.call_id),
            _ => None,
        }
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Connect(_) => "connect",
            Event::Terminate(_) => "terminate",
            Event::Status(_) => "status",
            Event::PermissionReply(_) => "call_permission_reply",
            Event::MessageFailed(_) => "message_failed",
            Event::Errors(_) => "errors",
            Event::AccountSettingsUpdate(_) => "account_settings_update",
            Event::AccountUpdate(_) => "account_update",
        }
    }
}

/// Who placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallDirection {
    /// `USER_INITIATED`: a WhatsApp user calls the business.
    UserInitiated,
    /// `BUSINESS_INITIATED`: the business called the user.
    BusinessInitiated,
}

impl CallDirection {
    /// Meta's wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::UserInitiated => "USER_INITIATED",
            CallDirection::BusinessInitiated => "BUSINESS_INITIATED",
        }
    }

    fn from_wire(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("USER_INITIATED") {
            Some(CallDirection::UserInitiated)
        } else if s.eq_ignore_ascii_case("BUSINESS_INITIATED") {
            Some(CallDirection::BusinessInitiated)
        } else {
            None
        }
    }
}

/// `offer` or `answer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// SDP offer.
    Offer,
    /// SDP answer.
    Answer,
}

/// `session`: an SDP with its role. The SDP is a plain string with CRLF line ends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionDescription {
    /// Offer or answer.
    pub sdp_type: SdpType,
    /// The SDP text.
    pub sdp: String,
}

impl SessionDescription {
    /// An SDP offer.
    pub fn offer(sdp: impl Into<String>) -> Self {
        Self {
            sdp_type: SdpType::Offer,
            sdp: sdp.into(),
        }
    }

    /// An SDP answer.
    pub fn answer(sdp: impl Into<String>) -> Self {
        Self {
            sdp_type: SdpType::Answer,
            sdp: sdp.into(),
        }
    }
}

/// `contacts[]`: the WhatsApp user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// `wa_id`.
    pub wa_id: WaId,
    /// `profile.name`; a personal name, log it only through a redaction wrapper.
    pub name: Option<String>,
}

/// A `connect` webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct CallConnect {
    /// The call.
    pub call_id: WaCallId,
    /// Caller: the user (user-initiated) or the business number (business-initiated).
    pub from: WaId,
    /// Callee: the business display number (user-initiated) or the user.
    pub to: WaId,
    /// When Meta created the event.
    pub timestamp: UnixTime,
    /// Who placed the call; inferred from the SDP role when Meta omitted it.
    pub direction: CallDirection,
    /// Meta's offer (user-initiated) or answer (business-initiated).
    pub session: SessionDescription,
    /// `biz_payload` of a `wa.me/call` deep link.
    pub deeplink_payload: Option<String>,
    /// `payload` of a voice-call button.
    pub cta_payload: Option<String>,
    /// Echo of what the business sent on `connect`.
    pub biz_opaque_callback_data: Option<String>,
    /// The user's contact entry, when present.
    pub contact: Option<Contact>,
}

impl CallConnect {
    /// The WhatsApp user's number, whichever the direction.
    pub fn user(&self) -> &WaId {
        match self.direction {
            CallDirection::UserInitiated => &self.from,
            CallDirection::BusinessInitiated => &self.to,
        }
    }
}

wire_enum!(
    /// `terminate.status`. Documented: `COMPLETED`, `FAILED`; one library also sees `REJECTED`.
    TerminateStatus { /// Ended normally (also unanswered, per a secondary source).
        Completed = "COMPLETED", /// Ended by a failure; `errors` may say why.
        Failed = "FAILED", /// Seen by one library.
        Rejected = "REJECTED" }
);

/// An entry of `errors[]` in webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookErrorInfo {
    /// The typed code.
    pub code: MetaErrorCode,
    /// `title`.
    pub title: Option<String>,
    /// `message`.
    pub message: Option<String>,
    /// `error_data.details`.
    pub details: Option<String>,
    /// `href`.
    pub href: Option<String>,
}

/// A `terminate` webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct CallTerminate {
    /// The call.
    pub call_id: WaCallId,
    /// As in `connect`.
    pub from: Option<WaId>,
    /// As in `connect`.
    pub to: Option<WaId>,
    /// When Meta created the event.
    pub timestamp: UnixTime,
    /// Who placed the call, when stated.
    pub direction: Option<CallDirection>,
    /// `COMPLETED` / `FAILED` / other; `None` when absent.
    pub status: Option<TerminateStatus>,
    /// Only if the call was picked up.
    pub start_time: Option<UnixTime>,
    /// Only if the call was picked up.
    pub end_time: Option<UnixTime>,
    /// Only if the call was picked up.
    pub duration: Option<Duration>,
    /// Echo of the business's data.
    pub biz_opaque_callback_data: Option<String>,
    /// Echoed deep-link payload.
    pub deeplink_payload: Option<String>,
    /// Echoed call-button payload.
    pub cta_payload: Option<String>,
    /// Errors from `calls[].errors` and `value.errors` (Meta uses both), without duplicates.
    pub errors: Vec<WebhookErrorInfo>,
    /// The user's contact entry, when present.
    pub contact: Option<Contact>,
}

wire_enum!(
    /// Business-initiated call status.
    CallStatusKind { /// The user's device rings.
        Ringing = "RINGING", /// The user picked up (often after media is up).
        Accepted = "ACCEPTED", /// The user declined; a `terminate` follows.
        Rejected = "REJECTED" }
);

/// A `statuses[]` item of type `call`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallStatus {
    /// The call.
    pub call_id: WaCallId,
    /// When Meta created the event.
    pub timestamp: UnixTime,
    /// RINGING / ACCEPTED / REJECTED.
    pub status: CallStatusKind,
    /// The user.
    pub recipient_id: Option<WaId>,
    /// Echo of the business's data.
    pub biz_opaque_callback_data: Option<String>,
    /// Errors, if any.
    pub errors: Vec<WebhookErrorInfo>,
}

wire_enum!(
    /// `call_permission_reply.response`.
    PermissionResponse { /// Granted.
        Accept = "accept", /// Refused or revoked.
        Reject = "reject" }
);

wire_enum!(
    /// `call_permission_reply.response_source`.
    ResponseSource { /// The user acted.
        UserAction = "user_action", /// Callback grant or automatic revocation.
        Automatic = "automatic" }
);

/// What a permission reply answers (`context.id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTo {
    /// The permission-request message.
    Message(MessageId),
    /// The user's call that granted a callback permission.
    Call(WaCallId),
}

/// A `call_permission_reply` (reference §3.4).
#[derive(Debug, Clone, PartialEq)]
pub struct PermissionReply {
    /// The user.
    pub from: WaId,
    /// The reply message id.
    pub message_id: MessageId,
    /// When sent.
    pub timestamp: UnixTime,
    /// accept / reject.
    pub response: PermissionResponse,
    /// `true` for a permanent grant.
    pub is_permanent: bool,
    /// Temporary accept only.
    pub expiration: Option<UnixTime>,
    /// user_action / automatic.
    pub response_source: Option<ResponseSource>,
    /// Absent for profile grants and automatic revocations.
    pub reply_to: Option<ReplyTo>,
    /// The user's contact entry, when present.
    pub contact: Option<Contact>,
}

/// A failed message send (`messages` field, `statuses[].status = failed`).
#[derive(Debug, Clone, PartialEq)]
pub struct MessageFailed {
    /// The message that failed (e.g. the permission request).
    pub message_id: MessageId,
    /// The intended recipient.
    pub recipient_id: Option<WaId>,
    /// When.
    pub timestamp: UnixTime,
    /// Why (e.g. 131026 client too old).
    pub errors: Vec<WebhookErrorInfo>,
}

/// `value.errors[]` not attached to a call or message.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorsEvent {
    /// The change field (`calls`, `messages`).
    pub field: String,
    /// The errors.
    pub errors: Vec<WebhookErrorInfo>,
}

/// `account_settings_update` (reference §4.5).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSettingsUpdate {
    /// When.
    pub timestamp: Option<UnixTime>,
    /// `type` (`phone_number_settings`, any case).
    pub settings_type: Option<String>,
    /// The number whose settings changed.
    pub phone_number_id: Option<PhoneNumberId>,
    /// The new calling settings (same shape as GET).
    pub calling: Option<CallingSettings>,
}

wire_enum!(
    /// `account_update.event` values relevant to calling.
    AccountUpdateKind { /// Calling quality violation.
        AccountViolation = "ACCOUNT_VIOLATION", /// Calling restricted.
        AccountRestriction = "ACCOUNT_RESTRICTION" }
);

/// `violation_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViolationInfo {
    /// `LOW_BUSINESS_INITIATED_CALLING_QUALITY`, `LOW_USER_INITIATED_CALLING_QUALITY`,
    /// `USER_INITIATED_CALLS_LOW_PICKUP_RATE`, older `LOW_CALLING_QUALITY`.
    pub violation_type: String,
    /// What to do.
    pub remediation: Option<String>,
}

/// One `restriction_info[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestrictionInfo {
    /// `RESTRICTED_BUSINESS_INITIATED_CALLING`, `RESTRICTED_USER_INITIATED_CALLING`,
    /// `RESTRICTED_USER_INITIATED_CALLING_CALL_BUTTON_HIDDEN`.
    pub restriction_type: String,
    /// When it lifts.
    pub expiration: Option<UnixTime>,
    /// What to do.
    pub remediation: Option<String>,
}

/// `account_update` (reference §4.6).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountUpdate {
    /// The business number.
    pub phone_number: Option<WaId>,
    /// `event`.
    pub kind: AccountUpdateKind,
    /// For `ACCOUNT_VIOLATION`.
    pub violation: Option<ViolationInfo>,
    /// For `ACCOUNT_RESTRICTION`.
    pub restrictions: Vec<RestrictionInfo>,
}

// ---------------------------------------------------------------------------------------
// Parser

/// Why a body could not be read at all. Problems inside items are notes, not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnvelopeError {
    Json {
        line: usize,
        column: usize,
        reason: String,
    },
    NotAnObject,
    Entry(String),
}

pub(crate) fn parse_envelope(body: &[u8]) -> Result<ParsedWebhook, EnvelopeError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| EnvelopeError::Json {
        line: e.line(),
        column: e.column(),
        reason: cut(&e.to_string(), 128).to_owned(),
    })?;
    let mut top = Obj::new(&root, "$").map_err(|_| EnvelopeError::NotAnObject)?;
    let mut out = ParsedWebhook {
        events: Vec::new(),
        notes: Vec::new(),
    };
    match top.str("object") {
        Ok(Some("whatsapp_business_account")) => {}
        Ok(Some(other)) => out.notes.push(ParseNote::UnexpectedObject {
            object: cut(other, 64).to_owned(),
        }),
        Ok(None) => out.notes.push(ParseNote::UnexpectedObject {
            object: String::new(),
        }),
        Err(e) => out.notes.push(e.into_note()),
    }
    let entries = match top.get("entry") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(EnvelopeError::Entry("`entry` is not an array".into())),
        None => return Err(EnvelopeError::Entry("`entry` is missing".into())),
    };
    top.finish(&mut out.notes);
    for (i, entry) in entries.iter().enumerate() {
        if let Err(e) = parse_entry(entry, format!("entry[{i}]"), &mut out) {
            out.notes.push(e.into_note());
        }
    }
    Ok(out)
}

fn parse_entry(entry: &Value, path: String, out: &mut ParsedWebhook) -> Result<(), FieldError> {
    let mut entry = Obj::new(entry, path)?;
    let waba_id = entry.id("id", WabaId::parse).unwrap_or_else(|e| {
        out.notes.push(e.into_note());
        None
    });
    entry.known(&["time"]);
    let changes = entry.arr("changes")?;
    let entry_path = entry.path().to_owned();
    entry.finish(&mut out.notes);
    for (j, change) in changes.iter().enumerate() {
        let path = format!("{entry_path}.changes[{j}]");
        if let Err(e) = parse_change(change, path, waba_id.clone(), out) {
            out.notes.push(e.into_note());
        }
    }
    Ok(())
}

fn parse_change(
    change: &Value,
    path: String,
    waba_id: Option<WabaId>,
    out: &mut ParsedWebhook,
) -> Result<(), FieldError> {
    let mut change = Obj::new(change, path)?;
    let field = change.req_str("field")?;
    let value_path = change.child_path("value");
    let value = change
        .get("value")
        .ok_or_else(|| FieldError::new(&value_path, "missing"))?;
    let change_path = change.path().to_owned();
    change.finish(&mut out.notes);
    let mut value = Obj::new(value, value_path)?;
    let mut ctx = EventContext {
        waba_id,
        ..EventContext::default()
    };
    match field {
        "calls" | "messages" => {
            value.known(&["messaging_product"]);
            if let Some(mut meta) = value.obj("metadata")? {
                ctx.phone_number_id = meta.id("phone_number_id", PhoneNumberId::parse)?;
                ctx.display_phone_number = meta.string("display_phone_number")?;
                meta.finish(&mut out.notes);
            }
            let contacts = parse_contacts(&mut value, out);
            if field == "calls" {
                parse_calls_value(&mut value, &ctx, &contacts, out)?;
            } else {
                parse_messages_value(&mut value, &ctx, &contacts, out)?;
            }
        }
        "account_settings_update" => {
            let update = parse_account_settings(&mut value, out)?;
            if ctx.phone_number_id.is_none() {
                ctx.phone_number_id = update.phone_number_id.clone();
            }
            out.events.push(WebhookEvent {
                context: ctx,
                event: Event::AccountSettingsUpdate(update),
                after_terminate: false,
            });
        }
        "account_update" => {
            let update = parse_account_update(&mut value, out)?;
            out.events.push(WebhookEvent {
                context: ctx,
                event: Event::AccountUpdate(update),
                after_terminate: false,
            });
        }
        other => {
            out.notes.push(ParseNote::UnknownChangeField {
                path: change_path,
                field: cut(other, 64).to_owned(),
            });
            return Ok(());
        }
    }
    value.finish(&mut out.notes);
    Ok(())
}

fn parse_contacts(value: &mut Obj<'_>, out: &mut ParsedWebhook) -> Vec<Contact> {
    let path = value.child_path("contacts");
    let items = match value.arr("contacts") {
        Ok(items) => items,
        Err(e) => {
            out.notes.push(e.into_note());
            return Vec::new();
        }
    };
    let mut contacts = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let parsed = (|| {
            let mut c = Obj::new(item, format!("{path}[{i}]"))?;
            let wa_id = c.req_id("wa_id", WaId::parse)?;
            let name = match c.obj("profile")? {
                Some(mut p) => {
                    let name = p.string("name")?;
                    p.finish(&mut out.notes);
                    name
                }
                None => None,
            };
            c.known(&["user_id", "username"]);
            c.finish(&mut out.notes);
            Ok::<_, FieldError>(Contact { wa_id, name })
        })();
        match parsed {
            Ok(c) => contacts.push(c),
            Err(e) => out.notes.push(e.into_note()),
        }
    }
    contacts
}

fn contact_for(contacts: &[Contact], candidates: &[Option<&WaId>]) -> Option<Contact> {
    candidates
        .iter()
        .flatten()
        .find_map(|id| contacts.iter().find(|c| &c.wa_id == *id))
        .cloned()
        .or_else(|| (contacts.len() == 1).then(|| contacts[0].clone()))
}

fn parse_errors(items: &[Value], path: &str, notes: &mut Vec<ParseNote>) -> Vec<WebhookErrorInfo> {
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let parsed = (|| {
            let mut e = Obj::new(item, format!("{path}[{i}]"))?;
            let code_path = e.child_path("code");
            let code = match e.get("code") {
                Some(Value::Number(n)) => n.as_i64(),
                Some(Value::String(s)) => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| FieldError::new(code_path, "missing or not an integer"))?;
            let title = e.string("title")?;
            let message = e.string("message")?;
            let href = e.string("href")?;
            let details = match e.obj("error_data")? {
                Some(mut d) => {
                    let details = d.string("details")?;
                    d.finish(notes);
                    details
                }
                None => None,
            };
            e.finish(notes);
            Ok::<_, FieldError>(WebhookErrorInfo {
                code: MetaErrorCode::from_code(code),
                title,
                message,
                details,
                href,
            })
        })();
        match parsed {
            Ok(e) => errors.push(e),
            Err(e) => notes.push(e.into_note()),
        }
    }
    errors
}

fn merge_errors(into: &mut Vec<WebhookErrorInfo>, more: &[WebhookErrorInfo]) {
    for e in more {
        if !into.contains(e) {
            into.push(e.clone());
        }
    }
}

fn parse_calls_value(
    value: &mut Obj<'_>,
    ctx: &EventContext,
    contacts: &[Contact],
    out: &mut ParsedWebhook,
) -> Result<(), FieldError> {
    let errors_path = value.child_path("errors");
    let value_errors = parse_errors(value.arr("errors")?, &errors_path, &mut out.notes);
    let calls_path = value.child_path("calls");
    let mut attached = false;
    for (i, item) in value.arr("calls")?.iter().enumerate() {
        let path = format!("{calls_path}[{i}]");
        match parse_call(item, path, contacts, &value_errors, out) {
            Ok(Some(event)) => {
                attached |= matches!(event, Event::Terminate(_));
                out.events.push(WebhookEvent {
                    context: ctx.clone(),
                    event,
                    after_terminate: false,
                });
            }
            Ok(None) => {}
            Err(e) => out.notes.push(e.into_note()),
        }
    }
    let statuses_path = value.child_path("statuses");
    for (i, item) in value.arr("statuses")?.iter().enumerate() {
        let path = format!("{statuses_path}[{i}]");
        match parse_call_status(item, path, out) {
            Ok(Some(status)) => out.events.push(WebhookEvent {
                context: ctx.clone(),
                event: Event::Status(status),
                after_terminate: false,
            }),
            Ok(None) => {}
            Err(e) => out.notes.push(e.into_note()),
        }
    }
    if !attached && !value_errors.is_empty() {
        out.events.push(WebhookEvent {
            context: ctx.clone(),
            event: Event::Errors(ErrorsEvent {
                field: "calls".into(),
                errors: value_errors,
            }),
            after_terminate: false,
        });
    }
    Ok(())
}

fn parse_session(
    call: &mut Obj<'_>,
    notes: &mut Vec<ParseNote>,
) -> Result<Option<SessionDescription>, FieldError> {
    if let Some(mut s) = call.obj("session")? {
        let sdp_type = parse_sdp_type(&mut s, "sdp_type")?;
        let sdp = s.req_str("sdp")?.to_owned();
        s.finish(notes);
        // The legacy duplicate is not read when `session` is there (reference §1.4).
        call.known(&["connection"]);
        return Ok(Some(SessionDescription { sdp_type, sdp }));
    }
    // Legacy duplicate: `connection.webrtc.sdp` is a JSON-encoded {sdp,type} string
    // (reference §1.4). Used only when `session` is absent.
    let Some(mut conn) = call.obj("connection")? else {
        return Ok(None);
    };
    let Some(mut webrtc) = conn.obj("webrtc")? else {
        return Ok(None);
    };
    let path = webrtc.child_path("sdp");
    let Some(encoded) = webrtc.str("sdp")? else {
        return Ok(None);
    };
    let inner: Value = serde_json::from_str(encoded)
        .map_err(|e| FieldError::new(&path, format!("legacy sdp is not json: {e}")))?;
    let mut inner = Obj::new(&inner, path)?;
    let sdp_type = parse_sdp_type(&mut inner, "type")?;
    let sdp = inner.req_str("sdp")?.to_owned();
    Ok(Some(SessionDescription { sdp_type, sdp }))
}

fn parse_sdp_type(obj: &mut Obj<'_>, key: &str) -> Result<SdpType, FieldError> {
    let path = obj.child_path(key);
    let raw = obj.req_str(key)?;
    if raw.eq_ignore_ascii_case("offer") {
        Ok(SdpType::Offer)
    } else if raw.eq_ignore_ascii_case("answer") {
        Ok(SdpType::Answer)
    } else {
        Err(FieldError::new(
            path,
            format!("unknown sdp_type {:?}", cut(raw, 64)),
        ))
    }
}

fn parse_call(
    item: &Value,
    path: String,
    contacts: &[Contact],
    value_errors: &[WebhookErrorInfo],
    out: &mut ParsedWebhook,
) -> Result<Option<Event>, FieldError> {
    let mut call = Obj::new(item, path)?;
    let event = call.req_str("event")?;
    if event != "connect" && event != "terminate" {
        out.notes.push(ParseNote::UnknownEvent {
            path: call.path().to_owned(),
            event: cut(event, 64).to_owned(),
        });
        return Ok(None);
    }
    let call_id = call.req_id("id", WaCallId::parse)?;
    let timestamp = call.req_time("timestamp")?;
    let direction_path = call.child_path("direction");
    let direction = match call.str("direction")? {
        None => None,
        Some(raw) => match CallDirection::from_wire(raw) {
            Some(d) => Some(d),
            None => {
                out.notes.push(ParseNote::InvalidItem {
                    path: direction_path.clone(),
                    reason: format!("unknown direction {:?}", cut(raw, 64)),
                });
                None
            }
        },
    };
    let deeplink_payload = call.string("deeplink_payload")?;
    let cta_payload = call.string("cta_payload")?;
    let biz_opaque_callback_data = call.string("biz_opaque_callback_data")?;
    let parsed = if event == "connect" {
        let from = call.req_id("from", WaId::parse)?;
        let to = call.req_id("to", WaId::parse)?;
        let session = parse_session(&mut call, &mut out.notes)?
            .ok_or_else(|| FieldError::new(call.child_path("session"), "connect without sdp"))?;
        let direction = match (direction, session.sdp_type) {
            (Some(d @ CallDirection::UserInitiated), SdpType::Offer)
            | (Some(d @ CallDirection::BusinessInitiated), SdpType::Answer) => d,
            // One doc sample omits `direction` (reference §1.3): Meta offers only on calls
            // users place, and answers only the business's offers.
            (None, SdpType::Offer) => CallDirection::UserInitiated,
            (None, SdpType::Answer) => CallDirection::BusinessInitiated,
            (Some(d), t) => {
                return Err(FieldError::new(
                    direction_path,
                    format!("{} connect carrying an sdp {t:?}", d.as_str()),
                ));
            }
        };
        let contact = contact_for(contacts, &[Some(&from), Some(&to)]);
        Event::Connect(CallConnect {
            call_id,
            from,
            to,
            timestamp,
            direction,
            session,
            deeplink_payload,
            cta_payload,
            biz_opaque_callback_data,
            contact,
        })
    } else {
        let from = call.id("from", WaId::parse)?;
        let to = call.id("to", WaId::parse)?;
        let status = call.str("status")?.map(TerminateStatus::from_wire);
        let start_time = call.time("start_time")?;
        let end_time = call.time("end_time")?;
        let duration = call.lenient_u64("duration")?.map(Duration::from_secs);
        let errors_path = call.child_path("errors");
        let mut errors = parse_errors(call.arr("errors")?, &errors_path, &mut out.notes);
        merge_errors(&mut errors, value_errors);
        call.known(&["session", "connection"]);
        let contact = contact_for(contacts, &[from.as_ref(), to.as_ref()]);
        Event::Terminate(CallTerminate {
            call_id,
            from,
            to,
            timestamp,
            direction,
            status,
            start_time,
            end_time,
            duration,
            biz_opaque_callback_data,
            deeplink_payload,
            cta_payload,
            errors,
            contact,
        })
    };
    call.known(&["event"]);
    call.finish(&mut out.notes);
    Ok(Some(parsed))
}

fn parse_call_status(
    item: &Value,
    path: String,
    out: &mut ParsedWebhook,
) -> Result<Option<CallStatus>, FieldError> {
    let mut s = Obj::new(item, path)?;
    match s.str("type")? {
        None | Some("call") => {}
        Some(other) => {
            out.notes.push(ParseNote::Ignored {
                path: s.path().to_owned(),
                what: format!("status of type {:?}", cut(other, 64)),
            });
            return Ok(None);
        }
    }
    let call_id = s.req_id("id", WaCallId::parse)?;
    let timestamp = s.req_time("timestamp")?;
    let status = CallStatusKind::from_wire(s.req_str("status")?);
    let recipient_id = s.id("recipient_id", WaId::parse)?;
    let biz_opaque_callback_data = s.string("biz_opaque_callback_data")?;
    let errors_path = s.child_path("errors");
    let errors = parse_errors(s.arr("errors")?, &errors_path, &mut out.notes);
    s.finish(&mut out.notes);
    Ok(Some(CallStatus {
        call_id,
        timestamp,
        status,
        recipient_id,
        biz_opaque_callback_data,
        errors,
    }))
}

fn parse_messages_value(
    value: &mut Obj<'_>,
    ctx: &EventContext,
    contacts: &[Contact],
    out: &mut ParsedWebhook,
) -> Result<(), FieldError> {
    let messages_path = value.child_path("messages");
    for (i, item) in value.arr("messages")?.iter().enumerate() {
        let path = format!("{messages_path}[{i}]");
        match parse_message(item, path, contacts, out) {
            Ok(Some(reply)) => out.events.push(WebhookEvent {
                context: ctx.clone(),
                event: Event::PermissionReply(reply),
                after_terminate: false,
            }),
            Ok(None) => {}
            Err(e) => out.notes.push(e.into_note()),
        }
    }
    let statuses_path = value.child_path("statuses");
    let mut attached = false;
    for (i, item) in value.arr("statuses")?.iter().enumerate() {
        let path = format!("{statuses_path}[{i}]");
        match parse_message_status(item, path, out) {
            Ok(Some(failed)) => {
                attached = true;
                out.events.push(WebhookEvent {
                    context: ctx.clone(),
                    event: Event::MessageFailed(failed),
                    after_terminate: false,
                })
            }
            Ok(None) => {}
            Err(e) => out.notes.push(e.into_note()),
        }
    }
    let errors_path = value.child_path("errors");
    let errors = parse_errors(value.arr("errors")?, &errors_path, &mut out.notes);
    if !errors.is_empty() && !attached {
        out.events.push(WebhookEvent {
            context: ctx.clone(),
            event: Event::Errors(ErrorsEvent {
                field: "messages".into(),
                errors,
            }),
            after_terminate: false,
        });
    }
    Ok(())
}

fn parse_message(
    item: &Value,
    path: String,
    contacts: &[Contact],
    out: &mut ParsedWebhook,
) -> Result<Option<PermissionReply>, FieldError> {
    let mut m = Obj::new(item, path)?;
    let msg_type = m.req_str("type")?;
    let interactive = if msg_type == "interactive" {
        m.obj("interactive")?
    } else {
        None
    };
    let Some(mut interactive) = interactive else {
        out.notes.push(ParseNote::Ignored {
            path: m.path().to_owned(),
            what: format!("message of type {:?}", cut(msg_type, 64)),
        });
        return Ok(None);
    };
    let itype = interactive.req_str("type")?;
    if itype != "call_permission_reply" {
        out.notes.push(ParseNote::Ignored {
            path: interactive.path().to_owned(),
            what: format!("interactive message of type {:?}", cut(itype, 64)),
        });
        return Ok(None);
    }
    let reply_path = interactive.child_path("call_permission_reply");
    let mut reply = interactive
        .obj("call_permission_reply")?
        .ok_or_else(|| FieldError::new(reply_path, "missing"))?;
    let response = PermissionResponse::from_wire(reply.req_str("response")?);
    let is_permanent = reply.bool("is_permanent")?.unwrap_or(false);
    let expiration = reply.time("expiration_timestamp")?;
    let response_source = reply.str("response_source")?.map(ResponseSource::from_wire);
    reply.finish(&mut out.notes);
    interactive.finish(&mut out.notes);

    let from = m.req_id("from", WaId::parse)?;
    let message_id = m.req_id("id", MessageId::parse)?;
    let timestamp = m.req_time("timestamp")?;
    let reply_to = match m.obj("context")? {
        None => None,
        Some(mut c) => {
            c.known(&["from"]);
            let id_path = c.child_path("id");
            let reply_to = match c.str("id")? {
                None => None,
                Some(id) if id.starts_with("wacid.") => Some(ReplyTo::Call(
                    WaCallId::parse(id).map_err(|e| FieldError::new(&id_path, e.to_string()))?,
                )),
                Some(id) => Some(ReplyTo::Message(
                    MessageId::parse(id).map_err(|e| FieldError::new(&id_path, e.to_string()))?,
                )),
            };
            c.finish(&mut out.notes);
            reply_to
        }
    };
    let contact = contact_for(contacts, &[Some(&from)]);
    m.finish(&mut out.notes);
    Ok(Some(PermissionReply {
        from,
        message_id,
        timestamp,
        response,
        is_permanent,
        expiration,
        response_source,
        reply_to,
        contact,
    }))
}

fn parse_message_status(
    item: &Value,
    path: String,
    out: &mut ParsedWebhook,
) -> Result<Option<MessageFailed>, FieldError> {
    let mut s = Obj::new(item, path)?;
    let status = s.req_str("status")?;
    if !status.eq_ignore_ascii_case("failed") {
        out.notes.push(ParseNote::Ignored {
            path: s.path().to_owned(),
            what: format!("message status {:?}", cut(status, 64)),
        });
        return Ok(None);
    }
    let message_id = s.req_id("id", MessageId::parse)?;
    let recipient_id = s.id("recipient_id", WaId::parse)?;
    let timestamp = s.req_time("timestamp")?;
    let errors_path = s.child_path("errors");
    let errors = parse_errors(s.arr("errors")?, &errors_path, &mut out.notes);
    s.known(&[
        "conversation",
        "pricing",
        "biz_opaque_callback_data",
        "type",
    ]);
    s.finish(&mut out.notes);
    Ok(Some(MessageFailed {
        message_id,
        recipient_id,
        timestamp,
        errors,
    }))
}

fn parse_account_settings(
    value: &mut Obj<'_>,
    out: &mut ParsedWebhook,
) -> Result<AccountSettingsUpdate, FieldError> {
    value.known(&["messaging_product"]);
    let timestamp = value.time("timestamp")?;
    let settings_type = value.string("type")?;
    let mut phone_number_id = None;
    let mut calling = None;
    if let Some(mut pns) = value.obj("phone_number_settings")? {
        phone_number_id = pns.id("phone_number_id", PhoneNumberId::parse)?;
        let calling_path = pns.child_path("calling");
        if let Some(raw) = pns.get("calling") {
            calling = Some(
                serde_json::from_value::<CallingSettings>(raw.clone())
                    .map_err(|e| FieldError::new(calling_path, cut(&e.to_string(), 128)))?,
            );
        }
        pns.finish(&mut out.notes);
    }
    Ok(AccountSettingsUpdate {
        timestamp,
        settings_type,
        phone_number_id,
        calling,
    })
}

fn parse_account_update(
    value: &mut Obj<'_>,
    out: &mut ParsedWebhook,
) -> Result<AccountUpdate, FieldError> {
    let phone_number = value.id("phone_number", WaId::parse)?;
    let kind = AccountUpdateKind::from_wire(value.req_str("event")?);
    let violation = match value.obj("violation_info")? {
        None => None,
        Some(mut v) => {
            let violation_type = v.req_str("violation_type")?.to_owned();
            let remediation = v.string("remediation")?;
            v.finish(&mut out.notes);
            Some(ViolationInfo {
                violation_type,
                remediation,
            })
        }
    };
    let mut restrictions = Vec::new();
    let path = value.child_path("restriction_info");
    for (i, item) in value.arr("restriction_info")?.iter().enumerate() {
        let mut r = Obj::new(item, format!("{path}[{i}]"))?;
        let restriction_type = r.req_str("restriction_type")?.to_owned();
        let expiration = r.time("expiration")?;
        let remediation = r.string("remediation")?;
        r.finish(&mut out.notes);
        restrictions.push(RestrictionInfo {
            restriction_type,
            expiration,
            remediation,
        });
    }
    Ok(AccountUpdate {
        phone_number,
        kind,
        violation,
        restrictions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_events_and_change_fields_are_notes() {
        let body = br#"{"object":"whatsapp_business_account","new_top":1,"entry":[{"id":"1","changes":[
            {"field":"calls","value":{"messaging_product":"whatsapp","calls":[
               {"id":"wacid.A","from":"1","to":"2","event":"call_created","timestamp":"1"},
               {"id":"wacid.B","from":"1","to":"2","event":"terminate","timestamp":"5","status":"completed","recording":{}}]}},
            {"field":"message_template_status_update","value":{}}]}]}"#;
        let parsed = parse_envelope(body).unwrap();
        assert_eq!(parsed.events.len(), 1);
        let Event::Terminate(t) = &parsed.events[0].event else {
            panic!()
        };
        assert_eq!(t.status, Some(TerminateStatus::Completed));
        assert!(parsed.notes.contains(&ParseNote::UnknownField {
            path: "$.new_top".into()
        }));
        assert!(parsed.notes.iter().any(
            |n| matches!(n, ParseNote::UnknownEvent { event, .. } if event == "call_created")
        ));
        assert!(parsed.notes.iter().any(|n| matches!(n, ParseNote::UnknownField { path } if path.ends_with("calls[1].recording"))));
        assert!(parsed.notes.iter().any(|n| matches!(n, ParseNote::UnknownChangeField { field, .. } if field == "message_template_status_update")));
    }

    #[test]
    fn one_bad_item_does_not_lose_the_batch() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
            {"field":"calls","value":{"calls":[
               {"id":"","from":"1","to":"2","event":"terminate","timestamp":"1"},
               {"id":"wacid.B","from":"1","to":"2","event":"terminate","timestamp":"5"}]}}]}]}"#;
        let parsed = parse_envelope(body).unwrap();
        assert_eq!(parsed.events.len(), 1);
        assert!(parsed.notes.iter().any(
            |n| matches!(n, ParseNote::InvalidItem { path, .. } if path.ends_with("calls[0].id"))
        ));
    }

    #[test]
    fn envelope_errors_are_clear() {
        assert!(matches!(
            parse_envelope(b"{"),
            Err(EnvelopeError::Json { line: 1, .. })
        ));
        assert_eq!(parse_envelope(b"[]"), Err(EnvelopeError::NotAnObject));
        assert!(matches!(
            parse_envelope(b"{}"),
            Err(EnvelopeError::Entry(_))
        ));
    }

    #[test]
    fn connect_direction_contradicting_sdp_is_refused() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
            {"field":"calls","value":{"calls":[
               {"id":"wacid.A","from":"1","to":"2","event":"connect","timestamp":"1","direction":"USER_INITIATED",
                "session":{"sdp_type":"answer","sdp":"v=0"}}]}}]}]}"#;
        let parsed = parse_envelope(body).unwrap();
        assert!(parsed.events.is_empty());
        assert!(matches!(&parsed.notes[..], [ParseNote::InvalidItem { .. }]));
    }
}
