//! Meta's error codes (reference §8, §2.4) and the Graph client's error type.

use std::fmt;

/// A Meta error code from the calling error table (reference §8), with its meaning and the
/// HTTP status Meta answers it with. Codes Meta does not document become `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetaErrorCode {
    /// 100: invalid parameter, including SDP validation (details in `error_data`).
    InvalidParameter,
    /// 613: permission-state API rate limit.
    PermissionApiRateLimit,
    /// 131009: interactive `voice_call` not supported (sender country).
    VoiceCallButtonUnsupported,
    /// 131026: recipient client too old (permission request / call button); message error webhook.
    RecipientClientTooOld,
    /// 131030: recipient not in the allowed list (public test numbers).
    RecipientNotAllowed,
    /// 131044: no valid payment method (user-initiated calls); error webhook.
    NoPaymentMethod,
    /// 131055: Graph calling API used on a SIP-enabled number.
    SipEnabledNumber,
    /// 138000: calling not enabled on the number.
    CallingNotEnabled,
    /// 138001: receiver uncallable (not on WhatsApp, new Terms not accepted, unsupported client).
    ReceiverUncallable,
    /// 138002: concurrent-calls limit (1000 per business number).
    ConcurrentCallLimit,
    /// 138003: duplicate call; one is already ongoing with this user.
    DuplicateCall,
    /// 138004: error while connecting the call.
    ConnectionError,
    /// 138005: call rate limit for the business number.
    CallRateLimit,
    /// 138006: no approved call permission.
    NoCallPermission,
    /// 138007: connect timeout, SDP offer/answer not applied in time.
    ConnectTimeout,
    /// 138009: permission-request limit hit for the pair.
    PermissionRequestLimit,
    /// 138011: mentioned in an FAQ about testing; meaning undocumented.
    Undocumented138011,
    /// 138012: business-initiated connected-call limit (100 per 24 h per pair).
    ConnectedCallLimit,
    /// 138013: business-initiated calling not available for this number (country); some
    /// older builds also used it for the permission-API rate limit.
    BusinessInitiatedUnavailable,
    /// 138014: calling temporarily disabled (low quality).
    CallingTemporarilyDisabled,
    /// 138015: calling cannot be enabled (messaging limit below 2000).
    CallingCannotBeEnabled,
    /// 138017: permission request refused, a permanent permission already exists.
    PermanentPermissionExists,
    /// 138018: technical prerequisites not met (no `calls` subscription and no SIP).
    PrerequisitesNotMet,
    /// 138019: client failed to set up the call (terminate webhook).
    ClientSetupFailed,
    /// 138020: client could not reach the relay (terminate webhook).
    RelayUnreachable,
    /// 138021: media receive timeout, the client got no media (terminate webhook).
    MediaReceiveTimeout,
    /// 138022: media transmit timeout (terminate webhook).
    MediaTransmitTimeout,
    /// 138023: accepted, but terminated with no media signals (terminate webhook).
    NoMediaSignals,
    /// Any other code.
    Unknown(i64),
}

/// Every documented code, for tables and tests.
pub const DOCUMENTED_CODES: [i64; 28] = [
    100, 613, 131009, 131026, 131030, 131044, 131055, 138000, 138001, 138002, 138003, 138004,
    138005, 138006, 138007, 138009, 138011, 138012, 138013, 138014, 138015, 138017, 138018, 138019,
    138020, 138021, 138022, 138023,
];

impl MetaErrorCode {
    /// Maps Meta's numeric code.
    pub fn from_code(code: i64) -> Self {
        use MetaErrorCode::*;
        match code {
            100 => InvalidParameter,
            613 => PermissionApiRateLimit,
            131009 => VoiceCallButtonUnsupported,
            131026 => RecipientClientTooOld,
            131030 => RecipientNotAllowed,
            131044 => NoPaymentMethod,
            131055 => SipEnabledNumber,
            138000 => CallingNotEnabled,
            138001 => ReceiverUncallable,
            138002 => ConcurrentCallLimit,
            138003 => DuplicateCall,
            138004 => ConnectionError,
            138005 => CallRateLimit,
            138006 => NoCallPermission,
            138007 => ConnectTimeout,
            138009 => PermissionRequestLimit,
            138011 => Undocumented138011,
            138012 => ConnectedCallLimit,
            138013 => BusinessInitiatedUnavailable,
            138014 => CallingTemporarilyDisabled,
            138015 => CallingCannotBeEnabled,
            138017 => PermanentPermissionExists,
            138018 => PrerequisitesNotMet,
            138019 => ClientSetupFailed,
            138020 => RelayUnreachable,
            138021 => MediaReceiveTimeout,
            138022 => MediaTransmitTimeout,
            138023 => NoMediaSignals,
            other => Unknown(other),
        }
    }

    /// Meta's numeric code.
    pub fn code(self) -> i64 {
        use MetaErrorCode::*;
        match self {
            InvalidParameter => 100,
            PermissionApiRateLimit => 613,
            VoiceCallButtonUnsupported => 131009,
            RecipientClientTooOld => 131026,
            RecipientNotAllowed => 131030,
            NoPaymentMethod => 131044,
            SipEnabledNumber => 131055,
            CallingNotEnabled => 138000,
            ReceiverUncallable => 138001,
            ConcurrentCallLimit => 138002,
            DuplicateCall => 138003,
            ConnectionError => 138004,
            CallRateLimit => 138005,
            NoCallPermission => 138006,
            ConnectTimeout => 138007,
            PermissionRequestLimit => 138009,
            Undocumented138011 => 138011,
            ConnectedCallLimit => 138012,
            BusinessInitiatedUnavailable => 138013,
            CallingTemporarilyDisabled => 138014,
            CallingCannotBeEnabled => 138015,
            PermanentPermissionExists => 138017,
            PrerequisitesNotMet => 138018,
            ClientSetupFailed => 138019,
            RelayUnreachable => 138020,
            MediaReceiveTimeout => 138021,
            MediaTransmitTimeout => 138022,
            NoMediaSignals => 138023,
            Unknown(code) => code,
        }
    }

    /// The meaning from Meta's error reference.
    pub fn meaning(self) -> &'static str {
        use MetaErrorCode::*;
        match self {
            InvalidParameter => "invalid parameter, including sdp validation",
            PermissionApiRateLimit => "permission-state api rate limit",
            VoiceCallButtonUnsupported => {
                "interactive voice_call not supported for the sender country"
            }
            RecipientClientTooOld => "recipient client too old",
            RecipientNotAllowed => "recipient not in the allowed list",
            NoPaymentMethod => "no valid payment method",
            SipEnabledNumber => "graph calling api used on a sip-enabled number",
            CallingNotEnabled => "calling not enabled on the number",
            ReceiverUncallable => "receiver uncallable",
            ConcurrentCallLimit => "concurrent-calls limit reached",
            DuplicateCall => "a call with this user is already ongoing",
            ConnectionError => "error while connecting the call",
            CallRateLimit => "call rate limit for the business number",
            NoCallPermission => "no approved call permission",
            ConnectTimeout => "connect timeout: sdp offer/answer not applied in time",
            PermissionRequestLimit => "permission-request limit hit for the pair",
            Undocumented138011 => "undocumented (mentioned in a testing faq)",
            ConnectedCallLimit => "business-initiated connected-call limit reached",
            BusinessInitiatedUnavailable => {
                "business-initiated calling not available for this number"
            }
            CallingTemporarilyDisabled => "calling temporarily disabled (low quality)",
            CallingCannotBeEnabled => "calling cannot be enabled (messaging limit below 2000)",
            PermanentPermissionExists => "a permanent permission already exists",
            PrerequisitesNotMet => {
                "technical prerequisites not met (no calls subscription, no sip)"
            }
            ClientSetupFailed => "client failed to set up the call",
            RelayUnreachable => "client could not reach the relay",
            MediaReceiveTimeout => "media receive timeout",
            MediaTransmitTimeout => "media transmit timeout",
            NoMediaSignals => "accepted, but terminated with no media signals",
            Unknown(_) => "unknown error code",
        }
    }

    /// The HTTP status Meta documents for the code, if it is an API error (reference §2.4);
    /// `None` for codes that only appear in webhooks or are undocumented.
    pub fn http_status(self) -> Option<u16> {
        use MetaErrorCode::*;
        match self {
            InvalidParameter
            | VoiceCallButtonUnsupported
            | RecipientNotAllowed
            | NoPaymentMethod
            | SipEnabledNumber
            | ReceiverUncallable
            | DuplicateCall
            | PermissionRequestLimit
            | ConnectedCallLimit
            | BusinessInitiatedUnavailable
            | CallingTemporarilyDisabled
            | CallingCannotBeEnabled
            | PermanentPermissionExists
            | PrerequisitesNotMet
            | ClientSetupFailed
            | RelayUnreachable
            | MediaReceiveTimeout
            | MediaTransmitTimeout
            | NoMediaSignals => Some(400),
            CallingNotEnabled | NoCallPermission => Some(401),
            PermissionApiRateLimit | ConcurrentCallLimit | CallRateLimit => Some(429),
            ConnectionError | ConnectTimeout => Some(500),
            RecipientClientTooOld | Undocumented138011 | Unknown(_) => None,
        }
    }

    /// Whether the condition may clear by itself (rate limits, concurrency, Meta-side
    /// connection trouble), so trying again later can succeed. Says nothing about whether an
    /// immediate automatic retry is safe: see [`GraphError::is_retry_safe`].
    pub fn is_transient(self) -> bool {
        use MetaErrorCode::*;
        matches!(
            self,
            PermissionApiRateLimit
                | ConcurrentCallLimit
                | CallRateLimit
                | ConnectionError
                | ConnectTimeout
        )
    }
}

impl fmt::Display for MetaErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.meaning())
    }
}

/// The body of Meta's standard Graph error
/// (`{"error":{"message","type","code","error_subcode","error_data":{"details"},"fbtrace_id"}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaError {
    /// HTTP status of the reply.
    pub http_status: u16,
    /// The typed code.
    pub code: MetaErrorCode,
    /// `error_subcode`, when present.
    pub subcode: Option<i64>,
    /// `message`, cut to 512 bytes.
    pub message: String,
    /// `type` (e.g. `OAuthException`).
    pub error_type: Option<String>,
    /// `error_data.details`, cut to 512 bytes (SDP validation problems are here).
    pub details: Option<String>,
    /// `fbtrace_id`, worth quoting to Meta support.
    pub fbtrace_id: Option<String>,
}

/// What went wrong talking to the Graph API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// Meta answered with its error body.
    #[error("graph api error {}: {} (http {}): {}", .0.code.code(), .0.code.meaning(), .0.http_status, .0.message)]
    Meta(Box<MetaError>),
    /// A non-2xx reply without a parseable Meta error body.
    #[error("graph api answered http {http_status} without an error body: {body:?}")]
    UnexpectedStatus {
        /// HTTP status.
        http_status: u16,
        /// Start of the body, cut to 64 bytes.
        body: String,
    },
    /// A 2xx reply whose body is not what the endpoint returns.
    #[error("graph api reply not understood: {reason}")]
    InvalidReply {
        /// What is missing or malformed.
        reason: String,
    },
    /// The request could not be built (e.g. a bad base URL).
    #[error("invalid graph request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// The connection failed before the request was sent (refused, DNS, TLS handshake).
    #[error("could not reach the graph api: {reason}")]
    Connect {
        /// Transport error text.
        reason: String,
    },
    /// No reply within the timeout; the request may have been executed.
    #[error("graph api did not answer within {timeout_ms} ms")]
    Timeout {
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The connection broke after the request may have been sent.
    #[error("graph api transport error: {reason}")]
    Transport {
        /// Transport error text.
        reason: String,
    },
}

impl GraphError {
    /// The Meta error code, if Meta answered with one.
    pub fn meta_code(&self) -> Option<MetaErrorCode> {
        match self {
            GraphError::Meta(e) => Some(e.code),
            _ => None,
        }
    }

    /// The HTTP status, if a reply arrived.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            GraphError::Meta(e) => Some(e.http_status),
            GraphError::UnexpectedStatus { http_status, .. } => Some(*http_status),
            _ => None,
        }
    }

    /// Whether sending the same request again cannot cause a second side effect and may
    /// succeed. `idempotent` says whether the request itself is (GETs are; `connect`,
    /// `accept`, `pre_accept`, `reject`, `terminate` and message sends are not).
    ///
    /// - The request never left (connection refused, DNS, TLS): always safe.
    /// - Timeout or broken connection after sending: only if idempotent (Meta may have
    ///   acted; a second `connect` could ring the user twice).
    /// - Meta's transient errors (rate limits, 5xx): only if idempotent.
    /// - Any other Meta error is final.
    pub fn is_retry_safe(&self, idempotent: bool) -> bool {
        match self {
            GraphError::Connect { .. } => true,
            GraphError::Timeout { .. } | GraphError::Transport { .. } => idempotent,
            GraphError::Meta(e) => {
                idempotent
                    && (e.code.is_transient() || e.http_status >= 500 || e.http_status == 429)
            }
            GraphError::UnexpectedStatus { http_status, .. } => {
                idempotent && (*http_status >= 500 || *http_status == 429)
            }
            GraphError::InvalidReply { .. } | GraphError::InvalidRequest { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_round_trips_and_is_known() {
        for code in DOCUMENTED_CODES {
            let typed = MetaErrorCode::from_code(code);
            assert!(!matches!(typed, MetaErrorCode::Unknown(_)), "{code}");
            assert_eq!(typed.code(), code);
            assert_ne!(typed.meaning(), "unknown error code");
        }
        assert_eq!(
            MetaErrorCode::from_code(138008),
            MetaErrorCode::Unknown(138008)
        );
        assert_eq!(MetaErrorCode::Unknown(42).code(), 42);
    }
}
