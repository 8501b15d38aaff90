//! Meta's Graph error bodies (reference §0, §2.4, §8) and the simulator's own errors.

use serde_json::{Value, json};

use crate::ids::truncate;

/// A Graph API error as Meta returns it: HTTP status, numeric code and a details string.
///
/// Serialised by [`GraphError::to_body`] into
/// `{"error":{"message":..,"type":"OAuthException","code":..,"error_data":{"messaging_product":"whatsapp","details":..},"fbtrace_id":..}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphError {
    /// HTTP status (reference §2.4).
    pub http_status: u16,
    /// Meta's numeric error code (reference §8).
    pub code: u32,
    /// Short message (`error.message`).
    pub message: String,
    /// Specifics (`error.error_data.details`).
    pub details: String,
}

impl GraphError {
    /// Builds an error for `code`, with the HTTP status and message from reference §2.4/§8.
    pub fn new(code: u32, details: impl Into<String>) -> Self {
        let (http_status, message) = code_info(code);
        Self {
            http_status,
            code,
            message: message.to_owned(),
            details: truncate(&details.into(), 1024).to_owned(),
        }
    }

    /// Code 100, "Invalid parameter", with details naming what is wrong.
    pub fn invalid_parameter(details: impl Into<String>) -> Self {
        Self::new(100, details)
    }

    /// The JSON body Meta sends, with the given `fbtrace_id`.
    pub fn to_body(&self, fbtrace_id: &str) -> Value {
        // interop(meta): Graph errors carry `type: OAuthException` for calling codes
        // (reference §10.1 leaves the exact string unconfirmed; this is what Cloud API sends).
        json!({
            "error": {
                "message": format!("(#{}) {}", self.code, self.message),
                "type": "OAuthException",
                "code": self.code,
                "error_data": {
                    "messaging_product": "whatsapp",
                    "details": self.details,
                },
                "fbtrace_id": fbtrace_id,
            }
        })
    }
}

impl std::fmt::Display for GraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "graph error {} (http {}): {}",
            self.code, self.http_status, self.details
        )
    }
}

impl std::error::Error for GraphError {}

/// HTTP status and message per code (reference §2.4, §8).
fn code_info(code: u32) -> (u16, &'static str) {
    match code {
        100 => (400, "Invalid parameter"),
        104 => (400, "An access token is required to request this resource."),
        190 => (
            401,
            "Invalid OAuth access token - Cannot parse access token",
        ),
        613 => (429, "Calls to this api have exceeded the rate limit."),
        131009 => (400, "Parameter value is not valid"),
        131030 => (400, "Recipient phone number not in allowed list"),
        131044 => (400, "Payment issue"),
        131055 => (
            400,
            "Method not allowed. Graph calling APIs are not supported for SIP enabled numbers",
        ),
        138000 => (401, "Calling is not enabled for this phone number"),
        138001 => (400, "Receiver is uncallable"),
        138002 => (429, "Concurrent calls limit reached"),
        138003 => (
            400,
            "Duplicate call: a call is already ongoing with this user",
        ),
        138004 => (500, "Error while connecting the call"),
        138005 => (
            429,
            "Call rate limit reached for this business phone number",
        ),
        138006 => (401, "No approved call permission from the recipient"),
        138007 => (500, "Connect timeout"),
        138009 => (400, "Call permission request limit reached"),
        138012 => (400, "Business initiated connected calls limit reached"),
        138013 => (
            400,
            "Business initiated calling is not available for this phone number",
        ),
        138014 => (400, "Calling is temporarily disabled"),
        138015 => (400, "Calling cannot be enabled for this phone number"),
        138017 => (
            400,
            "Call permission request refused: permanent permission exists",
        ),
        138018 => (400, "Technical prerequisites for calling not met"),
        _ => (400, "Invalid request"),
    }
}

/// An error from the simulator's own API (user actions, startup), not a Meta error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The call id is not known (never existed or was evicted).
    #[error("unknown call {0}")]
    UnknownCall(String),
    /// The action does not fit the call's current state.
    #[error("call {call} is {state}: cannot {action}")]
    WrongState {
        /// Call id.
        call: String,
        /// Current state name.
        state: &'static str,
        /// Attempted action.
        action: &'static str,
    },
    /// The business phone number is not configured in the simulator.
    #[error("unknown business number {0}")]
    UnknownNumber(String),
    /// Meta would refuse the user's call without any webhook (reference §7.3, §4.3, §5.1).
    #[error("call cannot be placed: {0}")]
    CallNotPlaced(&'static str),
    /// An identifier was malformed.
    #[error(transparent)]
    Id(#[from] crate::ids::IdError),
    /// The media peer failed.
    #[error("media peer: {0}")]
    Peer(#[from] crate::peer::PeerError),
    /// A `wait_for_*` gave up.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),
    /// The simulator task is gone (shut down).
    #[error("simulator is not running")]
    Stopped,
    /// Local IO error (binding sockets).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Configuration error.
    #[error("config: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_meta_shape_and_status_per_code() {
        let e = GraphError::new(138006, "no permission");
        assert_eq!(e.http_status, 401);
        let body = e.to_body("AbC");
        assert_eq!(body["error"]["code"], 138006);
        assert_eq!(body["error"]["type"], "OAuthException");
        assert_eq!(body["error"]["error_data"]["details"], "no permission");
        assert_eq!(body["error"]["fbtrace_id"], "AbC");
        assert_eq!(GraphError::new(138002, "").http_status, 429);
        assert_eq!(GraphError::new(138005, "").http_status, 429);
        assert_eq!(GraphError::new(138007, "").http_status, 500);
        assert_eq!(GraphError::new(131055, "").http_status, 400);
    }
}
