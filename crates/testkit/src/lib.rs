//! whatsip-testkit (work in progress).
