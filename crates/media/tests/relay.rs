//! The relay core on a virtual clock: audio crosses in both directions through every PBX
//! codec, loss is concealed, silence and hold keep WhatsApp fed, DTMF is converted once.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use whatsip_media::tone::{ToneGenerator, dominant_frequency, level_dbfs};
use whatsip_media::{
    AudioDecoder, AudioEncoder, Codec, Direction, DtmfPayload, Leg, MediaRelay, OpusDecoder,
    OpusEncoder, OpusEncoderConfig, RelayConfig, RelayEvent, RtpPacket, RtpTs, SeqNo, Ssrc,
    TelephoneEvent, Transmit,
};

#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn config(codec: Codec, pt: u8) -> RelayConfig {
    RelayConfig {
        pbx_codec: codec,
        pbx_pt: pt,
        ..RelayConfig::default()
    }
}

/// Plays the WhatsApp phone: a tone, Opus-encoded at 48 kHz, PT 111.
struct WaPhone {
    tone: ToneGenerator,
    enc: OpusEncoder,
    seq: SeqNo,
    ts: RtpTs,
}

impl WaPhone {
    fn new(freq: f64) -> Self {
        Self {
            tone: ToneGenerator::sine(freq, -12.0, 48_000),
            enc: OpusEncoder::new(48_000, &OpusEncoderConfig::default()).unwrap(),
            seq: SeqNo(65_500), // wraps early in every test
            ts: RtpTs(u32::MAX - 5000),
        }
    }

    fn next(&mut self) -> RtpPacket {
        let pcm = self.tone.next_frame(960);
        let mut payload = Vec::new();
        self.enc.encode(&pcm, &mut payload).unwrap();
        let p = RtpPacket {
            pt: 111,
            seq: self.seq,
            ts: self.ts,
            ssrc: Ssrc(0x5eed),
            marker: false,
            payload: Bytes::from(payload),
        };
        self.seq = self.seq.next();
        self.ts = self.ts.advance(960);
        p
    }
}

/// Plays the PBX: a tone in the negotiated codec.
struct PbxPhone {
    tone: ToneGenerator,
    enc: AudioEncoder,
    pt: u8,
    samples: usize,
    ts_step: u32,
    seq: SeqNo,
    ts: RtpTs,
}

impl PbxPhone {
    fn new(codec: Codec, pt: u8, freq: f64) -> Self {
        Self {
            tone: ToneGenerator::sine(freq, -12.0, codec.sample_rate_hz()),
            enc: AudioEncoder::new(codec, &OpusEncoderConfig::default()).unwrap(),
            pt,
            samples: codec.sample_rate_hz() as usize / 50,
            ts_step: codec.clock_rate_hz() / 50,
            seq: SeqNo(65_530),
            ts: RtpTs(0),
        }
    }

    fn next(&mut self) -> RtpPacket {
        let pcm = self.tone.next_frame(self.samples);
        let mut payload = Vec::new();
        self.enc.encode(&pcm, &mut payload).unwrap();
        let p = RtpPacket {
            pt: self.pt,
            seq: self.seq,
            ts: self.ts,
            ssrc: Ssrc(0xb0b),
            marker: false,
            payload: Bytes::from(payload),
        };
        self.seq = self.seq.next();
        self.ts = self.ts.advance(self.ts_step);
        p
    }
}

struct Run {
    relay: MediaRelay,
    ptime: Duration,
    now: Instant,
    to_wa: Vec<RtpPacket>,
    to_pbx: Vec<RtpPacket>,
    events: Vec<RelayEvent>,
}

impl Run {
    fn new(config: RelayConfig) -> Self {
        let now = epoch();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let ptime = config.ptime;
        let relay = MediaRelay::new(config, &mut rng, now).unwrap();
        Self {
            relay,
            ptime,
            now,
            to_wa: Vec::new(),
            to_pbx: Vec::new(),
            events: Vec::new(),
        }
    }

    fn feed(&mut self, leg: Leg, p: RtpPacket) {
        self.relay.handle_packet(leg, p, self.now);
        self.drain();
    }

    /// One frame time passes: the relay's tick runs if it falls due within it (an Opus
    /// pass-through relay with both sides streaming needs none on most frames).
    fn tick(&mut self) {
        let due = self.relay.poll_timeout().unwrap();
        let frame_end = self.now + self.ptime;
        if due > frame_end {
            self.now = frame_end;
            return;
        }
        self.now = due.max(self.now);
        self.relay.handle_tick(self.now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(Transmit { leg, packet, .. }) = self.relay.poll_transmit() {
            match leg {
                Leg::Wa => self.to_wa.push(packet),
                Leg::Pbx => self.to_pbx.push(packet),
            }
        }
        while let Some(e) = self.relay.poll_event() {
            self.events.push(e);
        }
    }
}

fn decode_all(codec: Codec, packets: &[RtpPacket], pt: u8) -> Vec<i16> {
    let mut dec = AudioDecoder::new(codec).unwrap();
    let mut pcm = Vec::new();
    for p in packets.iter().filter(|p| p.pt == pt) {
        dec.decode(&p.payload, &mut pcm).unwrap();
    }
    pcm
}

fn assert_tone(pcm: &[i16], rate: u32, freq: f64, what: &str) {
    assert_tone_min(pcm, rate, freq, 0.8, what);
}

fn assert_tone_min(pcm: &[i16], rate: u32, freq: f64, min_fraction: f64, what: &str) {
    let (f, frac) = dominant_frequency(pcm, rate, 200.0, f64::from(rate) / 2.0 - 100.0, 10.0)
        .unwrap_or_else(|| panic!("{what}: silence"));
    assert!((f - freq).abs() <= 10.0, "{what}: dominant {f} Hz");
    assert!(
        frac > min_fraction,
        "{what}: only {frac} of the power at {f} Hz"
    );
    assert!(level_dbfs(pcm) > -20.0, "{what}: level {}", level_dbfs(pcm));
}

/// Checks the packets one leg received: single SSRC, seq +1 each, ts +step each.
fn assert_continuous(packets: &[RtpPacket], ts_step: u32) {
    let ssrcs: HashSet<_> = packets.iter().map(|p| p.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "one SSRC for the whole call");
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.next(), "no seq gap or reuse");
        assert_eq!(
            w[1].ts.diff(w[0].ts),
            ts_step as i32,
            "ts advances one frame"
        );
    }
}

#[test]
fn tone_from_whatsapp_crosses_to_pbx_in_every_codec() {
    for (codec, pt) in [(Codec::Pcmu, 0), (Codec::Pcma, 8), (Codec::G722, 9)] {
        let mut run = Run::new(config(codec, pt));
        run.relay.open_wa_gate(run.now);
        let mut phone = WaPhone::new(1000.0);
        for _ in 0..100 {
            let p = phone.next();
            run.feed(Leg::Wa, p);
            run.tick();
        }
        assert_eq!(run.to_pbx.len(), 100, "{codec}: one packet per tick");
        assert_continuous(&run.to_pbx, 160);
        assert!(
            run.to_pbx
                .iter()
                .all(|p| p.pt == pt && p.payload.len() == 160)
        );
        let pcm = decode_all(codec, &run.to_pbx, pt);
        let rate = codec.sample_rate_hz();
        assert_tone(&pcm[pcm.len() / 2..], rate, 1000.0, &format!("wa->{codec}"));
        assert_eq!(run.events[0], RelayEvent::FirstPacket { leg: Leg::Wa });
    }
}

#[test]
fn tone_from_pbx_crosses_to_whatsapp_as_opus() {
    for (codec, pt) in [(Codec::Pcmu, 0), (Codec::Pcma, 8), (Codec::G722, 9)] {
        let mut run = Run::new(config(codec, pt));
        run.relay.open_wa_gate(run.now);
        let mut pbx = PbxPhone::new(codec, pt, 1000.0);
        for _ in 0..100 {
            let p = pbx.next();
            run.feed(Leg::Pbx, p);
            run.tick();
        }
        assert_eq!(run.to_wa.len(), 100);
        assert_continuous(&run.to_wa, 960);
        assert!(run.to_wa.iter().all(|p| p.pt == 111));
        let mut dec = OpusDecoder::new(48_000).unwrap();
        let mut pcm = Vec::new();
        for p in &run.to_wa {
            dec.decode(&p.payload, &mut pcm).unwrap();
        }
        assert_eq!(pcm.len(), 100 * 960, "{codec}: 20 ms per packet");
        assert_tone(
            &pcm[pcm.len() / 2..],
            48_000,
            1000.0,
            &format!("{codec}->wa"),
        );
    }
}

#[test]
fn opus_passes_through_untouched_with_rewritten_ids() {
    let mut cfg = config(Codec::Opus, 96);
    cfg.pbx_dtmf = Some(TelephoneEvent {
        pt: 101,
        clock_rate_hz: 48_000,
    });
    let mut run = Run::new(cfg);
    assert!(run.relay.is_passthrough());
    run.relay.open_wa_gate(run.now);
    let mut wa = WaPhone::new(1000.0);
    let mut pbx = PbxPhone::new(Codec::Opus, 96, 440.0);
    let mut wa_sent = Vec::new();
    let mut pbx_sent = Vec::new();
    for _ in 0..60 {
        let a = wa.next();
        let b = pbx.next();
        wa_sent.push(a.payload.clone());
        pbx_sent.push(b.payload.clone());
        run.feed(Leg::Wa, a);
        run.feed(Leg::Pbx, b);
        run.tick();
    }
    // after the jitter buffer's start-up silence, the payloads are the senders' bytes
    let to_pbx: Vec<_> = run.to_pbx.iter().map(|p| p.payload.clone()).collect();
    let start = to_pbx.iter().position(|p| *p == wa_sent[0]).unwrap();
    assert!(start <= 2, "jitter buffer delay {start} frames");
    assert_eq!(to_pbx[start..], wa_sent[..60 - start]);
    let to_wa: Vec<_> = run.to_wa.iter().map(|p| p.payload.clone()).collect();
    let start = to_wa.iter().position(|p| *p == pbx_sent[0]).unwrap();
    assert_eq!(to_wa[start..], pbx_sent[..60 - start]);
    assert_continuous(&run.to_wa, 960);
    assert_continuous(&run.to_pbx, 960);
    assert!(
        run.to_pbx
            .iter()
            .all(|p| p.pt == 96 && p.ssrc != Ssrc(0x5eed))
    );
    assert!(
        run.to_wa
            .iter()
            .all(|p| p.pt == 111 && p.ssrc != Ssrc(0xb0b))
    );
}

#[test]
fn ten_percent_loss_is_concealed_without_gaps() {
    let mut run = Run::new(config(Codec::Pcmu, 0));
    run.relay.open_wa_gate(run.now);
    let mut phone = WaPhone::new(1000.0);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let mut lost = 0;
    for _ in 0..500 {
        let p = phone.next();
        if rng.random_bool(0.1) {
            lost += 1;
        } else {
            run.feed(Leg::Wa, p);
        }
        run.tick();
    }
    assert!(lost > 30, "the test must actually lose packets: {lost}");
    assert_eq!(run.to_pbx.len(), 500);
    assert_continuous(&run.to_pbx, 160);
    let pcm = decode_all(Codec::Pcmu, &run.to_pbx, 0);
    // after start-up, no 20 ms frame of the output is silent (PLC/FEC filled every loss)
    let silent: Vec<usize> = pcm
        .chunks(160)
        .enumerate()
        .skip(5)
        .filter(|(_, f)| level_dbfs(f) < -40.0)
        .map(|(i, _)| i)
        .collect();
    assert!(silent.is_empty(), "silent frames at {silent:?}");
    // concealment smears some power around the tone; it must still dominate
    assert_tone_min(&pcm[800..], 8000, 1000.0, 0.6, "lossy wa->pcmu");
    let stats = run.relay.stats();
    // RFC 3550 counts up to the highest sequence received: a loss at the very end is unseen
    assert!(
        (lost - 1..=lost).contains(&stats.wa.packets_lost),
        "{}",
        stats.wa.packets_lost
    );
    assert!(stats.wa.fec_frames + stats.wa.concealed_frames >= lost as u64 - 2);
    assert!(stats.wa.fec_frames > 0, "in-band FEC used");
}

#[test]
fn silent_pbx_keeps_whatsapp_fed_and_times_out_only_the_pbx_leg() {
    let mut cfg = config(Codec::Pcmu, 0);
    cfg.media_timeout = Duration::from_secs(30);
    let mut run = Run::new(cfg);
    let mut phone = WaPhone::new(1000.0);
    // before accept: nothing toward WhatsApp
    for _ in 0..50 {
        let p = phone.next();
        run.feed(Leg::Wa, p);
        run.tick();
    }
    assert!(run.to_wa.is_empty(), "no media before the gate opens");
    run.relay.open_wa_gate(run.now);
    // 40 s of a PBX that never sends
    for _ in 0..2000 {
        let p = phone.next();
        run.feed(Leg::Wa, p);
        run.tick();
    }
    assert_eq!(run.to_wa.len(), 2000);
    assert_continuous(&run.to_wa, 960);
    assert!(
        run.to_wa[0].marker,
        "first packet after the gate marks a talk spurt"
    );
    let timeouts: Vec<_> = run
        .events
        .iter()
        .filter(|e| matches!(e, RelayEvent::MediaTimeout { .. }))
        .collect();
    assert_eq!(timeouts.len(), 1, "{timeouts:?}");
    assert!(matches!(
        timeouts[0],
        RelayEvent::MediaTimeout { leg: Leg::Pbx, .. }
    ));
    // the watchdog counts one intervention per silence, not per frame
    assert_eq!(run.relay.comfort_noise_runs(), 1);
    assert_eq!(run.relay.media_timeouts(), 1);
    let stats = run.relay.stats();
    assert_eq!((stats.comfort_noise_runs, stats.media_timeouts), (1, 1));
}

#[test]
fn watchdog_counts_each_pbx_silence_of_a_second_and_not_a_talking_pbx() {
    let mut run = Run::new(config(Codec::Pcma, 8));
    run.relay.open_wa_gate(run.now);
    let mut pbx = PbxPhone::new(Codec::Pcma, 8, 1000.0);
    // 1 s of talk: not an intervention (the relay was created at the first tick)
    for _ in 0..49 {
        let p = pbx.next();
        run.feed(Leg::Pbx, p);
        run.tick();
    }
    assert_eq!(run.relay.comfort_noise_runs(), 0);
    // a 0.5 s hiccup is not one either; a 2 s silence is, once
    for silence in [25, 100] {
        for _ in 0..silence {
            run.tick();
        }
        for _ in 0..50 {
            let p = pbx.next();
            run.feed(Leg::Pbx, p);
            run.tick();
        }
    }
    assert_eq!(run.relay.comfort_noise_runs(), 1);
    assert_eq!(run.relay.media_timeouts(), 0);
    assert_eq!(
        run.to_wa.len(),
        49 + 25 + 50 + 100 + 50,
        "whatsapp fed every ptime"
    );
}

#[test]
fn pbx_hold_stops_pbx_media_and_not_whatsapp() {
    let mut cfg = config(Codec::Pcmu, 0);
    cfg.media_timeout = Duration::from_secs(5);
    let mut run = Run::new(cfg);
    run.relay.open_wa_gate(run.now);
    let mut wa = WaPhone::new(1000.0);
    let mut pbx = PbxPhone::new(Codec::Pcmu, 0, 500.0);
    for _ in 0..50 {
        let (a, b) = (wa.next(), pbx.next());
        run.feed(Leg::Wa, a);
        run.feed(Leg::Pbx, b);
        run.tick();
    }
    // re-INVITE a=inactive: PBX neither sends nor wants media, for 10 s
    run.relay.set_pbx_direction(Direction::Inactive, run.now);
    let before = run.to_pbx.len();
    for _ in 0..500 {
        let a = wa.next();
        run.feed(Leg::Wa, a);
        run.tick();
    }
    assert_eq!(run.to_pbx.len(), before, "nothing sent to an inactive PBX");
    assert_eq!(run.to_wa.len(), 550, "WhatsApp keeps receiving during hold");
    assert!(
        !run.events
            .iter()
            .any(|e| matches!(e, RelayEvent::MediaTimeout { .. })),
        "hold is not a media timeout"
    );
    run.relay.set_pbx_direction(Direction::SendRecv, run.now);
    let a = wa.next();
    run.feed(Leg::Wa, a);
    run.tick();
    assert_eq!(run.to_pbx.len(), before + 1);
    assert!(
        run.to_pbx.last().unwrap().marker,
        "resume starts a talk spurt"
    );
}

#[test]
fn hold_sound_plays_toward_whatsapp_while_the_pbx_holds() {
    let mut cfg = config(Codec::Opus, 96);
    let tone: Vec<i16> = ToneGenerator::sine(400.0, -10.0, 8000).next_frame(8000);
    cfg.hold_sound = Some(tone.into());
    let mut run = Run::new(cfg);
    run.relay.open_wa_gate(run.now);
    for _ in 0..10 {
        run.tick();
    }
    run.relay.set_pbx_direction(Direction::RecvOnly, run.now);
    for _ in 0..100 {
        run.tick();
    }
    assert_continuous(&run.to_wa, 960);
    let mut dec = OpusDecoder::new(48_000).unwrap();
    let mut pcm = Vec::new();
    for p in &run.to_wa[60..] {
        dec.decode(&p.payload, &mut pcm).unwrap();
    }
    assert_tone(&pcm, 48_000, 400.0, "hold sound");
    // before the hold: silence frames, not music
    let mut dec = OpusDecoder::new(48_000).unwrap();
    let mut pcm = Vec::new();
    for p in &run.to_wa[..10] {
        dec.decode(&p.payload, &mut pcm).unwrap();
    }
    assert!(level_dbfs(&pcm) < -60.0);
}

#[test]
fn rtcp_reports_loss_and_learns_round_trip_time() {
    use std::time::{SystemTime, UNIX_EPOCH};
    use whatsip_media::rtcp::{self, ReportBlock};

    let mut run = Run::new(config(Codec::Pcmu, 0));
    run.relay.open_wa_gate(run.now);
    let mut pbx = PbxPhone::new(Codec::Pcmu, 0, 500.0);
    for i in 0..50 {
        let p = pbx.next();
        if i % 10 != 3 {
            run.feed(Leg::Pbx, p); // 5 of 50 lost
        }
        run.tick();
    }
    let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let sr = run.relay.rtcp_report(Leg::Pbx, "whatsip", run.now, wall);
    let reports = rtcp::parse_reports(&sr).unwrap();
    let ours = run.relay.ssrc(Leg::Pbx);
    assert_eq!(reports[0].ssrc, ours);
    let sender = reports[0].sender.expect("we have sent, so this is an SR");
    assert_eq!(sender.packet_count, 50);
    assert_eq!(sender.octet_count, 50 * 160);
    let block = reports[0].blocks[0];
    assert_eq!(block.ssrc, Ssrc(0xb0b));
    assert_eq!(block.cumulative_lost, 5);
    assert!(block.fraction_lost > 0);
    // the PBX answers 150 ms later, having held our SR for 100 ms
    let rr = {
        let mut out = Vec::new();
        let echo = ReportBlock {
            ssrc: ours,
            fraction_lost: 0,
            cumulative_lost: 2,
            highest_seq: 1000,
            jitter: 7,
            lsr: rtcp::ntp_mid32(sender.ntp),
            dlsr: 65_536 / 10,
        };
        rtcp::build_report(Ssrc(0xb0b), None, &[echo], "pbx", &mut out);
        out
    };
    let later: SystemTime = wall + Duration::from_millis(150);
    run.relay.handle_rtcp(Leg::Pbx, &rr, run.now, later);
    run.relay
        .handle_rtcp(Leg::Pbx, &[0x80, 201, 0, 9], run.now, later); // truncated: ignored
    let stats = run.relay.stats();
    let rtt = stats.pbx.rtt.expect("rtt learned");
    assert!(
        rtt.abs_diff(Duration::from_millis(50)) < Duration::from_millis(2),
        "{rtt:?}"
    );
    assert_eq!(stats.pbx.remote_packets_lost, 2);
    assert_eq!(stats.pbx.remote_jitter_ticks, 7);
}

fn event_packet(pt: u8, seq: u16, ts: u32, event: u8, end: bool, duration: u16) -> RtpPacket {
    RtpPacket {
        pt,
        seq: SeqNo(seq),
        ts: RtpTs(ts),
        ssrc: Ssrc(0x5eed),
        marker: duration <= 160 && !end,
        payload: Bytes::copy_from_slice(
            &DtmfPayload {
                event,
                end,
                volume: 10,
                duration,
            }
            .to_bytes(),
        ),
    }
}

#[test]
fn dtmf_from_whatsapp_reaches_pbx_once_with_converted_clock() {
    for (clock, factor) in [(8000u32, 1u16), (48_000, 6)] {
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.pbx_dtmf = Some(TelephoneEvent {
            pt: 101,
            clock_rate_hz: clock,
        });
        let mut run = Run::new(cfg);
        run.relay.open_wa_gate(run.now);
        let mut phone = WaPhone::new(1000.0);
        for _ in 0..10 {
            let p = phone.next();
            run.feed(Leg::Wa, p);
            run.tick();
        }
        // digit '7': 3 updates then 3 end retransmissions, one of them duplicated on the wire
        let ts = phone.ts.0;
        let mut seq = phone.seq.0;
        for (end, dur) in [
            (false, 160),
            (false, 320),
            (false, 480),
            (true, 640),
            (true, 640),
        ] {
            run.feed(Leg::Wa, event_packet(126, seq, ts, 7, end, dur));
            seq = seq.wrapping_add(1);
            run.tick();
        }
        run.feed(
            Leg::Wa,
            event_packet(126, seq.wrapping_sub(1), ts, 7, true, 640),
        );
        run.feed(Leg::Wa, event_packet(126, seq, ts, 7, true, 640));
        let events: Vec<_> = run.to_pbx.iter().filter(|p| p.pt == 101).collect();
        assert_eq!(
            events.len(),
            6,
            "every event packet once, the wire duplicate dropped"
        );
        assert!(events[0].marker);
        assert!(
            events
                .iter()
                .all(|p| p.ts == events[0].ts && p.ssrc == events[0].ssrc)
        );
        let durs: Vec<u16> = events
            .iter()
            .map(|p| DtmfPayload::parse(&p.payload).unwrap().duration)
            .collect();
        assert_eq!(durs, [160, 320, 480, 640, 640, 640].map(|d| d * factor));
        let digits: Vec<_> = run
            .events
            .iter()
            .filter_map(|e| match e {
                RelayEvent::DtmfDigit {
                    from,
                    digit,
                    duration,
                    inband,
                } => Some((*from, *digit, *duration, *inband)),
                _ => None,
            })
            .collect();
        assert_eq!(digits, [(Leg::Wa, '7', Duration::from_millis(80), false)]);
        // sequence numbers toward the PBX stay unique across audio and events
        let seqs: HashSet<_> = run.to_pbx.iter().map(|p| p.seq).collect();
        assert_eq!(seqs.len(), run.to_pbx.len());
    }
}

#[test]
fn dtmf_from_pbx_reaches_whatsapp_on_pt_126_at_8k() {
    let mut cfg = config(Codec::G722, 9);
    cfg.pbx_dtmf = Some(TelephoneEvent {
        pt: 101,
        clock_rate_hz: 8000,
    });
    let mut run = Run::new(cfg);
    run.relay.open_wa_gate(run.now);
    for (i, (end, dur)) in [(false, 400), (true, 800), (true, 800), (true, 800)]
        .into_iter()
        .enumerate()
    {
        let mut p = event_packet(101, 100 + i as u16, 5000, 11, end, dur);
        p.ssrc = Ssrc(0xb0b);
        run.feed(Leg::Pbx, p);
        run.tick();
    }
    let events: Vec<_> = run.to_wa.iter().filter(|p| p.pt == 126).collect();
    assert_eq!(events.len(), 4);
    assert_eq!(
        DtmfPayload::parse(&events[3].payload).unwrap().duration,
        800
    );
    // no event payload is ever sent as Opus audio
    assert!(
        run.to_wa
            .iter()
            .filter(|p| p.pt == 111)
            .all(|p| p.payload.len() != 4
                || DtmfPayload::parse(&p.payload).is_none_or(|d| d.event != 11))
    );
    let digits = run
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                RelayEvent::DtmfDigit {
                    from: Leg::Pbx,
                    digit: '#',
                    ..
                }
            )
        })
        .count();
    assert_eq!(digits, 1);
}

#[test]
fn dtmf_toward_a_pbx_without_telephone_event_becomes_tones() {
    let mut cfg = config(Codec::Pcmu, 0);
    cfg.pbx_dtmf = None;
    let mut run = Run::new(cfg);
    run.relay.open_wa_gate(run.now);
    let mut phone = WaPhone::new(1000.0);
    for _ in 0..10 {
        let p = phone.next();
        run.feed(Leg::Wa, p);
        run.tick();
    }
    let before = run.to_pbx.len();
    let ts = phone.ts.0;
    for (i, (end, dur)) in [
        (false, 160),
        (false, 320),
        (false, 480),
        (false, 640),
        (true, 800),
    ]
    .into_iter()
    .enumerate()
    {
        run.feed(Leg::Wa, event_packet(126, 100 + i as u16, ts, 9, end, dur));
        run.tick();
    }
    assert!(
        run.to_pbx.iter().all(|p| p.pt == 0),
        "no RFC 4733 toward this PBX"
    );
    let pcm = decode_all(Codec::Pcmu, &run.to_pbx[before..], 0);
    let mut det = whatsip_media::tone::DtmfDetector::new(8000, 2);
    let digits: Vec<char> = pcm.chunks(160).filter_map(|f| det.push_block(f)).collect();
    assert_eq!(digits, ['9']);
    let reported = run
        .events
        .iter()
        .filter(|e| matches!(e, RelayEvent::DtmfDigit { digit: '9', .. }))
        .count();
    assert_eq!(reported, 1);
}

#[test]
fn relay_originated_dtmf_follows_rfc4733_on_both_legs() {
    let mut cfg = config(Codec::Opus, 96);
    cfg.pbx_dtmf = Some(TelephoneEvent {
        pt: 101,
        clock_rate_hz: 48_000,
    });
    let mut run = Run::new(cfg);
    run.relay.open_wa_gate(run.now);
    run.tick();
    run.relay
        .send_dtmf(Leg::Wa, '#', Duration::from_millis(100))
        .unwrap();
    run.relay
        .send_dtmf(Leg::Wa, '1', Duration::from_millis(40))
        .unwrap();
    run.relay
        .send_dtmf(Leg::Pbx, '7', Duration::from_millis(60))
        .unwrap();
    assert!(run.relay.send_dtmf(Leg::Wa, 'x', Duration::ZERO).is_err());
    for _ in 0..20 {
        run.tick();
    }
    let wa: Vec<(u8, bool, u16, u32, bool)> = run
        .to_wa
        .iter()
        .filter(|p| p.pt == 126)
        .map(|p| {
            let d = DtmfPayload::parse(&p.payload).unwrap();
            (d.event, d.end, d.duration, p.ts.0, p.marker)
        })
        .collect();
    let ts0 = wa[0].3;
    let ts1 = wa[7].3;
    assert_eq!(
        wa,
        [
            (11, false, 160, ts0, true),
            (11, false, 320, ts0, false),
            (11, false, 480, ts0, false),
            (11, false, 640, ts0, false),
            (11, true, 800, ts0, false),
            (11, true, 800, ts0, false),
            (11, true, 800, ts0, false),
            (1, false, 160, ts1, true),
            (1, true, 320, ts1, false),
            (1, true, 320, ts1, false),
            (1, true, 320, ts1, false),
        ]
    );
    assert_eq!(
        ts1.wrapping_sub(ts0),
        7 * 960,
        "the second digit starts 7 frames later"
    );
    let pbx: Vec<u16> = run
        .to_pbx
        .iter()
        .filter(|p| p.pt == 101)
        .map(|p| DtmfPayload::parse(&p.payload).unwrap().duration)
        .collect();
    assert_eq!(
        pbx,
        [960, 1920, 2880, 2880, 2880],
        "48 kHz clock on the PBX leg"
    );
    assert_continuous_seq(&run.to_wa);
    let mut cfg = config(Codec::Pcmu, 0);
    cfg.pbx_dtmf = None;
    let mut no_te = Run::new(cfg);
    assert!(
        no_te
            .relay
            .send_dtmf(Leg::Pbx, '1', Duration::from_millis(100))
            .is_err()
    );
}

fn assert_continuous_seq(packets: &[RtpPacket]) {
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.next());
    }
}

#[test]
fn inband_dtmf_from_pbx_is_detected_once() {
    let mut cfg = config(Codec::Pcmu, 0);
    cfg.inband_dtmf_detection = true;
    let mut run = Run::new(cfg);
    run.relay.open_wa_gate(run.now);
    let mut enc = AudioEncoder::new(Codec::Pcmu, &OpusEncoderConfig::default()).unwrap();
    let mut tone = ToneGenerator::dtmf('5', 8000).unwrap();
    for i in 0..30u16 {
        let pcm = if (5..10).contains(&i) {
            tone.next_frame(160)
        } else {
            vec![0; 160]
        };
        let mut payload = Vec::new();
        enc.encode(&pcm, &mut payload).unwrap();
        let p = RtpPacket {
            pt: 0,
            seq: SeqNo(i),
            ts: RtpTs(u32::from(i) * 160),
            ssrc: Ssrc(1),
            marker: false,
            payload: Bytes::from(payload),
        };
        run.feed(Leg::Pbx, p);
        run.tick();
    }
    let digits: Vec<_> = run
        .events
        .iter()
        .filter_map(|e| match e {
            RelayEvent::DtmfDigit {
                digit,
                inband: true,
                ..
            } => Some(*digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits, ['5']);
}

#[test]
fn transcoded_frames_match_ptime() {
    for ptime_ms in [10u64, 20, 40, 60] {
        for (codec, pt, bytes_per_ms) in [
            (Codec::Pcmu, 0, 8),
            (Codec::Pcma, 8, 8),
            (Codec::G722, 9, 8),
        ] {
            let mut cfg = config(codec, pt);
            cfg.ptime = Duration::from_millis(ptime_ms);
            let mut run = Run::new(cfg);
            run.relay.open_wa_gate(run.now);
            for _ in 0..10 {
                run.tick();
            }
            assert_eq!(run.to_pbx.len(), 10);
            for p in &run.to_pbx {
                assert_eq!(
                    p.payload.len() as u64,
                    bytes_per_ms * ptime_ms,
                    "{codec} {ptime_ms}"
                );
            }
            assert_continuous(&run.to_pbx, 8 * ptime_ms as u32);
            assert_continuous(&run.to_wa, 48 * ptime_ms as u32);
            let mut dec = OpusDecoder::new(48_000).unwrap();
            let mut pcm = Vec::new();
            dec.decode(&run.to_wa[0].payload, &mut pcm).unwrap();
            assert_eq!(pcm.len() as u64, 48 * ptime_ms);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // Opus has no 30 ms frame (RFC 6716 §2.1.4), so a 30 ms ptime cannot be honoured
    for ms in [25, 30] {
        let bad = RelayConfig {
            ptime: Duration::from_millis(ms),
            ..RelayConfig::default()
        };
        assert!(MediaRelay::new(bad, &mut rng, epoch()).is_err());
    }
}

/// Runs the relay's ticks that fall due up to `until` (each at its own due time), then moves
/// the clock to `until`; returns how many ticks ran.
fn run_ticks_until(run: &mut Run, until: Instant) -> u32 {
    let mut ticks = 0;
    while let Some(due) = run.relay.poll_timeout().filter(|t| *t <= until) {
        run.now = due.max(run.now);
        run.relay.handle_tick(run.now);
        run.drain();
        ticks += 1;
        assert!(
            ticks < 10_000,
            "the relay keeps asking for ticks at {due:?}"
        );
    }
    run.now = until;
    ticks
}

#[test]
fn passthrough_ticks_rarely_while_both_sides_stream_yet_fills_and_times_out() {
    let mut cfg = config(Codec::Opus, 111);
    cfg.media_timeout = Duration::from_secs(2);
    let mut run = Run::new(cfg);
    run.relay.open_wa_gate(run.now);
    let mut wa = WaPhone::new(1000.0);
    let mut pbx = PbxPhone::new(Codec::Opus, 111, 440.0);
    let t0 = run.now;
    let frame = Duration::from_millis(20);

    // 2 s of both sides streaming: every packet crosses as it arrives, and the owner is woken
    // for a tick about every 5 frames (media-timeout checks), not every frame
    let mut ticks = 0;
    for i in 1..=100 {
        ticks += run_ticks_until(&mut run, t0 + frame * i);
        run.feed(Leg::Wa, wa.next());
        run.feed(Leg::Pbx, pbx.next());
    }
    assert!((15..=25).contains(&ticks), "{ticks} ticks for 100 frames");
    assert_eq!(run.to_pbx.len(), 100);
    // (the first tick or two fill in before the PBX's first packet)
    assert!(
        (100..=102).contains(&run.to_wa.len()),
        "{}",
        run.to_wa.len()
    );

    // the PBX goes quiet for 1 s: WhatsApp still gets one frame per 20 ms, the fill
    // starting within two frames of the PBX's last packet
    let before = run.to_wa.len();
    let mut first_fill = None;
    for i in 101..=150 {
        run_ticks_until(&mut run, t0 + frame * i);
        if first_fill.is_none() && run.to_wa.len() > before {
            first_fill = Some(i);
        }
        run.feed(Leg::Wa, wa.next());
    }
    assert!(
        first_fill.is_some_and(|i| i <= 102),
        "fill began at frame {first_fill:?}"
    );
    let filled = run.to_wa.len() - before;
    assert!(
        (48..=50).contains(&filled),
        "{filled} frames toward WhatsApp in 1 s"
    );

    // the PBX talks again and WhatsApp falls silent: the timeout still comes in time
    for i in 151..=280 {
        run_ticks_until(&mut run, t0 + frame * i);
        run.feed(Leg::Pbx, pbx.next());
    }
    let timeouts: Vec<_> = run
        .events
        .iter()
        .filter_map(|e| match e {
            RelayEvent::MediaTimeout { leg, silent_for } => Some((*leg, *silent_for)),
            _ => None,
        })
        .collect();
    assert_eq!(timeouts.len(), 1, "{timeouts:?}");
    assert_eq!(timeouts[0].0, Leg::Wa);
    assert!(
        timeouts[0].1 < Duration::from_secs(2) + 6 * frame,
        "{timeouts:?}"
    );
    assert_continuous(&run.to_wa, 960);
    assert_continuous(&run.to_pbx, 960);
}

#[test]
fn garbage_and_unexpected_payload_types_never_play_or_panic() {
    let mut run = Run::new(config(Codec::Pcmu, 0));
    run.relay.open_wa_gate(run.now);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for i in 0..200u16 {
        let len = rng.random_range(0..40);
        let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let pt = [111, 126, 0, 13, 101, 8][usize::from(i % 6)];
        let leg = if i % 2 == 0 { Leg::Wa } else { Leg::Pbx };
        run.feed(
            leg,
            RtpPacket {
                pt,
                seq: SeqNo(rng.random()),
                ts: RtpTs(rng.random()),
                ssrc: Ssrc(rng.random_range(0..3)),
                marker: rng.random(),
                payload: Bytes::from(payload),
            },
        );
        run.tick();
    }
    assert_eq!(run.to_wa.iter().filter(|p| p.pt == 111).count(), 200);
    let seqs: HashSet<_> = run.to_pbx.iter().map(|p| p.seq).collect();
    assert_eq!(seqs.len(), run.to_pbx.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the PBX's Opus stream does (loss, duplicates, reordering, a new SSRC,
    /// RFC 4733 events in between), the stream toward WhatsApp never reuses a sequence
    /// number, keeps one SSRC, and its timestamps only move forward.
    #[test]
    fn passthrough_never_reuses_a_sequence_number(
        start_seq in any::<u16>(),
        start_ts in any::<u32>(),
        ops in proptest::collection::vec((0u8..10, 0u16..4), 1..300),
    ) {
        let mut run = Run::new(config(Codec::Opus, 96));
        run.relay.open_wa_gate(run.now);
        let mut seq = start_seq;
        let mut ssrc = 1;
        for (op, jump) in ops {
            let ts = start_ts.wrapping_add(u32::from(seq.wrapping_sub(start_seq)) * 960);
            let mut p = RtpPacket {
                pt: 96,
                seq: SeqNo(seq.wrapping_add(jump)),
                ts: RtpTs(ts),
                ssrc: Ssrc(ssrc),
                marker: false,
                payload: Bytes::from_static(&[0xf8, 0xff, 0xfe]),
            };
            match op {
                0 => {}                          // lost
                1 => { run.feed(Leg::Pbx, p.clone()); run.feed(Leg::Pbx, p); } // duplicate
                2 => ssrc += 1,                  // sender restarts
                3 => {
                    p.pt = 101;
                    p.payload = Bytes::copy_from_slice(&DtmfPayload {
                        event: 1, end: jump == 0, volume: 0, duration: 160,
                    }.to_bytes());
                    run.feed(Leg::Pbx, p);
                }
                _ => run.feed(Leg::Pbx, p),
            }
            seq = seq.wrapping_add(1);
            run.tick();
        }
        let mut seen = HashSet::new();
        for p in &run.to_wa {
            prop_assert!(seen.insert(p.seq), "seq {:?} reused", p.seq);
        }
        let ssrcs: HashSet<_> = run.to_wa.iter().map(|p| p.ssrc).collect();
        prop_assert_eq!(ssrcs.len(), 1);
        let audio: Vec<_> = run.to_wa.iter().filter(|p| p.pt == 111).collect();
        for w in audio.windows(2) {
            prop_assert!(w[1].seq.diff(w[0].seq) > 0);
            prop_assert!(w[1].ts.diff(w[0].ts) > 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random interleavings of packets (any PT, seq, ts, payload) on both legs, ticks, hold
    /// and gate commands, for every PBX codec: no panic, one SSRC per leg, no sequence
    /// number sent twice on a leg, at most one audio packet per leg per tick.
    #[test]
    fn any_input_keeps_the_output_invariants(
        codec_idx in 0usize..4,
        ops in proptest::collection::vec(
            (0u8..8, any::<u8>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..24)),
            1..250,
        ),
    ) {
        let (codec, pt) = [(Codec::Pcmu, 0), (Codec::Pcma, 8), (Codec::G722, 9), (Codec::Opus, 96)][codec_idx];
        let mut run = Run::new(config(codec, pt));
        let mut ticks = 0usize;
        let (mut fed_wa, mut fed_pbx) = (0usize, 0usize);
        for (op, b, seq, payload) in ops {
            let pts = [pt, 101, 111, 126, 13, b & 0x7f];
            let packet = RtpPacket {
                pt: pts[usize::from(b) % pts.len()],
                seq: SeqNo(seq),
                ts: RtpTs(u32::from(seq) * 160),
                ssrc: Ssrc(u32::from(b % 3)),
                marker: b & 1 == 1,
                payload: Bytes::from(payload),
            };
            match op {
                0 | 1 => { run.feed(Leg::Wa, packet); fed_wa += 1; }
                2 | 3 => { run.feed(Leg::Pbx, packet); fed_pbx += 1; }
                4 => { run.tick(); ticks += 1; }
                5 => run.relay.open_wa_gate(run.now),
                6 => {
                    let d = [Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive];
                    run.relay.set_pbx_direction(d[usize::from(b) % 4], run.now);
                }
                _ => { let _ = run.relay.send_dtmf(Leg::Wa, '5', Duration::from_millis(60)); }
            }
        }
        for out in [&run.to_wa, &run.to_pbx] {
            let ssrcs: HashSet<_> = out.iter().map(|p| p.ssrc).collect();
            prop_assert!(ssrcs.len() <= 1);
            let seqs: HashSet<_> = out.iter().map(|p| p.seq).collect();
            prop_assert_eq!(seqs.len(), out.len());
        }
        let wa_audio = run.to_wa.iter().filter(|p| p.pt == 111).count();
        let pbx_audio = run.to_pbx.iter().filter(|p| p.pt == pt).count();
        if codec == Codec::Opus {
            // pass-through forwards each packet as it arrives, plus at most one fill-in
            // frame toward WhatsApp per tick
            prop_assert!(wa_audio <= ticks + fed_pbx && pbx_audio <= fed_wa);
        } else {
            prop_assert!(wa_audio <= ticks && pbx_audio <= ticks);
        }
        // whatever the order of arrival, timestamps never go backwards on a leg
        for out in [&run.to_wa, &run.to_pbx] {
            let audio: Vec<_> = out.iter().filter(|p| p.pt == 111 || p.pt == pt).collect();
            for w in audio.windows(2) {
                prop_assert!(w[1].ts.diff(w[0].ts) > 0, "{:?} then {:?}", w[0], w[1]);
            }
        }
    }
}

/// The added latency a driver measures (send instant − `Transmit::received_at`):
/// transcoding holds each frame in the jitter buffer (2 frames × 20 ms before play-out, then
/// each frame leaves at the first tick after it arrived); Opus pass-through forwards each
/// packet the moment it arrives (zero on the virtual clock).
#[test]
fn transmits_carry_receipt_instant_of_their_frame_in_both_directions() {
    for (codec, pt) in [(Codec::Opus, 111), (Codec::Pcmu, 0)] {
        let mut r = Run::new(config(codec, pt));
        r.relay.open_wa_gate(r.now);
        let mut wa = WaPhone::new(440.0);
        let mut pbx = PbxPhone::new(codec, pt, 1000.0);
        let t0 = r.now;
        let mut latencies = Vec::new();
        for i in 0..50u32 {
            // packets arrive 3 ms after each tick
            let arrive = t0 + Duration::from_millis(u64::from(20 * i + 3));
            let mut sent_at = Vec::new();
            r.relay.handle_packet(Leg::Wa, wa.next(), arrive);
            r.relay.handle_packet(Leg::Pbx, pbx.next(), arrive);
            while let Some(t) = r.relay.poll_transmit() {
                sent_at.push((t, arrive));
            }
            let tick = r.relay.poll_timeout().unwrap();
            r.relay.handle_tick(tick);
            while let Some(t) = r.relay.poll_transmit() {
                sent_at.push((t, tick));
            }
            for (t, at_send) in sent_at {
                if let Some(at) = t.received_at {
                    assert!(at <= at_send, "{codec:?}: frame sent before it arrived");
                    latencies.push((t.leg, at_send - at));
                }
            }
        }
        for leg in [Leg::Wa, Leg::Pbx] {
            let l: Vec<_> = latencies.iter().filter(|(g, _)| *g == leg).collect();
            assert!(l.len() >= 40, "{codec:?} {leg:?}: {} measured", l.len());
            for (_, d) in &l[5..] {
                let ms = d.as_millis();
                if codec == Codec::Opus {
                    assert_eq!(*d, Duration::ZERO, "{codec:?} {leg:?}: forwarded at once");
                } else {
                    // frame i arrived at 20i+3 ms and leaves on a tick 17 ms + k·20 ms
                    // later, k frames of jitter-buffer depth
                    assert_eq!(ms % 20, 17, "{codec:?} {leg:?}: {d:?}");
                    assert!(ms <= 57, "{codec:?} {leg:?}: {d:?}");
                }
            }
        }
    }
}

/// With no jitter buffer (`target_depth` 0, the gateway's `media.jitter_buffer_frames = 0`)
/// a transcoded frame waits only for the next tick: at most one frame of added latency
/// (the default two-frame buffer adds up to 57 ms in the test above).
#[test]
fn transcoding_without_jitter_buffer_adds_at_most_one_frame() {
    let mut cfg = config(Codec::Pcmu, 0);
    cfg.jitter = whatsip_media::JitterConfig {
        target_depth: 0,
        target_wait: Duration::ZERO,
        ..Default::default()
    };
    let mut r = Run::new(cfg);
    r.relay.open_wa_gate(r.now);
    let mut wa = WaPhone::new(440.0);
    let mut pbx = PbxPhone::new(Codec::Pcmu, 0, 1000.0);
    let t0 = r.now;
    let mut worst = Duration::ZERO;
    let mut measured = 0;
    for i in 0..50u32 {
        let arrive = t0 + Duration::from_millis(u64::from(20 * i + 3));
        r.relay.handle_packet(Leg::Wa, wa.next(), arrive);
        r.relay.handle_packet(Leg::Pbx, pbx.next(), arrive);
        let tick = r.relay.poll_timeout().unwrap();
        r.relay.handle_tick(tick);
        while let Some(t) = r.relay.poll_transmit() {
            if let Some(at) = t.received_at {
                worst = worst.max(tick - at);
                measured += 1;
            }
        }
    }
    assert!(measured >= 80, "{measured} frames measured");
    assert!(
        worst <= Duration::from_millis(20),
        "worst added latency {worst:?} is more than one frame"
    );
}
