//! Resident memory per pass-through call on the gateway side of the media path.
//!
//! The process runs the gateway's media objects for N calls exactly as the gateway wires
//! them: the shared-socket [`WebRtcEndpoint`] (one `WaLeg` per call), a bridge task per call
//! (the call task's media part: WhatsApp events to the PBX task, PBX packets to the leg) and
//! one PBX media task per call (Opus pass-through relay + its RTP socket). The phones (one
//! `PhonePeer` and socket each) and an RTP echo standing in for the PBX run in a child
//! process, so the parent's resident set holds only the gateway side. After the calls have
//! exchanged media both ways for `WHATSIP_MEM_SECS` (so str0m's and the relay's buffers reach
//! their steady size) the parent prints its RSS growth per call.
//!
//! ```text
//! WHATSIP_MEM_CALLS=300 WHATSIP_MEM_SECS=5 cargo run --release -p whatsip-media --example call_memory
//! ```

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use whatsip_media::driver::{MediaCommand, PbxRtpConfig, PbxSockets, SystemClock, spawn_pbx_media};
use whatsip_media::phone::{PhoneConfig, PhonePeer};
use whatsip_media::webrtc::{EndpointConfig, WaLegEvent, WebRtcEndpoint};
use whatsip_media::{Codec, MediaRelay, RelayConfig, RtpPacket, RtpTs, SeqNo, Ssrc};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process, bytes (`/proc/self/statm`, Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn packet(seq: u16) -> RtpPacket {
    RtpPacket {
        pt: 111,
        seq: SeqNo(seq),
        ts: RtpTs(u32::from(seq).wrapping_mul(960)),
        ssrc: Ssrc(1),
        marker: false,
        // a typical 20 ms voice frame at ~32 kbit/s
        payload: Bytes::from(vec![0x78; 80]),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("WHATSIP_MEM_ROLE").as_deref() == Ok("phones") {
        rt.block_on(phones());
    } else {
        rt.block_on(gateway());
    }
}

/// Parent: the gateway side.
async fn gateway() {
    let calls = env_or("WHATSIP_MEM_CALLS", 300) as usize;
    let secs = env_or("WHATSIP_MEM_SECS", 5);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("WHATSIP_MEM_ROLE", "phones")
        .env("WHATSIP_MEM_CALLS", calls.to_string())
        .env("WHATSIP_MEM_SECS", (secs + 20).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap()).lines();
    let echo: SocketAddr = from_child.next().unwrap().unwrap().parse().unwrap();

    let endpoint = WebRtcEndpoint::bind(EndpointConfig::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = rss_bytes();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut handles = Vec::with_capacity(calls);
    let mut paths = Vec::with_capacity(calls);
    for _ in 0..calls {
        let offer = from_child.next().unwrap().unwrap().replace("\\n", "\r\n");
        let (mut wa, answer) = endpoint.answer(offer).await.unwrap();
        writeln!(to_child, "{}", answer.replace("\r\n", "\\n")).unwrap();
        to_child.flush().unwrap();
        let relay_config = RelayConfig {
            pbx_codec: Codec::Opus,
            pbx_pt: 111,
            ..RelayConfig::default()
        };
        let relay = MediaRelay::new(relay_config, &mut rng, SystemClock::now()).unwrap();
        let sockets = PbxSockets::bind_at(LOCALHOST, 0, true).await.unwrap();
        let mut rtp = PbxRtpConfig::new(echo, echo, true);
        rtp.path = wa.path().clone();
        paths.push(wa.path().clone());
        let (wa_tx, mut wa_out) = mpsc::channel(256);
        let (ev_tx, mut events) = mpsc::channel(64);
        let pbx = spawn_pbx_media(relay, sockets, rtp, wa_tx, ev_tx);
        pbx.commands.send(MediaCommand::OpenWaGate).await.unwrap();
        // the call task's media part (crates/gateway/src/runtime/call.rs)
        handles.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    e = wa.next_event() => match e.map(|e| e.event) {
                        Some(WaLegEvent::Rtp(p)) => { pbx.send_wa_packet(p); }
                        None => break,
                        _ => {}
                    },
                    Some(p) = wa_out.recv() => { wa.try_send_rtp(p); }
                    Some(_) = events.recv() => {}
                }
            }
            let _ = pbx.commands.send(MediaCommand::Stop).await;
            pbx.join.await.unwrap()
        }));
    }
    let set_up = rss_bytes();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let rss1 = rss_bytes();
    let flowing = paths
        .iter()
        .map(whatsip_media::MediaPath::stats)
        .filter(|s| s.wa_to_pbx_latency.count > 0 && s.pbx_to_wa_latency.count > 0)
        .count();
    let per_call = |b: u64| (b.saturating_sub(rss0)) as f64 / calls as f64 / 1024.0;
    println!(
        "calls={calls} with media both ways={flowing} rss_before={} KiB after_setup={} KiB (+{:.1} KiB/call) after_{secs}s_media={} KiB (+{:.1} KiB/call)",
        rss0 / 1024,
        set_up / 1024,
        per_call(set_up),
        rss1 / 1024,
        per_call(rss1),
    );
    let _ = child.kill();
    drop(handles);
    drop(endpoint);
    std::process::exit(0);
}

/// Child: the phones and an RTP echo for the PBX side.
async fn phones() {
    let calls = env_or("WHATSIP_MEM_CALLS", 300) as usize;
    let secs = env_or("WHATSIP_MEM_SECS", 25);
    let echo = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", echo.local_addr().unwrap()).unwrap();
    out.flush().unwrap();
    drop(out);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, src)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], src).await;
        }
    });
    let stop = Instant::now() + Duration::from_secs(secs + 30);
    let mut answers = BufReader::new(std::io::stdin()).lines();
    for _ in 0..calls {
        let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let cfg = PhoneConfig {
            candidates: vec![socket.local_addr().unwrap()],
            ..PhoneConfig::default()
        };
        let (mut peer, offer) = PhonePeer::offer(&cfg, Instant::now()).unwrap();
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", offer.replace("\r\n", "\\n")).unwrap();
            out.flush().unwrap();
        }
        let answer = answers.next().unwrap().unwrap().replace("\\n", "\r\n");
        peer.accept_answer(&answer, Instant::now()).unwrap();
        tokio::spawn(phone(socket, peer, stop));
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(stop)).await;
}

async fn phone(socket: UdpSocket, mut peer: PhonePeer, stop: Instant) {
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
        while peer.poll_event().is_some() {}
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
                    let _ = peer.send_rtp(&packet(seq), now);
                }
                peer.handle_timeout(now);
            }
            () = &mut sleep => peer.handle_timeout(Instant::now()),
        }
    }
}
