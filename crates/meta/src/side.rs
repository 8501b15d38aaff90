//! The boundary between the gateway's call state machine and "the WhatsApp side".
//!
//! The gateway should not care whether Meta is reached through Graph API signalling plus
//! webhooks (this crate's [`crate::rt`] drivers) or through SIP mode (reference §5, where
//! Meta sends INVITE/BYE to the business's SIP server and the business sends INVITE to
//! `wa.meta.vc`). Both carry the same call model: an incoming call offered with Meta's SDP
//! offer; `pre_accept`/`accept`/`reject`/`terminate` on it; a business-initiated `connect`
//! with the business's offer whose answer arrives later; progress and end events.
//!
//! [`WhatsAppSide`] is that model as a trait with commands, and [`SideEvent`] the events
//! it produces (the implementation delivers them over a bounded channel it hands out at
//! construction). The trait has no gateway or SIP dependency; a SIP-mode adapter in the
//! gateway implements it over `whatsip-sip`:
//!
//! | command / event | Graph mode | SIP mode (reference §5) |
//! |---|---|---|
//! | [`SideEvent::Offered`] | `connect` webhook, `USER_INITIATED` | INVITE from `wa.meta.vc` (`x-wa-meta-wacid`) |
//! | `pre_accept` | `POST calls action=pre_accept` | 183 Session Progress with the answer |
//! | `accept` | `POST calls action=accept` | 200 OK with the same answer |
//! | `reject` | `POST calls action=reject` | 486/603 final response |
//! | `terminate` | `POST calls action=terminate` | BYE (or CANCEL before the 200 OK) |
//! | `connect` | `POST calls action=connect` → call id | INVITE to `sip:+user@wa.meta.vc` |
//! | [`SideEvent::Answered`] | `connect` webhook, `BUSINESS_INITIATED` (answer SDP) | 200 OK to our INVITE |
//! | [`SideEvent::Progress`] | `statuses` RINGING/ACCEPTED/REJECTED | 180 / 200 / 486 |
//! | [`SideEvent::Ended`] | `terminate` webhook | BYE from Meta, or a final error |
//!
//! Permission requests, settings and permission replies are Graph-only management concerns
//! and stay outside the trait (`rt::GraphClient` offers them in both modes: SIP mode keeps
//! messaging on Graph).

use std::future::Future;
use std::time::Duration;

use crate::event::{CallStatusKind, Event, TerminateStatus, WebhookErrorInfo};
use crate::id::{UnixTime, WaCallId, WaId};

/// One business number's WhatsApp side. Implementations are cheap to clone handles; calls
/// may run concurrently for different calls.
pub trait WhatsAppSide: Send + Sync {
    /// The implementation's error, e.g. [`crate::GraphError`].
    type Error: std::error::Error + Send + Sync + 'static;

    /// Sends the SDP answer early so ICE/DTLS can complete; no media may be sent until
    /// [`Self::accept`] succeeded.
    fn pre_accept(
        &self,
        call_id: &WaCallId,
        answer_sdp: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Answers the call with the same SDP as `pre_accept`.
    fn accept(
        &self,
        call_id: &WaCallId,
        answer_sdp: &str,
        biz_opaque_callback_data: Option<&str>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Declines a call not yet accepted.
    fn reject(&self, call_id: &WaCallId) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Ends a call in either direction.
    fn terminate(&self, call_id: &WaCallId)
    -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Places a business-initiated call with the business's SDP offer. Returns the call id;
    /// Meta's answer arrives later as [`SideEvent::Answered`].
    fn connect(
        &self,
        to: &WaId,
        offer_sdp: &str,
        biz_opaque_callback_data: Option<&str>,
    ) -> impl Future<Output = Result<WaCallId, Self::Error>> + Send;
}

/// What the WhatsApp side reports about calls, already deduplicated and ordered (a call
/// that ended is never offered).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SideEvent {
    /// A user calls the business; answer `offer_sdp` within 30–60 s.
    Offered {
        /// The call.
        call_id: WaCallId,
        /// The user.
        from: WaId,
        /// The business number called.
        to: WaId,
        /// Meta's SDP offer.
        offer_sdp: String,
        /// Deep-link `biz_payload`.
        deeplink_payload: Option<String>,
        /// Call-button payload.
        cta_payload: Option<String>,
        /// The user's profile name (redact in logs).
        caller_name: Option<String>,
        /// When Meta created the offer.
        timestamp: UnixTime,
    },
    /// Meta's SDP answer to a business-initiated call.
    Answered {
        /// The call.
        call_id: WaCallId,
        /// Meta's SDP answer.
        answer_sdp: String,
    },
    /// Ringing / picked up / declined, for business-initiated calls.
    Progress {
        /// The call.
        call_id: WaCallId,
        /// The status.
        status: CallStatusKind,
    },
    /// The call ended, whatever the reason.
    Ended {
        /// The call.
        call_id: WaCallId,
        /// COMPLETED / FAILED / other, when stated.
        status: Option<TerminateStatus>,
        /// Talk time, when the call was picked up.
        duration: Option<Duration>,
        /// Why, for failed calls.
        errors: Vec<WebhookErrorInfo>,
    },
}

impl SideEvent {
    /// The call-related part of a webhook event; `None` for management events.
    pub fn from_event(event: &Event) -> Option<Self> {
        Some(match event {
            Event::Connect(c) => match c.direction {
                crate::CallDirection::UserInitiated => SideEvent::Offered {
                    call_id: c.call_id.clone(),
                    from: c.from.clone(),
                    to: c.to.clone(),
                    offer_sdp: c.session.sdp.clone(),
                    deeplink_payload: c.deeplink_payload.clone(),
                    cta_payload: c.cta_payload.clone(),
                    caller_name: c.contact.as_ref().and_then(|c| c.name.clone()),
                    timestamp: c.timestamp,
                },
                crate::CallDirection::BusinessInitiated => SideEvent::Answered {
                    call_id: c.call_id.clone(),
                    answer_sdp: c.session.sdp.clone(),
                },
            },
            Event::Status(s) => SideEvent::Progress {
                call_id: s.call_id.clone(),
                status: s.status.clone(),
            },
            Event::Terminate(t) => SideEvent::Ended {
                call_id: t.call_id.clone(),
                status: t.status.clone(),
                duration: t.duration,
                errors: t.errors.clone(),
            },
            _ => return None,
        })
    }

    /// The call the event is about.
    pub fn call_id(&self) -> &WaCallId {
        match self {
            SideEvent::Offered { call_id, .. }
            | SideEvent::Answered { call_id, .. }
            | SideEvent::Progress { call_id, .. }
            | SideEvent::Ended { call_id, .. } => call_id,
        }
    }
}
