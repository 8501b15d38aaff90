//! URIs (`sip:`, `sips:`, `tel:` and any other absolute URI), hosts and parameters
//! (RFC 3261 §19.1, §25.1; RFC 3966 for `tel:`; RFC 2732 / RFC 5954 for IPv6 hosts).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::scan::{Cursor, is_escaped_with, is_token_char, is_unreserved, unquote};

/// One `;name[=value]` parameter. The value is kept as received (quotes and escapes
/// included) so that forwarding and printing reproduce it; use
/// [`Param::unquoted_value`] to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name (compared case-insensitively).
    pub name: String,
    /// Raw value, `None` for a flag parameter such as `lr`.
    pub value: Option<String>,
}

impl Param {
    /// A parameter with an optional raw value.
    pub fn new(name: impl Into<String>, value: Option<String>) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }

    /// The value with surrounding quotes and quoted-pair escapes removed.
    pub fn unquoted_value(&self) -> Option<String> {
        self.value.as_deref().map(unquote)
    }
}

/// An ordered list of parameters with case-insensitive lookup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Params(pub Vec<Param>);

impl Params {
    /// An empty list.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// The first parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.0.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Whether a parameter called `name` is present (with or without a value).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The raw value of `name`; `None` when absent or valueless.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|p| p.value.as_deref())
    }

    /// Sets `name` to `value`, replacing an existing parameter of that name in place.
    pub fn set(&mut self, name: &str, value: Option<String>) {
        if let Some(p) = self
            .0
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            p.value = value;
        } else {
            self.0.push(Param::new(name, value));
        }
    }

    /// Removes every parameter called `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|p| !p.name.eq_ignore_ascii_case(name));
    }

    /// Iterates in order.
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.0.iter()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match &p.value {
                Some(v) => write!(f, ";{}={}", p.name, v)?,
                None => write!(f, ";{}", p.name)?,
            }
        }
        Ok(())
    }
}

/// A host: domain name, IPv4 address or IPv6 reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, kept as received (compare case-insensitively).
    Domain(String),
    /// A dotted IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address (printed in brackets).
    Ipv6(Ipv6Addr),
}

impl Host {
    /// The address when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Domain(_) => None,
            Host::Ipv4(a) => Some(IpAddr::V4(*a)),
            Host::Ipv6(a) => Some(IpAddr::V6(*a)),
        }
    }

    /// Parses `host` (RFC 3261 §25.1): `[IPv6]`, IPv4 or a hostname.
    pub fn parse(s: &str) -> Option<Host> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']')?;
            return inner.parse::<Ipv6Addr>().ok().map(Host::Ipv6);
        }
        if s.is_empty() {
            return None;
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return s.parse::<Ipv4Addr>().ok().map(Host::Ipv4);
        }
        let ok = s.split('.').enumerate().all(|(i, label)| {
            // a trailing dot is allowed (fully qualified)
            (label.is_empty() && i > 0 && s.ends_with('.'))
                || (!label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    && !label.starts_with('-'))
        });
        if ok {
            Some(Host::Domain(s.to_owned()))
        } else {
            None
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Host::Ipv4(a),
            IpAddr::V6(a) => Host::Ipv6(a),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// A `sip:` or `sips:` URI (RFC 3261 §19.1.1). User and password stay escaped as
/// received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part, still %-escaped.
    pub user: Option<String>,
    /// The password part, still %-escaped (deprecated by RFC 3261, still parsed).
    pub password: Option<String>,
    /// The host.
    pub host: Host,
    /// The port, when given.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`).
    pub params: Params,
    /// URI headers after `?`, as raw `name=value` pairs.
    pub headers: Vec<(String, String)>,
}

impl SipUri {
    /// `sip:host` with nothing else.
    pub fn new(host: Host) -> Self {
        Self {
            secure: false,
            user: None,
            password: None,
            host,
            port: None,
            params: Params::new(),
            headers: Vec::new(),
        }
    }

    /// Sets the user part (builder style).
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the port (builder style).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Adds a parameter (builder style).
    pub fn with_param(mut self, name: &str, value: Option<&str>) -> Self {
        self.params.set(name, value.map(str::to_owned));
        self
    }

    /// The user part with %-escapes decoded (lossy on invalid UTF-8).
    pub fn user_unescaped(&self) -> Option<String> {
        self.user.as_deref().map(percent_decode)
    }

    /// The `transport` parameter, lower-cased.
    pub fn transport(&self) -> Option<String> {
        self.params
            .value("transport")
            .map(|t| t.to_ascii_lowercase())
    }

    /// Whether the `lr` parameter marks a loose router (RFC 3261 §19.1.1).
    pub fn is_loose_router(&self) -> bool {
        self.params.contains("lr")
    }

    /// URI equivalence per RFC 3261 §19.1.4: user and password compared
    /// case-sensitively after unescaping, host case-insensitively, an absent port is
    /// not equal to an explicit 5060, `user`/`ttl`/`method`/`maddr`/`transport` must
    /// match when either side has them, other parameters only when both have them,
    /// and URI headers must match.
    pub fn equivalent(&self, other: &SipUri) -> bool {
        let host_eq = match (&self.host, &other.host) {
            (Host::Domain(a), Host::Domain(b)) => a
                .trim_end_matches('.')
                .eq_ignore_ascii_case(b.trim_end_matches('.')),
            (a, b) => a == b,
        };
        if self.secure != other.secure
            || self.user_unescaped() != other.user_unescaped()
            || self.password.as_deref().map(percent_decode)
                != other.password.as_deref().map(percent_decode)
            || !host_eq
            || self.port != other.port
        {
            return false;
        }
        let norm = |v: Option<&str>| v.map(|v| percent_decode(v).to_ascii_lowercase());
        for name in ["user", "ttl", "method", "maddr", "transport"] {
            if norm(self.params.value(name)) != norm(other.params.value(name))
                || self.params.contains(name) != other.params.contains(name)
            {
                return false;
            }
        }
        for p in self.params.iter() {
            if let Some(q) = other.params.get(&p.name)
                && norm(p.value.as_deref()) != norm(q.value.as_deref())
            {
                return false;
            }
        }
        let hdrs = |u: &SipUri| {
            let mut v: Vec<(String, String)> = u
                .headers
                .iter()
                .map(|(n, v)| (percent_decode(n).to_ascii_lowercase(), percent_decode(v)))
                .collect();
            v.sort();
            v
        };
        hdrs(self) == hdrs(other)
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            write!(f, "{}{n}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

/// A `tel:` URI (RFC 3966): the number and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    /// The number as received (`+15551234567` or a local number).
    pub number: String,
    /// Parameters such as `phone-context` or `ext`.
    pub params: Params,
}

impl TelUri {
    /// Whether the number is global (starts with `+`).
    pub fn is_global(&self) -> bool {
        self.number.starts_with('+')
    }

    /// The number with visual separators (`-.()`) removed.
    pub fn digits(&self) -> String {
        self.number
            .chars()
            .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
            .collect()
    }
}

impl fmt::Display for TelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tel:{}{}", self.number, self.params)
    }
}

/// Any URI a SIP message may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` / `sips:`.
    Sip(SipUri),
    /// `tel:`.
    Tel(TelUri),
    /// Another absolute URI (`urn:`, `mailto:`, unknown schemes), kept opaque.
    Other {
        /// The scheme, as received.
        scheme: String,
        /// Everything after the `:`.
        rest: String,
    },
}

impl Uri {
    /// Parses a URI that stands alone (Request-URI, or inside `<>`).
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        parse_uri(s)
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The scheme, lower-cased for `sip`, `sips` and `tel`.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other { scheme, .. } => scheme,
        }
    }
}

impl From<SipUri> for Uri {
    fn from(u: SipUri) -> Self {
        Uri::Sip(u)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(t) => t.fmt(f),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

/// Why a URI did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// No `scheme:` prefix.
    #[error("missing or invalid uri scheme")]
    Scheme,
    /// The user or password part holds characters RFC 3261 does not allow there.
    #[error("invalid user part")]
    User,
    /// The host is empty or malformed.
    #[error("invalid host")]
    Host,
    /// The port is not a number in 0..=65535.
    #[error("invalid port")]
    Port,
    /// A parameter is empty or holds invalid characters.
    #[error("invalid uri parameter")]
    Param,
    /// The `?` headers part is malformed.
    #[error("invalid uri headers")]
    Headers,
    /// Whitespace, controls or other characters no URI may contain.
    #[error("invalid character in uri")]
    Char,
}

/// Decodes `%HH` escapes (lossy on invalid UTF-8; malformed escapes stay literal).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = |c: u8| (c as char).to_digit(16);
            if let (Some(a), Some(c)) = (h(b[i + 1]), h(b[i + 2])) {
                out.push((a * 16 + c) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_hdr_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

fn parse_uri(s: &str) -> Result<Uri, UriError> {
    if s.bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>' || b == b'"')
    {
        return Err(UriError::Char);
    }
    let (scheme, rest) = s.split_once(':').ok_or(UriError::Scheme)?;
    if !is_scheme(scheme) {
        return Err(UriError::Scheme);
    }
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        parse_sip(scheme.eq_ignore_ascii_case("sips"), rest).map(Uri::Sip)
    } else if scheme.eq_ignore_ascii_case("tel") {
        parse_tel(rest).map(Uri::Tel)
    } else if rest.is_empty() {
        Err(UriError::Scheme)
    } else {
        Ok(Uri::Other {
            scheme: scheme.to_owned(),
            rest: rest.to_owned(),
        })
    }
}

/// Parses `host[:port]` (IPv6 in brackets).
pub(crate) fn parse_hostport(s: &str) -> Result<(Host, Option<u16>), UriError> {
    let (host_s, port_s) = if s.starts_with('[') {
        let end = s.find(']').ok_or(UriError::Host)?;
        let (h, p) = s.split_at(end + 1);
        match p {
            "" => (h, None),
            _ => (h, Some(p.strip_prefix(':').ok_or(UriError::Port)?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host = Host::parse(host_s).ok_or(UriError::Host)?;
    let port = match port_s {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UriError::Port);
            }
            Some(p.parse::<u16>().map_err(|_| UriError::Port)?)
        }
    };
    Ok((host, port))
}

fn parse_params(s: &str, ok: impl Fn(u8) -> bool + Copy) -> Result<Params, UriError> {
    let mut params = Params::new();
    if s.is_empty() {
        return Ok(params);
    }
    for part in s.split(';') {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (part, None),
        };
        if name.is_empty() || !is_escaped_with(name, ok) {
            return Err(UriError::Param);
        }
        if value.is_some_and(|v| v.is_empty() || !is_escaped_with(v, ok)) {
            return Err(UriError::Param);
        }
        params.0.push(Param::new(name, value.map(str::to_owned)));
    }
    Ok(params)
}

fn parse_sip(secure: bool, rest: &str) -> Result<SipUri, UriError> {
    // '@' can appear neither unescaped in params/headers nor in the host, so the first
    // one ends the userinfo, even when the user part contains ';' or '?' (RFC 4475
    // §3.1.1.2).
    let (userinfo, hostpart) = match rest.find('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => {
            let (u, p) = match ui.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            if u.is_empty() || !is_escaped_with(u, is_user_char) {
                return Err(UriError::User);
            }
            if p.is_some_and(|p| !is_escaped_with(p, is_password_char)) {
                return Err(UriError::User);
            }
            (Some(u.to_owned()), p.map(str::to_owned))
        }
    };
    let (before_hdrs, hdrs) = match hostpart.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (hostpart, None),
    };
    let (hostport, params) = match before_hdrs.split_once(';') {
        Some((a, b)) => (a, b),
        None => (before_hdrs, ""),
    };
    let (host, port) = parse_hostport(hostport)?;
    let params = parse_params(params, is_param_char)?;
    let mut headers = Vec::new();
    if let Some(h) = hdrs {
        for pair in h.split('&') {
            let (n, v) = pair.split_once('=').ok_or(UriError::Headers)?;
            if n.is_empty() || !is_escaped_with(n, is_hdr_char) || !is_escaped_with(v, is_hdr_char)
            {
                return Err(UriError::Headers);
            }
            headers.push((n.to_owned(), v.to_owned()));
        }
    }
    Ok(SipUri {
        secure,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

fn parse_tel(rest: &str) -> Result<TelUri, UriError> {
    let (number, params) = match rest.split_once(';') {
        Some((n, p)) => (n, p),
        None => (rest, ""),
    };
    let digits = number.strip_prefix('+').unwrap_or(number);
    if digits.is_empty()
        || !digits
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'-' | b'.' | b'(' | b')' | b'*' | b'#'))
        || !digits
            .bytes()
            .any(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#')
    {
        return Err(UriError::User);
    }
    let params = parse_params(params, |b| {
        is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$' | b'%')
    })?;
    Ok(TelUri {
        number: number.to_owned(),
        params,
    })
}

/// Parses a generic parameter list `*( SEMI generic-param )` as found after a header
/// value, stopping (without consuming) at a top-level `,` or the end. The cursor sits
/// where the first `;` may appear.
pub(crate) fn parse_generic_params(c: &mut Cursor<'_>) -> Result<Params, ()> {
    let mut params = Params::new();
    loop {
        let save = c.pos();
        c.skip_ws();
        if !c.eat(b';') {
            c.set_pos(save);
            return Ok(params);
        }
        c.skip_ws();
        let name = c.token().ok_or(())?;
        let value = if c.eat_sep(b'=') {
            Some(gen_value(c)?)
        } else {
            None
        };
        params.0.push(Param::new(name, value));
    }
}

/// `gen-value = token / host / quoted-string`.
pub(crate) fn gen_value(c: &mut Cursor<'_>) -> Result<String, ()> {
    match c.peek() {
        Some(b'"') => c.quoted_raw().map(str::to_owned).ok_or(()),
        Some(b'[') => {
            let start = c.pos();
            c.take_while(|b| b != b']');
            if !c.eat(b']') {
                return Err(());
            }
            let raw = c.slice(start, c.pos());
            if Host::parse(raw).is_none() {
                return Err(());
            }
            Ok(raw.to_owned())
        }
        _ => {
            // token / host; ':' admits an unbracketed IPv6 `received` (RFC 3261 §20.42)
            let v = c.take_while(|b| is_token_char(b) || b == b':');
            if v.is_empty() {
                Err(())
            } else {
                Ok(v.to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    /// The equivalent and non-equivalent pairs of RFC 3261 §19.1.4.
    #[test]
    fn rfc3261_19_1_4_uri_comparison_examples() {
        for (a, b) in [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;security=on",
            ),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
        ] {
            assert!(sip(a).equivalent(&sip(b)), "{a} == {b}");
            assert!(sip(b).equivalent(&sip(a)), "{b} == {a}");
        }
        for (a, b) in [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ] {
            assert!(!sip(a).equivalent(&sip(b)), "{a} != {b}");
        }
    }
}
