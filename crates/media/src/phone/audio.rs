//! The phone's test signal and analysis: Opus tone out, RFC 4733 digits out, and a report of
//! what came in (tone frequency and level via Goertzel, digits, gaps, loss).
//!
//! Pure and clock-free: `now` is passed in; one [`PhoneAudio::handle_tick`] per 20 ms.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::f64::consts::PI;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate};
use bytes::Bytes;

use crate::webrtc::{OPUS_PT, TELEPHONE_EVENT_PT, WaLegError};
use crate::{RtpPacket, RtpTs, SeqNo, Ssrc};

/// Internal PCM rate: libopus encodes from and decodes to 16 kHz directly (RFC 6716 §2).
const PCM_RATE_HZ: u32 = 16_000;
const FRAME_SAMPLES: usize = 320; // 20 ms at 16 kHz
const RTP_TICKS_PER_FRAME: u32 = 960; // 20 ms at the 48 kHz Opus clock
const DTMF_TICKS_PER_FRAME: u16 = 160; // 20 ms in RFC 4733 duration units (8 kHz, §6.8)
const DTMF_FRAMES: u16 = 5; // 100 ms digits
const DTMF_PAUSE_FRAMES: u32 = 5; // 100 ms between digits
const DTMF_END_REPEATS: u8 = 3; // RFC 4733 §2.5.1.4
const SILENCE_DBFS: f64 = -55.0;
const FRAME_DURATION: Duration = Duration::from_millis(20);

/// What the phone plays and how. `Default`: a 1 kHz tone at -12 dBFS.
#[derive(Debug, Clone, PartialEq)]
pub struct PhoneAudioConfig {
    /// Tone frequency; `None` sends silence (still one packet per 20 ms).
    pub tone_hz: Option<f64>,
    /// Tone level.
    pub tone_level_dbfs: f64,
    /// SSRC written into outgoing packets (the WebRTC stack uses its own).
    pub ssrc: u32,
    /// First sequence number (from the simulator's RNG).
    pub initial_seq: u16,
    /// First RTP timestamp (from the simulator's RNG).
    pub initial_ts: u32,
    /// Load-generator mode: loop pre-encoded frames, decode only a sample of what comes back
    /// ([`LightMode`]). `None`: encode every frame and decode every packet.
    pub light: Option<LightMode>,
}

/// The load generator's cheap phone: it sends the frames of an [`OpusCycle`] in a loop (no
/// Opus encoder per phone) and decodes one received frame in `decode_one_in` (three
/// consecutive frames, the last one analysed, so the decoder state is warm). Packets, loss and
/// gaps are still counted for every packet, and in pass-through (where the echoed payload is
/// byte-identical) each returned frame is matched to its sending time: the round-trip time.
#[derive(Debug, Clone, PartialEq)]
pub struct LightMode {
    /// The frames to loop.
    pub cycle: OpusCycle,
    /// Decode a burst of three frames once every this many received Opus packets (>= 3).
    pub decode_one_in: u32,
}

/// Opus frames of a test tone, encoded once and shared by many phones ([`LightMode`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OpusCycle {
    frames: Arc<[Bytes]>,
    /// Payload → frame index, for frames whose bytes are unique in the cycle.
    index: Arc<HashMap<Bytes, usize>>,
}

impl OpusCycle {
    /// Encodes `frames` 20 ms frames of `tone_hz` (`None`: silence) at `level_dbfs`, with
    /// the phone's encoder settings. A deterministic dither of a few LSB makes the frames
    /// differ from one another so that echoed packets can be told apart.
    pub fn tone(tone_hz: Option<f64>, level_dbfs: f64, frames: usize) -> Result<Self, WaLegError> {
        let encoder = new_encoder()?;
        let mut phase = 0.0f64;
        let mut lcg: u32 = 0x1234_5678;
        let mut out = Vec::with_capacity(frames);
        for _ in 0..frames.max(1) {
            let mut pcm = [0i16; FRAME_SAMPLES];
            fill_tone(&mut pcm, tone_hz, level_dbfs, &mut phase);
            for s in &mut pcm {
                lcg = lcg.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                #[allow(clippy::cast_possible_wrap)]
                let d = ((lcg >> 28) as i16) - 8;
                *s = s.saturating_add(d);
            }
            let mut buf = [0u8; 400];
            let n = encoder
                .encode(&pcm, &mut buf)
                .map_err(|e| WaLegError::Config(format!("opus: {e}")))?;
            out.push(Bytes::copy_from_slice(&buf[..n]));
        }
        let mut count: HashMap<Bytes, usize> = HashMap::new();
        for f in &out {
            *count.entry(f.clone()).or_default() += 1;
        }
        let index = out
            .iter()
            .enumerate()
            .filter(|(_, f)| count.get(*f) == Some(&1))
            .map(|(i, f)| (f.clone(), i))
            .collect();
        Ok(Self {
            frames: out.into(),
            index: Arc::new(index),
        })
    }

    /// Number of frames in the cycle.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the cycle is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames whose payload is unique in the cycle (those can be matched when echoed).
    pub fn unique_frames(&self) -> usize {
        self.index.len()
    }
}

/// Round-trip samples kept per phone (one in [`RTT_SAMPLE_EVERY`] matched packets).
const RTT_SAMPLES_MAX: usize = 1_000;
const RTT_SAMPLE_EVERY: u64 = 5;

fn new_encoder() -> Result<Encoder, WaLegError> {
    let codec = |e: audiopus::Error| WaLegError::Config(format!("opus: {e}"));
    let mut encoder =
        Encoder::new(SampleRate::Hz16000, Channels::Mono, Application::Voip).map_err(codec)?;
    encoder.set_inband_fec(true).map_err(codec)?;
    Ok(encoder)
}

fn fill_tone(pcm: &mut [i16], tone_hz: Option<f64>, level_dbfs: f64, phase: &mut f64) {
    let Some(hz) = tone_hz else {
        pcm.fill(0);
        return;
    };
    let amp = 32_767.0 * 10f64.powf(level_dbfs / 20.0);
    let step = 2.0 * PI * hz / f64::from(PCM_RATE_HZ);
    for s in pcm {
        #[allow(clippy::cast_possible_truncation)]
        {
            *s = (amp * phase.sin()) as i16;
        }
        *phase = (*phase + step) % (2.0 * PI);
    }
}

impl Default for PhoneAudioConfig {
    fn default() -> Self {
        Self {
            tone_hz: Some(1_000.0),
            tone_level_dbfs: -12.0,
            ssrc: 1_047_224_411,
            initial_seq: 1,
            initial_ts: 0,
            light: None,
        }
    }
}

/// Summary of the tone heard in received audio.
#[derive(Debug, Clone, PartialEq)]
pub struct ToneReport {
    /// Most frequent dominant frequency among frames with signal (25 Hz resolution).
    pub freq_hz: f64,
    /// Mean level of those frames.
    pub level_dbfs: f64,
    /// Frames whose dominant frequency is `freq_hz`.
    pub frames: u64,
}

/// What the phone received so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioReport {
    /// RTP packets received (all payload types).
    pub packets_received: u64,
    /// Opus frames decoded.
    pub audio_frames: u64,
    /// Opus frames above the silence threshold.
    pub frames_with_signal: u64,
    /// Packets missing from the sequence space.
    pub lost_packets: u64,
    /// Longest time between two consecutive received packets.
    pub longest_gap: Duration,
    /// The dominant tone, if any frame had signal.
    pub tone: Option<ToneReport>,
    /// RFC 4733 digits, each reported once per event.
    pub digits: String,
    /// Opus packets that failed to decode.
    pub decode_errors: u64,
    /// [`LightMode`]: received packets that are one of our own sent frames, byte for byte
    /// (the pass-through echo).
    pub echoed_frames: u64,
    /// [`LightMode`]: round-trip times of a sample of the echoed frames, in microseconds.
    pub rtt_us: Vec<u32>,
}

/// Test signal generator and analyser for one call.
pub struct PhoneAudio {
    config: PhoneAudioConfig,
    /// `None` in [`LightMode`].
    encoder: Option<Encoder>,
    /// [`LightMode`]: next frame of the cycle and when each frame was last sent.
    cycle_pos: usize,
    cycle_sent: Vec<Option<Instant>>,
    decoder: Decoder,
    phase: f64,
    seq: u16,
    ts: u32,
    dtmf_queue: VecDeque<u8>,
    dtmf: DtmfTx,
    rx: RxState,
}

impl std::fmt::Debug for PhoneAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneAudio")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DtmfTx {
    Idle,
    /// Sending `event` that started at RTP time `start_ts`; `frames` sent so far.
    Playing {
        event: u8,
        start_ts: u32,
        frames: u16,
    },
    /// Repeating the end packet.
    Ending {
        event: u8,
        start_ts: u32,
        duration: u16,
        sent: u8,
    },
    /// Silence between digits.
    Pause {
        left: u32,
    },
}

#[derive(Default)]
struct RxState {
    packets: u64,
    first_seq: Option<u64>,
    highest_seq: u64,
    last_arrival: Option<Instant>,
    longest_gap: Duration,
    audio_frames: u64,
    frames_with_signal: u64,
    level_sum: BTreeMap<u32, (u64, f64)>,
    digits: String,
    dtmf_seen: Vec<u32>,
    decode_errors: u64,
    pcm: Vec<i16>,
    opus_packets: u64,
    echoed: u64,
    rtt_us: Vec<u32>,
}

impl PhoneAudio {
    /// Creates the encoder (Opus VoIP, 16 kHz in, FEC on) and decoder (16 kHz out).
    /// In [`LightMode`] no encoder is created.
    pub fn new(config: PhoneAudioConfig) -> Result<Self, WaLegError> {
        let codec = |e: audiopus::Error| WaLegError::Config(format!("opus: {e}"));
        let encoder = match &config.light {
            Some(_) => None,
            None => Some(new_encoder()?),
        };
        let cycle_len = config.light.as_ref().map_or(0, |l| l.cycle.len());
        let decoder = Decoder::new(SampleRate::Hz16000, Channels::Mono).map_err(codec)?;
        Ok(Self {
            seq: config.initial_seq,
            ts: config.initial_ts,
            config,
            encoder,
            cycle_pos: 0,
            cycle_sent: vec![None; cycle_len],
            decoder,
            phase: 0.0,
            dtmf_queue: VecDeque::new(),
            dtmf: DtmfTx::Idle,
            rx: RxState::default(),
        })
    }

    /// Changes the tone (`None`: silence).
    pub fn set_tone(&mut self, tone_hz: Option<f64>) {
        self.config.tone_hz = tone_hz;
    }

    /// Queues digits (`0-9*#A-D`) to send as RFC 4733 events; other characters are skipped.
    pub fn send_digits(&mut self, digits: &str) {
        self.dtmf_queue
            .extend(digits.chars().filter_map(digit_to_event));
    }

    /// Whether queued digits are still being sent.
    pub fn is_sending_dtmf(&self) -> bool {
        !self.dtmf_queue.is_empty() || self.dtmf != DtmfTx::Idle
    }

    /// One 20 ms tick: returns the packets to send (an Opus frame, or RFC 4733 packets while a
    /// digit plays, one to three of them at the end of a digit).
    pub fn handle_tick(&mut self, now: Instant) -> Vec<RtpPacket> {
        let mut out = Vec::with_capacity(1);
        if let Some(p) = self.dtmf_step() {
            out.extend(p);
        } else {
            out.push(self.audio_packet(now));
        }
        self.ts = self.ts.wrapping_add(RTP_TICKS_PER_FRAME);
        out
    }

    /// Analyses one received packet.
    pub fn handle_rtp(&mut self, pkt: &RtpPacket, now: Instant) {
        let rx = &mut self.rx;
        rx.packets += 1;
        if let Some(last) = rx.last_arrival {
            rx.longest_gap = rx.longest_gap.max(now.saturating_duration_since(last));
        }
        rx.last_arrival = Some(now);
        let seq = u64::from(pkt.seq.0);
        match rx.first_seq {
            None => {
                rx.first_seq = Some(seq);
                rx.highest_seq = seq;
            }
            Some(_) => {
                #[allow(clippy::cast_possible_truncation)]
                let delta = i64::from(pkt.seq.0.wrapping_sub(rx.highest_seq as u16) as i16);
                if delta > 0 {
                    rx.highest_seq = rx.highest_seq.wrapping_add_signed(delta);
                }
            }
        }
        if pkt.pt == TELEPHONE_EVENT_PT {
            if pkt.payload.len() >= 4 && !rx.dtmf_seen.contains(&pkt.ts.0) {
                // RFC 4733 §2.5.1.3: one event per timestamp, however many updates arrive.
                if let Some(c) = event_to_digit(pkt.payload[0]) {
                    rx.dtmf_seen.push(pkt.ts.0);
                    rx.digits.push(c);
                }
            }
            return;
        }
        if pkt.pt != OPUS_PT {
            return;
        }
        rx.opus_packets += 1;
        if let Some(light) = &self.config.light {
            if let Some(&i) = light.cycle.index.get(pkt.payload.as_ref()) {
                rx.echoed += 1;
                let max_age = FRAME_DURATION * u32::try_from(light.cycle.len()).unwrap_or(1);
                if let Some(sent) = self.cycle_sent.get(i).copied().flatten() {
                    let rtt = now.saturating_duration_since(sent);
                    if rtt < max_age
                        && rx.echoed.is_multiple_of(RTT_SAMPLE_EVERY)
                        && rx.rtt_us.len() < RTT_SAMPLES_MAX
                    {
                        rx.rtt_us
                            .push(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX));
                    }
                }
            }
            // decode a warm burst of three frames per window, analyse the last
            let every = u64::from(light.decode_one_in.max(3));
            let pos = rx.opus_packets % every;
            if pos != 0 && pos < every - 2 {
                return;
            }
            let analyse = pos == 0;
            rx.pcm.clear();
            rx.pcm.resize(FRAME_SAMPLES * 6, 0);
            match self
                .decoder
                .decode(Some(pkt.payload.as_ref()), &mut rx.pcm[..], false)
            {
                Ok(n) if analyse => rx.analyse(n),
                Ok(_) => {}
                Err(_) => rx.decode_errors += 1,
            }
            return;
        }
        rx.pcm.clear();
        rx.pcm.resize(FRAME_SAMPLES * 6, 0);
        let n = match self
            .decoder
            .decode(Some(pkt.payload.as_ref()), &mut rx.pcm[..], false)
        {
            Ok(n) => n,
            Err(_) => {
                rx.decode_errors += 1;
                return;
            }
        };
        rx.analyse(n);
    }

    /// The analysis so far.
    pub fn report(&self) -> AudioReport {
        let rx = &self.rx;
        let expected = rx
            .first_seq
            .map_or(0, |f| rx.highest_seq.wrapping_sub(f) + 1);
        let tone = rx
            .level_sum
            .iter()
            .max_by_key(|(_, (n, _))| *n)
            .map(|(f, (n, sum))| ToneReport {
                freq_hz: f64::from(*f),
                level_dbfs: sum / *n as f64,
                frames: *n,
            });
        AudioReport {
            packets_received: rx.packets,
            audio_frames: rx.audio_frames,
            frames_with_signal: rx.frames_with_signal,
            lost_packets: expected.saturating_sub(rx.packets),
            longest_gap: rx.longest_gap,
            tone,
            digits: rx.digits.clone(),
            decode_errors: rx.decode_errors,
            echoed_frames: rx.echoed,
            rtt_us: rx.rtt_us.clone(),
        }
    }

    /// Whether this phone runs in [`LightMode`].
    pub fn is_light(&self) -> bool {
        self.config.light.is_some()
    }

    fn audio_packet(&mut self, now: Instant) -> RtpPacket {
        if let Some(light) = &self.config.light {
            let i = self.cycle_pos % light.cycle.len().max(1);
            let payload = light.cycle.frames.get(i).cloned().unwrap_or_default();
            if let Some(slot) = self.cycle_sent.get_mut(i) {
                *slot = Some(now);
            }
            self.cycle_pos = (i + 1) % light.cycle.len().max(1);
            return self.packet(OPUS_PT, false, self.ts, payload);
        }
        let mut pcm = [0i16; FRAME_SAMPLES];
        fill_tone(
            &mut pcm,
            self.config.tone_hz,
            self.config.tone_level_dbfs,
            &mut self.phase,
        );
        let mut buf = [0u8; 400];
        // An encode failure (cannot happen with valid sizes) degrades to an empty frame rather
        // than ending the call.
        let n = self
            .encoder
            .as_mut()
            .and_then(|e| e.encode(&pcm, &mut buf).ok())
            .unwrap_or(0);
        self.packet(OPUS_PT, false, self.ts, Bytes::copy_from_slice(&buf[..n]))
    }

    fn dtmf_step(&mut self) -> Option<Vec<RtpPacket>> {
        match self.dtmf {
            DtmfTx::Idle => {
                let event = self.dtmf_queue.pop_front()?;
                self.dtmf = DtmfTx::Playing {
                    event,
                    start_ts: self.ts,
                    frames: 1,
                };
                let p = self.dtmf_packet(event, self.ts, DTMF_TICKS_PER_FRAME, false, true);
                Some(vec![p])
            }
            DtmfTx::Playing {
                event,
                start_ts,
                frames,
            } => {
                let frames = frames + 1;
                let duration = frames * DTMF_TICKS_PER_FRAME;
                if frames >= DTMF_FRAMES {
                    self.dtmf = DtmfTx::Ending {
                        event,
                        start_ts,
                        duration,
                        sent: 1,
                    };
                    Some(vec![
                        self.dtmf_packet(event, start_ts, duration, true, false),
                    ])
                } else {
                    self.dtmf = DtmfTx::Playing {
                        event,
                        start_ts,
                        frames,
                    };
                    Some(vec![
                        self.dtmf_packet(event, start_ts, duration, false, false),
                    ])
                }
            }
            DtmfTx::Ending {
                event,
                start_ts,
                duration,
                sent,
            } => {
                let p = self.dtmf_packet(event, start_ts, duration, true, false);
                self.dtmf = if sent + 1 >= DTMF_END_REPEATS {
                    DtmfTx::Pause {
                        left: DTMF_PAUSE_FRAMES,
                    }
                } else {
                    DtmfTx::Ending {
                        event,
                        start_ts,
                        duration,
                        sent: sent + 1,
                    }
                };
                Some(vec![p])
            }
            DtmfTx::Pause { left } => {
                self.dtmf = if left <= 1 {
                    DtmfTx::Idle
                } else {
                    DtmfTx::Pause { left: left - 1 }
                };
                None
            }
        }
    }

    fn dtmf_packet(
        &mut self,
        event: u8,
        start_ts: u32,
        duration: u16,
        end: bool,
        marker: bool,
    ) -> RtpPacket {
        let volume = 10u8; // -10 dBm0
        let d = duration.to_be_bytes();
        let payload =
            Bytes::copy_from_slice(&[event, if end { 0x80 | volume } else { volume }, d[0], d[1]]);
        self.packet(TELEPHONE_EVENT_PT, marker, start_ts, payload)
    }

    fn packet(&mut self, pt: u8, marker: bool, ts: u32, payload: Bytes) -> RtpPacket {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        RtpPacket {
            pt,
            seq: SeqNo(seq),
            ts: RtpTs(ts),
            ssrc: Ssrc(self.config.ssrc),
            marker,
            payload,
        }
    }
}

impl RxState {
    /// Level and dominant frequency of the `n` decoded samples in `pcm`.
    fn analyse(&mut self, n: usize) {
        self.audio_frames += 1;
        let frame = &self.pcm[..n.min(self.pcm.len())];
        let level = level_dbfs(frame);
        if level > SILENCE_DBFS {
            self.frames_with_signal += 1;
            let f = dominant_frequency(frame);
            let e = self.level_sum.entry(f).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += level;
        }
    }
}

fn digit_to_event(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(12 + (c as u8 - b'A')),
        _ => None,
    }
}

fn event_to_digit(e: u8) -> Option<char> {
    match e {
        0..=9 => Some(char::from(b'0' + e)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + e - 12)),
        _ => None,
    }
}

fn level_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return -120.0;
    }
    let energy: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / samples.len() as f64).sqrt();
    if rms < 1.0 {
        -120.0
    } else {
        20.0 * (rms * std::f64::consts::SQRT_2 / 32_767.0).log10()
    }
}

/// Goertzel power of `freq_hz` in `samples` at 16 kHz.
fn goertzel(samples: &[i16], freq_hz: f64) -> f64 {
    let k = 2.0 * (2.0 * PI * freq_hz / f64::from(PCM_RATE_HZ)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

/// Dominant frequency between 100 Hz and 4 kHz, on a 25 Hz grid.
fn dominant_frequency(samples: &[i16]) -> u32 {
    (4..=160u32)
        .map(|i| i * 25)
        .max_by(|a, b| {
            goertzel(samples, f64::from(*a)).total_cmp(&goertzel(samples, f64::from(*b)))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn tone_loops_back_through_opus_at_the_right_frequency() {
        let now = t0();
        let mut tx = PhoneAudio::new(PhoneAudioConfig {
            tone_hz: Some(1_000.0),
            ..Default::default()
        })
        .unwrap();
        let mut rx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        for i in 0..50u32 {
            let at = now + Duration::from_millis(20 * u64::from(i));
            for p in tx.handle_tick(at) {
                assert_eq!(p.pt, OPUS_PT);
                rx.handle_rtp(&p, at);
            }
        }
        let r = rx.report();
        let tone = r.tone.clone().unwrap();
        assert_eq!(tone.freq_hz, 1_000.0);
        assert!(tone.frames >= 45, "{r:?}");
        assert!((tone.level_dbfs - -12.0).abs() < 3.0, "{r:?}");
        assert_eq!(r.lost_packets, 0);
        assert_eq!(r.longest_gap, Duration::from_millis(20));
    }

    #[test]
    fn a_light_phone_loops_distinct_frames_and_times_their_echo() {
        let now = t0();
        let cycle = OpusCycle::tone(Some(1_000.0), -12.0, 50).unwrap();
        assert_eq!(cycle.len(), 50);
        assert!(cycle.unique_frames() >= 45, "{}", cycle.unique_frames());
        let light = LightMode {
            cycle: cycle.clone(),
            decode_one_in: 10,
        };
        let mut phone = PhoneAudio::new(PhoneAudioConfig {
            light: Some(light),
            ..Default::default()
        })
        .unwrap();
        assert!(phone.is_light());
        let mut full_rx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        // 100 ticks: the cycle is sent twice; every packet comes back 40 ms later (echo)
        let mut sent = Vec::new();
        for i in 0..100u32 {
            let at = now + Duration::from_millis(20 * u64::from(i));
            for p in phone.handle_tick(at) {
                full_rx.handle_rtp(&p, at);
                sent.push((at, p));
            }
        }
        assert_eq!(sent[0].1.payload, sent[50].1.payload, "the cycle loops");
        assert_ne!(sent[0].1.payload, sent[1].1.payload);
        // what the light phone sent is a 1 kHz tone to a full decoder
        let heard = full_rx.report();
        assert_eq!(heard.tone.unwrap().freq_hz, 1_000.0);
        // echo the second cycle back, 40 ms later (after the first cycle's sends)
        for (at, p) in &sent[50..] {
            phone.handle_rtp(p, *at + Duration::from_millis(40));
        }
        let r = phone.report();
        assert_eq!(r.packets_received, 50);
        assert!(r.echoed_frames >= 45, "{r:?}");
        assert!(!r.rtt_us.is_empty());
        assert!(r.rtt_us.iter().all(|&us| us == 40_000), "{:?}", r.rtt_us);
        // one frame analysed per 10 received, and it carries the tone
        assert_eq!(r.audio_frames, 5, "{r:?}");
        assert_eq!(r.tone.unwrap().freq_hz, 1_000.0);
    }

    #[test]
    fn digits_go_out_as_rfc4733_and_are_counted_once() {
        let now = t0();
        let mut tx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        let mut rx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        tx.send_digits("1#x");
        let mut tele = Vec::new();
        for i in 0..40u32 {
            let at = now + Duration::from_millis(20 * u64::from(i));
            for p in tx.handle_tick(at) {
                if p.pt == TELEPHONE_EVENT_PT {
                    tele.push(p.clone());
                }
                rx.handle_rtp(&p, at);
            }
        }
        assert!(!tx.is_sending_dtmf());
        assert_eq!(rx.report().digits, "1#");
        // Per digit: 4 updates (first with marker) + 3 end packets, one timestamp.
        let first: Vec<_> = tele.iter().filter(|p| p.payload[0] == 1).collect();
        assert_eq!(first.len(), 7);
        assert!(first[0].marker && first[1..].iter().all(|p| !p.marker));
        assert!(first.iter().all(|p| p.ts == first[0].ts));
        assert_eq!(first.iter().filter(|p| p.payload[1] & 0x80 != 0).count(), 3);
        assert_eq!(
            u16::from_be_bytes([first[6].payload[2], first[6].payload[3]]),
            800
        );
    }

    #[test]
    fn loss_and_gaps_are_reported() {
        let now = t0();
        let mut tx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        let mut rx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        for i in 0..20u32 {
            let at = now + Duration::from_millis(20 * u64::from(i));
            for p in tx.handle_tick(at) {
                if !(5..8).contains(&i) {
                    rx.handle_rtp(&p, at);
                }
            }
        }
        let r = rx.report();
        assert_eq!(r.lost_packets, 3);
        assert_eq!(r.longest_gap, Duration::from_millis(80));
    }
}
