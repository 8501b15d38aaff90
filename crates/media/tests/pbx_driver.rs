//! The PBX media driver over real UDP on 127.0.0.1 against a plain RTP peer in the test:
//! audio crosses both ways, the driver latches to the peer's real source port, and the
//! WhatsApp side is fed through the command channel.

#![cfg(feature = "rt")]
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use whatsip_media::driver::{MediaCommand, PbxRtpConfig, PbxSockets, SystemClock, spawn_pbx_media};
use whatsip_media::sdp::PortAllocator;
use whatsip_media::tone::{ToneGenerator, dominant_frequency};
use whatsip_media::{
    MediaRelay, OpusDecoder, OpusEncoder, OpusEncoderConfig, RelayConfig, RelayEvent, RtpPacket,
    RtpTs, SeqNo, Ssrc, g711,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_peer_and_whatsapp_side_exchange_tones_through_the_driver() {
    // The PBX peer announces one port in "SDP" but sends from another (NAT): the driver
    // must answer to where the packets come from.
    let peer = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let announced = SocketAddr::new(LOCALHOST, 9); // discard port: nothing listens
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let relay = MediaRelay::new(RelayConfig::default(), &mut rng, SystemClock::now()).unwrap();
    let sockets = PbxSockets::bind_at(LOCALHOST, 0, true).await.unwrap();
    let ours = SocketAddr::new(LOCALHOST, sockets.rtp_port());
    let mut cfg = PbxRtpConfig::new(announced, announced, true);
    cfg.rtcp_interval = Duration::from_millis(300);
    let (wa_tx, mut wa_rx) = mpsc::channel(1024);
    let (ev_tx, mut ev_rx) = mpsc::channel(64);
    let handle = spawn_pbx_media(relay, sockets, cfg, wa_tx, ev_tx);
    handle
        .commands
        .send(MediaCommand::OpenWaGate)
        .await
        .unwrap();

    // PBX side: 1 kHz in PCMU; WhatsApp side: 600 Hz in Opus; 100 frames paced at 20 ms
    let mut pbx_tone = ToneGenerator::sine(1000.0, -12.0, 8000);
    let mut wa_tone = ToneGenerator::sine(600.0, -12.0, 48_000);
    let mut opus = OpusEncoder::new(48_000, &OpusEncoderConfig::default()).unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut got_pbx = Vec::new();
    let mut rtcp_seen = false;
    let mut buf = [0u8; 2048];
    for i in 0..100u16 {
        tick.tick().await;
        let mut payload = Vec::new();
        g711::encode_ulaw(&pbx_tone.next_frame(160), &mut payload);
        let p = RtpPacket {
            pt: 0,
            seq: SeqNo(i),
            ts: RtpTs(u32::from(i) * 160),
            ssrc: Ssrc(77),
            marker: i == 0,
            payload: Bytes::from(payload),
        };
        peer.send_to(&p.to_vec(), ours).await.unwrap();
        let mut payload = Vec::new();
        opus.encode(&wa_tone.next_frame(960), &mut payload).unwrap();
        let w = RtpPacket {
            pt: 111,
            seq: SeqNo(i),
            ts: RtpTs(u32::from(i) * 960),
            ssrc: Ssrc(88),
            marker: false,
            payload: Bytes::from(payload),
        };
        handle
            .commands
            .send(MediaCommand::WaPacket(w))
            .await
            .unwrap();
        // collect whatever the driver sent to the peer so far (bounded, non-blocking)
        for _ in 0..10 {
            match peer.try_recv_from(&mut buf) {
                Ok((n, _)) if whatsip_media::is_rtcp(&buf[..n]) => rtcp_seen = true,
                Ok((n, _)) => got_pbx.push(RtpPacket::parse(&buf[..n]).unwrap()),
                Err(_) => break,
            }
        }
    }
    // drain the tail for up to 2 s
    let deadline = tokio::time::Instant::from_std(SystemClock::now() + Duration::from_secs(2));
    while got_pbx.len() < 95 {
        match tokio::time::timeout_at(deadline, peer.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) if whatsip_media::is_rtcp(&buf[..n]) => rtcp_seen = true,
            Ok(Ok((n, _))) => got_pbx.push(RtpPacket::parse(&buf[..n]).unwrap()),
            _ => break,
        }
    }
    handle.commands.send(MediaCommand::Stop).await.unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(5), handle.join)
        .await
        .unwrap()
        .unwrap();

    // the peer got PCMU at its real source port, carrying the WhatsApp side's 600 Hz
    assert!(
        got_pbx.len() >= 80,
        "only {} packets reached the latched peer",
        got_pbx.len()
    );
    assert!(got_pbx.iter().all(|p| p.pt == 0 && p.payload.len() == 160));
    let mut pcm = Vec::new();
    for p in &got_pbx[got_pbx.len() / 2..] {
        g711::decode_ulaw(&p.payload, &mut pcm);
    }
    let (f, frac) = dominant_frequency(&pcm, 8000, 200.0, 3800.0, 10.0).unwrap();
    assert!(
        (f - 600.0).abs() <= 10.0 && frac > 0.6,
        "pbx heard {f} Hz ({frac})"
    );
    assert!(
        rtcp_seen,
        "an RTCP report reached the peer's latched address"
    );

    // the WhatsApp side got Opus carrying the PBX's 1 kHz
    let mut to_wa = Vec::new();
    while let Ok(p) = wa_rx.try_recv() {
        to_wa.push(p);
    }
    assert!(
        to_wa.len() >= 80,
        "only {} packets toward WhatsApp",
        to_wa.len()
    );
    let mut dec = OpusDecoder::new(48_000).unwrap();
    let mut pcm = Vec::new();
    for p in &to_wa[to_wa.len() / 2..] {
        dec.decode(&p.payload, &mut pcm).unwrap();
    }
    let (f, frac) = dominant_frequency(&pcm, 48_000, 200.0, 4000.0, 10.0).unwrap();
    assert!(
        (f - 1000.0).abs() <= 10.0 && frac > 0.6,
        "whatsapp heard {f} Hz ({frac})"
    );

    let mut first = Vec::new();
    while let Ok(e) = ev_rx.try_recv() {
        first.push(e);
    }
    assert!(first.contains(&RelayEvent::FirstPacket {
        leg: whatsip_media::Leg::Pbx
    }));
    assert!(stats.pbx.packets_received >= 95);
    assert_eq!(stats.pbx.packets_lost, 0);
}

#[tokio::test]
async fn socket_pairs_skip_ports_held_by_someone_else() {
    // hold an even port, then ask the allocator for a range starting there
    let (blocker, port) = (0..200u16)
        .map(|i| 41_000 + 2 * ((i * 37) % 4000))
        .find_map(|p| {
            std::net::UdpSocket::bind((LOCALHOST, p))
                .ok()
                .map(|s| (s, p))
        })
        .expect("some even port in 41000..49000 is free");
    let mut ports = PortAllocator::new(port..=port + 5).unwrap();
    let s = PbxSockets::bind(LOCALHOST, &mut ports, false)
        .await
        .unwrap();
    assert_ne!(s.rtp_port(), port);
    assert_eq!(ports.in_use(), 1, "the busy pair went back to the pool");
    drop(blocker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdes_srtp_leg_protects_both_ways_and_drops_forgeries() {
    use whatsip_media::driver::SrtpKeys;
    use whatsip_media::srtp::{SdesKey, SrtpContext};

    let ours = SdesKey::from_parts(1, [0x11; 16], [0x22; 14]);
    let theirs = SdesKey::from_parts(1, [0x33; 16], [0x44; 14]);
    let peer = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let relay = MediaRelay::new(RelayConfig::default(), &mut rng, SystemClock::now()).unwrap();
    let sockets = PbxSockets::bind_at(LOCALHOST, 0, true).await.unwrap();
    let ours_addr = SocketAddr::new(LOCALHOST, sockets.rtp_port());
    let remote = peer.local_addr().unwrap();
    let mut cfg = PbxRtpConfig::new(remote, remote, true);
    cfg.srtp = Some(SrtpKeys {
        local: ours.clone(),
        remote: theirs.clone(),
    });
    let (wa_tx, _wa_rx) = mpsc::channel(1024);
    let (ev_tx, _ev_rx) = mpsc::channel(64);
    let handle = spawn_pbx_media(relay, sockets, cfg, wa_tx, ev_tx);
    let mut peer_tx = SrtpContext::new(&theirs);
    let mut peer_rx = SrtpContext::new(&ours);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut tone = ToneGenerator::sine(1000.0, -12.0, 8000);
    let mut buf = [0u8; 2048];
    let (mut decrypted, mut failed) = (0, 0);
    for i in 0..50u16 {
        tick.tick().await;
        let mut payload = Vec::new();
        g711::encode_ulaw(&tone.next_frame(160), &mut payload);
        let mut wire = RtpPacket {
            pt: 0,
            seq: SeqNo(i),
            ts: RtpTs(u32::from(i) * 160),
            ssrc: Ssrc(99),
            marker: false,
            payload: Bytes::from(payload),
        }
        .to_vec();
        peer_tx.protect_rtp(&mut wire).unwrap();
        if i % 10 == 5 {
            // a forged copy with a flipped payload bit must not count as received
            let mut forged = wire.clone();
            forged[30] ^= 0x40;
            peer.send_to(&forged, ours_addr).await.unwrap();
        }
        peer.send_to(&wire, ours_addr).await.unwrap();
        for _ in 0..10 {
            let Ok((n, _)) = peer.try_recv_from(&mut buf) else {
                break;
            };
            let mut p = buf[..n].to_vec();
            let ok = if whatsip_media::is_rtcp(&p) {
                peer_rx.unprotect_rtcp(&mut p).is_ok()
            } else {
                peer_rx.unprotect_rtp(&mut p).is_ok() && RtpPacket::parse(&p).is_ok()
            };
            if ok { decrypted += 1 } else { failed += 1 }
        }
    }
    // the last datagrams may still be queued behind the command: ask a few times
    let mut stats = None;
    for _ in 0..40 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        handle.commands.send(MediaCommand::Stats(tx)).await.unwrap();
        let s = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap()
            .unwrap();
        let done = s.pbx.packets_received >= 50;
        stats = Some(s);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.commands.send(MediaCommand::Stop).await.unwrap();
    let stats = stats.unwrap();
    assert!(
        decrypted >= 40,
        "only {decrypted} packets decrypted by the peer"
    );
    assert_eq!(failed, 0, "everything we sent authenticates with our key");
    assert_eq!(
        stats.pbx.packets_received, 50,
        "forgeries dropped, genuine packets kept: {stats:?}"
    );
}
