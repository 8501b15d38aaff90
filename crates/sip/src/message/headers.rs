//! The ordered header list. Names are matched case-insensitively with compact forms
//! expanded (RFC 3261 §7.3.3); values are stored as received, unfolded.

use std::borrow::Cow;
use std::fmt;

/// Compact form → full name (RFC 3261 §7.3.3 and the extensions that define one).
const COMPACT: &[(u8, &str)] = &[
    (b'a', "Accept-Contact"),
    (b'b', "Referred-By"),
    (b'c', "Content-Type"),
    (b'd', "Request-Disposition"),
    (b'e', "Content-Encoding"),
    (b'f', "From"),
    (b'i', "Call-ID"),
    (b'j', "Reject-Contact"),
    (b'k', "Supported"),
    (b'l', "Content-Length"),
    (b'm', "Contact"),
    (b'n', "Identity-Info"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b's', "Subject"),
    (b't', "To"),
    (b'u', "Allow-Events"),
    (b'v', "Via"),
    (b'x', "Session-Expires"),
    (b'y', "Identity"),
];

/// Spellings seen on almost every message, shared instead of allocated.
const COMMON: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Contact",
    "Content-Type",
    "Content-Length",
    "Record-Route",
    "Route",
    "Allow",
    "Supported",
    "User-Agent",
    "Server",
    "Session-Expires",
    "Min-SE",
    "Require",
    "Expires",
    "Accept",
    "P-Asserted-Identity",
    "Remote-Party-ID",
    "Reason",
    "Authorization",
    "WWW-Authenticate",
    "Proxy-Authorization",
    "Proxy-Authenticate",
    "Date",
    "Subject",
    "Warning",
    "Allow-Events",
    "Event",
    "v",
    "f",
    "t",
    "i",
    "m",
    "l",
    "c",
    "k",
    "x",
];

/// A header name as received; equality ignores case and compact forms
/// (`v` == `Via` == `VIA`).
#[derive(Debug, Clone)]
pub struct HeaderName(Cow<'static, str>);

macro_rules! names {
    ($($(#[$doc:meta])* $c:ident = $s:literal;)*) => {
        impl HeaderName {
            $( $(#[$doc])* pub const $c: HeaderName = HeaderName(Cow::Borrowed($s)); )*
        }
    };
}

names! {
    /// `Via` (compact `v`).
    VIA = "Via";
    /// `From` (compact `f`).
    FROM = "From";
    /// `To` (compact `t`).
    TO = "To";
    /// `Call-ID` (compact `i`).
    CALL_ID = "Call-ID";
    /// `CSeq`.
    CSEQ = "CSeq";
    /// `Max-Forwards`.
    MAX_FORWARDS = "Max-Forwards";
    /// `Contact` (compact `m`).
    CONTACT = "Contact";
    /// `Route`.
    ROUTE = "Route";
    /// `Record-Route`.
    RECORD_ROUTE = "Record-Route";
    /// `Content-Length` (compact `l`).
    CONTENT_LENGTH = "Content-Length";
    /// `Content-Type` (compact `c`).
    CONTENT_TYPE = "Content-Type";
    /// `Session-Expires` (compact `x`), RFC 4028.
    SESSION_EXPIRES = "Session-Expires";
    /// `Min-SE`, RFC 4028.
    MIN_SE = "Min-SE";
    /// `Reason`, RFC 3326.
    REASON = "Reason";
    /// `Authorization`.
    AUTHORIZATION = "Authorization";
    /// `Proxy-Authorization`.
    PROXY_AUTHORIZATION = "Proxy-Authorization";
    /// `WWW-Authenticate`.
    WWW_AUTHENTICATE = "WWW-Authenticate";
    /// `Proxy-Authenticate`.
    PROXY_AUTHENTICATE = "Proxy-Authenticate";
    /// `Expires`.
    EXPIRES = "Expires";
    /// `Supported` (compact `k`).
    SUPPORTED = "Supported";
    /// `Require`.
    REQUIRE = "Require";
    /// `Allow`.
    ALLOW = "Allow";
    /// `User-Agent`.
    USER_AGENT = "User-Agent";
    /// `Server`.
    SERVER = "Server";
    /// `Retry-After`.
    RETRY_AFTER = "Retry-After";
    /// `Warning`.
    WARNING = "Warning";
    /// `Unsupported`.
    UNSUPPORTED = "Unsupported";
    /// `Accept`.
    ACCEPT = "Accept";
    /// `Subject` (compact `s`).
    SUBJECT = "Subject";
}

impl HeaderName {
    /// A header name (not validated; the parser only produces valid tokens).
    pub fn new(name: impl Into<String>) -> Self {
        HeaderName(Cow::Owned(name.into()))
    }

    /// A header name for text from the wire: common spellings share a static string
    /// instead of allocating (the spelling is kept exactly).
    pub(crate) fn from_wire(name: &str) -> Self {
        match COMMON.iter().find(|c| **c == name) {
            Some(c) => HeaderName(Cow::Borrowed(c)),
            None => HeaderName(Cow::Owned(name.to_owned())),
        }
    }

    /// The name as received or constructed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full name when this is a compact form, else the name itself.
    pub fn canonical(&self) -> &str {
        expand(&self.0)
    }

    /// Whether this names the same header as `other` (case-insensitive, compact-aware).
    pub fn is(&self, other: &str) -> bool {
        same_name(&self.0, other)
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &Self) -> bool {
        same_name(&self.0, &other.0)
    }
}

impl Eq for HeaderName {}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for HeaderName {
    fn from(s: &str) -> Self {
        HeaderName::new(s)
    }
}

impl From<String> for HeaderName {
    fn from(s: String) -> Self {
        HeaderName::new(s)
    }
}

fn expand(name: &str) -> &str {
    if let [b] = name.as_bytes() {
        let b = b.to_ascii_lowercase();
        if let Some((_, full)) = COMPACT.iter().find(|(c, _)| *c == b) {
            return full;
        }
    }
    name
}

fn same_name(a: &str, b: &str) -> bool {
    expand(a).eq_ignore_ascii_case(expand(b))
}

/// One header line: name as received, value unfolded and trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name.
    pub name: HeaderName,
    /// The value, with line folds replaced by white space.
    pub value: String,
}

/// All headers of a message, in order. Lookups take `&str` or a [`HeaderName`]
/// constant and see through compact forms and case.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.name.is(name))
            .map(|h| h.value.as_str())
    }

    /// Values of every header called `name`, in order (one per header line; split
    /// comma lists with the typed accessors).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.is(name))
            .map(|h| h.value.as_str())
    }

    /// How many header lines are called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.0.iter().filter(|h| h.name.is(name)).count()
    }

    /// Whether at least one header is called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|h| h.name.is(name))
    }

    /// Appends a header.
    pub fn push(&mut self, name: impl Into<HeaderName>, value: impl Into<String>) {
        self.0.push(Header {
            name: name.into(),
            value: value.into(),
        });
    }

    /// Inserts a header before every other (a new top `Via`).
    pub fn push_front(&mut self, name: impl Into<HeaderName>, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name: name.into(),
                value: value.into(),
            },
        );
    }

    /// Replaces every header called `name` by one with `value`, at the position of the
    /// first one (or at the end).
    pub fn set(&mut self, name: impl Into<HeaderName>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.iter().position(|h| h.name == name) {
            Some(i) => {
                if let Some(h) = self.0.get_mut(i) {
                    h.value = value;
                }
                let mut idx = 0;
                self.0.retain(|h| {
                    let keep = idx <= i || h.name != name;
                    idx += 1;
                    keep
                });
            }
            None => self.0.push(Header { name, value }),
        }
    }

    /// Removes every header called `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.0.len();
        self.0.retain(|h| !h.name.is(name));
        before - self.0.len()
    }

    /// Removes the first header called `name` and returns its value.
    pub fn remove_first(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|h| h.name.is(name))?;
        Some(self.0.remove(i).value)
    }

    /// Iterates over all headers in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// Mutable access to the header values in order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Header> {
        self.0.iter_mut()
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
