//! Per-method and per-status message counters of the endpoint, for metrics.
//!
//! A fixed table of atomics, one slot per (flow, method, status): counting is one relaxed
//! `fetch_add`, no lock and no allocation, and the label set is bounded by construction
//! (14 known methods plus `other`; status codes 100..=699, or none for requests).
//! Retransmissions count as the messages they are on the wire.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::message::{Method, Request, Response, SipMessage};

/// Which way a counted message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SipFlow {
    /// Received from the network (parsed successfully).
    In,
    /// Handed to the transport for sending.
    Out,
}

impl SipFlow {
    /// `in` or `out`.
    pub fn as_str(self) -> &'static str {
        match self {
            SipFlow::In => "in",
            SipFlow::Out => "out",
        }
    }
}

/// One non-zero counter of [`crate::endpoint::Endpoint::message_counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipMessageCount {
    /// Direction.
    pub flow: SipFlow,
    /// The request method, or the CSeq method of a response; `other` for extension
    /// methods (and responses without a usable CSeq).
    pub method: &'static str,
    /// The status code of a response; `None` for requests.
    pub status: Option<u16>,
    /// Messages counted since the endpoint started.
    pub count: u64,
}

/// Method labels, indexed by [`method_index`]; the last one collects the rest.
const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
    "other",
];
/// Slot 0 is the request itself, slots 1..=600 the status codes 100..=699.
const STATUS_SLOTS: usize = 601;
const FLOWS: usize = 2;

fn method_index(m: &Method) -> usize {
    match m {
        Method::Invite => 0,
        Method::Ack => 1,
        Method::Bye => 2,
        Method::Cancel => 3,
        Method::Options => 4,
        Method::Register => 5,
        Method::Prack => 6,
        Method::Subscribe => 7,
        Method::Notify => 8,
        Method::Publish => 9,
        Method::Info => 10,
        Method::Refer => 11,
        Method::Message => 12,
        Method::Update => 13,
        Method::Extension(_) => 14,
    }
}

/// What a message is counted as: method slot and status slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageKey {
    method: usize,
    status: usize,
}

impl MessageKey {
    pub(crate) fn request(req: &Request) -> Self {
        Self {
            method: method_index(&req.method),
            status: 0,
        }
    }

    pub(crate) fn response(resp: &Response) -> Self {
        let method = resp
            .cseq()
            .map_or(METHODS.len() - 1, |c| method_index(&c.method));
        // StatusCode holds 100..=699 by construction; anything else lands in `other`'s
        // request slot rather than out of bounds
        let status = usize::from(resp.status.as_u16())
            .checked_sub(99)
            .filter(|s| *s < STATUS_SLOTS)
            .unwrap_or(0);
        Self { method, status }
    }

    pub(crate) fn of(msg: &SipMessage) -> Self {
        match msg {
            SipMessage::Request(r) => Self::request(r),
            SipMessage::Response(r) => Self::response(r),
        }
    }
}

/// The counter table.
#[derive(Debug)]
pub(crate) struct MessageCounters {
    slots: Box<[AtomicU64]>,
}

impl Default for MessageCounters {
    fn default() -> Self {
        Self {
            slots: (0..FLOWS * METHODS.len() * STATUS_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl MessageCounters {
    fn slot(flow: SipFlow, key: MessageKey) -> usize {
        let flow = match flow {
            SipFlow::In => 0,
            SipFlow::Out => 1,
        };
        (flow * METHODS.len() + key.method) * STATUS_SLOTS + key.status
    }

    /// Counts one message.
    pub(crate) fn count(&self, flow: SipFlow, key: MessageKey) {
        if let Some(c) = self.slots.get(Self::slot(flow, key)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every non-zero counter, ordered by flow, method and status.
    pub(crate) fn snapshot(&self) -> Vec<SipMessageCount> {
        let mut out = Vec::new();
        for (flow_i, flow) in [SipFlow::In, SipFlow::Out].into_iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                for s in 0..STATUS_SLOTS {
                    let i = (flow_i * METHODS.len() + m) * STATUS_SLOTS + s;
                    let count = self.slots.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
                    if count == 0 {
                        continue;
                    }
                    out.push(SipMessageCount {
                        flow,
                        method,
                        // s is at most 600: 99 + s fits u16
                        status: (s > 0).then(|| 99 + s as u16),
                        count,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{StatusCode, Uri};

    fn invite() -> Request {
        let mut r = Request::new(Method::Invite, Uri::parse("sip:bob@example.com").unwrap());
        r.headers.push(crate::message::HeaderName::CSEQ, "1 INVITE");
        r
    }

    #[test]
    fn requests_and_responses_are_counted_by_method_and_status() {
        let c = MessageCounters::default();
        let inv = invite();
        c.count(SipFlow::Out, MessageKey::request(&inv));
        c.count(SipFlow::Out, MessageKey::request(&inv));
        let ringing = inv.response(StatusCode::new(180).unwrap(), None);
        let ok = inv.response(StatusCode::OK, None);
        let global = inv.response(StatusCode::new(699).unwrap(), None);
        c.count(SipFlow::In, MessageKey::response(&ringing));
        c.count(SipFlow::In, MessageKey::response(&ok));
        c.count(SipFlow::In, MessageKey::response(&global));
        let snap = c.snapshot();
        let find = |flow, method, status| {
            snap.iter()
                .find(|s| s.flow == flow && s.method == method && s.status == status)
                .map(|s| s.count)
        };
        assert_eq!(find(SipFlow::Out, "INVITE", None), Some(2));
        assert_eq!(find(SipFlow::In, "INVITE", Some(180)), Some(1));
        assert_eq!(find(SipFlow::In, "INVITE", Some(200)), Some(1));
        assert_eq!(find(SipFlow::In, "INVITE", Some(699)), Some(1));
        assert_eq!(snap.len(), 4, "{snap:?}");
    }

    #[test]
    fn extension_methods_and_responses_without_cseq_are_other() {
        let c = MessageCounters::default();
        let odd = Request::new(
            Method::Extension("FOO".into()),
            Uri::parse("sip:x@example.com").unwrap(),
        );
        c.count(SipFlow::In, MessageKey::request(&odd));
        let bare = odd.response(StatusCode::new(405).unwrap(), None);
        let mut bare = bare;
        bare.headers.remove("CSeq");
        c.count(SipFlow::Out, MessageKey::response(&bare));
        let snap = c.snapshot();
        assert_eq!(
            snap,
            vec![
                SipMessageCount {
                    flow: SipFlow::In,
                    method: "other",
                    status: None,
                    count: 1
                },
                SipMessageCount {
                    flow: SipFlow::Out,
                    method: "other",
                    status: Some(405),
                    count: 1
                },
            ]
        );
    }
}
