//! Secrets: the Graph access token, the app secret and the webhook verify token.
//!
//! Each is a newtype whose `Debug` and `Display` print `<redacted>`, so a secret that ends up
//! in a log line, a panic message or an error by mistake does not leak (STYLE.md §6).

use std::fmt;

macro_rules! secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret read from the environment or a file (the gateway does the reading).
            pub fn new(secret: impl Into<String>) -> Self {
                Self(secret.into())
            }

            /// The secret itself; call only where it is used (HMAC key, header), never to log.
            pub fn expose(&self) -> &str {
                &self.0
            }

            /// Whether the secret is empty, which the gateway's config check rejects.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }
    };
}

secret!(
    /// Graph API access token (system-user or user token with `whatsapp_business_messaging`,
    /// plus `whatsapp_business_management` for the settings endpoints), sent as
    /// `Authorization: Bearer <token>`.
    AccessToken
);
secret!(
    /// The Meta app secret: the HMAC-SHA256 key of `X-Hub-Signature-256`.
    AppSecret
);
secret!(
    /// The verify token configured next to the callback URL in the Meta app dashboard; the
    /// `GET` handshake echoes `hub.challenge` only when `hub.verify_token` equals it.
    VerifyToken
);
secret!(
    /// The SIP digest password Meta generates per (business number, app), returned by
    /// `GET /{id}/settings?include_sip_credentials=true` (reference §5.2).
    SipPassword
);

impl serde::Serialize for SipPassword {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SipPassword {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let t = AccessToken::new("EAAG-super-secret");
        let s = AppSecret::new("app-secret-123");
        let v = VerifyToken::new("verify-me");
        for printed in [
            format!("{t:?} {t}"),
            format!("{s:?} {s}"),
            format!("{v:?} {v}"),
            format!("{:?}", Some(&t)),
        ] {
            assert!(!printed.contains("secret"), "{printed}");
            assert!(!printed.contains("verify-me"), "{printed}");
            assert!(printed.contains("<redacted>"), "{printed}");
        }
        assert_eq!(t.expose(), "EAAG-super-secret");
    }
}
