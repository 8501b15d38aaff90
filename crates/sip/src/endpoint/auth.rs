//! Digest authentication for the endpoint (RFC 2617, RFC 7616 with RFC 8760 for SIP):
//! MD5 and SHA-256, `qop=auth`.
//!
//! Interim local adapter: the crate's sans-IO digest module was being written in
//! parallel; this keeps the endpoint's hooks (answer 401/407 as a client, challenge as a
//! server) working until then. Nonces are random, expire after
//! [`ServerAuth::nonce_lifetime`], and each nonce's `nc` must grow (replay protection).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use md5::{Digest as _, Md5};
use rand::RngCore;
use sha2::Sha256;

/// Digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// `MD5` (RFC 2617): what most PBXs and SIPp speak.
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
}

impl DigestAlgorithm {
    fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("md5") {
            Some(Self::Md5)
        } else if s.eq_ignore_ascii_case("sha-256") {
            Some(Self::Sha256)
        } else {
            None
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Self::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            Self::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// Credentials a client uses to answer 401/407 challenges.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Only answer challenges from this realm; `None` answers any realm.
    pub realm: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("realm", &self.realm)
            .finish()
    }
}

/// Server-side digest configuration: requests from peers must authenticate.
#[derive(Clone)]
pub struct ServerAuth {
    /// Realm offered in challenges.
    pub realm: String,
    /// The one user name accepted (a trunk has one set of credentials).
    pub username: String,
    /// Its password.
    pub password: String,
    /// Algorithm offered.
    pub algorithm: DigestAlgorithm,
    /// How long a nonce stays valid. Default in [`ServerAuth::new`]: 5 minutes.
    pub nonce_lifetime: Duration,
}

impl ServerAuth {
    /// MD5 challenges with a 5-minute nonce lifetime.
    pub fn new(realm: &str, username: &str, password: &str) -> Self {
        Self {
            realm: realm.to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
            algorithm: DigestAlgorithm::Md5,
            nonce_lifetime: Duration::from_secs(300),
        }
    }
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAuth")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .finish()
    }
}

/// The parameters of a `Digest` challenge or credentials header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DigestParams(Vec<(String, String)>);

impl DigestParams {
    /// Parses `Digest k=v, k="v", ...`; `None` for another scheme.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let value = value.trim_start();
        let (scheme, rest) = value.split_at(value.find(char::is_whitespace)?);
        if !scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let mut out = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                chars.next();
            }
            let mut name = String::new();
            while let Some(c) = chars.peek().copied() {
                if c == '=' || c.is_whitespace() || c == ',' {
                    break;
                }
                name.push(c);
                chars.next();
            }
            if name.is_empty() {
                break;
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() != Some(&'=') {
                out.push((name.to_ascii_lowercase(), String::new()));
                continue;
            }
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut val = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                val.push(n);
                            }
                        }
                        '"' => break,
                        c => val.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.peek().copied() {
                    if c == ',' || c.is_whitespace() {
                        break;
                    }
                    val.push(c);
                    chars.next();
                }
            }
            out.push((name.to_ascii_lowercase(), val));
            if out.len() > 32 {
                return None;
            }
        }
        Some(Self(out))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Builds the `Authorization`/`Proxy-Authorization` value answering `challenge`, or
/// `None` when the challenge is not one we can answer (scheme, algorithm, qop, realm).
pub(crate) fn answer_challenge(
    challenge: &str,
    creds: &Credentials,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> Option<String> {
    let p = DigestParams::parse(challenge)?;
    let realm = p.get("realm")?;
    if creds.realm.as_deref().is_some_and(|r| r != realm) {
        return None;
    }
    let nonce = p.get("nonce")?;
    let algorithm = match p.get("algorithm") {
        None => DigestAlgorithm::Md5,
        Some(a) => DigestAlgorithm::parse(a)?,
    };
    let qop_auth = match p.get("qop") {
        None => false,
        Some(q) => {
            if !q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) {
                return None;
            }
            true
        }
    };
    let ha1 = algorithm.hash(&format!("{}:{realm}:{}", creds.username, creds.password));
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    let nc = "00000001";
    let response = if qop_auth {
        algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
    } else {
        algorithm.hash(&format!("{ha1}:{nonce}:{ha2}"))
    };
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
        creds.username,
        algorithm.as_str()
    );
    if qop_auth {
        v.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
    }
    if let Some(opaque) = p.get("opaque") {
        v.push_str(&format!(", opaque=\"{opaque}\""));
    }
    Some(v)
}

/// Outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Credentials valid and fresh.
    Accept,
    /// Send a 401 with this `WWW-Authenticate` value.
    Challenge(String),
}

/// Issues nonces and verifies digest responses (server side).
#[derive(Debug)]
pub(crate) struct NonceBook {
    config: ServerAuth,
    /// nonce → (issued, highest nc seen)
    nonces: HashMap<String, (Instant, u32)>,
}

/// Most outstanding nonces kept; older ones are forgotten first.
const MAX_NONCES: usize = 4096;

impl NonceBook {
    pub(crate) fn new(config: ServerAuth) -> Self {
        Self {
            config,
            nonces: HashMap::new(),
        }
    }

    /// Checks the `Authorization` header values of a request.
    pub(crate) fn verify(
        &mut self,
        authorization: Option<&str>,
        method: &str,
        rng: &mut impl RngCore,
        now: Instant,
    ) -> Verdict {
        let lifetime = self.config.nonce_lifetime;
        self.nonces
            .retain(|_, (at, _)| now.duration_since(*at) < lifetime);
        let Some(p) = authorization.and_then(DigestParams::parse) else {
            return self.challenge(false, rng, now);
        };
        let stale = p.get("nonce").is_some_and(|n| !self.nonces.contains_key(n));
        match self.check(&p, method) {
            Some(nc) if !stale => {
                let nonce = p.get("nonce").unwrap_or_default().to_owned();
                match self.nonces.get_mut(&nonce) {
                    Some((_, last)) if nc > *last || (nc == 0 && *last == 0) => {
                        *last = nc.max(*last);
                        Verdict::Accept
                    }
                    _ => self.challenge(false, rng, now),
                }
            }
            // Right password, old nonce: ask again with stale=true (RFC 2617 §3.2.1).
            Some(_) => self.challenge(true, rng, now),
            None => self.challenge(false, rng, now),
        }
    }

    /// Returns the `nc` (0 without qop) when the response hash is right.
    fn check(&self, p: &DigestParams, method: &str) -> Option<u32> {
        let c = &self.config;
        if p.get("username")? != c.username || p.get("realm")? != c.realm {
            return None;
        }
        let algorithm = match p.get("algorithm") {
            None => DigestAlgorithm::Md5,
            Some(a) => DigestAlgorithm::parse(a)?,
        };
        if algorithm != c.algorithm {
            return None;
        }
        let nonce = p.get("nonce")?;
        let uri = p.get("uri")?;
        let ha1 = algorithm.hash(&format!("{}:{}:{}", c.username, c.realm, c.password));
        let ha2 = algorithm.hash(&format!("{method}:{uri}"));
        let (expected, nc) = match p.get("qop") {
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc_s = p.get("nc")?;
                let nc = u32::from_str_radix(nc_s, 16).ok()?;
                let cnonce = p.get("cnonce")?;
                (
                    algorithm.hash(&format!("{ha1}:{nonce}:{nc_s}:{cnonce}:auth:{ha2}")),
                    nc,
                )
            }
            Some(_) => return None,
            None => (algorithm.hash(&format!("{ha1}:{nonce}:{ha2}")), 0),
        };
        let got = p.get("response")?;
        // Constant-time comparison is not needed for a hash of a per-nonce value, but
        // costs nothing.
        let same = expected.len() == got.len()
            && expected
                .bytes()
                .zip(got.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()))
                == 0;
        same.then_some(nc)
    }

    fn challenge(&mut self, stale: bool, rng: &mut impl RngCore, now: Instant) -> Verdict {
        let mut raw = [0u8; 16];
        rng.fill_bytes(&mut raw);
        let nonce = hex::encode(raw);
        if self.nonces.len() >= MAX_NONCES
            && let Some(oldest) = self
                .nonces
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            self.nonces.remove(&oldest);
        }
        self.nonces.insert(nonce.clone(), (now, 0));
        let mut v = format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
            self.config.realm,
            self.config.algorithm.as_str()
        );
        if stale {
            v.push_str(", stale=true");
        }
        Verdict::Challenge(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn rfc2617_3_5_example_response() {
        // RFC 2617 §3.5, with the qop=auth example values.
        let challenge = "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
                         nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
                         opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let creds = Credentials {
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
            realm: None,
        };
        let v = answer_challenge(challenge, &creds, "GET", "/dir/index.html", "0a4f113b").unwrap();
        assert!(
            v.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{v}"
        );
        assert!(v.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
    }

    fn book() -> NonceBook {
        NonceBook::new(ServerAuth::new("whatsip", "trunk", "s3cret"))
    }

    #[test]
    fn server_round_trip_md5_and_sha256_and_nc_replay() {
        for alg in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
            let mut b = book();
            b.config.algorithm = alg;
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let t0 = crate::endpoint::SystemClock.now();
            let Verdict::Challenge(ch) = b.verify(None, "INVITE", &mut rng, t0) else {
                panic!("must challenge")
            };
            let creds = Credentials {
                username: "trunk".into(),
                password: "s3cret".into(),
                realm: None,
            };
            let auth = answer_challenge(&ch, &creds, "INVITE", "sip:a@b", "cn").unwrap();
            assert_eq!(
                b.verify(Some(&auth), "INVITE", &mut rng, t0),
                Verdict::Accept
            );
            // Same nc again: a replay, challenged.
            assert!(matches!(
                b.verify(Some(&auth), "INVITE", &mut rng, t0),
                Verdict::Challenge(_)
            ));
            // Wrong password.
            let bad = Credentials {
                password: "nope".into(),
                ..creds.clone()
            };
            let Verdict::Challenge(ch2) = b.verify(None, "INVITE", &mut rng, t0) else {
                panic!()
            };
            let auth = answer_challenge(&ch2, &bad, "INVITE", "sip:a@b", "cn").unwrap();
            assert!(matches!(
                b.verify(Some(&auth), "INVITE", &mut rng, t0),
                Verdict::Challenge(_)
            ));
            // Expired nonce with the right password: stale=true.
            let auth = answer_challenge(&ch2, &creds, "INVITE", "sip:a@b", "cn").unwrap();
            let later = t0 + Duration::from_secs(301);
            match b.verify(Some(&auth), "INVITE", &mut rng, later) {
                Verdict::Challenge(c) => assert!(c.contains("stale=true"), "{c}"),
                Verdict::Accept => panic!("expired nonce accepted"),
            }
        }
    }

    #[test]
    fn client_refuses_foreign_realm_and_unknown_algorithm() {
        let creds = Credentials {
            username: "u".into(),
            password: "p".into(),
            realm: Some("pbx".into()),
        };
        assert!(
            answer_challenge(
                "Digest realm=\"other\", nonce=\"n\"",
                &creds,
                "INVITE",
                "sip:x",
                "c"
            )
            .is_none()
        );
        assert!(
            answer_challenge(
                "Digest realm=\"pbx\", nonce=\"n\", algorithm=SHA-512-256",
                &creds,
                "INVITE",
                "sip:x",
                "c"
            )
            .is_none()
        );
        assert!(answer_challenge("Basic realm=\"pbx\"", &creds, "INVITE", "sip:x", "c").is_none());
        assert!(
            answer_challenge(
                "Digest realm=\"pbx\", nonce=\"n\"",
                &creds,
                "INVITE",
                "sip:x",
                "c"
            )
            .is_some()
        );
    }

    #[test]
    fn params_parser_survives_garbage() {
        for s in [
            "Digest",
            "Digest ,,,",
            "Digest a",
            "Digest a=\"unterminated",
            "Digest =x",
            "Digest a=b,c=\"d\\\"e\"",
        ] {
            let _ = DigestParams::parse(s);
        }
        let p = DigestParams::parse("Digest a=b,c=\"d\\\"e\"").unwrap();
        assert_eq!(p.get("c"), Some("d\"e"));
    }
}
