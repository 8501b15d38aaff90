//! A [`MediaPeer`] with real WebRTC media: whatsip-media's simulated phone
//! ([`whatsip_media::phone`]), ICE-lite and DTLS-SRTP like Meta, sending an Opus test tone
//! and RFC 4733 digits and analysing what comes back.
//!
//! Tests reach the running phones through the [`PhoneRegistry`] the factory fills:
//! [`PhoneProbe::status`] reports the tone frequency and level heard, the digits
//! received and the transport counters; [`PhoneProbe::command`] changes the tone, mutes
//! or presses keys.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use whatsip_media::driver::SystemClock as MediaClock;
use whatsip_media::phone::{
    LightMode, OpusCycle, PhoneAudio, PhoneAudioConfig, PhoneCommand, PhoneConfig, PhoneHandle,
    PhonePeer, PhoneSocket, PhoneStatus, run_phone,
};
use whatsip_media::webrtc::DtlsCertificates;

use crate::ids::WaId;
use crate::peer::{MediaPeer, MediaPeerFactory, MediaReport, PeerContext, PeerError, PeerFuture};

/// The phones created by a [`WebRtcPeerFactory`], oldest first.
#[derive(Clone, Debug, Default)]
pub struct PhoneRegistry {
    phones: Arc<Mutex<Vec<PhoneProbe>>>,
}

impl PhoneRegistry {
    /// Every phone created so far.
    pub fn phones(&self) -> Vec<PhoneProbe> {
        self.phones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The most recent phone of `user`, searched without copying the registry.
    pub fn find(&self, user: &WaId) -> Option<PhoneProbe> {
        self.phones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .find(|p| &p.user == user)
            .cloned()
    }

    /// The most recently created phone.
    pub fn last(&self) -> Option<PhoneProbe> {
        self.phones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
    }

    fn push(&self, probe: PhoneProbe) {
        let mut phones = self.phones.lock().unwrap_or_else(|e| e.into_inner());
        // bounded: long simulator runs keep the latest 1024 phones
        if phones.len() >= 1024 {
            phones.remove(0);
        }
        phones.push(probe);
    }
}

/// A view of one phone, usable while its call runs.
#[derive(Clone, Debug)]
pub struct PhoneProbe {
    /// The WhatsApp user the phone belongs to.
    pub user: WaId,
    slot: Arc<Mutex<Option<Arc<PhoneHandle>>>>,
}

impl PhoneProbe {
    /// The phone's latest status; `None` before the business answered (no media yet).
    pub fn status(&self) -> Option<PhoneStatus> {
        self.handle().map(|h| h.status())
    }

    /// Sends a command to the running phone; `false` if media has not started.
    pub async fn command(&self, cmd: PhoneCommand) -> bool {
        match self.handle() {
            Some(h) => {
                h.command(cmd).await;
                true
            }
            None => false,
        }
    }

    /// Waits until `pred` holds for the status, polling every 20 ms up to `timeout`.
    /// Returns the last status seen and whether `pred` held.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&PhoneStatus) -> bool,
    ) -> (Option<PhoneStatus>, bool) {
        let polls = (timeout.as_millis() / 20).max(1);
        for _ in 0..polls {
            let s = self.status();
            if s.as_ref().is_some_and(&pred) {
                return (s, true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = self.status();
        let ok = s.as_ref().is_some_and(&pred);
        (s, ok)
    }

    fn handle(&self) -> Option<Arc<PhoneHandle>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Creates a [`WebRtcPeer`] per call and records it in its [`PhoneRegistry`].
#[derive(Clone, Debug)]
pub struct WebRtcPeerFactory {
    registry: PhoneRegistry,
    tone_hz: Option<f64>,
    light: Option<LightMode>,
    send_media: bool,
    /// One DTLS certificate for all phones of this factory (a browser reuses its certificate
    /// across peer connections): generating one per phone dominated the phone's setup cost.
    dtls: DtlsCertificates,
}

impl WebRtcPeerFactory {
    /// Phones playing `tone_hz` (`None`: silence) once the call is accepted.
    pub fn new(tone_hz: Option<f64>) -> Self {
        Self {
            registry: PhoneRegistry::default(),
            tone_hz,
            light: None,
            send_media: true,
            dtls: DtlsCertificates::default(),
        }
    }

    /// Load-generator phones ([`LightMode`]): they loop one second of `tone_hz`, encoded
    /// once here for all of them, and decode a burst of three received frames in every
    /// `decode_one_in`. ICE and DTLS-SRTP are as real as with [`WebRtcPeerFactory::new`].
    pub fn light(tone_hz: Option<f64>, decode_one_in: u32) -> Result<Self, PeerError> {
        let cycle = OpusCycle::tone(tone_hz, PhoneAudioConfig::default().tone_level_dbfs, 50)
            .map_err(|e| PeerError(e.to_string()))?;
        Ok(Self {
            light: Some(LightMode {
                cycle,
                decode_one_in,
            }),
            ..Self::new(tone_hz)
        })
    }

    /// Phones that set up ICE and DTLS-SRTP but never send audio (signalling load).
    #[must_use]
    pub fn without_media(mut self) -> Self {
        self.send_media = false;
        self
    }

    /// The phones' DTLS certificate source (default: one certificate shared by all phones,
    /// rotated daily; [`DtlsCertificates::per_leg`] for one per phone).
    #[must_use]
    pub fn with_dtls(mut self, dtls: DtlsCertificates) -> Self {
        self.dtls = dtls;
        self
    }

    /// The phones this factory created.
    pub fn registry(&self) -> PhoneRegistry {
        self.registry.clone()
    }
}

impl MediaPeerFactory for WebRtcPeerFactory {
    fn create(&self, ctx: &PeerContext) -> PeerFuture<'_, Result<Box<dyn MediaPeer>, PeerError>> {
        let user = ctx.user.clone();
        Box::pin(async move {
            let socket = PhoneSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .await
                .map_err(|e| PeerError(format!("bind phone socket: {e}")))?;
            let probe = PhoneProbe {
                user,
                slot: Arc::new(Mutex::new(None)),
            };
            self.registry.push(probe.clone());
            Ok(Box::new(WebRtcPeer {
                socket: Some(socket),
                peer: None,
                probe,
                tone_hz: self.tone_hz,
                light: self.light.clone(),
                send_media: self.send_media,
                dtls: self.dtls.clone(),
                dtmf_sent: String::new(),
                media_started: false,
            }) as Box<dyn MediaPeer>)
        })
    }
}

/// The WhatsApp user's phone with real WebRTC media.
pub struct WebRtcPeer {
    socket: Option<PhoneSocket>,
    peer: Option<PhonePeer>,
    probe: PhoneProbe,
    tone_hz: Option<f64>,
    light: Option<LightMode>,
    send_media: bool,
    dtls: DtlsCertificates,
    dtmf_sent: String,
    media_started: bool,
}

impl WebRtcPeer {
    fn config(&self) -> Result<PhoneConfig, PeerError> {
        let addr = self
            .socket
            .as_ref()
            .ok_or_else(|| PeerError("phone already running".into()))?
            .local_addr()
            .map_err(|e| PeerError(e.to_string()))?;
        Ok(PhoneConfig {
            candidates: vec![addr],
            ssrc: rand::random(),
            dtls: self.dtls.clone(),
            ..PhoneConfig::default()
        })
    }

    /// Starts the phone task (muted until `start_media`).
    async fn run(&mut self, peer: PhonePeer) -> Result<(), PeerError> {
        let socket = self
            .socket
            .take()
            .ok_or_else(|| PeerError("phone already running".into()))?;
        let audio = PhoneAudio::new(PhoneAudioConfig {
            tone_hz: self.tone_hz,
            ssrc: peer.local_ssrc(),
            initial_seq: rand::random(),
            initial_ts: rand::random(),
            light: self.light.clone(),
            ..PhoneAudioConfig::default()
        })
        .map_err(|e| PeerError(e.to_string()))?;
        let handle = run_phone(socket, peer, audio);
        handle.command(PhoneCommand::Mute(true)).await;
        *self.probe.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(handle));
        Ok(())
    }
}

impl MediaPeer for WebRtcPeer {
    fn create_offer(&mut self) -> PeerFuture<'_, Result<String, PeerError>> {
        Box::pin(async move {
            let config = self.config()?;
            let (peer, sdp) = PhonePeer::offer(&config, MediaClock::now())
                .map_err(|e| PeerError(e.to_string()))?;
            self.peer = Some(peer);
            Ok(sdp)
        })
    }

    fn apply_answer<'a>(
        &'a mut self,
        answer_sdp: &'a str,
    ) -> PeerFuture<'a, Result<(), PeerError>> {
        Box::pin(async move {
            let Some(mut peer) = self.peer.take() else {
                // the second answer (accept after pre_accept) is identical by rule
                return Ok(());
            };
            peer.accept_answer(answer_sdp, MediaClock::now())
                .map_err(|e| PeerError(e.to_string()))?;
            self.run(peer).await
        })
    }

    fn answer_offer<'a>(
        &'a mut self,
        offer_sdp: &'a str,
    ) -> PeerFuture<'a, Result<String, PeerError>> {
        Box::pin(async move {
            let config = self.config()?;
            let (peer, sdp) = PhonePeer::answer(&config, offer_sdp, MediaClock::now())
                .map_err(|e| PeerError(e.to_string()))?;
            self.run(peer).await?;
            Ok(sdp)
        })
    }

    fn start_media(&mut self) -> PeerFuture<'_, Result<(), PeerError>> {
        Box::pin(async move {
            self.media_started = true;
            if self.send_media {
                self.probe.command(PhoneCommand::Mute(false)).await;
            }
            Ok(())
        })
    }

    fn send_dtmf<'a>(&'a mut self, digits: &'a str) -> PeerFuture<'a, Result<(), PeerError>> {
        Box::pin(async move {
            if let Some(bad) = digits
                .chars()
                .find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
            {
                return Err(PeerError(format!("not a DTMF digit: {bad:?}")));
            }
            if self.dtmf_sent.len() + digits.len() <= 4096 {
                self.dtmf_sent.push_str(digits);
            }
            self.probe
                .command(PhoneCommand::SendDigits(digits.to_owned()))
                .await;
            Ok(())
        })
    }

    fn stop(&mut self) -> PeerFuture<'_, ()> {
        Box::pin(async move {
            self.media_started = false;
            self.socket = None;
            self.peer = None;
            if self.probe.command(PhoneCommand::HangUp).await {
                // let the DTLS close_notify go out; bounded
                let _ = self
                    .probe
                    .wait_for(Duration::from_millis(300), |s| s.terminated)
                    .await;
            }
            if let Some(h) = self.probe.handle() {
                h.abort();
            }
        })
    }

    fn report(&self) -> MediaReport {
        let status = self.probe.status().unwrap_or_default();
        MediaReport {
            packets_received: status.stats.rtp_packets_received,
            bytes_received: status.stats.rtp_bytes_received,
            dtmf_received: status.audio.digits,
            dtmf_sent: self.dtmf_sent.clone(),
            media_started: self.media_started,
        }
    }
}
