//! RFC 4733 telephone events: payload format and the per-direction forwarder.
//!
//! The forwarder turns one leg's event packets into the other leg's: payload type, clock
//! (durations scale, e.g. 8000 ↔ 48000) and timestamp space change; the event code, end bit
//! and volume stay. Each packet is forwarded once, including the (usually three) end
//! retransmissions, so the far end sees the same redundancy; a digit is reported exactly once
//! per event (RFC 4733 §2.5.1.3: an event is identified by its timestamp), however many
//! updates and end retransmissions arrive, and a retransmission is never taken for a new
//! digit.

use std::time::Duration;

use crate::rtp::{RtpTs, SeqNo};

/// One RFC 4733 §2.3 payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPayload {
    /// Event code (0–9, 10 = `*`, 11 = `#`, 12–15 = A–D).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Volume in -dBm0 (0–63).
    pub volume: u8,
    /// Duration so far in clock ticks of the telephone-event payload type.
    pub duration: u16,
}

impl DtmfPayload {
    /// Parses the first 4 bytes (more events in one packet are RFC 4733 §2.5.1.5 redundancy
    /// for earlier events, which the forwarder does not need).
    #[must_use]
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let b = payload.get(..4)?;
        Some(Self {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4-byte wire form.
    #[must_use]
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }

    /// The digit character of the event, if it is a DTMF event (0–15).
    #[must_use]
    pub fn digit(self) -> Option<char> {
        event_to_digit(self.event)
    }
}

/// The DTMF character of an RFC 4733 §3.2 event code.
#[must_use]
pub fn event_to_digit(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => char::from(b'0' + event),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + event - 12),
        _ => return None,
    })
}

/// The RFC 4733 event code of a DTMF character.
#[must_use]
pub fn digit_to_event(digit: char) -> Option<u8> {
    Some(match digit.to_ascii_uppercase() {
        d @ '0'..='9' => d as u8 - b'0',
        '*' => 10,
        '#' => 11,
        d @ 'A'..='D' => d as u8 - b'A' + 12,
        _ => return None,
    })
}

/// A telephone-event payload type as negotiated on one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The payload type number.
    pub pt: u8,
    /// Its clock rate (8000 on the WhatsApp leg; 8000 or 48000 on PBX legs).
    pub clock_rate_hz: u32,
}

/// What the forwarder decided about one incoming event packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// The payload to send on the other leg (duration converted).
    pub payload: DtmfPayload,
    /// The other leg's timestamp for this event (constant for the whole event).
    pub ts: RtpTs,
    /// Marker bit: set on the first packet of an event.
    pub marker: bool,
    /// A digit to report: set once per event, on its first end packet (or when a new event
    /// starts before the previous one's end arrived).
    pub digit: Option<(char, Duration)>,
}

/// Converts one direction's RFC 4733 stream.
#[derive(Debug, Clone)]
pub struct DtmfForwarder {
    from_clock_hz: u32,
    to_clock_hz: u32,
    current: Option<Current>,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    src_ts: RtpTs,
    dst_ts: RtpTs,
    event: u8,
    last_duration: u16,
    reported: bool,
    ended: bool,
    last_seq: SeqNo,
}

impl DtmfForwarder {
    /// A forwarder from a `from_clock_hz` telephone-event to a `to_clock_hz` one.
    #[must_use]
    pub fn new(from_clock_hz: u32, to_clock_hz: u32) -> Self {
        Self {
            from_clock_hz: from_clock_hz.max(1),
            to_clock_hz: to_clock_hz.max(1),
            current: None,
        }
    }

    /// Whether an event is in progress (started and not ended): the relay mutes the audio
    /// that would carry the same digit in-band.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.current.is_some_and(|c| !c.ended)
    }

    /// The event code in progress, if any.
    #[must_use]
    pub fn active_event(&self) -> Option<u8> {
        self.current.filter(|c| !c.ended).map(|c| c.event)
    }

    /// Handles one incoming event packet with source `seq` and `ts`. `next_dst_ts` is the
    /// destination leg's timestamp for "now" (its next audio frame): a new event is anchored
    /// there. Returns `None` for packets to drop (duplicates by sequence number, stale
    /// packets of an older event, unparsable payloads).
    pub fn handle(
        &mut self,
        seq: SeqNo,
        ts: RtpTs,
        payload: &[u8],
        next_dst_ts: RtpTs,
    ) -> Option<Forwarded> {
        let p = DtmfPayload::parse(payload)?;
        let mut digit = None;
        let new_event = match self.current {
            None => true,
            Some(c) if c.src_ts == ts => {
                if seq == c.last_seq || !c.last_seq.is_before(seq) {
                    // exact duplicate or reordered older packet of this event
                    return None;
                }
                false
            }
            Some(c) => {
                if ts.diff(c.src_ts) < 0 {
                    // a straggler of an earlier event
                    return None;
                }
                if !c.reported {
                    digit = self.report(c.event, c.last_duration);
                }
                true
            }
        };
        if new_event {
            self.current = Some(Current {
                src_ts: ts,
                dst_ts: next_dst_ts,
                event: p.event,
                last_duration: 0,
                reported: false,
                ended: false,
                last_seq: seq,
            });
        }
        let from = self.from_clock_hz;
        let c = self.current.as_mut()?;
        c.last_seq = seq;
        c.last_duration = c.last_duration.max(p.duration);
        if p.end {
            c.ended = true;
            if !c.reported {
                c.reported = true;
                digit =
                    event_to_digit(c.event).map(|d| (d, ticks_to_duration(c.last_duration, from)));
            }
        }
        let dst_ts = c.dst_ts;
        Some(Forwarded {
            payload: DtmfPayload {
                duration: self.convert_duration(p.duration),
                ..p
            },
            ts: dst_ts,
            marker: new_event,
            digit,
        })
    }

    fn report(&self, event: u8, duration: u16) -> Option<(char, Duration)> {
        event_to_digit(event).map(|d| (d, ticks_to_duration(duration, self.from_clock_hz)))
    }

    fn convert_duration(&self, duration: u16) -> u16 {
        let v = u64::from(duration) * u64::from(self.to_clock_hz) / u64::from(self.from_clock_hz);
        u16::try_from(v).unwrap_or(u16::MAX)
    }
}

fn ticks_to_duration(ticks: u16, clock_hz: u32) -> Duration {
    Duration::from_micros(u64::from(ticks) * 1_000_000 / u64::from(clock_hz.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(event: u8, end: bool, duration: u16) -> [u8; 4] {
        DtmfPayload {
            event,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    #[test]
    fn payload_round_trip_and_digits() {
        let p = DtmfPayload::parse(&[11, 0x8a, 0x03, 0x20]).unwrap();
        assert_eq!(p.digit(), Some('#'));
        assert!(p.end);
        assert_eq!(p.volume, 10);
        assert_eq!(p.duration, 800);
        assert_eq!(p.to_bytes(), [11, 0x8a, 0x03, 0x20]);
        assert_eq!(DtmfPayload::parse(&[1, 2, 3]), None);
        for d in "0123456789*#ABCD".chars() {
            assert_eq!(event_to_digit(digit_to_event(d).unwrap()), Some(d));
        }
    }

    /// A WhatsApp event (8 kHz durations) to a PBX speaking telephone-event/48000: every
    /// packet forwarded once with durations ×6 and one constant timestamp, the three end
    /// retransmissions passed once each, the digit reported once, a replay dropped.
    #[test]
    fn wa_8k_to_pbx_48k_with_end_retransmissions() {
        let mut f = DtmfForwarder::new(8000, 48_000);
        let ts = RtpTs(4_294_967_000); // wraps during the call
        let anchor = RtpTs(1000);
        let mut out = Vec::new();
        let mut seq = SeqNo(65_533);
        for (i, d) in [160u16, 320, 480].iter().enumerate() {
            let fw = f.handle(seq, ts, &pkt(5, false, *d), anchor).unwrap();
            assert_eq!(fw.marker, i == 0);
            out.push(fw);
            seq = seq.next();
        }
        assert!(f.is_active());
        for _ in 0..3 {
            out.push(f.handle(seq, ts, &pkt(5, true, 640), anchor).unwrap());
            seq = seq.next();
        }
        assert!(!f.is_active());
        // replayed end packet (same seq as the last one): dropped
        assert_eq!(
            f.handle(SeqNo(seq.0 - 1), ts, &pkt(5, true, 640), anchor),
            None
        );
        let durations: Vec<u16> = out.iter().map(|f| f.payload.duration).collect();
        assert_eq!(durations, [960, 1920, 2880, 3840, 3840, 3840]);
        assert!(out.iter().all(|f| f.ts == anchor));
        let digits: Vec<_> = out.iter().filter_map(|f| f.digit).collect();
        assert_eq!(digits, [('5', Duration::from_millis(80))]);
    }

    #[test]
    fn pbx_48k_to_wa_8k_and_lost_end_still_reports() {
        let mut f = DtmfForwarder::new(48_000, 8000);
        let a = f
            .handle(SeqNo(1), RtpTs(48_000), &pkt(1, false, 960), RtpTs(7))
            .unwrap();
        assert_eq!(a.payload.duration, 160);
        assert_eq!(a.digit, None);
        // all end packets of '1' lost; '2' starts
        let b = f
            .handle(SeqNo(5), RtpTs(96_000), &pkt(2, false, 960), RtpTs(99))
            .unwrap();
        assert_eq!(b.digit, Some(('1', Duration::from_millis(20))));
        assert!(b.marker);
        assert_eq!(b.ts, RtpTs(99));
        // a straggler of '1' arriving late is dropped, not a new digit
        assert_eq!(
            f.handle(SeqNo(4), RtpTs(48_000), &pkt(1, true, 2000), RtpTs(200)),
            None
        );
        let end = f
            .handle(SeqNo(6), RtpTs(96_000), &pkt(2, true, 4800), RtpTs(200))
            .unwrap();
        assert_eq!(end.digit, Some(('2', Duration::from_millis(100))));
        assert_eq!(end.ts, RtpTs(99));
        // the same digit pressed again is a new event (new timestamp)
        let again = f
            .handle(SeqNo(9), RtpTs(144_000), &pkt(2, true, 960), RtpTs(300))
            .unwrap();
        assert_eq!(again.digit, Some(('2', Duration::from_millis(20))));
    }
}
