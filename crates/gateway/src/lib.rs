//! whatsip gateway: the configuration, the dial plan and the call state machines that tie
//! the WhatsApp leg (Meta Graph API + webhooks) to the PBX leg (SIP trunk).
//!
//! This crate is being built up in layers. What exists now has no IO in its cores:
//!
//! - [`config`]: `Config::load(path)` reads one TOML file into validated types; secrets come
//!   from env vars or files; every error names the file, line, column and key.
//! - [`dialplan`]: ordered rules compiled at load into a [`DialPlan`] whose
//!   [`DialPlan::route`] is a pure function of a [`CallContext`] (time passed in).
//! - [`permission`]: call permissions, request limits and the consent guard for
//!   business-initiated calls ([`permission::PermissionTracker`]).
//! - [`call`]: the sans-IO call state machines, [`call::InboundCall`] (user-initiated,
//!   WhatsApp → PBX) and [`call::OutboundCall`] (business-initiated, PBX → WhatsApp), and
//!   the two mapping functions (PBX final status → Meta action, Meta failure → SIP status).
//!
//! Drive-loop contract of a call core: feed one input with `handle(input, now)` (or
//! `handle_timeout(now)` when `poll_timeout()` has passed), then drain `poll_action()` until
//! it returns `None` and carry the actions out; re-arm one timer at `poll_timeout()`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use whatsip_gateway::call::{InboundAction, InboundCall, InboundInput, GraphAction};
//! use whatsip_gateway::dialplan::{InboundRoute, PbxTarget};
//!
//! let route = InboundRoute {
//!     rule: "support".into(),
//!     closed_hours: false,
//!     primary: PbxTarget { uri: "sip:2000@pbx".into(), headers: vec![], ring_timeout: Duration::from_secs(20) },
//!     fallbacks: vec![],
//! };
//! let t0 = Instant::now();
//! let mut call = InboundCall::new(route);
//! call.handle(InboundInput::WaOffer, t0);
//! assert_eq!(call.poll_action(), Some(InboundAction::StartMedia));
//! call.handle(InboundInput::MediaReady, t0);
//! assert_eq!(call.poll_action(), Some(InboundAction::SendGraph(GraphAction::PreAccept)));
//! ```

pub mod call;
pub mod config;
pub mod demo;
pub mod dialplan;
pub mod ops;
pub mod pbx_standin;
pub mod permission;
pub mod permission_cli;
pub mod runtime;
mod types;

pub use config::{Config, ConfigError};
pub use dialplan::{CallContext, DialPlan, Route};
pub use types::{Direction, E164, E164Error, PhoneNumberId, SipStatus, WaCallId};
