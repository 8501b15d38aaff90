//! The business-initiated call: the PBX calls a WhatsApp user.
//!
//! ```text
//!  Idle ──PbxInvite──▶ PreparingMedia ──MediaReady──▶ Calling ──ACCEPTED──▶ Active
//!   │ Refused(f)           │ PbxCancel: 487            │  │ REJECTED / terminate / ring timeout /
//!   ▼                      ▼                           │  │ connect error: mapped SIP reply
//!  Terminated ◀────────────┴───────────────────────────┘  ▼
//!                       CancelPending ◀── PbxCancel before the call id is known (487 sent)
//!                          │ call id arrives: terminate
//!                          ▼
//!  Active ──PbxBye──▶ Closing(terminate) ──result──▶ Terminated ◀── WhatsApp terminate: BYE
//! ```
//!
//! Rules (issue 6, Calling API notes §1.4, §1.5, §2.2): the 200 OK goes to the PBX on
//! `ACCEPTED`; `RINGING` becomes 180 (or 183 with generated ringback); the `connect`
//! webhook with Meta's answer can overtake the HTTP reply to `connect`, so webhooks are
//! taken while the reply is still outstanding; every failure goes through
//! [`outbound_failure_reply`](super::outbound_failure_reply).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::debug;

use super::mapping::{OutboundFailure, SipReply, is_permission_missing, outbound_failure_reply};
use super::{GraphAction, OutboundEnd};
use crate::dialplan::OutboundRoute;
use crate::types::{SipStatus, WaCallId};

/// Status values of the business-initiated `statuses[]` webhook (§1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaCallStatus {
    /// The user's device rings.
    Ringing,
    /// The user picked up.
    Accepted,
    /// The user declined (a `terminate` webhook follows).
    Rejected,
}

/// An event for the outbound call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboundInput {
    /// The PBX's INVITE passed the ACL/auth, the dial plan and the local checks.
    PbxInvite,
    /// The INVITE was refused before anything went to Meta (consent guard, country, …).
    Refused(OutboundFailure),
    /// The WhatsApp leg's SDP offer is built.
    MediaReady,
    /// The WhatsApp leg's media failed.
    MediaFailed,
    /// Reply to `POST /calls` `connect`.
    ConnectResult(Result<WaCallId, OutboundFailure>),
    /// The `connect` webhook with Meta's SDP answer.
    WaAnswer(WaCallId),
    /// A `statuses[]` webhook.
    WaStatus(WaCallId, WaCallStatus),
    /// The `terminate` webhook; `error` is `errors[0].code` when present.
    WaTerminated {
        /// Meta's error code, if any.
        error: Option<u32>,
    },
    /// A Graph request other than `connect` finished.
    GraphResult {
        /// Which action.
        action: GraphAction,
        /// Whether Meta answered success.
        ok: bool,
    },
    /// CANCEL from the PBX.
    PbxCancel,
    /// BYE from the PBX.
    PbxBye,
    /// re-INVITE or UPDATE from the PBX.
    PbxReInvite,
    /// The ring timer fired (normally fed by [`OutboundCall::handle_timeout`]).
    RingTimeout,
}

/// Something for the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboundAction {
    /// Build the WhatsApp leg's SDP offer; report `MediaReady`/`MediaFailed`.
    StartMedia,
    /// Send a Graph action (`connect` with the offer, or `terminate`).
    SendGraph(GraphAction),
    /// Hand Meta's SDP answer (from the `connect` webhook) to the media engine.
    ApplyWaAnswer,
    /// Send 180 Ringing, or 183 Session Progress with generated ringback when enabled.
    SendRinging {
        /// Whether to play generated ringback as early media (183).
        early_media: bool,
    },
    /// Send the final response to the PBX's INVITE (200 with our SDP, or the mapped failure).
    RespondPbx(SipReply),
    /// Send `call_permission_request` to the user, subject to Meta's 1/24 h, 2/7 d limits
    /// (the permission tracker decides and records it).
    SendPermissionRequest,
    /// Answer the PBX's re-INVITE/UPDATE with 200 OK and the current SDP.
    AnswerReInvite,
    /// Let media flow both ways.
    OpenMediaGate,
    /// BYE the PBX.
    SendBye,
    /// Release both media legs.
    StopMedia,
}

/// Settings the outbound core needs from `[outbound]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundSettings {
    /// How long the user may ring.
    pub ring_timeout: Duration,
    /// 603 or 486 when the user declines.
    pub rejected_status: SipStatus,
    /// 183 with generated ringback instead of a bare 180.
    pub early_ringback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    PreparingMedia,
    Calling {
        call_id: Option<WaCallId>,
        ringing: bool,
        deadline: Instant,
    },
    CancelPending,
    Active {
        call_id: WaCallId,
    },
    Closing {
        end: OutboundEnd,
    },
    Terminated {
        end: OutboundEnd,
    },
}

/// The outbound call core.
#[derive(Debug)]
pub struct OutboundCall {
    route: OutboundRoute,
    settings: OutboundSettings,
    state: State,
    actions: VecDeque<OutboundAction>,
}

impl OutboundCall {
    /// A call routed by the dial plan, waiting for `PbxInvite` or `Refused`.
    pub fn new(route: OutboundRoute, settings: OutboundSettings) -> Self {
        Self {
            route,
            settings,
            state: State::Idle,
            actions: VecDeque::new(),
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, input: OutboundInput, now: Instant) {
        use OutboundInput as I;
        use State as S;
        let state = std::mem::replace(&mut self.state, S::Idle);
        let next = match (state, input) {
            // --- Idle
            (S::Idle, I::PbxInvite) => {
                self.push(OutboundAction::StartMedia);
                S::PreparingMedia
            }
            (S::Idle, I::Refused(f)) => {
                self.fail(&f);
                S::Terminated {
                    end: OutboundEnd::Failed(f),
                }
            }
            (
                s @ S::Idle,
                i @ (I::MediaReady
                | I::MediaFailed
                | I::ConnectResult(_)
                | I::WaAnswer(_)
                | I::WaStatus(..)
                | I::WaTerminated { .. }
                | I::GraphResult { .. }
                | I::PbxCancel
                | I::PbxBye
                | I::PbxReInvite
                | I::RingTimeout),
            ) => ignore(s, &i),

            // --- PreparingMedia
            (S::PreparingMedia, I::MediaReady) => {
                self.push(OutboundAction::SendGraph(GraphAction::Connect));
                // the deadline is re-armed when Meta returns the call id
                S::Calling {
                    call_id: None,
                    ringing: false,
                    deadline: now + self.settings.ring_timeout,
                }
            }
            (S::PreparingMedia, I::MediaFailed) => self.fail_and_stop(OutboundFailure::MediaFailed),
            (S::PreparingMedia, I::PbxCancel) => {
                self.push(OutboundAction::RespondPbx(request_terminated()));
                self.push(OutboundAction::StopMedia);
                S::Terminated {
                    end: OutboundEnd::PbxCancelled,
                }
            }
            (
                s @ S::PreparingMedia,
                i @ (I::PbxInvite
                | I::Refused(_)
                | I::ConnectResult(_)
                | I::WaAnswer(_)
                | I::WaStatus(..)
                | I::WaTerminated { .. }
                | I::GraphResult { .. }
                | I::PbxBye
                | I::PbxReInvite
                | I::RingTimeout),
            ) => ignore(s, &i),

            // --- Calling: connect sent; webhooks may overtake its reply
            (S::Calling { ringing, .. }, I::ConnectResult(Ok(id))) => S::Calling {
                call_id: Some(id),
                ringing,
                deadline: now + self.settings.ring_timeout,
            },
            (S::Calling { .. }, I::ConnectResult(Err(f))) => self.fail_and_stop(f),
            (
                S::Calling {
                    call_id,
                    ringing,
                    deadline,
                },
                I::WaAnswer(id),
            ) => {
                self.push(OutboundAction::ApplyWaAnswer);
                S::Calling {
                    call_id: call_id.or(Some(id)),
                    ringing,
                    deadline,
                }
            }
            (
                S::Calling {
                    call_id,
                    ringing,
                    deadline,
                },
                I::WaStatus(id, WaCallStatus::Ringing),
            ) => {
                if !ringing {
                    self.push(OutboundAction::SendRinging {
                        early_media: self.settings.early_ringback,
                    });
                }
                S::Calling {
                    call_id: call_id.or(Some(id)),
                    ringing: true,
                    deadline,
                }
            }
            (S::Calling { call_id, .. }, I::WaStatus(id, WaCallStatus::Accepted)) => {
                self.push(OutboundAction::RespondPbx(ok_reply()));
                self.push(OutboundAction::OpenMediaGate);
                S::Active {
                    call_id: call_id.unwrap_or(id),
                }
            }
            // a terminate webhook follows REJECTED, so no Graph action is needed
            (S::Calling { .. }, I::WaStatus(_, WaCallStatus::Rejected)) => {
                self.fail_and_stop(OutboundFailure::Rejected)
            }
            (S::Calling { .. }, I::WaTerminated { error }) => self.fail_and_stop(match error {
                Some(code) => OutboundFailure::Terminated { code },
                None => OutboundFailure::NoAnswer,
            }),
            (
                S::Calling {
                    call_id: Some(_), ..
                },
                I::PbxCancel,
            ) => {
                self.push(OutboundAction::RespondPbx(request_terminated()));
                self.terminate(OutboundEnd::PbxCancelled)
            }
            (S::Calling { call_id: None, .. }, I::PbxCancel) => {
                self.push(OutboundAction::RespondPbx(request_terminated()));
                self.push(OutboundAction::StopMedia);
                S::CancelPending
            }
            (
                S::Calling {
                    call_id,
                    ringing,
                    deadline,
                },
                I::RingTimeout,
            ) => {
                if now < deadline {
                    S::Calling {
                        call_id,
                        ringing,
                        deadline,
                    }
                } else {
                    self.fail(&OutboundFailure::NoAnswer);
                    if call_id.is_some() {
                        self.terminate(OutboundEnd::Failed(OutboundFailure::NoAnswer))
                    } else {
                        // no call id: Meta never confirmed the call; a late id is terminated
                        self.push(OutboundAction::StopMedia);
                        S::CancelPending
                    }
                }
            }
            (S::Calling { call_id, .. }, I::MediaFailed) => {
                self.fail(&OutboundFailure::MediaFailed);
                if call_id.is_some() {
                    self.terminate(OutboundEnd::Failed(OutboundFailure::MediaFailed))
                } else {
                    self.push(OutboundAction::StopMedia);
                    S::CancelPending
                }
            }
            (
                s @ S::Calling { .. },
                i @ (I::PbxInvite
                | I::Refused(_)
                | I::MediaReady
                | I::GraphResult { .. }
                | I::PbxBye
                | I::PbxReInvite),
            ) => ignore(s, &i),

            // --- CancelPending: the PBX is answered; end the Meta call as soon as it has an id
            (S::CancelPending, I::ConnectResult(Ok(_)) | I::WaAnswer(_) | I::WaStatus(..)) => {
                self.push(OutboundAction::SendGraph(GraphAction::Terminate));
                S::Closing {
                    end: OutboundEnd::PbxCancelled,
                }
            }
            (S::CancelPending, I::ConnectResult(Err(_)) | I::WaTerminated { .. }) => {
                S::Terminated {
                    end: OutboundEnd::PbxCancelled,
                }
            }
            (
                s @ S::CancelPending,
                i @ (I::PbxInvite
                | I::Refused(_)
                | I::MediaReady
                | I::MediaFailed
                | I::GraphResult { .. }
                | I::PbxCancel
                | I::PbxBye
                | I::PbxReInvite
                | I::RingTimeout),
            ) => ignore(s, &i),

            // --- Active
            (S::Active { .. }, I::PbxBye) => self.terminate(OutboundEnd::PbxHangup),
            (S::Active { .. }, I::WaTerminated { .. }) => {
                self.push(OutboundAction::SendBye);
                self.push(OutboundAction::StopMedia);
                S::Terminated {
                    end: OutboundEnd::WaHangup,
                }
            }
            (S::Active { .. }, I::MediaFailed) => {
                self.push(OutboundAction::SendBye);
                self.terminate(OutboundEnd::MediaFailed)
            }
            (s @ S::Active { .. }, I::PbxReInvite) => {
                self.push(OutboundAction::AnswerReInvite);
                s
            }
            // CANCEL after the 200 OK does nothing (RFC 3261 §9.2); duplicates change nothing
            (
                s @ S::Active { .. },
                i @ (I::PbxInvite
                | I::Refused(_)
                | I::MediaReady
                | I::ConnectResult(_)
                | I::WaAnswer(_)
                | I::WaStatus(..)
                | I::GraphResult { .. }
                | I::PbxCancel
                | I::RingTimeout),
            ) => ignore(s, &i),

            // --- Closing: waiting for the terminate reply
            (
                S::Closing { end },
                I::GraphResult {
                    action: GraphAction::Terminate,
                    ok,
                },
            ) => {
                if !ok {
                    debug!("graph terminate failed; the call ends anyway");
                }
                S::Terminated { end }
            }
            (S::Closing { end }, I::WaTerminated { .. }) => S::Terminated { end },
            (
                s @ S::Closing { .. },
                i @ (I::PbxInvite
                | I::Refused(_)
                | I::MediaReady
                | I::MediaFailed
                | I::ConnectResult(_)
                | I::WaAnswer(_)
                | I::WaStatus(..)
                | I::GraphResult { .. }
                | I::PbxCancel
                | I::PbxBye
                | I::PbxReInvite
                | I::RingTimeout),
            ) => ignore(s, &i),

            // --- Terminated
            (
                s @ S::Terminated { .. },
                i @ (I::PbxInvite
                | I::Refused(_)
                | I::MediaReady
                | I::MediaFailed
                | I::ConnectResult(_)
                | I::WaAnswer(_)
                | I::WaStatus(..)
                | I::WaTerminated { .. }
                | I::GraphResult { .. }
                | I::PbxCancel
                | I::PbxBye
                | I::PbxReInvite
                | I::RingTimeout),
            ) => ignore(s, &i),
        };
        debug!(state = ?next, "outbound call state");
        self.state = next;
    }

    /// Fires the ring timer if it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| t <= now) {
            self.handle(OutboundInput::RingTimeout, now);
        }
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<OutboundAction> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Calling { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Whether the call is over.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated { .. })
    }

    /// How the call ended, once terminated (feeds the consent guard).
    pub fn end(&self) -> Option<&OutboundEnd> {
        match &self.state {
            State::Terminated { end } => Some(end),
            _ => None,
        }
    }

    /// The WhatsApp call id once known.
    pub fn wa_call_id(&self) -> Option<&WaCallId> {
        match &self.state {
            State::Calling { call_id, .. } => call_id.as_ref(),
            State::Active { call_id } => Some(call_id),
            _ => None,
        }
    }

    /// The route this call follows.
    pub fn route(&self) -> &OutboundRoute {
        &self.route
    }

    fn push(&mut self, a: OutboundAction) {
        self.actions.push_back(a);
    }

    /// Answers the PBX with the mapped failure and, for "no permission", asks for it.
    fn fail(&mut self, f: &OutboundFailure) {
        if is_permission_missing(f) && self.route.auto_permission_request {
            self.push(OutboundAction::SendPermissionRequest);
        }
        self.push(OutboundAction::RespondPbx(outbound_failure_reply(
            f,
            self.settings.rejected_status,
        )));
    }

    fn fail_and_stop(&mut self, f: OutboundFailure) -> State {
        self.fail(&f);
        self.push(OutboundAction::StopMedia);
        State::Terminated {
            end: OutboundEnd::Failed(f),
        }
    }

    fn terminate(&mut self, end: OutboundEnd) -> State {
        self.push(OutboundAction::SendGraph(GraphAction::Terminate));
        self.push(OutboundAction::StopMedia);
        State::Closing { end }
    }
}

fn ok_reply() -> SipReply {
    SipReply {
        status: SipStatus::from_const(200),
        reason: String::new(),
        warning: None,
        retry_after: None,
    }
}

fn request_terminated() -> SipReply {
    SipReply {
        status: SipStatus::from_const(487),
        reason: "SIP;cause=487;text=\"Request Terminated\"".to_owned(),
        warning: None,
        retry_after: None,
    }
}

fn ignore(state: State, input: &OutboundInput) -> State {
    debug!(?state, ?input, "input ignored in this state");
    state
}
