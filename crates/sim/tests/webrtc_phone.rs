//! The real WebRTC phone behind the `MediaPeer` trait ([`WebRtcPeerFactory`], feature
//! `webrtc-phone`): Meta-shaped SDP both ways, and digits sent are reported.

#![cfg(feature = "webrtc-phone")]
#![allow(clippy::unwrap_used)]

use whatsip_sim::WebRtcPeerFactory;
use whatsip_sim::peer::{MediaPeerFactory, PeerContext};
use whatsip_sim::sdp::{KeyExchange, SdpRole, validate_business_sdp};
use whatsip_sim::{PhoneNumberId, WaId};

const BIZ_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=fingerprint:sha-256 2E:35:9F:21:9E:63:72:E5:42:74:76:2D:B3:70:F7:CB:24:14:9B:14:52:71:05:48:DA:4D:67:31:09:58:2A:ED\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:126 telephone-event/8000\r\n";

fn ctx() -> PeerContext {
    PeerContext {
        call_id: None,
        user: WaId::parse("4915112345678").unwrap(),
        phone_number_id: PhoneNumberId::parse("106540352242922").unwrap(),
    }
}

#[tokio::test]
async fn webrtc_phone_offer_and_answer_are_meta_shaped() {
    let f = WebRtcPeerFactory::new(Some(1_000.0));
    let mut p = f.create(&ctx()).await.unwrap();
    let offer = p.create_offer().await.unwrap();
    assert!(offer.contains("a=ice-lite"), "{offer}");
    assert!(offer.contains("cname:WhatsAppAudioStream1"));
    validate_business_sdp(&offer, SdpRole::Offer, KeyExchange::Dtls).unwrap();
    p.stop().await;

    let mut p = f.create(&ctx()).await.unwrap();
    let answer = p.answer_offer(BIZ_OFFER).await.unwrap();
    assert!(answer.contains("a=mid:0"), "{answer}");
    validate_business_sdp(&answer, SdpRole::Answer, KeyExchange::Dtls).unwrap();
    p.start_media().await.unwrap();
    p.send_dtmf("12").await.unwrap();
    assert_eq!(p.report().dtmf_sent, "12");
    p.stop().await;
}
