//! whatsip-sip (work in progress).

#[cfg(feature = "rt")]
pub mod transport;
