//! SDP checks Meta applies to the business's SDP, and SDP shaped like Meta's own
//! (reference §2, §6.1–§6.7).
//!
//! This is deliberately a line-level checker, not a full RFC 8866 parser: it looks for what
//! Meta documents as mandatory and reports the first problem as a code-100 `details` string.

use std::fmt::Write as _;

/// Largest SDP the simulator accepts (bytes).
pub const MAX_SDP_LEN: usize = 16 * 1024;

/// Which side of the exchange an SDP is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpRole {
    /// Business offer (`connect`).
    Offer,
    /// Business answer (`pre_accept` / `accept`).
    Answer,
}

/// SRTP keying in use on the number (`srtp_key_exchange_protocol`, reference §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyExchange {
    /// DTLS-SRTP (the default): fingerprint, ICE credentials required.
    #[default]
    Dtls,
    /// SDES: `a=crypto` required, no fingerprint needed.
    Sdes,
}

/// Payload types found in an SDP's audio m-line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AudioCodecs {
    /// Opus/48000/2 payload type.
    pub opus_pt: Option<u8>,
    /// telephone-event/8000 payload type.
    pub dtmf_pt: Option<u8>,
}

/// Validates a business SDP the way Meta would; the `Err` string is the `error_data.details`.
pub fn validate_business_sdp(
    sdp: &str,
    role: SdpRole,
    keying: KeyExchange,
) -> Result<AudioCodecs, String> {
    if sdp.is_empty() {
        return Err("SDP is empty".into());
    }
    if sdp.len() > MAX_SDP_LEN {
        return Err(format!("SDP is larger than {MAX_SDP_LEN} bytes"));
    }
    let trimmed = sdp.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('"') {
        return Err("SDP must be a plain string, not JSON-serialized".into());
    }
    if sdp.contains("\\r\\n") {
        return Err("SDP contains escaped \\r\\n sequences; it was serialized twice".into());
    }
    if !sdp.starts_with("v=0\r\n") {
        return Err("SDP must start with v=0 and use CRLF line endings".into());
    }
    if !sdp.ends_with("\r\n") {
        return Err("SDP must end with CRLF".into());
    }
    // Every \n must be preceded by \r (RFC 8866 §5 as Meta enforces it, reference §2).
    let bytes = sdp.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            return Err("SDP lines must end with CRLF, found a bare LF".into());
        }
    }
    let mut m_lines = 0usize;
    let mut audio = false;
    let mut fingerprint = false;
    let mut crypto = false;
    let mut ufrag = false;
    let mut pwd = false;
    let mut setup: Option<String> = None;
    let mut ssrcs: Vec<&str> = Vec::new();
    let mut codecs = AudioCodecs::default();
    let mut m_pts: Vec<u8> = Vec::new();
    for line in sdp.split("\r\n").filter(|l| !l.is_empty()) {
        if line.len() < 2 || line.as_bytes()[1] != b'=' {
            return Err(format!(
                "malformed SDP line: {:?}",
                crate::ids::truncate(line, 64)
            ));
        }
        if let Some(m) = line.strip_prefix("m=") {
            m_lines += 1;
            let mut parts = m.split(' ');
            if parts.next() == Some("audio") {
                audio = true;
                let _port = parts.next();
                let _proto = parts.next();
                m_pts = parts.filter_map(|p| p.parse().ok()).collect();
            }
        } else if line.starts_with("a=fingerprint:") {
            fingerprint = true;
        } else if line.starts_with("a=crypto:") {
            crypto = true;
        } else if line.starts_with("a=ice-ufrag:") {
            ufrag = true;
        } else if line.starts_with("a=ice-pwd:") {
            pwd = true;
        } else if let Some(s) = line.strip_prefix("a=setup:") {
            setup = Some(s.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("a=ssrc:") {
            if let Some(id) = rest.split(' ').next()
                && !ssrcs.contains(&id)
            {
                ssrcs.push(id);
            }
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            let mut it = rest.splitn(2, ' ');
            let pt = it.next().and_then(|p| p.parse::<u8>().ok());
            let enc = it.next().unwrap_or("").to_ascii_lowercase();
            if let Some(pt) = pt {
                if enc.starts_with("opus/48000") && codecs.opus_pt.is_none() {
                    codecs.opus_pt = Some(pt);
                } else if enc == "telephone-event/8000" && codecs.dtmf_pt.is_none() {
                    codecs.dtmf_pt = Some(pt);
                }
            }
        }
    }
    if m_lines != 1 || !audio {
        return Err("SDP must have exactly one m=audio line".into());
    }
    let Some(opus) = codecs.opus_pt else {
        return Err("SDP has no opus/48000/2 codec".into());
    };
    if !m_pts.contains(&opus) {
        return Err("opus payload type is not listed on the m=audio line".into());
    }
    match keying {
        KeyExchange::Dtls => {
            if !fingerprint {
                return Err("No fingerprint found in SDP".into());
            }
            if !ufrag || !pwd {
                return Err("SDP is missing ICE credentials (a=ice-ufrag / a=ice-pwd)".into());
            }
            let ok = matches!(
                (role, setup.as_deref()),
                (SdpRole::Offer, Some("actpass" | "active" | "passive"))
                    | (SdpRole::Answer, Some("active" | "passive"))
            );
            if !ok {
                return Err(format!(
                    "invalid or missing a=setup for an {}: {:?}",
                    if role == SdpRole::Offer {
                        "offer"
                    } else {
                        "answer"
                    },
                    setup.as_deref().unwrap_or("")
                ));
            }
        }
        KeyExchange::Sdes => {
            if !crypto {
                return Err("SDES is configured but the SDP has no a=crypto line".into());
            }
        }
    }
    if ssrcs.len() > 1 {
        return Err("business audio must use a single SSRC".into());
    }
    Ok(codecs)
}

/// Inputs for SDP shaped like Meta's (reference §6.6 offer, §6.7 answer).
#[derive(Clone, Debug)]
pub struct MetaSdpParams {
    /// `o=` session id.
    pub session_id: u64,
    /// The real bound UDP port announced in `m=` and both host candidates.
    pub port: u16,
    /// ICE username fragment.
    pub ice_ufrag: String,
    /// ICE password.
    pub ice_pwd: String,
    /// 32 bytes of the DTLS certificate SHA-256 fingerprint.
    pub fingerprint: [u8; 32],
    /// SSRC for the `a=ssrc:… cname:WhatsAppAudioStream1` line.
    pub ssrc: u32,
    /// Media stream id used in `a=msid`.
    pub msid: String,
}

/// Meta's user-initiated offer: ice-lite, two host candidates (127.0.0.1 and ::1),
/// `setup:actpass`, Opus PT 111, telephone-event/8000 PT 126 (reference §6.6).
pub fn meta_offer(p: &MetaSdpParams) -> String {
    let mut s = String::with_capacity(1400);
    let _ = write!(
        s,
        "v=0\r\no=- {sid} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE audio\r\n\
         a=msid-semantic: WMS {msid}\r\na=ice-lite\r\n\
         m=audio {port} UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 127.0.0.1\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\n",
        sid = p.session_id,
        msid = p.msid,
        port = p.port
    );
    push_candidates(&mut s, p.port);
    let _ = write!(
        s,
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\na=setup:actpass\r\n\
         a=mid:audio\r\na=sendrecv\r\na=msid:{} WhatsAppTrack1\r\na=rtcp-mux\r\n\
         a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
         a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1\r\n\
         a=rtpmap:126 telephone-event/8000\r\na=maxptime:20\r\na=ptime:20\r\n\
         a=ssrc:{} cname:WhatsAppAudioStream1\r\n",
        p.ice_ufrag,
        p.ice_pwd,
        fingerprint_hex(&p.fingerprint),
        p.msid,
        p.ssrc
    );
    s
}

/// Meta's answer to a business offer: ice-lite, two host candidates, `setup:active`,
/// the offer's mid, and the offer's Opus / telephone-event payload types (reference §6.7).
pub fn meta_answer(p: &MetaSdpParams, offer: &str) -> Result<String, String> {
    let codecs = validate_business_sdp(offer, SdpRole::Offer, KeyExchange::Dtls)
        .or_else(|_| validate_business_sdp(offer, SdpRole::Offer, KeyExchange::Sdes))?;
    let opus = codecs.opus_pt.unwrap_or(111);
    let dtmf = codecs.dtmf_pt.unwrap_or(126);
    let mid = offer
        .split("\r\n")
        .find_map(|l| l.strip_prefix("a=mid:"))
        .unwrap_or("0")
        .to_owned();
    let mut s = String::with_capacity(1200);
    let _ = write!(
        s,
        "v=0\r\no=- {sid} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {mid}\r\n\
         a=msid-semantic: WMS {msid}\r\na=ice-lite\r\n\
         m=audio {port} UDP/TLS/RTP/SAVPF {opus} {dtmf}\r\nc=IN IP4 127.0.0.1\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\n",
        sid = p.session_id,
        msid = p.msid,
        port = p.port,
    );
    push_candidates(&mut s, p.port);
    let _ = write!(
        s,
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\na=setup:active\r\n\
         a=mid:{mid}\r\na=sendrecv\r\na=msid:{} WhatsAppTrack1\r\na=rtcp-mux\r\n\
         a=rtpmap:{opus} opus/48000/2\r\na=fmtp:{opus} minptime=10;useinbandfec=1\r\n\
         a=rtpmap:{dtmf} telephone-event/8000\r\na=ptime:20\r\n\
         a=ssrc:{} cname:WhatsAppAudioStream1\r\n",
        p.ice_ufrag,
        p.ice_pwd,
        fingerprint_hex(&p.fingerprint),
        p.msid,
        p.ssrc
    );
    Ok(s)
}

fn push_candidates(s: &mut String, port: u16) {
    let _ = write!(
        s,
        "a=candidate:3935165743 1 udp 2122260223 127.0.0.1 {port} typ host generation 0 network-cost 50\r\n\
         a=candidate:2617197009 1 udp 2122262783 ::1 {port} typ host generation 0 network-cost 50\r\n"
    );
}

fn fingerprint_hex(fp: &[u8; 32]) -> String {
    let mut out = String::with_capacity(95);
    for (i, b) in fp.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The business answer sample from reference §6.6.
    pub(crate) const DOC_ANSWER: &str = "v=0\r\no=- 2822644248144643933 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE audio\r\na=msid-semantic: WMS eb909cf0-87f0-4358-a4c9-7861680d9431\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:X1ho\r\na=ice-pwd:7fJSbV2N5qWiA5QiDKwK3vuh\r\na=fingerprint:sha-256 2E:35:9F:21:9E:63:72:E5:42:74:76:2D:B3:70:F7:CB:24:14:9B:14:52:71:05:48:DA:4D:67:31:09:58:2A:ED\r\na=setup:active\r\na=mid:audio\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:126 telephone-event/8000\r\na=ssrc:330833028 cname:EDc1JutBl8rwHQc2\r\n";

    /// A Chrome-style business offer (reference §6.7, trimmed to Opus + DTMF).
    pub(crate) const BIZ_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=ice-options:trickle\r\na=fingerprint:sha-256 2E:35:9F:21:9E:63:72:E5:42:74:76:2D:B3:70:F7:CB:24:14:9B:14:52:71:05:48:DA:4D:67:31:09:58:2A:ED\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:126 telephone-event/8000\r\n";

    fn params() -> MetaSdpParams {
        MetaSdpParams {
            session_id: 1760681506762,
            port: 40012,
            ice_ufrag: "AeinEGDfvqBctbtM".into(),
            ice_pwd: "F6/jjqL0/8/Dzluc0IoZEQ==".into(),
            fingerprint: [0xA2; 32],
            ssrc: 1047224411,
            msid: "c3867497-e6f7-4408-82b7-80dbd11b94cf".into(),
        }
    }

    #[test]
    fn doc_sample_answer_is_valid() {
        let c = validate_business_sdp(DOC_ANSWER, SdpRole::Answer, KeyExchange::Dtls).unwrap();
        assert_eq!(c.opus_pt, Some(111));
        assert_eq!(c.dtmf_pt, Some(126));
    }

    #[test]
    fn lf_only_json_and_escaped_sdp_are_rejected_with_details() {
        let lf = DOC_ANSWER.replace("\r\n", "\n");
        assert!(
            validate_business_sdp(&lf, SdpRole::Answer, KeyExchange::Dtls)
                .unwrap_err()
                .contains("CRLF")
        );
        let json = serde_json::to_string(&serde_json::json!({"sdp": DOC_ANSWER, "type": "answer"}))
            .unwrap();
        assert!(validate_business_sdp(&json, SdpRole::Answer, KeyExchange::Dtls).is_err());
        let escaped = DOC_ANSWER.replace("\r\n", "\\r\\n");
        assert!(validate_business_sdp(&escaped, SdpRole::Answer, KeyExchange::Dtls).is_err());
    }

    #[test]
    fn answer_without_fingerprint_is_rejected_like_meta() {
        let no_fp: String = DOC_ANSWER
            .split_inclusive("\r\n")
            .filter(|l| !l.starts_with("a=fingerprint"))
            .collect();
        assert_eq!(
            validate_business_sdp(&no_fp, SdpRole::Answer, KeyExchange::Dtls).unwrap_err(),
            "No fingerprint found in SDP"
        );
    }

    #[test]
    fn answer_with_actpass_is_rejected() {
        let bad = DOC_ANSWER.replace("a=setup:active", "a=setup:actpass");
        assert!(validate_business_sdp(&bad, SdpRole::Answer, KeyExchange::Dtls).is_err());
    }

    #[test]
    fn meta_offer_has_ice_lite_two_host_candidates_and_whatsapp_cname() {
        let offer = meta_offer(&params());
        assert!(offer.contains("a=ice-lite\r\n"));
        assert!(offer.contains("127.0.0.1 40012 typ host"));
        assert!(offer.contains("::1 40012 typ host"));
        assert!(offer.contains("a=setup:actpass\r\n"));
        assert!(offer.contains("m=audio 40012 UDP/TLS/RTP/SAVPF 111 126\r\n"));
        assert!(offer.contains("a=rtpmap:126 telephone-event/8000\r\n"));
        assert!(offer.contains("cname:WhatsAppAudioStream1\r\n"));
        // Meta's own offer passes Meta's checks.
        validate_business_sdp(&offer, SdpRole::Offer, KeyExchange::Dtls).unwrap();
    }

    #[test]
    fn meta_answer_keeps_offer_payload_types_and_mid_and_is_active() {
        let offer = BIZ_OFFER
            .replace("111 126", "109 101")
            .replace("rtpmap:111", "rtpmap:109")
            .replace("fmtp:111", "fmtp:109")
            .replace("rtpmap:126", "rtpmap:101");
        let ans = meta_answer(&params(), &offer).unwrap();
        assert!(ans.contains("m=audio 40012 UDP/TLS/RTP/SAVPF 109 101\r\n"));
        assert!(ans.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(ans.contains("a=mid:0\r\n"));
        assert!(ans.contains("a=setup:active\r\n"));
        validate_business_sdp(&ans, SdpRole::Answer, KeyExchange::Dtls).unwrap();
    }
}
