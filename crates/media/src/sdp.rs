//! The PBX leg's SDP offer/answer (RFC 3264) as pure functions, and the RTP port allocator.
//!
//! We offer PCMU, PCMA, G.722 and Opus (in the configured preference order) plus
//! telephone-event at ptime 20; we answer a PBX's offer with the single codec we prefer
//! among those offered (one codec per direction keeps the relay and the PBX symmetric) and
//! the matching telephone-event. The PBX's direction attribute (hold) is returned to the
//! caller for [`crate::MediaRelay::set_pbx_direction`]; it never reaches the WhatsApp leg.
//! rtcp-mux (RFC 5761) is accepted when offered and offered when configured. SDES-SRTP
//! (RFC 4568, `RTP/SAVP` + `a=crypto`, suite `AES_CM_128_HMAC_SHA1_80` only) is offered when
//! [`LocalMedia::crypto`] holds our key and accepted when an offer carries it; an `RTP/SAVP`
//! offer without a usable crypto line, or while we have no key, is refused with
//! [`SdpError::SrtpUnsupported`] (the gateway answers 488).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;

use crate::codec::{Codec, MediaError};
use crate::dtmf::TelephoneEvent;
use crate::relay::Direction;
use crate::srtp::{SUITE, SdesKey};

/// What we put into offers and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxSdpConfig {
    /// Codecs in preference order (Opus first keeps WhatsApp audio untranscoded).
    pub codecs: Vec<Codec>,
    /// Payload type we offer for Opus.
    pub opus_pt: u8,
    /// Payload type we offer for telephone-event/8000.
    pub dtmf_pt: u8,
    /// Payload type we offer for telephone-event/48000 (with Opus).
    pub dtmf48_pt: u8,
    /// Packetisation time we ask for.
    pub ptime_ms: u32,
    /// Offer rtcp-mux (RFC 5761).
    pub offer_rtcp_mux: bool,
}

impl Default for PbxSdpConfig {
    fn default() -> Self {
        Self {
            codecs: vec![Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma],
            opus_pt: 111,
            dtmf_pt: 101,
            dtmf48_pt: 110,
            ptime_ms: 20,
            offer_rtcp_mux: true,
        }
    }
}

/// Our side of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Address advertised in `c=` (the public media address).
    pub addr: IpAddr,
    /// RTP port (RTCP on `rtp_port + 1` unless muxed).
    pub rtp_port: u16,
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version (increment on every new offer or answer).
    pub session_version: u64,
    /// Our direction (`sendrecv` normally).
    pub direction: Direction,
    /// Our SDES master key: offers use `RTP/SAVP` with it; answers use it when the offer
    /// is `RTP/SAVP` (its tag is replaced by the offer's).
    pub crypto: Option<SdesKey>,
}

/// What was agreed for the PBX leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// The audio codec.
    pub codec: Codec,
    /// Its payload type.
    pub pt: u8,
    /// telephone-event, if both sides have it.
    pub dtmf: Option<TelephoneEvent>,
    /// Where to send RTP (before latching).
    pub remote_rtp: SocketAddr,
    /// Where to send RTCP.
    pub remote_rtcp: SocketAddr,
    /// RTP and RTCP share one port.
    pub rtcp_mux: bool,
    /// The PBX's declared direction (for the relay; `c=0.0.0.0` holds count as not
    /// receiving).
    pub pbx_direction: Direction,
    /// The PBX's `a=ptime`, if any (we send 20 ms regardless; Opus has no 30 ms frame).
    pub pbx_ptime_ms: Option<u32>,
    /// The PBX's SDES key when the session is SRTP.
    pub remote_crypto: Option<SdesKey>,
}

/// Why an SDP could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// No `m=audio` line, or it is malformed.
    #[error("no usable audio m-line: {0}")]
    NoAudio(String),
    /// No connection address for the audio stream.
    #[error("no connection address")]
    NoConnection,
    /// None of the offered codecs is one we speak.
    #[error("no common codec in {0}")]
    NoCommonCodec(String),
    /// The audio stream was rejected (port 0).
    #[error("audio stream rejected")]
    Rejected,
    /// `RTP/SAVP` with `a=crypto` (SDES-SRTP) is not implemented toward the PBX.
    #[error("srtp (sdes) toward the pbx is not supported: {0}")]
    SrtpUnsupported(String),
}

/// Builds our offer to the PBX.
#[must_use]
pub fn build_offer(local: &LocalMedia, config: &PbxSdpConfig) -> String {
    let mut formats: Vec<(u8, String, Option<String>)> = Vec::new();
    for &codec in &config.codecs {
        match codec {
            Codec::Opus => formats.push((
                config.opus_pt,
                "opus/48000/2".into(),
                Some("useinbandfec=1;minptime=10".into()),
            )),
            c => formats.push((
                c.static_pt().unwrap_or(0),
                format!("{}/{}", c.encoding_name(), c.clock_rate_hz()),
                None,
            )),
        }
    }
    if config.codecs.contains(&Codec::Opus) {
        formats.push((
            config.dtmf48_pt,
            "telephone-event/48000".into(),
            Some("0-16".into()),
        ));
    }
    formats.push((
        config.dtmf_pt,
        "telephone-event/8000".into(),
        Some("0-16".into()),
    ));
    render(
        local,
        &formats,
        config.ptime_ms,
        config.offer_rtcp_mux,
        local.crypto.as_ref(),
    )
}

/// Parses the PBX's answer to [`build_offer`].
/// `offered_srtp` says whether our offer was `RTP/SAVP`; the answer must match it.
pub fn parse_answer(
    answer: &str,
    config: &PbxSdpConfig,
    offered_srtp: bool,
) -> Result<NegotiatedMedia, SdpError> {
    let m = MediaDesc::parse(answer)?;
    m.check_usable(offered_srtp)?;
    if m.is_srtp() != offered_srtp {
        return Err(SdpError::SrtpUnsupported(format!(
            "answer proto {} to an offer with srtp={offered_srtp}",
            cut(&m.proto)
        )));
    }
    // The answer lists what the PBX accepts; take the first we know (RFC 3264 §6.1: the
    // answerer's order is its preference).
    let (codec, pt) = m
        .formats
        .iter()
        .find_map(|&pt| m.codec_of(pt, config).map(|c| (c, pt)))
        .ok_or_else(|| SdpError::NoCommonCodec(cut(&m.format_list())))?;
    m.negotiated(codec, pt)
}

/// Answers a PBX's offer: returns our answer and what was agreed.
pub fn answer_offer(
    offer: &str,
    local: &LocalMedia,
    config: &PbxSdpConfig,
) -> Result<(String, NegotiatedMedia), SdpError> {
    let m = MediaDesc::parse(offer)?;
    m.check_usable(local.crypto.is_some())?;
    let (codec, pt) = config
        .codecs
        .iter()
        .find_map(|&want| {
            m.formats
                .iter()
                .find(|&&pt| m.codec_of(pt, config) == Some(want))
                .map(|&pt| (want, pt))
        })
        .ok_or_else(|| SdpError::NoCommonCodec(cut(&m.format_list())))?;
    let negotiated = m.negotiated(codec, pt)?;
    let mut formats = vec![(
        pt,
        match codec {
            Codec::Opus => "opus/48000/2".to_string(),
            c => format!("{}/{}", c.encoding_name(), c.clock_rate_hz()),
        },
        (codec == Codec::Opus).then(|| "useinbandfec=1;minptime=10".to_string()),
    )];
    if let Some(te) = negotiated.dtmf {
        formats.push((
            te.pt,
            format!("telephone-event/{}", te.clock_rate_hz),
            Some("0-16".into()),
        ));
    }
    let local = LocalMedia {
        direction: answer_direction(local.direction, negotiated.pbx_direction, m.hold_by_address),
        ..local.clone()
    };
    // RFC 4568 §7.1.2: the answer's crypto line carries the accepted offer's tag
    let crypto = match (&negotiated.remote_crypto, &local.crypto) {
        (Some(theirs), Some(ours)) => Some(SdesKey::with_tag(ours, theirs.tag())),
        _ => None,
    };
    let sdp = render(
        &local,
        &formats,
        config.ptime_ms,
        m.rtcp_mux,
        crypto.as_ref(),
    );
    Ok((sdp, negotiated))
}

/// Allocates RTP/RTCP port pairs (even RTP port, RTCP on the next) from a range,
/// round-robin so a just-released pair is not handed out again at once (late packets of
/// the previous call would land in the new one).
#[derive(Debug, Clone)]
pub struct PortAllocator {
    first: u16,
    pairs: usize,
    in_use: Vec<bool>,
    cursor: usize,
}

impl PortAllocator {
    /// A pool over `range` (e.g. 10000..=20000, Meta's firewall note).
    pub fn new(range: RangeInclusive<u16>) -> Result<Self, MediaError> {
        let first = range.start().saturating_add(range.start() % 2);
        let last = *range.end();
        if last <= first {
            return Err(MediaError::Config(format!("rtp port range {range:?}")));
        }
        let pairs = usize::from(last - first).div_ceil(2);
        let pairs = if usize::from(first) + pairs * 2 - 1 > usize::from(last) {
            pairs - 1
        } else {
            pairs
        };
        if pairs == 0 {
            return Err(MediaError::Config(format!("rtp port range {range:?}")));
        }
        Ok(Self {
            first,
            pairs,
            in_use: vec![false; pairs],
            cursor: 0,
        })
    }

    /// The next free pair's RTP port (RTCP is `+ 1`).
    pub fn allocate(&mut self) -> Result<u16, MediaError> {
        for _ in 0..self.pairs {
            let i = self.cursor;
            self.cursor = (self.cursor + 1) % self.pairs;
            if !self.in_use[i] {
                self.in_use[i] = true;
                return Ok(self.first + (i as u16) * 2);
            }
        }
        Err(MediaError::PortsExhausted)
    }

    /// Returns a pair; unknown ports are ignored.
    pub fn release(&mut self, rtp_port: u16) {
        if rtp_port >= self.first
            && (rtp_port - self.first).is_multiple_of(2)
            && let Some(slot) = self
                .in_use
                .get_mut(usize::from((rtp_port - self.first) / 2))
        {
            *slot = false;
        }
    }

    /// Pairs currently allocated.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.in_use.iter().filter(|u| **u).count()
    }
}

/// The audio m-section of an SDP, with the session-level fallbacks applied.
#[derive(Debug, Clone)]
struct MediaDesc {
    port: u16,
    proto: String,
    formats: Vec<u8>,
    rtpmaps: Vec<(u8, String, u32)>,
    addr: Option<IpAddr>,
    rtcp_port: Option<u16>,
    rtcp_addr: Option<IpAddr>,
    rtcp_mux: bool,
    direction: Direction,
    hold_by_address: bool,
    ptime_ms: Option<u32>,
    cryptos: Vec<String>,
}

impl MediaDesc {
    fn parse(sdp: &str) -> Result<Self, SdpError> {
        let mut session_addr = None;
        let mut session_dir = None;
        let mut media: Option<Self> = None;
        let mut media_dir = None;
        let mut in_audio = false;
        let mut seen_audio = false;
        for line in sdp.lines() {
            let line = line.trim_end_matches('\r');
            let Some((kind, value)) = line.split_once('=') else {
                continue;
            };
            match kind {
                "m" => {
                    in_audio = false;
                    if seen_audio || !value.starts_with("audio ") {
                        continue;
                    }
                    seen_audio = true;
                    in_audio = true;
                    let mut parts = value.split_whitespace().skip(1);
                    let port = parts
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| SdpError::NoAudio(cut(value)))?;
                    let proto = parts.next().unwrap_or_default().to_string();
                    let formats = parts.filter_map(|f| f.parse().ok()).collect();
                    media = Some(Self {
                        port,
                        proto,
                        formats,
                        rtpmaps: Vec::new(),
                        addr: None,
                        rtcp_port: None,
                        rtcp_addr: None,
                        rtcp_mux: false,
                        direction: Direction::SendRecv,
                        hold_by_address: false,
                        ptime_ms: None,
                        cryptos: Vec::new(),
                    });
                }
                "c" => {
                    let addr = value.split_whitespace().nth(2).and_then(parse_addr);
                    match (&mut media, in_audio) {
                        (Some(m), true) => m.addr = addr,
                        (None, _) => session_addr = addr,
                        _ => {}
                    }
                }
                "a" => {
                    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                    let dir = match name {
                        "sendrecv" => Some(Direction::SendRecv),
                        "sendonly" => Some(Direction::SendOnly),
                        "recvonly" => Some(Direction::RecvOnly),
                        "inactive" => Some(Direction::Inactive),
                        _ => None,
                    };
                    if media.is_none() {
                        if dir.is_some() {
                            session_dir = dir;
                        }
                        continue;
                    }
                    if !in_audio {
                        continue;
                    }
                    let Some(m) = media.as_mut() else { continue };
                    if dir.is_some() {
                        media_dir = dir;
                    }
                    match name {
                        "rtpmap" => {
                            if let Some(r) = parse_rtpmap(arg) {
                                m.rtpmaps.push(r);
                            }
                        }
                        "rtcp" => {
                            let mut p = arg.split_whitespace();
                            m.rtcp_port = p.next().and_then(|v| v.parse().ok());
                            m.rtcp_addr = p.nth(2).and_then(parse_addr);
                        }
                        "rtcp-mux" => m.rtcp_mux = true,
                        "ptime" => m.ptime_ms = arg.trim().parse().ok(),
                        "crypto" => m.cryptos.push(arg.to_string()),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let mut m = media.ok_or_else(|| SdpError::NoAudio("no m=audio".into()))?;
        m.direction = media_dir.or(session_dir).unwrap_or_default();
        m.addr = m.addr.or(session_addr);
        if m.addr.is_some_and(|a| a.is_unspecified()) {
            // RFC 2543 hold: c=0.0.0.0 means "do not send to me"
            m.hold_by_address = true;
        }
        Ok(m)
    }

    fn is_srtp(&self) -> bool {
        self.proto == "RTP/SAVP"
    }

    fn check_usable(&self, have_key: bool) -> Result<(), SdpError> {
        if self.port == 0 {
            return Err(SdpError::Rejected);
        }
        match self.proto.as_str() {
            "RTP/AVP" => {}
            "RTP/SAVP" if !have_key => return Err(SdpError::SrtpUnsupported(cut(&self.proto))),
            "RTP/SAVP" => {}
            // DTLS-SRTP, AVPF feedback profiles: not for a SIP trunk
            other => return Err(SdpError::NoAudio(cut(other))),
        }
        if self.addr.is_none() {
            return Err(SdpError::NoConnection);
        }
        Ok(())
    }

    fn rtpmap(&self, pt: u8) -> Option<(&str, u32)> {
        self.rtpmaps
            .iter()
            .find(|r| r.0 == pt)
            .map(|r| (r.1.as_str(), r.2))
    }

    fn codec_of(&self, pt: u8, _config: &PbxSdpConfig) -> Option<Codec> {
        match self.rtpmap(pt) {
            Some((name, rate)) => Codec::from_rtpmap(name, rate),
            // RFC 3551 static types may come without rtpmap
            None => [Codec::Pcmu, Codec::Pcma, Codec::G722]
                .into_iter()
                .find(|c| c.static_pt() == Some(pt)),
        }
    }

    fn telephone_event(&self, clock_rate_hz: u32) -> Option<TelephoneEvent> {
        self.formats.iter().find_map(|&pt| {
            let (name, rate) = self.rtpmap(pt)?;
            (name.eq_ignore_ascii_case("telephone-event") && rate == clock_rate_hz).then_some(
                TelephoneEvent {
                    pt,
                    clock_rate_hz: rate,
                },
            )
        })
    }

    fn negotiated(&self, codec: Codec, pt: u8) -> Result<NegotiatedMedia, SdpError> {
        let remote_crypto = if self.is_srtp() {
            let key = self
                .cryptos
                .iter()
                .find_map(|c| SdesKey::parse_attribute(c).ok())
                .ok_or_else(|| {
                    SdpError::SrtpUnsupported(format!("no usable {SUITE} crypto line"))
                })?;
            Some(key)
        } else {
            None
        };
        // Same clock as the audio first (RFC 4733 §2.1 wants the audio's clock), else 8000.
        let dtmf = self
            .telephone_event(codec.clock_rate_hz())
            .or_else(|| self.telephone_event(8000));
        let addr = self.addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let remote_rtp = SocketAddr::new(addr, self.port);
        let remote_rtcp = if self.rtcp_mux {
            remote_rtp
        } else {
            SocketAddr::new(
                self.rtcp_addr.unwrap_or(addr),
                self.rtcp_port.unwrap_or(self.port.saturating_add(1)),
            )
        };
        let pbx_direction = if self.hold_by_address {
            match self.direction {
                Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
                _ => Direction::Inactive,
            }
        } else {
            self.direction
        };
        Ok(NegotiatedMedia {
            codec,
            pt,
            dtmf,
            remote_rtp,
            remote_rtcp,
            rtcp_mux: self.rtcp_mux,
            pbx_direction,
            pbx_ptime_ms: self.ptime_ms,
            remote_crypto,
        })
    }

    fn format_list(&self) -> String {
        self.formats
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn answer_direction(ours: Direction, theirs: Direction, hold_by_address: bool) -> Direction {
    let theirs = if hold_by_address && theirs == Direction::SendRecv {
        Direction::SendOnly
    } else {
        theirs
    };
    // RFC 3264 §6.1: sendonly → recvonly, recvonly → sendonly, inactive → inactive,
    // intersected with what we want.
    let allowed = theirs.reversed();
    let send = ours.sends() && allowed.sends();
    let recv = ours.receives() && allowed.receives();
    match (send, recv) {
        (true, true) => Direction::SendRecv,
        (true, false) => Direction::SendOnly,
        (false, true) => Direction::RecvOnly,
        (false, false) => Direction::Inactive,
    }
}

fn render(
    local: &LocalMedia,
    formats: &[(u8, String, Option<String>)],
    ptime_ms: u32,
    rtcp_mux: bool,
    crypto: Option<&SdesKey>,
) -> String {
    let ip = match local.addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let mut s = String::with_capacity(512);
    let pts: Vec<String> = formats.iter().map(|f| f.0.to_string()).collect();
    // writing to a String cannot fail
    let _ = write!(
        s,
        "v=0\r\no=whatsip {} {} IN {ip} {}\r\ns=whatsip\r\nc=IN {ip} {}\r\nt=0 0\r\n\
         m=audio {} {} {}\r\n",
        local.session_id,
        local.session_version,
        local.addr,
        local.addr,
        local.rtp_port,
        if crypto.is_some() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        },
        pts.join(" ")
    );
    for (pt, map, fmtp) in formats {
        let _ = write!(s, "a=rtpmap:{pt} {map}\r\n");
        if let Some(f) = fmtp {
            let _ = write!(s, "a=fmtp:{pt} {f}\r\n");
        }
    }
    let _ = write!(s, "a=ptime:{ptime_ms}\r\n");
    if rtcp_mux {
        s.push_str("a=rtcp-mux\r\n");
    } else {
        let _ = write!(
            s,
            "a=rtcp:{} IN {ip} {}\r\n",
            local.rtp_port.saturating_add(1),
            local.addr
        );
    }
    let _ = write!(s, "a={}\r\n", local.direction.as_str());
    if let Some(key) = crypto {
        let _ = write!(s, "a=crypto:{}\r\n", key.to_attribute());
    }
    s
}

fn parse_rtpmap(arg: &str) -> Option<(u8, String, u32)> {
    let (pt, rest) = arg.split_once(' ')?;
    let mut enc = rest.trim().split('/');
    let name = enc.next()?.to_string();
    let rate = enc.next()?.parse().ok()?;
    Some((pt.trim().parse().ok()?, name, rate))
}

fn parse_addr(s: &str) -> Option<IpAddr> {
    // multicast TTL suffixes (`/127`) are not used on trunks; strip them anyway
    s.split('/').next()?.parse().ok()
}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalMedia {
        LocalMedia {
            addr: "192.0.2.10".parse().unwrap(),
            rtp_port: 10_000,
            session_id: 42,
            session_version: 1,
            direction: Direction::SendRecv,
            crypto: None,
        }
    }

    const ASTERISK_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 198.51.100.7\r\ns=Asterisk\r\n\
        c=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 17000 RTP/AVP 0 8 9 101\r\n\
        a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n\
        a=maxptime:150\r\na=sendrecv\r\n";

    #[test]
    fn offer_lists_codecs_in_preference_order_with_dtmf() {
        let sdp = build_offer(&local(), &PbxSdpConfig::default());
        assert!(
            sdp.contains("m=audio 10000 RTP/AVP 111 9 0 8 110 101\r\n"),
            "{sdp}"
        );
        assert!(sdp.contains("a=rtpmap:111 opus/48000/2\r\n"));
        assert!(sdp.contains("a=rtpmap:9 G722/8000\r\n"));
        assert!(sdp.contains("a=rtpmap:110 telephone-event/48000\r\n"));
        assert!(sdp.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(sdp.contains("a=ptime:20\r\na=rtcp-mux\r\na=sendrecv\r\n"));
        assert!(sdp.contains("c=IN IP4 192.0.2.10\r\n"));
    }

    #[test]
    fn answer_to_our_offer_picks_the_pbx_choice() {
        let answer = "v=0\r\no=- 1 2 IN IP4 198.51.100.7\r\ns=-\r\nt=0 0\r\n\
            m=audio 17002 RTP/AVP 0 101\r\nc=IN IP4 198.51.100.8\r\n\
            a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
        let n = parse_answer(answer, &PbxSdpConfig::default(), false).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.pt, 0);
        assert_eq!(
            n.dtmf,
            Some(TelephoneEvent {
                pt: 101,
                clock_rate_hz: 8000
            })
        );
        assert_eq!(n.remote_rtp, "198.51.100.8:17002".parse().unwrap());
        assert_eq!(n.remote_rtcp, "198.51.100.8:17003".parse().unwrap());
        assert!(!n.rtcp_mux);
        // an Opus answer with 48 kHz events: pass-through with telephone-event/48000
        let opus = "v=0\r\nc=IN IP4 198.51.100.8\r\nm=audio 17002 RTP/AVP 111 110\r\n\
            a=rtpmap:111 opus/48000/2\r\na=rtpmap:110 telephone-event/48000\r\na=rtcp-mux\r\n";
        let n = parse_answer(opus, &PbxSdpConfig::default(), false).unwrap();
        assert_eq!((n.codec, n.pt), (Codec::Opus, 111));
        assert_eq!(
            n.dtmf,
            Some(TelephoneEvent {
                pt: 110,
                clock_rate_hz: 48_000
            })
        );
        assert!(n.rtcp_mux);
        assert_eq!(n.remote_rtcp, n.remote_rtp);
    }

    #[test]
    fn answer_asterisk_offer_with_preferred_common_codec() {
        let (sdp, n) = answer_offer(ASTERISK_OFFER, &local(), &PbxSdpConfig::default()).unwrap();
        assert_eq!((n.codec, n.pt), (Codec::G722, 9));
        assert_eq!(
            n.dtmf,
            Some(TelephoneEvent {
                pt: 101,
                clock_rate_hz: 8000
            })
        );
        assert_eq!(n.pbx_ptime_ms, Some(20));
        assert!(sdp.contains("m=audio 10000 RTP/AVP 9 101\r\n"), "{sdp}");
        assert!(
            sdp.contains("a=rtcp:10001 IN IP4 192.0.2.10\r\n"),
            "no mux offered: {sdp}"
        );
        assert!(sdp.ends_with("a=sendrecv\r\n"));
        let pcma_only = PbxSdpConfig {
            codecs: vec![Codec::Pcma],
            ..PbxSdpConfig::default()
        };
        let (_, n) = answer_offer(ASTERISK_OFFER, &local(), &pcma_only).unwrap();
        assert_eq!((n.codec, n.pt), (Codec::Pcma, 8));
    }

    #[test]
    fn hold_directions_are_mirrored_and_reported() {
        for (attr, pbx, ours) in [
            ("a=sendonly", Direction::SendOnly, "a=recvonly"),
            ("a=recvonly", Direction::RecvOnly, "a=sendonly"),
            ("a=inactive", Direction::Inactive, "a=inactive"),
        ] {
            let offer = ASTERISK_OFFER.replace("a=sendrecv", attr);
            let (sdp, n) = answer_offer(&offer, &local(), &PbxSdpConfig::default()).unwrap();
            assert_eq!(n.pbx_direction, pbx);
            assert!(sdp.contains(ours), "{attr}: {sdp}");
        }
        // RFC 2543 hold
        let offer = ASTERISK_OFFER.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0");
        let (sdp, n) = answer_offer(&offer, &local(), &PbxSdpConfig::default()).unwrap();
        assert_eq!(n.pbx_direction, Direction::SendOnly);
        assert!(sdp.contains("a=recvonly"));
    }

    #[test]
    fn unusable_offers_are_errors() {
        let cfg = PbxSdpConfig::default();
        let meta_sdes = "v=0\r\nc=IN IP4 157.240.19.130\r\nm=audio 3480 RTP/SAVP 111 126\r\n\
            a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(matches!(
            answer_offer(meta_sdes, &local(), &cfg),
            Err(SdpError::SrtpUnsupported(_))
        ));
        let gsm = ASTERISK_OFFER.replace("0 8 9 101", "3 101").replace(
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\n",
            "",
        );
        assert!(matches!(
            answer_offer(&gsm, &local(), &cfg),
            Err(SdpError::NoCommonCodec(_))
        ));
        let rejected = ASTERISK_OFFER.replace("m=audio 17000", "m=audio 0");
        assert_eq!(
            answer_offer(&rejected, &local(), &cfg),
            Err(SdpError::Rejected)
        );
        assert!(answer_offer("garbage", &local(), &cfg).is_err());
        assert!(answer_offer("m=audio x", &local(), &cfg).is_err());
        let no_c = ASTERISK_OFFER.replace("c=IN IP4 198.51.100.7\r\n", "");
        assert_eq!(
            answer_offer(&no_c, &local(), &cfg),
            Err(SdpError::NoConnection)
        );
    }

    /// Meta's SIP-mode SDES offer (§5.7) with our key: answered RTP/SAVP with our key under
    /// the offer's tag, and their key returned for the SRTP context.
    #[test]
    fn sdes_offer_is_answered_with_our_key_and_the_offer_tag() {
        let theirs = SdesKey::from_parts(7, [1; 16], [2; 14]);
        let ours = SdesKey::from_parts(1, [3; 16], [4; 14]);
        let offer = format!(
            "v=0\r\nc=IN IP4 157.240.19.130\r\nm=audio 3480 RTP/SAVP 111 126\r\n\
             a=rtcp-mux\r\na=crypto:{}\r\na=rtpmap:111 opus/48000/2\r\n\
             a=rtpmap:126 telephone-event/8000\r\n",
            theirs.to_attribute()
        );
        let local = LocalMedia {
            crypto: Some(ours.clone()),
            ..local()
        };
        let (sdp, n) = answer_offer(&offer, &local, &PbxSdpConfig::default()).unwrap();
        assert_eq!(n.remote_crypto, Some(theirs));
        assert!(sdp.contains("m=audio 10000 RTP/SAVP 111 126\r\n"), "{sdp}");
        let answered = SdesKey::with_tag(&ours, 7);
        assert!(sdp.contains(&format!("a=crypto:{}\r\n", answered.to_attribute())));
        assert!(sdp.contains("a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:"));
        // our SDES offer, and the PBX's answer to it
        let offer = build_offer(&local, &PbxSdpConfig::default());
        assert!(offer.contains("RTP/SAVP") && offer.contains("a=crypto:1 "));
        let answer = "v=0\r\nc=IN IP4 10.0.0.9\r\nm=audio 5000 RTP/SAVP 0\r\n\
            a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n";
        let n = parse_answer(answer, &PbxSdpConfig::default(), true).unwrap();
        assert!(n.remote_crypto.is_some());
        let plain = answer.replace("RTP/SAVP", "RTP/AVP");
        assert!(parse_answer(&plain, &PbxSdpConfig::default(), true).is_err());
        let no_line = "v=0\r\nc=IN IP4 10.0.0.9\r\nm=audio 5000 RTP/SAVP 0\r\n";
        assert!(parse_answer(no_line, &PbxSdpConfig::default(), true).is_err());
    }

    #[test]
    fn static_payload_types_without_rtpmap() {
        let offer = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 8 0\r\n";
        let (_, n) = answer_offer(
            offer,
            &local(),
            &PbxSdpConfig {
                codecs: vec![Codec::Pcmu, Codec::Pcma],
                ..PbxSdpConfig::default()
            },
        )
        .unwrap();
        assert_eq!((n.codec, n.pt, n.dtmf), (Codec::Pcmu, 0, None));
    }

    proptest::proptest! {
        /// Any text, including mangled copies of a real offer, is answered or refused
        /// without panicking.
        #[test]
        fn arbitrary_sdp_never_panics(
            cut_at in 0usize..400,
            junk in "[ -~\r\n]{0,200}",
        ) {
            let mut offer: String = ASTERISK_OFFER.chars().take(cut_at).collect();
            offer.push_str(&junk);
            let _ = answer_offer(&offer, &local(), &PbxSdpConfig::default());
            let _ = parse_answer(&junk, &PbxSdpConfig::default(), false);
        }
    }

    #[test]
    fn port_allocator_hands_out_even_pairs_round_robin() {
        let mut a = PortAllocator::new(10_001..=10_008).unwrap();
        let ports: Vec<u16> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(ports, [10_002, 10_004, 10_006]);
        assert_eq!(a.allocate(), Err(MediaError::PortsExhausted));
        a.release(10_002);
        a.release(9); // ignored
        assert_eq!(a.in_use(), 2);
        assert_eq!(a.allocate().unwrap(), 10_002);
        let mut b = PortAllocator::new(10_000..=10_007).unwrap();
        let ports: Vec<u16> = (0..4).map(|_| b.allocate().unwrap()).collect();
        assert_eq!(ports, [10_000, 10_002, 10_004, 10_006]);
        b.release(10_002);
        b.release(10_004);
        assert_eq!(
            b.allocate().unwrap(),
            10_002,
            "cursor wrapped to the oldest free pair"
        );
        assert!(PortAllocator::new(10_000..=10_000).is_err());
    }
}
