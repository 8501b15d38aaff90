//! Typed views of the headers the stack acts on. Each parses from the stored raw value
//! on demand; the message parser runs the same code once to reject malformed input.

use std::fmt;
use std::net::IpAddr;

use super::Method;
use super::headers::{HeaderName, Headers};
use super::ids::{Branch, CallId, Tag};
use super::scan::{Cursor, is_token_char, is_word_char, quote, split_list, unquote};
use super::uri::{Host, Params, Uri, parse_generic_params};

/// A transport named in a `Via` header or a `transport` URI parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (unreliable: transactions retransmit).
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// SCTP.
    Sctp,
    /// WebSocket (RFC 7118).
    Ws,
    /// Secure WebSocket (RFC 7118).
    Wss,
    /// Any other token, upper-cased.
    Other(String),
}

impl Transport {
    /// Parses a transport token (case-insensitive).
    pub fn parse(s: &str) -> Transport {
        match s.to_ascii_uppercase().as_str() {
            "UDP" => Transport::Udp,
            "TCP" => Transport::Tcp,
            "TLS" => Transport::Tls,
            "SCTP" => Transport::Sctp,
            "WS" => Transport::Ws,
            "WSS" => Transport::Wss,
            other => Transport::Other(other.to_owned()),
        }
    }

    /// The upper-case token used in `Via`.
    pub fn as_str(&self) -> &str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Other(s) => s,
        }
    }

    /// Whether the transport is reliable, so that transactions do not retransmit
    /// (RFC 3261 §17.1.1.2).
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `Via` header value (RFC 3261 §20.42): `SIP/2.0/<transport> sent-by;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport the request was sent over.
    pub transport: Transport,
    /// The sent-by host.
    pub host: Host,
    /// The sent-by port, when given.
    pub port: Option<u16>,
    /// The parameters (`branch`, `received`, `rport`, …) in order.
    pub params: Params,
}

impl Via {
    /// A Via with a branch, as a UAC puts on a request it sends.
    pub fn new(transport: Transport, host: Host, port: Option<u16>, branch: &Branch) -> Via {
        let mut params = Params::new();
        params.set("branch", Some(branch.as_str().to_owned()));
        Via {
            transport,
            host,
            port,
            params,
        }
    }

    /// Parses one header line's value, which may hold a comma-separated list.
    pub fn parse_list(value: &str) -> Option<Vec<Via>> {
        let mut c = Cursor::new(value);
        let mut out = Vec::new();
        loop {
            out.push(via(&mut c)?);
            c.skip_ws();
            if c.is_eof() {
                return Some(out);
            }
            if !c.eat(b',') {
                return None;
            }
        }
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<Branch> {
        self.params.value("branch").map(Branch::new)
    }

    /// The `received` parameter (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<IpAddr> {
        let v = self.params.value("received")?;
        let v = v.trim_start_matches('[').trim_end_matches(']');
        v.parse().ok()
    }

    /// The `rport` parameter (RFC 3581): `None` when absent, `Some(None)` when present
    /// without a value (a request asking for it), `Some(Some(port))` when filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        let p = self.params.get("rport")?;
        Some(p.value.as_deref().and_then(|v| v.parse().ok()))
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<Host> {
        self.params.value("maddr").and_then(Host::parse)
    }

    /// The `ttl` parameter.
    pub fn ttl(&self) -> Option<u8> {
        self.params.value("ttl").and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

fn via(c: &mut Cursor<'_>) -> Option<Via> {
    c.skip_ws();
    let proto = c.token()?;
    if !proto.eq_ignore_ascii_case("SIP") || !c.eat_sep(b'/') {
        return None;
    }
    if c.token()? != "2.0" || !c.eat_sep(b'/') {
        return None;
    }
    let transport = Transport::parse(c.token()?);
    if !c.skip_ws() {
        return None;
    }
    let start = c.pos();
    if c.peek() == Some(b'[') {
        c.take_while(|b| b != b']');
        if !c.eat(b']') {
            return None;
        }
    } else {
        c.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    }
    let host = Host::parse(c.slice(start, c.pos()))?;
    let port = if c.eat_sep(b':') {
        let digits = c.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() || digits.len() > 5 {
            return None;
        }
        Some(digits.parse::<u16>().ok()?)
    } else {
        None
    };
    let params = parse_generic_params(c).ok()?;
    for p in params.iter() {
        let v = p.value.as_deref();
        let ok = match p.name.to_ascii_lowercase().as_str() {
            "branch" => v.is_some_and(|v| v.bytes().all(is_token_char)),
            "received" => v.is_some_and(|v| {
                v.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok()
            }),
            "rport" => v.is_none_or(|v| v.parse::<u16>().is_ok()),
            "ttl" => v.is_some_and(|v| v.parse::<u8>().is_ok()),
            "maddr" => v.is_some_and(|v| Host::parse(v).is_some()),
            _ => true,
        };
        if !ok {
            return None;
        }
    }
    Some(Via {
        transport,
        host,
        port,
        params,
    })
}

/// `[display-name] <uri> ;params` — the value of From, To, Contact, Route,
/// Record-Route (RFC 3261 §20.10, §25.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted (multiple tokens joined by one space).
    pub display_name: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `q`, `+sip.instance`, `lr` is a URI param).
    pub params: Params,
}

impl NameAddr {
    /// A bare `<uri>`.
    pub fn new(uri: impl Into<Uri>) -> Self {
        NameAddr {
            display_name: None,
            uri: uri.into(),
            params: Params::new(),
        }
    }

    /// Parses exactly one name-addr / addr-spec with parameters (From, To).
    pub fn parse(value: &str) -> Option<NameAddr> {
        let mut c = Cursor::new(value);
        let na = name_addr(&mut c)?;
        c.skip_ws();
        c.is_eof().then_some(na)
    }

    /// Parses a comma-separated list (Contact without `*`, Route, Record-Route).
    pub fn parse_list(value: &str) -> Option<Vec<NameAddr>> {
        let mut c = Cursor::new(value);
        let mut out = Vec::new();
        loop {
            out.push(name_addr(&mut c)?);
            c.skip_ws();
            if c.is_eof() {
                return Some(out);
            }
            if !c.eat(b',') {
                return None;
            }
        }
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<Tag> {
        self.params.value("tag").map(Tag::new)
    }

    /// Sets the `tag` parameter (builder style).
    pub fn with_tag(mut self, tag: &Tag) -> Self {
        self.params.set("tag", Some(tag.as_str().to_owned()));
        self
    }

    /// The Contact `expires` parameter, saturating at `u32::MAX` (RFC 3261 §20.19).
    pub fn expires(&self) -> Option<u32> {
        self.params.value("expires").and_then(parse_delta_seconds)
    }

    /// The Contact `q` parameter.
    pub fn q(&self) -> Option<f32> {
        self.params.value("q").and_then(|v| v.parse().ok())
    }

    /// The Contact `+sip.instance` parameter, unquoted (RFC 5626 §4.1).
    pub fn sip_instance(&self) -> Option<String> {
        self.params
            .get("+sip.instance")
            .and_then(|p| p.unquoted_value())
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write!(f, "{} ", quote(d))?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

fn name_addr(c: &mut Cursor<'_>) -> Option<NameAddr> {
    c.skip_ws();
    let mut display_name = None;
    let uri = match c.peek() {
        Some(b'"') => {
            display_name = Some(unquote(c.quoted_raw()?));
            c.skip_ws();
            bracketed(c)?
        }
        Some(b'<') => bracketed(c)?,
        _ => {
            let save = c.pos();
            let mut words = Vec::new();
            while let Some(t) = c.token() {
                words.push(t);
                if !c.skip_ws() {
                    break;
                }
            }
            if !words.is_empty() && c.peek() == Some(b'<') {
                display_name = Some(words.join(" "));
                bracketed(c)?
            } else {
                c.set_pos(save);
                // An addr-spec without <> ends at ';', ',' or white space; one holding
                // '?' must have been bracketed (RFC 3261 §20, RFC 4475 §3.1.2.13).
                let s = c.take_while(|b| !matches!(b, b';' | b',' | b' ' | b'\t'));
                if s.contains('?') {
                    return None;
                }
                Uri::parse(s).ok()?
            }
        }
    };
    let params = parse_generic_params(c).ok()?;
    Some(NameAddr {
        display_name,
        uri,
        params,
    })
}

fn bracketed(c: &mut Cursor<'_>) -> Option<Uri> {
    if !c.eat(b'<') {
        return None;
    }
    let s = c.take_while(|b| b != b'>');
    if !c.eat(b'>') {
        return None;
    }
    Uri::parse(s).ok()
}

/// The value of a `Contact` header: `*` or addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *` (REGISTER removing all bindings).
    Star,
    /// One or more addresses.
    Addresses(Vec<NameAddr>),
}

impl Contacts {
    /// The addresses (empty for `*`).
    pub fn addresses(&self) -> &[NameAddr] {
        match self {
            Contacts::Star => &[],
            Contacts::Addresses(a) => a,
        }
    }
}

/// A `CSeq` value (RFC 3261 §20.16). The number is below 2^31 as §8.1.1.5 requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number.
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`; numbers of 2^31 and above are rejected.
    pub fn parse(value: &str) -> Option<CSeq> {
        let mut c = Cursor::new(value.trim_matches([' ', '\t']));
        let digits = c.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() || !c.skip_ws() {
            return None;
        }
        let seq = digits
            .trim_start_matches('0')
            .parse::<u64>()
            .ok()
            .or_else(|| digits.bytes().all(|b| b == b'0').then_some(0))?;
        if seq >= 1 << 31 {
            return None;
        }
        let method = Method::parse(c.rest()).ok()?;
        Some(CSeq {
            seq: u32::try_from(seq).ok()?,
            method,
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A `Content-Type` media type (RFC 3261 §20.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// Top-level type, e.g. `application`.
    pub mtype: String,
    /// Subtype, e.g. `sdp`.
    pub subtype: String,
    /// Parameters such as `boundary` or `charset`.
    pub params: Params,
}

impl ContentType {
    /// Parses `type/subtype;params`.
    pub fn parse(value: &str) -> Option<ContentType> {
        let mut c = Cursor::new(value);
        c.skip_ws();
        let mtype = c.token()?.to_owned();
        if !c.eat_sep(b'/') {
            return None;
        }
        let subtype = c.token()?.to_owned();
        let params = parse_generic_params(&mut c).ok()?;
        c.skip_ws();
        c.is_eof().then_some(ContentType {
            mtype,
            subtype,
            params,
        })
    }

    /// Whether this is `type/subtype` (case-insensitive).
    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.mtype, self.subtype, self.params)
    }
}

/// The `refresher` parameter of `Session-Expires` (RFC 4028 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The UAC of the session refreshes.
    Uac,
    /// The UAS of the session refreshes.
    Uas,
}

impl fmt::Display for Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        })
    }
}

/// A `Session-Expires` value (RFC 4028 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionExpires {
    /// Session interval in seconds.
    pub delta_secs: u32,
    /// Who refreshes, when stated.
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// Parses `delta-seconds *(;se-params)`.
    pub fn parse(value: &str) -> Option<SessionExpires> {
        let mut c = Cursor::new(value);
        c.skip_ws();
        let delta_secs = parse_delta_seconds(c.take_while(|b| b.is_ascii_digit()))?;
        let params = parse_generic_params(&mut c).ok()?;
        c.skip_ws();
        if !c.is_eof() {
            return None;
        }
        let refresher = match params.value("refresher") {
            None => None,
            Some(v) if v.eq_ignore_ascii_case("uac") => Some(Refresher::Uac),
            Some(v) if v.eq_ignore_ascii_case("uas") => Some(Refresher::Uas),
            Some(_) => return None,
        };
        Some(SessionExpires {
            delta_secs,
            refresher,
        })
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.delta_secs)?;
        if let Some(r) = self.refresher {
            write!(f, ";refresher={r}")?;
        }
        Ok(())
    }
}

/// One `Reason` value (RFC 3326): `SIP;cause=200;text="Call completed elsewhere"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// `SIP`, `Q.850` or another protocol token.
    pub protocol: String,
    /// The `cause` parameter.
    pub cause: Option<u16>,
    /// The `text` parameter, unquoted.
    pub text: Option<String>,
}

impl Reason {
    /// Parses a comma-separated list of reasons.
    pub fn parse_list(value: &str) -> Option<Vec<Reason>> {
        let mut c = Cursor::new(value);
        let mut out = Vec::new();
        loop {
            c.skip_ws();
            let protocol = c.token()?.to_owned();
            let params = parse_generic_params(&mut c).ok()?;
            out.push(Reason {
                protocol,
                cause: params.value("cause").and_then(|v| v.parse().ok()),
                text: params.get("text").and_then(|p| p.unquoted_value()),
            });
            c.skip_ws();
            if c.is_eof() {
                return Some(out);
            }
            if !c.eat(b',') {
                return None;
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.protocol)?;
        if let Some(c) = self.cause {
            write!(f, ";cause={c}")?;
        }
        if let Some(t) = &self.text {
            write!(f, ";text={}", quote(t))?;
        }
        Ok(())
    }
}

/// `delta-seconds`, saturating at `u32::MAX` as RFC 3261 §20.19 asks.
pub(crate) fn parse_delta_seconds(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u32>().unwrap_or(u32::MAX))
}

/// Whether `s` is a valid Call-ID (`word ["@" word]`).
pub(crate) fn is_call_id(s: &str) -> bool {
    let mut parts = s.splitn(2, '@');
    let ok = |w: &str| !w.is_empty() && w.bytes().all(is_word_char);
    parts.next().is_some_and(ok) && parts.next().is_none_or(ok)
}

impl Headers {
    /// All Via values in order (header lines and comma lists flattened). `None` when
    /// any is malformed.
    pub fn vias(&self) -> Option<Vec<Via>> {
        let mut out = Vec::new();
        for v in self.get_all("Via") {
            out.extend(Via::parse_list(v)?);
        }
        Some(out)
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Option<Via> {
        let first = self.get("Via")?;
        let first = split_list(first).into_iter().next()?;
        Via::parse_list(first)?.into_iter().next()
    }

    /// The From value.
    pub fn from(&self) -> Option<NameAddr> {
        self.get("From").and_then(NameAddr::parse)
    }

    /// The To value.
    pub fn to(&self) -> Option<NameAddr> {
        self.get("To").and_then(NameAddr::parse)
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<CallId> {
        self.get("Call-ID")
            .filter(|v| is_call_id(v))
            .map(CallId::new)
    }

    /// The CSeq.
    pub fn cseq(&self) -> Option<CSeq> {
        self.get("CSeq").and_then(CSeq::parse)
    }

    /// Max-Forwards (0..=255).
    pub fn max_forwards(&self) -> Option<u8> {
        self.get("Max-Forwards").and_then(|v| {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let v = v.trim_start_matches('0');
            if v.is_empty() {
                Some(0)
            } else {
                v.parse().ok()
            }
        })
    }

    /// The Contact values (all Contact lines flattened), `None` when absent or malformed.
    pub fn contacts(&self) -> Option<Contacts> {
        let mut out = Vec::new();
        let mut any = false;
        for v in self.get_all("Contact") {
            any = true;
            if v.trim() == "*" {
                return Some(Contacts::Star);
            }
            out.extend(NameAddr::parse_list(v)?);
        }
        any.then_some(Contacts::Addresses(out))
    }

    /// Route values in order (empty when absent), `None` when malformed.
    pub fn routes(&self) -> Option<Vec<NameAddr>> {
        self.name_addr_list("Route")
    }

    /// Record-Route values in order (empty when absent), `None` when malformed.
    pub fn record_routes(&self) -> Option<Vec<NameAddr>> {
        self.name_addr_list("Record-Route")
    }

    /// Each element of every `name` header exactly as received (comma lists split).
    /// Dialogs keep Record-Route this way (RFC 3261 §12.1.1).
    pub fn raw_list(&self, name: &str) -> Vec<String> {
        self.get_all(name)
            .flat_map(split_list)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn name_addr_list(&self, name: &str) -> Option<Vec<NameAddr>> {
        let mut out = Vec::new();
        for v in self.get_all(name) {
            out.extend(NameAddr::parse_list(v)?);
        }
        Some(out)
    }

    /// Content-Length.
    pub fn content_length(&self) -> Option<usize> {
        self.get("Content-Length").and_then(parse_content_length)
    }

    /// Content-Type.
    pub fn content_type(&self) -> Option<ContentType> {
        self.get("Content-Type").and_then(ContentType::parse)
    }

    /// Expires (saturating).
    pub fn expires(&self) -> Option<u32> {
        self.get("Expires")
            .map(str::trim)
            .and_then(parse_delta_seconds)
    }

    /// Session-Expires (RFC 4028).
    pub fn session_expires(&self) -> Option<SessionExpires> {
        self.get("Session-Expires").and_then(SessionExpires::parse)
    }

    /// Min-SE in seconds (RFC 4028).
    pub fn min_se(&self) -> Option<u32> {
        let v = self.get("Min-SE")?;
        let mut c = Cursor::new(v);
        c.skip_ws();
        let secs = parse_delta_seconds(c.take_while(|b| b.is_ascii_digit()))?;
        parse_generic_params(&mut c).ok()?;
        Some(secs)
    }

    /// All Reason values (RFC 3326).
    pub fn reasons(&self) -> Vec<Reason> {
        self.get_all("Reason")
            .filter_map(Reason::parse_list)
            .flatten()
            .collect()
    }

    /// Option tags of a `Supported` / `Require` / `Proxy-Require` / `Unsupported`
    /// header, all lines flattened.
    pub fn option_tags(&self, name: &str) -> Vec<String> {
        self.get_all(name)
            .flat_map(split_list)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Whether `name` (e.g. `Supported`) lists option tag `tag`.
    pub fn has_option_tag(&self, name: &str, tag: &str) -> bool {
        self.get_all(name)
            .flat_map(split_list)
            .any(|t| t.eq_ignore_ascii_case(tag))
    }

    /// Methods listed in `Allow`.
    pub fn allow(&self) -> Vec<Method> {
        self.get_all(HeaderName::ALLOW.as_str())
            .flat_map(split_list)
            .filter_map(|m| Method::parse(m).ok())
            .collect()
    }
}

pub(crate) fn parse_content_length(v: &str) -> Option<usize> {
    let v = v.trim_matches([' ', '\t']);
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}
