//! whatsip-gateway library (work in progress).
