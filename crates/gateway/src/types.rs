//! Small identifier newtypes shared by the config, the dial plan and the call cores.
//!
//! They are the gateway's own types until the SIP and Meta crates are wired in; each
//! constructor parses, so code holding one never re-checks it.

use std::fmt;

/// An E.164 telephone number, stored as `+` followed by 8 to 15 digits.
///
/// `E164::parse` accepts the spellings seen on the wire: Meta's digits-only form
/// (`"14085551234"`, §0 of the Calling API notes), `+14085551234`, `0014085551234`
/// and formatted input with spaces, dots, dashes and parentheses.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

/// Why a string is not an E.164 number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum E164Error {
    /// A character other than digits, a leading `+` or the usual separators.
    #[error("unexpected character {0:?} in phone number")]
    BadCharacter(char),
    /// Fewer than 8 or more than 15 digits (E.164 allows at most 15).
    #[error("phone number has {0} digits, expected 8 to 15")]
    BadLength(usize),
    /// The country code cannot start with 0.
    #[error("country code cannot start with 0")]
    LeadingZero,
}

impl E164 {
    /// Parses and normalises a phone number to `+<digits>`.
    pub fn parse(input: &str) -> Result<Self, E164Error> {
        let trimmed = input.trim();
        let rest = if let Some(r) = trimmed.strip_prefix('+') {
            r
        } else if let Some(r) = trimmed.strip_prefix("00") {
            r
        } else {
            trimmed
        };
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                other => return Err(E164Error::BadCharacter(other)),
            }
        }
        if !(8..=15).contains(&digits.len()) {
            return Err(E164Error::BadLength(digits.len()));
        }
        if digits.starts_with('0') {
            return Err(E164Error::LeadingZero);
        }
        Ok(Self(format!("+{digits}")))
    }

    /// The number with its leading `+`, e.g. `+14085551234`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits only, as Meta writes numbers in bodies and webhooks (`14085551234`).
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164({})", self.0)
    }
}

/// The numeric Graph id of a business phone number (the `<PHONE_NUMBER_ID>` path segment).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumberId(String);

impl PhoneNumberId {
    /// Accepts 1 to 32 ASCII digits.
    pub fn parse(input: &str) -> Option<Self> {
        let ok =
            !input.is_empty() && input.len() <= 32 && input.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| Self(input.to_owned()))
    }

    /// The id as sent in Graph paths.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A WhatsApp call id (`wacid.…`), kept opaque as the Calling API notes §1.7 require.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WaCallId(String);

impl WaCallId {
    /// Wraps an id received from Meta; only emptiness and absurd length are refused.
    pub fn new(id: impl Into<String>) -> Option<Self> {
        let id = id.into();
        (!id.is_empty() && id.len() <= 512).then_some(Self(id))
    }

    /// The id as Meta sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WaCallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SIP response status code, 100 to 699 (RFC 3261 §21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SipStatus(u16);

impl SipStatus {
    /// Accepts codes 100 to 699.
    pub fn new(code: u16) -> Option<Self> {
        (100..=699).contains(&code).then_some(Self(code))
    }

    /// The numeric code.
    pub fn code(self) -> u16 {
        self.0
    }

    /// 1xx.
    pub fn is_provisional(self) -> bool {
        self.0 < 200
    }

    /// 2xx.
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }

    pub(crate) const fn from_const(code: u16) -> Self {
        Self(code)
    }
}

impl fmt::Display for SipStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which side started the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A WhatsApp user called a business number (user-initiated, issue 5).
    Inbound,
    /// The PBX called a WhatsApp user (business-initiated, issue 6).
    Outbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_normalises_meta_digits_plus_and_00_forms() {
        for input in [
            "14085551234",
            "+14085551234",
            "0014085551234",
            "+1 (408) 555-1234",
        ] {
            assert_eq!(
                E164::parse(input).unwrap().as_str(),
                "+14085551234",
                "{input}"
            );
        }
        assert_eq!(E164::parse("+14085551234").unwrap().digits(), "14085551234");
    }

    #[test]
    fn e164_refuses_letters_short_long_and_zero_country_code() {
        assert_eq!(
            E164::parse("+1408555abcd"),
            Err(E164Error::BadCharacter('a'))
        );
        assert_eq!(E164::parse("+1234567"), Err(E164Error::BadLength(7)));
        assert_eq!(
            E164::parse("+1234567890123456"),
            Err(E164Error::BadLength(16))
        );
        assert_eq!(E164::parse("+0123456789"), Err(E164Error::LeadingZero));
    }

    #[test]
    fn sip_status_range() {
        assert!(SipStatus::new(99).is_none());
        assert!(SipStatus::new(700).is_none());
        assert!(SipStatus::new(180).unwrap().is_provisional());
        assert!(SipStatus::new(200).unwrap().is_success());
    }
}
