//! Our SRTP (RFC 3711, AES_CM_128_HMAC_SHA1_80) against an independent implementation, the
//! `webrtc` crate's `webrtc-srtp`, both directions, across a rollover-counter wrap, RTP and
//! RTCP.

#![allow(clippy::unwrap_used)]

use webrtc::srtp::context::Context;
use webrtc::srtp::protection_profile::ProtectionProfile;
use whatsip_media::srtp::{SdesKey, SrtpContext};

const KEY: [u8; 16] = *b"0123456789abcdef";
const SALT: [u8; 14] = *b"saltsaltsaltsa";

fn rtp(seq: u16, n: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0x00, 0, 0, 0, 0, 3, 0xc0, 0x11, 0x22, 0x33, 0x44];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend((0..160).map(|i| n.wrapping_add(i)));
    p
}

#[test]
fn our_srtp_and_webrtc_srtp_understand_each_other() {
    let key = SdesKey::from_parts(1, KEY, SALT);
    let mut ours_tx = SrtpContext::new(&key);
    let mut ours_rx = SrtpContext::new(&key);
    let profile = ProtectionProfile::Aes128CmHmacSha1_80;
    let mut theirs_rx = Context::new(&KEY, &SALT, profile, None, None).unwrap();
    let mut theirs_tx = Context::new(&KEY, &SALT, profile, None, None).unwrap();
    for i in 0..300u16 {
        let seq = 65_300u16.wrapping_add(i);
        let plain = rtp(seq, i as u8);
        let mut p = plain.clone();
        ours_tx.protect_rtp(&mut p).unwrap();
        let decrypted = theirs_rx.decrypt_rtp(&p).unwrap();
        assert_eq!(
            &decrypted[..],
            &plain[..],
            "ours -> webrtc-srtp at seq {seq}"
        );

        let encrypted = theirs_tx.encrypt_rtp(&plain).unwrap();
        assert_eq!(&encrypted[..], &p[..], "same key, same packet, same bytes");
        let mut q = encrypted.to_vec();
        ours_rx.unprotect_rtp(&mut q).unwrap();
        assert_eq!(q, plain, "webrtc-srtp -> ours at seq {seq}");
    }
    // RTCP: a receiver report
    let rr = vec![0x80, 201, 0, 1, 0x11, 0x22, 0x33, 0x44];
    let mut p = rr.clone();
    ours_tx.protect_rtcp(&mut p).unwrap();
    assert_eq!(&theirs_rx.decrypt_rtcp(&p).unwrap()[..], &rr[..]);
    let e = theirs_tx.encrypt_rtcp(&rr).unwrap();
    let mut q = e.to_vec();
    ours_rx.unprotect_rtcp(&mut q).unwrap();
    assert_eq!(q, rr);
}
