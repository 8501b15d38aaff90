//! Sans-IO call state machines: one per direction, plus the two mapping functions.
//!
//! Nothing here touches tokio, sockets or the clock: inputs and `now` go in through
//! `handle`/`handle_timeout`, actions come out of `poll_action`, the one timer (ring
//! timeout) is exposed by `poll_timeout`. The SIP transaction/dialog layer (ACKs,
//! retransmissions, 100 Trying, 481 for requests outside a dialog) and the media engine
//! sit below and report what happened as inputs.
//!
//! - [`InboundCall`]: user-initiated, WhatsApp → PBX (issue 5).
//! - [`OutboundCall`]: business-initiated, PBX → WhatsApp (issue 6).
//! - [`pbx_failure_action`]: PBX final status → Meta action; [`outbound_failure_reply`]:
//!   Meta error/status or local refusal → SIP status with `Reason`/`Warning`.
//! - [`pbx_invite_context`]: From/P-Asserted-Identity and `X-WA-*` headers of the INVITE.
//! - [`EndedCalls`]: recently ended call ids, so late or repeated webhooks start no call.

mod context;
mod ended;
mod inbound;
mod mapping;
mod outbound;

pub use context::{PbxInviteContext, WaCaller, pbx_invite_context};
pub use ended::EndedCalls;
pub use inbound::{InboundAction, InboundCall, InboundInput};
pub use mapping::{
    OutboundFailure, PbxFailureAction, PbxFailureClass, SipReply, classify_pbx_failure,
    is_permission_missing, outbound_failure_reply, pbx_failure_action,
};
pub use outbound::{OutboundAction, OutboundCall, OutboundInput, OutboundSettings, WaCallStatus};

use crate::types::SipStatus;

/// The Graph `POST /<PHONE_NUMBER_ID>/calls` actions (Meta's words, §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GraphAction {
    /// Business-initiated: start the call with our offer.
    Connect,
    /// User-initiated: send our answer early so ICE/DTLS can finish while the PBX rings.
    PreAccept,
    /// User-initiated: answer (same SDP as pre_accept).
    Accept,
    /// User-initiated: decline before accept.
    Reject,
    /// End an accepted or business-initiated call.
    Terminate,
}

impl GraphAction {
    /// The `action` value on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::PreAccept => "pre_accept",
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Terminate => "terminate",
        }
    }
}

/// How an inbound call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboundEnd {
    /// The WhatsApp user hung up (or `terminate` arrived before `connect`).
    WaHangup,
    /// The PBX sent BYE.
    PbxHangup,
    /// The PBX refused with this status and no fallback applied.
    PbxRejected(SipStatus),
    /// No target answered within its ring timeout.
    NoAnswer,
    /// WhatsApp-leg media could not be set up or timed out.
    MediaFailed,
    /// A Graph request failed.
    GraphFailed(GraphAction),
    /// The route had no target for an attempt (a bug; see logs).
    NoRoute,
}

/// How an outbound call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboundEnd {
    /// The WhatsApp user hung up after answering.
    WaHangup,
    /// The PBX hung up after answer.
    PbxHangup,
    /// The PBX cancelled before answer.
    PbxCancelled,
    /// Media failed after answer.
    MediaFailed,
    /// The call never connected.
    Failed(OutboundFailure),
}

impl OutboundEnd {
    /// Whether this outcome counts as "unanswered or rejected" for Meta's consecutive-miss
    /// rule (§3.6) and the consent guard.
    pub fn counts_as_unanswered(&self) -> bool {
        matches!(
            self,
            Self::Failed(
                OutboundFailure::Rejected
                    | OutboundFailure::NoAnswer
                    | OutboundFailure::Terminated { .. }
            )
        )
    }
}

#[cfg(test)]
mod tests;
