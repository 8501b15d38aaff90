//! whatsip-meta (work in progress).
