//! The same measurement as `webrtc_setup`, with the `webrtc` crate (0.17) on both ends, for
//! `docs/dependencies.md`: N calls in-process on 127.0.0.1, an ICE-lite offerer (Meta's
//! shape) and a full-ICE answerer (the business), a fixed Opus frame every 20 ms both ways.
//!
//! ```text
//! WHATSIP_BENCH_CALLS=50 WHATSIP_BENCH_SECS=10 cargo bench -p whatsip-media --bench webrtc_crate_setup
//! ```
//!
//! Setup time is from creating the offerer to the answerer reporting `Connected`; CPU is the
//! process's user+system time during the media period per call-second, both ends.
//!
//! Measured 2026-11-25, same machine and session as `webrtc_setup` (load average 3-6):
//!
//! | calls | setup median | p95 | max | all up in | CPU per call-second (both ends) | rx meta/business |
//! |---|---|---|---|---|---|---|
//! | 50 | 16.7 ms | 30 ms | 31 ms | 0.16 s | 4.0 ms | 25005 / 25005 of ~25002 |
//! | 200 | 26 ms | 85 ms | 133 ms | 1.25 s | 3.3 ms | 100036 / 100034 of ~100010 |
//!
//! Each webrtc-crate peer has its own UDP port here (no shared-port mode is used).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use webrtc::api::API;
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

mod common;
use common::{cpu_ticks, env_or};

fn opus_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn api(lite: bool) -> API {
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                capability: opus_capability(),
                payload_type: 111,
                ..Default::default()
            },
            RTPCodecType::Audio,
        )
        .unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let mut settings = SettingEngine::default();
    settings.set_lite(lite);
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build()
}

async fn side(api: &API, rx: Arc<AtomicU64>) -> (Arc<RTCPeerConnection>, Arc<TrackLocalStaticRTP>) {
    let pc = Arc::new(
        api.new_peer_connection(RTCConfiguration::default())
            .await
            .unwrap(),
    );
    let track = Arc::new(TrackLocalStaticRTP::new(
        opus_capability(),
        "a".to_owned(),
        "s".to_owned(),
    ));
    pc.add_track(Arc::clone(&track) as _).await.unwrap();
    pc.on_track(Box::new(move |remote, _, _| {
        let rx = Arc::clone(&rx);
        Box::pin(async move {
            while remote.read_rtp().await.is_ok() {
                rx.fetch_add(1, Ordering::Relaxed);
            }
        })
    }));
    (pc, track)
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
        let meta_api = api(true);
        let biz_api = api(false);
        let rx_meta = Arc::new(AtomicU64::new(0));
        let rx_biz = Arc::new(AtomicU64::new(0));
        let payload = Bytes::from_static(&[0x78; 60]);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (done_tx, mut done_rx) = mpsc::channel::<Duration>(calls.max(1));
        let mut pcs = Vec::new();
        let start = Instant::now();
        let cpu0 = cpu_ticks();
        for _ in 0..calls {
            let t0 = Instant::now();
            let (meta, meta_track) = side(&meta_api, Arc::clone(&rx_meta)).await;
            let (biz, biz_track) = side(&biz_api, Arc::clone(&rx_biz)).await;
            let done = done_tx.clone();
            biz.on_peer_connection_state_change(Box::new(move |s| {
                let done = done.clone();
                Box::pin(async move {
                    if s == RTCPeerConnectionState::Connected {
                        let _ = done.send(t0.elapsed()).await;
                    }
                })
            }));
            let offer = meta.create_offer(None).await.unwrap();
            let mut g = meta.gathering_complete_promise().await;
            meta.set_local_description(offer).await.unwrap();
            let _ = g.recv().await;
            biz.set_remote_description(meta.local_description().await.unwrap()).await.unwrap();
            let answer = biz.create_answer(None).await.unwrap();
            let mut g = biz.gathering_complete_promise().await;
            biz.set_local_description(answer).await.unwrap();
            let _ = g.recv().await;
            meta.set_remote_description(biz.local_description().await.unwrap()).await.unwrap();
            for track in [meta_track, biz_track] {
                let payload = payload.clone();
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let mut ticker = tokio::time::interval(Duration::from_millis(20));
                    let mut seq = 0u16;
                    while !stop.load(Ordering::Relaxed) {
                        ticker.tick().await;
                        seq = seq.wrapping_add(1);
                        let p = webrtc::rtp::packet::Packet {
                            header: webrtc::rtp::header::Header {
                                version: 2,
                                payload_type: 111,
                                sequence_number: seq,
                                timestamp: u32::from(seq).wrapping_mul(960),
                                ..Default::default()
                            },
                            payload: payload.clone(),
                        };
                        let _ = track.write_rtp(&p).await;
                    }
                });
            }
            pcs.push((meta, biz));
        }
        drop(done_tx);
        let mut setups = Vec::new();
        while setups.len() < calls {
            match tokio::time::timeout(Duration::from_secs(60), done_rx.recv()).await {
                Ok(Some(d)) => setups.push(d),
                _ => break,
            }
        }
        let all_up = start.elapsed();
        let setup_cpu = (cpu_ticks() - cpu0) * 10;
        setups.sort();
        let pct = |p: f64| setups.get(((setups.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
        println!(
            "webrtc-crate calls={calls} connected={} setup median={:?} p95={:?} max={:?} all_up_in={all_up:?} setup_cpu={setup_cpu} ms",
            setups.len(),
            pct(0.5),
            pct(0.95),
            pct(1.0),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (a0, b0) = (rx_meta.load(Ordering::Relaxed), rx_biz.load(Ordering::Relaxed));
        let c0 = cpu_ticks();
        let w0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu_ms = (cpu_ticks() - c0) * 10;
        let wall = w0.elapsed();
        let (a1, b1) = (rx_meta.load(Ordering::Relaxed), rx_biz.load(Ordering::Relaxed));
        let per = cpu_ms as f64 / (calls as f64 * wall.as_secs_f64());
        println!(
            "webrtc-crate calls={calls} media {wall:?}: cpu={cpu_ms} ms ({per:.3} ms CPU per call-second, both ends; {:.2}% of one core per call) rx at meta side={} rx at business side={} (expected ~{} each)",
            per / 10.0,
            a1 - a0,
            b1 - b0,
            (calls as u64) * wall.as_millis() as u64 / 20
        );
        std::process::exit(0);
    });
}
