//! Byte-level message framing, RFC 3261 §18.3, applied before any parsing.
//!
//! On streams (TCP, TLS) a message ends where its `Content-Length` says; the header is
//! required there, and its compact form `l` counts. On datagrams one datagram is one message;
//! a `Content-Length` shorter than the body truncates it, a longer one is an error.
//!
//! Both paths cap the message size and the header count *before* the parser sees the bytes,
//! so a hostile peer cannot make us buffer or parse without bound. Leading CRLFs between
//! messages on a stream are keep-alives (RFC 5626 §4.4.1): a double CRLF is a ping that
//! deserves a single CRLF pong.

use bytes::{Buf, Bytes, BytesMut};

/// Limits applied to every incoming message before it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Largest message accepted (start line, headers and body), in bytes.
    pub max_message_bytes: usize,
    /// Most header lines accepted (folded continuation lines not counted).
    pub max_headers: usize,
}

impl Default for MessageLimits {
    /// 64 KiB (the largest UDP datagram) and 128 header lines: far above what real
    /// PBXs send, small enough to bound the work per message.
    fn default() -> Self {
        Self {
            max_message_bytes: 65_535,
            max_headers: 128,
        }
    }
}

/// Why incoming bytes were refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The message (or its header block, while still incomplete) is over the size limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// More header lines than allowed.
    #[error("more than {limit} header lines")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// A stream message without `Content-Length` (RFC 3261 §18.3 makes it mandatory there).
    #[error("missing content-length on a stream transport")]
    MissingContentLength,
    /// A `Content-Length` that is not a number, or two that disagree.
    #[error("invalid content-length: {0}")]
    BadContentLength(String),
    /// A datagram whose body is shorter than its `Content-Length`.
    #[error("datagram body shorter than content-length {declared}")]
    TruncatedBody {
        /// The declared length.
        declared: usize,
    },
    /// A datagram with no blank line ending the header block.
    #[error("no end of headers")]
    NoHeaderEnd,
}

/// One unit taken off a stream by [`StreamFramer::poll_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message (start line, headers, body), not yet parsed.
    Message(Bytes),
    /// A double-CRLF keep-alive ping; answer with a single CRLF (RFC 5626 §4.4.1).
    Ping,
}

/// Splits a byte stream into SIP messages by `Content-Length` (RFC 3261 §18.3).
///
/// Feed bytes with [`StreamFramer::buffer_mut`] (or [`StreamFramer::handle_bytes`]), then
/// drain [`StreamFramer::poll_frame`] until it returns `Ok(None)`. After an error the stream
/// has lost its framing and must be closed.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    limits: MessageLimits,
    /// Bytes of the buffer already scanned for the end of headers, to keep scanning linear.
    scanned: usize,
}

impl StreamFramer {
    /// A framer with an empty buffer.
    pub fn new(limits: MessageLimits) -> Self {
        Self {
            buf: BytesMut::with_capacity(4096),
            limits,
            scanned: 0,
        }
    }

    /// Appends bytes read from the stream.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into directly (for `AsyncReadExt::read_buf`).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The complete header block (with its blank line) at the head of the buffer, if
    /// one has arrived: after a framing error it lets the owner answer 400 before
    /// closing (the stream cannot be resynchronised, but the request can be answered).
    pub fn pending_head(&self) -> Option<&[u8]> {
        let end = find_header_end(&self.buf)?;
        self.buf.get(..end + 4)
    }

    /// Takes the next complete frame, `Ok(None)` when more bytes are needed.
    pub fn poll_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        // Keep-alives: CRLFs before a message. A double CRLF is a ping.
        let mut crlfs = 0;
        while self.buf.starts_with(b"\r\n") {
            self.buf.advance(2);
            crlfs += 1;
            self.scanned = 0;
            if crlfs == 2 {
                return Ok(Some(Frame::Ping));
            }
        }
        if self.buf.is_empty() || self.buf.as_ref() == b"\r" {
            return Ok(None);
        }
        let start = self.scanned.saturating_sub(3);
        let Some(end) = find_header_end(&self.buf[start..]).map(|i| i + start) else {
            self.scanned = self.buf.len();
            if self.buf.len() > self.limits.max_message_bytes {
                return Err(FrameError::TooLarge {
                    limit: self.limits.max_message_bytes,
                });
            }
            return Ok(None);
        };
        let head = &self.buf[..end];
        let info = scan_headers(head, self.limits)?;
        let Some(body_len) = info.content_length else {
            return Err(FrameError::MissingContentLength);
        };
        let total = end
            .checked_add(4)
            .and_then(|n| n.checked_add(body_len))
            .ok_or(FrameError::TooLarge {
                limit: self.limits.max_message_bytes,
            })?;
        if total > self.limits.max_message_bytes {
            return Err(FrameError::TooLarge {
                limit: self.limits.max_message_bytes,
            });
        }
        if self.buf.len() < total {
            // Header end already found; do not rescan from zero next time.
            self.scanned = end;
            return Ok(None);
        }
        self.scanned = 0;
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }
}

/// Frames one datagram: drops leading CRLFs, checks limits, applies `Content-Length`.
///
/// Returns `Ok(None)` for a keep-alive datagram holding only CRLFs.
pub fn frame_datagram(data: Bytes, limits: MessageLimits) -> Result<Option<Bytes>, FrameError> {
    if data.len() > limits.max_message_bytes {
        return Err(FrameError::TooLarge {
            limit: limits.max_message_bytes,
        });
    }
    let skip = data
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(data.len());
    let mut data = data.slice(skip..);
    if data.is_empty() {
        return Ok(None);
    }
    let end = find_header_end(&data).ok_or(FrameError::NoHeaderEnd)?;
    let info = scan_headers(&data[..end], limits)?;
    let body_start = end + 4;
    let body_len = data.len() - body_start;
    if let Some(declared) = info.content_length {
        if declared > body_len {
            return Err(FrameError::TruncatedBody { declared });
        }
        // RFC 3261 §18.3: bytes past Content-Length in a datagram are discarded.
        data.truncate(body_start + declared);
    }
    Ok(Some(data))
}

struct HeaderInfo {
    content_length: Option<usize>,
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Counts header lines and finds `Content-Length` / `l` in a header block (no final CRLFCRLF).
fn scan_headers(head: &[u8], limits: MessageLimits) -> Result<HeaderInfo, FrameError> {
    let mut content_length: Option<usize> = None;
    let mut headers = 0usize;
    // The first line is the start line.
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue; // folded continuation
        }
        headers += 1;
        if headers > limits.max_headers {
            return Err(FrameError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue; // the parser will reject it
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = trim(&line[colon + 1..]);
            let parsed = std::str::from_utf8(value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| FrameError::BadContentLength(cut(value)))?;
            match content_length {
                Some(prev) if prev != parsed => {
                    return Err(FrameError::BadContentLength(cut(value)));
                }
                _ => content_length = Some(parsed),
            }
        }
    }
    Ok(HeaderInfo { content_length })
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

fn cut(value: &[u8]) -> String {
    String::from_utf8_lossy(&value[..value.len().min(64)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE_HEAD: &str =
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n";

    fn msg(body: &str, cl: &str) -> String {
        format!("{INVITE_HEAD}{cl}\r\n\r\n{body}")
    }

    #[test]
    fn stream_splits_two_messages_in_one_read() {
        let mut f = StreamFramer::new(MessageLimits::default());
        let a = msg("hello", "Content-Length: 5");
        let b = msg("", "l: 0");
        f.handle_bytes(format!("{a}{b}").as_bytes());
        assert_eq!(
            f.poll_frame().unwrap(),
            Some(Frame::Message(Bytes::from(a)))
        );
        assert_eq!(
            f.poll_frame().unwrap(),
            Some(Frame::Message(Bytes::from(b)))
        );
        assert_eq!(f.poll_frame().unwrap(), None);
    }

    #[test]
    fn stream_reassembles_byte_by_byte() {
        let mut f = StreamFramer::new(MessageLimits::default());
        let a = msg("v=0\r\n", "Content-Length : 5");
        let mut got = Vec::new();
        for b in a.as_bytes() {
            f.handle_bytes(&[*b]);
            while let Some(frame) = f.poll_frame().unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got, vec![Frame::Message(Bytes::from(a))]);
    }

    #[test]
    fn stream_double_crlf_is_a_ping_single_crlf_ignored() {
        let mut f = StreamFramer::new(MessageLimits::default());
        f.handle_bytes(b"\r\n\r\n");
        assert_eq!(f.poll_frame().unwrap(), Some(Frame::Ping));
        let a = msg("", "Content-Length: 0");
        f.handle_bytes(format!("\r\n{a}").as_bytes());
        assert_eq!(
            f.poll_frame().unwrap(),
            Some(Frame::Message(Bytes::from(a)))
        );
    }

    #[test]
    fn stream_rejects_missing_content_length() {
        let mut f = StreamFramer::new(MessageLimits::default());
        let head = format!("{INVITE_HEAD}To: <sip:a@b>\r\n\r\n");
        f.handle_bytes(head.as_bytes());
        assert_eq!(f.poll_frame(), Err(FrameError::MissingContentLength));
        assert_eq!(f.pending_head(), Some(head.as_bytes()));
    }

    #[test]
    fn stream_rejects_conflicting_and_garbage_content_length() {
        let mut f = StreamFramer::new(MessageLimits::default());
        f.handle_bytes(msg("", "Content-Length: 0\r\nl: 3").as_bytes());
        assert!(matches!(
            f.poll_frame(),
            Err(FrameError::BadContentLength(_))
        ));
        let mut f = StreamFramer::new(MessageLimits::default());
        f.handle_bytes(msg("", "Content-Length: -1").as_bytes());
        assert!(matches!(
            f.poll_frame(),
            Err(FrameError::BadContentLength(_))
        ));
        let mut f = StreamFramer::new(MessageLimits::default());
        f.handle_bytes(msg("", "Content-Length: 99999999999999999999999999").as_bytes());
        assert!(matches!(
            f.poll_frame(),
            Err(FrameError::BadContentLength(_))
        ));
    }

    #[test]
    fn stream_caps_size_before_headers_complete() {
        let limits = MessageLimits {
            max_message_bytes: 100,
            max_headers: 10,
        };
        let mut f = StreamFramer::new(limits);
        f.handle_bytes(&[b'a'; 101]);
        assert_eq!(f.poll_frame(), Err(FrameError::TooLarge { limit: 100 }));
    }

    #[test]
    fn stream_caps_declared_body_size() {
        let limits = MessageLimits {
            max_message_bytes: 200,
            max_headers: 10,
        };
        let mut f = StreamFramer::new(limits);
        f.handle_bytes(msg("", "Content-Length: 1000").as_bytes());
        assert_eq!(f.poll_frame(), Err(FrameError::TooLarge { limit: 200 }));
    }

    #[test]
    fn caps_header_count() {
        let limits = MessageLimits {
            max_message_bytes: 10_000,
            max_headers: 3,
        };
        let many = msg("", "X-A: 1\r\nX-B: 2\r\n Folded\r\nContent-Length: 0");
        let mut f = StreamFramer::new(limits);
        f.handle_bytes(many.as_bytes());
        assert_eq!(f.poll_frame(), Err(FrameError::TooManyHeaders { limit: 3 }));
        assert_eq!(
            frame_datagram(Bytes::from(many), limits),
            Err(FrameError::TooManyHeaders { limit: 3 })
        );
    }

    #[test]
    fn datagram_truncates_to_content_length_and_rejects_short_body() {
        let limits = MessageLimits::default();
        let d = msg("abcdef", "Content-Length: 3");
        let out = frame_datagram(Bytes::from(d), limits).unwrap().unwrap();
        assert!(out.ends_with(b"\r\n\r\nabc"));
        let d = msg("ab", "Content-Length: 3");
        assert_eq!(
            frame_datagram(Bytes::from(d), limits),
            Err(FrameError::TruncatedBody { declared: 3 })
        );
    }

    #[test]
    fn datagram_without_content_length_keeps_whole_body() {
        let d = format!("\r\n{INVITE_HEAD}\r\nbody");
        let out = frame_datagram(Bytes::from(d), MessageLimits::default())
            .unwrap()
            .unwrap();
        assert!(out.starts_with(b"INVITE"));
        assert!(out.ends_with(b"body"));
    }

    #[test]
    fn datagram_keepalive_is_none() {
        assert_eq!(
            frame_datagram(Bytes::from_static(b"\r\n\r\n"), MessageLimits::default()),
            Ok(None)
        );
    }

    proptest::proptest! {
        #[test]
        fn framer_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..16)) {
            let mut f = StreamFramer::new(MessageLimits { max_message_bytes: 256, max_headers: 8 });
            for c in chunks {
                f.handle_bytes(&c);
                for _ in 0..32 {
                    match f.poll_frame() {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
                let _ = frame_datagram(Bytes::from(c), MessageLimits::default());
            }
        }
    }
}
