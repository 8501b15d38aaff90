//! The stand-in PBX's RTP echo, sans-IO: what an Asterisk `Echo()` does with one call's media.
//!
//! Audio packets are sent back to the address they came from (symmetric RTP, what Asterisk's
//! `rtp_symmetric=yes` does), on our own SSRC and sequence space with the sender's timestamps.
//! RFC 4733 telephone-event packets are not echoed: they are decoded, and each event is
//! reported once (RFC 4733 §2.5.1.3: an event is identified by its RTP timestamp, so the
//! updates and the three end retransmissions of one key press are one digit).

use std::collections::VecDeque;
use std::net::SocketAddr;

use whatsip_media::{DtmfPayload, RtpPacket, SeqNo, Ssrc, is_rtcp};

/// Most event timestamps remembered for de-duplication (a demo call presses a few keys).
const SEEN_EVENTS: usize = 64;

/// What the echo noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EchoEvent {
    /// The first RTP packet of the call.
    FirstPacket {
        /// Where it came from (and where echoes go).
        source: SocketAddr,
        /// Its payload type.
        pt: u8,
    },
    /// A new RFC 4733 event began.
    Digit {
        /// The key.
        digit: char,
    },
    /// The end packet of an event arrived (first of its retransmissions).
    DigitEnd {
        /// The key.
        digit: char,
        /// Its duration in telephone-event clock ticks.
        duration: u16,
    },
}

/// Counters for one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EchoStats {
    /// RTP packets received (audio and events).
    pub(crate) received: u64,
    /// Packets sent back.
    pub(crate) echoed: u64,
    /// Datagrams that were not RTP (RTCP on a muxed port is counted here too).
    pub(crate) ignored: u64,
}

/// One call's echo.
#[derive(Debug)]
pub(crate) struct RtpEcho {
    ssrc: Ssrc,
    seq: SeqNo,
    dtmf_pt: Option<u8>,
    started: bool,
    seen_events: VecDeque<u32>,
    ended_events: VecDeque<u32>,
    stats: EchoStats,
    transmits: VecDeque<(Vec<u8>, SocketAddr)>,
    events: VecDeque<EchoEvent>,
}

impl RtpEcho {
    /// `dtmf_pt`: the negotiated telephone-event payload type, if any. `ssrc` and
    /// `initial_seq` come from the caller's RNG.
    pub(crate) fn new(dtmf_pt: Option<u8>, ssrc: u32, initial_seq: u16) -> Self {
        Self {
            ssrc: Ssrc(ssrc),
            seq: SeqNo(initial_seq),
            dtmf_pt,
            started: false,
            seen_events: VecDeque::new(),
            ended_events: VecDeque::new(),
            stats: EchoStats::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// One datagram received on the call's RTP port.
    pub(crate) fn handle_datagram(&mut self, data: &[u8], source: SocketAddr) {
        if is_rtcp(data) {
            self.stats.ignored += 1;
            return;
        }
        let Ok(mut pkt) = RtpPacket::parse(data) else {
            self.stats.ignored += 1;
            return;
        };
        self.stats.received += 1;
        if !self.started {
            self.started = true;
            self.events
                .push_back(EchoEvent::FirstPacket { source, pt: pkt.pt });
        }
        if Some(pkt.pt) == self.dtmf_pt {
            self.handle_event(&pkt);
            return;
        }
        pkt.ssrc = self.ssrc;
        pkt.seq = self.seq;
        self.seq = self.seq.next();
        self.stats.echoed += 1;
        self.transmits.push_back((pkt.to_vec(), source));
    }

    /// Next datagram to send and where.
    pub(crate) fn poll_transmit(&mut self) -> Option<(Vec<u8>, SocketAddr)> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub(crate) fn poll_event(&mut self) -> Option<EchoEvent> {
        self.events.pop_front()
    }

    /// Counters so far.
    pub(crate) fn stats(&self) -> EchoStats {
        self.stats
    }

    fn handle_event(&mut self, pkt: &RtpPacket) {
        let Some(ev) = DtmfPayload::parse(&pkt.payload) else {
            return;
        };
        let Some(digit) = ev.digit() else {
            return;
        };
        let ts = pkt.ts.0;
        if remember(&mut self.seen_events, ts) {
            self.events.push_back(EchoEvent::Digit { digit });
        }
        if ev.end && remember(&mut self.ended_events, ts) {
            self.events.push_back(EchoEvent::DigitEnd {
                digit,
                duration: ev.duration,
            });
        }
    }
}

/// Adds `ts` to the bounded set; true when it was new.
fn remember(seen: &mut VecDeque<u32>, ts: u32) -> bool {
    if seen.contains(&ts) {
        return false;
    }
    if seen.len() == SEEN_EVENTS {
        seen.pop_front();
    }
    seen.push_back(ts);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsip_media::RtpTs;

    fn src() -> SocketAddr {
        "127.0.0.1:40002".parse().unwrap()
    }

    fn packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        RtpPacket {
            pt,
            seq: SeqNo(seq),
            ts: RtpTs(ts),
            ssrc: Ssrc(0xdead_beef),
            marker: false,
            payload: payload.to_vec().into(),
        }
        .to_vec()
    }

    fn dtmf(event: u8, end: bool, duration: u16) -> [u8; 4] {
        DtmfPayload {
            event,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    #[test]
    fn echo_returns_audio_to_its_source_on_own_ssrc_and_sequence() {
        let mut echo = RtpEcho::new(Some(101), 42, 1000);
        echo.handle_datagram(&packet(0, 7, 160, &[0x55; 160]), src());
        echo.handle_datagram(&packet(0, 9, 480, &[0x56; 160]), src());
        let (a, to_a) = echo.poll_transmit().unwrap();
        let (b, _) = echo.poll_transmit().unwrap();
        assert!(echo.poll_transmit().is_none());
        assert_eq!(to_a, src());
        let (a, b) = (RtpPacket::parse(&a).unwrap(), RtpPacket::parse(&b).unwrap());
        assert_eq!(
            (a.ssrc, a.seq, a.ts, a.pt),
            (Ssrc(42), SeqNo(1000), RtpTs(160), 0)
        );
        assert_eq!(a.payload.as_ref(), &[0x55; 160]);
        // our sequence has no gap even though the sender's had one
        assert_eq!((b.seq, b.ts), (SeqNo(1001), RtpTs(480)));
        assert_eq!(
            echo.poll_event(),
            Some(EchoEvent::FirstPacket {
                source: src(),
                pt: 0
            })
        );
        assert_eq!(echo.poll_event(), None);
        assert_eq!(echo.stats().echoed, 2);
    }

    #[test]
    fn one_key_press_with_updates_and_three_end_packets_is_one_digit() {
        let mut echo = RtpEcho::new(Some(101), 1, 1);
        let ts = 8000;
        for (i, d) in [160u16, 320, 480].iter().enumerate() {
            echo.handle_datagram(&packet(101, 10 + i as u16, ts, &dtmf(5, false, *d)), src());
        }
        for i in 0..3 {
            echo.handle_datagram(&packet(101, 13 + i, ts, &dtmf(5, true, 800)), src());
        }
        // a second press of the same key is a new event (new timestamp)
        echo.handle_datagram(&packet(101, 16, ts + 1600, &dtmf(5, false, 160)), src());
        let events: Vec<_> = std::iter::from_fn(|| echo.poll_event()).collect();
        assert_eq!(
            events,
            vec![
                EchoEvent::FirstPacket {
                    source: src(),
                    pt: 101
                },
                EchoEvent::Digit { digit: '5' },
                EchoEvent::DigitEnd {
                    digit: '5',
                    duration: 800
                },
                EchoEvent::Digit { digit: '5' },
            ]
        );
        // events are decoded, not echoed
        assert!(echo.poll_transmit().is_none());
        assert_eq!(echo.stats().received, 7);
    }

    #[test]
    fn garbage_and_rtcp_are_counted_not_echoed() {
        let mut echo = RtpEcho::new(None, 1, 1);
        echo.handle_datagram(&[0x80, 200, 0, 1, 0, 0, 0, 0], src()); // RTCP SR
        echo.handle_datagram(&[1, 2, 3], src());
        echo.handle_datagram(&[], src());
        // without a negotiated telephone-event PT, PT 101 is just audio to echo
        echo.handle_datagram(&packet(101, 1, 0, &dtmf(1, false, 160)), src());
        assert_eq!(echo.stats().ignored, 3);
        assert_eq!(echo.stats().echoed, 1);
        assert!(
            std::iter::from_fn(|| echo.poll_event()).all(|e| !matches!(e, EchoEvent::Digit { .. }))
        );
    }
}
