//! The one place that reads the system clock (STYLE.md §1).

use std::time::{Instant, SystemTime};

/// Time source of the drivers; tests inject their own.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall-clock now (webhook freshness).
    fn wall(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned clock read
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[allow(clippy::disallowed_methods)] // the one sanctioned clock read
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}
