//! tokio drivers (feature `rt`): the webhook HTTP(S) server and the Graph API HTTP client.
//!
//! Both are thin: every decision is made by the core types of this crate.

mod client;
mod clock;
mod server;
mod tls;

pub use client::{GraphClient, GraphClientConfig, GraphReply, GraphSide};
pub use clock::{Clock, SystemClock};
pub use server::{
    ServerError, WebhookServer, WebhookServerConfig, WebhookStats, WebhookStatsSnapshot,
};
pub use tls::{TlsError, TlsIdentity};
