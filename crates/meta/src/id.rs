//! Identifier newtypes. Parse, don't validate: each has a fallible constructor and code that
//! holds one never re-checks it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an identifier was refused. The offending value is cut to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {value:?} ({reason})")]
pub struct IdError {
    /// Which identifier (`wa call id`, `phone number id`, ...).
    pub kind: &'static str,
    /// The refused value, cut to 64 bytes.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl IdError {
    fn new(kind: &'static str, value: &str, reason: &'static str) -> Self {
        Self {
            kind,
            value: cut(value, 64).to_owned(),
            reason,
        }
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn digits(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::new(kind, s, "empty"));
    }
    if s.len() > max {
        return Err(IdError::new(kind, s, "too long"));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdError::new(kind, s, "not all digits"));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, |$s:ident| $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Parses a ", $kind, ".")]
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let $s: String = value.into();
                $check?;
                Ok(Self($s))
            }

            /// The identifier as Meta writes it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// WhatsApp call id (`wacid.` + base64). Opaque: never parsed (reference §1.7). Accepted
    /// when 1–512 bytes of printable ASCII without spaces.
    WaCallId, "wa call id", |s| opaque("wa call id", &s, 512)
);
string_id!(
    /// Graph id of the business phone number (e.g. `106540352242922`), not the E.164 number.
    PhoneNumberId, "phone number id", |s| digits("phone number id", &s, 32)
);
string_id!(
    /// WhatsApp Business Account id.
    WabaId, "waba id", |s| digits("waba id", &s, 32)
);
string_id!(
    /// A WhatsApp user or business number as Meta writes it in bodies and webhooks: digits
    /// only, country code included, no `+` (e.g. `14085551234`).
    WaId, "wa id", |s| digits("wa id", &s, 20)
);
string_id!(
    /// A message id (`wamid.…`). Opaque.
    MessageId, "message id", |s| opaque("message id", &s, 512)
);

fn opaque(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::new(kind, s, "empty"));
    }
    if s.len() > max {
        return Err(IdError::new(kind, s, "too long"));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdError::new(kind, s, "not printable ascii"));
    }
    Ok(())
}

impl WaId {
    /// The same number in E.164 form (`+` prefix).
    pub fn to_e164(&self) -> E164 {
        E164(format!("+{}", self.0))
    }
}

/// A phone number in E.164 form: `+` and 1–15 digits. Used on the SIP side; Meta's bodies use
/// [`WaId`] (digits without `+`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    /// Parses `+<digits>`; also accepts a bare digit string (Meta's form) and adds the `+`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let digits_part = value.strip_prefix('+').unwrap_or(value);
        digits("e164 number", digits_part, 15)?;
        Ok(Self(format!("+{digits_part}")))
    }

    /// The number with its `+`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number as Meta writes it (digits, no `+`).
    pub fn to_wa_id(&self) -> WaId {
        WaId(self.0[1..].to_owned())
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

impl From<WaId> for E164 {
    fn from(id: WaId) -> Self {
        id.to_e164()
    }
}

/// A Unix time in whole seconds, as Meta sends it (a string in webhooks, sometimes a number
/// in Graph replies).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct UnixTime(u64);

impl UnixTime {
    /// From seconds since the Unix epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// Seconds since the Unix epoch.
    pub const fn as_secs(self) -> u64 {
        self.0
    }

    /// As a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0)
    }

    /// From a `SystemTime`, rounding down; times before 1970 become 0.
    pub fn from_system_time(t: SystemTime) -> Self {
        Self(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    /// Parses a decimal seconds string.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        digits("unix time", s, 19)?;
        s.parse()
            .map(Self)
            .map_err(|_| IdError::new("unix time", s, "out of range"))
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_refuse() {
        assert!(WaCallId::parse("wacid.HBgLMTIxODU1NTI4MjgVAgARGCAyODRQIAFRoA==").is_ok());
        assert!(WaCallId::parse("").is_err());
        assert!(WaCallId::parse("wacid.has space").is_err());
        assert!(WaCallId::parse("x".repeat(513)).is_err());
        assert!(PhoneNumberId::parse("106540352242922").is_ok());
        assert!(PhoneNumberId::parse("10654a").is_err());
        assert_eq!(
            WaId::parse("14085551234").unwrap().to_e164().as_str(),
            "+14085551234"
        );
        assert_eq!(
            E164::parse("+14085551234").unwrap().to_wa_id().as_str(),
            "14085551234"
        );
        assert_eq!(E164::parse("14085551234").unwrap().as_str(), "+14085551234");
        assert!(E164::parse("+1234567890123456").is_err());
        assert!(E164::parse("+").is_err());
        assert_eq!(
            UnixTime::parse("1760681506").unwrap().as_secs(),
            1_760_681_506
        );
        assert!(UnixTime::parse("99999999999999999999").is_err());
        let err = WaId::parse("é".repeat(100)).unwrap_err();
        assert!(err.value.len() <= 64);
    }
}
