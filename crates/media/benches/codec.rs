//! Per-frame costs of the media path (one frame = 20 ms of audio).
//!
//! `cargo bench -p whatsip-media --bench codec -- --warm-up-time 1 --measurement-time 3`
//!
//! `libopus_raw/*` calls audiopus directly with no wrapper: the physical limit the relay's
//! transcoding cost is compared with.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use whatsip_media::tone::ToneGenerator;
use whatsip_media::{
    Codec, G722Decoder, G722Encoder, Leg, MediaRelay, OpusDecoder, OpusEncoder, OpusEncoderConfig,
    RelayConfig, RtpPacket, RtpTs, SeqNo, Ssrc, g711,
};

fn speech_like(rate: u32, samples: usize) -> Vec<i16> {
    // a vowel-ish harmonic mix, closer to what codecs see than a pure sine
    ToneGenerator::multi(&[180.0, 360.0, 720.0, 1100.0, 2500.0], -20.0, rate).next_frame(samples)
}

fn opus_packets(n: usize) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(48_000, &OpusEncoderConfig::default()).unwrap();
    let pcm = speech_like(48_000, 960 * n);
    pcm.chunks(960)
        .map(|f| {
            let mut out = Vec::new();
            enc.encode(f, &mut out).unwrap();
            out
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    let packets = opus_packets(50);
    let mut g = c.benchmark_group("opus");
    for rate in [8000u32, 16_000, 48_000] {
        let mut dec = OpusDecoder::new(rate).unwrap();
        let mut out = Vec::with_capacity(2880);
        let mut i = 0;
        g.bench_function(format!("decode_20ms_to_{}k", rate / 1000), |b| {
            b.iter(|| {
                out.clear();
                i = (i + 1) % packets.len();
                dec.decode(black_box(&packets[i]), &mut out).unwrap();
            });
        });
    }
    let mut dec = OpusDecoder::new(8000).unwrap();
    let mut out = Vec::with_capacity(160);
    g.bench_function("conceal_20ms_8k", |b| {
        b.iter(|| {
            out.clear();
            dec.conceal(160, &mut out).unwrap();
        });
    });
    for rate in [8000u32, 16_000] {
        let pcm = speech_like(rate, rate as usize / 50 * 50);
        let frame = rate as usize / 50;
        for complexity in [0u8, 3, 5, 8, 10] {
            let cfg = OpusEncoderConfig {
                complexity,
                ..OpusEncoderConfig::default()
            };
            let mut enc = OpusEncoder::new(rate, &cfg).unwrap();
            let mut out = Vec::with_capacity(400);
            let mut i = 0;
            g.bench_function(
                format!("encode_20ms_from_{}k_c{complexity}", rate / 1000),
                |b| {
                    b.iter(|| {
                        out.clear();
                        i = (i + 1) % 50;
                        enc.encode(black_box(&pcm[i * frame..(i + 1) * frame]), &mut out)
                            .unwrap();
                    });
                },
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("libopus_raw");
    let mut dec = Decoder::new(SampleRate::Hz8000, Channels::Mono).unwrap();
    let mut out = vec![0i16; 160];
    let mut i = 0;
    g.bench_function("decode_20ms_to_8k", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            dec.decode(Some(black_box(&packets[i][..])), &mut out[..], false)
                .unwrap();
        });
    });
    let mut enc = Encoder::new(SampleRate::Hz8000, Channels::Mono, Application::Voip).unwrap();
    enc.set_complexity(5).unwrap();
    let pcm = speech_like(8000, 160);
    let mut buf = vec![0u8; 1500];
    g.bench_function("encode_20ms_from_8k_c5", |b| {
        b.iter(|| enc.encode(black_box(&pcm), &mut buf).unwrap());
    });
    g.finish();

    let mut g = c.benchmark_group("g711");
    let pcm = speech_like(8000, 160);
    let mut bytes = Vec::with_capacity(160);
    g.bench_function("ulaw_encode_20ms", |b| {
        b.iter(|| {
            bytes.clear();
            g711::encode_ulaw(black_box(&pcm), &mut bytes);
        });
    });
    let mut samples = Vec::with_capacity(160);
    g.bench_function("ulaw_decode_20ms", |b| {
        b.iter(|| {
            samples.clear();
            g711::decode_ulaw(black_box(&bytes), &mut samples);
        });
    });
    g.bench_function("alaw_encode_20ms", |b| {
        b.iter(|| {
            bytes.clear();
            g711::encode_alaw(black_box(&pcm), &mut bytes);
        });
    });
    g.finish();

    let mut g = c.benchmark_group("g722");
    let pcm = speech_like(16_000, 320);
    let mut enc = G722Encoder::new();
    let mut bytes = Vec::with_capacity(160);
    g.bench_function("encode_20ms", |b| {
        b.iter(|| {
            bytes.clear();
            enc.encode(black_box(&pcm), &mut bytes);
        });
    });
    let mut dec = G722Decoder::new();
    let mut samples = Vec::with_capacity(320);
    g.bench_function("decode_20ms", |b| {
        b.iter(|| {
            samples.clear();
            dec.decode(black_box(&bytes), &mut samples);
        });
    });
    g.finish();
}

fn srtp(c: &mut Criterion) {
    use whatsip_media::srtp::{SdesKey, SrtpContext};
    let key = SdesKey::from_parts(1, [7; 16], [9; 14]);
    let mut tx = SrtpContext::new(&key);
    let mut rx = SrtpContext::new(&key);
    let mut g = c.benchmark_group("srtp");
    let mut seq: u16 = 0;
    // a PCMU packet: 12-byte header + 160 bytes
    g.bench_function("protect_unprotect_pcmu_packet", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let mut p = RtpPacket {
                pt: 0,
                seq: SeqNo(seq),
                ts: RtpTs(u32::from(seq) * 160),
                ssrc: Ssrc(5),
                marker: false,
                payload: Bytes::from_static(&[0x55; 160]),
            }
            .to_vec();
            tx.protect_rtp(&mut p).unwrap();
            rx.unprotect_rtp(&mut p).unwrap();
            black_box(p);
        });
    });
    g.finish();
}

/// One call for one 20 ms frame: a WhatsApp packet in, a PBX packet in, one tick, both
/// packets out.
fn relay(c: &mut Criterion) {
    let wa_packets = opus_packets(50);
    let mut g = c.benchmark_group("relay_per_frame");
    for (name, codec, pt) in [
        ("passthrough_opus", Codec::Opus, 96),
        ("transcode_pcmu", Codec::Pcmu, 0),
        ("transcode_g722", Codec::G722, 9),
    ] {
        let mut pbx_payloads: Vec<Bytes> = Vec::new();
        let mut enc =
            whatsip_media::AudioEncoder::new(codec, &OpusEncoderConfig::default()).unwrap();
        let frame = codec.sample_rate_hz() as usize / 50;
        let pcm = speech_like(codec.sample_rate_hz(), frame * 50);
        for f in pcm.chunks(frame) {
            let mut out = Vec::new();
            enc.encode(f, &mut out).unwrap();
            pbx_payloads.push(Bytes::from(out));
        }
        let wa: Vec<Bytes> = wa_packets.iter().map(|p| Bytes::from(p.clone())).collect();
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let config = RelayConfig {
            pbx_codec: codec,
            pbx_pt: pt,
            ..RelayConfig::default()
        };
        let mut relay = MediaRelay::new(config, &mut rng, t0).unwrap();
        relay.open_wa_gate(t0);
        let mut n: u32 = 0;
        let step = codec.clock_rate_hz() / 50;
        g.bench_function(name, |b| {
            b.iter(|| {
                let now = t0 + Duration::from_millis(20 * u64::from(n));
                let i = n as usize % 50;
                relay.handle_packet(
                    Leg::Wa,
                    RtpPacket {
                        pt: 111,
                        seq: SeqNo(n as u16),
                        ts: RtpTs(n.wrapping_mul(960)),
                        ssrc: Ssrc(1),
                        marker: false,
                        payload: wa[i].clone(),
                    },
                    now,
                );
                relay.handle_packet(
                    Leg::Pbx,
                    RtpPacket {
                        pt,
                        seq: SeqNo(n as u16),
                        ts: RtpTs(n.wrapping_mul(step)),
                        ssrc: Ssrc(2),
                        marker: false,
                        payload: pbx_payloads[i].clone(),
                    },
                    now,
                );
                relay.handle_tick(now);
                while let Some(t) = relay.poll_transmit() {
                    black_box(t);
                }
                while let Some(e) = relay.poll_event() {
                    black_box(e);
                }
                n = n.wrapping_add(1);
            });
        });
    }
    g.finish();
}

/// The kernel's share of relaying one packet on loopback, the floor under any user-space
/// relay that does one system call per datagram: one `sendto` of a 120-byte datagram (an
/// Opus voice frame with its SRTP header and tag) and the `recvfrom` that takes it out of
/// the other socket. A pass-through call costs the gateway 100 of these per second (50 per
/// direction: each packet is received on one leg and sent on the other).
fn udp_loopback(c: &mut Criterion) {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = b.local_addr().unwrap();
    let packet = [0x5a_u8; 120];
    let mut buf = [0u8; 2048];
    let mut g = c.benchmark_group("udp_loopback");
    g.bench_function("sendto_recvfrom_120b", |bench| {
        bench.iter(|| {
            a.send_to(black_box(&packet), to).unwrap();
            let (n, _) = b.recv_from(&mut buf).unwrap();
            black_box(n);
        });
    });
    g.finish();
}

criterion_group!(benches, codecs, srtp, relay, udp_loopback);
criterion_main!(benches);
