//! The simulator's WhatsApp phone: a WebRTC peer that behaves like Meta's side of a call.
//!
//! [`PhonePeer`] is a sans-IO core (same poll API as [`WaLeg`](crate::webrtc::WaLeg)) that is
//! **ICE-lite and controlled**, writes SDP shaped like Meta's (reference §6.6 and §6.7:
//! `a=ice-lite`, `a=group:BUNDLE audio`, `WhatsAppTrack1`, one IPv4 (and optionally IPv6) host
//! candidate with `network-cost`, `a=ssrc:<n> cname:WhatsAppAudioStream1`, Opus 111 and
//! telephone-event/8000 126, ptime 20) and takes either DTLS role:
//!
//! - [`PhonePeer::offer`]: a user-initiated call, Meta's offer with `a=setup:actpass`; the
//!   business answer decides the DTLS role ([`PhonePeer::accept_answer`]);
//! - [`PhonePeer::answer`]: a business-initiated call, Meta's answer to the business offer
//!   with `a=setup:active` (Meta as DTLS client, as in the doc sample) or `passive`
//!   ([`PhoneConfig::answer_setup`]).
//!
//! [`PhoneAudio`] is the test-signal side: it produces one Opus packet per 20 ms tick (a sine
//! tone or silence), sends RFC 4733 digits on PT 126, and analyses what arrives (tone
//! frequency and level via Goertzel, DTMF digits, gaps, loss) into a [`AudioReport`].
//! [`run_phone`] (feature `rt`) drives both on one UDP socket.

mod audio;
#[cfg(feature = "rt")]
mod driver;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::config::Fingerprint;
use str0m::media::{MediaKind, Mid};
use str0m::rtp::Ssrc as Str0mSsrc;
use str0m::{Candidate, IceCreds};
use tracing::{debug, info};

pub use audio::{AudioReport, LightMode, OpusCycle, PhoneAudio, PhoneAudioConfig, ToneReport};
#[cfg(feature = "rt")]
pub use driver::{PhoneCommand, PhoneHandle, PhoneSocket, PhoneStatus, run_phone};

use crate::RtpPacket;
use crate::webrtc::session::RtcSession;
use crate::webrtc::{
    Datagram, DtlsCertificates, OPUS_PT, SdpSummary, SetupRole, TELEPHONE_EVENT_PT, WaLegError,
    WaLegEvent, WaLegStats, wa_rtc_config,
};

/// Configuration of the simulated phone. `Default` mirrors Meta's live behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneConfig {
    /// Host candidates to advertise (Meta sends one IPv4 and one IPv6). The first one also
    /// fills `m=` and `c=`.
    pub candidates: Vec<SocketAddr>,
    /// Our audio SSRC (from the simulator's seeded RNG).
    pub ssrc: u32,
    /// `a=setup` in answers to business offers: `Active` (Meta the DTLS client, doc sample)
    /// or `Passive`.
    pub answer_setup: SetupRole,
    /// Statistics interval.
    pub stats_interval: Duration,
    /// Our DTLS certificate source. The simulator shares one between its phones (as a browser
    /// shares one between peer connections); `Default` gives each config its own.
    pub dtls: DtlsCertificates,
}

impl Default for PhoneConfig {
    fn default() -> Self {
        Self {
            candidates: Vec::new(),
            ssrc: 1_047_224_411,
            answer_setup: SetupRole::Active,
            stats_interval: Duration::from_secs(5),
            dtls: DtlsCertificates::default(),
        }
    }
}

/// Meta's side of one WebRTC call (ICE-lite, controlled, DTLS either role).
pub struct PhonePeer {
    session: RtcSession,
    creds: IceCreds,
    fingerprint: String,
    mid: String,
    ssrc: u32,
    awaiting_answer: bool,
}

impl std::fmt::Debug for PhonePeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhonePeer")
            .field("ufrag", &self.creds.ufrag)
            .field("mid", &self.mid)
            .field("connected", &self.session.is_connected())
            .finish_non_exhaustive()
    }
}

impl PhonePeer {
    /// Creates Meta's offer for a user-initiated call (reference §6.6 shape).
    pub fn offer(config: &PhoneConfig, now: Instant) -> Result<(Self, String), WaLegError> {
        let mut peer = Self::new(config, "audio", now)?;
        peer.awaiting_answer = true;
        let sdp = peer.meta_sdp(config, SetupRole::ActPass, OPUS_PT, TELEPHONE_EVENT_PT);
        Ok((peer, sdp))
    }

    /// Applies the business answer to [`PhonePeer::offer`]: `a=setup:active` in the answer makes
    /// us the DTLS server (the normal case, §6.3), `passive` the client.
    pub fn accept_answer(&mut self, answer: &str, now: Instant) -> Result<(), WaLegError> {
        if !self.awaiting_answer {
            return Err(WaLegError::NoPendingOffer);
        }
        let s = SdpSummary::parse(answer);
        let active = match s.setup {
            Some(SetupRole::Passive) => true,
            Some(SetupRole::Active) => false,
            // RFC 8842: an answer must not say actpass; a missing line defaults to active.
            Some(SetupRole::ActPass) => return Err(invalid("answer with a=setup:actpass")),
            None => false,
        };
        self.apply_remote(&s, active, now)?;
        self.awaiting_answer = false;
        Ok(())
    }

    /// Answers a business offer like Meta (reference §6.7): ICE-lite, our candidates, the
    /// offer's mid, Opus and telephone-event/8000, `a=setup` from
    /// [`PhoneConfig::answer_setup`].
    pub fn answer(
        config: &PhoneConfig,
        offer: &str,
        now: Instant,
    ) -> Result<(Self, String), WaLegError> {
        let s = SdpSummary::parse(offer);
        let mid = s.mid.clone().unwrap_or_else(|| "0".to_owned());
        let opus_pt = s.opus_pt.ok_or(WaLegError::NoOpus)?;
        // §6.7: if the offer lacks telephone-event/8000, Meta still uses 126.
        let tele_pt = s
            .telephone_events
            .iter()
            .find(|(_, rate)| *rate == 8_000)
            .map_or(TELEPHONE_EVENT_PT, |(pt, _)| *pt);
        let setup = match (s.setup, config.answer_setup) {
            (Some(SetupRole::Active), _) => SetupRole::Passive,
            (Some(SetupRole::Passive), _) => SetupRole::Active,
            (_, SetupRole::Passive) => SetupRole::Passive,
            _ => SetupRole::Active,
        };
        let mut peer = Self::new(config, &mid, now)?;
        peer.apply_remote(&s, setup == SetupRole::Active, now)?;
        let sdp = peer.meta_sdp(config, setup, opus_pt, tele_pt);
        Ok((peer, sdp))
    }

    /// Our ICE username fragment.
    pub fn local_ufrag(&self) -> &str {
        &self.creds.ufrag
    }

    /// Our audio SSRC.
    pub fn local_ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.session.is_connected()
    }

    /// Whether the peer has ended.
    pub fn is_terminated(&self) -> bool {
        self.session.is_terminated()
    }

    /// Counters so far.
    pub fn stats(&self) -> &WaLegStats {
        self.session.stats()
    }

    /// Feeds one received UDP datagram.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        self.session.handle_datagram(now, source, destination, data);
    }

    /// Advances timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
    }

    /// Sends one RTP packet on our SSRC.
    pub fn send_rtp(&mut self, rtp: &RtpPacket, now: Instant) -> Result<(), WaLegError> {
        self.session.send_rtp(rtp, now)
    }

    /// Ends the call (DTLS close_notify).
    pub fn hang_up(&mut self, now: Instant) {
        self.session.close(now);
    }

    /// Next datagram to send.
    pub fn poll_datagram(&mut self) -> Option<Datagram> {
        self.session.poll_datagram()
    }

    /// Next event (same events as the WhatsApp leg).
    pub fn poll_event(&mut self) -> Option<WaLegEvent> {
        self.session.poll_event()
    }

    /// When to call [`PhonePeer::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    fn new(config: &PhoneConfig, mid: &str, now: Instant) -> Result<Self, WaLegError> {
        if config.candidates.is_empty() {
            return Err(WaLegError::Config("no candidate address".to_owned()));
        }
        let identity = config.dtls.current(now)?;
        let mut rtc = wa_rtc_config(config.stats_interval)
            .set_ice_lite(true)
            .set_dtls_cert(identity.cert().clone())
            .build(now);
        let creds = IceCreds::new();
        for addr in &config.candidates {
            let c = Candidate::host(*addr, "udp").map_err(|e| WaLegError::Config(e.to_string()))?;
            rtc.add_local_candidate(c);
        }
        let mid_id: Mid = mid.into();
        let fingerprint = {
            let mut api = rtc.direct_api();
            api.set_ice_controlling(false);
            api.set_local_ice_credentials(creds.clone());
            api.declare_media(mid_id, MediaKind::Audio);
            api.declare_stream_tx(Str0mSsrc::from(config.ssrc), None, mid_id, None);
            api.local_dtls_fingerprint().to_string()
        };
        let mut session = RtcSession::new(rtc);
        session.set_mid(mid_id);
        session.drain(now);
        Ok(Self {
            session,
            creds,
            fingerprint,
            mid: mid.to_owned(),
            ssrc: config.ssrc,
            awaiting_answer: false,
        })
    }

    fn apply_remote(
        &mut self,
        s: &SdpSummary,
        dtls_active: bool,
        now: Instant,
    ) -> Result<(), WaLegError> {
        let (Some(ufrag), Some(pwd)) = (s.ice_ufrag.clone(), s.ice_pwd.clone()) else {
            return Err(invalid("missing a=ice-ufrag/ice-pwd"));
        };
        let fp = s
            .fingerprint_sha256
            .as_deref()
            .and_then(parse_fingerprint)
            .ok_or_else(|| invalid("missing or bad a=fingerprint:sha-256"))?;
        let mid: Mid = self.mid.as_str().into();
        let rtc = self.session.rtc_mut();
        for line in &s.candidate_lines {
            if let Ok(c) = Candidate::from_sdp_string(line) {
                rtc.add_remote_candidate(c);
            }
        }
        {
            let mut api = rtc.direct_api();
            api.set_remote_ice_credentials(IceCreds { ufrag, pass: pwd });
            api.set_remote_fingerprint(fp);
            for ssrc in &s.ssrcs {
                api.expect_stream_rx(Str0mSsrc::from(*ssrc), None, mid, None);
            }
            api.start_dtls(dtls_active)
                .map_err(|e| invalid(&e.to_string()))?;
        }
        self.session.drain(now);
        debug!(dtls_active, "phone applied remote sdp");
        info!(ufrag = %self.creds.ufrag, "phone negotiated");
        Ok(())
    }

    fn meta_sdp(&self, config: &PhoneConfig, setup: SetupRole, opus_pt: u8, tele_pt: u8) -> String {
        let first = config.candidates[0];
        let (c_family, c_ip) = match first.ip() {
            IpAddr::V4(ip) => ("IP4", ip.to_string()),
            IpAddr::V6(ip) => ("IP6", ip.to_string()),
        };
        let stream = format!("wa-{}", self.creds.ufrag);
        let setup = match setup {
            SetupRole::ActPass => "actpass",
            SetupRole::Active => "active",
            SetupRole::Passive => "passive",
        };
        let mut sdp = String::with_capacity(1600);
        let mut line = |l: &str| {
            sdp.push_str(l);
            sdp.push_str("\r\n");
        };
        line("v=0");
        line(&format!(
            "o=- {} 2 IN IP4 127.0.0.1",
            u64::from(self.ssrc) * 1000 + 762
        ));
        line("s=-");
        line("t=0 0");
        line(&format!("a=group:BUNDLE {}", self.mid));
        line(&format!("a=msid-semantic: WMS {stream}"));
        line("a=ice-lite");
        line(&format!(
            "m=audio {} UDP/TLS/RTP/SAVPF {opus_pt} {tele_pt}",
            first.port()
        ));
        line(&format!("c=IN {c_family} {c_ip}"));
        line("a=rtcp:9 IN IP4 0.0.0.0");
        for (i, addr) in config.candidates.iter().enumerate() {
            // IPv6 gets the higher priority, as in Meta's capture.
            let prio = if addr.is_ipv6() {
                2_122_262_783u32
            } else {
                2_122_260_223
            };
            line(&format!(
                "a=candidate:{} 1 udp {prio} {} {} typ host generation 0 network-cost 50",
                3_935_165_743u32.wrapping_add(i as u32),
                addr.ip(),
                addr.port()
            ));
        }
        line(&format!("a=ice-ufrag:{}", self.creds.ufrag));
        line(&format!("a=ice-pwd:{}", self.creds.pass));
        line(&format!("a=fingerprint:{}", self.fingerprint));
        line(&format!("a=setup:{setup}"));
        line(&format!("a=mid:{}", self.mid));
        line("a=sendrecv");
        line(&format!("a=msid:{stream} WhatsAppTrack1"));
        line("a=rtcp-mux");
        line(&format!("a=rtpmap:{opus_pt} opus/48000/2"));
        line(&format!("a=rtcp-fb:{opus_pt} transport-cc"));
        line(&format!(
            "a=fmtp:{opus_pt} maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1"
        ));
        line(&format!("a=rtpmap:{tele_pt} telephone-event/8000"));
        line("a=maxptime:20");
        line("a=ptime:20");
        line(&format!("a=ssrc:{} cname:WhatsAppAudioStream1", self.ssrc));
        sdp
    }
}

fn parse_fingerprint(hex: &str) -> Option<Fingerprint> {
    let bytes: Option<Vec<u8>> = hex
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    let bytes = bytes?;
    (bytes.len() == 32).then(|| Fingerprint {
        hash_func: "sha-256".to_owned(),
        bytes,
    })
}

fn invalid(msg: &str) -> WaLegError {
    WaLegError::InvalidSdp(msg.chars().take(64).collect())
}

#[cfg(test)]
mod tests;
