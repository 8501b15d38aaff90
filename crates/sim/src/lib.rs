//! `whatsip-sim`: a simulator of Meta's side of the WhatsApp Business Calling API, for
//! testing a gateway offline on 127.0.0.1.
//!
//! It serves the Graph API calling endpoints (`/{pnid}/calls`, `/call_permissions`,
//! `/messages`, `/settings`) with Meta's validation and error bodies, delivers signed
//! webhooks in Meta's envelope (with retries and fault injection), and plays scriptable
//! WhatsApp users whose phones are pluggable [`peer::MediaPeer`]s. It builds Meta's JSON
//! itself, independently of `whatsip-meta`, so the two check each other.
//!
//! Layers (see `docs/simulator.md`):
//! - [`core::MetaCore`]: sans-IO model of Meta (call machines of reference §9, permissions,
//!   limits, settings). Takes `now: Instant` and `wall: SystemTime` on every input, queues
//!   [`core::CoreEvent`]s, never touches sockets or clocks.
//! - Drivers (tokio): an engine task owning the core and media peers, an axum server for the
//!   Graph API and the `/_sim` control API, a webhook deliverer. [`Simulator::start`] wires
//!   them and returns a [`SimHandle`], the Rust API tests use.
//!
//! Drive-loop contract of the core: after each `handle_*` or command, drain
//! [`core::MetaCore::poll_event`] until `None`, then arm one timer at
//! [`core::MetaCore::poll_timeout`] and call [`core::MetaCore::handle_timeout`] when due.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use whatsip_sim::core::{CallState, CoreConfig, CoreEvent, MetaCore, UserCall};
//! use whatsip_sim::{PhoneNumberId, WaId};
//!
//! let mut core = MetaCore::new(CoreConfig::default());
//! # #[allow(clippy::disallowed_methods)]
//! let (t0, wall0) = (Instant::now(), SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
//! let user = WaId::parse("4915112345678")?;
//! let pnid = PhoneNumberId::parse("106540352242922")?;
//! let id = core.user_calls(UserCall::new(user, pnid), "v=0\r\n".into(), t0, wall0)?;
//! let Some(CoreEvent::Webhook(connect)) = core.poll_event() else { panic!() };
//! assert_eq!(connect.value["calls"][0]["event"], "connect");
//!
//! // Nobody accepts: Meta's answer timer (45 s by default) ends the call.
//! let due = core.poll_timeout().expect("answer timer armed");
//! assert_eq!(due, t0 + Duration::from_secs(45));
//! core.handle_timeout(due, wall0 + Duration::from_secs(45));
//! assert_eq!(core.call(&id).map(|c| c.state), Some(CallState::Terminated));
//! let terminate = std::iter::from_fn(|| core.poll_event())
//!     .find_map(|e| match e { CoreEvent::Webhook(w) if w.label == "terminate" => Some(w), _ => None })
//!     .expect("terminate webhook");
//! assert_eq!(terminate.value["calls"][0]["status"], "COMPLETED");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With the drivers:
//!
//! ```no_run
//! # async fn demo() -> Result<(), whatsip_sim::SimError> {
//! use std::time::Duration;
//! use whatsip_sim::core::{CallState, UserCall};
//! use whatsip_sim::{SimConfig, Simulator, WaId, WebhookConfig};
//!
//! let mut cfg = SimConfig::default();
//! cfg.webhook = WebhookConfig {
//!     url: Some("http://127.0.0.1:8080/webhook".into()),
//!     app_secret: "app-secret".into(),
//!     ..WebhookConfig::default()
//! };
//! let sim = Simulator::start(cfg).await?;
//! // Point the gateway's Graph base URL at sim.base_url().
//! let pnid = sim.numbers()[0].phone_number_id.clone();
//! let id = sim.user_calls(UserCall::new(WaId::parse("4915112345678")?, pnid)).await?;
//! sim.wait_for_call_state(&id, CallState::Active, Duration::from_secs(10)).await?;
//! assert!(sim.graph_requests().iter().any(|r| r.is_call_action("accept")));
//! sim.user_hangs_up(&id).await?;
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

pub mod core;
mod driver;
mod error;
mod ids;
pub mod peer;
pub mod scenario;
pub mod sdp;
#[cfg(feature = "webrtc-phone")]
pub mod webrtc_peer;

pub use driver::{
    Batching, DeliveryOutcome, FaultAction, FaultRule, Faults, GraphFault, GraphFaultRule,
    GraphRecord, SimConfig, SimEvent, SimHandle, Simulator, SystemClock, VerifyOutcome,
    WebhookConfig, WebhookMatch, WebhookRecord, sign,
};
pub use error::{GraphError, SimError};
pub use ids::{IdError, PhoneNumberId, WaCallId, WaId, WabaId, Wamid};
#[cfg(feature = "webrtc-phone")]
pub use webrtc_peer::{PhoneProbe, PhoneRegistry, WebRtcPeer, WebRtcPeerFactory};
