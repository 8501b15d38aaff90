//! Non-INVITE server transaction, RFC 3261 §17.2.2.
//!
//! ```text
//!                           |Request received
//!                           |pass to TU
//!                           V
//!                     +-----------+
//!                     |           |
//!                     | Trying    |-------------+
//!                     |           |             |
//!                     +-----------+             |200-699 from TU
//!                           |                   |send response
//!                           |1xx from TU        |
//!                           |send response      |
//!                           |                   |
//!        Request            V      1xx from TU  |
//!        send response+-----------+send response|
//!            +--------|           |--------+    |
//!            |        | Proceeding|        |    |
//!            +------->|           |<-------+    |
//!     +<--------------|           |             |
//!     |Trnsprt Err    +-----------+             |
//!     |Inform TU            |                   |
//!     |                     |                   |
//!     |                     |200-699 from TU    |
//!     |                     |send response      |
//!     |  Request            V                   |
//!     |  send response+-----------+             |
//!     |      +--------|           |             |
//!     |      |        | Completed |<------------+
//!     |      +------->|           |
//!     +<--------------|           |
//!     |Trnsprt Err    +-----------+
//!     |Inform TU            |
//!     |                     |Timer J fires
//!     |                     |-
//!     |                     |
//!     |                     V
//!     |               +-----------+
//!     |               |           |
//!     +-------------->| Terminated|
//!                     |           |
//!                     +-----------+
//! ```
//!
//! Retransmitted requests are absorbed in Trying and answered with the last response
//! otherwise; Timer J (64·T1 UDP, 0 reliable) keeps the final response for them.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::debug;

use super::{Timer, TimerConfig, Timers, Transmit, TxnError, TxnEvent, TxnKey};
use crate::message::{Request, Response, SipMessage};

#[derive(Debug, Clone)]
enum State {
    Trying,
    Proceeding { last: Response },
    Completed { last: Response },
    Terminated,
}

/// Non-INVITE server transaction (RFC 3261 §17.2.2).
#[derive(Debug)]
pub struct NonInviteServerTxn {
    request: Request,
    key: Option<TxnKey>,
    reliable: bool,
    timers_cfg: TimerConfig,
    state: State,
    timers: Timers,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxnEvent>,
}

impl NonInviteServerTxn {
    /// Starts the transaction for a received request (the TU gets the request from
    /// the endpoint directly).
    pub fn new(request: Request, reliable: bool, timers: &TimerConfig, now: Instant) -> Self {
        let _ = now;
        Self {
            key: TxnKey::server(&request),
            request,
            reliable,
            timers_cfg: timers.clone(),
            state: State::Trying,
            timers: Timers::default(),
            transmits: VecDeque::new(),
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
        state_name_of(&self.state)
    }

    /// Feeds a retransmission of the request.
    pub fn handle_request(&mut self, req: Request, _now: Instant) {
        let _ = req;
        match &self.state {
            State::Trying | State::Terminated => debug!("request retransmission absorbed"),
            State::Proceeding { last } | State::Completed { last } => {
                let last = last.clone();
                self.transmits.push_back(Transmit {
                    message: SipMessage::Response(last),
                    retransmission: true,
                });
            }
        }
    }

    /// Sends a response from the TU.
    pub fn send_response(&mut self, resp: Response, now: Instant) -> Result<(), TxnError> {
        let code = resp.status.as_u16();
        let state = std::mem::replace(&mut self.state, State::Terminated);
        let (next, result) = match (state, code) {
            (State::Trying | State::Proceeding { .. }, 100..=199) => {
                self.send(&resp);
                (State::Proceeding { last: resp }, Ok(()))
            }
            (State::Trying | State::Proceeding { .. }, _) => {
                self.send(&resp);
                if self.reliable {
                    (State::Terminated, Ok(()))
                } else {
                    self.timers.set(Timer::J, now + self.timers_cfg.t1x64());
                    (State::Completed { last: resp }, Ok(()))
                }
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

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            if let (State::Completed { .. }, Timer::J) = (&self.state, timer) {
                self.timers.clear_all();
                self.state = State::Terminated;
            } else {
                debug!(timer = ?timer, "stale timer ignored");
            }
        }
    }

    /// The transport failed to send the response (§17.2.4): inform the TU, terminate.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if !matches!(self.state, State::Terminated) {
            self.timers.clear_all();
            self.events.push_back(TxnEvent::TransportError);
            self.state = State::Terminated;
        }
    }

    fn send(&mut self, resp: &Response) {
        self.transmits.push_back(Transmit {
            message: SipMessage::Response(resp.clone()),
            retransmission: false,
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

fn state_name_of(s: &State) -> &'static str {
    match s {
        State::Trying => "Trying",
        State::Proceeding { .. } => "Proceeding",
        State::Completed { .. } => "Completed",
        State::Terminated => "Terminated",
    }
}
