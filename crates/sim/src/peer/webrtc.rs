//! [`MediaPeer`] backed by `whatsip-media`'s WebRTC phone (feature `webrtc-phone`): real
//! ICE-lite, DTLS-SRTP and Opus audio, RFC 4733 digits, and an analysis of what the
//! business sent.

use std::net::{Ipv4Addr, SocketAddr};

use whatsip_media::phone::{
    PhoneAudio, PhoneAudioConfig, PhoneCommand, PhoneConfig, PhoneHandle, PhonePeer, PhoneSocket,
    run_phone,
};

use super::{MediaPeer, MediaPeerFactory, MediaReport, PeerContext, PeerError, PeerFuture};
use crate::driver::SystemClock;

/// Creates [`WebRtcPhonePeer`]s.
#[derive(Clone, Debug, Default)]
pub struct WebRtcPhoneFactory {
    /// Template of the phone's SDP behaviour (candidates are filled in per call).
    pub phone: PhoneConfig,
    /// What the phone plays (default: 1 kHz tone).
    pub audio: PhoneAudioConfig,
}

impl MediaPeerFactory for WebRtcPhoneFactory {
    fn create(&self, _ctx: &PeerContext) -> PeerFuture<'_, Result<Box<dyn MediaPeer>, PeerError>> {
        Box::pin(async move {
            let socket = PhoneSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .await
                .map_err(|e| PeerError(format!("bind phone socket: {e}")))?;
            let local = socket
                .local_addr()
                .map_err(|e| PeerError(format!("phone socket address: {e}")))?;
            let mut phone = self.phone.clone();
            phone.candidates = vec![local];
            Ok(Box::new(WebRtcPhonePeer {
                phone,
                audio: self.audio.clone(),
                socket: Some(socket),
                peer: None,
                handle: None,
                dtmf_sent: String::new(),
                started: false,
            }) as Box<dyn MediaPeer>)
        })
    }
}

/// The WhatsApp user's phone as a real WebRTC peer. Audio stays muted until the call is
/// answered ([`MediaPeer::start_media`]).
pub struct WebRtcPhonePeer {
    phone: PhoneConfig,
    audio: PhoneAudioConfig,
    socket: Option<PhoneSocket>,
    peer: Option<PhonePeer>,
    handle: Option<PhoneHandle>,
    dtmf_sent: String,
    started: bool,
}

impl WebRtcPhonePeer {
    async fn launch(&mut self, peer: PhonePeer) -> Result<(), PeerError> {
        let socket = self
            .socket
            .take()
            .ok_or_else(|| PeerError("phone already running".into()))?;
        let audio = PhoneAudio::new(self.audio.clone()).map_err(|e| PeerError(e.to_string()))?;
        let handle = run_phone(socket, peer, audio);
        handle.command(PhoneCommand::Mute(true)).await;
        self.handle = Some(handle);
        Ok(())
    }
}

impl MediaPeer for WebRtcPhonePeer {
    fn create_offer(&mut self) -> PeerFuture<'_, Result<String, PeerError>> {
        Box::pin(async move {
            let (peer, sdp) = PhonePeer::offer(&self.phone, SystemClock::new().now().0)
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
            let mut peer = self
                .peer
                .take()
                .ok_or_else(|| PeerError("no pending offer".into()))?;
            peer.accept_answer(answer_sdp, SystemClock::new().now().0)
                .map_err(|e| PeerError(e.to_string()))?;
            self.launch(peer).await
        })
    }

    fn answer_offer<'a>(
        &'a mut self,
        offer_sdp: &'a str,
    ) -> PeerFuture<'a, Result<String, PeerError>> {
        Box::pin(async move {
            let (peer, sdp) = PhonePeer::answer(&self.phone, offer_sdp, SystemClock::new().now().0)
                .map_err(|e| PeerError(e.to_string()))?;
            self.launch(peer).await?;
            Ok(sdp)
        })
    }

    fn start_media(&mut self) -> PeerFuture<'_, Result<(), PeerError>> {
        Box::pin(async move {
            let h = self
                .handle
                .as_ref()
                .ok_or_else(|| PeerError("phone not running".into()))?;
            h.command(PhoneCommand::Mute(false)).await;
            self.started = true;
            Ok(())
        })
    }

    fn send_dtmf<'a>(&'a mut self, digits: &'a str) -> PeerFuture<'a, Result<(), PeerError>> {
        Box::pin(async move {
            let h = self
                .handle
                .as_ref()
                .ok_or_else(|| PeerError("phone not running".into()))?;
            h.command(PhoneCommand::SendDigits(digits.to_owned())).await;
            if self.dtmf_sent.len() + digits.len() <= 4096 {
                self.dtmf_sent.push_str(digits);
            }
            Ok(())
        })
    }

    fn stop(&mut self) -> PeerFuture<'_, ()> {
        Box::pin(async move {
            if let Some(h) = self.handle.take() {
                h.command(PhoneCommand::HangUp).await;
                h.abort();
            }
            self.started = false;
        })
    }

    fn report(&self) -> MediaReport {
        let status = self
            .handle
            .as_ref()
            .map(PhoneHandle::status)
            .unwrap_or_default();
        MediaReport {
            packets_received: status.audio.packets_received,
            bytes_received: 0,
            dtmf_received: status.audio.digits,
            dtmf_sent: self.dtmf_sent.clone(),
            media_started: self.started,
        }
    }
}
