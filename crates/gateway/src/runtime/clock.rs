//! The only place the gateway runtime reads the clocks (STYLE.md §1).

use std::time::{Instant, SystemTime};

/// Monotonic and wall time for the runtime's drivers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SystemClock;

impl SystemClock {
    /// Monotonic now (tokio's clock, so paused-time tests see virtual time).
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    /// Wall-clock now.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn wall() -> SystemTime {
        SystemTime::now()
    }

    /// Wall-clock now as a `jiff` timestamp (dial plan schedules).
    pub(crate) fn timestamp() -> jiff::Timestamp {
        jiff::Timestamp::try_from(Self::wall()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}
