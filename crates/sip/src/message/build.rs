//! Builders: responses from requests (RFC 3261 §8.2.6), ACK for non-2xx
//! (§17.1.1.3), CANCEL (§9.1), and the 400/505/513 answer to an unparsable request.

use super::headers::HeaderName;
use super::ids::Tag;
use super::parse::{ParseError, lenient_headers};
use super::scan::split_list;
use super::{Method, Request, Response, StatusCode};

impl Request {
    /// A response to this request (RFC 3261 §8.2.6.2): copies every Via, From, To,
    /// Call-ID and CSeq; adds `to_tag` to To unless To already has a tag. The reason
    /// phrase is the default one for `status`. A response that can establish a dialog
    /// (101-299 to INVITE or SUBSCRIBE) also gets the Record-Route values, unchanged
    /// (§12.1.1); a 100 gets the Timestamp (§8.2.6.1).
    pub fn response(&self, status: StatusCode, to_tag: Option<&Tag>) -> Response {
        let mut resp = Response::new(status);
        let code = status.as_u16();
        let copy_rr =
            (101..300).contains(&code) && matches!(self.method, Method::Invite | Method::Subscribe);
        for h in self.headers.iter() {
            if h.name.is("Via")
                || h.name.is("From")
                || h.name.is("Call-ID")
                || h.name.is("CSeq")
                || (copy_rr && h.name.is("Record-Route"))
                || (code == 100 && h.name.is("Timestamp"))
            {
                resp.headers.push(h.name.clone(), h.value.clone());
            } else if h.name.is("To") {
                resp.headers
                    .push(h.name.clone(), with_tag(&h.value, to_tag));
            }
        }
        resp
    }

    /// The ACK for a non-2xx final response to this INVITE, built inside the client
    /// transaction (RFC 3261 §17.1.1.3): same Request-URI, Call-ID, From and CSeq
    /// number; To from the response; only the top Via; Route headers copied.
    pub fn ack_for(&self, response: &Response) -> Request {
        let mut ack = Request::new(Method::Ack, self.uri.clone());
        if let Some(top) = self
            .headers
            .get("Via")
            .and_then(|v| split_list(v).into_iter().next())
        {
            ack.headers.push(HeaderName::VIA, top);
        }
        ack.headers.push(HeaderName::MAX_FORWARDS, "70");
        for h in self.headers.iter() {
            if h.name.is("Route") {
                ack.headers.push(h.name.clone(), h.value.clone());
            }
        }
        if let Some(f) = self.headers.get("From") {
            ack.headers.push(HeaderName::FROM, f);
        }
        if let Some(t) = response
            .headers
            .get("To")
            .or_else(|| self.headers.get("To"))
        {
            ack.headers.push(HeaderName::TO, t);
        }
        if let Some(c) = self.headers.get("Call-ID") {
            ack.headers.push(HeaderName::CALL_ID, c);
        }
        let seq = self.cseq().map_or(1, |c| c.seq);
        ack.headers.push(HeaderName::CSEQ, format!("{seq} ACK"));
        ack
    }

    /// A CANCEL for this request (RFC 3261 §9.1): same Request-URI, Call-ID, From, To
    /// and CSeq number, only the top Via (same branch), Route copied, method CANCEL.
    pub fn cancel(&self) -> Request {
        let mut c = Request::new(Method::Cancel, self.uri.clone());
        if let Some(top) = self
            .headers
            .get("Via")
            .and_then(|v| split_list(v).into_iter().next())
        {
            c.headers.push(HeaderName::VIA, top);
        }
        c.headers.push(HeaderName::MAX_FORWARDS, "70");
        for h in self.headers.iter() {
            if h.name.is("Route") {
                c.headers.push(h.name.clone(), h.value.clone());
            }
        }
        for name in [HeaderName::FROM, HeaderName::TO, HeaderName::CALL_ID] {
            if let Some(v) = self.headers.get(name.as_str()) {
                c.headers.push(name.clone(), v);
            }
        }
        let seq = self.cseq().map_or(1, |c| c.seq);
        c.headers.push(HeaderName::CSEQ, format!("{seq} CANCEL"));
        c
    }
}

fn with_tag(to: &str, tag: Option<&Tag>) -> String {
    match tag {
        Some(t) if !has_tag(to) => format!("{to};tag={t}"),
        _ => to.to_owned(),
    }
}

fn has_tag(value: &str) -> bool {
    super::NameAddr::parse(value).is_some_and(|n| n.tag().is_some())
        || value.to_ascii_lowercase().contains(";tag=")
}

/// Builds the response to a request that failed to parse, from its raw bytes: 400 (or
/// 505 / 513, see [`ParseError::status_code`]) with the error in a `Warning` header.
///
/// Returns `None` when no response can be sent: the message is a response, or it lacks
/// one of `Via`, `From`, `To`, `Call-ID`, `CSeq` (RFC 3261 §8.2.6.2 needs all five).
/// The caller then drops the message and counts it.
pub fn error_response(raw: &[u8], err: &ParseError) -> Option<Response> {
    let (start, headers) = lenient_headers(raw)?;
    let first = start.split(' ').next()?;
    if first.is_empty()
        || first
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        return None;
    }
    if !first.bytes().all(super::scan::is_token_char) {
        return None;
    }
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if headers.get(name).is_none_or(|v| v.trim().is_empty()) {
            return None;
        }
    }
    let status = err.status_code();
    let mut resp = Response::new(status);
    for h in headers.iter() {
        if h.name.is("Via") || h.name.is("From") || h.name.is("Call-ID") || h.name.is("CSeq") {
            resp.headers.push(h.name.clone(), h.value.clone());
        } else if h.name.is("To") && !resp.headers.contains("To") {
            let tag = Tag::new(format!("{:016x}", fnv1a(raw)));
            resp.headers
                .push(h.name.clone(), with_tag(&h.value, Some(&tag)));
        }
    }
    let text: String = err
        .to_string()
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .take(120)
        .collect();
    resp.headers
        .push(HeaderName::WARNING, format!("399 whatsip \"{text}\""));
    Some(resp)
}

/// FNV-1a: a deterministic To tag for the error answer, so that a retransmitted bad
/// request gets the same response without an RNG.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data.iter().take(4096) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
