//! whatsip-media: moves audio and DTMF between the WhatsApp WebRTC leg and the PBX RTP leg.
//!
//! The PBX-leg half of this crate is a set of sans-IO cores: RTP packets and their wrapping
//! identifiers ([`RtpPacket`], [`SeqNo`], [`RtpTs`], [`Ssrc`]), and the relay core that rewrites and transcodes between the legs.
//! Cores never touch sockets, clocks or threads; the tokio drivers behind the `rt` feature do.

mod rtp;
pub mod phone;
pub mod webrtc;

pub use rtp::{RtpError, RtpPacket, RtpTs, SeqNo, Ssrc, is_rtcp};
