//! Per-leg receive statistics (RFC 3550 §6.4.1 and appendix A.3/A.8) and the per-call
//! summary the gateway writes into CDRs.

use std::time::{Duration, Instant};

use crate::codec::Codec;
use crate::rtp::{RtpTs, SeqNo};

/// Statistics of one leg, from the relay's point of view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LegStats {
    /// RTP packets received from this leg (audio and events, after duplicates).
    pub packets_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// RTP packets sent to this leg.
    pub packets_sent: u64,
    /// Cumulative packets lost (RFC 3550 A.3: expected − received; negative with duplicates).
    pub packets_lost: i64,
    /// Interarrival jitter (RFC 3550 A.8).
    pub jitter: Duration,
    /// Longest time between two received packets.
    pub longest_gap: Duration,
    /// Packets dropped as duplicates or too late for play-out.
    pub discarded: u64,
    /// Frames concealed by PLC toward the other leg.
    pub concealed_frames: u64,
    /// Frames recovered from Opus in-band FEC.
    pub fec_frames: u64,
    /// DTMF digits received from this leg.
    pub dtmf_digits: u64,
    /// Round-trip time from the leg's RTCP (RFC 3550 LSR/DLSR), if known.
    pub rtt: Option<Duration>,
    /// Packets of our stream the leg reports lost (its RTCP).
    pub remote_packets_lost: i64,
    /// Jitter of our stream as the leg reports it, in its timestamp units.
    pub remote_jitter_ticks: u32,
}

/// Everything the CDR needs about a call's media.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaStats {
    /// The WhatsApp leg.
    pub wa: LegStats,
    /// The PBX leg.
    pub pbx: LegStats,
    /// The PBX leg's codec.
    pub pbx_codec: Codec,
    /// Whether Opus passed through without transcoding.
    pub passthrough: bool,
    /// Watchdog: PBX silences of at least 1 s that the relay
    /// bridged with comfort noise toward WhatsApp.
    pub comfort_noise_runs: u64,
    /// Watchdog: media timeouts raised (each ends the call in the gateway).
    pub media_timeouts: u64,
    /// Drops between the two sockets and the gateway's added latency (filled by the PBX
    /// media driver; empty from the relay core alone).
    pub path: crate::path::MediaPathStats,
}

/// RFC 3550 receiver state for one source.
#[derive(Debug, Clone)]
pub(crate) struct ReceiveStats {
    clock_rate_hz: u32,
    base_seq: Option<u64>,
    highest: u64,
    received: u64,
    bytes: u64,
    jitter: f64,
    last_transit: Option<f64>,
    epoch: Option<Instant>,
    last_arrival: Option<Instant>,
    longest_gap: Duration,
    expected_prior: u64,
    received_prior: u64,
}

impl ReceiveStats {
    pub(crate) fn new(clock_rate_hz: u32) -> Self {
        Self {
            clock_rate_hz: clock_rate_hz.max(1),
            base_seq: None,
            highest: 0,
            received: 0,
            bytes: 0,
            jitter: 0.0,
            last_transit: None,
            epoch: None,
            last_arrival: None,
            longest_gap: Duration::ZERO,
            expected_prior: 0,
            received_prior: 0,
        }
    }

    /// Records one packet. `ts` is used for jitter only when `audio` is set (RFC 4733 events
    /// keep one timestamp for the whole event).
    pub(crate) fn on_packet(
        &mut self,
        seq: SeqNo,
        ts: RtpTs,
        len: usize,
        audio: bool,
        now: Instant,
    ) {
        let ext = match self.base_seq {
            None => {
                let e = u64::from(seq.0) + (1 << 32);
                self.base_seq = Some(e);
                self.highest = e;
                e
            }
            Some(_) => {
                let d = i64::from(seq.diff(SeqNo(self.highest as u16)));
                (self.highest as i64 + d).max(0) as u64
            }
        };
        self.highest = self.highest.max(ext);
        self.received += 1;
        self.bytes += len as u64;
        if let Some(last) = self.last_arrival {
            self.longest_gap = self.longest_gap.max(now.saturating_duration_since(last));
        }
        self.last_arrival = Some(now);
        if audio {
            let epoch = *self.epoch.get_or_insert(now);
            let arrival =
                now.saturating_duration_since(epoch).as_secs_f64() * f64::from(self.clock_rate_hz);
            let transit = arrival - f64::from(ts.0);
            if let Some(prev) = self.last_transit {
                let mut d = (transit - prev).abs();
                // a timestamp wrap between the two packets
                if d > f64::from(u32::MAX / 2) {
                    d = (d - f64::from(u32::MAX) - 1.0).abs();
                }
                self.jitter += (d - self.jitter) / 16.0;
            }
            self.last_transit = Some(transit);
        }
    }

    pub(crate) fn expected(&self) -> u64 {
        self.base_seq.map_or(0, |b| self.highest + 1 - b)
    }

    pub(crate) fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    pub(crate) fn jitter_ticks(&self) -> u32 {
        self.jitter as u32
    }

    pub(crate) fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter / f64::from(self.clock_rate_hz))
    }

    pub(crate) fn highest_seq(&self) -> u32 {
        (self.highest & 0xffff_ffff) as u32
    }

    /// RFC 3550 A.3 fraction lost since the previous call, in 1/256 units.
    pub(crate) fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let interval_expected = expected - self.expected_prior;
        let interval_received = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost = interval_expected as i64 - interval_received as i64;
        if interval_expected == 0 || lost <= 0 {
            0
        } else {
            ((lost << 8) / interval_expected as i64).min(255) as u8
        }
    }

    pub(crate) fn fill(&self, leg: &mut LegStats) {
        leg.packets_received = self.received;
        leg.bytes_received = self.bytes;
        leg.packets_lost = self.lost();
        leg.jitter = self.jitter();
        leg.longest_gap = self.longest_gap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_jitter_and_gap_follow_rfc3550() {
        let t0 = crate::test_epoch();
        let mut s = ReceiveStats::new(8000);
        // 10 packets every 20 ms, #3 lost, #6 arrives 10 ms late
        for i in 0..10u16 {
            if i == 3 {
                continue;
            }
            let late = if i == 6 { 10 } else { 0 };
            let now = t0 + Duration::from_millis(20 * u64::from(i) + late);
            s.on_packet(
                SeqNo(65_530u16.wrapping_add(i)),
                RtpTs(160 * u32::from(i)),
                160,
                true,
                now,
            );
        }
        assert_eq!(s.expected(), 10);
        assert_eq!(s.lost(), 1);
        assert_eq!(s.take_fraction_lost(), 25); // 1/10 * 256
        assert_eq!(s.take_fraction_lost(), 0);
        assert_eq!(s.longest_gap, Duration::from_millis(40));
        // two 80-tick deviations, decayed by 1/16 per packet
        let j = s.jitter_ticks();
        assert!((5..=15).contains(&j), "{j}");
    }
}
