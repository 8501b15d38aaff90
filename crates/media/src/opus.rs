//! Opus via libopus (`audiopus`, linked to the system `libopus` found by pkg-config).
//!
//! The WhatsApp leg's Opus runs on a 48 kHz RTP clock, but libopus decodes straight to and
//! encodes straight from 8 or 16 kHz (RFC 6716 §2: the decoder can output any supported rate
//! whatever the coded bandwidth), so no resampler sits between Opus and G.711/G.722.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Bitrate, Channels, SampleRate, Signal};

use crate::codec::MediaError;

/// Settings of the Opus encoder toward WhatsApp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusEncoderConfig {
    /// libopus complexity 0..=10. Default 5: measured with `cargo bench` (docs/benchmarks.md)
    /// at about half the cost of 10 with no audible difference on narrowband telephone audio
    /// fed from 8/16 kHz PBX codecs.
    pub complexity: u8,
    /// Target bit rate. Meta's offer says `maxaveragebitrate=20000`.
    pub bitrate_bps: i32,
    /// Produce in-band FEC (LBRR) for the receiver to recover single losses.
    pub inband_fec: bool,
    /// Expected loss in percent, steering how much FEC is spent.
    pub packet_loss_perc: u8,
}

impl Default for OpusEncoderConfig {
    fn default() -> Self {
        Self {
            complexity: 5,
            bitrate_bps: 20_000,
            inband_fec: true,
            packet_loss_perc: 5,
        }
    }
}

/// A mono Opus encoder taking PCM at 8, 16 or 48 kHz.
pub struct OpusEncoder {
    inner: Encoder,
    sample_rate_hz: u32,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("sample_rate_hz", &self.sample_rate_hz)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// Creates an encoder for mono PCM at `sample_rate_hz` (8000, 16000 or 48000).
    pub fn new(sample_rate_hz: u32, config: &OpusEncoderConfig) -> Result<Self, MediaError> {
        let mut inner = Encoder::new(rate(sample_rate_hz)?, Channels::Mono, Application::Voip)
            .map_err(opus_err)?;
        inner
            .set_complexity(config.complexity.min(10))
            .map_err(opus_err)?;
        inner
            .set_bitrate(Bitrate::BitsPerSecond(config.bitrate_bps))
            .map_err(opus_err)?;
        inner.set_inband_fec(config.inband_fec).map_err(opus_err)?;
        inner
            .set_packet_loss_perc(config.packet_loss_perc.min(100))
            .map_err(opus_err)?;
        inner.set_signal(Signal::Voice).map_err(opus_err)?;
        Ok(Self {
            inner,
            sample_rate_hz,
        })
    }

    /// Encodes one frame (2.5–60 ms of samples), appending the packet to `out`.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), MediaError> {
        let start = out.len();
        out.resize(start + MAX_PACKET, 0);
        match self.inner.encode(pcm, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(opus_err(e))
            }
        }
    }

    /// The PCM rate this encoder takes.
    #[must_use]
    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }
}

/// A mono Opus decoder producing PCM at 8, 16 or 48 kHz, with loss concealment and FEC.
pub struct OpusDecoder {
    inner: Decoder,
    sample_rate_hz: u32,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("sample_rate_hz", &self.sample_rate_hz)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// Creates a decoder producing mono PCM at `sample_rate_hz`.
    pub fn new(sample_rate_hz: u32) -> Result<Self, MediaError> {
        let inner = Decoder::new(rate(sample_rate_hz)?, Channels::Mono).map_err(opus_err)?;
        Ok(Self {
            inner,
            sample_rate_hz,
        })
    }

    /// Decodes one packet, appending its samples to `out`; returns how many.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<i16>) -> Result<usize, MediaError> {
        if packet.is_empty() {
            return Err(MediaError::Codec("empty opus packet".into()));
        }
        let samples = self.sample_rate_hz as usize * MAX_FRAME_MS / 1000;
        self.decode_exact(Some(packet), samples, false, out)
    }

    /// Conceals one lost frame of `samples` samples (packet loss concealment).
    pub fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> Result<usize, MediaError> {
        self.decode_exact(None, samples, false, out)
    }

    /// Recovers the frame *before* `next_packet` from the in-band FEC data it carries,
    /// `samples` long; falls back to concealment inside libopus when it has none.
    pub fn decode_fec(
        &mut self,
        next_packet: &[u8],
        samples: usize,
        out: &mut Vec<i16>,
    ) -> Result<usize, MediaError> {
        if next_packet.is_empty() {
            return self.conceal(samples, out);
        }
        self.decode_exact(Some(next_packet), samples, true, out)
    }

    /// The PCM rate this decoder produces.
    #[must_use]
    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    fn decode_exact(
        &mut self,
        packet: Option<&[u8]>,
        samples: usize,
        fec: bool,
        out: &mut Vec<i16>,
    ) -> Result<usize, MediaError> {
        let start = out.len();
        out.resize(start + samples, 0);
        match self.inner.decode(packet, &mut out[start..], fec) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(n)
            }
            Err(e) => {
                out.truncate(start);
                Err(opus_err(e))
            }
        }
    }
}

const MAX_PACKET: usize = 1275;
const MAX_FRAME_MS: usize = 120;

fn rate(hz: u32) -> Result<SampleRate, MediaError> {
    match hz {
        8000 => Ok(SampleRate::Hz8000),
        12000 => Ok(SampleRate::Hz12000),
        16000 => Ok(SampleRate::Hz16000),
        24000 => Ok(SampleRate::Hz24000),
        48000 => Ok(SampleRate::Hz48000),
        other => Err(MediaError::Codec(format!("opus cannot run at {other} hz"))),
    }
}

fn opus_err(e: audiopus::Error) -> MediaError {
    MediaError::Codec(format!("opus: {e}"))
}
