//! One call's media path through the gateway, seen from outside the cores: where packets are
//! dropped between the two sockets, and how long the gateway holds each packet.
//!
//! A call's audio crosses several tasks (the WhatsApp socket worker, the call task, the PBX
//! media task) over bounded channels. Each hand-over that can drop a packet under load counts
//! into the call's [`MediaPath`], so a load run can attribute every lost packet to a place:
//!
//! ```text
//!  WA socket ─▶ worker ─(event channel)─▶ call task ─(command channel)─▶ PBX task ─▶ PBX socket
//!             WaEventQueueFull          WaToPbxQueueFull       relay discards  PbxSendFailed
//!  WA socket ◀─ worker ◀─(command channel)─ call task ◀─(wa_out channel)─ PBX task ◀─ PBX socket
//!  WaSocketSendFailed  WaSendQueueFull                PbxToWaQueueFull      PbxRxRejected
//!  WaSendRejected
//! ```
//!
//! Added latency is the time from a datagram's receipt on one leg to the send of the packet
//! it became on the other leg (jitter buffer and transcoding included). The receipt instant
//! travels with the packet inside the relay ([`crate::Transmit::received_at`]); across the
//! call task it is left in a small stamp ring keyed by RTP sequence number
//! ([`MediaPath::stamp_arrival`], [`MediaPath::arrival`]), so the packets and channels the
//! gateway already uses stay as they are.
//!
//! Everything here is atomics: the tasks of one call share one `MediaPath` (cheap clone)
//! without locks, and the counters cost one relaxed add per packet.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Which way a packet crosses the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// From the WhatsApp leg to the PBX leg.
    WaToPbx,
    /// From the PBX leg to the WhatsApp leg.
    PbxToWa,
}

impl Flow {
    /// The metric label (`wa_to_pbx`, `pbx_to_wa`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaToPbx => "wa_to_pbx",
            Self::PbxToWa => "pbx_to_wa",
        }
    }
}

/// A place where the gateway drops a packet (or datagram) of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathDrop {
    /// The WhatsApp worker could not hand an event (RTP) to the call task: its per-call event
    /// channel was full.
    WaEventQueueFull,
    /// The call task could not hand a WhatsApp packet to the PBX media task: its command
    /// channel was full.
    WaToPbxQueueFull,
    /// Sending on the PBX RTP socket failed.
    PbxSendFailed,
    /// A PBX datagram was dropped before the relay: SRTP authentication or replay failure,
    /// not RTP, or from an address the latch does not accept.
    PbxRxRejected,
    /// The PBX media task could not hand a packet for WhatsApp to the call task.
    PbxToWaQueueFull,
    /// The call task could not hand a packet to the WhatsApp worker: its command channel was
    /// full.
    WaSendQueueFull,
    /// The WhatsApp leg refused a packet (not connected yet, or closed).
    WaSendRejected,
    /// Sending on the WhatsApp socket failed (e.g. its send buffer was full).
    WaSocketSendFailed,
}

impl PathDrop {
    /// Every drop place, in path order.
    pub const ALL: [Self; 8] = [
        Self::WaEventQueueFull,
        Self::WaToPbxQueueFull,
        Self::PbxSendFailed,
        Self::PbxRxRejected,
        Self::PbxToWaQueueFull,
        Self::WaSendQueueFull,
        Self::WaSendRejected,
        Self::WaSocketSendFailed,
    ];

    /// A stable snake_case name (logs, metric labels).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaEventQueueFull => "wa_event_queue_full",
            Self::WaToPbxQueueFull => "wa_to_pbx_queue_full",
            Self::PbxSendFailed => "pbx_send_failed",
            Self::PbxRxRejected => "pbx_rx_rejected",
            Self::PbxToWaQueueFull => "pbx_to_wa_queue_full",
            Self::WaSendQueueFull => "wa_send_queue_full",
            Self::WaSendRejected => "wa_send_rejected",
            Self::WaSocketSendFailed => "wa_socket_send_failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the added-latency buckets, seconds (the last bucket is open).
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2,
];

/// Receives every added-latency sample of the calls it is attached to (the gateway's
/// Prometheus histogram).
pub trait LatencyObserver: Send + Sync {
    /// One packet of `flow` spent `latency` inside the gateway.
    fn observe(&self, flow: Flow, latency: Duration);
}

/// Counters of one call's media path (cheap to clone; every clone counts into the same
/// call).
#[derive(Clone, Default)]
pub struct MediaPath {
    inner: Arc<Inner>,
}

/// Slots of the arrival stamp ring per flow: 32 packets (640 ms at 20 ms) may be in flight
/// between two tasks before a stamp is overwritten and that packet goes unmeasured.
const STAMP_SLOTS: usize = 32;

#[derive(Default)]
struct Inner {
    drops: [AtomicU64; 8],
    latency: [AtomicHistogram; 2],
    /// `seq << 48 | (µs since epoch + 1)`, 0 when empty.
    stamps: [[AtomicU64; STAMP_SLOTS]; 2],
    epoch: OnceLock<Instant>,
    observer: OnceLock<Arc<dyn LatencyObserver>>,
}

#[derive(Default)]
struct AtomicHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl MediaPath {
    /// A fresh path with nothing counted.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends every latency sample also to `observer` (first call wins).
    pub fn set_observer(&self, observer: Arc<dyn LatencyObserver>) {
        let _ = self.inner.observer.set(observer);
    }

    /// Counts one drop at `place`.
    pub fn count(&self, place: PathDrop) {
        self.inner.drops[place.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Drops counted at `place` so far.
    #[must_use]
    pub fn drops(&self, place: PathDrop) -> u64 {
        self.inner.drops[place.index()].load(Ordering::Relaxed)
    }

    /// Records that a packet received at `received_at` left the other leg at `sent_at`.
    pub fn record_latency(&self, flow: Flow, received_at: Instant, sent_at: Instant) {
        let latency = sent_at.saturating_duration_since(received_at);
        let h = &self.inner.latency[flow_index(flow)];
        let secs = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS_S
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        h.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        h.sum_ns.fetch_add(ns, Ordering::Relaxed);
        h.max_ns.fetch_max(ns, Ordering::Relaxed);
        if let Some(o) = self.inner.observer.get() {
            o.observe(flow, latency);
        }
    }

    /// Leaves the receipt instant of the packet with sequence number `seq` (as it crosses
    /// the next task) for [`MediaPath::arrival`] on the far side of a channel.
    pub fn stamp_arrival(&self, flow: Flow, seq: u16, at: Instant) {
        // a minute before the first stamp: the two flows stamp instants out of order
        let epoch = *self
            .inner
            .epoch
            .get_or_init(|| at.checked_sub(Duration::from_secs(60)).unwrap_or(at));
        let us = u64::try_from(at.saturating_duration_since(epoch).as_micros())
            .unwrap_or(u64::MAX)
            .min((1 << 48) - 2)
            + 1;
        let slot = &self.inner.stamps[flow_index(flow)][usize::from(seq) % STAMP_SLOTS];
        slot.store(u64::from(seq) << 48 | us, Ordering::Relaxed);
    }

    /// The receipt instant stamped for `seq`, if still in the ring.
    #[must_use]
    pub fn arrival(&self, flow: Flow, seq: u16) -> Option<Instant> {
        let epoch = *self.inner.epoch.get()?;
        let v = self.inner.stamps[flow_index(flow)][usize::from(seq) % STAMP_SLOTS]
            .load(Ordering::Relaxed);
        let us = v & ((1 << 48) - 1);
        if us == 0 || (v >> 48) as u16 != seq {
            return None;
        }
        epoch.checked_add(Duration::from_micros(us - 1))
    }

    /// A snapshot of everything counted so far.
    #[must_use]
    pub fn stats(&self) -> MediaPathStats {
        let drop = |p: PathDrop| self.drops(p);
        let latency = |f: Flow| {
            let h = &self.inner.latency[flow_index(f)];
            let buckets: Vec<u64> = h
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            LatencyStats {
                count: buckets.iter().sum(),
                buckets,
                sum: Duration::from_nanos(h.sum_ns.load(Ordering::Relaxed)),
                max: Duration::from_nanos(h.max_ns.load(Ordering::Relaxed)),
            }
        };
        MediaPathStats {
            wa_event_queue_full: drop(PathDrop::WaEventQueueFull),
            wa_to_pbx_queue_full: drop(PathDrop::WaToPbxQueueFull),
            pbx_send_failed: drop(PathDrop::PbxSendFailed),
            pbx_rx_rejected: drop(PathDrop::PbxRxRejected),
            pbx_to_wa_queue_full: drop(PathDrop::PbxToWaQueueFull),
            wa_send_queue_full: drop(PathDrop::WaSendQueueFull),
            wa_send_rejected: drop(PathDrop::WaSendRejected),
            wa_socket_send_failed: drop(PathDrop::WaSocketSendFailed),
            wa_to_pbx_latency: latency(Flow::WaToPbx),
            pbx_to_wa_latency: latency(Flow::PbxToWa),
        }
    }
}

impl fmt::Debug for MediaPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaPath")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Two handles are equal when they count into the same call.
impl PartialEq for MediaPath {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for MediaPath {}

/// A snapshot of one call's [`MediaPath`]: drops by place and added latency per flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaPathStats {
    /// See [`PathDrop::WaEventQueueFull`].
    pub wa_event_queue_full: u64,
    /// See [`PathDrop::WaToPbxQueueFull`].
    pub wa_to_pbx_queue_full: u64,
    /// See [`PathDrop::PbxSendFailed`].
    pub pbx_send_failed: u64,
    /// See [`PathDrop::PbxRxRejected`].
    pub pbx_rx_rejected: u64,
    /// See [`PathDrop::PbxToWaQueueFull`].
    pub pbx_to_wa_queue_full: u64,
    /// See [`PathDrop::WaSendQueueFull`].
    pub wa_send_queue_full: u64,
    /// See [`PathDrop::WaSendRejected`].
    pub wa_send_rejected: u64,
    /// See [`PathDrop::WaSocketSendFailed`].
    pub wa_socket_send_failed: u64,
    /// Added latency from the WhatsApp socket to the PBX socket.
    pub wa_to_pbx_latency: LatencyStats,
    /// Added latency from the PBX socket to the WhatsApp socket.
    pub pbx_to_wa_latency: LatencyStats,
}

impl MediaPathStats {
    /// Packets dropped in user space on the way to the PBX.
    #[must_use]
    pub fn dropped_toward_pbx(&self) -> u64 {
        self.wa_event_queue_full + self.wa_to_pbx_queue_full + self.pbx_send_failed
    }

    /// Packets dropped in user space on the way to WhatsApp (datagrams dropped before the
    /// relay included).
    #[must_use]
    pub fn dropped_toward_wa(&self) -> u64 {
        self.pbx_rx_rejected
            + self.pbx_to_wa_queue_full
            + self.wa_send_queue_full
            + self.wa_send_rejected
            + self.wa_socket_send_failed
    }
}

/// Added-latency histogram of one flow of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyStats {
    /// Packets measured.
    pub count: u64,
    /// Counts per bucket: `buckets[i]` counts latencies up to [`LATENCY_BUCKETS_S`]`[i]`
    /// (above the previous bound); the last entry counts everything above the last bound.
    pub buckets: Vec<u64>,
    /// Sum of all latencies (mean = sum / count).
    pub sum: Duration,
    /// The largest latency.
    pub max: Duration,
}

impl LatencyStats {
    /// The upper bound of the bucket holding quantile `q` (0..=1); `None` when empty, and
    /// [`LatencyStats::max`] for the open last bucket.
    #[must_use]
    pub fn quantile_upper_bound(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(
                    LATENCY_BUCKETS_S
                        .get(i)
                        .map_or(self.max, |b| Duration::from_secs_f64(*b)),
                );
            }
        }
        Some(self.max)
    }
}

fn flow_index(flow: Flow) -> usize {
    match flow {
        Flow::WaToPbx => 0,
        Flow::PbxToWa => 1,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Seen(Mutex<Vec<(Flow, Duration)>>);

    impl LatencyObserver for Seen {
        fn observe(&self, flow: Flow, latency: Duration) {
            self.0.lock().unwrap().push((flow, latency));
        }
    }

    #[test]
    fn latency_lands_in_sub_millisecond_buckets_and_reaches_the_observer() {
        let t0 = crate::test_epoch();
        let path = MediaPath::new();
        let seen = Arc::new(Seen::default());
        path.set_observer(seen.clone());
        let us = Duration::from_micros;
        path.record_latency(Flow::WaToPbx, t0, t0 + us(40)); // ≤ 50 µs
        path.record_latency(Flow::WaToPbx, t0, t0 + us(180)); // ≤ 200 µs
        path.record_latency(Flow::WaToPbx, t0, t0 + us(25_000)); // ≤ 50 ms
        path.record_latency(Flow::PbxToWa, t0, t0 + Duration::from_secs(1)); // open bucket
        let s = path.stats();
        let w = &s.wa_to_pbx_latency;
        assert_eq!(w.count, 3);
        assert_eq!(w.buckets[0], 1);
        assert_eq!(w.buckets[2], 1);
        assert_eq!(w.buckets[9], 1);
        assert_eq!(w.sum, us(25_220));
        assert_eq!(w.max, us(25_000));
        assert_eq!(w.quantile_upper_bound(0.5), Some(us(200)));
        assert_eq!(w.quantile_upper_bound(0.99), Some(us(50_000)));
        assert_eq!(s.pbx_to_wa_latency.buckets[12], 1);
        assert_eq!(
            s.pbx_to_wa_latency.quantile_upper_bound(0.5),
            Some(Duration::from_secs(1))
        );
        assert_eq!(seen.0.lock().unwrap().len(), 4);
    }

    #[test]
    fn stamps_cross_a_channel_by_sequence_number_until_overwritten() {
        let t0 = crate::test_epoch();
        let path = MediaPath::new();
        assert_eq!(path.arrival(Flow::WaToPbx, 7), None);
        path.stamp_arrival(Flow::WaToPbx, 7, t0 + Duration::from_millis(3));
        path.stamp_arrival(Flow::WaToPbx, 8, t0 + Duration::from_millis(23));
        assert_eq!(
            path.arrival(Flow::WaToPbx, 7),
            Some(t0 + Duration::from_millis(3))
        );
        assert_eq!(path.arrival(Flow::PbxToWa, 7), None);
        // 32 packets later the slot belongs to another sequence number
        path.stamp_arrival(Flow::WaToPbx, 7 + 32, t0 + Duration::from_millis(700));
        assert_eq!(path.arrival(Flow::WaToPbx, 7), None);
        assert_eq!(
            path.arrival(Flow::WaToPbx, 39),
            Some(t0 + Duration::from_millis(700))
        );
        // wrap of the 16-bit sequence number
        path.stamp_arrival(Flow::PbxToWa, 65_535, t0 + Duration::from_millis(1));
        assert_eq!(
            path.arrival(Flow::PbxToWa, 65_535),
            Some(t0 + Duration::from_millis(1))
        );
    }

    #[test]
    fn drops_are_counted_per_place_and_summed_per_direction() {
        let path = MediaPath::new();
        let clone = path.clone();
        path.count(PathDrop::WaEventQueueFull);
        clone.count(PathDrop::WaEventQueueFull);
        clone.count(PathDrop::PbxSendFailed);
        path.count(PathDrop::WaSendQueueFull);
        path.count(PathDrop::PbxRxRejected);
        let s = path.stats();
        assert_eq!(s.wa_event_queue_full, 2);
        assert_eq!(s.dropped_toward_pbx(), 3);
        assert_eq!(s.dropped_toward_wa(), 2);
        assert_eq!(path, clone);
        assert_ne!(path, MediaPath::new());
        for p in PathDrop::ALL {
            assert_eq!(PathDrop::ALL[p.index()], p);
        }
    }
}
