//! whatsip-sip: SIP signalling for whatsip.
//!
//! The core of this crate is sans-IO: it parses and prints messages, runs the four
//! RFC 3261 transaction machines and dialogs, and never touches a socket or a clock.

mod dialog;
mod digest;
mod message;
mod session_timer;
mod transaction;

pub use dialog::{
    Dialog, DialogError, DialogEvent, DialogId, DialogState, RouteEntry, no_dialog_response,
};
pub use digest::{
    Challenge, ChallengeKind, Credentials, DigestAlgorithm, DigestClient, DigestError,
    DigestServer, DigestServerConfig, compute_response,
};
pub use message::*;
pub use session_timer::{
    Negotiated, SessionTimer, SessionTimerConfig, SessionTimerEvent, apply_uas_headers,
    negotiate_uac, negotiate_uas, uac_request_headers, uac_retry_after_422,
};
pub use transaction::{
    InviteClientTxn, InviteServerTxn, NonInviteClientTxn, NonInviteServerTxn, Timer, TimerConfig,
    Transmit, TxnError, TxnEvent, TxnKey, cancel_unknown_response,
};

#[cfg(feature = "rt")]
pub mod endpoint;
#[cfg(feature = "rt")]
pub mod transport;
