//! The audio codecs of the PBX leg and the per-codec facts the relay needs.

use crate::g711;
use crate::g722::{G722Decoder, G722Encoder};
use crate::opus::{OpusDecoder, OpusEncoder, OpusEncoderConfig};

/// Errors of the media cores.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// A codec library refused an operation (creation, encode).
    #[error("codec error: {0}")]
    Codec(String),
    /// The configuration cannot work (unknown codec, bad ptime).
    #[error("invalid media config: {0}")]
    Config(String),
    /// A socket operation failed (local error for the operator).
    #[error("media io error: {0}")]
    Io(String),
    /// No free port pair in the configured range.
    #[error("rtp port range exhausted")]
    PortsExhausted,
}

/// An audio codec the PBX leg can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static PT 0.
    Pcmu,
    /// G.711 A-law, static PT 8.
    Pcma,
    /// G.722 64 kbit/s, static PT 9 (RTP clock 8000, audio 16 kHz).
    G722,
    /// Opus (RFC 7587), dynamic PT, RTP clock 48000.
    Opus,
}

impl Codec {
    /// The SDP encoding name (`a=rtpmap` second field, before the slash).
    #[must_use]
    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::G722 => "G722",
            Self::Opus => "opus",
        }
    }

    /// The RTP clock rate of the codec as written in SDP.
    #[must_use]
    pub fn clock_rate_hz(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma | Self::G722 => 8000,
            Self::Opus => 48_000,
        }
    }

    /// The PCM rate audio is processed at when transcoding to or from this codec.
    #[must_use]
    pub fn sample_rate_hz(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma => 8000,
            Self::G722 => 16_000,
            Self::Opus => 48_000,
        }
    }

    /// The static payload type of RFC 3551, if the codec has one.
    #[must_use]
    pub fn static_pt(self) -> Option<u8> {
        match self {
            Self::Pcmu => Some(0),
            Self::Pcma => Some(8),
            Self::G722 => Some(9),
            Self::Opus => None,
        }
    }

    /// The codec from an SDP encoding name and clock rate (case-insensitive name).
    #[must_use]
    pub fn from_rtpmap(name: &str, clock_rate_hz: u32) -> Option<Self> {
        [Self::Pcmu, Self::Pcma, Self::G722, Self::Opus]
            .into_iter()
            .find(|c| {
                c.encoding_name().eq_ignore_ascii_case(name) && c.clock_rate_hz() == clock_rate_hz
            })
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.encoding_name())
    }
}

/// Encodes PCM (at the codec's [`Codec::sample_rate_hz`]) to one codec's payloads.
#[derive(Debug)]
pub enum AudioEncoder {
    /// µ-law.
    Pcmu,
    /// A-law.
    Pcma,
    /// G.722.
    G722(Box<G722Encoder>),
    /// Opus.
    Opus(Box<OpusEncoder>),
}

impl AudioEncoder {
    /// An encoder for `codec`; Opus uses `opus` settings and encodes from 48 kHz.
    pub fn new(codec: Codec, opus: &OpusEncoderConfig) -> Result<Self, MediaError> {
        Ok(match codec {
            Codec::Pcmu => Self::Pcmu,
            Codec::Pcma => Self::Pcma,
            Codec::G722 => Self::G722(Box::default()),
            Codec::Opus => Self::Opus(Box::new(OpusEncoder::new(48_000, opus)?)),
        })
    }

    /// Encodes one frame, appending the payload to `out`.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), MediaError> {
        match self {
            Self::Pcmu => g711::encode_ulaw(pcm, out),
            Self::Pcma => g711::encode_alaw(pcm, out),
            Self::G722(e) => e.encode(pcm, out),
            Self::Opus(e) => e.encode(pcm, out)?,
        }
        Ok(())
    }
}

/// Decodes one codec's payloads to PCM at the codec's [`Codec::sample_rate_hz`].
#[derive(Debug)]
pub enum AudioDecoder {
    /// µ-law.
    Pcmu,
    /// A-law.
    Pcma,
    /// G.722.
    G722(Box<G722Decoder>),
    /// Opus.
    Opus(Box<OpusDecoder>),
}

impl AudioDecoder {
    /// A decoder for `codec`.
    pub fn new(codec: Codec) -> Result<Self, MediaError> {
        Ok(match codec {
            Codec::Pcmu => Self::Pcmu,
            Codec::Pcma => Self::Pcma,
            Codec::G722 => Self::G722(Box::default()),
            Codec::Opus => Self::Opus(Box::new(OpusDecoder::new(48_000)?)),
        })
    }

    /// Decodes one payload, appending the samples to `out`.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), MediaError> {
        match self {
            Self::Pcmu => g711::decode_ulaw(payload, out),
            Self::Pcma => g711::decode_alaw(payload, out),
            Self::G722(d) => d.decode(payload, out),
            Self::Opus(d) => {
                d.decode(payload, out)?;
            }
        }
        Ok(())
    }
}
