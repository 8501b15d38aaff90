//! Call setup time and CPU per call for N concurrent WhatsApp legs on loopback.
//!
//! Both ends run in this process on 127.0.0.1: our [`WebRtcEndpoint`] (one shared UDP socket,
//! the business side) and N simulated phones ([`PhonePeer`], ICE-lite, one socket each, Meta's
//! side). Each call sets up ICE + DTLS-SRTP, then both ends send one 20 ms Opus packet (a fixed,
//! pre-encoded frame, so the figure is the WebRTC stack's cost, not libopus') every 20 ms for
//! the measured period.
//!
//! ```text
//! WHATSIP_BENCH_CALLS=50 WHATSIP_BENCH_SECS=10 cargo bench -p whatsip-media --bench webrtc_setup
//! ```
//!
//! Setup time is from writing the phone's offer to our leg's `Connected` event. CPU is the
//! process's user+system time (from `/proc/self/stat`) during the media period, divided by
//! calls and seconds; it covers **both** ends of every call.
//!
//! Measured 2026-11-25 on the shared 2-core build machine (load average 6-10 from other
//! builds, so read these as upper bounds):
//!
//! | calls | setup median | p95 | max | all up in | CPU per call-second (both ends) | rx phone/leg |
//! |---|---|---|---|---|---|---|
//! | 50 | 11.6 ms | 37 ms | 118 ms | 0.33 s | 3.2 ms (0.32 % of a core) | 25003 / 25001 of ~25000 |
//! | 200 | 12.7 ms | 65 ms | 1.17 s | 1.9 s | 2.2 ms (0.22 % of a core) | 99999 / 99290 of ~100030 |
//! | 50 (rerun, load ~3) | 9.1 ms | 22 ms | 66 ms | 0.25 s | 3.3 ms | 25004 / 25005 |
//! | 200 (rerun, load ~3) | 26 ms | 877 ms | 1.26 s | 2.3 s | 2.9 ms | 100006 / 100000 |
//! | 50 (batched recv) | 4.2 ms | 14 ms | 48 ms | 0.22 s | 3.3 ms | 25007 / 25005 of ~25002 |
//! | 200 (batched recv) | 10.2 ms | 19 ms | 49 ms | 0.78 s | 3.1 ms | 100010 / 100006 of ~100010 |
//!
//! All calls of one socket share one worker task. Before the worker drained up to 64 queued
//! datagrams per wake-up, a burst of 200 setups queued behind select! turns (p95 877 ms).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use whatsip_media::phone::{PhoneConfig, PhonePeer};
use whatsip_media::webrtc::{EndpointConfig, WaLegEvent, WebRtcEndpoint};
use whatsip_media::{RtpPacket, RtpTs, SeqNo, Ssrc};

mod common;
use common::{cpu_ticks, env_or};

fn opus_frame() -> Bytes {
    let enc = audiopus::coder::Encoder::new(
        audiopus::SampleRate::Hz16000,
        audiopus::Channels::Mono,
        audiopus::Application::Voip,
    )
    .unwrap();
    let pcm: Vec<i16> = (0..320)
        .map(|i| {
            (8_000.0 * (2.0 * std::f64::consts::PI * 1_000.0 * f64::from(i) / 16_000.0).sin())
                as i16
        })
        .collect();
    let mut out = [0u8; 400];
    let n = enc.encode(&pcm, &mut out).unwrap();
    Bytes::copy_from_slice(&out[..n])
}

fn packet(seq: u16, payload: &Bytes) -> RtpPacket {
    RtpPacket {
        pt: 111,
        seq: SeqNo(seq),
        ts: RtpTs(u32::from(seq).wrapping_mul(960)),
        ssrc: Ssrc(1),
        marker: false,
        payload: payload.clone(),
    }
}

/// The phone side of one call: PhonePeer on its own socket, constant Opus every 20 ms once
/// connected, until `stop`.
async fn phone_task(
    socket: UdpSocket,
    mut peer: PhonePeer,
    payload: Bytes,
    stop: Instant,
    rx_count: Arc<AtomicU64>,
) {
    let local = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 2048];
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut seq = 0u16;
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    loop {
        while let Some(d) = peer.poll_datagram() {
            let _ = socket.try_send_to(&d.contents, d.destination);
        }
        while let Some(e) = peer.poll_event() {
            if matches!(e, WaLegEvent::Rtp(_)) {
                rx_count.fetch_add(1, Ordering::Relaxed);
            }
        }
        let now = Instant::now();
        if now >= stop || peer.is_terminated() {
            return;
        }
        let deadline = peer.poll_timeout().unwrap_or(now + Duration::from_secs(1));
        sleep
            .as_mut()
            .reset(tokio::time::Instant::from_std(deadline));
        tokio::select! {
            r = socket.recv_from(&mut buf) => if let Ok((n, src)) = r {
                peer.handle_datagram(Instant::now(), src, local, &buf[..n]);
            },
            _ = ticker.tick() => {
                let now = Instant::now();
                if peer.is_connected() {
                    seq = seq.wrapping_add(1);
                    let _ = peer.send_rtp(&packet(seq, &payload), now);
                }
                peer.handle_timeout(now);
            }
            () = &mut sleep => peer.handle_timeout(Instant::now()),
        }
    }
}

fn main() {
    let calls = env_or("WHATSIP_BENCH_CALLS", 50) as usize;
    let secs = env_or("WHATSIP_BENCH_SECS", 10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let endpoint = WebRtcEndpoint::bind(EndpointConfig::default()).await.unwrap();
        let payload = opus_frame();
        let phone_rx = Arc::new(AtomicU64::new(0));
        let leg_rx = Arc::new(AtomicU64::new(0));
        let setup_start = Instant::now();
        let stop = setup_start + Duration::from_secs(secs + 30);
        let mut setups = Vec::with_capacity(calls);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Duration>(calls.max(1));
        let cpu_before_setup = cpu_ticks();
        for _ in 0..calls {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr: SocketAddr = socket.local_addr().unwrap();
            let cfg = PhoneConfig { candidates: vec![addr], ..PhoneConfig::default() };
            let t0 = Instant::now();
            let (mut peer, offer) = PhonePeer::offer(&cfg, t0).unwrap();
            let (mut call, answer) = endpoint.answer(offer).await.unwrap();
            peer.accept_answer(&answer, Instant::now()).unwrap();
            tokio::spawn(phone_task(socket, peer, payload.clone(), stop, Arc::clone(&phone_rx)));
            let done_tx = done_tx.clone();
            let leg_rx = Arc::clone(&leg_rx);
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_millis(20));
                let mut connected = false;
                let mut seq = 0u16;
                loop {
                    tokio::select! {
                        e = call.next_event() => match e.map(|e| e.event) {
                            Some(WaLegEvent::Connected) => {
                                connected = true;
                                let _ = done_tx.send(t0.elapsed()).await;
                            }
                            Some(WaLegEvent::Rtp(_)) => { leg_rx.fetch_add(1, Ordering::Relaxed); }
                            None => return,
                            _ => {}
                        },
                        _ = ticker.tick() => {
                            if Instant::now() >= stop { return; }
                            if connected {
                                seq = seq.wrapping_add(1);
                                call.try_send_rtp(packet(seq, &payload));
                            }
                        }
                    }
                }
            });
        }
        drop(done_tx);
        while setups.len() < calls {
            match tokio::time::timeout(Duration::from_secs(30), done_rx.recv()).await {
                Ok(Some(d)) => setups.push(d),
                _ => break,
            }
        }
        let all_up = setup_start.elapsed();
        let cpu_setup = cpu_ticks() - cpu_before_setup;
        setups.sort();
        let pct = |p: f64| setups.get(((setups.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
        println!(
            "str0m calls={calls} connected={} setup median={:?} p95={:?} max={:?} all_up_in={:?} setup_cpu={} ms",
            setups.len(),
            pct(0.5),
            pct(0.95),
            pct(1.0),
            all_up,
            cpu_setup * 10
        );
        // Steady state: let one second pass, then measure `secs`.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (p0, l0) = (phone_rx.load(Ordering::Relaxed), leg_rx.load(Ordering::Relaxed));
        let c0 = cpu_ticks();
        let w0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu_ms = (cpu_ticks() - c0) * 10;
        let wall = w0.elapsed();
        let (p1, l1) = (phone_rx.load(Ordering::Relaxed), leg_rx.load(Ordering::Relaxed));
        let expected = (calls as u64) * wall.as_millis() as u64 / 20;
        println!(
            "str0m calls={calls} media {:?}: cpu={cpu_ms} ms ({:.3} ms CPU per call-second, both ends; {:.2}% of one core per call) \
             rx at phones={} rx at legs={} (expected ~{expected} each)",
            wall,
            cpu_ms as f64 / (calls as f64 * wall.as_secs_f64()),
            cpu_ms as f64 / (calls as f64 * wall.as_secs_f64()) / 10.0,
            p1 - p0,
            l1 - l0,
        );
        std::process::exit(0);
    });
}
