//! The user-initiated call: a WhatsApp user calls a business number, the PBX rings.
//!
//! ```text
//!  Idle ──WaOffer──▶ PreparingMedia ──MediaReady──▶ PreAccepting ──pre_accept ok──▶ Ringing(n)
//!                                                                                     │  │  │
//!     ┌──────────── PBX failure / ring timeout with a fallback: INVITE attempt n+1 ◀─┘  │  │
//!     ▼                                                                                  │  │
//!  Ringing(n+1) … ── PBX failure, no fallback ──▶ Closing(reject) ──result──▶ Terminated │  │
//!                                                                                        │  │
//!  Accepting(n) ◀──────────────────────────── PBX 200 OK ────────────────────────────────┘  │
//!     │ accept ok                                                                           │
//!     ▼                                                                                     │
//!  Active(n) ──PBX BYE──▶ Closing(terminate) ──result──▶ Terminated                         │
//!     └──WhatsApp terminate──▶ BYE ──▶ Terminated ◀── WhatsApp terminate: CANCEL ───────────┘
//! ```
//!
//! Rules (issue 5, Calling API notes §2.1): media toward WhatsApp stays gated until
//! `accept` succeeds; `reject` before accept, `terminate` after; a late 200 OK for an
//! attempt that was cancelled is answered with BYE; duplicates (webhook retries, 200
//! retransmissions) change nothing; re-INVITEs and UPDATEs from the PBX are absorbed.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::debug;

use super::mapping::{PbxFailureAction, pbx_failure_action};
use super::{GraphAction, InboundEnd};
use crate::dialplan::{FailureCause, InboundRoute, PbxTarget};
use crate::types::SipStatus;

/// An event for the inbound call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboundInput {
    /// The `connect` webhook with Meta's offer (a duplicate is ignored).
    WaOffer,
    /// The WhatsApp leg's SDP answer is built (media engine).
    MediaReady,
    /// The WhatsApp leg's media failed (offer unusable, ICE/DTLS failure, media timeout).
    MediaFailed,
    /// A Graph request finished.
    GraphResult {
        /// Which action.
        action: GraphAction,
        /// Whether Meta answered success.
        ok: bool,
    },
    /// 1xx from the PBX for an attempt.
    PbxProvisional {
        /// Attempt number.
        attempt: usize,
        /// 180, 183, …
        status: SipStatus,
    },
    /// 2xx from the PBX for an attempt (the SIP layer ACKs it).
    PbxAnswered {
        /// Attempt number.
        attempt: usize,
    },
    /// A final non-2xx from the PBX (transport failure: 503, RFC 3261 §8.1.3.1).
    PbxFailed {
        /// Attempt number.
        attempt: usize,
        /// The status.
        status: SipStatus,
    },
    /// The ring timer fired (normally fed by [`InboundCall::handle_timeout`]).
    RingTimeout,
    /// The `terminate` webhook.
    WaTerminated,
    /// BYE from the PBX in the confirmed dialog.
    PbxBye,
    /// re-INVITE or UPDATE from the PBX (hold/unhold, session refresh, codec change).
    PbxReInvite,
}

/// Something for the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboundAction {
    /// Build the WhatsApp leg's SDP answer to Meta's offer; report `MediaReady`/`MediaFailed`.
    StartMedia,
    /// Send a Graph `POST /calls` action (the answer SDP for pre_accept/accept comes from media).
    SendGraph(GraphAction),
    /// Send an INVITE to the PBX.
    SendInvite {
        /// Attempt number (0 = primary target).
        attempt: usize,
        /// Where and with which headers.
        target: PbxTarget,
    },
    /// A fallback was chosen (for logs and the CDR); a `SendInvite` follows.
    TryFallback {
        /// The attempt about to start.
        attempt: usize,
        /// Why the previous one failed.
        cause: FailureCause,
    },
    /// CANCEL the pending INVITE of an attempt.
    SendCancel {
        /// Attempt number.
        attempt: usize,
    },
    /// BYE the PBX dialog of an attempt.
    SendBye {
        /// Attempt number.
        attempt: usize,
    },
    /// Answer the PBX's re-INVITE/UPDATE with 200 OK and the current SDP; WhatsApp sees nothing.
    AnswerReInvite,
    /// Let media flow toward WhatsApp (after `accept` succeeded).
    OpenMediaGate,
    /// Release both media legs.
    StopMedia,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    PreparingMedia,
    PreAccepting,
    Ringing {
        attempt: usize,
        deadline: Instant,
        provisional: Option<SipStatus>,
    },
    Accepting {
        attempt: usize,
    },
    Active {
        attempt: usize,
    },
    Closing {
        awaiting: GraphAction,
        end: InboundEnd,
    },
    Terminated {
        end: InboundEnd,
    },
}

/// The inbound call core. Owned by one task; see the crate docs for the drive loop.
#[derive(Debug)]
pub struct InboundCall {
    route: InboundRoute,
    state: State,
    /// The attempt whose 200 OK was taken; its retransmissions are not stray.
    answered: Option<usize>,
    actions: VecDeque<InboundAction>,
}

impl InboundCall {
    /// A call routed by the dial plan, waiting for `WaOffer`.
    pub fn new(route: InboundRoute) -> Self {
        Self {
            route,
            state: State::Idle,
            answered: None,
            actions: VecDeque::new(),
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, input: InboundInput, now: Instant) {
        use InboundInput as I;
        use State as S;
        let state = std::mem::replace(&mut self.state, S::Idle);
        let next = match (state, input) {
            // --- Idle
            (S::Idle, I::WaOffer) => {
                self.push(InboundAction::StartMedia);
                S::PreparingMedia
            }
            (S::Idle, I::WaTerminated) => S::Terminated {
                end: InboundEnd::WaHangup,
            },
            (
                s @ S::Idle,
                i @ (I::MediaReady
                | I::MediaFailed
                | I::GraphResult { .. }
                | I::PbxProvisional { .. }
                | I::PbxFailed { .. }
                | I::RingTimeout
                | I::PbxBye
                | I::PbxReInvite),
            ) => ignore(s, &i),
            (S::Idle, I::PbxAnswered { attempt }) => self.bye_stray(S::Idle, attempt),

            // --- PreparingMedia
            (S::PreparingMedia, I::MediaReady) => {
                self.push(InboundAction::SendGraph(GraphAction::PreAccept));
                S::PreAccepting
            }
            (S::PreparingMedia, I::MediaFailed) => self.reject(InboundEnd::MediaFailed),
            (S::PreparingMedia, I::WaTerminated) => self.stop(InboundEnd::WaHangup),
            (
                s @ S::PreparingMedia,
                i @ (I::WaOffer
                | I::GraphResult { .. }
                | I::PbxProvisional { .. }
                | I::PbxFailed { .. }
                | I::RingTimeout
                | I::PbxBye
                | I::PbxReInvite),
            ) => ignore(s, &i),
            (S::PreparingMedia, I::PbxAnswered { attempt }) => {
                self.bye_stray(S::PreparingMedia, attempt)
            }

            // --- PreAccepting
            (
                S::PreAccepting,
                I::GraphResult {
                    action: GraphAction::PreAccept,
                    ok: true,
                },
            ) => self.invite(0, now),
            (
                S::PreAccepting,
                I::GraphResult {
                    action: GraphAction::PreAccept,
                    ok: false,
                },
            ) => self.reject(InboundEnd::GraphFailed(GraphAction::PreAccept)),
            (S::PreAccepting, I::MediaFailed) => self.reject(InboundEnd::MediaFailed),
            (S::PreAccepting, I::WaTerminated) => self.stop(InboundEnd::WaHangup),
            (
                s @ S::PreAccepting,
                i @ (I::WaOffer
                | I::MediaReady
                | I::GraphResult { .. }
                | I::PbxProvisional { .. }
                | I::PbxFailed { .. }
                | I::RingTimeout
                | I::PbxBye
                | I::PbxReInvite),
            ) => ignore(s, &i),
            (S::PreAccepting, I::PbxAnswered { attempt }) => {
                self.bye_stray(S::PreAccepting, attempt)
            }

            // --- Ringing
            (
                S::Ringing {
                    attempt, deadline, ..
                },
                I::PbxProvisional { attempt: a, status },
            ) if a == attempt => S::Ringing {
                attempt,
                deadline,
                provisional: Some(status),
            },
            (S::Ringing { attempt, .. }, I::PbxAnswered { attempt: a }) if a == attempt => {
                self.answered = Some(attempt);
                self.push(InboundAction::SendGraph(GraphAction::Accept));
                S::Accepting { attempt }
            }
            (s @ S::Ringing { .. }, I::PbxAnswered { attempt: a }) => self.bye_stray(s, a),
            (S::Ringing { attempt, .. }, I::PbxFailed { attempt: a, status }) if a == attempt => {
                self.after_failure(Some(status), attempt, now)
            }
            (
                S::Ringing {
                    attempt,
                    deadline,
                    provisional,
                },
                I::RingTimeout,
            ) => {
                if now < deadline {
                    S::Ringing {
                        attempt,
                        deadline,
                        provisional,
                    }
                } else {
                    self.push(InboundAction::SendCancel { attempt });
                    self.after_failure(None, attempt, now)
                }
            }
            (S::Ringing { attempt, .. }, I::WaTerminated) => {
                self.push(InboundAction::SendCancel { attempt });
                self.stop(InboundEnd::WaHangup)
            }
            (S::Ringing { attempt, .. }, I::MediaFailed) => {
                self.push(InboundAction::SendCancel { attempt });
                self.reject(InboundEnd::MediaFailed)
            }
            (
                s @ S::Ringing { .. },
                i @ (I::WaOffer
                | I::MediaReady
                | I::GraphResult { .. }
                | I::PbxProvisional { .. }
                | I::PbxFailed { .. }
                | I::PbxBye
                | I::PbxReInvite),
            ) => ignore(s, &i),

            // --- Accepting
            (
                S::Accepting { attempt },
                I::GraphResult {
                    action: GraphAction::Accept,
                    ok: true,
                },
            ) => {
                self.push(InboundAction::OpenMediaGate);
                S::Active { attempt }
            }
            (
                S::Accepting { attempt },
                I::GraphResult {
                    action: GraphAction::Accept,
                    ok: false,
                },
            ) => {
                self.push(InboundAction::SendBye { attempt });
                self.terminate(InboundEnd::GraphFailed(GraphAction::Accept))
            }
            (S::Accepting { attempt }, I::WaTerminated) => {
                self.push(InboundAction::SendBye { attempt });
                self.stop(InboundEnd::WaHangup)
            }
            // accept is in flight, so the call is ended with terminate, not reject
            (S::Accepting { .. }, I::PbxBye) => self.terminate(InboundEnd::PbxHangup),
            (S::Accepting { attempt }, I::MediaFailed) => {
                self.push(InboundAction::SendBye { attempt });
                self.terminate(InboundEnd::MediaFailed)
            }
            (s @ S::Accepting { .. }, I::PbxReInvite) => {
                self.push(InboundAction::AnswerReInvite);
                s
            }
            // the SIP layer absorbs 200 retransmissions; a stray one changes nothing
            (s @ S::Accepting { .. }, I::PbxAnswered { attempt }) => self.bye_stray(s, attempt),
            (
                s @ S::Accepting { .. },
                i @ (I::WaOffer
                | I::MediaReady
                | I::GraphResult { .. }
                | I::PbxProvisional { .. }
                | I::PbxFailed { .. }
                | I::RingTimeout),
            ) => ignore(s, &i),

            // --- Active
            (S::Active { attempt }, I::WaTerminated) => {
                self.push(InboundAction::SendBye { attempt });
                self.stop(InboundEnd::WaHangup)
            }
            (S::Active { .. }, I::PbxBye) => self.terminate(InboundEnd::PbxHangup),
            (S::Active { attempt }, I::MediaFailed) => {
                self.push(InboundAction::SendBye { attempt });
                self.terminate(InboundEnd::MediaFailed)
            }
            (s @ S::Active { .. }, I::PbxReInvite) => {
                self.push(InboundAction::AnswerReInvite);
                s
            }
            (s @ S::Active { .. }, I::PbxAnswered { attempt }) => self.bye_stray(s, attempt),
            (
                s @ S::Active { .. },
                i @ (I::WaOffer
                | I::MediaReady
                | I::GraphResult { .. }
                | I::PbxProvisional { .. }
                | I::PbxFailed { .. }
                | I::RingTimeout),
            ) => ignore(s, &i),

            // --- Closing: waiting for Meta to confirm reject/terminate
            (S::Closing { awaiting, end }, I::GraphResult { action, ok }) if action == awaiting => {
                if !ok {
                    debug!(
                        ?action,
                        "graph action failed while closing; the call ends anyway"
                    );
                }
                S::Terminated { end }
            }
            (S::Closing { end, .. }, I::WaTerminated) => S::Terminated { end },
            (s @ S::Closing { .. }, I::PbxAnswered { attempt }) => self.bye_stray(s, attempt),
            (
                s @ S::Closing { .. },
                i @ (I::WaOffer
                | I::MediaReady
                | I::MediaFailed
                | I::GraphResult { .. }
                | I::PbxProvisional { .. }
                | I::PbxFailed { .. }
                | I::RingTimeout
                | I::PbxBye
                | I::PbxReInvite),
            ) => ignore(s, &i),

            // --- Terminated: only a 200 OK that crossed our CANCEL needs an answer
            (s @ S::Terminated { .. }, I::PbxAnswered { attempt }) => self.bye_stray(s, attempt),
            (
                s @ S::Terminated { .. },
                i @ (I::WaOffer
                | I::MediaReady
                | I::MediaFailed
                | I::GraphResult { .. }
                | I::PbxProvisional { .. }
                | I::PbxFailed { .. }
                | I::RingTimeout
                | I::WaTerminated
                | I::PbxBye
                | I::PbxReInvite),
            ) => ignore(s, &i),
        };
        debug!(state = ?next, "inbound call state");
        self.state = next;
    }

    /// Fires the ring timer if it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| t <= now) {
            self.handle(InboundInput::RingTimeout, now);
        }
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<InboundAction> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Ringing { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Whether the call is over (both legs released); the owner may drop it.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated { .. })
    }

    /// How the call ended, once terminated.
    pub fn end(&self) -> Option<&InboundEnd> {
        match &self.state {
            State::Terminated { end } => Some(end),
            _ => None,
        }
    }

    /// Whether the PBX answered (for CDRs).
    pub fn is_answered(&self) -> bool {
        self.answered.is_some()
    }

    /// The attempt currently ringing or answered.
    pub fn current_attempt(&self) -> Option<usize> {
        match self.state {
            State::Ringing { attempt, .. }
            | State::Accepting { attempt }
            | State::Active { attempt } => Some(attempt),
            _ => None,
        }
    }

    fn push(&mut self, a: InboundAction) {
        self.actions.push_back(a);
    }

    fn invite(&mut self, attempt: usize, now: Instant) -> State {
        let Some(target) = self.route.attempt(attempt).cloned() else {
            // bug: the mapping only returns attempts of this route
            debug_assert!(false, "attempt {attempt} not in route");
            return self.reject(InboundEnd::NoRoute);
        };
        let deadline = now + target.ring_timeout;
        self.push(InboundAction::SendInvite { attempt, target });
        State::Ringing {
            attempt,
            deadline,
            provisional: None,
        }
    }

    fn after_failure(&mut self, status: Option<SipStatus>, attempt: usize, now: Instant) -> State {
        match pbx_failure_action(status, &self.route, attempt) {
            PbxFailureAction::Fallback {
                attempt: next,
                cause,
            } => {
                self.push(InboundAction::TryFallback {
                    attempt: next,
                    cause,
                });
                self.invite(next, now)
            }
            PbxFailureAction::Reject => self.reject(match status {
                Some(s) => InboundEnd::PbxRejected(s),
                None => InboundEnd::NoAnswer,
            }),
        }
    }

    fn reject(&mut self, end: InboundEnd) -> State {
        self.push(InboundAction::SendGraph(GraphAction::Reject));
        self.push(InboundAction::StopMedia);
        State::Closing {
            awaiting: GraphAction::Reject,
            end,
        }
    }

    fn terminate(&mut self, end: InboundEnd) -> State {
        self.push(InboundAction::SendGraph(GraphAction::Terminate));
        self.push(InboundAction::StopMedia);
        State::Closing {
            awaiting: GraphAction::Terminate,
            end,
        }
    }

    fn stop(&mut self, end: InboundEnd) -> State {
        self.push(InboundAction::StopMedia);
        State::Terminated { end }
    }

    fn bye_stray(&mut self, state: State, attempt: usize) -> State {
        if self.answered == Some(attempt) {
            debug!(attempt, "200 OK retransmission; ignored");
            return state;
        }
        // a 200 OK for an attempt we cancelled or never sent: the dialog is confirmed
        // on the PBX side, so end it (RFC 3261 §15: BYE after ACK)
        debug!(attempt, "200 OK for a stale attempt; sending BYE");
        self.push(InboundAction::SendBye { attempt });
        state
    }
}

fn ignore(state: State, input: &InboundInput) -> State {
    debug!(?state, ?input, "input ignored in this state");
    state
}
