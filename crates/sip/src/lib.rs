//! whatsip-sip: SIP signalling for whatsip (RFC 3261 and friends).
//!
//! # What is here
//!
//! The core of this crate is **sans-IO**: plain structs that take input plus the
//! current time and queue output. They never touch a socket, a clock, a thread, the
//! environment or OS randomness, so they build without tokio
//! (`--no-default-features`) and are tested on a virtual clock.
//!
//! - **Messages** ([`SipMessage`], [`Request`], [`Response`], [`Uri`], [`Headers`] and
//!   typed views such as [`Via`], [`NameAddr`], [`CSeq`]): a parser of the crate's own
//!   (compact forms, folding, IPv6, `tel:`, RFC 4475 torture messages), limits checked
//!   before parsing ([`ParseLimits`]), [`error_response`] for the 400/505/513 to an
//!   unparsable request, [`stream_frame`] for TCP/TLS framing, and builders
//!   ([`Request::response`], [`Request::ack_for`], [`Request::cancel`]).
//! - **Transactions**: [`InviteClientTxn`], [`InviteServerTxn`], [`NonInviteClientTxn`],
//!   [`NonInviteServerTxn`] (RFC 3261 §17, RFC 6026), matched with [`TxnKey`].
//! - **Dialogs**: [`Dialog`] (RFC 3261 §12): route sets, in-dialog requests, 2xx ACK
//!   and 2xx retransmission.
//! - **Session timers**: [`negotiate_uas`], [`negotiate_uac`], [`SessionTimer`]
//!   (RFC 4028).
//! - **Digest authentication**: [`DigestClient`], [`DigestServer`] (RFC 2617/7616).
//!
//! With the default `rt` feature, `transport` and `endpoint` add the tokio drivers
//! (UDP/TCP/TLS sockets and the `Endpoint` the gateway uses).
//!
//! # The drive-loop contract
//!
//! After every `handle_*` call or command, drain `poll_transmit` and `poll_event` until
//! both return `None`, then arm one timer at `poll_timeout()` and call
//! `handle_timeout(now)` when it fires. Read the clock once per wake-up and pass the
//! same `now` to every call of that turn. Drop a core once `is_terminated()`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use whatsip_sip::{
//!     InviteServerTxn, ParseLimits, SipMessage, StatusCode, Tag, TimerConfig,
//! };
//!
//! let raw = b"INVITE sip:bob@192.0.2.2 SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
//! From: <sip:alice@example.com>;tag=1928301774\r\n\
//! To: <sip:bob@example.com>\r\n\
//! Call-ID: a84b4c76e66710@192.0.2.1\r\n\
//! CSeq: 1 INVITE\r\n\
//! Content-Length: 0\r\n\r\n";
//! let SipMessage::Request(invite) = SipMessage::parse(raw, &ParseLimits::default())? else {
//!     unreachable!("a request")
//! };
//!
//! // The driver's clock supplies `now`; here the instants are set by hand.
//! let t0 = Instant::now();
//! let mut txn = InviteServerTxn::new(invite.clone(), false, &TimerConfig::default(), t0);
//! assert_eq!(txn.poll_transmit().map(|t| t.retransmission), Some(false)); // 100 Trying
//!
//! let busy = invite.response(StatusCode::BUSY_HERE, Some(&Tag::new("b1")));
//! txn.send_response(busy.clone(), t0)?;
//! assert!(txn.poll_transmit().is_some()); // the 486
//!
//! // Over UDP, Timer G resends the 486 after T1 = 500 ms ...
//! assert_eq!(txn.poll_timeout(), Some(t0 + Duration::from_millis(500)));
//! txn.handle_timeout(t0 + Duration::from_millis(500));
//! assert!(txn.poll_transmit().is_some_and(|t| t.retransmission));
//!
//! // ... until the ACK arrives; Timer I (T4 = 5 s) then absorbs ACK retransmissions.
//! let t_ack = t0 + Duration::from_millis(700);
//! txn.handle_request(invite.ack_for(&busy), t_ack);
//! assert_eq!(txn.state_name(), "Confirmed");
//! txn.handle_timeout(t_ack + Duration::from_secs(5));
//! assert!(txn.is_terminated());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
