//! Process-wide counters of the PBX media tasks, for the gateway's metrics: sessions in
//! progress by PBX codec, and the media watchdog's interventions. Plain atomics, so this
//! crate stays free of any metrics library; the gateway copies a [`MediaCountersSnapshot`]
//! into its registry when it is scraped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::codec::Codec;

/// Session kinds, indexed by [`SessionKind::index`].
const KINDS: [&str; 4] = ["PCMU", "PCMA", "G722", "opus_passthrough"];

/// Counters shared by every PBX media task of a process (one `Arc` for all calls).
#[derive(Debug, Default)]
pub struct MediaCounters {
    sessions: [AtomicU64; KINDS.len()],
    comfort_noise: AtomicU64,
    media_timeouts: AtomicU64,
}

/// A copy of [`MediaCounters`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaCountersSnapshot {
    /// Media sessions running now, by PBX codec label (`PCMU`, `PCMA`, `G722`, or
    /// `opus_passthrough` when Opus passes through untranscoded); every label is listed.
    pub sessions: Vec<(&'static str, u64)>,
    /// PBX silences of at least 1 s that comfort noise bridged toward WhatsApp (what keeps
    /// Meta's no-media timer from ending the call).
    pub comfort_noise: u64,
    /// Media timeouts raised (a leg silent for `RelayConfig::media_timeout`; the gateway
    /// ends such calls).
    pub media_timeouts: u64,
}

impl MediaCounters {
    /// A fresh set, to share between media tasks.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The current values.
    #[must_use]
    pub fn snapshot(&self) -> MediaCountersSnapshot {
        MediaCountersSnapshot {
            sessions: KINDS
                .iter()
                .zip(&self.sessions)
                .map(|(k, v)| (*k, v.load(Ordering::Relaxed)))
                .collect(),
            comfort_noise: self.comfort_noise.load(Ordering::Relaxed),
            media_timeouts: self.media_timeouts.load(Ordering::Relaxed),
        }
    }

    pub(super) fn add_watchdog(&self, comfort_noise: u64, media_timeouts: u64) {
        if comfort_noise > 0 {
            self.comfort_noise
                .fetch_add(comfort_noise, Ordering::Relaxed);
        }
        if media_timeouts > 0 {
            self.media_timeouts
                .fetch_add(media_timeouts, Ordering::Relaxed);
        }
    }
}

/// Counts one running media session for as long as it lives (the task holds it, so an
/// aborted or panicking task still gives its session back).
#[derive(Debug)]
pub(super) struct SessionGuard {
    counters: Arc<MediaCounters>,
    kind: usize,
}

impl SessionGuard {
    pub(super) fn start(counters: Arc<MediaCounters>, codec: Codec) -> Self {
        let kind = match codec {
            Codec::Pcmu => 0,
            Codec::Pcma => 1,
            Codec::G722 => 2,
            Codec::Opus => 3,
        };
        if let Some(c) = counters.sessions.get(kind) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Self { counters, kind }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(c) = self.counters.sessions.get(self.kind) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Follows one relay's watchdog counts and forwards what is new.
#[derive(Debug, Default)]
pub(super) struct WatchdogSeen {
    comfort_noise: u64,
    media_timeouts: u64,
}

impl WatchdogSeen {
    pub(super) fn update(&mut self, counters: &MediaCounters, comfort_noise: u64, timeouts: u64) {
        counters.add_watchdog(
            comfort_noise.saturating_sub(self.comfort_noise),
            timeouts.saturating_sub(self.media_timeouts),
        );
        self.comfort_noise = self.comfort_noise.max(comfort_noise);
        self.media_timeouts = self.media_timeouts.max(timeouts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(c: &MediaCounters, kind: &str) -> u64 {
        c.snapshot()
            .sessions
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(u64::MAX, |(_, v)| *v)
    }

    #[test]
    fn sessions_count_while_their_guard_lives() {
        let c = MediaCounters::new();
        let a = SessionGuard::start(c.clone(), Codec::Pcma);
        let b = SessionGuard::start(c.clone(), Codec::Opus);
        let d = SessionGuard::start(c.clone(), Codec::Pcma);
        assert_eq!(sessions(&c, "PCMA"), 2);
        assert_eq!(sessions(&c, "opus_passthrough"), 1);
        assert_eq!(sessions(&c, "PCMU"), 0);
        drop((a, b));
        assert_eq!(sessions(&c, "PCMA"), 1);
        assert_eq!(sessions(&c, "opus_passthrough"), 0);
        drop(d);
        assert_eq!(sessions(&c, "PCMA"), 0);
    }

    #[test]
    fn watchdog_forwards_only_new_counts() {
        let c = MediaCounters::new();
        let mut seen = WatchdogSeen::default();
        seen.update(&c, 1, 0);
        seen.update(&c, 1, 0);
        seen.update(&c, 2, 1);
        let mut other = WatchdogSeen::default();
        other.update(&c, 1, 0);
        let s = c.snapshot();
        assert_eq!((s.comfort_noise, s.media_timeouts), (3, 1));
    }
}
