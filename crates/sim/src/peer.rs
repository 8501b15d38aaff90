//! The simulated WhatsApp user's phone: the [`MediaPeer`] trait and [`SdpOnlyPeer`].
//!
//! Meta's side of every call has one media peer, created per call by a
//! [`MediaPeerFactory`]. The simulator's engine drives it:
//!
//! | call | engine calls |
//! |---|---|
//! | user-initiated | [`MediaPeer::create_offer`] (goes into the `connect` webhook), then [`MediaPeer::apply_answer`] with the business's `pre_accept`/`accept` answer, [`MediaPeer::start_media`] on `accept` |
//! | business-initiated | [`MediaPeer::answer_offer`] with the business's `connect` offer (the answer goes into the `connect` webhook), [`MediaPeer::start_media`] when the user picks up |
//! | both | [`MediaPeer::send_dtmf`] for scripted key presses, [`MediaPeer::report`] about once a second (feeds the media watchdogs), [`MediaPeer::stop`] when the call ends |
//!
//! The trait is object safe (`Box<dyn MediaPeer>`); async methods return boxed futures so a
//! real WebRTC stack can plug in. [`SdpOnlyPeer`] produces SDP shaped exactly like Meta's on a
//! real bound UDP port but sends no media; it counts datagrams that arrive on its port.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::ids::{PhoneNumberId, WaCallId, WaId};
use crate::sdp::{self, MetaSdpParams};

/// A boxed, `Send` future returned by [`MediaPeer`] methods.
pub type PeerFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A media peer failed; the simulator ends the call (`terminate` `FAILED`, code 138019).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PeerError(pub String);

/// What a peer has seen so far (cumulative).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaReport {
    /// Datagrams (STUN, DTLS, SRTP, RTCP) received from the business side.
    pub packets_received: u64,
    /// Bytes in those datagrams.
    pub bytes_received: u64,
    /// RFC 4733 digits decoded from the business side, in order.
    pub dtmf_received: String,
    /// Digits this peer was asked to send.
    pub dtmf_sent: String,
    /// `start_media` was called and `stop` was not.
    pub media_started: bool,
}

/// Which call a peer is created for.
#[derive(Clone, Debug)]
pub struct PeerContext {
    /// Call id (known before the peer is created for business-initiated calls only;
    /// `None` for a user-initiated call whose id is minted after the offer exists).
    pub call_id: Option<WaCallId>,
    /// The WhatsApp user the peer plays.
    pub user: WaId,
    /// The business number.
    pub phone_number_id: PhoneNumberId,
}

/// The WhatsApp user's phone for one call. See the module docs for the call sequence.
pub trait MediaPeer: Send {
    /// User-initiated call: produce Meta's SDP offer (reference §6.6).
    fn create_offer(&mut self) -> PeerFuture<'_, Result<String, PeerError>>;
    /// User-initiated call: apply the business's SDP answer (`pre_accept` or `accept`; the
    /// simulator calls this once, the second answer being identical by rule).
    fn apply_answer<'a>(&'a mut self, answer_sdp: &'a str)
    -> PeerFuture<'a, Result<(), PeerError>>;
    /// Business-initiated call: answer the business's SDP offer (reference §6.7).
    fn answer_offer<'a>(
        &'a mut self,
        offer_sdp: &'a str,
    ) -> PeerFuture<'a, Result<String, PeerError>>;
    /// The call is answered: start sending audio.
    fn start_media(&mut self) -> PeerFuture<'_, Result<(), PeerError>>;
    /// Send RFC 4733 digits (`0-9*#A-D`) towards the business.
    fn send_dtmf<'a>(&'a mut self, digits: &'a str) -> PeerFuture<'a, Result<(), PeerError>>;
    /// The call ended: stop media and release sockets. Must be idempotent.
    fn stop(&mut self) -> PeerFuture<'_, ()>;
    /// Cumulative counters; cheap, called about once per second per active call.
    fn report(&self) -> MediaReport;
}

/// Creates one [`MediaPeer`] per call.
pub trait MediaPeerFactory: Send + Sync {
    /// A new peer for the call described by `ctx`.
    fn create(&self, ctx: &PeerContext) -> PeerFuture<'_, Result<Box<dyn MediaPeer>, PeerError>>;
}

/// Factory for [`SdpOnlyPeer`]s.
#[derive(Clone, Debug, Default)]
pub struct SdpOnlyPeerFactory;

impl MediaPeerFactory for SdpOnlyPeerFactory {
    fn create(&self, _ctx: &PeerContext) -> PeerFuture<'_, Result<Box<dyn MediaPeer>, PeerError>> {
        Box::pin(async {
            let peer = SdpOnlyPeer::bind().await?;
            Ok(Box::new(peer) as Box<dyn MediaPeer>)
        })
    }
}

/// A peer that speaks Meta-shaped SDP on a real UDP port (127.0.0.1, and ::1 on the same
/// port when available) but sends no media. It counts every datagram arriving on its
/// sockets as media from the business, which is what the media watchdogs look at.
pub struct SdpOnlyPeer {
    params: MetaSdpParams,
    counters: Arc<Counters>,
    readers: Vec<JoinHandle<()>>,
    dtmf_sent: String,
    media_started: bool,
}

#[derive(Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl SdpOnlyPeer {
    /// Binds 127.0.0.1:0 (and ::1 on the same port, best effort) and starts counting.
    pub async fn bind() -> Result<Self, PeerError> {
        let v4 = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .map_err(|e| PeerError(format!("bind udp 127.0.0.1: {e}")))?;
        let port = v4
            .local_addr()
            .map_err(|e| PeerError(format!("local addr: {e}")))?
            .port();
        let v6 = UdpSocket::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
            .await
            .ok();
        let counters = Arc::new(Counters::default());
        let mut readers = vec![tokio::spawn(count_datagrams(v4, counters.clone()))];
        if let Some(v6) = v6 {
            readers.push(tokio::spawn(count_datagrams(v6, counters.clone())));
        }
        let mut rng = rand::rng();
        let mut fingerprint = [0u8; 32];
        rng.fill(&mut fingerprint);
        let params = MetaSdpParams {
            session_id: rng.random_range(1_000_000_000_000..9_999_999_999_999),
            port,
            ice_ufrag: random_token(&mut rng, 16),
            ice_pwd: random_token(&mut rng, 24),
            fingerprint,
            ssrc: rng.random(),
            msid: format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                rng.random::<u32>(),
                rng.random::<u16>(),
                rng.random::<u16>() & 0xfff,
                rng.random::<u16>() & 0xfff,
                rng.random::<u64>() & 0xffff_ffff_ffff
            ),
        };
        Ok(Self {
            params,
            counters,
            readers,
            dtmf_sent: String::new(),
            media_started: false,
        })
    }

    /// The bound UDP port announced in the SDP.
    pub fn port(&self) -> u16 {
        self.params.port
    }
}

impl Drop for SdpOnlyPeer {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

impl MediaPeer for SdpOnlyPeer {
    fn create_offer(&mut self) -> PeerFuture<'_, Result<String, PeerError>> {
        let offer = sdp::meta_offer(&self.params);
        Box::pin(async move { Ok(offer) })
    }

    fn apply_answer<'a>(
        &'a mut self,
        answer_sdp: &'a str,
    ) -> PeerFuture<'a, Result<(), PeerError>> {
        Box::pin(async move {
            // The core validated it already; nothing to apply without a media stack.
            let _ = answer_sdp;
            Ok(())
        })
    }

    fn answer_offer<'a>(
        &'a mut self,
        offer_sdp: &'a str,
    ) -> PeerFuture<'a, Result<String, PeerError>> {
        let answer = sdp::meta_answer(&self.params, offer_sdp).map_err(PeerError);
        Box::pin(async move { answer })
    }

    fn start_media(&mut self) -> PeerFuture<'_, Result<(), PeerError>> {
        self.media_started = true;
        Box::pin(async { Ok(()) })
    }

    fn send_dtmf<'a>(&'a mut self, digits: &'a str) -> PeerFuture<'a, Result<(), PeerError>> {
        Box::pin(async move {
            if let Some(bad) = digits
                .chars()
                .find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
            {
                return Err(PeerError(format!("not a DTMF digit: {bad:?}")));
            }
            // Bounded: a scripted user presses a few keys, not megabytes.
            if self.dtmf_sent.len() + digits.len() <= 4096 {
                self.dtmf_sent.push_str(digits);
            }
            Ok(())
        })
    }

    fn stop(&mut self) -> PeerFuture<'_, ()> {
        self.media_started = false;
        for r in &self.readers {
            r.abort();
        }
        Box::pin(async {})
    }

    fn report(&self) -> MediaReport {
        MediaReport {
            packets_received: self.counters.packets.load(Ordering::Relaxed),
            bytes_received: self.counters.bytes.load(Ordering::Relaxed),
            dtmf_received: String::new(),
            dtmf_sent: self.dtmf_sent.clone(),
            media_started: self.media_started,
        }
    }
}

async fn count_datagrams(sock: UdpSocket, counters: Arc<Counters>) {
    let mut buf = vec![0u8; 2048];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, _)) => {
                counters.packets.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "sdp-only peer socket closed");
                return;
            }
        }
    }
}

fn random_token(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::{KeyExchange, SdpRole, validate_business_sdp};

    #[tokio::test]
    async fn sdp_only_peer_offers_on_its_bound_port_and_counts_datagrams() {
        let mut peer = SdpOnlyPeer::bind().await.unwrap();
        let offer = peer.create_offer().await.unwrap();
        let port = peer.port();
        assert!(offer.contains(&format!("127.0.0.1 {port} typ host")));
        validate_business_sdp(&offer, SdpRole::Offer, KeyExchange::Dtls).unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(b"hello", ("127.0.0.1", port)).await.unwrap();
        for _ in 0..200 {
            if peer.report().packets_received > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(peer.report().packets_received, 1);
        assert_eq!(peer.report().bytes_received, 5);
        peer.send_dtmf("12#").await.unwrap();
        assert!(peer.send_dtmf("x").await.is_err());
        assert_eq!(peer.report().dtmf_sent, "12#");
        peer.stop().await;
    }
}
