//! Non-INVITE client transaction, RFC 3261 §17.1.2.
//!
//! ```text
//!                        |Request from TU
//!                        |send request
//!    Timer E             V
//!    send request  +-----------+
//!        +---------|           |-------------------+
//!        |         |  Trying   |  Timer F          |
//!        +-------->|           |  or Transport Err.|
//!                  +-----------+  inform TU        |
//!     200-699         |  |                         |
//!     resp. to TU     |  |1xx                      |
//!     +---------------+  |resp. to TU              |
//!     |                  |                         |
//!     |   Timer E        V       Timer F           |
//!     |   send req +-----------+ or Transport Err. |
//!     |  +---------|           | inform TU         |
//!     |  |         |Proceeding |------------------>|
//!     |  +-------->|           |-----+             |
//!     |            +-----------+     |1xx          |
//!     |              |      ^        |resp to TU   |
//!     | 200-699      |      +--------+             |
//!     | resp. to TU  |                             |
//!     |              |                             |
//!     |              V                             |
//!     |            +-----------+                   |
//!     |            |           |                   |
//!     |            | Completed |                   |
//!     |            |           |                   |
//!     |            +-----------+                   |
//!     |              ^   |                         |
//!     |              |   | Timer K                 |
//!     +--------------+   | -                       |
//!                        |                         |
//!                        V                         |
//!  NOTE:           +-----------+                   |
//!                  |           |                   |
//!  transitions     | Terminated|<------------------+
//!  labeled with    |           |
//!  the event       +-----------+
//!  over the action
//!  to take
//! ```
//!
//! Timer E retransmits over UDP (T1 doubling up to T2 while Trying, every T2 once
//! Proceeding); Timer F (64·T1) gives up; Timer K (T4 UDP, 0 reliable) absorbs
//! retransmitted finals.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::debug;

use super::{Timer, TimerConfig, Timers, Transmit, TxnError, TxnEvent, TxnKey, response_matches};
use crate::message::{Request, Response, SipMessage};

#[derive(Debug, Clone, Copy)]
enum State {
    Trying { e_interval: Duration },
    Proceeding,
    Completed,
    Terminated,
}

/// Non-INVITE client transaction (RFC 3261 §17.1.2), also used for CANCEL.
#[derive(Debug)]
pub struct NonInviteClientTxn {
    request: Request,
    key: Option<TxnKey>,
    reliable: bool,
    timers_cfg: TimerConfig,
    state: State,
    timers: Timers,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxnEvent>,
}

impl NonInviteClientTxn {
    /// Starts the transaction: queues the request, arms Timer E (UDP only) and F.
    pub fn new(request: Request, reliable: bool, timers: &TimerConfig, now: Instant) -> Self {
        let mut t = Timers::default();
        if !reliable {
            t.set(Timer::E, now + timers.t1);
        }
        t.set(Timer::F, now + timers.t1x64());
        let mut transmits = VecDeque::new();
        transmits.push_back(Transmit {
            message: SipMessage::Request(request.clone()),
            retransmission: false,
        });
        Self {
            key: TxnKey::client(&request),
            request,
            reliable,
            timers_cfg: timers.clone(),
            state: State::Trying {
                e_interval: timers.t1,
            },
            timers: t,
            transmits,
            events: VecDeque::new(),
        }
    }

    /// The request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The matching key.
    pub fn key(&self) -> Option<&TxnKey> {
        self.key.as_ref()
    }

    /// The state's RFC name.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Trying { .. } => "Trying",
            State::Proceeding => "Proceeding",
            State::Completed => "Completed",
            State::Terminated => "Terminated",
        }
    }

    /// Feeds a response whose key matched this transaction.
    pub fn handle_response(&mut self, resp: Response, now: Instant) -> Result<(), TxnError> {
        if !response_matches(&self.request, &resp) {
            return Err(TxnError::Mismatch);
        }
        let code = resp.status.as_u16();
        self.state = match (self.state, code) {
            (State::Trying { .. } | State::Proceeding, 100..=199) => {
                self.events.push_back(TxnEvent::Provisional(resp));
                State::Proceeding
            }
            (State::Trying { .. } | State::Proceeding, _) => {
                self.timers.clear_all();
                self.events.push_back(TxnEvent::Final(resp));
                if self.reliable {
                    State::Terminated
                } else {
                    self.timers.set(Timer::K, now + self.timers_cfg.t4);
                    State::Completed
                }
            }
            (s @ (State::Completed | State::Terminated), _) => {
                debug!(status = code, "response retransmission absorbed");
                s
            }
        };
        Ok(())
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            self.state = match (self.state, timer) {
                (State::Trying { e_interval }, Timer::E) => {
                    self.retransmit();
                    let next = e_interval.saturating_mul(2).min(self.timers_cfg.t2);
                    self.timers.set(Timer::E, now + next);
                    State::Trying { e_interval: next }
                }
                (State::Proceeding, Timer::E) => {
                    self.retransmit();
                    self.timers.set(Timer::E, now + self.timers_cfg.t2);
                    State::Proceeding
                }
                (State::Trying { .. } | State::Proceeding, Timer::F) => {
                    self.timers.clear_all();
                    self.events.push_back(TxnEvent::Timeout);
                    State::Terminated
                }
                (State::Completed, Timer::K) => {
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

    /// The transport failed to send (§17.1.4): inform the TU and terminate.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if !matches!(self.state, State::Terminated) {
            self.timers.clear_all();
            self.events.push_back(TxnEvent::TransportError);
            self.state = State::Terminated;
        }
    }

    fn retransmit(&mut self) {
        self.transmits.push_back(Transmit {
            message: SipMessage::Request(self.request.clone()),
            retransmission: true,
        });
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
