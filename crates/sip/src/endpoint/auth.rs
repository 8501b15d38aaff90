//! Digest authentication hooks of the endpoint, over the crate's digest core
//! ([`crate::DigestClient`], [`crate::DigestServer`]): configuration types and the
//! two decisions the driver makes (retry a challenged request; challenge a request).

use std::fmt;
use std::time::SystemTime;

use rand::RngCore;

use crate::digest::{Challenge, DigestClient, DigestError, DigestServer, DigestServerConfig};
use crate::message::{Request, Response};

/// Credentials a client uses to answer 401/407 challenges (a trunk's account).
#[derive(Clone)]
pub struct TrunkCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Only answer challenges from this realm; `None` answers any realm.
    pub realm: Option<String>,
}

impl fmt::Debug for TrunkCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrunkCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("realm", &self.realm)
            .finish()
    }
}

/// Server-side digest: requests from peers must authenticate as this one account.
#[derive(Clone)]
pub struct ServerAuth {
    /// Realm, algorithms (default SHA-256 then MD5), nonce lifetime, 401 or 407.
    /// Its `secret` is filled with random bytes at start when left empty.
    pub config: DigestServerConfig,
    /// The user name accepted.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl ServerAuth {
    /// Production defaults (SHA-256 and MD5 offered, 5-minute nonces, 401) for `realm`.
    pub fn new(realm: &str, username: &str, password: &str) -> Self {
        Self {
            config: DigestServerConfig {
                realm: realm.to_owned(),
                ..DigestServerConfig::default()
            },
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAuth")
            .field("realm", &self.config.realm)
            .field("algorithms", &self.config.algorithms)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The client half: one [`DigestClient`] for the endpoint's credentials.
#[derive(Debug)]
pub(crate) struct ClientAuth {
    realm: Option<String>,
    client: DigestClient,
}

impl ClientAuth {
    pub(crate) fn new(creds: &TrunkCredentials) -> Self {
        Self {
            realm: creds.realm.clone(),
            client: DigestClient::new(creds.username.clone(), creds.password.clone()),
        }
    }

    /// Adds credentials answering `challenge` to `request`. `false` when the challenge
    /// is for another realm or none can be answered.
    pub(crate) fn authorize(
        &mut self,
        request: &mut Request,
        challenge: &Response,
        rng: &mut impl RngCore,
    ) -> bool {
        if let Some(realm) = &self.realm {
            let header = if challenge.status.as_u16() == 407 {
                "Proxy-Authenticate"
            } else {
                "WWW-Authenticate"
            };
            let ours = challenge
                .headers
                .get_all(header)
                .filter_map(|v| Challenge::parse(v).ok())
                .any(|c| &c.realm == realm);
            if !ours {
                return false;
            }
        }
        self.client.authorize(request, challenge, rng).is_ok()
    }
}

/// The server half: a [`DigestServer`] and the one account it accepts.
#[derive(Debug)]
pub(crate) struct ServerGate {
    server: DigestServer,
    username: String,
    password: String,
}

impl ServerGate {
    pub(crate) fn new(auth: &ServerAuth, rng: &mut impl RngCore) -> Self {
        let mut config = auth.config.clone();
        if config.secret.is_empty() {
            let mut secret = vec![0u8; 32];
            rng.fill_bytes(&mut secret);
            config.secret = secret;
        }
        Self {
            server: DigestServer::new(config),
            username: auth.username.clone(),
            password: auth.password.clone(),
        }
    }

    /// `None` when `req` carries valid, fresh credentials; else the challenge to send.
    pub(crate) fn check(&mut self, req: &Request, wall: SystemTime) -> Option<Response> {
        let (user, pass) = (self.username.clone(), self.password.clone());
        match self
            .server
            .verify(req, |u| (u == user).then(|| pass.clone()), wall)
        {
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, method = %req.method, "challenging request");
                Some(
                    self.server
                        .challenge(req, None, matches!(e, DigestError::Stale), wall),
                )
            }
        }
    }
}
