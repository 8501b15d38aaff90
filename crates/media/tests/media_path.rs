//! The PBX media driver counts every user-space drop of a call into its `MediaPath` and
//! measures the added latency of each packet it sends, over real UDP on 127.0.0.1.

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
use whatsip_media::{
    Codec, Flow, MediaPath, MediaRelay, RelayConfig, RtpPacket, RtpTs, SeqNo, Ssrc,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn opus(seq: u16, ssrc: u32) -> RtpPacket {
    RtpPacket {
        pt: 111,
        seq: SeqNo(seq),
        ts: RtpTs(u32::from(seq) * 960),
        ssrc: Ssrc(ssrc),
        marker: false,
        payload: Bytes::from_static(&[0xf8, 0xff, 0xfe]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_drops_are_attributed_and_latency_is_measured_both_ways() {
    let peer = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let stranger = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let config = RelayConfig {
        pbx_codec: Codec::Opus,
        pbx_pt: 111,
        ..RelayConfig::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let relay = MediaRelay::new(config, &mut rng, SystemClock::now()).unwrap();
    let sockets = PbxSockets::bind_at(LOCALHOST, 0, true).await.unwrap();
    let ours = SocketAddr::new(LOCALHOST, sockets.rtp_port());
    let path = MediaPath::new();
    let mut cfg = PbxRtpConfig::new(peer.local_addr().unwrap(), peer.local_addr().unwrap(), true);
    cfg.path = path.clone();
    // a WhatsApp side that never reads: everything toward it past one packet is dropped
    let (wa_tx, mut wa_rx) = mpsc::channel(1);
    let (ev_tx, _ev_rx) = mpsc::channel(64);
    let handle = spawn_pbx_media(relay, sockets, cfg, wa_tx, ev_tx);
    assert_eq!(handle.path, path);
    handle
        .commands
        .send(MediaCommand::OpenWaGate)
        .await
        .unwrap();

    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut buf = [0u8; 2048];
    let mut to_pbx = 0;
    for i in 0..40u16 {
        tick.tick().await;
        peer.send_to(&opus(i, 77).to_vec(), ours).await.unwrap();
        // the WhatsApp worker's part: stamp the receipt, hand the packet on
        path.stamp_arrival(Flow::WaToPbx, i, SystemClock::now());
        assert!(handle.send_wa_packet(opus(i, 88)));
        if i == 10 {
            // not RTP, and RTP from an address the latch does not follow
            peer.send_to(b"hello", ours).await.unwrap();
            stranger
                .send_to(&opus(500, 99).to_vec(), ours)
                .await
                .unwrap();
        }
        while peer.try_recv_from(&mut buf).is_ok() {
            to_pbx += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // the WhatsApp side got exactly the one packet its channel holds
    assert!(wa_rx.try_recv().is_ok());
    assert!(wa_rx.try_recv().is_err());
    handle.commands.send(MediaCommand::Stop).await.unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(5), handle.join)
        .await
        .unwrap()
        .unwrap();
    let p = &stats.path;
    assert!(to_pbx >= 20, "{to_pbx} packets reached the pbx");
    assert_eq!(p.pbx_rx_rejected, 2, "{p:?}");
    assert!(p.pbx_to_wa_queue_full >= 20, "{p:?}");
    assert_eq!(p.pbx_send_failed, 0);
    assert_eq!(p.wa_to_pbx_queue_full, 0);
    // every frame sent to the PBX came from a stamped WhatsApp packet; held by the jitter
    // buffer for at least one tick, never for seconds
    let l = &p.wa_to_pbx_latency;
    assert!(l.count >= 20, "{l:?}");
    assert!(l.max < Duration::from_secs(1), "{l:?}");
    assert_eq!(l.buckets.iter().sum::<u64>(), l.count);
    assert_eq!(p, &path.stats());
}
