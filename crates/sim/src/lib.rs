//! whatsip-sim library (work in progress).
