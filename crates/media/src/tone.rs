//! Test signals and their analysis: a sine generator and Goertzel-based tone, level and DTMF
//! detectors.
//!
//! Public so every crate's tests can assert "a 1 kHz tone crossed the gateway" and so the
//! relay can detect in-band DTMF from PBXs that send digits as audio. Pure functions over
//! `i16` PCM; nothing here reads a clock.

use std::f64::consts::PI;

/// Generates a sine tone (or a dual tone) as 16-bit PCM, phase-continuous across calls.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    sample_rate_hz: u32,
    freqs_hz: Vec<f64>,
    amplitude: f64,
    sample_index: u64,
}

impl ToneGenerator {
    /// A sine of `freq_hz` at `level_dbfs` (0 dBFS = full-scale sine peak).
    #[must_use]
    pub fn sine(freq_hz: f64, level_dbfs: f64, sample_rate_hz: u32) -> Self {
        Self::multi(&[freq_hz], level_dbfs, sample_rate_hz)
    }

    /// Sum of sines, each at `level_dbfs`.
    #[must_use]
    pub fn multi(freqs_hz: &[f64], level_dbfs: f64, sample_rate_hz: u32) -> Self {
        Self {
            sample_rate_hz,
            freqs_hz: freqs_hz.to_vec(),
            amplitude: 32767.0 * 10f64.powf(level_dbfs / 20.0),
            sample_index: 0,
        }
    }

    /// The DTMF tone pair of `digit` (`0-9 * # A-D`) at -10 dBFS per tone, or `None`.
    #[must_use]
    pub fn dtmf(digit: char, sample_rate_hz: u32) -> Option<Self> {
        let (low, high) = dtmf_freqs(digit)?;
        Some(Self::multi(&[low, high], -10.0, sample_rate_hz))
    }

    /// Appends `samples` samples to `out`.
    pub fn fill(&mut self, samples: usize, out: &mut Vec<i16>) {
        let rate = f64::from(self.sample_rate_hz);
        for _ in 0..samples {
            let t = self.sample_index as f64 / rate;
            let v: f64 = self
                .freqs_hz
                .iter()
                .map(|f| (2.0 * PI * f * t).sin() * self.amplitude)
                .sum();
            out.push(v.clamp(-32768.0, 32767.0) as i16);
            self.sample_index += 1;
        }
    }

    /// Returns the next `samples` samples.
    #[must_use]
    pub fn next_frame(&mut self, samples: usize) -> Vec<i16> {
        let mut v = Vec::with_capacity(samples);
        self.fill(samples, &mut v);
        v
    }
}

/// Power of `freq_hz` in `samples` by the Goertzel algorithm, normalised so that a full-scale
/// sine at exactly that frequency gives about 1.0.
#[must_use]
pub fn goertzel_power(samples: &[i16], freq_hz: f64, sample_rate_hz: u32) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let n = samples.len() as f64;
    let w = 2.0 * PI * freq_hz / f64::from(sample_rate_hz);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // |X(f)|^2 for a sine of amplitude A is (A N / 2)^2.
    power * 4.0 / (n * n)
}

/// Mean power of `samples` relative to a full-scale sine, in dB (a 0 dBFS sine gives 0 dB).
#[must_use]
pub fn level_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return -120.0;
    }
    let ms: f64 = samples
        .iter()
        .map(|&s| {
            let v = f64::from(s) / 32768.0;
            v * v
        })
        .sum::<f64>()
        / samples.len() as f64;
    // A full-scale sine has mean square 0.5.
    10.0 * (ms * 2.0).max(1e-12).log10()
}

/// The strongest frequency in `samples` on a grid from `from_hz` to `to_hz` in `step_hz`
/// steps, with the fraction of the signal's power it holds (1.0 = a pure tone).
#[must_use]
pub fn dominant_frequency(
    samples: &[i16],
    sample_rate_hz: u32,
    from_hz: f64,
    to_hz: f64,
    step_hz: f64,
) -> Option<(f64, f64)> {
    let total = 10f64.powf(level_dbfs(samples) / 10.0);
    if total <= 1e-9 || step_hz <= 0.0 {
        return None;
    }
    let mut best = (0.0, 0.0);
    let mut f = from_hz;
    while f <= to_hz {
        let p = goertzel_power(samples, f, sample_rate_hz);
        if p > best.1 {
            best = (f, p);
        }
        f += step_hz;
    }
    Some((best.0, (best.1 / total).min(1.0)))
}

/// Whether `samples` hold a tone at `freq_hz` that carries at least `min_fraction` of the
/// signal power and is louder than `min_level_dbfs`.
#[must_use]
pub fn has_tone(
    samples: &[i16],
    sample_rate_hz: u32,
    freq_hz: f64,
    min_fraction: f64,
    min_level_dbfs: f64,
) -> bool {
    let level = level_dbfs(samples);
    if level < min_level_dbfs {
        return false;
    }
    let total = 10f64.powf(level / 10.0);
    goertzel_power(samples, freq_hz, sample_rate_hz) / total >= min_fraction
}

/// The (low, high) frequency pair of a DTMF digit.
#[must_use]
pub fn dtmf_freqs(digit: char) -> Option<(f64, f64)> {
    let (row, col) = match digit.to_ascii_uppercase() {
        '1' => (0, 0),
        '2' => (0, 1),
        '3' => (0, 2),
        'A' => (0, 3),
        '4' => (1, 0),
        '5' => (1, 1),
        '6' => (1, 2),
        'B' => (1, 3),
        '7' => (2, 0),
        '8' => (2, 1),
        '9' => (2, 2),
        'C' => (2, 3),
        '*' => (3, 0),
        '0' => (3, 1),
        '#' => (3, 2),
        'D' => (3, 3),
        _ => return None,
    };
    Some((DTMF_LOW[row], DTMF_HIGH[col]))
}

/// Classifies one block (10–40 ms) as a DTMF digit: both tones of one pair clearly dominant,
/// twist within 8 dB, block louder than -35 dBFS.
#[must_use]
pub fn detect_dtmf_block(samples: &[i16], sample_rate_hz: u32) -> Option<char> {
    let level = level_dbfs(samples);
    if level < -35.0 {
        return None;
    }
    let total = 10f64.powf(level / 10.0);
    let pick = |freqs: &[f64; 4]| {
        let powers = freqs.map(|f| goertzel_power(samples, f, sample_rate_hz));
        let (idx, max) =
            powers.iter().enumerate().fold(
                (0, 0.0f64),
                |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc },
            );
        let second = powers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != idx)
            .fold(0.0f64, |acc, (_, &p)| acc.max(p));
        (idx, max, second)
    };
    let (row, low_p, low_2nd) = pick(&DTMF_LOW);
    let (col, high_p, high_2nd) = pick(&DTMF_HIGH);
    let twist_db = 10.0 * (low_p.max(1e-12) / high_p.max(1e-12)).log10();
    let strong = (low_p + high_p) / total > 0.6;
    let clean = low_p > 6.0 * low_2nd && high_p > 6.0 * high_2nd;
    if strong && clean && twist_db.abs() < 8.0 {
        Some(DTMF_DIGITS[row][col])
    } else {
        None
    }
}

/// Turns per-block DTMF classifications into digits: a digit is reported once, when it has
/// been present for at least `min_blocks` consecutive blocks, and not again until a block
/// without it.
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    sample_rate_hz: u32,
    min_blocks: u32,
    current: Option<char>,
    run: u32,
    reported: bool,
}

impl DtmfDetector {
    /// A detector for audio at `sample_rate_hz`, requiring `min_blocks` agreeing blocks.
    #[must_use]
    pub fn new(sample_rate_hz: u32, min_blocks: u32) -> Self {
        Self {
            sample_rate_hz,
            min_blocks: min_blocks.max(1),
            current: None,
            run: 0,
            reported: false,
        }
    }

    /// Feeds one block; returns a digit the first time it qualifies.
    pub fn push_block(&mut self, samples: &[i16]) -> Option<char> {
        let digit = detect_dtmf_block(samples, self.sample_rate_hz);
        if digit != self.current {
            self.current = digit;
            self.run = 0;
            self.reported = false;
        }
        let d = digit?;
        self.run += 1;
        if !self.reported && self.run >= self.min_blocks {
            self.reported = true;
            return Some(d);
        }
        None
    }
}

const DTMF_LOW: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const DTMF_HIGH: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const DTMF_DIGITS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_generated_tone_frequency_and_level() {
        let mut g = ToneGenerator::sine(1000.0, -6.0, 8000);
        let s = g.next_frame(800);
        let (f, frac) = dominant_frequency(&s, 8000, 200.0, 3800.0, 10.0).unwrap();
        assert!((f - 1000.0).abs() < 1.0, "{f}");
        assert!(frac > 0.95, "{frac}");
        assert!((level_dbfs(&s) + 6.0).abs() < 0.2);
        assert!(has_tone(&s, 8000, 1000.0, 0.9, -20.0));
        assert!(!has_tone(&s, 8000, 1200.0, 0.5, -20.0));
        assert!(!has_tone(&[0; 160], 8000, 1000.0, 0.5, -60.0));
    }

    #[test]
    fn every_dtmf_digit_is_classified_once() {
        for d in "0123456789*#ABCD".chars() {
            let mut g = ToneGenerator::dtmf(d, 8000).unwrap();
            let mut det = DtmfDetector::new(8000, 2);
            let mut got = Vec::new();
            for _ in 0..5 {
                got.extend(det.push_block(&g.next_frame(160)));
            }
            got.extend(det.push_block(&[0; 160]));
            assert_eq!(got, vec![d]);
        }
        // a single 1 kHz tone is not a digit
        let mut g = ToneGenerator::sine(1000.0, -10.0, 8000);
        assert_eq!(detect_dtmf_block(&g.next_frame(160), 8000), None);
    }
}
