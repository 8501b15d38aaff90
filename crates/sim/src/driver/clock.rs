//! The one place that reads the clock (STYLE.md §1).

use std::time::{Instant, SystemTime};

/// Reads monotonic and wall time together. Wall time is derived from the monotonic clock
/// and a base read once, so both advance together, also under tokio's paused test clock.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    base: tokio::time::Instant,
    base_wall: SystemTime,
}

impl SystemClock {
    /// Reads the base instant and wall time.
    #[allow(clippy::disallowed_methods)]
    pub fn new() -> Self {
        Self {
            base: tokio::time::Instant::now(),
            base_wall: SystemTime::now(),
        }
    }

    /// `(now, wall)` for one driver turn.
    #[allow(clippy::disallowed_methods)]
    pub fn now(&self) -> (Instant, SystemTime) {
        let now = tokio::time::Instant::now();
        (
            now.into_std(),
            self.base_wall + now.duration_since(self.base),
        )
    }
}

/// Current tokio instant, for driver deadlines (also under tokio's paused test clock).
#[allow(clippy::disallowed_methods)]
pub(crate) fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}
