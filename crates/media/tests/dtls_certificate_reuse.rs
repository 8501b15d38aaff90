//! Over real UDP on 127.0.0.1: several calls on one endpoint worker (one socket) share the
//! endpoint's DTLS certificate, each answer's `a=fingerprint` is that certificate's, and every
//! call completes its own DTLS-SRTP handshake and carries audio.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use whatsip_media::phone::{
    PhoneAudio, PhoneAudioConfig, PhoneConfig, PhonePeer, PhoneSocket, run_phone,
};
use whatsip_media::webrtc::{
    DtlsCertificates, EndpointConfig, SdpSummary, WaLegEvent, WebRtcEndpoint,
};

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_worker_share_the_certificate_and_each_connects() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let config = EndpointConfig::default();
        assert_eq!(config.sockets.len(), 1, "one socket, one worker");
        let leg_dtls = config.leg.dtls.clone();
        let endpoint = WebRtcEndpoint::bind(config).await.unwrap();
        let phone_dtls = DtlsCertificates::default();

        let mut calls = Vec::new();
        for i in 0..4u32 {
            let socket = PhoneSocket::bind("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let cfg = PhoneConfig {
                candidates: vec![socket.local_addr().unwrap()],
                ssrc: 5_000 + i,
                dtls: phone_dtls.clone(),
                ..PhoneConfig::default()
            };
            let (mut peer, offer) = PhonePeer::offer(&cfg, now()).unwrap();
            let (call, answer) = endpoint.answer(offer.clone()).await.unwrap();
            let s = SdpSummary::parse(&answer);
            assert_eq!(
                s.fingerprint_sha256.as_deref(),
                Some(leg_dtls.current(now()).unwrap().fingerprint_sha256()),
                "call {i}: {answer}"
            );
            assert_eq!(
                SdpSummary::parse(&offer).fingerprint_sha256.as_deref(),
                Some(phone_dtls.current(now()).unwrap().fingerprint_sha256())
            );
            peer.accept_answer(&answer, now()).unwrap();
            let audio = PhoneAudio::new(PhoneAudioConfig {
                tone_hz: Some(1_000.0),
                ssrc: 5_000 + i,
                ..Default::default()
            })
            .unwrap();
            calls.push((call, run_phone(socket, peer, audio)));
        }
        assert_eq!(endpoint.call_count(), 4);
        assert_eq!(endpoint.local_addrs().len(), 1);

        for (i, (call, phone)) in calls.iter_mut().enumerate() {
            let (mut connected, mut rtp) = (false, 0u32);
            while rtp < 25 {
                let Ok(Some(e)) =
                    tokio::time::timeout(Duration::from_secs(20), call.next_event()).await
                else {
                    break;
                };
                match e.event {
                    WaLegEvent::Connected => connected = true,
                    WaLegEvent::Rtp(_) => rtp += 1,
                    WaLegEvent::Failed { reason } => panic!("call {i} failed: {reason}"),
                    _ => {}
                }
            }
            assert!(connected, "call {i} never connected");
            assert_eq!(
                rtp, 25,
                "call {i}: audio from the phone (decrypted with its keys)"
            );
            let (status, ok) = phone
                .wait_for(Duration::from_secs(10), |s| s.connected)
                .await;
            assert!(ok, "phone {i}: {status:?}");
        }
        // One certificate per side for all four calls.
        assert_eq!(leg_dtls.generated(), 1);
        assert_eq!(phone_dtls.generated(), 1);
        for (call, _) in &mut calls {
            call.hang_up().await;
        }
    })
    .await
    .expect("test timed out");
}
