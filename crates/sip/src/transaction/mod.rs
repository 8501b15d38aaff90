//! The four RFC 3261 §17 transaction machines, sans-IO, with RFC 6026's `Accepted`
//! state.
//!
//! | machine | RFC | timers |
//! |---|---|---|
//! | [`InviteClientTxn`] | §17.1.1, RFC 6026 §8.4 | A, B, D, M (and a UA-side Timer C) |
//! | [`NonInviteClientTxn`] | §17.1.2 | E, F, K |
//! | [`InviteServerTxn`] | §17.2.1, RFC 6026 §8.7 | G, H, I, L |
//! | [`NonInviteServerTxn`] | §17.2.2 | J |
//!
//! Every machine has the same shape: build it with the request, `reliable` (whether
//! the transport is TCP/TLS, which turns retransmissions off), a [`TimerConfig`] and
//! `now`; feed it with `handle_request` / `handle_response` / `send_response` /
//! `handle_timeout`; drain `poll_transmit` and `poll_event` until both are `None`;
//! arm one timer at `poll_timeout()`; drop it once `is_terminated()`.
//!
//! Transactions know nothing about addresses: a [`Transmit`] holds only the message.
//! The endpoint sends client requests to the target it resolved and server responses
//! where RFC 3261 §18.2.2 says (from the top Via).
//!
//! Matching incoming messages to transactions uses [`TxnKey`] (§17.1.3, §17.2.3).

mod invite_client;
mod invite_server;
mod non_invite_client;
mod non_invite_server;

use std::fmt;
use std::time::{Duration, Instant};

use crate::message::{Branch, Method, Request, Response, SipMessage};

pub use invite_client::InviteClientTxn;
pub use invite_server::InviteServerTxn;
pub use non_invite_client::NonInviteClientTxn;
pub use non_invite_server::NonInviteServerTxn;

/// Timer base values (RFC 3261 §17.1.1.1, Table 4). `Default` is the production value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerConfig {
    /// T1, the RTT estimate: 500 ms.
    pub t1: Duration,
    /// T2, the longest retransmit interval for non-INVITE requests and INVITE
    /// responses: 4 s.
    pub t2: Duration,
    /// T4, how long the network may hold a message: 5 s.
    pub t4: Duration,
    /// Timer C: how long an INVITE client waits for a final response once provisional
    /// responses stop arriving (> 3 min per §16.6; used here by the UA to CANCEL).
    pub timer_c: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_c: Duration::from_secs(181),
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J, L, M.
    pub fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// The RFC 3261 / RFC 6026 transaction timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Timer A: INVITE request retransmit, T1 doubling without cap, UDP only, §17.1.1.2.
    A,
    /// Timer B: INVITE transaction timeout, 64·T1, §17.1.1.2.
    B,
    /// Timer C: no final response to an INVITE, > 3 min, reset by provisionals, §16.6
    /// (the UA reports [`TxnEvent::TimerC`] so its TU can CANCEL).
    C,
    /// Timer D: wait for response retransmits after a non-2xx, 32 s for UDP, 0 for
    /// reliable, §17.1.1.2.
    D,
    /// Timer E: non-INVITE request retransmit, T1 doubling up to T2 (T2 once
    /// Proceeding), UDP only, §17.1.2.2.
    E,
    /// Timer F: non-INVITE transaction timeout, 64·T1, §17.1.2.2.
    F,
    /// Timer G: INVITE non-2xx final response retransmit, T1 doubling up to T2, UDP
    /// only, §17.2.1.
    G,
    /// Timer H: wait for the ACK of a non-2xx final, 64·T1, §17.2.1.
    H,
    /// Timer I: absorb ACK retransmits, T4 for UDP, 0 for reliable, §17.2.1.
    I,
    /// Timer J: absorb non-INVITE request retransmits, 64·T1 for UDP, 0 for reliable,
    /// §17.2.2.
    J,
    /// Timer K: absorb response retransmits, T4 for UDP, 0 for reliable, §17.1.2.2.
    K,
    /// Timer L: INVITE server in Accepted absorbs INVITE retransmits, 64·T1, RFC 6026
    /// §8.7.
    L,
    /// Timer M: INVITE client in Accepted passes 2xx retransmits up, 64·T1, RFC 6026
    /// §8.4.
    M,
}

impl Timer {
    const ALL: [Timer; 13] = [
        Timer::A,
        Timer::B,
        Timer::C,
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

    fn index(self) -> usize {
        self as usize
    }
}

/// The per-transaction timer table: one optional deadline per [`Timer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Timers([Option<Instant>; 13]);

impl Timers {
    pub(crate) fn set(&mut self, t: Timer, at: Instant) {
        if let Some(slot) = self.0.get_mut(t.index()) {
            *slot = Some(at);
        }
    }

    pub(crate) fn clear(&mut self, t: Timer) {
        if let Some(slot) = self.0.get_mut(t.index()) {
            *slot = None;
        }
    }

    pub(crate) fn clear_all(&mut self) {
        self.0 = [None; 13];
    }

    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    /// Removes and returns the earliest timer due at `now` (ties in A..M order).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let mut best: Option<(Instant, Timer)> = None;
        for t in Timer::ALL {
            if let Some(Some(at)) = self.0.get(t.index())
                && *at <= now
                && best.is_none_or(|(b, _)| *at < b)
            {
                best = Some((*at, t));
            }
        }
        let (_, t) = best?;
        self.clear(t);
        Some(t)
    }
}

/// A message a transaction wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The message.
    pub message: SipMessage,
    /// Whether this is a retransmission (for counters and logs).
    pub retransmission: bool,
}

/// What a transaction tells its transaction user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnEvent {
    /// A provisional response arrived (client transactions).
    Provisional(Response),
    /// A final response arrived (client transactions). An INVITE client in `Accepted`
    /// passes every 2xx retransmission up too, so the dialog can resend its ACK.
    Final(Response),
    /// No final response in time (Timer B or F): the TU acts as on a 408 (§8.1.3.1).
    Timeout,
    /// Timer C fired on an INVITE still Proceeding: the TU should CANCEL it.
    TimerC,
    /// An INVITE server never got the ACK for its non-2xx final (Timer H).
    AckTimeout,
    /// An ACK matched an INVITE server transaction in `Accepted` (RFC 6026 §8.7):
    /// it acknowledges the 2xx and belongs to the dialog.
    Ack(Request),
    /// The transport reported a failure sending for this transaction (§17.1.4,
    /// §17.2.4); the transaction is terminated.
    TransportError,
}

/// Misuse of a transaction by its TU (never caused by network input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxnError {
    /// The transaction already sent its final response (or terminated).
    #[error("transaction in state {state} cannot send a {status} response")]
    InvalidState {
        /// The state name.
        state: &'static str,
        /// The status the TU tried to send.
        status: u16,
    },
    /// The response does not belong to this transaction (Via/CSeq differ).
    #[error("response does not match the transaction's request")]
    Mismatch,
}

/// The key that matches messages to transactions (RFC 3261 §17.1.3, §17.2.3).
///
/// Server keys hold the top Via branch, its sent-by and the method, with ACK mapped to
/// INVITE so that the ACK for a non-2xx reaches the INVITE server transaction. Client
/// keys hold the branch and the CSeq method. A request without an RFC 3261 branch
/// (RFC 2543 peer) gets a key built from Call-ID, From tag, CSeq number and top Via.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxnKey {
    branch: String,
    sent_by: String,
    method: Method,
    role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Client,
    Server,
}

impl TxnKey {
    /// The key of the server transaction a received request belongs to (§17.2.3).
    pub fn server(req: &Request) -> Option<TxnKey> {
        let method = match req.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        Self::server_with_method(req, method)
    }

    /// The key of the INVITE server transaction a received CANCEL targets (§9.2).
    pub fn cancel_target(cancel: &Request) -> Option<TxnKey> {
        Self::server_with_method(cancel, Method::Invite)
    }

    fn server_with_method(req: &Request, method: Method) -> Option<TxnKey> {
        let via = req.top_via()?;
        let sent_by = format!(
            "{}:{}",
            via.host.to_string().to_ascii_lowercase(),
            via.port.unwrap_or(0)
        );
        let branch = match via.branch() {
            Some(b) if b.is_rfc3261() => b.as_str().to_owned(),
            _ => {
                // RFC 2543 matching (§17.2.3): Request-URI, To tag, From tag, Call-ID,
                // CSeq number and top Via. The To tag is left out so that the ACK for
                // a non-2xx (which carries our tag) matches the INVITE.
                let cseq = req.cseq()?;
                format!(
                    "2543|{}|{}|{}|{}|{}",
                    req.uri,
                    req.from_tag().map(|t| t.to_string()).unwrap_or_default(),
                    req.call_id()?,
                    cseq.seq,
                    via
                )
            }
        };
        Some(TxnKey {
            branch,
            sent_by,
            method,
            role: Role::Server,
        })
    }

    /// The key of a client transaction, from the request it sends.
    pub fn client(req: &Request) -> Option<TxnKey> {
        Some(TxnKey {
            branch: req.branch()?.as_str().to_owned(),
            sent_by: String::new(),
            method: req.method.clone(),
            role: Role::Client,
        })
    }

    /// The key of the client transaction a received response belongs to (§17.1.3).
    pub fn for_response(resp: &Response) -> Option<TxnKey> {
        Some(TxnKey {
            branch: resp.branch()?.as_str().to_owned(),
            sent_by: String::new(),
            method: resp.cseq()?.method,
            role: Role::Client,
        })
    }

    /// The branch part of the key.
    pub fn branch(&self) -> Branch {
        Branch::new(self.branch.clone())
    }

    /// The method part of the key (ACK appears as INVITE).
    pub fn method(&self) -> &Method {
        &self.method
    }
}

impl fmt::Display for TxnKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role {
            Role::Client => "client",
            Role::Server => "server",
        };
        write!(f, "{role}/{}/{}", self.method, self.branch)
    }
}

/// The 481 a UAS sends to a CANCEL matching no INVITE server transaction (§9.2).
pub fn cancel_unknown_response(cancel: &Request) -> Response {
    cancel.response(crate::message::StatusCode::CALL_DOES_NOT_EXIST, None)
}

/// Whether `resp` answers `req`: same top Via branch and CSeq (number and method).
pub(crate) fn response_matches(req: &Request, resp: &Response) -> bool {
    let same_branch = match (req.branch(), resp.branch()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    let same_cseq = match (req.cseq(), resp.cseq()) {
        (Some(a), Some(b)) => a.seq == b.seq && a.method == b.method,
        _ => false,
    };
    same_branch && same_cseq
}

#[cfg(test)]
mod tests;
