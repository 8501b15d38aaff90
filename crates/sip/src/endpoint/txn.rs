//! The four RFC 3261 §17 transaction machines as the endpoint drives them.
//!
//! Interim: these are compact machines local to the driver, written while the crate's
//! sans-IO `transaction` module was being built in parallel. They follow the same shape
//! (`handle_*` with `now`, `poll_transmit`, `poll_event`, `poll_timeout`,
//! `is_terminated`) so swapping them for the core ones touches only this file.
//!
//! ```text
//! INVITE client:  Calling -1xx-> Proceeding -2xx-> Accepted -M-> Terminated
//!                    \-300..699 (ACK)-> Completed -D-> Terminated;  Calling -B-> Terminated
//! non-INVITE client: Trying -1xx-> Proceeding -final-> Completed -K-> Terminated; -F-> Terminated
//! INVITE server:  Proceeding -2xx-> Accepted (2xx resent on G until ACK) -L-> Terminated
//!                    \-300..699-> Completed -ACK-> Confirmed -I-> Terminated; -H-> Terminated
//! non-INVITE server: Trying -1xx-> Proceeding -final-> Completed -J-> Terminated
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::{Method, Request, Response};

/// T1, T2, T4 (RFC 3261 §17.1.1.1, table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timers {
    pub(crate) t1: Duration,
    pub(crate) t2: Duration,
    pub(crate) t4: Duration,
}

impl Timers {
    fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// The RFC 3261 timers, each documented with its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Timer A: INVITE request retransmit, T1 doubling, §17.1.1.2 (unreliable only).
    A = 0,
    /// Timer B: INVITE transaction timeout, 64·T1, §17.1.1.2.
    B,
    /// Timer D: wait for response retransmits, 32 s unreliable / 0 reliable, §17.1.1.2.
    D,
    /// Timer E: non-INVITE retransmit, T1 doubling up to T2, §17.1.2.2.
    E,
    /// Timer F: non-INVITE transaction timeout, 64·T1, §17.1.2.2.
    F,
    /// Timer G: INVITE final response retransmit, T1 doubling up to T2, §17.2.1.
    G,
    /// Timer H: wait for ACK, 64·T1, §17.2.1.
    H,
    /// Timer I: wait for ACK retransmits, T4 unreliable / 0 reliable, §17.2.1.
    I,
    /// Timer J: wait for non-INVITE request retransmits, 64·T1 / 0, §17.2.2.
    J,
    /// Timer K: wait for response retransmits, T4 / 0, §17.1.2.2.
    K,
    /// Timer L: wait for accepted INVITE request retransmits, 64·T1, RFC 6026 §8.11.
    L,
    /// Timer M: wait for 2xx retransmits, 64·T1, RFC 6026 §8.4.
    M,
}

#[derive(Debug, Default)]
struct TimerTable([Option<Instant>; 12]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }
    fn clear(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn clear_all(&mut self) {
        self.0 = [None; 12];
    }
    fn earliest(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
    /// Takes one expired timer, if any.
    fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        const ALL: [Timer; 12] = [
            Timer::A,
            Timer::B,
            Timer::D,
            Timer::E,
            Timer::F,
            Timer::G,
            Timer::H,
            Timer::I,
            Timer::J,
            Timer::K,
            Timer::L,
            Timer::M,
        ];
        let t = ALL
            .into_iter()
            .filter(|t| self.0[*t as usize].is_some_and(|at| at <= now))
            .min_by_key(|t| self.0[*t as usize])?;
        self.0[t as usize] = None;
        Some(t)
    }
}

/// What a client transaction reports to the endpoint.
#[derive(Debug, Clone)]
pub(crate) enum ClientTxnEvent {
    /// A response for the TU (provisional, final, or a 2xx retransmission in Accepted).
    Response(Response),
    /// Timer B or F fired without a final response.
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Calling,
    Proceeding,
    Accepted,
    Completed,
    Terminated,
}

/// An INVITE or non-INVITE client transaction (RFC 3261 §17.1).
#[derive(Debug)]
pub(crate) struct ClientTxn {
    request: Request,
    request_bytes: Bytes,
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ClientState,
    table: TimerTable,
    interval: Duration,
    ack: Option<Bytes>,
    transmits: VecDeque<Bytes>,
    events: VecDeque<ClientTxnEvent>,
}

impl ClientTxn {
    /// Starts the transaction: queues the request and arms A/B or E/F.
    pub(crate) fn new(request: Request, reliable: bool, timers: Timers, now: Instant) -> Self {
        let invite = request.method == Method::Invite;
        let request_bytes = Bytes::from(request.to_bytes());
        let mut table = TimerTable::default();
        if invite {
            table.set(Timer::B, now + timers.t1x64());
            if !reliable {
                table.set(Timer::A, now + timers.t1);
            }
        } else {
            table.set(Timer::F, now + timers.t1x64());
            if !reliable {
                table.set(Timer::E, now + timers.t1);
            }
        }
        Self {
            request,
            transmits: VecDeque::from([request_bytes.clone()]),
            request_bytes,
            invite,
            reliable,
            timers,
            state: ClientState::Calling,
            table,
            interval: timers.t1,
            ack: None,
            events: VecDeque::new(),
        }
    }

    /// The request this transaction sends.
    pub(crate) fn request(&self) -> &Request {
        &self.request
    }

    /// Whether a provisional response has arrived (CANCEL may be sent, §9.1).
    pub(crate) fn is_proceeding(&self) -> bool {
        self.state == ClientState::Proceeding
    }

    /// Whether a final response has arrived.
    pub(crate) fn has_final(&self) -> bool {
        matches!(
            self.state,
            ClientState::Accepted | ClientState::Completed | ClientState::Terminated
        )
    }

    /// Feeds a response matched to this transaction.
    pub(crate) fn handle_response(&mut self, resp: Response, now: Instant) {
        let status = resp.status;
        match (self.state, self.invite) {
            (ClientState::Calling | ClientState::Proceeding, _) if status.is_provisional() => {
                self.state = ClientState::Proceeding;
                self.table.clear(Timer::A);
                if !self.invite && !self.reliable {
                    // §17.1.2.2: in Proceeding, E fires every T2.
                    self.interval = self.timers.t2;
                }
                self.events.push_back(ClientTxnEvent::Response(resp));
            }
            (ClientState::Calling | ClientState::Proceeding, true) if status.is_success() => {
                self.table.clear_all();
                self.table.set(Timer::M, now + self.timers.t1x64());
                self.state = ClientState::Accepted;
                self.events.push_back(ClientTxnEvent::Response(resp));
            }
            (ClientState::Calling | ClientState::Proceeding, true) => {
                let ack = Bytes::from(self.request.ack_for(&resp).to_bytes());
                self.transmits.push_back(ack.clone());
                self.ack = Some(ack);
                self.table.clear_all();
                let d = if self.reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32).max(self.timers.t1x64())
                };
                self.table.set(Timer::D, now + d);
                self.state = ClientState::Completed;
                self.events.push_back(ClientTxnEvent::Response(resp));
            }
            (ClientState::Calling | ClientState::Proceeding, false) => {
                self.table.clear_all();
                let k = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.table.set(Timer::K, now + k);
                self.state = ClientState::Completed;
                self.events.push_back(ClientTxnEvent::Response(resp));
            }
            (ClientState::Accepted, _) if status.is_success() => {
                // RFC 6026 §8.4: 2xx retransmissions go to the TU, which re-sends its ACK.
                self.events.push_back(ClientTxnEvent::Response(resp));
            }
            (ClientState::Completed, true) if status.is_final() && !status.is_success() => {
                if let Some(ack) = &self.ack {
                    self.transmits.push_back(ack.clone());
                }
            }
            _ => {
                tracing::debug!(status = status.as_u16(), state = ?self.state, "response absorbed");
            }
        }
    }

    /// Fires expired timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.table.take_expired(now) {
            match t {
                Timer::A => {
                    self.transmits.push_back(self.request_bytes.clone());
                    self.interval = self.interval.saturating_mul(2);
                    self.table.set(Timer::A, now + self.interval);
                }
                Timer::E => {
                    self.transmits.push_back(self.request_bytes.clone());
                    if self.state == ClientState::Calling {
                        self.interval = (self.interval.saturating_mul(2)).min(self.timers.t2);
                    }
                    self.table.set(Timer::E, now + self.interval);
                }
                Timer::B | Timer::F => {
                    self.table.clear_all();
                    self.state = ClientState::Terminated;
                    self.events.push_back(ClientTxnEvent::Timeout);
                }
                Timer::D | Timer::K | Timer::M => {
                    self.table.clear_all();
                    self.state = ClientState::Terminated;
                }
                _ => {}
            }
        }
    }

    /// Next bytes to send to the transaction's target.
    pub(crate) fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// Next event for the endpoint.
    pub(crate) fn poll_event(&mut self) -> Option<ClientTxnEvent> {
        self.events.pop_front()
    }

    /// When [`ClientTxn::handle_timeout`] must next be called.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.table.earliest()
    }

    /// Whether the owner may drop the transaction.
    pub(crate) fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// Ends the transaction at once (transport error, shutdown deadline).
    pub(crate) fn terminate(&mut self) {
        self.table.clear_all();
        self.state = ClientState::Terminated;
    }
}

/// What a server transaction reports to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerTxnEvent {
    /// Timer H fired: no ACK for a non-2xx final response.
    AckTimeout,
    /// Timer L fired and no ACK for the 2xx arrived (RFC 3261 §13.3.1.4: end the dialog).
    NoAckFor2xx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Trying,
    Proceeding,
    Accepted { acked: bool },
    Completed,
    Confirmed,
    Terminated,
}

/// An INVITE or non-INVITE server transaction (RFC 3261 §17.2, RFC 6026).
#[derive(Debug)]
pub(crate) struct ServerTxn {
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ServerState,
    table: TimerTable,
    interval: Duration,
    last: Option<(Response, Bytes)>,
    transmits: VecDeque<Bytes>,
    events: VecDeque<ServerTxnEvent>,
}

impl ServerTxn {
    /// A transaction for a new request (not ACK).
    pub(crate) fn new(request: &Request, reliable: bool, timers: Timers, _now: Instant) -> Self {
        let invite = request.method == Method::Invite;
        Self {
            invite,
            reliable,
            timers,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            table: TimerTable::default(),
            interval: timers.t1,
            last: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The last response sent, if any.
    pub(crate) fn last_response(&self) -> Option<&Response> {
        self.last.as_ref().map(|(r, _)| r)
    }

    /// Whether a final response has been sent.
    pub(crate) fn has_final(&self) -> bool {
        self.last.as_ref().is_some_and(|(r, _)| r.status.is_final())
    }

    /// A retransmission of the request, or the ACK for a final response.
    pub(crate) fn handle_request(&mut self, req: &Request, now: Instant) {
        if req.method == Method::Ack {
            match self.state {
                ServerState::Completed => {
                    self.table.clear_all();
                    let i = if self.reliable {
                        Duration::ZERO
                    } else {
                        self.timers.t4
                    };
                    self.table.set(Timer::I, now + i);
                    self.state = ServerState::Confirmed;
                }
                ServerState::Accepted { .. } => {
                    // ACK for the 2xx: stop resending it, keep absorbing until L.
                    self.table.clear(Timer::G);
                    self.state = ServerState::Accepted { acked: true };
                }
                _ => {}
            }
            return;
        }
        match self.state {
            ServerState::Proceeding | ServerState::Completed | ServerState::Accepted { .. } => {
                if let Some((_, bytes)) = &self.last {
                    self.transmits.push_back(bytes.clone());
                }
            }
            _ => {}
        }
    }

    /// Sends a response from the TU. Returns `false` when the state allows none.
    pub(crate) fn send_response(&mut self, resp: Response, now: Instant) -> bool {
        let status = resp.status;
        let allowed = matches!(self.state, ServerState::Trying | ServerState::Proceeding)
            // 2xx retransmissions from the TU in Accepted are allowed (RFC 6026 §8.7).
            || (matches!(self.state, ServerState::Accepted { .. }) && status.is_success());
        if !allowed {
            return false;
        }
        let bytes = Bytes::from(resp.to_bytes());
        self.transmits.push_back(bytes.clone());
        self.last = Some((resp, bytes));
        if status.is_provisional() {
            self.state = ServerState::Proceeding;
            return true;
        }
        if self.invite && status.is_success() {
            if !matches!(self.state, ServerState::Accepted { .. }) {
                self.table.set(Timer::L, now + self.timers.t1x64());
                if !self.reliable {
                    self.interval = self.timers.t1;
                    self.table.set(Timer::G, now + self.interval);
                }
                self.state = ServerState::Accepted { acked: false };
            }
        } else if self.invite {
            self.table.set(Timer::H, now + self.timers.t1x64());
            if !self.reliable {
                self.interval = self.timers.t1;
                self.table.set(Timer::G, now + self.interval);
            }
            self.state = ServerState::Completed;
        } else {
            let j = if self.reliable {
                Duration::ZERO
            } else {
                self.timers.t1x64()
            };
            self.table.set(Timer::J, now + j);
            self.state = ServerState::Completed;
        }
        true
    }

    /// Fires expired timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.table.take_expired(now) {
            match t {
                Timer::G => {
                    if let Some((_, bytes)) = &self.last {
                        self.transmits.push_back(bytes.clone());
                    }
                    self.interval = (self.interval.saturating_mul(2)).min(self.timers.t2);
                    self.table.set(Timer::G, now + self.interval);
                }
                Timer::H => {
                    self.table.clear_all();
                    self.state = ServerState::Terminated;
                    self.events.push_back(ServerTxnEvent::AckTimeout);
                }
                Timer::L => {
                    if self.state == (ServerState::Accepted { acked: false }) {
                        self.events.push_back(ServerTxnEvent::NoAckFor2xx);
                    }
                    self.table.clear_all();
                    self.state = ServerState::Terminated;
                }
                Timer::I | Timer::J => {
                    self.table.clear_all();
                    self.state = ServerState::Terminated;
                }
                _ => {}
            }
        }
    }

    /// Next response bytes to send back to the requester.
    pub(crate) fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// Next event for the endpoint.
    pub(crate) fn poll_event(&mut self) -> Option<ServerTxnEvent> {
        self.events.pop_front()
    }

    /// When [`ServerTxn::handle_timeout`] must next be called.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.table.earliest()
    }

    /// Whether the owner may drop the transaction.
    pub(crate) fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }
}
