//! In-memory loopback: our WhatsApp leg ⇄ the phone, on a virtual clock, no sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::webrtc::{DtlsIdentity, WaLeg, WaLegConfig};

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

const LEG: &str = "127.0.0.1:40000";
const PHONE: &str = "127.0.0.1:3484";

struct Pair {
    leg: WaLeg,
    phone: PhonePeer,
    now: Instant,
    leg_events: Vec<WaLegEvent>,
    phone_events: Vec<WaLegEvent>,
    /// How many times the leg's own timeout fell due.
    leg_timeouts: u32,
}

impl Pair {
    fn new(leg: WaLeg, phone: PhonePeer, now: Instant) -> Self {
        Self {
            leg,
            phone,
            now,
            leg_events: vec![],
            phone_events: vec![],
            leg_timeouts: 0,
        }
    }

    /// Moves datagrams both ways and fires timers until `until`, bounded in steps.
    fn run(&mut self, until: Instant) {
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(d) = self.leg.poll_datagram() {
                assert_eq!(d.destination, PHONE.parse::<SocketAddr>().unwrap());
                self.phone
                    .handle_datagram(self.now, d.source, d.destination, &d.contents);
                moved = true;
            }
            while let Some(d) = self.phone.poll_datagram() {
                self.leg
                    .handle_datagram(self.now, d.source, d.destination, &d.contents);
                moved = true;
            }
            while let Some(e) = self.leg.poll_event() {
                self.leg_events.push(e);
            }
            while let Some(e) = self.phone.poll_event() {
                self.phone_events.push(e);
            }
            if moved {
                continue;
            }
            let next = [self.leg.poll_timeout(), self.phone.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|n| *n <= until) else {
                self.now = until;
                return;
            };
            if self.leg.poll_timeout().is_some_and(|t| t <= next) {
                self.leg_timeouts += 1;
            }
            self.now = next.max(self.now);
            self.leg.handle_timeout(self.now);
            self.phone.handle_timeout(self.now);
        }
        panic!(
            "no progress: leg {:?} {:?} phone {:?} {:?} now {:?}",
            self.leg,
            self.leg.poll_timeout().map(|t| t - self.now),
            self.phone,
            self.phone
                .poll_timeout()
                .map(|t| t.saturating_duration_since(self.now)),
            self.now
        );
    }
}

fn user_initiated() -> Pair {
    let now = t0();
    let phone_cfg = PhoneConfig {
        candidates: vec![PHONE.parse().unwrap()],
        ..PhoneConfig::default()
    };
    let (phone, offer) = PhonePeer::offer(&phone_cfg, now).unwrap();
    let leg_cfg = WaLegConfig {
        candidates: vec![LEG.parse().unwrap()],
        ..WaLegConfig::default()
    };
    let (leg, answer) = WaLeg::answer(&leg_cfg, &offer, now).unwrap();
    let mut pair = Pair::new(leg, phone, now);
    pair.phone.accept_answer(&answer, now).unwrap();
    pair
}

#[test]
fn phone_offer_is_shaped_like_metas() {
    let cfg = PhoneConfig {
        candidates: vec![
            "127.0.0.1:3484".parse().unwrap(),
            "[::1]:3484".parse().unwrap(),
        ],
        ..PhoneConfig::default()
    };
    let (_p, offer) = PhonePeer::offer(&cfg, t0()).unwrap();
    let s = SdpSummary::parse(&offer);
    assert!(s.ice_lite);
    assert_eq!(s.setup, Some(SetupRole::ActPass));
    assert_eq!(s.mid.as_deref(), Some("audio"));
    assert_eq!(s.bundle, vec!["audio".to_owned()]);
    assert_eq!(s.m_payload_types, vec![111, 126]);
    assert_eq!(s.candidates.len(), 2);
    assert!(offer.contains("a=ssrc:1047224411 cname:WhatsAppAudioStream1\r\n"));
    assert!(offer.contains("network-cost 50"));
}

#[test]
fn leg_and_phone_connect_and_carry_opus_and_dtmf_both_ways() {
    let mut pair = user_initiated();
    let start = pair.now;
    pair.run(start + Duration::from_secs(5));
    assert!(pair.leg.is_connected(), "{:?}", pair.leg_events);
    assert!(pair.phone.is_connected(), "{:?}", pair.phone_events);
    assert!(pair.leg_events.contains(&WaLegEvent::Connected));

    let mut phone_audio = PhoneAudio::new(PhoneAudioConfig {
        tone_hz: Some(1_000.0),
        ..Default::default()
    })
    .unwrap();
    let mut far_audio = PhoneAudio::new(PhoneAudioConfig {
        tone_hz: Some(400.0),
        ..Default::default()
    })
    .unwrap();
    let mut leg_heard = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
    phone_audio.send_digits("5");
    far_audio.send_digits("#");
    let mut received_by_leg = Vec::new();
    for i in 0..100u32 {
        let at = pair.now + Duration::from_millis(20);
        pair.run(at);
        let _ = i;
        for p in phone_audio.handle_tick(pair.now) {
            pair.phone.send_rtp(&p, pair.now).unwrap();
        }
        for p in far_audio.handle_tick(pair.now) {
            pair.leg.send_rtp(&p, pair.now).unwrap();
        }
        pair.run(pair.now);
        for e in pair.leg_events.drain(..) {
            if let WaLegEvent::Rtp(p) = e {
                leg_heard.handle_rtp(&p, pair.now);
                received_by_leg.push(p);
            }
        }
        for e in pair.phone_events.drain(..) {
            if let WaLegEvent::Rtp(p) = e {
                phone_audio.handle_rtp(&p, pair.now);
            }
        }
    }
    let at_leg = leg_heard.report();
    assert_eq!(at_leg.tone.as_ref().unwrap().freq_hz, 1_000.0, "{at_leg:?}");
    assert_eq!(at_leg.digits, "5");
    assert_eq!(at_leg.lost_packets, 0);
    // Raw RTP: the phone's seq/ts/PT arrive untouched, on the phone's single SSRC.
    assert!(
        received_by_leg
            .iter()
            .all(|p| p.ssrc.0 == pair.phone.local_ssrc())
    );
    assert!(
        received_by_leg
            .windows(2)
            .all(|w| w[1].seq.0 == w[0].seq.0.wrapping_add(1))
    );
    assert_eq!(
        pair.leg.stats().rtp_packets_received,
        received_by_leg.len() as u64
    );
    assert!(pair.leg.stats().rtp_packets_sent >= 95);
    let at_phone = phone_audio.report();
    assert_eq!(
        at_phone.tone.as_ref().unwrap().freq_hz,
        400.0,
        "{at_phone:?}"
    );
    assert_eq!(at_phone.digits, "#");
    assert!(at_phone.packets_received >= 95, "{at_phone:?}");
}

#[test]
fn business_offer_answered_by_phone_with_either_dtls_role_connects() {
    for role in [SetupRole::Active, SetupRole::Passive] {
        let now = t0();
        let leg_cfg = WaLegConfig {
            candidates: vec![LEG.parse().unwrap()],
            ..WaLegConfig::default()
        };
        let (mut leg, offer) = WaLeg::offer(&leg_cfg, now).unwrap();
        let phone_cfg = PhoneConfig {
            candidates: vec![PHONE.parse().unwrap()],
            answer_setup: role,
            ..PhoneConfig::default()
        };
        let (phone, answer) = PhonePeer::answer(&phone_cfg, &offer, now).unwrap();
        let s = SdpSummary::parse(&answer);
        assert!(s.ice_lite);
        assert_eq!(s.setup, Some(role));
        assert_eq!(s.mid, SdpSummary::parse(&offer).mid);
        leg.accept_answer(&answer, now).unwrap();
        let mut pair = Pair::new(leg, phone, now);
        pair.run(now + Duration::from_secs(5));
        assert!(
            pair.leg.is_connected() && pair.phone.is_connected(),
            "{role:?} {:?}",
            pair.leg_events
        );
        let ssrc = pair.leg.local_ssrc().unwrap();
        assert_eq!(SdpSummary::parse(&offer).ssrcs, vec![ssrc]);
    }
}

#[test]
fn hang_up_closes_both_sides() {
    let mut pair = user_initiated();
    let t = pair.now + Duration::from_secs(5);
    pair.run(t);
    assert!(pair.leg.is_connected());
    pair.leg.hang_up(pair.now);
    let t = pair.now + Duration::from_secs(2);
    pair.run(t);
    assert!(pair.leg.is_terminated());
    assert!(pair.leg_events.contains(&WaLegEvent::Closed));
    assert!(pair.phone.is_terminated(), "{:?}", pair.phone_events);
}

/// A user-initiated call with the given certificate sources, not yet connected.
fn call_with(
    leg_dtls: &DtlsCertificates,
    phone_dtls: &DtlsCertificates,
    now: Instant,
) -> (Pair, String, String) {
    let phone_cfg = PhoneConfig {
        candidates: vec![PHONE.parse().unwrap()],
        dtls: phone_dtls.clone(),
        ..PhoneConfig::default()
    };
    let (phone, offer) = PhonePeer::offer(&phone_cfg, now).unwrap();
    let leg_cfg = WaLegConfig {
        candidates: vec![LEG.parse().unwrap()],
        dtls: leg_dtls.clone(),
        ..WaLegConfig::default()
    };
    let (leg, answer) = WaLeg::answer(&leg_cfg, &offer, now).unwrap();
    let mut pair = Pair::new(leg, phone, now);
    pair.phone.accept_answer(&answer, now).unwrap();
    (pair, offer, answer)
}

fn fingerprint(sdp: &str) -> String {
    SdpSummary::parse(sdp).fingerprint_sha256.unwrap()
}

/// One RTP packet each way; true when both arrived.
fn rtp_flows(pair: &mut Pair) -> bool {
    let mut tx = PhoneAudio::new(PhoneAudioConfig {
        tone_hz: Some(1_000.0),
        ..Default::default()
    })
    .unwrap();
    pair.leg_events.clear();
    pair.phone_events.clear();
    for p in tx.handle_tick(pair.now) {
        pair.phone.send_rtp(&p, pair.now).unwrap();
        pair.leg.send_rtp(&p, pair.now).unwrap();
    }
    pair.run(pair.now);
    let rtp = |events: &[WaLegEvent]| events.iter().any(|e| matches!(e, WaLegEvent::Rtp(_)));
    rtp(&pair.leg_events) && rtp(&pair.phone_events)
}

#[test]
fn shared_certificate_serves_several_calls_and_matches_the_sdp_fingerprint() {
    let now = t0();
    let leg_dtls = DtlsCertificates::default();
    let phone_dtls = DtlsCertificates::default();
    let mut pairs = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..4 {
        let (pair, offer, answer) = call_with(&leg_dtls, &phone_dtls, now);
        // The a=fingerprint each side writes is the SHA-256 of the certificate it uses.
        assert_eq!(
            fingerprint(&answer),
            leg_dtls.current(now).unwrap().fingerprint_sha256()
        );
        assert_eq!(
            fingerprint(&offer),
            phone_dtls.current(now).unwrap().fingerprint_sha256()
        );
        answers.push(answer);
        pairs.push(pair);
    }
    // The legs' ICE credentials stay per call; only the certificate is shared.
    let ufrags: std::collections::HashSet<_> = answers
        .iter()
        .map(|a| SdpSummary::parse(a).ice_ufrag.unwrap())
        .collect();
    assert_eq!(ufrags.len(), 4);
    assert_ne!(
        fingerprint(&answers[0]),
        phone_dtls.current(now).unwrap().fingerprint_sha256()
    );
    // All four run at once, each with its own DTLS session keyed from the same certificate.
    for pair in &mut pairs {
        pair.run(now + Duration::from_secs(5));
        assert!(pair.leg.is_connected(), "{:?}", pair.leg_events);
        assert!(pair.phone.is_connected(), "{:?}", pair.phone_events);
    }
    for pair in &mut pairs {
        assert!(rtp_flows(pair));
    }
    assert_eq!(leg_dtls.generated(), 1);
    assert_eq!(phone_dtls.generated(), 1);
}

#[test]
fn wrong_fingerprint_in_the_answer_fails_the_handshake() {
    // The check the shared certificate relies on is live: the phone rejects a leg whose
    // certificate does not match the answer's fingerprint.
    let now = t0();
    let leg_dtls = DtlsCertificates::default();
    let phone_dtls = DtlsCertificates::default();
    let phone_cfg = PhoneConfig {
        candidates: vec![PHONE.parse().unwrap()],
        dtls: phone_dtls,
        ..PhoneConfig::default()
    };
    let (phone, offer) = PhonePeer::offer(&phone_cfg, now).unwrap();
    let leg_cfg = WaLegConfig {
        candidates: vec![LEG.parse().unwrap()],
        dtls: leg_dtls.clone(),
        ..WaLegConfig::default()
    };
    let (leg, answer) = WaLeg::answer(&leg_cfg, &offer, now).unwrap();
    let other = DtlsIdentity::generate(now).unwrap();
    let real = leg_dtls.current(now).unwrap();
    assert_ne!(other.fingerprint_sha256(), real.fingerprint_sha256());
    let forged = answer.replace(real.fingerprint_sha256(), other.fingerprint_sha256());
    assert_ne!(forged, answer);
    let mut pair = Pair::new(leg, phone, now);
    pair.phone.accept_answer(&forged, now).unwrap();
    pair.run(now + Duration::from_secs(5));
    assert!(!pair.phone.is_connected(), "{:?}", pair.phone_events);
}

#[test]
fn rotation_gives_new_calls_a_new_certificate_and_keeps_running_calls() {
    let now = t0();
    let leg_dtls = DtlsCertificates::new(Duration::from_secs(60));
    let phone_dtls = DtlsCertificates::new(Duration::from_secs(60));
    let (mut first, _, first_answer) = call_with(&leg_dtls, &phone_dtls, now);
    first.run(now + Duration::from_secs(5));
    assert!(first.leg.is_connected() && first.phone.is_connected());

    // Before the period ends: the same certificate.
    let t = now + Duration::from_secs(30);
    let (_, _, same) = call_with(&leg_dtls, &phone_dtls, t);
    assert_eq!(fingerprint(&same), fingerprint(&first_answer));
    assert_eq!(leg_dtls.generated(), 1);

    // After it: a new one for new calls, with matching SDP, and the call connects.
    first.run(now + Duration::from_secs(61));
    let t = first.now;
    let (mut second, offer, answer) = call_with(&leg_dtls, &phone_dtls, t);
    assert_ne!(fingerprint(&answer), fingerprint(&first_answer));
    assert_eq!(
        fingerprint(&answer),
        leg_dtls.current(t).unwrap().fingerprint_sha256()
    );
    assert_eq!(
        fingerprint(&offer),
        phone_dtls.current(t).unwrap().fingerprint_sha256()
    );
    assert_eq!(leg_dtls.generated(), 2);
    second.run(t + Duration::from_secs(5));
    assert!(second.leg.is_connected() && second.phone.is_connected());
    assert!(rtp_flows(&mut second));

    // The call that started with the old certificate still carries media.
    first.now = second.now;
    assert!(first.leg.is_connected(), "{:?}", first.leg_events);
    assert!(rtp_flows(&mut first));
}

#[test]
fn per_leg_certificates_differ_between_calls() {
    let now = t0();
    let leg_dtls = DtlsCertificates::per_leg();
    let phone_dtls = DtlsCertificates::per_leg();
    let (mut a, _, answer_a) = call_with(&leg_dtls, &phone_dtls, now);
    let (_, _, answer_b) = call_with(&leg_dtls, &phone_dtls, now);
    assert_ne!(fingerprint(&answer_a), fingerprint(&answer_b));
    assert_eq!(leg_dtls.generated(), 2);
    a.run(now + Duration::from_secs(5));
    assert!(a.leg.is_connected() && a.phone.is_connected());
}

/// Meta's Opus has neither NACK nor RTX (reference §6.6): the leg must not run str0m's NACK
/// timer (every 33 ms per call) while audio streams, and nor must the phone.
#[test]
fn streaming_call_wakes_the_leg_rarely_between_packets() {
    let mut pair = user_initiated();
    let start = pair.now;
    pair.run(start + Duration::from_secs(5));
    assert!(pair.leg.is_connected(), "{:?}", pair.leg_events);
    let mut tx = PhoneAudio::new(PhoneAudioConfig {
        tone_hz: Some(1_000.0),
        ..Default::default()
    })
    .unwrap();
    // settle, then count the leg's own timeouts over 2 s of audio both ways
    let mut received = 0;
    for i in 0..150u32 {
        if i == 50 {
            pair.leg_timeouts = 0;
        }
        let at = pair.now + Duration::from_millis(20);
        pair.run(at);
        for p in tx.handle_tick(pair.now) {
            pair.phone.send_rtp(&p, pair.now).unwrap();
            pair.leg.send_rtp(&p, pair.now).unwrap();
        }
        pair.run(pair.now);
        received += pair
            .leg_events
            .drain(..)
            .filter(|e| matches!(e, WaLegEvent::Rtp(_)))
            .count();
    }
    assert!(received >= 145, "{received} packets reached the leg");
    assert!(
        pair.leg_timeouts <= 10,
        "{} leg timeouts in 2 s of audio",
        pair.leg_timeouts
    );
}
