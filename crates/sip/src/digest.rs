//! HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760; RFC 3261 §22),
//! MD5 and SHA-256 with `qop=auth`, sans-IO.
//!
//! - **Client** ([`DigestClient`]): answers a 401/407 challenge from the PBX with an
//!   `Authorization` / `Proxy-Authorization` value. The `nc` counter grows per nonce
//!   and the `cnonce` comes from the RNG handed in.
//! - **Server** ([`DigestServer`]): issues challenges whose nonce is
//!   `hex(timestamp) "." hex(counter) "." hex(HMAC-SHA256(secret, …))`, unique per
//!   challenge (two calls challenged in the same second get different nonces, so a
//!   client restarting `nc` at 1 is not mistaken for a replay) and verifiable without
//!   keeping state per challenge; verifies answers, reports an expired nonce as `stale`
//!   (the client retries without asking the user), and refuses a replayed or
//!   non-increasing `nc` for a nonce (replay protection).
//!
//! Wall-clock time (`SystemTime`) is passed in; nothing here reads a clock.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::message::{HeaderName, Request, Response, StatusCode, Tag};

/// The digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// `MD5` (RFC 2617): what most PBXs and SIPp speak.
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
}

impl DigestAlgorithm {
    /// The token used in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(DigestAlgorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(DigestAlgorithm::Sha256)
        } else {
            None
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            DigestAlgorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            DigestAlgorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The response carries no usable challenge.
    #[error("no digest challenge in the response")]
    NoChallenge,
    /// The challenge or credentials are malformed.
    #[error("malformed digest header: {0}")]
    Malformed(String),
    /// An algorithm we do not implement (`MD5-sess`, …).
    #[error("unsupported digest algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// The challenge offers no `qop` we accept (`auth`), or the answer has none.
    #[error("qop=auth required")]
    QopRequired,
    /// The request carries no credentials.
    #[error("no credentials")]
    NoCredentials,
    /// Realm, username or digest-uri do not match.
    #[error("credentials do not match {0}")]
    Mismatch(&'static str),
    /// The nonce was not issued by us.
    #[error("nonce not issued here")]
    BadNonce,
    /// The nonce expired: challenge again with `stale=true`.
    #[error("nonce expired")]
    Stale,
    /// `nc` did not grow: a replay.
    #[error("nonce count replayed")]
    Replay,
    /// The response hash is wrong (wrong password).
    #[error("wrong response digest")]
    WrongDigest,
}

/// A parsed `Digest` challenge (`WWW-Authenticate` / `Proxy-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back.
    pub opaque: Option<String>,
    /// `algorithm` (MD5 when absent).
    pub algorithm: DigestAlgorithm,
    /// The `qop` options offered.
    pub qop: Vec<String>,
    /// `stale=true`: retry with the same credentials and the new nonce.
    pub stale: bool,
}

impl Challenge {
    /// Parses a `Digest …` header value.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let params = parse_auth_params(value)?;
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let algorithm = match get("algorithm") {
            None => DigestAlgorithm::Md5,
            Some(a) => DigestAlgorithm::parse(&a).ok_or(DigestError::UnsupportedAlgorithm(a))?,
        };
        Ok(Challenge {
            realm: get("realm").ok_or_else(|| DigestError::Malformed("no realm".into()))?,
            nonce: get("nonce").ok_or_else(|| DigestError::Malformed("no nonce".into()))?,
            opaque: get("opaque"),
            algorithm,
            qop: get("qop")
                .map(|q| {
                    q.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}",
            self.realm, self.nonce, self.algorithm
        )?;
        if !self.qop.is_empty() {
            write!(f, ", qop=\"{}\"", self.qop.join(","))?;
        }
        if let Some(o) = &self.opaque {
            write!(f, ", opaque=\"{o}\"")?;
        }
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

/// Parsed `Digest` credentials (`Authorization` / `Proxy-Authorization`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `uri` (the digest-uri: the Request-URI).
    pub uri: String,
    /// `response`, lower-case hex.
    pub response: String,
    /// `algorithm`.
    pub algorithm: DigestAlgorithm,
    /// `cnonce`.
    pub cnonce: Option<String>,
    /// `opaque`.
    pub opaque: Option<String>,
    /// `qop` chosen (`auth`).
    pub qop: Option<String>,
    /// `nc`.
    pub nc: Option<u32>,
}

impl Credentials {
    /// Parses a `Digest …` credentials value.
    pub fn parse(value: &str) -> Result<Credentials, DigestError> {
        let params = parse_auth_params(value)?;
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let need =
            |k: &'static str| get(k).ok_or_else(|| DigestError::Malformed(format!("no {k}")));
        let algorithm = match get("algorithm") {
            None => DigestAlgorithm::Md5,
            Some(a) => DigestAlgorithm::parse(&a).ok_or(DigestError::UnsupportedAlgorithm(a))?,
        };
        let nc = match get("nc") {
            None => None,
            Some(n) => Some(
                u32::from_str_radix(&n, 16).map_err(|_| DigestError::Malformed("bad nc".into()))?,
            ),
        };
        Ok(Credentials {
            username: need("username")?,
            realm: need("realm")?,
            nonce: need("nonce")?,
            uri: need("uri")?,
            response: need("response")?.to_ascii_lowercase(),
            algorithm,
            cnonce: get("cnonce"),
            opaque: get("opaque"),
            qop: get("qop"),
            nc,
        })
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
            self.username, self.realm, self.nonce, self.uri, self.response, self.algorithm
        )?;
        if let Some(c) = &self.cnonce {
            write!(f, ", cnonce=\"{c}\"")?;
        }
        if let Some(o) = &self.opaque {
            write!(f, ", opaque=\"{o}\"")?;
        }
        if let Some(q) = &self.qop {
            write!(f, ", qop={q}")?;
        }
        if let Some(nc) = self.nc {
            write!(f, ", nc={nc:08x}")?;
        }
        Ok(())
    }
}

/// The request-digest of RFC 2617 §3.2.2.1 / RFC 7616 §3.4.1 (`qop=auth` or none).
#[allow(clippy::too_many_arguments)]
pub fn compute_response(
    algorithm: DigestAlgorithm,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop_auth: Option<(u32, &str)>,
) -> String {
    let ha1 = algorithm.hash(&format!("{username}:{realm}:{password}"));
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    match qop_auth {
        Some((nc, cnonce)) => {
            algorithm.hash(&format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}"))
        }
        None => algorithm.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// The client side: answers challenges with one set of credentials.
#[derive(Debug, Clone)]
pub struct DigestClient {
    username: String,
    password: String,
    nc: HashMap<String, u32>,
}

impl DigestClient {
    /// A client for `username` / `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            nc: HashMap::new(),
        }
    }

    /// Credentials answering `challenge` for a request with `method` and digest-uri
    /// `uri`. `nc` grows on every use of the same nonce; the cnonce is 16 random bytes
    /// from `rng`. Uses `qop=auth` when offered, RFC 2069 style otherwise.
    pub fn answer(
        &mut self,
        challenge: &Challenge,
        method: &str,
        uri: &str,
        rng: &mut (impl RngCore + ?Sized),
    ) -> Credentials {
        let use_qop = challenge.qop.iter().any(|q| q.eq_ignore_ascii_case("auth"));
        let (nc, cnonce) = if use_qop {
            let nc = self.nc.entry(challenge.nonce.clone()).or_insert(0);
            *nc += 1;
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            (Some(*nc), Some(hex::encode(b)))
        } else {
            (None, None)
        };
        if self.nc.len() > 64 {
            let keep = challenge.nonce.clone();
            self.nc.retain(|k, _| *k == keep);
        }
        let response = compute_response(
            challenge.algorithm,
            &self.username,
            &challenge.realm,
            &self.password,
            method,
            uri,
            &challenge.nonce,
            nc.zip(cnonce.as_deref()),
        );
        Credentials {
            username: self.username.clone(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.to_owned(),
            response,
            algorithm: challenge.algorithm,
            cnonce,
            opaque: challenge.opaque.clone(),
            qop: use_qop.then(|| "auth".to_owned()),
            nc,
        }
    }

    /// Adds the `Authorization` (401) or `Proxy-Authorization` (407) answering
    /// `challenge_response` to `request`, picking the strongest challenge we support
    /// (SHA-256 before MD5, RFC 8760 §2.4). The caller still gives the retried request
    /// a new branch and the next CSeq (RFC 3261 §22.2).
    pub fn authorize(
        &mut self,
        request: &mut Request,
        challenge_response: &Response,
        rng: &mut (impl RngCore + ?Sized),
    ) -> Result<(), DigestError> {
        let (challenge_hdr, answer_hdr) = match challenge_response.status.as_u16() {
            407 => ("Proxy-Authenticate", HeaderName::PROXY_AUTHORIZATION),
            _ => ("WWW-Authenticate", HeaderName::AUTHORIZATION),
        };
        let mut best: Option<Challenge> = None;
        for v in challenge_response.headers.get_all(challenge_hdr) {
            if let Ok(c) = Challenge::parse(v) {
                let better = match &best {
                    None => true,
                    Some(b) => {
                        b.algorithm == DigestAlgorithm::Md5
                            && c.algorithm == DigestAlgorithm::Sha256
                    }
                };
                if better {
                    best = Some(c);
                }
            }
        }
        let challenge = best.ok_or(DigestError::NoChallenge)?;
        let uri = request.uri.to_string();
        let creds = self.answer(&challenge, request.method.as_str(), &uri, rng);
        request.headers.remove(answer_hdr.as_str());
        request.headers.push(answer_hdr, creds.to_string());
        Ok(())
    }
}

impl crate::message::Headers {
    /// Digest challenges in `WWW-Authenticate` (or, with `proxy`, in
    /// `Proxy-Authenticate`), skipping other schemes and malformed ones.
    pub fn digest_challenges(&self, proxy: bool) -> Vec<Challenge> {
        let name = if proxy {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        self.get_all(name)
            .filter_map(|v| Challenge::parse(v).ok())
            .collect()
    }

    /// Digest credentials in `Authorization` (or, with `proxy`, in
    /// `Proxy-Authorization`) for `realm`.
    pub fn digest_credentials(&self, proxy: bool, realm: &str) -> Option<Credentials> {
        let name = if proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        self.get_all(name)
            .filter_map(|v| Credentials::parse(v).ok())
            .find(|c| c.realm == realm)
    }
}

/// Which challenge a [`DigestServer`] issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// 401 with `WWW-Authenticate`, answered in `Authorization` (a UAS).
    Www,
    /// 407 with `Proxy-Authenticate`, answered in `Proxy-Authorization`.
    Proxy,
}

/// Server-side digest configuration. `Default` is the production value except
/// `realm` and `secret`, which the gateway sets.
#[derive(Debug, Clone)]
pub struct DigestServerConfig {
    /// The realm announced.
    pub realm: String,
    /// The HMAC key for nonces (random per process is fine).
    pub secret: Vec<u8>,
    /// How long a nonce stays valid (default 5 min).
    pub nonce_lifetime: Duration,
    /// Algorithms offered, strongest first (default SHA-256 then MD5).
    pub algorithms: Vec<DigestAlgorithm>,
    /// 401 or 407.
    pub kind: ChallengeKind,
}

impl Default for DigestServerConfig {
    fn default() -> Self {
        Self {
            realm: "whatsip".into(),
            secret: Vec::new(),
            nonce_lifetime: Duration::from_secs(300),
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            kind: ChallengeKind::Www,
        }
    }
}

/// The server side: challenges requests and verifies answers.
#[derive(Debug)]
pub struct DigestServer {
    cfg: DigestServerConfig,
    /// Highest `nc` accepted per nonce, with the nonce's timestamp for pruning.
    seen: HashMap<String, (u64, u32)>,
    /// Nonces issued so far: makes every nonce unique within the process (the random
    /// secret makes them unique across restarts).
    issued: u64,
}

const MAX_TRACKED_NONCES: usize = 10_000;

impl DigestServer {
    /// A server with `cfg`.
    pub fn new(cfg: DigestServerConfig) -> Self {
        Self {
            cfg,
            seen: HashMap::new(),
            issued: 0,
        }
    }

    /// A fresh nonce for wall time `now`, never issued before by this server.
    pub fn nonce(&mut self, now: SystemTime) -> String {
        let ts = unix_secs(now);
        self.issued = self.issued.wrapping_add(1);
        let id = format!("{ts:x}.{:x}", self.issued);
        let mac = self.nonce_mac(&id);
        format!("{id}.{mac}")
    }

    fn nonce_mac(&self, id: &str) -> String {
        // HMAC accepts keys of any length, so new_from_slice cannot fail here.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.cfg.secret) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(format!("{id}:{}", self.cfg.realm).as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The 401/407 challenging `req` (one challenge per configured algorithm), with
    /// `stale=true` when the previous nonce merely expired.
    pub fn challenge(
        &mut self,
        req: &Request,
        to_tag: Option<&Tag>,
        stale: bool,
        now: SystemTime,
    ) -> Response {
        let (status, header) = match self.cfg.kind {
            ChallengeKind::Www => (StatusCode::UNAUTHORIZED, HeaderName::WWW_AUTHENTICATE),
            ChallengeKind::Proxy => (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                HeaderName::PROXY_AUTHENTICATE,
            ),
        };
        let mut resp = req.response(status, to_tag);
        let nonce = self.nonce(now);
        for alg in &self.cfg.algorithms {
            let c = Challenge {
                realm: self.cfg.realm.clone(),
                nonce: nonce.clone(),
                opaque: None,
                algorithm: *alg,
                qop: vec!["auth".into()],
                stale,
            };
            resp.headers.push(header.clone(), c.to_string());
        }
        resp
    }

    /// Verifies the credentials in `req`. `password_for` returns the password of a
    /// username (or `None`). Returns the authenticated username. On
    /// [`DigestError::Stale`] re-challenge with `stale=true`; on any other error
    /// re-challenge without it (or answer 403 after repeated failures).
    pub fn verify(
        &mut self,
        req: &Request,
        password_for: impl Fn(&str) -> Option<String>,
        now: SystemTime,
    ) -> Result<String, DigestError> {
        let header = match self.cfg.kind {
            ChallengeKind::Www => "Authorization",
            ChallengeKind::Proxy => "Proxy-Authorization",
        };
        let creds = req
            .headers
            .get_all(header)
            .filter_map(|v| Credentials::parse(v).ok())
            .find(|c| c.realm == self.cfg.realm)
            .ok_or(DigestError::NoCredentials)?;
        if !self.cfg.algorithms.contains(&creds.algorithm) {
            return Err(DigestError::UnsupportedAlgorithm(
                creds.algorithm.to_string(),
            ));
        }
        if creds.uri != req.uri.to_string() {
            return Err(DigestError::Mismatch("uri"));
        }
        let (id, mac) = creds.nonce.rsplit_once('.').ok_or(DigestError::BadNonce)?;
        let ts_hex = id.split('.').next().unwrap_or("");
        let ts = u64::from_str_radix(ts_hex, 16).map_err(|_| DigestError::BadNonce)?;
        let expected_mac = self.nonce_mac(id);
        if expected_mac.is_empty() || !bool::from(mac.as_bytes().ct_eq(expected_mac.as_bytes())) {
            return Err(DigestError::BadNonce);
        }
        let (Some(nc), Some(cnonce), Some(qop)) =
            (creds.nc, creds.cnonce.as_deref(), creds.qop.as_deref())
        else {
            return Err(DigestError::QopRequired);
        };
        if !qop.eq_ignore_ascii_case("auth") {
            return Err(DigestError::QopRequired);
        }
        let password = password_for(&creds.username).ok_or(DigestError::Mismatch("username"))?;
        let expected = compute_response(
            creds.algorithm,
            &creds.username,
            &creds.realm,
            &password,
            req.method.as_str(),
            &creds.uri,
            &creds.nonce,
            Some((nc, cnonce)),
        );
        if !bool::from(expected.as_bytes().ct_eq(creds.response.as_bytes())) {
            return Err(DigestError::WrongDigest);
        }
        let now_s = unix_secs(now);
        if now_s.saturating_sub(ts) > self.cfg.nonce_lifetime.as_secs() {
            return Err(DigestError::Stale);
        }
        // Replay protection: nc must grow for a nonce (RFC 7616 §3.4.5).
        if let Some((_, last)) = self.seen.get(&creds.nonce)
            && nc <= *last
        {
            return Err(DigestError::Replay);
        }
        if self.seen.len() >= MAX_TRACKED_NONCES {
            let lifetime = self.cfg.nonce_lifetime.as_secs();
            self.seen
                .retain(|_, (t, _)| now_s.saturating_sub(*t) <= lifetime);
        }
        if self.seen.len() < MAX_TRACKED_NONCES {
            self.seen.insert(creds.nonce.clone(), (ts, nc));
        } else {
            // Too many live nonces to track: refuse rather than allow replays.
            return Err(DigestError::Stale);
        }
        Ok(creds.username)
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Parses `Digest k=v, k="v", …` into (name, unquoted value) pairs.
fn parse_auth_params(value: &str) -> Result<Vec<(String, String)>, DigestError> {
    let v = value.trim_start();
    let rest = match v.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("Digest") => rest,
        _ => return Err(DigestError::Malformed("not a Digest header".into())),
    };
    let b = rest.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let name = rest.get(start..i).unwrap_or("").to_owned();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            return Err(DigestError::Malformed(format!(
                "parameter {name} has no value"
            )));
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut s = Vec::new();
            loop {
                match b.get(i) {
                    None => return Err(DigestError::Malformed("unterminated quote".into())),
                    Some(b'\\') => {
                        if let Some(c) = b.get(i + 1) {
                            s.push(*c);
                        }
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        s.push(*c);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&s).into_owned()
        } else {
            let s = i;
            while i < b.len() && b[i] != b',' && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            rest.get(s..i).unwrap_or("").to_owned()
        };
        if name.is_empty() {
            return Err(DigestError::Malformed("empty parameter name".into()));
        }
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::message::{ParseLimits, SipMessage};

    #[test]
    fn rfc2617_section_3_5_worked_example() {
        let r = compute_response(
            DigestAlgorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some((1, "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_section_3_9_1_sha256_and_md5_examples() {
        let args = |alg| {
            compute_response(
                alg,
                "Mufasa",
                "http-auth@example.org",
                "Circle of Life",
                "GET",
                "/dir/index.html",
                "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                Some((1, "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")),
            )
        };
        assert_eq!(
            args(DigestAlgorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert_eq!(
            args(DigestAlgorithm::Md5),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn challenge_and_credentials_parse_rfc2617_headers() {
        let c = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert_eq!(c.qop, vec!["auth", "auth-int"]);
        assert_eq!(c.algorithm, DigestAlgorithm::Md5);
        let cr = Credentials::parse(
            r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert_eq!(cr.nc, Some(1));
        assert_eq!(Credentials::parse(&cr.to_string()).unwrap(), cr);
        assert!(Challenge::parse("Basic realm=\"x\"").is_err());
        assert!(Challenge::parse("Digest realm=\"x\", nonce=\"n\", algorithm=MD5-sess").is_err());
    }

    fn invite() -> Request {
        let raw = "INVITE sip:+15551234567@pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKauth1\r\n\
From: <sip:trunk@192.0.2.1>;tag=f1\r\n\
To: <sip:+15551234567@pbx.example.com>\r\n\
Call-ID: auth-1\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";
        match SipMessage::parse(raw.as_bytes(), &ParseLimits::default()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        }
    }

    fn server(kind: ChallengeKind) -> DigestServer {
        DigestServer::new(DigestServerConfig {
            realm: "pbx.example.com".into(),
            secret: b"test-secret".to_vec(),
            kind,
            ..DigestServerConfig::default()
        })
    }

    fn pw(u: &str) -> Option<String> {
        (u == "trunk").then(|| "s3cret".to_owned())
    }

    #[test]
    fn client_answers_server_challenge_and_nc_increments() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut srv = server(ChallengeKind::Www);
        let req = invite();
        let challenge = srv.challenge(&req, Some(&Tag::new("t")), false, t0);
        assert_eq!(challenge.status.as_u16(), 401);
        assert_eq!(challenge.headers.count("WWW-Authenticate"), 2);
        let offered = challenge.headers.digest_challenges(false);
        assert_eq!(
            offered.iter().map(|c| c.algorithm).collect::<Vec<_>>(),
            vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
        );
        assert!(srv.verify(&req, pw, t0).is_err(), "no credentials yet");

        let mut client = DigestClient::new("trunk", "s3cret");
        let mut retry = req.clone();
        client.authorize(&mut retry, &challenge, &mut rng).unwrap();
        let creds = Credentials::parse(retry.headers.get("Authorization").unwrap()).unwrap();
        assert_eq!(creds.algorithm, DigestAlgorithm::Sha256, "strongest first");
        assert_eq!(creds.nc, Some(1));
        assert_eq!(
            srv.verify(&retry, pw, t0 + Duration::from_secs(1)).unwrap(),
            "trunk"
        );

        // replaying the same nc is refused
        assert_eq!(
            srv.verify(&retry, pw, t0 + Duration::from_secs(2)),
            Err(DigestError::Replay)
        );
        // the next request on the same nonce carries nc=2 and passes
        let mut next = req.clone();
        client.authorize(&mut next, &challenge, &mut rng).unwrap();
        let c2 = Credentials::parse(next.headers.get("Authorization").unwrap()).unwrap();
        assert_eq!(c2.nc, Some(2));
        assert_ne!(c2.cnonce, creds.cnonce);
        assert!(srv.verify(&next, pw, t0 + Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn expired_nonce_is_stale_and_wrong_password_is_refused() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut srv = server(ChallengeKind::Proxy);
        let req = invite();
        let challenge = srv.challenge(&req, None, false, t0);
        assert_eq!(challenge.status.as_u16(), 407);
        let mut retry = req.clone();
        DigestClient::new("trunk", "s3cret")
            .authorize(&mut retry, &challenge, &mut rng)
            .unwrap();
        assert!(retry.headers.contains("Proxy-Authorization"));
        assert_eq!(
            srv.verify(&retry, pw, t0 + Duration::from_secs(301)),
            Err(DigestError::Stale)
        );
        let stale = srv.challenge(&req, None, true, t0 + Duration::from_secs(301));
        assert!(
            Challenge::parse(stale.headers.get("Proxy-Authenticate").unwrap())
                .unwrap()
                .stale
        );

        let mut bad = req.clone();
        DigestClient::new("trunk", "wrong")
            .authorize(&mut bad, &challenge, &mut rng)
            .unwrap();
        assert_eq!(srv.verify(&bad, pw, t0), Err(DigestError::WrongDigest));
    }

    #[test]
    fn two_challenges_in_the_same_second_get_different_nonces() {
        // SIPp restarts nc at 1 for every call: with a repeated nonce its second call
        // would be refused as a replay.
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut srv = server(ChallengeKind::Www);
        let req = invite();
        let c1 = srv.challenge(&req, None, false, t0);
        let c2 = srv.challenge(&req, None, false, t0);
        let n1 = c1.headers.digest_challenges(false)[0].nonce.clone();
        let n2 = c2.headers.digest_challenges(false)[0].nonce.clone();
        assert_ne!(n1, n2);
        for c in [&c1, &c2] {
            let mut retry = req.clone();
            // a fresh client per call, as SIPp does: nc starts at 1 each time
            DigestClient::new("trunk", "s3cret")
                .authorize(&mut retry, c, &mut rng)
                .unwrap();
            assert_eq!(srv.verify(&retry, pw, t0).unwrap(), "trunk");
        }
    }

    #[test]
    fn forged_nonce_is_refused() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut srv = server(ChallengeKind::Www);
        let mut req = invite();
        let forged = Challenge {
            realm: "pbx.example.com".into(),
            nonce: "6b49d200.1.00000000000000000000000000000000".into(),
            opaque: None,
            algorithm: DigestAlgorithm::Md5,
            qop: vec!["auth".into()],
            stale: false,
        };
        let creds = DigestClient::new("trunk", "s3cret").answer(
            &forged,
            "INVITE",
            &req.uri.to_string(),
            &mut ChaCha8Rng::seed_from_u64(2),
        );
        req.headers.push("Authorization", creds.to_string());
        assert_eq!(srv.verify(&req, pw, t0), Err(DigestError::BadNonce));
    }
}
