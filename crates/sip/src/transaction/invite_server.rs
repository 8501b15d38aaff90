//! INVITE server transaction, RFC 3261 §17.2.1 with RFC 6026's `Accepted` state.
//!
//! ```text
//!                               |INVITE
//!                               |pass INV to TU
//!            INVITE             V send 100 Trying
//!            send response+-----------+
//!                +--------|           |--------+ 101-199 from TU
//!                |        |           |        | send response
//!                +------->|Proceeding |<-------+
//!                         |           |
//!                         |           |--------------------+ 2xx from TU
//!                         +-----------+                    | send response
//!      300-699 from TU     |                               V
//!      send response       |                       +-----------+  INVITE: absorb
//!                          |                       |           |  2xx from TU: send
//!                          V                       | Accepted  |  ACK: to TU
//!                   +-----------+                  |           |
//!   INVITE          |           |                  +-----------+
//!   send response   |           |                        | Timer L fires
//!      +----------->| Completed |  Timer G fires         |
//!      |            |           |  send response         |
//!      +------------|           |<-----+                 |
//!                   |           |------+                 |
//!                   +-----------+                        |
//!                      |     |  Timer H fires: tell TU   |
//!                   ACK|     +-------------------------->|
//!                      V                                 |
//!                   +-----------+                        |
//!                   | Confirmed | Timer I fires          V
//!                   |           |---------------> +------------+
//!                   +-----------+                 | Terminated |
//!                                                 +------------+
//! ```
//!
//! A 100 Trying is queued at creation (§17.2.1 allows sending it at once). Timer G
//! (T1 doubling up to T2, UDP only) retransmits a non-2xx final until the ACK or Timer
//! H (64·T1); Timer I (T4 UDP, 0 reliable) absorbs ACK retransmits; Timer L (64·T1)
//! keeps the transaction in Accepted so INVITE retransmits are absorbed while the TU
//! (the dialog) retransmits the 2xx itself until its ACK arrives.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::debug;

use super::{Timer, TimerConfig, Timers, Transmit, TxnError, TxnEvent, TxnKey};
use crate::message::{Method, Request, Response, SipMessage, StatusCode, Tag};

#[derive(Debug, Clone)]
enum State {
    Proceeding {
        last: Response,
    },
    Completed {
        last: Response,
        g_interval: Duration,
    },
    Confirmed,
    Accepted,
    Terminated,
}

/// INVITE server transaction (RFC 3261 §17.2.1, RFC 6026 §8.7).
#[derive(Debug)]
pub struct InviteServerTxn {
    invite: Request,
    key: Option<TxnKey>,
    reliable: bool,
    timers_cfg: TimerConfig,
    state: State,
    timers: Timers,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxnEvent>,
}

impl InviteServerTxn {
    /// Starts the transaction for a received INVITE and queues `100 Trying`.
    pub fn new(invite: Request, reliable: bool, timers: &TimerConfig, now: Instant) -> Self {
        let _ = now;
        let trying = invite.response(StatusCode::TRYING, None);
        let mut transmits = VecDeque::new();
        transmits.push_back(Transmit {
            message: SipMessage::Response(trying.clone()),
            retransmission: false,
        });
        Self {
            key: TxnKey::server(&invite),
            invite,
            reliable,
            timers_cfg: timers.clone(),
            state: State::Proceeding { last: trying },
            timers: Timers::default(),
            transmits,
            events: VecDeque::new(),
        }
    }

    /// The INVITE.
    pub fn request(&self) -> &Request {
        &self.invite
    }

    /// The matching key.
    pub fn key(&self) -> Option<&TxnKey> {
        self.key.as_ref()
    }

    /// The state's RFC name.
    pub fn state_name(&self) -> &'static str {
        state_name_of(&self.state)
    }

    /// Whether no final response was sent yet.
    pub fn is_proceeding(&self) -> bool {
        matches!(self.state, State::Proceeding { .. })
    }

    /// Feeds a retransmitted INVITE or an ACK matching this transaction's key.
    pub fn handle_request(&mut self, req: Request, now: Instant) {
        let state = std::mem::replace(&mut self.state, State::Terminated);
        let method = req.method.clone();
        self.state = match (state, &method) {
            (State::Proceeding { last }, Method::Invite) => {
                self.retransmit(&last);
                State::Proceeding { last }
            }
            (State::Completed { last, g_interval }, Method::Invite) => {
                self.retransmit(&last);
                State::Completed { last, g_interval }
            }
            (State::Completed { .. }, Method::Ack) => {
                self.timers.clear(Timer::G);
                self.timers.clear(Timer::H);
                if self.reliable {
                    State::Terminated
                } else {
                    self.timers.set(Timer::I, now + self.timers_cfg.t4);
                    State::Confirmed
                }
            }
            (State::Accepted, Method::Ack) => {
                self.events.push_back(TxnEvent::Ack(req));
                State::Accepted
            }
            (s @ (State::Confirmed | State::Accepted), Method::Invite | Method::Ack) => s,
            (State::Proceeding { last }, Method::Ack) => {
                debug!("stray ACK before a final response dropped");
                State::Proceeding { last }
            }
            (s, m) => {
                debug!(method = %m, state = state_name_of(&s), "request absorbed");
                s
            }
        };
    }
}

fn state_name_of(s: &State) -> &'static str {
    {
        match s {
            State::Proceeding { .. } => "Proceeding",
            State::Completed { .. } => "Completed",
            State::Confirmed => "Confirmed",
            State::Accepted => "Accepted",
            State::Terminated => "Terminated",
        }
    }
}

impl InviteServerTxn {
    /// Sends a response from the TU: 1xx keeps Proceeding, 2xx moves to Accepted (and
    /// may be repeated there by the TU's 2xx retransmissions), 300-699 moves to
    /// Completed.
    pub fn send_response(&mut self, resp: Response, now: Instant) -> Result<(), TxnError> {
        let code = resp.status.as_u16();
        let state = std::mem::replace(&mut self.state, State::Terminated);
        let (next, result) = match (state, code) {
            (State::Proceeding { .. }, 100..=199) => {
                self.send(&resp, false);
                (State::Proceeding { last: resp }, Ok(()))
            }
            (State::Proceeding { .. }, 200..=299) => {
                self.send(&resp, false);
                self.timers.set(Timer::L, now + self.timers_cfg.t1x64());
                (State::Accepted, Ok(()))
            }
            (State::Proceeding { .. }, _) => {
                self.send(&resp, false);
                if !self.reliable {
                    self.timers.set(Timer::G, now + self.timers_cfg.t1);
                }
                self.timers.set(Timer::H, now + self.timers_cfg.t1x64());
                (
                    State::Completed {
                        last: resp,
                        g_interval: self.timers_cfg.t1,
                    },
                    Ok(()),
                )
            }
            (State::Accepted, 200..=299) => {
                self.send(&resp, true);
                (State::Accepted, Ok(()))
            }
            (s, _) => {
                let state = state_name_of(&s);
                (
                    s,
                    Err(TxnError::InvalidState {
                        state,
                        status: code,
                    }),
                )
            }
        };
        self.state = next;
        result
    }

    /// CANCEL for this INVITE (RFC 3261 §9.2): if no final response was sent, sends
    /// `487 Request Terminated` (with `to_tag`) for the INVITE. Returns the `200 OK`
    /// for the CANCEL, which the CANCEL's own non-INVITE server transaction sends.
    pub fn handle_cancel(
        &mut self,
        cancel: &Request,
        to_tag: Option<&Tag>,
        now: Instant,
    ) -> Response {
        if self.is_proceeding() {
            let resp = self.invite.response(StatusCode::REQUEST_TERMINATED, to_tag);
            if let Err(e) = self.send_response(resp, now) {
                debug!(error = %e, "487 for cancelled INVITE not sent");
            }
        }
        cancel.response(StatusCode::OK, to_tag)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            let state = std::mem::replace(&mut self.state, State::Terminated);
            self.state = match (state, timer) {
                (State::Completed { last, g_interval }, Timer::G) => {
                    self.retransmit(&last);
                    let next = g_interval.saturating_mul(2).min(self.timers_cfg.t2);
                    self.timers.set(Timer::G, now + next);
                    State::Completed {
                        last,
                        g_interval: next,
                    }
                }
                (State::Completed { .. }, Timer::H) => {
                    self.timers.clear_all();
                    self.events.push_back(TxnEvent::AckTimeout);
                    State::Terminated
                }
                (State::Confirmed, Timer::I) | (State::Accepted, Timer::L) => {
                    self.timers.clear_all();
                    State::Terminated
                }
                (s, t) => {
                    debug!(timer = ?t, "stale timer ignored");
                    s
                }
            };
        }
    }

    /// The transport failed to send a response (§17.2.4): inform the TU, terminate.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if !matches!(self.state, State::Terminated) {
            self.timers.clear_all();
            self.events.push_back(TxnEvent::TransportError);
            self.state = State::Terminated;
        }
    }

    fn send(&mut self, resp: &Response, retransmission: bool) {
        self.transmits.push_back(Transmit {
            message: SipMessage::Response(resp.clone()),
            retransmission,
        });
    }

    fn retransmit(&mut self, resp: &Response) {
        self.send(resp, true);
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    /// Earliest timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.earliest()
    }

    /// Whether the transaction is over.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }
}
