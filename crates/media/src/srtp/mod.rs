//! SRTP/SRTCP with `AES_CM_128_HMAC_SHA1_80` (RFC 3711) and SDES keying (RFC 4568) for the
//! PBX leg (Meta's SIP-mode SDES variant, §5.7, and PBXs with `media_encryption=sdes`).
//!
//! One [`SrtpContext`] per direction and SSRC-independent (keys are per session; the
//! rollover counter and replay window are kept per SSRC as RFC 3711 §3.2.3 requires). Key
//! material never leaves this module except through [`SdesKey::to_attribute`], which the SDP
//! needs; its `Debug` is redacted.

use std::collections::HashMap;

use aes::Aes128;
use aes::cipher::{KeyIvInit, StreamCipher};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type Aes128Ctr = ctr::Ctr128BE<Aes128>;
type HmacSha1 = Hmac<Sha1>;

/// The only crypto suite supported.
pub const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";
const TAG_LEN: usize = 10;
const MASTER_KEY_LEN: usize = 16;
const MASTER_SALT_LEN: usize = 14;

/// Why SRTP processing failed (peer errors: count and drop the packet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// Too short to hold a header and tag.
    #[error("srtp packet too short")]
    TooShort,
    /// The authentication tag does not match.
    #[error("srtp authentication failed")]
    AuthFailed,
    /// Already received (or older than the replay window).
    #[error("srtp replayed packet")]
    Replay,
    /// An `a=crypto` line we cannot use.
    #[error("unusable crypto attribute: {0}")]
    BadCrypto(String),
}

/// A 30-byte SDES master key + salt.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesKey {
    key: [u8; MASTER_KEY_LEN],
    salt: [u8; MASTER_SALT_LEN],
    tag: u32,
}

impl std::fmt::Debug for SdesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SdesKey(tag {}, <redacted>)", self.tag)
    }
}

impl SdesKey {
    /// A fresh key from `rng` (a CSPRNG in production).
    pub fn generate<R: rand::Rng + ?Sized>(tag: u32, rng: &mut R) -> Self {
        let mut key = [0u8; MASTER_KEY_LEN];
        let mut salt = [0u8; MASTER_SALT_LEN];
        rng.fill(&mut key[..]);
        rng.fill(&mut salt[..]);
        Self { key, salt, tag }
    }

    /// From raw master key and salt.
    #[must_use]
    pub fn from_parts(tag: u32, key: [u8; 16], salt: [u8; 14]) -> Self {
        Self { key, salt, tag }
    }

    /// Parses the value of an `a=crypto:` attribute
    /// (`1 AES_CM_128_HMAC_SHA1_80 inline:<base64>[|lifetime][|mki:len]`). MKIs are refused
    /// (nobody uses them on trunks and they change the packet layout).
    pub fn parse_attribute(value: &str) -> Result<Self, SrtpError> {
        let bad = |why: &str| SrtpError::BadCrypto(why.chars().take(64).collect());
        let mut parts = value.split_whitespace();
        let tag = parts
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("tag"))?;
        let suite = parts.next().ok_or_else(|| bad("suite"))?;
        if suite != SUITE {
            return Err(bad(suite));
        }
        let params = parts.next().ok_or_else(|| bad("key params"))?;
        let inline = params
            .strip_prefix("inline:")
            .ok_or_else(|| bad("not inline"))?;
        let mut fields = inline.split('|');
        let b64 = fields.next().unwrap_or_default();
        if fields.any(|f| f.contains(':')) {
            return Err(bad("mki"));
        }
        let raw = B64.decode(b64).map_err(|_| bad("base64"))?;
        if raw.len() != MASTER_KEY_LEN + MASTER_SALT_LEN {
            return Err(bad("key length"));
        }
        let mut key = [0u8; MASTER_KEY_LEN];
        let mut salt = [0u8; MASTER_SALT_LEN];
        key.copy_from_slice(&raw[..MASTER_KEY_LEN]);
        salt.copy_from_slice(&raw[MASTER_KEY_LEN..]);
        Ok(Self { key, salt, tag })
    }

    /// The `a=crypto:` attribute value for our SDP.
    #[must_use]
    pub fn to_attribute(&self) -> String {
        let mut raw = Vec::with_capacity(30);
        raw.extend_from_slice(&self.key);
        raw.extend_from_slice(&self.salt);
        format!("{} {SUITE} inline:{}", self.tag, B64.encode(raw))
    }

    /// The same key under another attribute tag (answers echo the offer's tag).
    #[must_use]
    pub fn with_tag(key: &Self, tag: u32) -> Self {
        Self { tag, ..key.clone() }
    }

    /// The attribute's tag (the answer must echo the offer's).
    #[must_use]
    pub fn tag(&self) -> u32 {
        self.tag
    }
}

/// Session keys derived from a master key (RFC 3711 §4.3, key derivation rate 0).
#[derive(Clone)]
struct SessionKeys {
    enc: [u8; 16],
    auth: [u8; 20],
    salt: [u8; 14],
}

impl SessionKeys {
    fn derive(master: &SdesKey, labels: [u8; 3]) -> Self {
        let mut enc = [0u8; 16];
        let mut auth = [0u8; 20];
        let mut salt = [0u8; 14];
        kdf(master, labels[0], &mut enc);
        kdf(master, labels[1], &mut auth);
        kdf(master, labels[2], &mut salt);
        Self { enc, auth, salt }
    }
}

#[derive(Debug, Clone, Default)]
struct SsrcState {
    roc: u32,
    highest_seq: Option<u16>,
    replay: u64,
    highest_index: u64,
    srtcp_index: u32,
}

/// One direction of an SRTP session (protect our packets or unprotect the peer's).
pub struct SrtpContext {
    rtp: SessionKeys,
    rtcp: SessionKeys,
    streams: HashMap<u32, SsrcState>,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// A context for `key`.
    #[must_use]
    pub fn new(key: &SdesKey) -> Self {
        Self {
            rtp: SessionKeys::derive(key, [0, 1, 2]),
            rtcp: SessionKeys::derive(key, [3, 4, 5]),
            streams: HashMap::new(),
        }
    }

    /// Encrypts and authenticates an RTP packet in place (appends the 10-byte tag).
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let header_len = rtp_header_len(packet).ok_or(SrtpError::TooShort)?;
        let ssrc = be32(&packet[8..12]);
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let st = self.streams.entry(ssrc).or_default();
        if let Some(h) = st.highest_seq
            && seq < h
            && h - seq > 0x8000
        {
            st.roc = st.roc.wrapping_add(1);
        }
        if st.highest_seq.is_none_or(|h| seq.wrapping_sub(h) < 0x8000) {
            st.highest_seq = Some(seq);
        }
        let index = (u64::from(st.roc) << 16) | u64::from(seq);
        let roc = st.roc;
        let iv = rtp_iv(&self.rtp.salt, ssrc, index);
        Aes128Ctr::new(&self.rtp.enc.into(), &iv.into()).apply_keystream(&mut packet[header_len..]);
        let tag = rtp_tag(&self.rtp.auth, packet, roc);
        packet.extend_from_slice(&tag);
        Ok(())
    }

    /// Verifies and decrypts an SRTP packet in place (removes the tag).
    pub fn unprotect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        if packet.len() < 12 + TAG_LEN {
            return Err(SrtpError::TooShort);
        }
        let body_len = packet.len() - TAG_LEN;
        let header_len = rtp_header_len(&packet[..body_len]).ok_or(SrtpError::TooShort)?;
        let ssrc = be32(&packet[8..12]);
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let st = self.streams.entry(ssrc).or_default();
        // RFC 3711 §3.3.1: guess the ROC from the highest sequence number seen
        let guess_roc = match st.highest_seq {
            None => st.roc,
            Some(h) if h < 0x8000 => {
                if seq > h && seq - h > 0x8000 {
                    st.roc.wrapping_sub(1)
                } else {
                    st.roc
                }
            }
            Some(h) => {
                if h - 0x8000 > seq {
                    st.roc.wrapping_add(1)
                } else {
                    st.roc
                }
            }
        };
        let index = (u64::from(guess_roc) << 16) | u64::from(seq);
        if st.highest_seq.is_some() {
            if index + 64 <= st.highest_index {
                return Err(SrtpError::Replay);
            }
            if index <= st.highest_index && st.replay & (1 << (st.highest_index - index)) != 0 {
                return Err(SrtpError::Replay);
            }
        }
        let expected = rtp_tag(&self.rtp.auth, &packet[..body_len], guess_roc);
        if !ct_eq(&expected, &packet[body_len..]) {
            return Err(SrtpError::AuthFailed);
        }
        // authenticated: commit replay and ROC state
        if st.highest_seq.is_none() || index > st.highest_index {
            let shift = index.saturating_sub(st.highest_index);
            st.replay = if st.highest_seq.is_none() || shift >= 64 {
                1
            } else {
                (st.replay << shift) | 1
            };
            st.highest_index = index;
            st.highest_seq = Some(seq);
            st.roc = guess_roc;
        } else {
            st.replay |= 1 << (st.highest_index - index);
        }
        packet.truncate(body_len);
        let iv = rtp_iv(&self.rtp.salt, ssrc, index);
        Aes128Ctr::new(&self.rtp.enc.into(), &iv.into()).apply_keystream(&mut packet[header_len..]);
        Ok(())
    }

    /// Encrypts and authenticates an RTCP compound packet (RFC 3711 §3.4).
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        if packet.len() < 8 {
            return Err(SrtpError::TooShort);
        }
        let ssrc = be32(&packet[4..8]);
        let st = self.streams.entry(ssrc).or_default();
        st.srtcp_index = (st.srtcp_index + 1) & 0x7fff_ffff;
        let index = st.srtcp_index;
        let iv = rtcp_iv(&self.rtcp.salt, ssrc, index);
        Aes128Ctr::new(&self.rtcp.enc.into(), &iv.into()).apply_keystream(&mut packet[8..]);
        packet.extend_from_slice(&(0x8000_0000 | index).to_be_bytes());
        let tag = hmac_tag(&self.rtcp.auth, &[packet]);
        packet.extend_from_slice(&tag);
        Ok(())
    }

    /// Verifies and decrypts an SRTCP packet in place.
    pub fn unprotect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        if packet.len() < 8 + 4 + TAG_LEN {
            return Err(SrtpError::TooShort);
        }
        let tag_at = packet.len() - TAG_LEN;
        let expected = hmac_tag(&self.rtcp.auth, &[&packet[..tag_at]]);
        if !ct_eq(&expected, &packet[tag_at..]) {
            return Err(SrtpError::AuthFailed);
        }
        let e_index = be32(&packet[tag_at - 4..tag_at]);
        packet.truncate(tag_at - 4);
        if e_index & 0x8000_0000 != 0 {
            let ssrc = be32(&packet[4..8]);
            let iv = rtcp_iv(&self.rtcp.salt, ssrc, e_index & 0x7fff_ffff);
            Aes128Ctr::new(&self.rtcp.enc.into(), &iv.into()).apply_keystream(&mut packet[8..]);
        }
        Ok(())
    }
}

/// AES-CM PRF of RFC 3711 §4.3.1 with r = 0: x = label (at byte 7) XOR salt.
fn kdf(master: &SdesKey, label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(&master.salt);
    iv[7] ^= label;
    out.fill(0);
    Aes128Ctr::new(&master.key.into(), &iv.into()).apply_keystream(out);
}

fn rtp_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
        iv[4 + i] ^= b;
    }
    for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
        iv[8 + i] ^= b;
    }
    iv
}

fn rtcp_iv(salt: &[u8; 14], ssrc: u32, index: u32) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
        iv[4 + i] ^= b;
    }
    for (i, b) in index.to_be_bytes().iter().enumerate() {
        iv[10 + i] ^= b;
    }
    iv
}

fn rtp_tag(auth: &[u8; 20], authenticated: &[u8], roc: u32) -> [u8; TAG_LEN] {
    hmac_tag(auth, &[authenticated, &roc.to_be_bytes()])
}

fn hmac_tag(auth: &[u8; 20], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    // HMAC accepts keys of any length: this cannot fail
    let Ok(mut mac) = HmacSha1::new_from_slice(auth) else {
        return [0; TAG_LEN];
    };
    for p in parts {
        mac.update(p);
    }
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full[..TAG_LEN]);
    tag
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Length of the RTP header including CSRCs and extension, if the packet holds it.
fn rtp_header_len(p: &[u8]) -> Option<usize> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let ext = p.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    (len <= p.len()).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 Appendix B.3 key derivation test vectors.
    #[test]
    fn key_derivation_matches_rfc3711_b3() {
        let mut key = [0u8; 16];
        let mut salt = [0u8; 14];
        key.copy_from_slice(&hex("E1F97A0D3E018BE0D64FA32C06DE4139"));
        salt.copy_from_slice(&hex("0EC675AD498AFEEBB6960B3AABE6"));
        let keys = SessionKeys::derive(&SdesKey::from_parts(1, key, salt), [0, 1, 2]);
        assert_eq!(keys.enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(keys.salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            keys.auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    fn packet(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 1, 0xca, 0xfe, 0xba, 0xbe];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn rtp_round_trip_across_rollover_with_replay_and_tamper_checks() {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7);
        let key = SdesKey::generate(1, &mut rng);
        let attr = key.to_attribute();
        assert!(attr.starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"));
        let parsed = SdesKey::parse_attribute(&attr).unwrap();
        assert_eq!(parsed, key);
        assert!(
            !format!("{key:?}").contains(&attr[30..]),
            "Debug must not show the key"
        );
        let mut tx = SrtpContext::new(&key);
        let mut rx = SrtpContext::new(&parsed);
        for i in 0..200u32 {
            let seq = 65_400u16.wrapping_add(i as u16); // crosses the ROC boundary
            let plain = packet(seq, &[i as u8; 33]);
            let mut p = plain.clone();
            tx.protect_rtp(&mut p).unwrap();
            assert_eq!(p.len(), plain.len() + TAG_LEN);
            assert_ne!(p[12..45], plain[12..]);
            if i % 50 == 0 {
                // a forged copy arriving first fails authentication and does not consume
                // the sequence number
                let mut tampered = p.clone();
                tampered[20] ^= 1;
                assert_eq!(rx.unprotect_rtp(&mut tampered), Err(SrtpError::AuthFailed));
            }
            let mut q = p.clone();
            rx.unprotect_rtp(&mut q).unwrap();
            assert_eq!(q, plain);
            let mut again = p;
            assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replay));
        }
        let mut rtcp = vec![0x80, 201, 0, 1, 0xca, 0xfe, 0xba, 0xbe, 1, 2, 3, 4];
        let plain = rtcp.clone();
        tx.protect_rtcp(&mut rtcp).unwrap();
        assert_eq!(rtcp.len(), plain.len() + 4 + TAG_LEN);
        rx.unprotect_rtcp(&mut rtcp).unwrap();
        assert_eq!(rtcp, plain);
        assert_eq!(
            rx.unprotect_rtp(&mut vec![0x80; 5]),
            Err(SrtpError::TooShort)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
            attr in "[ -~]{0,80}",
        ) {
            let key = SdesKey::from_parts(1, [9; 16], [8; 14]);
            let mut ctx = SrtpContext::new(&key);
            let mut p = data.clone();
            let _ = ctx.unprotect_rtp(&mut p);
            let mut p = data.clone();
            let _ = ctx.unprotect_rtcp(&mut p);
            let mut p = data;
            let _ = ctx.protect_rtp(&mut p);
            let _ = SdesKey::parse_attribute(&attr);
        }
    }

    #[test]
    fn crypto_attributes_we_cannot_use_are_refused() {
        for bad in [
            "1 AES_CM_128_HMAC_SHA1_32 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "1 AES_CM_128_HMAC_SHA1_80 inline:short",
            "1 AES_CM_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA|2^20|1:4",
            "x",
            "",
        ] {
            assert!(SdesKey::parse_attribute(bad).is_err(), "{bad}");
        }
        let ok = "1 AES_CM_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA|2^31";
        assert!(SdesKey::parse_attribute(ok).is_ok());
    }
}
