//! Webhook authentication: the `X-Hub-Signature-256` check and the `GET` subscription
//! handshake (reference §1.1). Both are pure functions.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::event::{EnvelopeError, ParsedWebhook, parse_envelope};
use crate::id::cut;
use crate::secret::{AppSecret, VerifyToken};

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

/// Meta's limit on a webhook payload (reference §1.1): 3 MB.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Why a webhook POST was refused or could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// No `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    MissingSignature,
    /// The header is not `sha256=<64 hex digits>`.
    #[error("malformed X-Hub-Signature-256 header: {reason}")]
    MalformedSignature {
        /// What is wrong.
        reason: &'static str,
    },
    /// The HMAC does not match: wrong app secret, or the body was altered.
    #[error("X-Hub-Signature-256 does not match the body")]
    SignatureMismatch,
    /// The body exceeds the configured limit.
    #[error("webhook body of {len} bytes exceeds the {limit} byte limit")]
    BodyTooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not JSON.
    #[error("webhook body is not json (line {line}, column {column}): {reason}")]
    InvalidJson {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's message.
        reason: String,
    },
    /// The body is JSON but not an object.
    #[error("webhook body is not a json object")]
    NotAnObject,
    /// `entry` is missing or not an array.
    #[error("webhook envelope invalid: {reason}")]
    InvalidEnvelope {
        /// What is wrong.
        reason: String,
    },
}

/// A webhook body whose signature has been checked. The only way to parse a webhook, so no
/// byte of an unauthenticated body reaches the JSON parser.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedWebhook {
    body: Bytes,
}

impl std::fmt::Debug for VerifiedWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedWebhook")
            .field("len", &self.body.len())
            .finish()
    }
}

impl VerifiedWebhook {
    /// Checks `signature` (the raw `X-Hub-Signature-256` header value, `None` when absent)
    /// against HMAC-SHA256 of the exact `body` bytes keyed with the app secret, in constant
    /// time, and checks `body` against [`MAX_WEBHOOK_BODY_BYTES`].
    pub fn from_parts(
        signature: Option<&[u8]>,
        body: impl Into<Bytes>,
        secret: &AppSecret,
    ) -> Result<Self, WebhookError> {
        Self::from_parts_with_limit(signature, body, secret, MAX_WEBHOOK_BODY_BYTES)
    }

    /// As [`Self::from_parts`] with another body limit.
    pub fn from_parts_with_limit(
        signature: Option<&[u8]>,
        body: impl Into<Bytes>,
        secret: &AppSecret,
        max_body_bytes: usize,
    ) -> Result<Self, WebhookError> {
        let body = body.into();
        if body.len() > max_body_bytes {
            return Err(WebhookError::BodyTooLarge {
                len: body.len(),
                limit: max_body_bytes,
            });
        }
        let signature = signature.ok_or(WebhookError::MissingSignature)?;
        let expected = decode_signature(signature)?;
        let computed = sign_bytes(&body, secret);
        if bool::from(computed.ct_eq(&expected)) {
            Ok(Self { body })
        } else {
            Err(WebhookError::SignatureMismatch)
        }
    }

    /// The raw body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Parses the envelope into typed events. Unknown fields, events and change fields, and
    /// malformed single items, are reported in [`ParsedWebhook::notes`]; only a body that is
    /// not a JSON object with an `entry` array is an error.
    pub fn parse(&self) -> Result<ParsedWebhook, WebhookError> {
        parse_envelope(&self.body).map_err(|e| match e {
            EnvelopeError::Json {
                line,
                column,
                reason,
            } => WebhookError::InvalidJson {
                line,
                column,
                reason,
            },
            EnvelopeError::NotAnObject => WebhookError::NotAnObject,
            EnvelopeError::Entry(reason) => WebhookError::InvalidEnvelope { reason },
        })
    }
}

/// The `X-Hub-Signature-256` value Meta sends for `body`: `sha256=<lowercase hex>`. Used by
/// tests and tools that play Meta.
pub fn sign(body: &[u8], secret: &AppSecret) -> String {
    format!("sha256={}", hex::encode(sign_bytes(body, secret)))
}

fn sign_bytes(body: &[u8], secret: &AppSecret) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn decode_signature(header: &[u8]) -> Result<[u8; 32], WebhookError> {
    let header = header.trim_ascii();
    let hex_part = header
        .strip_prefix(b"sha256=")
        .ok_or(WebhookError::MalformedSignature {
            reason: "expected the sha256= prefix",
        })?;
    if hex_part.len() != 64 {
        return Err(WebhookError::MalformedSignature {
            reason: "expected 64 hex digits",
        });
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| WebhookError::MalformedSignature {
        reason: "not hexadecimal",
    })?;
    Ok(out)
}

/// Why a `GET` subscription handshake was refused (answer 403, or 400 for a bad request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// `hub.mode` is not `subscribe`.
    #[error("hub.mode is {0:?}, expected \"subscribe\"")]
    WrongMode(String),
    /// A required parameter is missing.
    #[error("missing query parameter {0}")]
    Missing(&'static str),
    /// `hub.verify_token` does not match.
    #[error("hub.verify_token does not match")]
    TokenMismatch,
    /// `hub.challenge` is longer than 1024 bytes or has characters that cannot be echoed as
    /// plain text.
    #[error("hub.challenge is not a printable token")]
    BadChallenge,
}

impl HandshakeError {
    /// The HTTP status to answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            HandshakeError::TokenMismatch | HandshakeError::WrongMode(_) => 403,
            HandshakeError::Missing(_) | HandshakeError::BadChallenge => 400,
        }
    }
}

/// The verification handshake: given the decoded query parameters, returns the body to
/// answer `200` with (the raw `hub.challenge`), or why to refuse. The token comparison runs
/// in constant time.
pub fn verify_subscription<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    expected: &VerifyToken,
) -> Result<String, HandshakeError> {
    let (mut mode, mut token, mut challenge) = (None, None, None);
    for (k, v) in params {
        match k {
            "hub.mode" => mode = Some(v),
            "hub.verify_token" => token = Some(v),
            "hub.challenge" => challenge = Some(v),
            _ => {}
        }
    }
    let mode = mode.ok_or(HandshakeError::Missing("hub.mode"))?;
    if mode != "subscribe" {
        return Err(HandshakeError::WrongMode(cut(mode, 64).to_owned()));
    }
    let token = token.ok_or(HandshakeError::Missing("hub.verify_token"))?;
    let challenge = challenge.ok_or(HandshakeError::Missing("hub.challenge"))?;
    if !bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())) || expected.is_empty() {
        return Err(HandshakeError::TokenMismatch);
    }
    if challenge.is_empty()
        || challenge.len() > 1024
        || !challenge.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(HandshakeError::BadChallenge);
    }
    Ok(challenge.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> AppSecret {
        AppSecret::new("6f1e3c2d9b8a")
    }

    #[test]
    fn accepts_meta_format_and_known_vector() {
        // HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog"), RFC 4231-style
        // well-known vector.
        let body = b"The quick brown fox jumps over the lazy dog".as_slice();
        let sig = sign(body, &AppSecret::new("key"));
        assert_eq!(
            sig,
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert!(
            VerifiedWebhook::from_parts(
                Some(sig.as_bytes()),
                body.to_vec(),
                &AppSecret::new("key")
            )
            .is_ok()
        );
        let upper = format!("sha256={}", sig[7..].to_uppercase());
        assert!(
            VerifiedWebhook::from_parts(
                Some(upper.as_bytes()),
                body.to_vec(),
                &AppSecret::new("key")
            )
            .is_ok()
        );
    }

    #[test]
    fn rejects_wrong_missing_and_malformed() {
        let body = b"{\"object\":\"whatsapp_business_account\",\"entry\":[]}".to_vec();
        let good = sign(&body, &secret());
        let wrong = sign(&body, &AppSecret::new("other"));
        let cases: Vec<(Option<&[u8]>, WebhookError)> = vec![
            (None, WebhookError::MissingSignature),
            (Some(wrong.as_bytes()), WebhookError::SignatureMismatch),
            (
                Some(&good.as_bytes()[7..]),
                WebhookError::MalformedSignature {
                    reason: "expected the sha256= prefix",
                },
            ),
            (
                Some(b"sha1=abcd"),
                WebhookError::MalformedSignature {
                    reason: "expected the sha256= prefix",
                },
            ),
            (
                Some(b"sha256="),
                WebhookError::MalformedSignature {
                    reason: "expected 64 hex digits",
                },
            ),
            (
                Some(&good.as_bytes()[..70]),
                WebhookError::MalformedSignature {
                    reason: "expected 64 hex digits",
                },
            ),
        ];
        for (sig, want) in cases {
            assert_eq!(
                VerifiedWebhook::from_parts(sig, body.clone(), &secret()),
                Err(want)
            );
        }
        let mut nonhex = good.clone().into_bytes();
        nonhex[10] = b'z';
        assert_eq!(
            VerifiedWebhook::from_parts(Some(&nonhex), body.clone(), &secret()),
            Err(WebhookError::MalformedSignature {
                reason: "not hexadecimal"
            })
        );
        let mut tampered = body.clone();
        tampered[3] ^= 1;
        assert_eq!(
            VerifiedWebhook::from_parts(Some(good.as_bytes()), tampered, &secret()),
            Err(WebhookError::SignatureMismatch)
        );
        assert!(VerifiedWebhook::from_parts(Some(good.as_bytes()), body, &secret()).is_ok());
    }

    #[test]
    fn body_limit_checked_before_anything() {
        let body = vec![b' '; 11];
        assert_eq!(
            VerifiedWebhook::from_parts_with_limit(None, body, &secret(), 10),
            Err(WebhookError::BodyTooLarge { len: 11, limit: 10 })
        );
    }

    #[test]
    fn handshake() {
        let token = VerifyToken::new("tok");
        let ok = [
            ("hub.mode", "subscribe"),
            ("hub.challenge", "1158863600"),
            ("hub.verify_token", "tok"),
        ];
        assert_eq!(verify_subscription(ok, &token).unwrap(), "1158863600");
        let bad = [
            ("hub.mode", "subscribe"),
            ("hub.challenge", "1"),
            ("hub.verify_token", "tok2"),
        ];
        assert_eq!(
            verify_subscription(bad, &token),
            Err(HandshakeError::TokenMismatch)
        );
        assert_eq!(
            verify_subscription(bad, &token).unwrap_err().http_status(),
            403
        );
        let mode = [
            ("hub.mode", "unsubscribe"),
            ("hub.challenge", "1"),
            ("hub.verify_token", "tok"),
        ];
        assert!(matches!(
            verify_subscription(mode, &token),
            Err(HandshakeError::WrongMode(_))
        ));
        let missing = [("hub.mode", "subscribe"), ("hub.verify_token", "tok")];
        assert_eq!(
            verify_subscription(missing, &token),
            Err(HandshakeError::Missing("hub.challenge"))
        );
        let xss = [
            ("hub.mode", "subscribe"),
            ("hub.challenge", "<script> x"),
            ("hub.verify_token", "tok"),
        ];
        assert_eq!(
            verify_subscription(xss, &token),
            Err(HandshakeError::BadChallenge)
        );
        let empty = VerifyToken::new("");
        let e = [
            ("hub.mode", "subscribe"),
            ("hub.challenge", "1"),
            ("hub.verify_token", ""),
        ];
        assert_eq!(
            verify_subscription(e, &empty),
            Err(HandshakeError::TokenMismatch)
        );
    }
}
