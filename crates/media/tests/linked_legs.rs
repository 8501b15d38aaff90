//! A call's two media legs linked directly (`PbxMediaHandle::link_wa_leg`): RTP goes from the
//! WhatsApp socket worker to the PBX media task and back without passing through the task
//! that holds the call's handles, over real UDP on 127.0.0.1 (simulated phone ⇄ our WhatsApp
//! leg ⇄ Opus pass-through relay ⇄ an RTP echo standing in for the PBX).

#![cfg(feature = "rt")]
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use whatsip_media::driver::{MediaCommand, PbxRtpConfig, PbxSockets, SystemClock, spawn_pbx_media};
use whatsip_media::phone::{
    PhoneAudio, PhoneAudioConfig, PhoneConfig, PhonePeer, PhoneSocket, run_phone,
};
use whatsip_media::webrtc::{EndpointConfig, WaLegEvent, WebRtcEndpoint};
use whatsip_media::{Codec, MediaRelay, RelayConfig};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Echoes every datagram back to its sender until `stop` fires; returns how many it echoed.
async fn rtp_echo(socket: UdpSocket, mut stop: tokio::sync::oneshot::Receiver<()>) -> u64 {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((len, from)) = r else { continue };
                if socket.send_to(&buf[..len], from).await.is_ok() {
                    n += 1;
                }
            }
            _ = &mut stop => return n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_legs_carry_rtp_both_ways_without_the_call_task() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let endpoint = WebRtcEndpoint::bind(EndpointConfig::default())
            .await
            .unwrap();
        let phone_socket = PhoneSocket::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let cfg = PhoneConfig {
            candidates: vec![phone_socket.local_addr().unwrap()],
            ..PhoneConfig::default()
        };
        let (mut peer, offer) = PhonePeer::offer(&cfg, now()).unwrap();
        let (mut call, answer) = endpoint.answer(offer).await.unwrap();
        peer.accept_answer(&answer, now()).unwrap();
        let audio = PhoneAudio::new(PhoneAudioConfig {
            tone_hz: Some(1_000.0),
            ..Default::default()
        })
        .unwrap();
        let phone = run_phone(phone_socket, peer, audio);

        // the PBX: an RTP echo; the relay: Opus pass-through
        let echo = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        let (stop_echo, stop_rx) = tokio::sync::oneshot::channel();
        let echo_task = tokio::spawn(rtp_echo(echo, stop_rx));
        let relay_config = RelayConfig {
            pbx_codec: Codec::Opus,
            pbx_pt: 111,
            ..RelayConfig::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let relay = MediaRelay::new(relay_config, &mut rng, SystemClock::now()).unwrap();
        let sockets = PbxSockets::bind_at(LOCALHOST, 0, true).await.unwrap();
        let mut rtp = PbxRtpConfig::new(echo_addr, echo_addr, true);
        rtp.path = call.path().clone();
        let (wa_tx, mut wa_out) = mpsc::channel(256);
        let (ev_tx, _events) = mpsc::channel(64);
        let media = spawn_pbx_media(relay, sockets, rtp, wa_tx, ev_tx);
        assert!(media.link_wa_leg(&call));
        media.commands.send(MediaCommand::OpenWaGate).await.unwrap();

        // the phone hears its own tone back through the echo, while the call task (this
        // test) sees the leg's events but none of its RTP, and nothing comes out of `wa_out`
        let mut rtp_events = 0u32;
        let mut connected = false;
        let deadline = now() + Duration::from_secs(30);
        let mut heard = false;
        while now() < deadline && !heard {
            tokio::select! {
                e = call.next_event() => match e.map(|e| e.event) {
                    Some(WaLegEvent::Rtp(_)) => rtp_events += 1,
                    Some(WaLegEvent::Connected) => connected = true,
                    Some(WaLegEvent::Failed { reason }) => panic!("leg failed: {reason}"),
                    Some(_) => {}
                    None => panic!("call ended"),
                },
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    let s = phone.status();
                    heard = s.audio.frames_with_signal >= 50;
                }
            }
        }
        let status = phone.status();
        assert!(connected, "leg never connected");
        assert!(heard, "the echoed tone did not come back: {status:?}");
        assert_eq!(
            status.audio.tone.as_ref().map(|t| t.freq_hz),
            Some(1_000.0),
            "{status:?}"
        );
        assert_eq!(rtp_events, 0, "RTP still passed through the call task");
        assert!(
            wa_out.try_recv().is_err(),
            "RTP still passed through wa_out"
        );
        let p = call.path().stats();
        assert!(p.wa_to_pbx_latency.count >= 50, "{p:?}");
        assert!(p.pbx_to_wa_latency.count >= 50, "{p:?}");
        // no hand-over between the tasks dropped anything (an echo of the very first packet
        // may come back before our leg counts itself connected: at most a couple rejected)
        let queues = p.wa_event_queue_full
            + p.wa_to_pbx_queue_full
            + p.pbx_to_wa_queue_full
            + p.wa_send_queue_full;
        assert_eq!(queues, 0, "{p:?}");
        assert!(p.wa_send_rejected <= 2, "{p:?}");
        assert_eq!(p.pbx_send_failed + p.pbx_rx_rejected, 0, "{p:?}");

        // once the PBX task ends, the leg's RTP comes back through the call's events
        media.commands.send(MediaCommand::Stop).await.unwrap();
        media.join.await.unwrap();
        let mut after_stop = 0u32;
        let until = now() + Duration::from_secs(10);
        while after_stop < 5 && now() < until {
            if let Ok(Some(e)) =
                tokio::time::timeout(Duration::from_secs(1), call.next_event()).await
                && matches!(e.event, WaLegEvent::Rtp(_))
            {
                after_stop += 1;
            }
        }
        assert_eq!(after_stop, 5, "RTP did not fall back to the call's events");
        let _ = stop_echo.send(());
        assert!(echo_task.await.unwrap() >= 50);
        call.hang_up().await;
    })
    .await
    .expect("test timed out");
}
