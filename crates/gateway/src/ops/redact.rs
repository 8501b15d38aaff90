//! Masking of personal data in log lines (`logging.redact_phone_numbers`, on by default).
//!
//! Phone numbers reach info-level lines through dial-plan targets that carry the caller's
//! number (`sip:${caller}@pbx`) and refusal reasons; DTMF digits may be PINs or card
//! numbers. The masks keep what an engineer needs to correlate a call (the last digits,
//! that a digit was pressed) and drop the rest. Debug and trace lines and the CDRs are not
//! masked: they are the place for full detail, under the operator's own access control.

use std::borrow::Cow;

/// Digit runs shorter than this are left alone (extensions, ports, status codes).
const MIN_NUMBER_DIGITS: usize = 7;
/// Digits kept at the end of a masked number.
const KEPT_DIGITS: usize = 2;

/// Masks every run of at least 7 digits (an optional `+` before it is kept) except its last
/// two digits: `sip:+4915112345678@pbx` → `sip:+***********78@pbx`. Shorter runs (an
/// extension, a port, a SIP status) are left as they are.
pub fn phone_numbers(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let len = i - start;
        if len >= MIN_NUMBER_DIGITS {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            // `start` and `i` are on ASCII digit boundaries, so these slices are valid
            o.push_str(&text[copied..start]);
            o.extend(std::iter::repeat_n('*', len - KEPT_DIGITS));
            o.push_str(&text[i - KEPT_DIGITS..i]);
            copied = i;
        }
    }
    match out {
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(text),
    }
}

/// A milestone's log text with numbers masked and DTMF digits hidden when `redact`.
pub fn milestone(kind: &crate::runtime::MilestoneKind, redact: bool) -> String {
    use crate::runtime::MilestoneKind;
    if !redact {
        return kind.to_string();
    }
    match kind {
        MilestoneKind::Dtmf { from_whatsapp, .. } => MilestoneKind::Dtmf {
            digit: '*',
            from_whatsapp: *from_whatsapp,
        }
        .to_string()
        .replacen("DTMF *", "DTMF digit", 1),
        other => phone_numbers(&other.to_string()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::MilestoneKind;

    #[test]
    fn long_digit_runs_are_masked_short_ones_kept() {
        assert_eq!(
            phone_numbers("sip:+4915112345678@10.0.0.5:5060"),
            "sip:+***********78@10.0.0.5:5060"
        );
        assert_eq!(
            phone_numbers("to sip:2000@pbx (attempt 1), 486"),
            "to sip:2000@pbx (attempt 1), 486"
        );
        assert!(matches!(phone_numbers("no digits"), Cow::Borrowed(_)));
        assert_eq!(phone_numbers("1234567"), "*****67");
        assert_eq!(phone_numbers("123456"), "123456");
        assert_eq!(
            phone_numbers("a 4930901820 and 4915112345678"),
            "a ********20 and ***********78"
        );
        // non-ASCII text around a number stays intact
        assert_eq!(
            phone_numbers("Jürgen 4915112345678 ü"),
            "Jürgen ***********78 ü"
        );
    }

    #[test]
    fn milestones_lose_numbers_and_dtmf_digits_only_when_asked() {
        let routed = MilestoneKind::Routed {
            rule: "vip".into(),
            target: "sip:4915112345678@pbx".into(),
        };
        assert_eq!(
            milestone(&routed, true),
            "routed by rule `vip` to sip:***********78@pbx"
        );
        assert_eq!(
            milestone(&routed, false),
            "routed by rule `vip` to sip:4915112345678@pbx"
        );
        let dtmf = MilestoneKind::Dtmf {
            digit: '7',
            from_whatsapp: true,
        };
        assert_eq!(
            milestone(&dtmf, true),
            "DTMF digit from WhatsApp to the PBX"
        );
        assert_eq!(milestone(&dtmf, false), "DTMF 7 from WhatsApp to the PBX");
    }
}
