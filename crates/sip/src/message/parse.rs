//! The message parser: limits, framing, validation (RFC 3261 §7, §18.3, §25).

use std::borrow::Cow;

use bytes::Bytes;

use super::headers::{HeaderName, Headers};
use super::scan::{is_token, snippet};
use super::typed::{
    CSeq, ContentType, NameAddr, SessionExpires, Via, is_call_id, parse_content_length,
    parse_delta_seconds,
};
use super::uri::UriError;
use super::{Method, Request, Response, SipMessage, StatusCode, Uri};

/// Limits applied before any parsing. `Default` holds the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest accepted message, headers and body together (default 65 535 bytes, the
    /// largest UDP payload).
    pub max_message_bytes: usize,
    /// Most header lines (after unfolding) accepted (default 256).
    pub max_headers: usize,
    /// Longest physical line accepted, start line included (default 8 192 bytes).
    pub max_line_bytes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 65_535,
            max_headers: 256,
            max_line_bytes: 8_192,
        }
    }
}

/// Why a message was rejected. [`ParseError::status_code`] says which response to send
/// when one can be sent at all (see [`super::error_response`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The message exceeds [`ParseLimits::max_message_bytes`].
    #[error("message of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Bytes received (or announced).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More header lines than [`ParseLimits::max_headers`].
    #[error("more than {max} header lines")]
    TooManyHeaders {
        /// The limit.
        max: usize,
    },
    /// A line longer than [`ParseLimits::max_line_bytes`].
    #[error("a line exceeds the {max} byte limit")]
    LineTooLong {
        /// The limit.
        max: usize,
    },
    /// Nothing but white space.
    #[error("empty message")]
    Empty,
    /// The start line or a header is not UTF-8.
    #[error("header section is not valid utf-8")]
    InvalidUtf8,
    /// A stream frame ended before the blank line.
    #[error("header section not terminated by an empty line")]
    Incomplete,
    /// The start line is malformed.
    #[error("malformed start line: {0}")]
    StartLine(String),
    /// The version is not SIP/2.0 (answer 505).
    #[error("unsupported sip version: {0}")]
    Version(String),
    /// The Request-URI is malformed.
    #[error("invalid request-uri {value}: {reason}")]
    RequestUri {
        /// The offending URI, cut to 64 bytes.
        value: String,
        /// What is wrong with it.
        reason: UriError,
    },
    /// A header line has no colon or an invalid name.
    #[error("malformed header line: {0}")]
    HeaderLine(String),
    /// A known header's value is malformed.
    #[error("invalid {name} header: {value}")]
    BadHeader {
        /// The header's full name.
        name: &'static str,
        /// The value, cut to 64 bytes.
        value: String,
    },
    /// A mandatory header is missing (RFC 3261 §8.1.1).
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A single-valued header appears more than once.
    #[error("{0} header appears more than once")]
    DuplicateHeader(&'static str),
    /// `Content-Length` announces more bytes than arrived.
    #[error("content-length {declared} exceeds the {available} body bytes received")]
    BodyTooShort {
        /// The declared Content-Length.
        declared: usize,
        /// Bytes actually present.
        available: usize,
    },
    /// The CSeq method differs from the request method (RFC 4475 §3.1.2.17).
    #[error("cseq method {cseq} does not match request method {method}")]
    CSeqMismatch {
        /// The request-line method.
        method: String,
        /// The CSeq method.
        cseq: String,
    },
}

impl ParseError {
    /// The response a UAS sends for this error when it can answer at all: 513 for an
    /// oversized message, 505 for another SIP version, 400 otherwise.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ParseError::TooLarge { .. } => StatusCode::MESSAGE_TOO_LARGE,
            ParseError::Version(_) => StatusCode::VERSION_NOT_SUPPORTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// What [`stream_frame`] found at the start of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrame {
    /// More bytes are needed.
    Incomplete,
    /// `len` bytes of CR/LF keep-alive (RFC 5626 §3.5.1): consume them; a double
    /// CRLF is a ping that deserves a single CRLF pong.
    KeepAlive {
        /// Bytes to consume.
        len: usize,
    },
    /// One complete message of `len` bytes: pass `&buf[..len]` to
    /// [`SipMessage::parse`].
    Message {
        /// Bytes to consume.
        len: usize,
    },
}

/// Finds the next message boundary in a stream (TCP/TLS) buffer using the
/// `Content-Length` header (RFC 3261 §18.3; absent means 0). An error means the stream
/// cannot be resynchronised and the connection should be closed.
pub fn stream_frame(buf: &[u8], limits: &ParseLimits) -> Result<StreamFrame, ParseError> {
    let crlf = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    if crlf > 0 {
        return Ok(StreamFrame::KeepAlive { len: crlf });
    }
    let window = &buf[..buf.len().min(limits.max_message_bytes)];
    let Some((head_len, body_start)) = find_blank_line(window) else {
        if buf.len() >= limits.max_message_bytes {
            return Err(ParseError::TooLarge {
                len: buf.len(),
                max: limits.max_message_bytes,
            });
        }
        return Ok(StreamFrame::Incomplete);
    };
    let head = &buf[..head_len];
    let mut declared = 0;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        if HeaderName::from_wire(name.trim_end()).is("Content-Length") {
            let value = String::from_utf8_lossy(&line[colon + 1..]);
            declared = parse_content_length(&value).ok_or_else(|| ParseError::BadHeader {
                name: "Content-Length",
                value: snippet(&value),
            })?;
        }
    }
    let total = body_start.saturating_add(declared);
    if total > limits.max_message_bytes {
        return Err(ParseError::TooLarge {
            len: total,
            max: limits.max_message_bytes,
        });
    }
    if buf.len() < total {
        Ok(StreamFrame::Incomplete)
    } else {
        Ok(StreamFrame::Message { len: total })
    }
}

/// Returns (end of the last header line, start of the body) for the first empty line.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(off) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let next = nl + 1;
        if buf.get(next) == Some(&b'\n') {
            return Some((nl, next + 1));
        }
        if buf.get(next) == Some(&b'\r') && buf.get(next + 1) == Some(&b'\n') {
            return Some((nl, next + 2));
        }
        i = next;
    }
    None
}

/// One logical header line before validation.
struct RawHeaders<'a> {
    start_line: &'a str,
    headers: Headers,
    body: &'a [u8],
}

/// Splits a message into start line, unfolded headers and body, enforcing limits.
fn split<'a>(buf: &'a [u8], limits: &ParseLimits) -> Result<RawHeaders<'a>, ParseError> {
    if buf.len() > limits.max_message_bytes {
        return Err(ParseError::TooLarge {
            len: buf.len(),
            max: limits.max_message_bytes,
        });
    }
    // RFC 3261 §7.5: ignore CRLFs before the start line.
    let lead = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let buf = &buf[lead..];
    if buf.is_empty() {
        return Err(ParseError::Empty);
    }
    let (head, body) = match find_blank_line(buf) {
        Some((head_end, body_start)) => (&buf[..head_end], &buf[body_start..]),
        // A datagram whose headers run to its end: accept it with an empty body.
        None => (buf, &buf[buf.len()..]),
    };
    let head = std::str::from_utf8(head).map_err(|_| ParseError::InvalidUtf8)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().ok_or(ParseError::Empty)?;
    if start_line.len() > limits.max_line_bytes {
        return Err(ParseError::LineTooLong {
            max: limits.max_line_bytes,
        });
    }
    let mut headers = Headers::new();
    // The value stays borrowed from the input unless a fold forces a copy.
    let mut current: Option<(&str, Cow<'_, str>)> = None;
    for line in lines {
        if line.len() > limits.max_line_bytes {
            return Err(ParseError::LineTooLong {
                max: limits.max_line_bytes,
            });
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // RFC 3261 §7.3.1: a fold continues the previous header value.
            match current.as_mut() {
                Some((_, v)) => {
                    if v.len() + line.len() > limits.max_line_bytes * 4 {
                        return Err(ParseError::LineTooLong {
                            max: limits.max_line_bytes,
                        });
                    }
                    v.to_mut().push_str(line);
                }
                None => return Err(ParseError::HeaderLine(snippet(line))),
            }
            continue;
        }
        if let Some((n, v)) = current.take() {
            headers.push(HeaderName::from_wire(n), v.trim_matches([' ', '\t']));
        }
        if headers.len() >= limits.max_headers {
            return Err(ParseError::TooManyHeaders {
                max: limits.max_headers,
            });
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::HeaderLine(snippet(line)))?;
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(ParseError::HeaderLine(snippet(line)));
        }
        current = Some((name, Cow::Borrowed(value)));
    }
    if let Some((n, v)) = current.take() {
        headers.push(HeaderName::from_wire(n), v.trim_matches([' ', '\t']));
    }
    Ok(RawHeaders {
        start_line,
        headers,
        body,
    })
}

enum StartLine {
    Request(Method, Uri),
    Response(StatusCode, String),
}

fn check_version(v: &str) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    let is_sip_version = v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        && v.get(4..)
            .and_then(|r| r.split_once('.'))
            .is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            });
    if is_sip_version {
        Err(ParseError::Version(snippet(v)))
    } else {
        Err(ParseError::StartLine(snippet(v)))
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    let bad = || ParseError::StartLine(snippet(line));
    if line
        .as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().ok_or_else(bad)?;
        check_version(version)?;
        let code = parts.next().ok_or_else(bad)?;
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(StatusCode::new)
            .ok_or_else(bad)?;
        let reason = parts.next().unwrap_or("");
        if reason.bytes().any(|b| b < b' ' && b != b'\t') {
            return Err(bad());
        }
        return Ok(StartLine::Response(status, reason.to_owned()));
    }
    // Exactly three elements separated by single SPs (RFC 3261 §7.1; RFC 4475
    // §3.1.2.8-10 reject embedded, doubled and trailing white space).
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, uri, version] = parts.as_slice() else {
        return Err(bad());
    };
    let method = Method::parse(method)?;
    check_version(version)?;
    let uri = Uri::parse(uri).map_err(|reason| ParseError::RequestUri {
        value: snippet(uri),
        reason,
    })?;
    if let Uri::Sip(u) = &uri {
        // §19.1.1: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
        if !u.headers.is_empty() {
            return Err(ParseError::RequestUri {
                value: snippet(&uri.to_string()),
                reason: UriError::Headers,
            });
        }
    }
    Ok(StartLine::Request(method, uri))
}

pub(crate) fn parse_message(buf: &[u8], limits: &ParseLimits) -> Result<SipMessage, ParseError> {
    let raw = split(buf, limits)?;
    let start = parse_start_line(raw.start_line)?;
    let headers = raw.headers;
    validate_headers(&headers)?;
    let body = match headers.get("Content-Length") {
        Some(v) => {
            let declared = parse_content_length(v).ok_or_else(|| ParseError::BadHeader {
                name: "Content-Length",
                value: snippet(v),
            })?;
            if declared > raw.body.len() {
                return Err(ParseError::BodyTooShort {
                    declared,
                    available: raw.body.len(),
                });
            }
            &raw.body[..declared]
        }
        None => raw.body,
    };
    let body = Bytes::copy_from_slice(body);
    match start {
        StartLine::Request(method, uri) => {
            let cseq = headers.cseq().ok_or(ParseError::MissingHeader("CSeq"))?;
            if cseq.method != method {
                return Err(ParseError::CSeqMismatch {
                    method: snippet(method.as_str()),
                    cseq: snippet(cseq.method.as_str()),
                });
            }
            Ok(SipMessage::Request(Request {
                method,
                uri,
                headers,
                body,
            }))
        }
        StartLine::Response(status, reason) => Ok(SipMessage::Response(Response {
            status,
            reason,
            headers,
            body,
        })),
    }
}

fn bad(name: &'static str, value: &str) -> ParseError {
    ParseError::BadHeader {
        name,
        value: snippet(value),
    }
}

/// Parses every header the stack acts on once; mandatory ones must be present.
fn validate_headers(headers: &Headers) -> Result<(), ParseError> {
    /// Headers the stack parses: (name, single-valued, mandatory).
    const KNOWN: &[(&str, bool, bool)] = &[
        ("Via", false, true),
        ("From", true, true),
        ("To", true, true),
        ("Call-ID", true, true),
        ("CSeq", true, true),
        ("Max-Forwards", true, false),
        ("Contact", false, false),
        ("Route", false, false),
        ("Record-Route", false, false),
        ("Content-Length", true, false),
        ("Content-Type", true, false),
        ("Session-Expires", true, false),
        ("Min-SE", true, false),
        ("Expires", true, false),
    ];
    let mut seen = [0u8; KNOWN.len()];
    for h in headers.iter() {
        let v = h.value.as_str();
        let canon = h.name.canonical();
        let Some(idx) = KNOWN
            .iter()
            .position(|(n, _, _)| n.eq_ignore_ascii_case(canon))
        else {
            continue;
        };
        let (name, single, _) = KNOWN[idx];
        seen[idx] = seen[idx].saturating_add(1);
        if single && seen[idx] > 1 {
            return Err(ParseError::DuplicateHeader(name));
        }
        let ok = match idx {
            0 => Via::parse_list(v).is_some(),
            1 | 2 => NameAddr::parse(v).is_some(),
            3 => is_call_id(v),
            4 => CSeq::parse(v).is_some(),
            5 => headers.max_forwards().is_some(),
            6 => v == "*" || NameAddr::parse_list(v).is_some(),
            7 | 8 => NameAddr::parse_list(v).is_some(),
            9 => parse_content_length(v).is_some(),
            10 => ContentType::parse(v).is_some(),
            11 => SessionExpires::parse(v).is_some(),
            12 => headers.min_se().is_some(),
            _ => parse_delta_seconds(v).is_some(),
        };
        if !ok {
            return Err(bad(name, v));
        }
    }
    for (idx, (name, _, mandatory)) in KNOWN.iter().enumerate() {
        if *mandatory && seen[idx] == 0 {
            return Err(ParseError::MissingHeader(name));
        }
    }
    Ok(())
}

/// Lenient split used to answer a message that failed to parse: every header line that
/// has a colon, unfolded; no limits beyond the buffer itself.
pub(crate) fn lenient_headers(buf: &[u8]) -> Option<(String, Headers)> {
    let lead = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let buf = buf.get(lead..)?;
    let head = match find_blank_line(buf) {
        Some((end, _)) => &buf[..end],
        None => buf,
    };
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next()?.to_owned();
    let mut headers = Headers::new();
    let mut current: Option<(String, String)> = None;
    for line in lines.take(1024) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = current.as_mut() {
                v.push_str(line);
            }
            continue;
        }
        if let Some((n, v)) = current.take() {
            headers.push(HeaderName::new(n), v.trim().to_owned());
        }
        if let Some((n, v)) = line.split_once(':') {
            let n = n.trim_end();
            if is_token(n) {
                current = Some((n.to_owned(), v.to_owned()));
            }
        }
    }
    if let Some((n, v)) = current.take() {
        headers.push(HeaderName::new(n), v.trim().to_owned());
    }
    Some((start, headers))
}
