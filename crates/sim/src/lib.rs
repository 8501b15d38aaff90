//! A simulator of Meta's side of the WhatsApp Business Calling API (work in progress).

pub mod core;
mod driver;
mod error;
mod ids;
pub mod peer;
pub mod scenario;
pub mod sdp;

pub use driver::{
    Batching, DeliveryOutcome, FaultAction, FaultRule, Faults, GraphRecord, SimConfig, SimEvent,
    SimHandle, Simulator, SystemClock, WebhookConfig, WebhookMatch, WebhookRecord, sign,
};
pub use error::{GraphError, SimError};
pub use ids::{IdError, PhoneNumberId, WaCallId, WaId, WabaId, Wamid};
