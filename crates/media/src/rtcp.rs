//! RTCP sender and receiver reports (RFC 3550 §6.4) with SDES CNAME, for the PBX leg.
//!
//! The WhatsApp leg's RTCP is str0m's business; the relay produces and consumes compound
//! packets for the PBX leg only. Round-trip time comes from the LSR/DLSR fields of the
//! peer's report blocks about our SSRC (RFC 3550 §6.4.1, figure 2):
//! `rtt = A - LSR - DLSR` in 1/65536 s units of the NTP middle 32 bits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::rtp::Ssrc;

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: Ssrc,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from that source.
    pub lsr: u32,
    /// Delay since that SR in 1/65536 s.
    pub dlsr: u32,
}

/// The sender-info part of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp (64-bit fixed point seconds since 1900).
    pub ntp: u64,
    /// RTP timestamp corresponding to `ntp`.
    pub rtp_ts: u32,
    /// Packets sent.
    pub packet_count: u32,
    /// Payload octets sent.
    pub octet_count: u32,
}

/// A parsed SR or RR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The reporting source.
    pub ssrc: Ssrc,
    /// Present in SRs.
    pub sender: Option<SenderInfo>,
    /// Reception report blocks.
    pub blocks: Vec<ReportBlock>,
}

/// Why a datagram is not RTCP we understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// Shorter than a header, or a length field past the end.
    #[error("rtcp packet truncated")]
    Truncated,
    /// Version other than 2.
    #[error("unsupported rtcp version {0}")]
    Version(u8),
}

/// The 64-bit NTP timestamp of a wall-clock time.
#[must_use]
pub fn ntp_from_system(wall: SystemTime) -> u64 {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp (the LSR/DLSR time base).
#[must_use]
pub fn ntp_mid32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Round-trip time from a report block about us received at `arrival`.
#[must_use]
pub fn round_trip_time(block: &ReportBlock, arrival: SystemTime) -> Option<Duration> {
    if block.lsr == 0 {
        return None;
    }
    let a = ntp_mid32(ntp_from_system(arrival));
    let rtt = a.wrapping_sub(block.lsr).wrapping_sub(block.dlsr);
    // a negative result (clock steps, bogus peer) shows as a huge value: ignore it
    (rtt < 0x8000_0000).then(|| Duration::from_micros(u64::from(rtt) * 1_000_000 / 65_536))
}

/// Builds a compound SR (or RR if `sender` is `None`) + SDES CNAME, appended to `out`.
pub fn build_report(
    ssrc: Ssrc,
    sender: Option<SenderInfo>,
    blocks: &[ReportBlock],
    cname: &str,
    out: &mut Vec<u8>,
) {
    let blocks = &blocks[..blocks.len().min(31)];
    let start = out.len();
    out.push(0x80 | blocks.len() as u8);
    out.push(if sender.is_some() { 200 } else { 201 });
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&ssrc.0.to_be_bytes());
    if let Some(s) = sender {
        out.extend_from_slice(&s.ntp.to_be_bytes());
        out.extend_from_slice(&s.rtp_ts.to_be_bytes());
        out.extend_from_slice(&s.packet_count.to_be_bytes());
        out.extend_from_slice(&s.octet_count.to_be_bytes());
    }
    for b in blocks {
        out.extend_from_slice(&b.ssrc.0.to_be_bytes());
        let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0x00ff_ffff;
        out.extend_from_slice(&((u32::from(b.fraction_lost) << 24) | lost).to_be_bytes());
        out.extend_from_slice(&b.highest_seq.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.lsr.to_be_bytes());
        out.extend_from_slice(&b.dlsr.to_be_bytes());
    }
    set_length(out, start);
    // SDES with one chunk: CNAME, then END, padded to a 32-bit boundary.
    let start = out.len();
    out.extend_from_slice(&[0x81, 202, 0, 0]);
    out.extend_from_slice(&ssrc.0.to_be_bytes());
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    out.push(1);
    out.push(cname.len() as u8);
    out.extend_from_slice(cname);
    out.push(0);
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    set_length(out, start);
}

/// Parses the SRs and RRs of a compound packet, skipping other packet types.
pub fn parse_reports(mut buf: &[u8]) -> Result<Vec<Report>, RtcpError> {
    let mut reports = Vec::new();
    while !buf.is_empty() {
        if buf.len() < 4 {
            return Err(RtcpError::Truncated);
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtcpError::Version(version));
        }
        let count = usize::from(buf[0] & 0x1f);
        let pt = buf[1];
        let len = (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1) * 4;
        let body = buf.get(4..len).ok_or(RtcpError::Truncated)?;
        if pt == 200 || pt == 201 {
            reports.push(parse_report(pt == 200, count, body)?);
        }
        buf = &buf[len..];
    }
    Ok(reports)
}

const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

fn set_length(out: &mut [u8], start: usize) {
    let words = ((out.len() - start) / 4 - 1) as u16;
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

fn be32(b: &[u8], at: usize) -> Result<u32, RtcpError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(RtcpError::Truncated)
}

fn parse_report(is_sr: bool, count: usize, body: &[u8]) -> Result<Report, RtcpError> {
    let ssrc = Ssrc(be32(body, 0)?);
    let mut at = 4;
    let sender = if is_sr {
        let ntp = (u64::from(be32(body, 4)?) << 32) | u64::from(be32(body, 8)?);
        at = 24;
        Some(SenderInfo {
            ntp,
            rtp_ts: be32(body, 12)?,
            packet_count: be32(body, 16)?,
            octet_count: be32(body, 20)?,
        })
    } else {
        None
    };
    let mut blocks = Vec::with_capacity(count);
    for _ in 0..count {
        let word = be32(body, at + 4)?;
        let lost24 = word & 0x00ff_ffff;
        // sign-extend the 24-bit cumulative loss
        let cumulative_lost = ((lost24 << 8) as i32) >> 8;
        blocks.push(ReportBlock {
            ssrc: Ssrc(be32(body, at)?),
            fraction_lost: (word >> 24) as u8,
            cumulative_lost,
            highest_seq: be32(body, at + 8)?,
            jitter: be32(body, at + 12)?,
            lsr: be32(body, at + 16)?,
            dlsr: be32(body, at + 20)?,
        });
        at += 24;
    }
    Ok(Report {
        ssrc,
        sender,
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sr_with_block_round_trips_and_gives_rtt() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let ntp = ntp_from_system(wall);
        let block = ReportBlock {
            ssrc: Ssrc(7),
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_seq: 70_000,
            jitter: 12,
            lsr: ntp_mid32(ntp),
            dlsr: 65_536 / 10, // the peer held our SR for 100 ms
        };
        let sender = SenderInfo {
            ntp,
            rtp_ts: 1234,
            packet_count: 50,
            octet_count: 8000,
        };
        let mut out = Vec::new();
        build_report(Ssrc(9), Some(sender), &[block], "whatsip", &mut out);
        assert!(crate::rtp::is_rtcp(&out));
        assert_eq!(out.len() % 4, 0);
        let reports = parse_reports(&out).unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].ssrc, Ssrc(9));
        assert_eq!(reports[0].sender, Some(sender));
        assert_eq!(reports[0].blocks, vec![block]);
        // reply arrives 150 ms after our SR: 100 ms held, 50 ms on the wire
        let rtt = round_trip_time(&block, wall + Duration::from_millis(150)).unwrap();
        assert!(
            rtt.abs_diff(Duration::from_millis(50)) < Duration::from_millis(1),
            "{rtt:?}"
        );
        assert_eq!(parse_reports(&out[..10]), Err(RtcpError::Truncated));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_rtcp_never_panics(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
        ) {
            let _ = parse_reports(&data);
            let mut fixed = data.clone();
            if fixed.len() >= 4 {
                fixed[0] = 0x80 | (fixed[0] & 0x1f);
                fixed[1] = 200 + (fixed[1] & 1);
            }
            let _ = parse_reports(&fixed);
        }
    }
}
