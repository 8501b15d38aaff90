//! whatsip-media: moves audio and DTMF between the WhatsApp WebRTC leg and the PBX RTP leg.
//!
//! The PBX-leg half of this crate is a set of sans-IO cores:
//! - RTP packets and their wrapping identifiers ([`RtpPacket`], [`SeqNo`], [`RtpTs`],
//!   [`Ssrc`]);
//! - [`MediaRelay`], one per call: jitter buffers, Opus ⇄ G.711/G.722 transcoding (or Opus
//!   pass-through), RFC 4733 DTMF conversion, WhatsApp watchdog filling, media timeouts and
//!   per-call [`MediaStats`];
//! - the PBX leg's SDP offer/answer as pure functions and the port allocator ([`sdp`]),
//!   RTCP reports ([`rtcp`]) and SDES-SRTP ([`srtp`]);
//! - codecs ([`g711`], [`G722Encoder`], [`OpusEncoder`]) and test-signal analysis ([`tone`]).
//!
//! Cores never touch sockets, clocks or threads; the tokio drivers behind the `rt` feature
//! do (`driver::spawn_pbx_media` for the PBX leg, `webrtc` for the WhatsApp leg). Drive
//! loop: feed input with `handle_*(.., now)`, then drain `poll_transmit` and `poll_event`
//! until both return `None`, then sleep until `poll_timeout()`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use rand::SeedableRng;
//! use whatsip_media::{Leg, MediaRelay, RelayConfig};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let t0 = Instant::now(); // a test's virtual clock origin
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! let mut relay = MediaRelay::new(RelayConfig::default(), &mut rng, t0).unwrap();
//! relay.open_wa_gate(t0);
//! // a silent PBX: WhatsApp still gets one packet per 20 ms tick
//! let mut now = t0;
//! let mut to_wa = 0;
//! for _ in 0..10 {
//!     now = relay.poll_timeout().unwrap();
//!     relay.handle_tick(now);
//!     while let Some(t) = relay.poll_transmit() {
//!         to_wa += usize::from(t.leg == Leg::Wa);
//!     }
//! }
//! assert_eq!(to_wa, 10);
//! assert_eq!(now, t0 + Duration::from_millis(180));
//! ```

mod codec;
#[cfg(feature = "rt")]
pub mod driver;
mod dtmf;
pub mod g711;
mod g722;
mod jitter;
mod opus;
pub mod path;
pub mod phone;
mod relay;
pub mod rtcp;
mod rtp;
pub mod sdp;
pub mod srtp;
mod stats;
pub mod tone;
pub mod webrtc;

pub use codec::{AudioDecoder, AudioEncoder, Codec, MediaError};
pub use dtmf::{DtmfForwarder, DtmfPayload, TelephoneEvent, digit_to_event, event_to_digit};
pub use g722::{G722Decoder, G722Encoder};
pub use jitter::{JitterBuffer, JitterConfig, Pull, PushOutcome};
pub use opus::{OpusDecoder, OpusEncoder, OpusEncoderConfig};
pub use path::{Flow, LatencyObserver, LatencyStats, MediaPath, MediaPathStats, PathDrop};
pub use relay::{Direction, Leg, MediaRelay, RelayConfig, RelayEvent, Transmit};
pub use rtp::{RtpError, RtpPacket, RtpTs, SeqNo, Ssrc, is_rtcp};
pub use stats::{LegStats, MediaStats};

/// The origin of a test's virtual clock.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}
