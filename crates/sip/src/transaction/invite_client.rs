//! INVITE client transaction, RFC 3261 §17.1.1 with RFC 6026's `Accepted` state.
//!
//! ```text
//!                          |INVITE from TU
//!        Timer A fires     |INVITE sent           Timer B fires
//!        Reset A,          V                      or Transport Err.
//!        INVITE sent +-----------+                inform TU
//!          +---------|           |---------------------------+
//!          |         |  Calling  |                           |
//!          +-------->|           |-----------+               |
//! 300-699            +-----------+ 2xx       |               |
//! ACK sent              |  |       2xx to TU |               |
//! resp. to TU           |  |1xx              |               |
//!   +-------------------+  |1xx to TU        |               |
//!   |                      V                 |               |
//!   |  1xx to TU     +-----------+           |               |
//!   |  +-------------|           |           |               |
//!   |  |             |Proceeding |---------->|               |
//!   |  +------------>|           | 2xx       |               |
//!   |                +-----------+ 2xx to TU |               |
//!   |     300-699         |                  |               |
//!   |     ACK sent,       |                  V               |
//!   |     resp. to TU     |          +-----------+           |
//!   |                     |          |           | 2xx to TU |
//!   V                     V          | Accepted  |<-----+    |
//! +-----------+                      |           |------+    |
//! |           |<-- 300-699 ACK sent  +-----------+           |
//! | Completed |                        | Timer M fires       |
//! |           |                        V                     |
//! +-----------+ Timer D fires   +------------+               |
//!       +---------------------->| Terminated |<--------------+
//!                               +------------+
//! ```
//!
//! Timer A (T1, doubling) retransmits over UDP only; Timer B (64·T1) gives up in
//! Calling; Timer D (32 s UDP, 0 reliable) absorbs retransmitted non-2xx finals, each
//! answered with the same ACK; Timer M (64·T1) keeps the transaction in Accepted so
//! 2xx retransmissions reach the TU. The ACK for a non-2xx is built here (§17.1.1.3);
//! the ACK for a 2xx belongs to the dialog.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::debug;

use super::{Timer, TimerConfig, Timers, Transmit, TxnError, TxnEvent, TxnKey, response_matches};
use crate::message::{Request, Response, SipMessage};

#[derive(Debug, Clone)]
enum State {
    Calling { a_interval: Duration },
    Proceeding,
    Completed { ack: Request },
    Accepted,
    Terminated,
}

/// INVITE client transaction (RFC 3261 §17.1.1, RFC 6026 §8.4).
#[derive(Debug)]
pub struct InviteClientTxn {
    invite: Request,
    key: Option<TxnKey>,
    reliable: bool,
    timers_cfg: TimerConfig,
    state: State,
    timers: Timers,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxnEvent>,
}

impl InviteClientTxn {
    /// Starts the transaction: queues the INVITE, arms Timer A (UDP only), B and C.
    pub fn new(invite: Request, reliable: bool, timers: &TimerConfig, now: Instant) -> Self {
        let mut t = Timers::default();
        if !reliable {
            t.set(Timer::A, now + timers.t1);
        }
        t.set(Timer::B, now + timers.t1x64());
        t.set(Timer::C, now + timers.timer_c);
        let mut transmits = VecDeque::new();
        transmits.push_back(Transmit {
            message: SipMessage::Request(invite.clone()),
            retransmission: false,
        });
        Self {
            key: TxnKey::client(&invite),
            invite,
            reliable,
            timers_cfg: timers.clone(),
            state: State::Calling {
                a_interval: timers.t1,
            },
            timers: t,
            transmits,
            events: VecDeque::new(),
        }
    }

    /// The INVITE this transaction sends.
    pub fn request(&self) -> &Request {
        &self.invite
    }

    /// The matching key (`None` if the INVITE had no branch).
    pub fn key(&self) -> Option<&TxnKey> {
        self.key.as_ref()
    }

    /// The state's RFC name.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Calling { .. } => "Calling",
            State::Proceeding => "Proceeding",
            State::Completed { .. } => "Completed",
            State::Accepted => "Accepted",
            State::Terminated => "Terminated",
        }
    }

    /// Whether a CANCEL may be sent now: only after a provisional response and before
    /// a final one (RFC 3261 §9.1).
    pub fn can_cancel(&self) -> bool {
        matches!(self.state, State::Proceeding)
    }

    /// Feeds a response whose key matched this transaction.
    pub fn handle_response(&mut self, resp: Response, now: Instant) -> Result<(), TxnError> {
        if !response_matches(&self.invite, &resp) {
            debug!(
                status = resp.status.as_u16(),
                "response does not match INVITE client txn"
            );
            return Err(TxnError::Mismatch);
        }
        let code = resp.status.as_u16();
        let state = std::mem::replace(&mut self.state, State::Terminated);
        self.state = match (state, code) {
            (State::Calling { .. } | State::Proceeding, 100..=199) => {
                self.timers.clear(Timer::A);
                self.timers.clear(Timer::B);
                if code > 100 {
                    self.timers.set(Timer::C, now + self.timers_cfg.timer_c);
                }
                self.events.push_back(TxnEvent::Provisional(resp));
                State::Proceeding
            }
            (State::Calling { .. } | State::Proceeding, 200..=299) => {
                self.timers.clear_all();
                self.timers.set(Timer::M, now + self.timers_cfg.t1x64());
                self.events.push_back(TxnEvent::Final(resp));
                State::Accepted
            }
            (State::Calling { .. } | State::Proceeding, _) => {
                self.timers.clear_all();
                let ack = self.invite.ack_for(&resp);
                self.transmits.push_back(Transmit {
                    message: SipMessage::Request(ack.clone()),
                    retransmission: false,
                });
                self.events.push_back(TxnEvent::Final(resp));
                if self.reliable {
                    State::Terminated
                } else {
                    self.timers.set(Timer::D, now + Duration::from_secs(32));
                    State::Completed { ack }
                }
            }
            (State::Accepted, 200..=299) => {
                self.events.push_back(TxnEvent::Final(resp));
                State::Accepted
            }
            (State::Completed { ack }, 300..=699) => {
                self.transmits.push_back(Transmit {
                    message: SipMessage::Request(ack.clone()),
                    retransmission: true,
                });
                State::Completed { ack }
            }
            (state @ (State::Accepted | State::Completed { .. }), _) => {
                debug!(status = code, "late response absorbed by INVITE client txn");
                state
            }
            (State::Terminated, _) => State::Terminated,
        };
        Ok(())
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            let state = std::mem::replace(&mut self.state, State::Terminated);
            self.state = match (state, timer) {
                (State::Calling { a_interval }, Timer::A) => {
                    let next = a_interval.saturating_mul(2);
                    self.transmits.push_back(Transmit {
                        message: SipMessage::Request(self.invite.clone()),
                        retransmission: true,
                    });
                    self.timers.set(Timer::A, now + next);
                    State::Calling { a_interval: next }
                }
                (State::Calling { .. }, Timer::B) => {
                    self.timers.clear_all();
                    self.events.push_back(TxnEvent::Timeout);
                    State::Terminated
                }
                (s @ (State::Calling { .. } | State::Proceeding), Timer::C) => {
                    self.events.push_back(TxnEvent::TimerC);
                    s
                }
                (State::Completed { .. }, Timer::D) | (State::Accepted, Timer::M) => {
                    self.timers.clear_all();
                    State::Terminated
                }
                (s, t) => {
                    debug!(timer = ?t, state = ?s, "stale timer ignored");
                    s
                }
            };
        }
    }

    /// The transport failed to send the INVITE (§17.1.4): inform the TU and terminate.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if !matches!(self.state, State::Terminated) {
            self.timers.clear_all();
            self.events.push_back(TxnEvent::TransportError);
            self.state = State::Terminated;
        }
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

    /// Whether the transaction is over (the owner removes it).
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }
}
