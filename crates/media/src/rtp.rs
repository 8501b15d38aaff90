//! RTP packets (RFC 3550 §5.1) and the identifier newtypes with their wrapping arithmetic.
//!
//! [`RtpPacket`] is the boundary type between the WhatsApp WebRTC leg and the relay core: the
//! WebRTC leg hands the relay plain (decrypted) RTP of the WhatsApp side (Opus PT 111 at
//! 48 kHz, `telephone-event/8000` on PT 126) and takes plain RTP back. The PBX leg parses and
//! builds the same type from and to UDP datagrams.
//!
//! Parsing goes through `rtp-rs`'s `RtpReader` (bounds-checked, handles CSRCs, the header
//! extension and padding); building is hand-written because the relay writes into a reused
//! buffer and never emits CSRCs or extensions. `rtp-rs`'s `Seq` only knows `next`/`precedes`,
//! so sequence and timestamp arithmetic lives in [`SeqNo`] and [`RtpTs`].

use bytes::Bytes;

/// Synchronisation source identifier (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// RTP sequence number; all arithmetic wraps modulo 2^16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqNo(pub u16);

/// RTP timestamp in clock-rate units; all arithmetic wraps modulo 2^32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtpTs(pub u32);

impl SeqNo {
    /// The sequence number after this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0.wrapping_add(1))
    }

    /// This sequence number advanced by `n`.
    #[must_use]
    pub fn advance(self, n: u16) -> Self {
        Self(self.0.wrapping_add(n))
    }

    /// Signed distance `self - earlier`, assuming the two are less than 2^15 apart.
    #[must_use]
    pub fn diff(self, earlier: Self) -> i16 {
        // Reinterpreting the wrapped difference as two's complement is the RFC 1982 serial
        // number comparison for 16-bit numbers.
        self.0.wrapping_sub(earlier.0) as i16
    }

    /// Whether `self` comes before `other` in serial-number order.
    #[must_use]
    pub fn is_before(self, other: Self) -> bool {
        other.diff(self) > 0
    }
}

impl RtpTs {
    /// This timestamp advanced by `samples` clock ticks.
    #[must_use]
    pub fn advance(self, samples: u32) -> Self {
        Self(self.0.wrapping_add(samples))
    }

    /// Signed distance `self - earlier` in clock ticks, assuming less than 2^31 apart.
    #[must_use]
    pub fn diff(self, earlier: Self) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }
}

/// One RTP packet without CSRCs or header extensions (they are dropped on parse: neither leg
/// forwards them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// Payload type (7 bits).
    pub pt: u8,
    /// Sequence number.
    pub seq: SeqNo,
    /// Timestamp in the payload type's clock.
    pub ts: RtpTs,
    /// Synchronisation source.
    pub ssrc: Ssrc,
    /// Marker bit (start of a talk spurt, start of a DTMF event).
    pub marker: bool,
    /// Payload without padding.
    pub payload: Bytes,
}

/// Why a datagram is not an RTP packet we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than the fixed 12-byte header.
    #[error("rtp packet too short: {0} bytes")]
    TooShort(usize),
    /// Version field other than 2.
    #[error("unsupported rtp version {0}")]
    Version(u8),
    /// CSRC list, extension or padding run past the end of the datagram.
    #[error("rtp header or padding truncated")]
    Truncated,
    /// Payload type in the RTCP range 72..=76 (RFC 5761 §4): an RTCP packet on a muxed port.
    #[error("rtcp packet on the rtp path (pt {0})")]
    Rtcp(u8),
}

impl RtpPacket {
    /// Length of the fixed header this crate writes.
    pub const HEADER_LEN: usize = 12;

    /// Parses one datagram, copying the payload.
    pub fn parse(buf: &[u8]) -> Result<Self, RtpError> {
        let reader = rtp_rs::RtpReader::new(buf).map_err(|e| match e {
            rtp_rs::RtpReaderError::BufferTooShort(n) => RtpError::TooShort(n),
            rtp_rs::RtpReaderError::UnsupportedVersion(v) => RtpError::Version(v),
            _ => RtpError::Truncated,
        })?;
        let pt = reader.payload_type();
        if is_rtcp_pt(pt) {
            return Err(RtpError::Rtcp(pt));
        }
        Ok(Self {
            pt,
            seq: SeqNo(u16::from(reader.sequence_number())),
            ts: RtpTs(reader.timestamp()),
            ssrc: Ssrc(reader.ssrc()),
            marker: reader.mark(),
            payload: Bytes::copy_from_slice(reader.payload()),
        })
    }

    /// Serialises the packet (version 2, no padding, CSRCs or extension) onto `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(Self::HEADER_LEN + self.payload.len());
        out.push(0x80);
        out.push((self.pt & 0x7f) | if self.marker { 0x80 } else { 0 });
        out.extend_from_slice(&self.seq.0.to_be_bytes());
        out.extend_from_slice(&self.ts.0.to_be_bytes());
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// Serialises the packet into a new buffer.
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER_LEN + self.payload.len());
        self.write_to(&mut out);
        out
    }
}

/// Whether a datagram on an rtcp-mux port is RTCP (RFC 5761 §4: second byte 192..=223).
#[must_use]
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1])
}

fn is_rtcp_pt(pt: u8) -> bool {
    (72..=76).contains(&pt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrap() {
        let pkt = RtpPacket {
            pt: 111,
            seq: SeqNo(65535),
            ts: RtpTs(u32::MAX - 100),
            ssrc: Ssrc(0xdead_beef),
            marker: true,
            payload: Bytes::from_static(b"abc"),
        };
        let bytes = pkt.to_vec();
        assert_eq!(bytes.len(), 15);
        assert_eq!(RtpPacket::parse(&bytes).unwrap(), pkt);
        assert_eq!(pkt.seq.next(), SeqNo(0));
        assert_eq!(SeqNo(2).diff(SeqNo(65534)), 4);
        assert!(SeqNo(65534).is_before(SeqNo(1)));
        assert_eq!(pkt.ts.advance(960).diff(pkt.ts), 960);
        assert_eq!(pkt.ts.advance(960), RtpTs(859));
    }

    #[test]
    fn parse_rejects_garbage_and_strips_padding_and_csrc() {
        assert_eq!(RtpPacket::parse(&[0x80; 5]), Err(RtpError::TooShort(5)));
        assert_eq!(RtpPacket::parse(&[0x40; 12]), Err(RtpError::Version(1)));
        // one CSRC, padding of 2 bytes
        let mut b = vec![
            0xa1, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 9, 9, 9, 9, 7, 7, 0, 2,
        ];
        let p = RtpPacket::parse(&b).unwrap();
        assert_eq!(&p.payload[..], &[7, 7]);
        b[19] = 50; // padding longer than the packet
        assert_eq!(RtpPacket::parse(&b), Err(RtpError::Truncated));
        let mut rtcp = vec![0x80, 200, 0, 6];
        rtcp.extend_from_slice(&[0; 24]);
        assert!(is_rtcp(&rtcp));
        assert_eq!(RtpPacket::parse(&rtcp), Err(RtpError::Rtcp(72)));
    }

    proptest::proptest! {
        /// Any datagram parses or fails cleanly, and whatever parses re-serialises to a
        /// packet that parses back to the same fields.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            if let Ok(p) = RtpPacket::parse(&data) {
                proptest::prop_assert_eq!(RtpPacket::parse(&p.to_vec()), Ok(p));
            }
        }
    }
}
