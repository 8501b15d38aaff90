//! A simulator of Meta's side of the WhatsApp Business Calling API (work in progress).

pub mod core;
mod error;
mod ids;
pub mod peer;
pub mod sdp;

pub use error::{GraphError, SimError};
pub use ids::{IdError, PhoneNumberId, WaCallId, WaId, WabaId, Wamid};
