//! whatsip-media (work in progress).
