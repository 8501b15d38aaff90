//! whatsip-sip (work in progress).
