//! G.711 µ-law (PCMU) and A-law (PCMA), ITU-T G.711 (11/88), table-based.
//!
//! Both directions are table look-ups built at compile time from the segment rules of G.711
//! Tables 1a/2a (the classic Sun reference formulation): decoding indexes a 256-entry table,
//! encoding indexes by the 14-bit (µ-law) or 13-bit (A-law) magnitude the law actually
//! resolves, so a sample costs one shift and one load.

/// Decodes one µ-law byte to 16-bit linear PCM.
#[must_use]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// Encodes one 16-bit linear sample to µ-law.
#[must_use]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    // µ-law resolves 14 bits: index by the top 14 bits, offset to be non-negative.
    ULAW_ENCODE[((i32::from(sample) >> 2) + 8192) as usize]
}

/// Decodes one A-law byte to 16-bit linear PCM.
#[must_use]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

/// Encodes one 16-bit linear sample to A-law.
#[must_use]
pub fn linear_to_alaw(sample: i16) -> u8 {
    // A-law resolves 13 bits.
    ALAW_ENCODE[((i32::from(sample) >> 3) + 4096) as usize]
}

/// Encodes a frame to µ-law, appending to `out`.
pub fn encode_ulaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&s| linear_to_ulaw(s)));
}

/// Encodes a frame to A-law, appending to `out`.
pub fn encode_alaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&s| linear_to_alaw(s)));
}

/// Decodes a µ-law payload, appending to `out`.
pub fn decode_ulaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&c| ulaw_to_linear(c)));
}

/// Decodes an A-law payload, appending to `out`.
pub fn decode_alaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&c| alaw_to_linear(c)));
}

/// The µ-law code for silence (positive zero).
pub const ULAW_SILENCE: u8 = 0xff;
/// The A-law code for silence (smallest positive step, even bits inverted).
pub const ALAW_SILENCE: u8 = 0xd5;

const BIAS: i32 = 0x84;
const SEG_UEND: [i32; 8] = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
const SEG_AEND: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];

static ULAW_DECODE: [i16; 256] = build_ulaw_decode();
static ALAW_DECODE: [i16; 256] = build_alaw_decode();
static ULAW_ENCODE: [u8; 16384] = build_ulaw_encode();
static ALAW_ENCODE: [u8; 8192] = build_alaw_encode();

const fn segment(value: i32, ends: &[i32; 8]) -> usize {
    let mut seg = 0;
    while seg < 8 {
        if value <= ends[seg] {
            return seg;
        }
        seg += 1;
    }
    8
}

const fn ulaw_decode(code: u8) -> i16 {
    let u = !code as i32;
    let mut t = ((u & 0x0f) << 3) + BIAS;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 { BIAS - t } else { t - BIAS }) as i16
}

const fn alaw_decode(code: u8) -> i16 {
    let a = (code ^ 0x55) as i32;
    let mut t = (a & 0x0f) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// `value14` is the sample shifted right by 2 (a 14-bit signed value).
const fn ulaw_encode14(value14: i32) -> u8 {
    let (mut v, mask) = if value14 < 0 {
        (-value14, 0x7f_i32)
    } else {
        (value14, 0xff)
    };
    if v > 8159 {
        v = 8159;
    }
    v += BIAS >> 2;
    let seg = segment(v, &SEG_UEND);
    if seg >= 8 {
        return (0x7f ^ mask) as u8;
    }
    let u = ((seg as i32) << 4) | ((v >> (seg + 1)) & 0x0f);
    (u ^ mask) as u8
}

/// `value13` is the sample shifted right by 3 (a 13-bit signed value).
const fn alaw_encode13(value13: i32) -> u8 {
    let (v, mask) = if value13 >= 0 {
        (value13, 0xd5)
    } else {
        (-value13 - 1, 0x55)
    };
    let seg = segment(v, &SEG_AEND);
    if seg >= 8 {
        return (0x7f ^ mask) as u8;
    }
    let mut a = (seg as i32) << 4;
    if seg < 2 {
        a |= (v >> 1) & 0x0f;
    } else {
        a |= (v >> seg) & 0x0f;
    }
    (a ^ mask) as u8
}

const fn build_ulaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode(i as u8);
        i += 1;
    }
    t
}

const fn build_alaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode(i as u8);
        i += 1;
    }
    t
}

const fn build_ulaw_encode() -> [u8; 16384] {
    let mut t = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        t[i] = ulaw_encode14(i as i32 - 8192);
        i += 1;
    }
    t
}

const fn build_alaw_encode() -> [u8; 8192] {
    let mut t = [0u8; 8192];
    let mut i = 0;
    while i < 8192 {
        t[i] = alaw_encode13(i as i32 - 4096);
        i += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decision and reconstruction values from ITU-T G.711 Table 2a (µ-law, positive half,
    /// in the 14-bit "uniform code" scale ×4 = 16-bit PCM): (code, reconstructed value).
    /// Segment end points: codes 0x80+0x7f.. are mirrored, 0xff is +0.
    const ULAW_POINTS: &[(u8, i16)] = &[
        (0xff, 0),
        (0xfe, 8),
        (0xf0, 120),
        (0xef, 132),
        (0xe0, 372),
        (0xdf, 396),
        (0xc0, 1884),
        (0xa0, 7932),
        (0x90, 15_996),
        (0x80, 32_124),
        (0x7f, 0),
        (0x00, -32_124),
    ];

    /// ITU-T G.711 Table 1a (A-law), codes after even-bit inversion as sent on the wire.
    const ALAW_POINTS: &[(u8, i16)] = &[
        (0xd5, 8),
        (0x55, -8),
        (0xd4, 24),
        (0xc5, 264),
        (0xf5, 528),
        (0xe5, 1056),
        (0xa5, 16_896),
        (0xaa, 32_256),
        (0x2a, -32_256),
    ];

    #[test]
    fn ulaw_matches_itu_reconstruction_values() {
        for &(code, value) in ULAW_POINTS {
            assert_eq!(ulaw_to_linear(code), value, "code {code:#04x}");
        }
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_ulaw(3), 0xff);
        // 14-bit magnitude 1 lies above the first decision level (ITU Table 2a)
        assert_eq!(linear_to_ulaw(-5), 0x7e);
    }

    #[test]
    fn alaw_matches_itu_reconstruction_values() {
        for &(code, value) in ALAW_POINTS {
            assert_eq!(alaw_to_linear(code), value, "code {code:#04x}");
        }
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xaa);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2a);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            // 0x7f is µ-law negative zero; it re-encodes as positive zero 0xff.
            if code != 0x7f {
                assert_eq!(
                    linear_to_ulaw(ulaw_to_linear(code)),
                    code,
                    "ulaw {code:#04x}"
                );
            }
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "alaw {code:#04x}"
            );
        }
    }

    #[test]
    fn encoding_is_monotonic_and_error_is_bounded() {
        // Quantisation error stays within half a step of the segment the value lies in.
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let u = ulaw_to_linear(linear_to_ulaw(s));
            let a = alaw_to_linear(linear_to_alaw(s));
            let mag = i32::from(s).abs();
            let bound = (mag / 16).max(16) + 8;
            assert!(
                (i32::from(u) - i32::from(s)).abs() <= bound.max(260),
                "ulaw {s} -> {u}"
            );
            assert!(
                (i32::from(a) - i32::from(s)).abs() <= bound.max(260),
                "alaw {s} -> {a}"
            );
        }
    }
}
