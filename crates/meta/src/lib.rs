//! whatsip-meta: the WhatsApp Business Calling API (Meta Cloud API) side of whatsip.
//!
//! What it does:
//! - checks `X-Hub-Signature-256` on webhook POSTs in constant time, before any parsing
//!   ([`VerifiedWebhook::from_parts`]), and answers the `GET` handshake
//!   ([`verify_subscription`]);
//! - parses Meta's envelope tolerantly into typed [`Event`]s (`connect`, `terminate`, call
//!   statuses, permission replies, message errors, settings and enforcement updates);
//!   unknown fields and events become [`ParseNote`]s, never failures; and back to Meta's
//!   JSON with [`WebhookEvent::to_envelope`];
//! - deduplicates and orders events ([`CallEventGuard`]): re-deliveries are dropped, and a
//!   `connect` arriving after its `terminate` never starts a call
//!   ([`Verdict::ConnectAfterTerminate`]);
//! - builds every Graph API request as plain data ([`graph::GraphRequest`]) and parses every
//!   reply, mapping Meta's error body to [`GraphError`] with a typed [`MetaErrorCode`].
//!
//! What it does not: the core does no IO, reads no clock and spawns nothing. With the
//! default `rt` feature, [`rt`] adds the tokio drivers: the webhook HTTP(S) server and the
//! Graph HTTP client. `cargo check -p whatsip-meta --no-default-features` proves the core
//! builds without tokio.
//!
//! Drive-loop contract: the webhook driver verifies each POST, answers 200 at once, and a
//! single task owning a [`CallEventGuard`] parses, judges each event with the clock read
//! once for the turn, and forwards only [`Verdict::Fresh`] events.
//!
//! ```
//! use std::time::{Duration, Instant, UNIX_EPOCH};
//! use whatsip_meta::{AppSecret, CallEventGuard, Event, GuardConfig, VerifiedWebhook, Verdict, webhook_sign};
//!
//! let secret = AppSecret::new("app-secret");
//! let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"calls",
//!   "value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15551441906","phone_number_id":"518638374672395"},
//!   "calls":[{"id":"wacid.ABC","from":"917358580180","to":"15551441906","event":"connect","timestamp":"1760681506",
//!   "direction":"USER_INITIATED","session":{"sdp_type":"offer","sdp":"v=0\r\n"}}]}}]}]}"#;
//! let signature = webhook_sign(body, &secret); // what Meta puts in X-Hub-Signature-256
//!
//! let verified = VerifiedWebhook::from_parts(Some(signature.as_bytes()), body.to_vec(), &secret)?;
//! let parsed = verified.parse()?;
//! let mut guard = CallEventGuard::new(GuardConfig::default());
//! let now = Instant::now();
//! let wall = UNIX_EPOCH + Duration::from_secs(1_760_681_510);
//! let event = &parsed.events[0].event;
//! assert_eq!(guard.handle_event(event, now, wall), Verdict::Fresh);
//! assert_eq!(guard.handle_event(event, now, wall), Verdict::Duplicate); // Meta re-sent it
//! let Event::Connect(connect) = event else { unreachable!() };
//! assert_eq!(connect.session.sdp, "v=0\r\n");
//! # Ok::<(), whatsip_meta::WebhookError>(())
//! ```

mod encode;
mod event;
pub mod graph;
mod guard;
mod id;
mod json;
mod secret;
pub mod side;
mod webhook;
mod wire_enum;

#[cfg(feature = "rt")]
pub mod rt;

pub use event::{
    AccountSettingsUpdate, AccountUpdate, AccountUpdateKind, CallConnect, CallDirection,
    CallStatus, CallStatusKind, CallTerminate, Contact, ErrorsEvent, Event, EventContext,
    MessageFailed, ParseNote, ParsedWebhook, PermissionReply, PermissionResponse, ReplyTo,
    ResponseSource, RestrictionInfo, SdpType, SessionDescription, TerminateStatus, ViolationInfo,
    WebhookErrorInfo, WebhookEvent,
};
pub use graph::{GraphError, MetaErrorCode};
pub use guard::{CallEventGuard, GuardConfig, Verdict};
pub use id::{E164, IdError, MessageId, PhoneNumberId, UnixTime, WaCallId, WaId, WabaId};
pub use secret::{AccessToken, AppSecret, SipPassword, VerifyToken};
pub use webhook::{
    HandshakeError, MAX_WEBHOOK_BODY_BYTES, SIGNATURE_HEADER, VerifiedWebhook, WebhookError,
    sign as webhook_sign, verify_subscription,
};
