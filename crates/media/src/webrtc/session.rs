//! The drain loop around one str0m [`Rtc`], shared by the WhatsApp leg and the simulator's phone.
//!
//! str0m's contract is "every mutation is followed by a full drain of `poll_output` until
//! `Output::Timeout`". [`RtcSession`] enforces it: every mutating method drains into two queues
//! (datagrams, events) and records the next timeout, so the owner can use the STYLE.md §1
//! `handle_*` / `poll_*` shape without knowing str0m's rules.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::media::Mid;
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tracing::{debug, trace, warn};

use super::{Datagram, WaLegError, WaLegEvent, WaLegStats};
use crate::{RtpPacket, RtpTs, SeqNo as WireSeqNo, Ssrc};

/// One str0m instance plus its drained output.
pub(crate) struct RtcSession {
    rtc: Rtc,
    mid: Option<Mid>,
    datagrams: VecDeque<Datagram>,
    events: VecDeque<WaLegEvent>,
    timeout: Option<Instant>,
    connected: bool,
    terminated: bool,
    tx_seq: SeqExtender,
    /// Whether our send stream's RTX cache was switched off (see `send_rtp`).
    rtx_cache_off: bool,
    /// The receive stream whose NACKs were switched off (see `handle_rtc_event`).
    nack_off: Option<str0m::rtp::Ssrc>,
    stats: WaLegStats,
}

impl RtcSession {
    pub(crate) fn new(rtc: Rtc) -> Self {
        Self {
            rtc,
            mid: None,
            datagrams: VecDeque::new(),
            events: VecDeque::new(),
            timeout: None,
            connected: false,
            terminated: false,
            tx_seq: SeqExtender::default(),
            rtx_cache_off: false,
            nack_off: None,
            stats: WaLegStats::default(),
        }
    }

    pub(crate) fn rtc_mut(&mut self) -> &mut Rtc {
        &mut self.rtc
    }

    pub(crate) fn set_mid(&mut self, mid: Mid) {
        self.mid = Some(mid);
    }

    pub(crate) fn mid(&self) -> Option<Mid> {
        self.mid
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.terminated
    }

    pub(crate) fn stats(&self) -> &WaLegStats {
        &self.stats
    }

    /// Whether `data` from `source` belongs to this session (STUN credentials or known peer).
    pub(crate) fn accepts(
        &self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Ok(contents) = data.try_into() else {
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        self.rtc.accepts(&input)
    }

    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        if self.terminated {
            return;
        }
        let contents = match data.try_into() {
            Ok(c) => c,
            Err(e) => {
                // Not STUN, DTLS, RTP or RTCP: a stray datagram, never fatal.
                trace!(%source, len = data.len(), error = ?e, "dropped unclassifiable datagram");
                return;
            }
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if let Err(e) = self.rtc.handle_input(input) {
            // Malformed input from the network: log and keep the call.
            debug!(%source, error = %e, "rtc rejected datagram");
        }
        self.drain(now);
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.terminated {
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            warn!(error = %e, "rtc timeout handling failed");
            self.fail(format!("timeout handling: {e}"));
            return;
        }
        self.drain(now);
    }

    /// Send one RTP packet on our single audio stream.
    pub(crate) fn send_rtp(&mut self, rtp: &RtpPacket, now: Instant) -> Result<(), WaLegError> {
        if self.terminated {
            return Err(WaLegError::Closed);
        }
        if !self.connected {
            return Err(WaLegError::NotConnected);
        }
        let mid = self.mid.ok_or(WaLegError::NotConnected)?;
        let seq = self.tx_seq.extend(rtp.seq.0);
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return Err(WaLegError::NoSendStream);
        };
        if !self.rtx_cache_off {
            // str0m keeps every sent packet for 3 s (up to 2,000) to answer NACKs with RTX.
            // We negotiate neither NACK nor RTX for Opus (reference §6.6), so the cache is
            // dead weight: ~150 packets per call, the largest per-call allocation.
            stream.set_rtx_cache(0, Duration::ZERO, None);
            self.rtx_cache_off = true;
        }
        stream.write_rtp(
            RtpWrite::new(rtp.pt.into(), seq, rtp.ts.0, now, rtp.payload.as_ref())
                .marker(rtp.marker),
        );
        self.stats.rtp_packets_sent += 1;
        self.stats.rtp_bytes_sent += rtp.payload.len() as u64;
        self.drain(now);
        Ok(())
    }

    pub(crate) fn close(&mut self, now: Instant) {
        if self.terminated {
            return;
        }
        if let Err(e) = self.rtc.close() {
            debug!(error = %e, "rtc close");
        }
        self.drain(now);
        if !self.terminated {
            self.terminated = true;
            self.events.push_back(WaLegEvent::Closed);
        }
    }

    pub(crate) fn fail(&mut self, reason: String) {
        if self.terminated {
            return;
        }
        self.terminated = true;
        self.rtc.disconnect();
        self.timeout = None;
        self.events.push_back(WaLegEvent::Failed { reason });
    }

    pub(crate) fn poll_datagram(&mut self) -> Option<Datagram> {
        self.datagrams.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<WaLegEvent> {
        self.events.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.terminated { None } else { self.timeout }
    }

    /// Drain `poll_output` to `Output::Timeout` (str0m's single-mutation invariant).
    pub(crate) fn drain(&mut self, now: Instant) {
        // Bounded: str0m yields a finite amount of output per mutation; the cap only guards
        // against a library bug turning into an endless loop inside our task.
        let mut due_now = 0;
        for _ in 0..10_000 {
            match self.rtc.poll_output() {
                // Already due (str0m queues an RTP packet we wrote and sends it on the next
                // timeout): run it now rather than through the owner's timer, which would cost
                // a timer round trip per packet sent. A few in a row at most.
                Ok(Output::Timeout(t)) if t <= now && due_now < 4 && self.rtc.is_alive() => {
                    due_now += 1;
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        warn!(error = %e, "rtc timeout handling failed");
                        self.fail(format!("timeout handling: {e}"));
                        return;
                    }
                }
                Ok(Output::Timeout(t)) => {
                    self.timeout = Some(t.max(now));
                    if !self.rtc.is_alive() && !self.terminated {
                        self.terminated = true;
                        self.timeout = None;
                        self.events.push_back(WaLegEvent::Closed);
                    }
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    self.datagrams.push_back(Datagram {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    });
                }
                Ok(Output::Event(e)) => self.handle_rtc_event(e),
                Err(e) => {
                    warn!(error = %e, "rtc failed");
                    self.fail(format!("{e}"));
                    return;
                }
            }
        }
        debug_assert!(false, "str0m produced unbounded output");
        self.fail("unbounded output from rtc".to_owned());
    }

    fn handle_rtc_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                debug!("ice and dtls connected");
                self.connected = true;
                self.events.push_back(WaLegEvent::Connected);
            }
            Event::IceConnectionStateChange(state) => {
                debug!(?state, "ice state");
                if state == IceConnectionState::Disconnected {
                    self.events.push_back(WaLegEvent::Disconnected);
                }
            }
            Event::MediaAdded(m) => {
                if self.mid.is_none() {
                    self.mid = Some(m.mid);
                }
            }
            Event::RtpPacket(p) => {
                if self.nack_off != Some(p.header.ssrc) {
                    // Meta's Opus has neither NACK nor RTX (reference §6.6): without this, str0m
                    // runs a NACK timer every 33 ms per call and would NACK every loss
                    if let Some(rx) = self.rtc.direct_api().stream_rx(&p.header.ssrc) {
                        rx.suppress_nack(true);
                        self.nack_off = Some(p.header.ssrc);
                    }
                }
                self.stats.rtp_packets_received += 1;
                self.stats.rtp_bytes_received += p.payload.len() as u64;
                self.events.push_back(WaLegEvent::Rtp(RtpPacket {
                    pt: *p.header.payload_type,
                    seq: WireSeqNo(p.header.sequence_number),
                    ts: RtpTs(p.header.timestamp),
                    ssrc: Ssrc(*p.header.ssrc),
                    marker: p.header.marker,
                    payload: Bytes::copy_from_slice(&p.payload),
                }));
            }
            Event::MediaIngressStats(s) => {
                self.stats.loss_fraction = s.loss;
                self.stats.rtt = s.rtt.or(self.stats.rtt);
                self.stats.jitter_rtp_units = s.jitter;
                self.events.push_back(WaLegEvent::Stats(self.stats.clone()));
            }
            Event::PeerStats(s) => {
                self.stats.rtt = s.rtt.or(self.stats.rtt);
            }
            Event::Closed => {
                debug!("remote closed dtls");
                self.rtc.disconnect();
            }
            other => trace!(event = ?other, "rtc event"),
        }
    }
}

/// Extends the relay's 16-bit sequence numbers to str0m's 64-bit [`SeqNo`] (RFC 3711 index).
#[derive(Debug, Default)]
struct SeqExtender {
    last: Option<u64>,
}

impl SeqExtender {
    fn extend(&mut self, seq: u16) -> SeqNo {
        let ext = match self.last {
            None => u64::from(seq),
            Some(last) => {
                #[allow(clippy::cast_possible_truncation)]
                let delta = seq.wrapping_sub(last as u16) as i16;
                let ext = i128::from(last) + i128::from(delta);
                u64::try_from(ext).unwrap_or(u64::from(seq))
            }
        };
        if self.last.is_none_or(|l| ext > l) {
            self.last = Some(ext);
        }
        ext.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_extender_crosses_wrap_forward_and_back() {
        let mut x = SeqExtender::default();
        assert_eq!(*x.extend(65_534), 65_534);
        assert_eq!(*x.extend(65_535), 65_535);
        assert_eq!(*x.extend(0), 65_536);
        assert_eq!(*x.extend(65_535), 65_535);
        assert_eq!(*x.extend(1), 65_537);
    }
}
