//! The PBX's audio for outbound calls: an RTP pcap generated at run start (the repository
//! keeps no binary media), replayed by SIPp's `play_pcap_audio` in every call.
//!
//! Ethernet / IPv4 / UDP frames (`LINKTYPE_ETHERNET`, microsecond stamps 20 ms apart), as
//! SIPp wants them: it rewrites addresses and ports to the call's media and keeps the RTP
//! header, the payload and the timing.

use std::f64::consts::PI;
use std::io::Write as _;
use std::path::Path;

use whatsip_media::{OpusEncoder, OpusEncoderConfig, g711};

/// What the pcap carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PcapCodec {
    /// Opus, PT 111, 48 kHz RTP clock (encoded from 16 kHz PCM, as the phones do).
    Opus,
    /// PCMU, PT 0, 8 kHz.
    Pcmu,
}

impl PcapCodec {
    pub(crate) fn payload_type(self) -> u8 {
        match self {
            Self::Opus => 111,
            Self::Pcmu => 0,
        }
    }

    /// (`rtpmap` of the SIPp offer, telephone-event clock).
    pub(crate) fn rtpmap(self) -> (&'static str, u32) {
        match self {
            Self::Opus => ("opus/48000/2", 48_000),
            Self::Pcmu => ("PCMU/8000", 8_000),
        }
    }
}

/// Packets of the pcap a call plays: 50 per second.
pub(crate) const PACKETS_PER_S: f64 = 50.0;

/// Writes `seconds` of a `tone_hz` tone at -12 dBFS as 20 ms RTP packets to `path`.
/// Returns the number of packets.
pub(crate) fn write_tone_pcap(
    path: &Path,
    codec: PcapCodec,
    seconds: f64,
    tone_hz: f64,
) -> Result<u64, String> {
    let packets = (seconds * PACKETS_PER_S).ceil().max(1.0) as u64;
    let (pcm_rate, ts_step) = match codec {
        PcapCodec::Opus => (16_000u32, 960u32),
        PcapCodec::Pcmu => (8_000, 160),
    };
    let samples = (pcm_rate / 50) as usize;
    let mut opus = match codec {
        PcapCodec::Opus => Some(
            OpusEncoder::new(pcm_rate, &OpusEncoderConfig::default())
                .map_err(|e| format!("opus encoder: {e}"))?,
        ),
        PcapCodec::Pcmu => None,
    };
    let amp = 32_767.0 * 10f64.powf(-12.0 / 20.0);
    let step = 2.0 * PI * tone_hz / f64::from(pcm_rate);
    let mut phase = 0.0f64;
    let mut pcm = vec![0i16; samples];
    let mut out = Vec::with_capacity(24 + packets as usize * 220);
    // pcap global header: magic, v2.4, GMT offset, sigfigs, snaplen, LINKTYPE_ETHERNET
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let ssrc: u32 = 0x5bb0_0001;
    let mut payload = Vec::with_capacity(400);
    for i in 0..packets {
        for s in &mut pcm {
            *s = (amp * phase.sin()) as i16;
            phase = (phase + step) % (2.0 * PI);
        }
        payload.clear();
        match &mut opus {
            Some(enc) => enc
                .encode(&pcm, &mut payload)
                .map_err(|e| format!("opus encode: {e}"))?,
            None => g711::encode_ulaw(&pcm, &mut payload),
        }
        let seq = (1_000 + i) as u16;
        let ts = (i as u32).wrapping_mul(ts_step);
        let mut rtp = Vec::with_capacity(12 + payload.len());
        rtp.push(0x80);
        rtp.push(codec.payload_type() | if i == 0 { 0x80 } else { 0 });
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&ts.to_be_bytes());
        rtp.extend_from_slice(&ssrc.to_be_bytes());
        rtp.extend_from_slice(&payload);
        let frame = ethernet_ipv4_udp(&rtp, 6_000, 6_002);
        let t_us = i * 20_000;
        out.extend_from_slice(&((t_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    let mut f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(&out)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(packets)
}

/// One Ethernet II / IPv4 (127.0.0.1 → 127.0.0.1) / UDP frame around `payload`.
fn ethernet_ipv4_udp(payload: &[u8], sport: u16, dport: u16) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&[0u8; 12]);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[127, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[127, 0, 0, 1]);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&0u16.to_be_bytes()); // no UDP checksum (allowed on IPv4)
    f.extend_from_slice(payload);
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    !(s as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pcmu_pcap_has_one_ethernet_ipv4_udp_rtp_frame_per_20_ms() {
        let dir = std::env::temp_dir().join(format!("bench-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pcmu.pcap");
        let n = write_tone_pcap(&path, PcapCodec::Pcmu, 1.0, 600.0).unwrap();
        assert_eq!(n, 50);
        let b = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(&b[..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(
            u32::from_le_bytes(b[20..24].try_into().unwrap()),
            1,
            "ethernet"
        );
        // 14 Ethernet + 20 IP + 8 UDP + 12 RTP + 160 PCMU per record
        let rec = 16 + 14 + 20 + 8 + 12 + 160;
        assert_eq!(b.len(), 24 + 50 * rec);
        let second = &b[24 + rec..24 + 2 * rec];
        assert_eq!(u32::from_le_bytes(second[4..8].try_into().unwrap()), 20_000);
        let ip = &second[16 + 14..16 + 34];
        assert_eq!(checksum(ip), 0, "valid IPv4 header checksum");
        let rtp = &second[16 + 42..];
        assert_eq!((rtp[0], rtp[1]), (0x80, 0), "RTP v2, PT 0, no marker");
        assert_eq!(u16::from_be_bytes([rtp[2], rtp[3]]), 1_001);
        assert_eq!(u32::from_be_bytes(rtp[4..8].try_into().unwrap()), 160);
    }
}
