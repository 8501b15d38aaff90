//! A fixed-depth jitter buffer keyed by RTP sequence number.
//!
//! It takes (sequence number, arrival `now`) and is pulled once per tick; it never reads a
//! clock. Each pull says what happened:
//!
//! ```text
//!            depth >= target or oldest waited >= target_wait
//! Buffering ───────────────────────────────────────────────▶ Playing
//!     ▲                                                         │ next present → Frame
//!     │  more than max_concealed pulls with nothing buffered    │ next absent  → Missing
//!     └─────────────────────────────────────────────────────────┘
//! ```
//!
//! Packets older than the play-out point are late and dropped; duplicates are dropped; when
//! more than `max_depth` frames pile up (a sender burst, clock drift) the oldest are dropped
//! down to the target depth so latency cannot grow without bound. A smaller standing queue
//! (a burst after a stall leaves frames waiting that never drain, since one is pulled per
//! tick) is worn down too: when more than the target has stayed buffered for `shrink_after`
//! pulls in a row, the oldest frame is dropped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::rtp::SeqNo;

/// Jitter buffer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitterConfig {
    /// Frames buffered before play-out starts (2 × 20 ms by default).
    pub target_depth: usize,
    /// Start play-out anyway once the first frame has waited this long.
    pub target_wait: Duration,
    /// Above this many frames the oldest are dropped.
    pub max_depth: usize,
    /// Consecutive pulls concealed with nothing buffered before going back to buffering
    /// (the sender stopped: hold, DTX, end of a talk spurt).
    pub max_concealed: usize,
    /// Consecutive pulls that leave more than `target_depth` frames buffered before the
    /// oldest is dropped (one frame less of standing delay); 0 never drops.
    pub shrink_after: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            target_depth: 2,
            target_wait: Duration::from_millis(40),
            max_depth: 12,
            max_concealed: 5,
            shrink_after: 10,
        }
    }
}

/// What one pull produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pull<T> {
    /// The next frame in sequence.
    Frame(T),
    /// The next frame is missing: conceal it (PLC, or FEC from [`JitterBuffer::peek_next`]).
    Missing,
    /// Nothing to play: not started yet, or the sender stopped.
    Buffering,
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for play-out.
    Accepted,
    /// Already stored or already played: dropped.
    Duplicate,
    /// Arrived after its play-out time: dropped.
    Late,
}

/// The jitter buffer of one incoming stream.
#[derive(Debug, Clone)]
pub struct JitterBuffer<T> {
    config: JitterConfig,
    frames: BTreeMap<u64, T>,
    highest: Option<u64>,
    next: Option<u64>,
    first_arrival: Option<Instant>,
    concealed_run: usize,
    /// Pulls in a row that left more than the target buffered.
    standing_run: usize,
    dropped_overflow: u64,
}

impl<T> JitterBuffer<T> {
    /// An empty buffer.
    #[must_use]
    pub fn new(config: JitterConfig) -> Self {
        Self {
            config,
            frames: BTreeMap::new(),
            highest: None,
            next: None,
            first_arrival: None,
            concealed_run: 0,
            standing_run: 0,
            dropped_overflow: 0,
        }
    }

    /// Stores one packet's frame.
    pub fn push(&mut self, seq: SeqNo, frame: T, now: Instant) -> PushOutcome {
        let ext = match self.highest {
            None => u64::from(seq.0) + (1 << 32),
            Some(h) => {
                let d = i64::from(seq.diff(SeqNo(h as u16)));
                (h as i64 + d).max(0) as u64
            }
        };
        if self.highest.is_some_and(|h| ext.abs_diff(h) > 3000) {
            // a jump this large is a restarted sender, not loss: start over
            self.reset();
            return self.push(seq, frame, now);
        }
        if self.next.is_some_and(|n| ext < n) {
            return PushOutcome::Late;
        }
        if self.frames.contains_key(&ext) {
            return PushOutcome::Duplicate;
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        if self.frames.is_empty() && self.next.is_none() {
            self.first_arrival = Some(now);
        }
        self.frames.insert(ext, frame);
        PushOutcome::Accepted
    }

    /// Takes what plays out at this tick.
    pub fn pull(&mut self, now: Instant) -> Pull<T> {
        let next = match self.next {
            Some(n) => n,
            None => {
                let waited = self
                    .first_arrival
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.config.target_wait);
                let Some((&first, _)) = self.frames.first_key_value() else {
                    return Pull::Buffering;
                };
                if self.frames.len() < self.config.target_depth && !waited {
                    return Pull::Buffering;
                }
                first
            }
        };
        let mut next = next;
        if self.frames.len() > self.config.max_depth {
            while self.frames.len() > self.config.target_depth {
                self.frames.pop_first();
                self.dropped_overflow += 1;
            }
        }
        if let Some((&first, _)) = self.frames.first_key_value()
            && (first > next + self.config.max_depth as u64 || first < next)
        {
            next = first;
        }
        if let Some(frame) = self.frames.remove(&next) {
            self.next = Some(next + 1);
            self.concealed_run = 0;
            self.wear_down_standing_queue();
            return Pull::Frame(frame);
        }
        if self.frames.is_empty() {
            self.concealed_run += 1;
            if self.concealed_run > self.config.max_concealed {
                self.next = None;
                self.first_arrival = None;
                return Pull::Buffering;
            }
        }
        self.next = Some(next + 1);
        Pull::Missing
    }

    /// Drops the oldest buffered frame once more than the target has stayed buffered for
    /// `shrink_after` pulls in a row (see the module docs).
    fn wear_down_standing_queue(&mut self) {
        if self.config.shrink_after == 0 || self.frames.len() <= self.config.target_depth {
            self.standing_run = 0;
            return;
        }
        self.standing_run += 1;
        if self.standing_run >= self.config.shrink_after {
            self.standing_run = 0;
            if let Some((oldest, _)) = self.frames.pop_first() {
                self.dropped_overflow += 1;
                self.next = Some(oldest + 1);
            }
        }
    }

    /// The frame that will play next, if buffered: after a [`Pull::Missing`] this is the
    /// packet following the lost one, whose Opus in-band FEC recovers the loss.
    #[must_use]
    pub fn peek_next(&self) -> Option<&T> {
        self.next.and_then(|n| self.frames.get(&n))
    }

    /// Frames currently buffered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is buffered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames dropped to bound latency.
    #[must_use]
    pub fn dropped_overflow(&self) -> u64 {
        self.dropped_overflow
    }

    /// Forgets everything (new SSRC).
    pub fn reset(&mut self) {
        self.frames.clear();
        self.highest = None;
        self.next = None;
        self.first_arrival = None;
        self.concealed_run = 0;
        self.standing_run = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> JitterConfig {
        JitterConfig::default()
    }

    #[test]
    fn buffers_then_plays_in_order_and_conceals_a_loss() {
        let t0 = crate::test_epoch();
        let mut jb = JitterBuffer::new(cfg());
        assert_eq!(jb.push(SeqNo(65_535), 1, t0), PushOutcome::Accepted);
        assert_eq!(jb.pull(t0), Pull::Buffering);
        jb.push(SeqNo(1), 3, t0); // 0 is lost, across the wrap
        assert_eq!(jb.pull(t0), Pull::Frame(1));
        assert_eq!(jb.pull(t0), Pull::Missing);
        assert_eq!(jb.peek_next(), Some(&3));
        assert_eq!(jb.pull(t0), Pull::Frame(3));
        assert_eq!(jb.push(SeqNo(0), 2, t0), PushOutcome::Late);
        jb.push(SeqNo(2), 4, t0);
        assert_eq!(jb.push(SeqNo(2), 4, t0), PushOutcome::Duplicate);
        assert_eq!(jb.pull(t0), Pull::Frame(4));
        // sender stops: conceal max_concealed frames, then buffer
        for _ in 0..5 {
            assert_eq!(jb.pull(t0), Pull::Missing);
        }
        assert_eq!(jb.pull(t0), Pull::Buffering);
        // a single packet starts after target_wait
        jb.push(SeqNo(500), 9, t0);
        assert_eq!(jb.pull(t0 + Duration::from_millis(10)), Pull::Buffering);
        assert_eq!(jb.pull(t0 + Duration::from_millis(40)), Pull::Frame(9));
    }

    #[test]
    fn overflow_trims_to_target_depth() {
        let t0 = crate::test_epoch();
        let mut jb = JitterBuffer::new(cfg());
        for i in 0..20u16 {
            jb.push(SeqNo(i), i, t0);
        }
        assert_eq!(jb.pull(t0), Pull::Frame(18));
        assert_eq!(jb.dropped_overflow(), 18);
    }

    #[test]
    fn a_standing_queue_after_a_burst_is_worn_down_to_the_target() {
        let t0 = crate::test_epoch();
        let mut jb = JitterBuffer::new(JitterConfig {
            target_depth: 0,
            target_wait: Duration::ZERO,
            ..cfg()
        });
        let tick = |i: u64| t0 + Duration::from_millis(20 * i);
        let mut seq = 0u16;
        let mut played = Vec::new();
        // steady: one frame in, one out
        for i in 0..10 {
            jb.push(SeqNo(seq), seq, tick(i));
            seq += 1;
            if let Pull::Frame(f) = jb.pull(tick(i)) {
                played.push(f);
            }
        }
        assert_eq!(jb.len(), 0);
        // the sender stalls 160 ms (conceal, then back to buffering), then its eight held
        // frames arrive together: after the first plays, seven stand in the buffer
        for i in 10..18 {
            assert_ne!(jb.pull(tick(i)), Pull::Frame(0));
        }
        for _ in 0..8 {
            jb.push(SeqNo(seq), seq, tick(18));
            seq += 1;
        }
        let mut depth_after = Vec::new();
        for i in 18..200 {
            if i > 18 {
                jb.push(SeqNo(seq), seq, tick(i));
                seq += 1;
            }
            if let Pull::Frame(f) = jb.pull(tick(i)) {
                played.push(f);
            }
            depth_after.push(jb.len());
        }
        // worn down one frame per 10 pulls, then back at the target for good
        assert_eq!(depth_after[0], 7, "{depth_after:?}");
        assert_eq!(jb.dropped_overflow(), 7, "{depth_after:?}");
        assert!(depth_after[80..].iter().all(|d| *d == 0), "{depth_after:?}");
        assert!(played.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn jitter_within_the_target_drops_nothing() {
        let t0 = crate::test_epoch();
        let mut jb = JitterBuffer::new(cfg());
        // packets alternate early and late by up to a frame around a 2-frame target
        for i in 0..500u64 {
            let now = t0 + Duration::from_millis(20 * i);
            if i % 2 == 0 {
                jb.push(SeqNo(i as u16), i, now);
            } else {
                jb.push(SeqNo(i as u16), i, now);
                jb.push(SeqNo(i as u16 + 1), i + 1, now);
            }
            let _ = jb.pull(now);
        }
        assert_eq!(jb.dropped_overflow(), 0);
    }

    proptest! {
        /// Whatever order packets arrive in (a window of reordering, duplicates, loss), the
        /// frames played out are strictly increasing and each is played at most once.
        #[test]
        fn output_is_in_order_and_never_repeats(
            start in any::<u16>(),
            ops in proptest::collection::vec((0u16..6, any::<bool>(), any::<bool>()), 1..300),
        ) {
            let t0 = crate::test_epoch();
            let mut jb = JitterBuffer::new(cfg());
            let mut out: Vec<u64> = Vec::new();
            for (i, (jitter, dup, drop)) in ops.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(20 * i as u64);
                let n = i as u64 + u64::from(jitter);
                if !drop {
                    let seq = SeqNo(start.wrapping_add(n as u16));
                    jb.push(seq, n, now);
                    if dup { jb.push(seq, n, now); }
                }
                if let Pull::Frame(f) = jb.pull(now) { out.push(f); }
            }
            for w in out.windows(2) {
                prop_assert!(w[0] < w[1], "{:?}", out);
            }
        }
    }
}
