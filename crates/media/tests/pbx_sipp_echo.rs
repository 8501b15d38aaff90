//! The PBX driver against a real peer: SIPp's built-in UAS with `-rtp_echo` on 127.0.0.1.
//! We offer with `sdp::build_offer`, parse SIPp's answer with `sdp::parse_answer`, and run
//! the relay toward the answered address: a 1 kHz tone from the WhatsApp side goes out as
//! PCMU, SIPp echoes the packets, and the tone comes back to the WhatsApp side as Opus.
//!
//! SIPp (Debian `sip-tester`) is installed by `scripts/install-test-deps.sh`; the test skips
//! with a loud message only if it still cannot be found. SIPp runs with `-timeout` and is
//! killed by pid at the end.

#![cfg(feature = "rt")]
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use whatsip_media::driver::{MediaCommand, PbxRtpConfig, PbxSockets, SystemClock, spawn_pbx_media};
use whatsip_media::sdp::{LocalMedia, PbxSdpConfig, build_offer, parse_answer};
use whatsip_media::tone::{ToneGenerator, dominant_frequency};
use whatsip_media::{
    Codec, Direction, MediaRelay, OpusDecoder, OpusEncoder, OpusEncoderConfig, RelayConfig,
    RtpPacket, RtpTs, SeqNo, Ssrc,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap();
    s.local_addr().unwrap().port()
}

fn find_sipp() -> Option<String> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| format!("{d}/sipp"))
        .find(|p| std::path::Path::new(p).exists())
}

async fn recv_sip(sock: &UdpSocket, want: &str) -> String {
    let mut buf = vec![0u8; 4096];
    for _ in 0..20 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
            .await
            .expect("sipp answers within 10 s")
            .unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.starts_with(want) {
            return msg;
        }
    }
    panic!("no {want} from sipp");
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tone_round_trips_through_sipp_rtp_echo() {
    let Some(sipp) = find_sipp() else {
        eprintln!("!!! SKIPPED: sipp not found; run scripts/install-test-deps.sh !!!");
        return;
    };
    let sipp_port = free_udp_port();
    let media_port = free_udp_port();
    let child = Command::new(sipp)
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-rtp_echo",
            "-m",
            "1",
        ])
        .args(["-p", &sipp_port.to_string(), "-mp", &media_port.to_string()])
        .args(["-timeout", "30s", "-nostdin", "-trace_err"])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sip = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let our_sip = sip.local_addr().unwrap().port();
    let sipp_addr = SocketAddr::new(LOCALHOST, sipp_port);
    let sockets = PbxSockets::bind_at(LOCALHOST, 0, false).await.unwrap();
    let sdp_config = PbxSdpConfig {
        codecs: vec![Codec::Pcmu],
        offer_rtcp_mux: false,
        ..PbxSdpConfig::default()
    };
    let offer = build_offer(
        &LocalMedia {
            addr: LOCALHOST,
            rtp_port: sockets.rtp_port(),
            session_id: 1,
            session_version: 1,
            direction: Direction::SendRecv,
            crypto: None,
        },
        &sdp_config,
    );
    let common = |method: &str, cseq: u32, branch: &str, to_tag: &str| {
        format!(
            "{method} sip:echo@127.0.0.1:{sipp_port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{our_sip};branch=z9hG4bK-{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:gw@127.0.0.1:{our_sip}>;tag=media1\r\n\
             To: <sip:echo@127.0.0.1:{sipp_port}>{to_tag}\r\n\
             Call-ID: media-echo-{our_sip}@127.0.0.1\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:gw@127.0.0.1:{our_sip}>\r\n"
        )
    };
    let invite = format!(
        "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        common("INVITE", 1, "inv", ""),
        offer.len()
    );
    sip.send_to(invite.as_bytes(), sipp_addr).await.unwrap();
    let ok = recv_sip(&sip, "SIP/2.0 200").await;
    let to = header(&ok, "To");
    let to_tag = &to[to.find(";tag=").unwrap()..];
    let body = &ok[ok.find("\r\n\r\n").unwrap() + 4..];
    let negotiated = parse_answer(body, &sdp_config, false).unwrap();
    assert_eq!((negotiated.codec, negotiated.pt), (Codec::Pcmu, 0));
    assert_eq!(
        negotiated.remote_rtp,
        SocketAddr::new(LOCALHOST, media_port)
    );
    let ack = format!(
        "{}Content-Length: 0\r\n\r\n",
        common("ACK", 1, "ack", to_tag)
    );
    sip.send_to(ack.as_bytes(), sipp_addr).await.unwrap();

    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let relay = MediaRelay::new(
        RelayConfig {
            pbx_codec: negotiated.codec,
            pbx_pt: negotiated.pt,
            pbx_dtmf: negotiated.dtmf,
            ..RelayConfig::default()
        },
        &mut rng,
        SystemClock::now(),
    )
    .unwrap();
    let cfg = PbxRtpConfig::new(negotiated.remote_rtp, negotiated.remote_rtcp, false);
    let (wa_tx, mut wa_rx) = mpsc::channel(1024);
    let (ev_tx, _ev_rx) = mpsc::channel(64);
    let handle = spawn_pbx_media(relay, sockets, cfg, wa_tx, ev_tx);
    handle
        .commands
        .send(MediaCommand::OpenWaGate)
        .await
        .unwrap();
    let mut tone = ToneGenerator::sine(1000.0, -12.0, 48_000);
    let mut opus = OpusEncoder::new(48_000, &OpusEncoderConfig::default()).unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..100u16 {
        tick.tick().await;
        let mut payload = Vec::new();
        opus.encode(&tone.next_frame(960), &mut payload).unwrap();
        let p = RtpPacket {
            pt: 111,
            seq: SeqNo(i),
            ts: RtpTs(u32::from(i) * 960),
            ssrc: Ssrc(0x5eed),
            marker: false,
            payload: Bytes::from(payload),
        };
        handle
            .commands
            .send(MediaCommand::WaPacket(p))
            .await
            .unwrap();
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle.commands.send(MediaCommand::Stats(tx)).await.unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap();
    handle.commands.send(MediaCommand::Stop).await.unwrap();
    let bye = format!(
        "{}Content-Length: 0\r\n\r\n",
        common("BYE", 2, "bye", to_tag)
    );
    sip.send_to(bye.as_bytes(), sipp_addr).await.unwrap();
    let _ = recv_sip(&sip, "SIP/2.0 200").await;

    assert!(
        stats.pbx.packets_received >= 60,
        "echoed packets: {stats:?}"
    );
    let mut to_wa = Vec::new();
    while let Ok(p) = wa_rx.try_recv() {
        to_wa.push(p);
    }
    let mut dec = OpusDecoder::new(48_000).unwrap();
    let mut pcm = Vec::new();
    for p in &to_wa[to_wa.len() / 2..] {
        dec.decode(&p.payload, &mut pcm).unwrap();
    }
    let (f, frac) = dominant_frequency(&pcm, 48_000, 200.0, 4000.0, 10.0).unwrap();
    assert!(
        (f - 1000.0).abs() <= 10.0 && frac > 0.6,
        "the echo carried {f} Hz ({frac})"
    );
}
