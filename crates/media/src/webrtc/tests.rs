use std::net::SocketAddr;
use std::time::Instant;

use super::*;

/// Meta's user-initiated offer, live capture 2025-10 (reference §6.6).
pub(crate) const META_OFFER_LIVE: &str = "v=0\r\n\
o=- 1760681506762 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE audio\r\n\
a=msid-semantic: WMS c3867497-e6f7-4408-82b7-80dbd11b94cf\r\n\
a=ice-lite\r\n\
m=audio 3484 UDP/TLS/RTP/SAVPF 111 126\r\n\
c=IN IP4 57.144.215.49\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:3935165743 1 udp 2122260223 57.144.215.49 3484 typ host generation 0 network-cost 50\r\n\
a=candidate:2617197009 1 udp 2122262783 2a03:2880:f36b:131:face:b00c:0:699c 3484 typ host generation 0 network-cost 50\r\n\
a=ice-ufrag:AeinEGDfvqBctbtM\r\n\
a=ice-pwd:F6/jjqL0/8/Dzluc0IoZEQ==\r\n\
a=fingerprint:sha-256 A2:EC:E2:C4:E4:FE:75:63:39:0D:77:45:DF:70:64:BC:F9:96:73:DE:F4:92:E5:78:D0:5B:1F:8F:E7:46:D3:C6\r\n\
a=setup:actpass\r\n\
a=mid:audio\r\n\
a=sendrecv\r\n\
a=msid:c3867497-e6f7-4408-82b7-80dbd11b94cf WhatsAppTrack1\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=maxptime:20\r\n\
a=ptime:20\r\n\
a=ssrc:1047224411 cname:WhatsAppAudioStream1\r\n";

/// The older doc sample (reference §6.6 note): port 40012, other priorities, `ufrag` suffix on
/// candidates, short fmtp, three extmap lines.
pub(crate) const META_OFFER_DOC: &str = "v=0\r\n\
o=- 1748938742271 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE audio\r\n\
a=msid-semantic: WMS 6b2c2b5e-0d5a-4a59-9f0d-7a1c8cf0e2a1\r\n\
a=ice-lite\r\n\
m=audio 40012 UDP/TLS/RTP/SAVPF 111 126\r\n\
c=IN IP4 157.240.19.130\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1 1 udp 2113937151 157.240.19.130 40012 typ host generation 0 ufrag pfXZVcBwbyLBbnC9\r\n\
a=candidate:2 1 udp 2113939711 2a03:2880:f23c:121:face:b00c:0:699c 40012 typ host generation 0 ufrag pfXZVcBwbyLBbnC9\r\n\
a=ice-ufrag:pfXZVcBwbyLBbnC9\r\n\
a=ice-pwd:Ixo1bF3LwrD9+2wLGcTq9A==\r\n\
a=fingerprint:sha-256 1C:A4:3D:5C:25:2B:C9:47:17:8F:C2:37:8E:0A:8A:0D:9E:19:A7:51:D8:02:0D:3E:DB:26:1E:8F:33:8E:98:47\r\n\
a=setup:actpass\r\n\
a=mid:audio\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=sendrecv\r\n\
a=msid:6b2c2b5e-0d5a-4a59-9f0d-7a1c8cf0e2a1 WhatsAppTrack1\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=maxptime:20\r\n\
a=ptime:20\r\n\
a=ssrc:3151420342 cname:WhatsAppAudioStream1\r\n";

/// Any base instant: the core only compares instants it was given.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn cfg() -> WaLegConfig {
    WaLegConfig {
        candidates: vec!["192.0.2.10:3478".parse::<SocketAddr>().unwrap()],
        ..WaLegConfig::default()
    }
}

fn assert_meta_answer(answer: &str, offer_mid: &str) -> SdpSummary {
    let s = SdpSummary::parse(answer);
    assert_eq!(s.m_lines, 1, "{answer}");
    assert_eq!(s.setup, Some(SetupRole::Active), "{answer}");
    assert!(
        s.fingerprint_sha256.as_ref().is_some_and(|f| f.len() == 95),
        "{answer}"
    );
    assert_eq!(s.opus_pt, Some(111), "{answer}");
    assert_eq!(s.telephone_events, vec![(126, 8000)], "{answer}");
    assert_eq!(s.m_payload_types, vec![111, 126], "{answer}");
    assert!(s.rtcp_mux, "{answer}");
    assert_eq!(s.ssrcs.len(), 1, "{answer}");
    assert_eq!(s.mid.as_deref(), Some(offer_mid), "{answer}");
    assert_eq!(s.bundle, vec![offer_mid.to_owned()], "{answer}");
    assert_eq!(s.ptime_ms, Some(20), "{answer}");
    assert!(!s.ice_lite, "we are a full ICE agent: {answer}");
    assert_eq!(
        s.candidates,
        vec!["192.0.2.10:3478".parse::<SocketAddr>().unwrap()],
        "{answer}"
    );
    assert!(answer.contains("a=sendrecv"), "{answer}");
    assert!(!answer.contains("a=extmap:"), "{answer}");
    assert!(!answer.contains("trickle"), "{answer}");
    s
}

#[test]
fn meta_live_offer_gets_active_opus_answer() {
    let (mut leg, answer) = WaLeg::answer(&cfg(), META_OFFER_LIVE, t0()).unwrap();
    let s = assert_meta_answer(&answer, "audio");
    assert_eq!(leg.local_ssrc(), Some(s.ssrcs[0]));
    assert_eq!(s.ice_ufrag.as_deref(), Some(leg.local_ufrag()));
}

#[test]
fn meta_doc_offer_with_extmap_and_ufrag_suffix_gets_answer() {
    let (_leg, answer) = WaLeg::answer(&cfg(), META_OFFER_DOC, t0()).unwrap();
    assert_meta_answer(&answer, "audio");
}

#[test]
fn offer_with_two_telephone_event_rates_answers_only_8000() {
    // Chrome-style business offer shape (reference §6.7) played as a remote offer:
    // telephone-event/48000 on 110 and telephone-event/8000 on 126.
    let offer = META_OFFER_LIVE
        .replace(
            "m=audio 3484 UDP/TLS/RTP/SAVPF 111 126",
            "m=audio 3484 UDP/TLS/RTP/SAVPF 111 110 126",
        )
        .replace(
            "a=rtpmap:126 telephone-event/8000\r\n",
            "a=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n",
        );
    let (_leg, answer) = WaLeg::answer(&cfg(), &offer, t0()).unwrap();
    assert_meta_answer(&answer, "audio");
    assert!(!answer.contains("telephone-event/48000"), "{answer}");
}

#[test]
fn offer_without_opus_is_refused() {
    let offer = META_OFFER_LIVE.replace("opus/48000/2", "PCMU/8000");
    assert_eq!(
        WaLeg::answer(&cfg(), &offer, t0()).unwrap_err(),
        WaLegError::NoOpus
    );
}

#[test]
fn garbage_offers_are_errors_not_panics() {
    for bad in [
        "",
        "v=0\r\n",
        "m=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n",
        &"x".repeat(20_000),
    ] {
        assert!(WaLeg::answer(&cfg(), bad, t0()).is_err(), "{bad:.40}");
    }
    let truncated = &META_OFFER_LIVE[..META_OFFER_LIVE.len() / 2];
    let _ = WaLeg::answer(&cfg(), truncated, t0());
}

#[test]
fn business_offer_is_single_audio_actpass_with_opus_and_tele_8000() {
    let (mut leg, offer) = WaLeg::offer(&cfg(), t0()).unwrap();
    let s = SdpSummary::parse(&offer);
    assert_eq!(s.m_lines, 1, "{offer}");
    assert_eq!(s.setup, Some(SetupRole::ActPass), "{offer}");
    assert_eq!(s.m_payload_types, vec![111, 126], "{offer}");
    assert_eq!(s.telephone_events, vec![(126, 8000)], "{offer}");
    assert!(s.rtcp_mux && s.fingerprint_sha256.is_some(), "{offer}");
    assert_eq!(s.ssrcs.len(), 1, "{offer}");
    assert!(
        !offer.contains("trickle") && !offer.contains("a=rtcp-fb:126"),
        "{offer}"
    );
    assert_eq!(
        leg.accept_answer("v=0\r\n", t0()),
        Err(WaLegError::InvalidSdp("no m-line".into()))
    );
    assert_eq!(s.bundle.len(), 1, "{offer}");
}

#[test]
fn connect_timeout_fails_the_leg() {
    let now = t0();
    let (mut leg, _answer) = WaLeg::answer(&cfg(), META_OFFER_LIVE, now).unwrap();
    let deadline = now + WaLegConfig::default().connect_timeout;
    let mut t = now;
    for _ in 0..10_000 {
        while leg.poll_datagram().is_some() {}
        let Some(next) = leg.poll_timeout() else {
            break;
        };
        assert!(next <= deadline);
        t = next.max(t);
        leg.handle_timeout(t);
        if leg.is_terminated() {
            break;
        }
    }
    assert!(leg.is_terminated());
    assert_eq!(t, deadline);
    let mut failed = false;
    while let Some(e) = leg.poll_event() {
        failed |= matches!(e, WaLegEvent::Failed { .. });
    }
    assert!(failed);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Nothing from the network panics the leg (STYLE.md §5): random datagrams, including ones
    /// that look like STUN, DTLS or RTP by their first byte, are dropped.
    #[test]
    fn random_datagrams_never_panic_the_leg(
        first in proptest::prelude::any::<u8>(),
        rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
    ) {
        let now = t0();
        let (mut leg, _answer) = WaLeg::answer(&cfg(), META_OFFER_LIVE, now).unwrap();
        let mut data = vec![first];
        data.extend_from_slice(&rest);
        let source: SocketAddr = "57.144.215.49:3484".parse().unwrap();
        leg.handle_datagram(now, source, cfg().candidates[0], &data);
        while leg.poll_datagram().is_some() {}
        while leg.poll_event().is_some() {}
        proptest::prop_assert!(!leg.is_connected());
    }
}
