//! Loopback over real UDP on 127.0.0.1: our WhatsApp leg (business side, shared-socket
//! endpoint) ⇄ the simulator's phone (Meta's side: ICE-lite, Meta-shaped SDP), ICE + DTLS-SRTP,
//! Opus tones and RFC 4733 digits in both directions.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use whatsip_media::phone::{
    PhoneAudio, PhoneAudioConfig, PhoneCommand, PhoneConfig, PhonePeer, PhoneSocket, run_phone,
};
use whatsip_media::webrtc::{EndpointConfig, SdpSummary, WaCallHandle, WaLegEvent, WebRtcEndpoint};

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Plays `tone_hz` + `digits` into the call for `duration` and analyses what comes back.
async fn business_side(
    call: &mut WaCallHandle,
    tone_hz: f64,
    digits: &str,
    duration: Duration,
) -> (bool, PhoneAudio) {
    let mut tx = PhoneAudio::new(PhoneAudioConfig {
        tone_hz: Some(tone_hz),
        ssrc: 1,
        initial_seq: 65_500,
        initial_ts: 4_000_000_000,
        ..Default::default()
    })
    .unwrap();
    let mut rx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
    let mut connected = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut ticks_after_connect = 0u32;
    let ticks = u32::try_from(duration.as_millis() / 20).unwrap();
    let mut ticks_total = 0u32;
    while ticks_after_connect < ticks && ticks_total < 1_500 + ticks {
        tokio::select! {
            e = call.next_event() => {
                let Some(e) = e else { break };
                match e.event {
                    WaLegEvent::Connected => {
                        connected = true;
                        tx.send_digits(digits);
                    }
                    WaLegEvent::Rtp(p) => rx.handle_rtp(&p, e.at),
                    WaLegEvent::Failed { reason } => panic!("leg failed: {reason}"),
                    _ => {}
                }
            }
            _ = ticker.tick() => {
                ticks_total += 1;
                if connected {
                    ticks_after_connect += 1;
                    for p in tx.handle_tick(now()) {
                        call.send_rtp(p).await.unwrap();
                    }
                }
            }
        }
    }
    (connected, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_initiated_call_carries_opus_and_dtmf_both_ways_over_udp() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let endpoint = WebRtcEndpoint::bind(EndpointConfig::default())
            .await
            .unwrap();
        let socket = PhoneSocket::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let cfg = PhoneConfig {
            candidates: vec![socket.local_addr().unwrap()],
            ..PhoneConfig::default()
        };
        let (mut peer, offer) = PhonePeer::offer(&cfg, now()).unwrap();
        let (mut call, answer) = endpoint.answer(offer).await.unwrap();
        assert!(answer.contains("a=setup:active"));
        assert!(answer.contains(&format!(
            " {} typ host",
            endpoint.advertised_addrs()[0].port()
        )));
        peer.accept_answer(&answer, now()).unwrap();
        let audio = PhoneAudio::new(PhoneAudioConfig {
            tone_hz: Some(1_000.0),
            ..Default::default()
        })
        .unwrap();
        let mut phone = run_phone(socket, peer, audio);
        phone.command(PhoneCommand::SendDigits("5".into())).await;

        let (connected, heard) = business_side(&mut call, 400.0, "#", Duration::from_secs(3)).await;
        assert!(connected, "leg never connected");
        let r = heard.report();
        assert_eq!(r.tone.as_ref().map(|t| t.freq_hz), Some(1_000.0), "{r:?}");
        assert_eq!(r.digits, "5", "{r:?}");
        assert!(r.audio_frames >= 50, "{r:?}");

        let (status, ok) = phone
            .wait_for(Duration::from_secs(10), |s| {
                s.audio.digits == "#" && s.audio.frames_with_signal >= 50
            })
            .await;
        assert!(ok, "{status:?}");
        assert_eq!(
            status.audio.tone.as_ref().map(|t| t.freq_hz),
            Some(400.0),
            "{status:?}"
        );
        assert_eq!(status.audio.decode_errors, 0);

        call.hang_up().await;
        let (status, ok) = phone
            .wait_for(Duration::from_secs(10), |s| s.terminated)
            .await;
        assert!(ok, "phone did not see the hang-up: {status:?}");
        let mut closed = false;
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_secs(5), call.next_event()).await
        {
            closed |= e.event == WaLegEvent::Closed;
        }
        assert!(closed);
        assert_eq!(endpoint.call_count(), 0);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_initiated_calls_share_one_socket_and_stay_apart() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let endpoint = WebRtcEndpoint::bind(EndpointConfig::default())
            .await
            .unwrap();
        let mut calls = Vec::new();
        for (i, tone) in [600.0, 1_200.0, 1_800.0].into_iter().enumerate() {
            let (call, offer) = endpoint.offer().await.unwrap();
            let socket = PhoneSocket::bind("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let cfg = PhoneConfig {
                candidates: vec![socket.local_addr().unwrap()],
                ssrc: 1000 + u32::try_from(i).unwrap(),
                // Meta has answered both ways in the docs (§6.3).
                answer_setup: if i % 2 == 0 {
                    whatsip_media::webrtc::SetupRole::Active
                } else {
                    whatsip_media::webrtc::SetupRole::Passive
                },
                ..PhoneConfig::default()
            };
            let (peer, answer) = PhonePeer::answer(&cfg, &offer, now()).unwrap();
            call.accept_answer(answer).await.unwrap();
            let audio = PhoneAudio::new(PhoneAudioConfig {
                tone_hz: Some(tone),
                ..Default::default()
            })
            .unwrap();
            let phone = run_phone(socket, peer, audio);
            phone.command(PhoneCommand::SendDigits(i.to_string())).await;
            calls.push((call, phone, tone, i));
        }
        assert_eq!(endpoint.call_count(), 3);
        assert_eq!(endpoint.local_addrs().len(), 1);
        for (call, _phone, tone, i) in &mut calls {
            let (connected, heard) = business_side(call, 400.0, "", Duration::from_secs(2)).await;
            assert!(connected);
            let r = heard.report();
            assert_eq!(
                r.tone.as_ref().map(|t| t.freq_hz),
                Some(*tone),
                "call {i}: {r:?}"
            );
            assert_eq!(r.digits, i.to_string(), "call {i}: {r:?}");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_one_remote_address_are_placed_on_different_sockets() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let loopback = "127.0.0.1:0".parse().unwrap();
        let endpoint = WebRtcEndpoint::bind(EndpointConfig {
            sockets: vec![(loopback, None), (loopback, None)],
            ..EndpointConfig::default()
        })
        .await
        .unwrap();
        // Two offers from the same relay address (Meta serves many calls per relay port); the
        // address is a loopback port nobody answers, so the checks stay on 127.0.0.1.
        let socket = PhoneSocket::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let cfg = PhoneConfig {
            candidates: vec![socket.local_addr().unwrap()],
            ..PhoneConfig::default()
        };
        let (_p1, offer1) = PhonePeer::offer(&cfg, now()).unwrap();
        let (_p2, offer2) = PhonePeer::offer(&cfg, now()).unwrap();
        let (_c1, answer1) = endpoint.answer(offer1).await.unwrap();
        let (_c2, answer2) = endpoint.answer(offer2).await.unwrap();
        let port = |sdp: &str| SdpSummary::parse(sdp).candidates[0].port();
        assert_ne!(port(&answer1), port(&answer2));
        let advertised: Vec<u16> = endpoint
            .advertised_addrs()
            .iter()
            .map(|a| a.port())
            .collect();
        assert!(advertised.contains(&port(&answer1)) && advertised.contains(&port(&answer2)));
        assert_eq!(endpoint.call_count(), 2);
    })
    .await
    .expect("test timed out");
}
