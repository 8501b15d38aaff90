//! Adapters from the crate's four transaction cores ([`crate::transaction`]) to what the
//! endpoint driver needs: one client and one server type, bytes out, and the TU's share
//! of RFC 6026 done here (an INVITE server's 2xx is resent by the TU until its ACK).
//!
//! ```text
//! ServerTxn::Invite:  core InviteServerTxn  +  2xx resend (T1 doubling up to T2, UDP only)
//!                                              until the ACK, or NoAckFor2xx at 64·T1
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::debug;

use super::counters::MessageKey;
use crate::message::{Method, Request, Response};
use crate::transaction::{
    InviteClientTxn, InviteServerTxn, NonInviteClientTxn, NonInviteServerTxn, TimerConfig,
    Transmit, TxnEvent,
};

/// What a client transaction reports to the endpoint.
#[derive(Debug, Clone)]
pub(crate) enum ClientTxnEvent {
    /// A response for the TU (provisional, final, or a 2xx retransmission in Accepted).
    Response(Response),
    /// Timer B or F fired without a final response.
    Timeout,
    /// Timer C: the INVITE has been Proceeding too long; the TU should CANCEL it.
    TimerC,
    /// The transport failed for this transaction.
    TransportError,
}

/// An INVITE or non-INVITE client transaction (RFC 3261 §17.1).
#[derive(Debug)]
pub(crate) enum ClientTxn {
    Invite(InviteClientTxn),
    NonInvite(NonInviteClientTxn),
}

impl ClientTxn {
    /// Starts the transaction: the core queues the request and arms its timers.
    pub(crate) fn new(
        request: Request,
        reliable: bool,
        timers: &TimerConfig,
        now: Instant,
    ) -> Self {
        if request.method == Method::Invite {
            Self::Invite(InviteClientTxn::new(request, reliable, timers, now))
        } else {
            Self::NonInvite(NonInviteClientTxn::new(request, reliable, timers, now))
        }
    }

    /// The request this transaction sends.
    pub(crate) fn request(&self) -> &Request {
        match self {
            Self::Invite(t) => t.request(),
            Self::NonInvite(t) => t.request(),
        }
    }

    fn state(&self) -> &'static str {
        match self {
            Self::Invite(t) => t.state_name(),
            Self::NonInvite(t) => t.state_name(),
        }
    }

    /// Whether a provisional response has arrived (CANCEL may be sent, §9.1).
    pub(crate) fn is_proceeding(&self) -> bool {
        match self {
            Self::Invite(t) => t.can_cancel(),
            Self::NonInvite(_) => false,
        }
    }

    /// Whether a final response has arrived (or the transaction is over).
    pub(crate) fn has_final(&self) -> bool {
        matches!(self.state(), "Completed" | "Accepted" | "Terminated")
    }

    /// Feeds a response matched to this transaction by key.
    pub(crate) fn handle_response(&mut self, resp: Response, now: Instant) {
        let r = match self {
            Self::Invite(t) => t.handle_response(resp, now),
            Self::NonInvite(t) => t.handle_response(resp, now),
        };
        if let Err(e) = r {
            debug!(error = %e, "response refused by transaction");
        }
    }

    /// Fires expired timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self {
            Self::Invite(t) => t.handle_timeout(now),
            Self::NonInvite(t) => t.handle_timeout(now),
        }
    }

    /// The transport could not reach the target (§17.1.4).
    pub(crate) fn handle_transport_error(&mut self, now: Instant) {
        match self {
            Self::Invite(t) => t.handle_transport_error(now),
            Self::NonInvite(t) => t.handle_transport_error(now),
        }
    }

    /// Next bytes to send to the transaction's target, and what they are (for counters).
    pub(crate) fn poll_transmit(&mut self) -> Option<(Bytes, MessageKey)> {
        let t = match self {
            Self::Invite(t) => t.poll_transmit(),
            Self::NonInvite(t) => t.poll_transmit(),
        }?;
        Some(bytes_of(&t))
    }

    /// Next event for the endpoint.
    pub(crate) fn poll_event(&mut self) -> Option<ClientTxnEvent> {
        loop {
            let ev = match self {
                Self::Invite(t) => t.poll_event(),
                Self::NonInvite(t) => t.poll_event(),
            }?;
            return Some(match ev {
                TxnEvent::Provisional(r) | TxnEvent::Final(r) => ClientTxnEvent::Response(r),
                TxnEvent::Timeout => ClientTxnEvent::Timeout,
                TxnEvent::TimerC => ClientTxnEvent::TimerC,
                TxnEvent::TransportError => ClientTxnEvent::TransportError,
                other => {
                    debug!(event = ?other, "client transaction event ignored");
                    continue;
                }
            });
        }
    }

    /// When [`ClientTxn::handle_timeout`] must next be called.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Self::Invite(t) => t.poll_timeout(),
            Self::NonInvite(t) => t.poll_timeout(),
        }
    }

    /// Whether the owner may drop the transaction.
    pub(crate) fn is_terminated(&self) -> bool {
        match self {
            Self::Invite(t) => t.is_terminated(),
            Self::NonInvite(t) => t.is_terminated(),
        }
    }
}

/// What a server transaction reports to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerTxnEvent {
    /// Timer H fired: no ACK for a non-2xx final response.
    AckTimeout,
    /// No ACK for the 2xx within 64·T1 (RFC 3261 §13.3.1.4: end the dialog).
    NoAckFor2xx,
}

/// The TU's 2xx retransmission for an INVITE server transaction (RFC 3261 §13.3.1.4).
#[derive(Debug)]
struct Resend2xx {
    bytes: Bytes,
    key: MessageKey,
    /// Next resend, `None` on reliable transports.
    next: Option<Instant>,
    interval: Duration,
    give_up: Instant,
}

/// An INVITE or non-INVITE server transaction (RFC 3261 §17.2, RFC 6026).
#[derive(Debug)]
pub(crate) struct ServerTxn {
    core: ServerCore,
    timers: TimerConfig,
    reliable: bool,
    last: Option<Response>,
    resend: Option<Resend2xx>,
    acked: bool,
    transmits: VecDeque<(Bytes, MessageKey)>,
    events: VecDeque<ServerTxnEvent>,
}

#[derive(Debug)]
enum ServerCore {
    Invite(InviteServerTxn),
    NonInvite(NonInviteServerTxn),
}

impl ServerTxn {
    /// A transaction for a new request (not ACK). An INVITE's core queues 100 Trying
    /// at once (§17.2.1).
    pub(crate) fn new(
        request: &Request,
        reliable: bool,
        timers: &TimerConfig,
        now: Instant,
    ) -> Self {
        let core = if request.method == Method::Invite {
            ServerCore::Invite(InviteServerTxn::new(request.clone(), reliable, timers, now))
        } else {
            ServerCore::NonInvite(NonInviteServerTxn::new(
                request.clone(),
                reliable,
                timers,
                now,
            ))
        };
        Self {
            core,
            timers: timers.clone(),
            reliable,
            last: None,
            resend: None,
            acked: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The last response sent by the TU, if any.
    pub(crate) fn last_response(&self) -> Option<&Response> {
        self.last.as_ref()
    }

    /// Whether a final response has been sent.
    pub(crate) fn has_final(&self) -> bool {
        self.last.as_ref().is_some_and(|r| r.status.is_final())
    }

    /// A retransmission of the request, or an ACK (for a non-2xx, or for our 2xx).
    pub(crate) fn handle_request(&mut self, req: &Request, now: Instant) {
        if req.method == Method::Ack && self.resend.is_some() {
            // The ACK for our 2xx: stop resending it.
            self.resend = None;
            self.acked = true;
        }
        match &mut self.core {
            ServerCore::Invite(t) => t.handle_request(req.clone(), now),
            ServerCore::NonInvite(t) => t.handle_request(req.clone(), now),
        }
    }

    /// Stops resending the 2xx without an ACK (a BYE in the dialog proved delivery).
    pub(crate) fn stop_2xx_resend(&mut self) {
        if self.resend.take().is_some() {
            self.acked = true;
        }
    }

    /// Sends a response from the TU. Returns `false` when the state allows none.
    pub(crate) fn send_response(&mut self, resp: Response, now: Instant) -> bool {
        let r = match &mut self.core {
            ServerCore::Invite(t) => t.send_response(resp.clone(), now),
            ServerCore::NonInvite(t) => t.send_response(resp.clone(), now),
        };
        if let Err(e) = r {
            debug!(error = %e, "response refused by transaction");
            return false;
        }
        if matches!(self.core, ServerCore::Invite(_))
            && resp.status.is_success()
            && self.resend.is_none()
            && !self.acked
        {
            self.resend = Some(Resend2xx {
                bytes: Bytes::from(resp.to_bytes()),
                key: MessageKey::response(&resp),
                next: (!self.reliable).then(|| now + self.timers.t1),
                interval: self.timers.t1,
                give_up: now + self.timers.t1x64(),
            });
        }
        self.last = Some(resp);
        true
    }

    /// Fires expired timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match &mut self.core {
            ServerCore::Invite(t) => t.handle_timeout(now),
            ServerCore::NonInvite(t) => t.handle_timeout(now),
        }
        if let Some(r) = &mut self.resend {
            if r.give_up <= now {
                self.resend = None;
                self.events.push_back(ServerTxnEvent::NoAckFor2xx);
            } else if let Some(next) = r.next
                && next <= now
            {
                self.transmits.push_back((r.bytes.clone(), r.key));
                r.interval = r.interval.saturating_mul(2).min(self.timers.t2);
                r.next = Some(now + r.interval);
            }
        }
    }

    /// Next response bytes to send back to the requester, and what they are.
    pub(crate) fn poll_transmit(&mut self) -> Option<(Bytes, MessageKey)> {
        let core = match &mut self.core {
            ServerCore::Invite(t) => t.poll_transmit(),
            ServerCore::NonInvite(t) => t.poll_transmit(),
        };
        core.map(|t| bytes_of(&t))
            .or_else(|| self.transmits.pop_front())
    }

    /// Next event for the endpoint.
    pub(crate) fn poll_event(&mut self) -> Option<ServerTxnEvent> {
        loop {
            let ev = match &mut self.core {
                ServerCore::Invite(t) => t.poll_event(),
                ServerCore::NonInvite(t) => t.poll_event(),
            };
            match ev {
                Some(TxnEvent::AckTimeout) => return Some(ServerTxnEvent::AckTimeout),
                Some(other) => debug!(event = ?other, "server transaction event ignored"),
                None => return self.events.pop_front(),
            }
        }
    }

    /// When [`ServerTxn::handle_timeout`] must next be called.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let core = match &self.core {
            ServerCore::Invite(t) => t.poll_timeout(),
            ServerCore::NonInvite(t) => t.poll_timeout(),
        };
        let own = self
            .resend
            .as_ref()
            .map(|r| r.next.map_or(r.give_up, |n| n.min(r.give_up)));
        match (core, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the owner may drop the transaction.
    pub(crate) fn is_terminated(&self) -> bool {
        let core = match &self.core {
            ServerCore::Invite(t) => t.is_terminated(),
            ServerCore::NonInvite(t) => t.is_terminated(),
        };
        core && self.resend.is_none()
    }
}

fn bytes_of(t: &Transmit) -> (Bytes, MessageKey) {
    (
        Bytes::from(t.message.to_bytes()),
        MessageKey::of(&t.message),
    )
}
