//! Interop with a second, independent WebRTC implementation: the `webrtc` crate (0.17) plays
//! the WhatsApp user's phone / Meta's side. It runs as an ICE-lite agent (`SettingEngine::
//! set_lite`), offers like Meta (one audio m-line, Opus 111 + telephone-event/8000 126,
//! `a=setup:actpass`), and our shared-socket leg answers as the business. Audio crosses both
//! ways over real UDP on 127.0.0.1 with ICE + DTLS-SRTP between the two stacks.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use whatsip_media::phone::{PhoneAudio, PhoneAudioConfig};
use whatsip_media::webrtc::{EndpointConfig, SdpSummary, SetupRole, WaLegEvent, WebRtcEndpoint};
use whatsip_media::{RtpPacket, RtpTs, SeqNo, Ssrc};

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

fn to_webrtc(p: &RtpPacket) -> webrtc::rtp::packet::Packet {
    webrtc::rtp::packet::Packet {
        header: webrtc::rtp::header::Header {
            version: 2,
            marker: p.marker,
            payload_type: p.pt,
            sequence_number: p.seq.0,
            timestamp: p.ts.0,
            ssrc: p.ssrc.0,
            ..Default::default()
        },
        payload: p.payload.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_crate_as_meta_side_interoperates_with_our_leg() {
    // In a workspace build rustls sees both the `ring` (from reqwest) and `aws-lc-rs` (ours)
    // features, so it cannot pick a process default by itself; webrtc's DTLS asks for one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::time::timeout(Duration::from_secs(90), async {
        // --- the `webrtc` crate peer, shaped like Meta ---
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    capability: RTCRtpCodecCapability {
                        mime_type: MIME_TYPE_OPUS.to_owned(),
                        clock_rate: 48_000,
                        channels: 2,
                        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                        rtcp_feedback: vec![],
                    },
                    payload_type: 111,
                    ..Default::default()
                },
                RTPCodecType::Audio,
            )
            .unwrap();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    capability: RTCRtpCodecCapability {
                        mime_type: "audio/telephone-event".to_owned(),
                        clock_rate: 8_000,
                        channels: 0,
                        sdp_fmtp_line: String::new(),
                        rtcp_feedback: vec![],
                    },
                    payload_type: 126,
                    ..Default::default()
                },
                RTPCodecType::Audio,
            )
            .unwrap();
        let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
        let mut settings = SettingEngine::default();
        settings.set_lite(true);
        settings.set_network_types(vec![NetworkType::Udp4]);
        settings.set_include_loopback_candidate(true);
        settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
        settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .build();
        let pc = Arc::new(
            api.new_peer_connection(RTCConfiguration::default())
                .await
                .unwrap(),
        );
        let track = Arc::new(TrackLocalStaticRTP::new(
            RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                ..Default::default()
            },
            "WhatsAppTrack1".to_owned(),
            "whatsapp".to_owned(),
        ));
        pc.add_track(Arc::clone(&track) as _).await.unwrap();
        let (rtp_tx, mut rtp_rx) = mpsc::channel::<RtpPacket>(4096);
        pc.on_track(Box::new(move |remote, _receiver, _transceiver| {
            let rtp_tx = rtp_tx.clone();
            Box::pin(async move {
                for _ in 0..100_000 {
                    let Ok((p, _)) = remote.read_rtp().await else {
                        break;
                    };
                    let packet = RtpPacket {
                        pt: p.header.payload_type,
                        seq: SeqNo(p.header.sequence_number),
                        ts: RtpTs(p.header.timestamp),
                        ssrc: Ssrc(p.header.ssrc),
                        marker: p.header.marker,
                        payload: p.payload,
                    };
                    if rtp_tx.send(packet).await.is_err() {
                        break;
                    }
                }
            })
        }));
        let offer = pc.create_offer(None).await.unwrap();
        let mut gathered = pc.gathering_complete_promise().await;
        pc.set_local_description(offer).await.unwrap();
        let _ = gathered.recv().await;
        let offer_sdp = pc.local_description().await.unwrap().sdp;
        let offer_summary = SdpSummary::parse(&offer_sdp);
        // interop(webrtc-rs-0.17): it writes `a=ice-lite:ice-lite`; our leg must still see an
        // ICE-lite peer and take the controlling role, or nobody nominates.
        assert!(offer_sdp.contains("a=ice-lite"), "{offer_sdp}");
        assert!(offer_summary.ice_lite, "{offer_sdp}");
        assert!(!offer_summary.candidates.is_empty(), "{offer_sdp}");

        // --- our leg answers ---
        let endpoint = WebRtcEndpoint::bind(EndpointConfig::default())
            .await
            .unwrap();
        let (mut call, answer) = endpoint.answer(offer_sdp).await.unwrap();
        assert_eq!(
            SdpSummary::parse(&answer).setup,
            Some(SetupRole::Active),
            "{answer}"
        );
        pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
            .await
            .unwrap();

        // --- media both ways for 3 s after connect ---
        let mut theirs = PhoneAudio::new(PhoneAudioConfig {
            tone_hz: Some(1_000.0),
            ..Default::default()
        })
        .unwrap();
        let mut ours = PhoneAudio::new(PhoneAudioConfig {
            tone_hz: Some(400.0),
            ..Default::default()
        })
        .unwrap();
        ours.send_digits("7");
        let mut heard_by_us = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        let mut heard_by_them = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        let mut connected = false;
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let (mut ticks, mut total) = (0u32, 0u32);
        while ticks < 150 && total < 2_000 {
            tokio::select! {
                e = call.next_event() => match e.map(|e| (e.at, e.event)) {
                    Some((_, WaLegEvent::Connected)) => connected = true,
                    Some((at, WaLegEvent::Rtp(p))) => heard_by_us.handle_rtp(&p, at),
                    Some((_, WaLegEvent::Failed { reason })) => panic!("leg failed: {reason}"),
                    None => break,
                    _ => {}
                },
                Some(p) = rtp_rx.recv() => heard_by_them.handle_rtp(&p, now()),
                _ = ticker.tick() => {
                    total += 1;
                    if connected {
                        ticks += 1;
                        for p in ours.handle_tick(now()) {
                            call.send_rtp(p).await.unwrap();
                        }
                        for p in theirs.handle_tick(now()) {
                            // Their tone only; TrackLocalStaticRTP rewrites PT and SSRC.
                            let _ = track.write_rtp(&to_webrtc(&p)).await;
                        }
                    }
                }
            }
        }
        assert!(connected, "ICE/DTLS with the webrtc crate never came up");
        let us = heard_by_us.report();
        assert_eq!(us.tone.as_ref().map(|t| t.freq_hz), Some(1_000.0), "{us:?}");
        assert!(us.frames_with_signal >= 100, "{us:?}");
        // Drain what is still in flight toward them.
        while let Ok(Some(p)) =
            tokio::time::timeout(Duration::from_millis(500), rtp_rx.recv()).await
        {
            heard_by_them.handle_rtp(&p, now());
        }
        let them = heard_by_them.report();
        assert_eq!(
            them.tone.as_ref().map(|t| t.freq_hz),
            Some(400.0),
            "{them:?}"
        );
        assert!(them.frames_with_signal >= 100, "{them:?}");
        assert_eq!(
            them.digits, "7",
            "RFC 4733 from our leg read by the webrtc crate: {them:?}"
        );
        pc.close().await.unwrap();
    })
    .await
    .expect("test timed out");
}
