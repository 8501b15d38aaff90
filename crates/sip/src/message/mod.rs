//! SIP messages: model, parser, printer and builders (RFC 3261 §7, §20, §25).
//!
//! The parser is the crate's own (see `docs/dependencies.md` for why not `rsip`). It
//! works in three steps:
//!
//! 1. **Limits first.** Before any parsing the message size, each line's length and the
//!    number of header lines are checked against [`ParseLimits`].
//! 2. **Framing.** Start line, header lines (folded lines unfolded, names compared
//!    case-insensitively with compact forms expanded), blank line, body cut to
//!    `Content-Length` (RFC 3261 §18.3).
//! 3. **Validation.** Every header the stack acts on (`Via`, `From`, `To`, `Call-ID`,
//!    `CSeq`, `Max-Forwards`, `Contact`, `Route`, `Record-Route`, `Content-Length`,
//!    `Content-Type`, `Session-Expires`, `Min-SE`) is parsed once, so that a
//!    [`Request`]/[`Response`] obtained from [`SipMessage::parse`] has them well formed
//!    and the typed accessors return `Some`.
//!
//! Header values are stored raw (unfolded), so proxies and dialogs can reproduce them
//! exactly; typed views ([`Via`], [`NameAddr`], [`CSeq`], …) are parsed on demand.
//! Printing always writes a correct `Content-Length`.

mod build;
mod headers;
mod ids;
mod parse;
mod scan;
mod typed;
mod uri;

use std::fmt;

use bytes::Bytes;

pub use build::error_response;
pub use headers::{Header, HeaderName, Headers};
pub use ids::{Branch, CallId, MAGIC_COOKIE, Tag};
pub use parse::{ParseError, ParseLimits, StreamFrame, stream_frame};
pub use typed::{
    CSeq, Contacts, ContentType, NameAddr, Reason, Refresher, SessionExpires, Transport, Via,
};
pub use uri::{Host, Param, Params, SipUri, TelUri, Uri, UriError, percent_decode};

/// A SIP method (RFC 3261 §7.1 and extensions). Methods are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE.
    Invite,
    /// ACK.
    Ack,
    /// BYE.
    Bye,
    /// CANCEL.
    Cancel,
    /// OPTIONS.
    Options,
    /// REGISTER.
    Register,
    /// PRACK (RFC 3262).
    Prack,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// PUBLISH (RFC 3903).
    Publish,
    /// INFO (RFC 6086).
    Info,
    /// REFER (RFC 3515).
    Refer,
    /// MESSAGE (RFC 3428).
    Message,
    /// UPDATE (RFC 3311).
    Update,
    /// Any other token.
    Extension(String),
}

impl Method {
    /// Parses a method token (case-sensitive: `invite` is an extension method).
    pub fn parse(s: &str) -> Result<Method, ParseError> {
        if !scan::is_token(s) {
            return Err(ParseError::StartLine(scan::snippet(s)));
        }
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "UPDATE" => Method::Update,
            other => Method::Extension(other.to_owned()),
        })
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Update => "UPDATE",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A response status code, 100..=699 (RFC 3261 §21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(u16);

impl StatusCode {
    /// 100 Trying.
    pub const TRYING: StatusCode = StatusCode(100);
    /// 180 Ringing.
    pub const RINGING: StatusCode = StatusCode(180);
    /// 183 Session Progress.
    pub const SESSION_PROGRESS: StatusCode = StatusCode(183);
    /// 200 OK.
    pub const OK: StatusCode = StatusCode(200);
    /// 400 Bad Request.
    pub const BAD_REQUEST: StatusCode = StatusCode(400);
    /// 401 Unauthorized.
    pub const UNAUTHORIZED: StatusCode = StatusCode(401);
    /// 403 Forbidden.
    pub const FORBIDDEN: StatusCode = StatusCode(403);
    /// 404 Not Found.
    pub const NOT_FOUND: StatusCode = StatusCode(404);
    /// 405 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: StatusCode = StatusCode(405);
    /// 407 Proxy Authentication Required.
    pub const PROXY_AUTHENTICATION_REQUIRED: StatusCode = StatusCode(407);
    /// 408 Request Timeout.
    pub const REQUEST_TIMEOUT: StatusCode = StatusCode(408);
    /// 415 Unsupported Media Type.
    pub const UNSUPPORTED_MEDIA_TYPE: StatusCode = StatusCode(415);
    /// 416 Unsupported URI Scheme.
    pub const UNSUPPORTED_URI_SCHEME: StatusCode = StatusCode(416);
    /// 420 Bad Extension.
    pub const BAD_EXTENSION: StatusCode = StatusCode(420);
    /// 422 Session Interval Too Small (RFC 4028).
    pub const SESSION_INTERVAL_TOO_SMALL: StatusCode = StatusCode(422);
    /// 480 Temporarily Unavailable.
    pub const TEMPORARILY_UNAVAILABLE: StatusCode = StatusCode(480);
    /// 481 Call/Transaction Does Not Exist.
    pub const CALL_DOES_NOT_EXIST: StatusCode = StatusCode(481);
    /// 482 Loop Detected.
    pub const LOOP_DETECTED: StatusCode = StatusCode(482);
    /// 483 Too Many Hops.
    pub const TOO_MANY_HOPS: StatusCode = StatusCode(483);
    /// 486 Busy Here.
    pub const BUSY_HERE: StatusCode = StatusCode(486);
    /// 487 Request Terminated.
    pub const REQUEST_TERMINATED: StatusCode = StatusCode(487);
    /// 488 Not Acceptable Here.
    pub const NOT_ACCEPTABLE_HERE: StatusCode = StatusCode(488);
    /// 491 Request Pending.
    pub const REQUEST_PENDING: StatusCode = StatusCode(491);
    /// 500 Server Internal Error.
    pub const SERVER_INTERNAL_ERROR: StatusCode = StatusCode(500);
    /// 501 Not Implemented.
    pub const NOT_IMPLEMENTED: StatusCode = StatusCode(501);
    /// 503 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode(503);
    /// 505 Version Not Supported.
    pub const VERSION_NOT_SUPPORTED: StatusCode = StatusCode(505);
    /// 513 Message Too Large.
    pub const MESSAGE_TOO_LARGE: StatusCode = StatusCode(513);
    /// 603 Decline.
    pub const DECLINE: StatusCode = StatusCode(603);

    /// A status code in 100..=699.
    pub fn new(code: u16) -> Option<StatusCode> {
        (100..=699).contains(&code).then_some(StatusCode(code))
    }

    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// 1xx.
    pub fn is_provisional(self) -> bool {
        self.0 < 200
    }

    /// 2xx.
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }

    /// 200..=699.
    pub fn is_final(self) -> bool {
        self.0 >= 200
    }

    /// The RFC 3261 reason phrase, or a generic one for the class.
    pub fn default_reason(self) -> &'static str {
        match self.0 {
            100 => "Trying",
            180 => "Ringing",
            181 => "Call Is Being Forwarded",
            182 => "Queued",
            183 => "Session Progress",
            200 => "OK",
            202 => "Accepted",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            415 => "Unsupported Media Type",
            416 => "Unsupported URI Scheme",
            420 => "Bad Extension",
            422 => "Session Interval Too Small",
            480 => "Temporarily Unavailable",
            481 => "Call/Transaction Does Not Exist",
            482 => "Loop Detected",
            483 => "Too Many Hops",
            486 => "Busy Here",
            487 => "Request Terminated",
            488 => "Not Acceptable Here",
            491 => "Request Pending",
            500 => "Server Internal Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            504 => "Server Time-out",
            505 => "Version Not Supported",
            513 => "Message Too Large",
            603 => "Decline",
            c if c < 200 => "Session Progress",
            c if c < 300 => "OK",
            c if c < 400 => "Redirect",
            c if c < 500 => "Client Error",
            c if c < 600 => "Server Error",
            _ => "Global Failure",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// Headers in order.
    pub headers: Headers,
    /// The body (its length is what `Content-Length` says when printed).
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: StatusCode,
    /// The reason phrase.
    pub reason: String,
    /// Headers in order.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl SipMessage {
    /// Parses one message from a datagram (or a frame cut by [`stream_frame`]):
    /// limits are checked first, then the message is framed and validated. A body
    /// longer than `Content-Length` is cut; a shorter one is an error (RFC 3261 §18.3).
    pub fn parse(buf: &[u8], limits: &ParseLimits) -> Result<SipMessage, ParseError> {
        parse::parse_message(buf, limits)
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }
}

impl From<Request> for SipMessage {
    fn from(r: Request) -> Self {
        SipMessage::Request(r)
    }
}

impl From<Response> for SipMessage {
    fn from(r: Response) -> Self {
        SipMessage::Response(r)
    }
}

macro_rules! common_accessors {
    ($t:ty) => {
        impl $t {
            /// The topmost Via.
            pub fn top_via(&self) -> Option<Via> {
                self.headers.top_via()
            }

            /// The branch of the topmost Via.
            pub fn branch(&self) -> Option<Branch> {
                self.headers.top_via().and_then(|v| v.branch())
            }

            /// The Call-ID.
            pub fn call_id(&self) -> Option<CallId> {
                self.headers.call_id()
            }

            /// The CSeq.
            pub fn cseq(&self) -> Option<CSeq> {
                self.headers.cseq()
            }

            /// The From value.
            pub fn from(&self) -> Option<NameAddr> {
                self.headers.from()
            }

            /// The To value.
            pub fn to(&self) -> Option<NameAddr> {
                self.headers.to()
            }

            /// The From tag.
            pub fn from_tag(&self) -> Option<Tag> {
                self.headers.from().and_then(|f| f.tag())
            }

            /// The To tag.
            pub fn to_tag(&self) -> Option<Tag> {
                self.headers.to().and_then(|t| t.tag())
            }

            /// Sets the body and its `Content-Type` (the printer writes Content-Length).
            pub fn set_body(&mut self, content_type: &str, body: impl Into<Bytes>) {
                self.headers.set(HeaderName::CONTENT_TYPE, content_type);
                self.body = body.into();
            }

            /// The wire form, with a `Content-Length` matching the body.
            pub fn to_bytes(&self) -> Vec<u8> {
                let mut out = Vec::with_capacity(256 + self.body.len());
                self.write_start_line(&mut out);
                write_headers_and_body(&self.headers, &self.body, &mut out);
                out
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
            }
        }
    };
}

common_accessors!(Request);
common_accessors!(Response);

impl Request {
    /// A request with no headers and no body; add headers with `headers.push`.
    pub fn new(method: Method, uri: impl Into<Uri>) -> Request {
        Request {
            method,
            uri: uri.into(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    fn write_start_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{} {} SIP/2.0\r\n", self.method, self.uri).as_bytes());
    }
}

impl Response {
    /// A response with the default reason phrase, no headers and no body.
    pub fn new(status: StatusCode) -> Response {
        Response {
            status,
            reason: status.default_reason().to_owned(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    fn write_start_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("SIP/2.0 {} {}\r\n", self.status, self.reason).as_bytes());
    }
}

fn write_headers_and_body(headers: &Headers, body: &[u8], out: &mut Vec<u8>) {
    let mut wrote_length = false;
    for h in headers.iter() {
        if h.name.is("Content-Length") {
            if !wrote_length {
                out.extend_from_slice(format!("{}: {}\r\n", h.name, body.len()).as_bytes());
                wrote_length = true;
            }
            continue;
        }
        out.extend_from_slice(h.name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}
