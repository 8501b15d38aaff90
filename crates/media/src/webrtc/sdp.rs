//! SDP text helpers: the few rewrites Meta's SDP needs before str0m sees it, the lines we add to
//! ours, and a small summary parser the simulator's phone and the tests use.

use std::net::SocketAddr;

/// Maximum SDP size accepted from the network (Meta's offers are ~1.5 KiB).
pub(crate) const MAX_SDP_LEN: usize = 16 * 1024;

/// Rewrites a remote offer so that str0m takes the DTLS client role, and normalises lines
/// str0m's parser would miss (see [`normalize_remote`]).
///
/// str0m answers `a=setup:actpass` with `passive`; Meta requires the business to answer
/// `a=setup:active` (reference §6.3). Telling str0m the offer said `passive` makes it pick
/// `active`, which is one of the two answers `actpass` allows (RFC 8842 §5.3).
pub(crate) fn offer_for_active_answer(sdp: &str) -> String {
    map_lines(&normalize_remote(sdp), |line| {
        if line.eq_ignore_ascii_case("a=setup:actpass") {
            Some("a=setup:passive".to_owned())
        } else {
            Some(line.to_owned())
        }
    })
}

/// Normalises a remote SDP: CRLF line ends, and `a=ice-lite` written with a value.
///
/// interop(webrtc-rs-0.17): writes `a=ice-lite:ice-lite`, which str0m's parser does not take
/// for the `a=ice-lite` flag; str0m would then not take the controlling role and neither side
/// would nominate.
pub(crate) fn normalize_remote(sdp: &str) -> String {
    map_lines(sdp, |line| {
        if line.starts_with("a=ice-lite") {
            Some("a=ice-lite".to_owned())
        } else {
            Some(line.to_owned())
        }
    })
}

/// Finishes an SDP str0m wrote for us: adds `a=ptime:20` after the last `a=rtpmap` line
/// (reference §6.1: ptime 20 ms is mandatory; str0m does not write it), drops
/// `a=ice-options:trickle` (we never trickle: every candidate is in the SDP, §6.2) and the
/// meaningless `transport-cc` feedback on telephone-event.
pub(crate) fn finish_local_sdp(sdp: &str) -> String {
    let lines: Vec<&str> = sdp
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .filter(|l| *l != "a=ice-options:trickle")
        .filter(|l| !l.starts_with("a=rtcp-fb:126 "))
        .collect();
    let last_rtpmap = lines.iter().rposition(|l| l.starts_with("a=rtpmap:"));
    let has_ptime = lines.iter().any(|l| l.starts_with("a=ptime:"));
    let mut out = String::with_capacity(sdp.len() + 32);
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        out.push_str("\r\n");
        if !has_ptime && Some(i) == last_rtpmap {
            // The fmtp/rtcp-fb lines of the last PT may follow; ptime is media-level and its
            // position inside the m-section does not matter (RFC 8866 §6).
            out.push_str("a=ptime:20\r\n");
        }
    }
    out
}

fn map_lines(sdp: &str, mut f: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(sdp.len() + 16);
    for line in sdp.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if let Some(l) = f(line) {
            out.push_str(&l);
            out.push_str("\r\n");
        }
    }
    out
}

/// DTLS role announced by `a=setup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupRole {
    /// `a=setup:actpass` (offers).
    ActPass,
    /// `a=setup:active`: the DTLS client.
    Active,
    /// `a=setup:passive`: the DTLS server.
    Passive,
}

/// The parts of an audio SDP that matter for a WhatsApp call, read leniently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpSummary {
    /// Session-level `a=ice-lite`.
    pub ice_lite: bool,
    /// `a=ice-ufrag`.
    pub ice_ufrag: Option<String>,
    /// `a=ice-pwd`.
    pub ice_pwd: Option<String>,
    /// `a=fingerprint:sha-256` value (colon-separated hex).
    pub fingerprint_sha256: Option<String>,
    /// `a=setup`.
    pub setup: Option<SetupRole>,
    /// `a=mid` of the audio section.
    pub mid: Option<String>,
    /// `a=group:BUNDLE` members.
    pub bundle: Vec<String>,
    /// Number of `m=` lines.
    pub m_lines: usize,
    /// Payload types listed on the audio `m=` line.
    pub m_payload_types: Vec<u8>,
    /// The Opus payload type (`opus/48000/2`).
    pub opus_pt: Option<u8>,
    /// Every `telephone-event` rtpmap as (payload type, clock rate).
    pub telephone_events: Vec<(u8, u32)>,
    /// Distinct SSRCs in `a=ssrc` lines.
    pub ssrcs: Vec<u32>,
    /// `a=rtcp-mux` present.
    pub rtcp_mux: bool,
    /// `a=ptime` value.
    pub ptime_ms: Option<u32>,
    /// Host/srflx/prflx candidates (address only, UDP).
    pub candidates: Vec<SocketAddr>,
    /// Raw `a=candidate:` attribute values (after `a=`).
    pub candidate_lines: Vec<String>,
    /// Media direction attribute (`sendrecv`, …).
    pub direction: Option<String>,
}

impl SdpSummary {
    /// Parses `sdp` without failing: unknown or malformed lines are skipped.
    pub fn parse(sdp: &str) -> Self {
        let mut s = Self::default();
        for line in sdp.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("m=") {
                s.m_lines += 1;
                if m.starts_with("audio") {
                    s.m_payload_types = m
                        .split_whitespace()
                        .skip(3)
                        .filter_map(|p| p.parse().ok())
                        .collect();
                }
                continue;
            }
            let Some(attr) = line.strip_prefix("a=") else {
                continue;
            };
            let (name, value) = attr.split_once(':').unwrap_or((attr, ""));
            match name {
                "ice-lite" => s.ice_lite = true,
                "ice-ufrag" => s.ice_ufrag = Some(value.trim().to_owned()),
                "ice-pwd" => s.ice_pwd = Some(value.trim().to_owned()),
                "fingerprint" => {
                    if let Some((algo, fp)) = value.split_once(' ')
                        && algo.eq_ignore_ascii_case("sha-256")
                    {
                        s.fingerprint_sha256 = Some(fp.trim().to_owned());
                    }
                }
                "setup" => {
                    s.setup = match value.trim() {
                        "actpass" => Some(SetupRole::ActPass),
                        "active" => Some(SetupRole::Active),
                        "passive" => Some(SetupRole::Passive),
                        _ => None,
                    }
                }
                "mid" => s.mid = Some(value.trim().to_owned()),
                "group" => {
                    if let Some(rest) = value.strip_prefix("BUNDLE") {
                        s.bundle = rest.split_whitespace().map(str::to_owned).collect();
                    }
                }
                "rtpmap" => {
                    let Some((pt, codec)) = value.split_once(' ') else {
                        continue;
                    };
                    let Ok(pt) = pt.parse::<u8>() else { continue };
                    let mut parts = codec.split('/');
                    let name = parts.next().unwrap_or("");
                    let rate = parts.next().and_then(|r| r.parse::<u32>().ok());
                    if name.eq_ignore_ascii_case("opus") {
                        s.opus_pt = Some(pt);
                    } else if name.eq_ignore_ascii_case("telephone-event")
                        && let Some(rate) = rate
                    {
                        s.telephone_events.push((pt, rate));
                    }
                }
                "ssrc" => {
                    if let Some(ssrc) = value.split_whitespace().next().and_then(|v| v.parse().ok())
                        && !s.ssrcs.contains(&ssrc)
                    {
                        s.ssrcs.push(ssrc);
                    }
                }
                "rtcp-mux" => s.rtcp_mux = true,
                "ptime" => s.ptime_ms = value.trim().parse().ok(),
                "candidate" => {
                    s.candidate_lines.push(attr.to_owned());
                    // foundation component transport priority address port typ type ...
                    let f: Vec<&str> = value.split_whitespace().collect();
                    if f.len() >= 6
                        && f[2].eq_ignore_ascii_case("udp")
                        && let (Ok(ip), Ok(port)) = (f[4].parse(), f[5].parse())
                    {
                        s.candidates.push(SocketAddr::new(ip, port));
                    }
                }
                "sendrecv" | "sendonly" | "recvonly" | "inactive" => {
                    s.direction = Some(name.to_owned());
                }
                _ => {}
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actpass_becomes_passive_and_crlf_is_kept() {
        let out =
            offer_for_active_answer("v=0\na=ice-lite:ice-lite\na=setup:actpass\r\na=mid:audio\n");
        assert_eq!(
            out,
            "v=0\r\na=ice-lite\r\na=setup:passive\r\na=mid:audio\r\n"
        );
    }

    #[test]
    fn ptime_added_once_after_last_rtpmap() {
        let sdp = "m=audio 9 X 111 126\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:126 telephone-event/8000\r\na=ssrc:1 cname:x\r\n";
        let out = finish_local_sdp(sdp);
        assert!(out.contains("a=rtpmap:126 telephone-event/8000\r\na=ptime:20\r\na=ssrc:1"));
        assert_eq!(finish_local_sdp(&out).matches("a=ptime:20").count(), 1);
    }

    #[test]
    fn summary_reads_candidates_with_meta_suffixes() {
        let s = SdpSummary::parse(
            "m=audio 3484 UDP/TLS/RTP/SAVPF 111 126\r\n\
             a=candidate:1 1 udp 2113937151 57.144.215.49 3484 typ host generation 0 ufrag AB network-cost 50\r\n\
             a=candidate:2 1 udp 2113939711 2a03:2880:f36b:131:face:b00c:0:699c 3484 typ host generation 0\r\n",
        );
        assert_eq!(s.candidates.len(), 2);
        assert_eq!(s.m_payload_types, vec![111, 126]);
    }
}
