//! Identifier newtypes and Meta-shaped id minting (reference §0, §1.7).

use std::fmt;

use base64::Engine as _;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A WhatsApp call id: `wacid.` followed by base64 (reference §1.7). Opaque.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WaCallId(String);

/// The numeric Graph id of a business phone number (`PHONE_NUMBER_ID`, reference §0).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumberId(String);

/// A WhatsApp user id / phone number: digits only, country code included (reference §0).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WaId(String);

/// A WhatsApp message id (`wamid.…`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Wamid(String);

/// A WhatsApp Business Account id (`entry[].id` of webhooks, reference §1.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WabaId(String);

/// An identifier string did not have the expected shape.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {value:?}")]
pub struct IdError {
    /// Which identifier was being parsed.
    pub kind: &'static str,
    /// The offending value, cut to 64 bytes.
    pub value: String,
}

impl IdError {
    fn new(kind: &'static str, value: &str) -> Self {
        Self {
            kind,
            value: truncate(value, 64).to_owned(),
        }
    }
}

impl WaCallId {
    /// Accepts any string starting with `wacid.` of a sane length.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.starts_with("wacid.") && s.len() > 6 && s.len() <= 512 && s.is_ascii() {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::new("call id", s))
        }
    }

    /// Mints an id shaped like Meta's: `wacid.` + base64 of a Thrift-compact-like struct
    /// holding the user number, a 32-char uppercase hex token and the business number.
    pub fn mint(rng: &mut impl Rng, user: &WaId, business_digits: &str) -> Self {
        let mut token = [0u8; 16];
        rng.fill(&mut token);
        let hex_token = hex::encode_upper(token);
        let mut bytes = Vec::with_capacity(96);
        bytes.extend_from_slice(&[0x1c, 0x18]);
        push_short(&mut bytes, user.as_str());
        bytes.extend_from_slice(&[0x15, 0x02, 0x00, 0x12, 0x18]);
        push_short(&mut bytes, &hex_token);
        bytes.extend_from_slice(&[0x1c, 0x18]);
        push_short(&mut bytes, business_digits);
        bytes.extend_from_slice(&[0x15, 0x02, 0x00, 0x15, 0x0a, 0x00, 0x00]);
        Self(format!(
            "wacid.{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PhoneNumberId {
    /// Digits only, 1..=32 of them.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if is_digits(s, 32) {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::new("phone number id", s))
        }
    }

    /// The id as it appears in Graph paths.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl WaId {
    /// Digits only (5..=20), country code included, no `+`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if is_digits(s, 20) && s.len() >= 5 {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::new("wa_id", s))
        }
    }

    /// Normalises user input like `+1 (408) 555-1234` to digits, as Meta does for `to`.
    pub fn normalize(input: &str) -> Result<Self, IdError> {
        let digits: String = input.chars().filter(char::is_ascii_digit).collect();
        let allowed = input
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'));
        if !allowed {
            return Err(IdError::new("wa_id", input));
        }
        Self::parse(&digits).map_err(|_| IdError::new("wa_id", input))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Wamid {
    /// Mints a message id shaped like Meta's (`wamid.` + base64).
    pub fn mint(rng: &mut impl Rng, user: &WaId) -> Self {
        let mut token = [0u8; 18];
        rng.fill(&mut token);
        let mut bytes = Vec::with_capacity(48);
        bytes.extend_from_slice(&[0x1c, 0x18]);
        push_short(&mut bytes, user.as_str());
        bytes.extend_from_slice(&[0x15, 0x02, 0x00, 0x11, 0x18, 0x12]);
        bytes.extend_from_slice(&token);
        bytes.push(0x00);
        Self(format!(
            "wamid.{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl WabaId {
    /// Digits only.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if is_digits(s, 32) {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::new("waba id", s))
        }
    }

    /// The id as it appears in `entry[].id`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
display_as_str!(WaCallId, PhoneNumberId, WaId, Wamid, WabaId);

macro_rules! trusted {
    ($($t:ty),*) => {$(
        impl $t {
            /// For literals and values already checked by this crate.
            #[allow(dead_code)]
            pub(crate) fn trusted(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    )*};
}
trusted!(WaCallId, PhoneNumberId, WaId, Wamid, WabaId);

macro_rules! string_conv {
    ($($t:ty => $parse:expr),*) => {$(
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                $parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    )*};
}
string_conv!(
    WaCallId => WaCallId::parse,
    PhoneNumberId => PhoneNumberId::parse,
    WaId => WaId::parse,
    Wamid => |s: &str| -> Result<Wamid, IdError> {
        if s.starts_with("wamid.") && s.len() <= 512 { Ok(Wamid(s.to_owned())) } else { Err(IdError::new("wamid", s)) }
    },
    WabaId => WabaId::parse
);

/// Mints a Graph `fbtrace_id`-like token (27 alphanumeric characters).
pub(crate) fn mint_fbtrace(rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    (0..27)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

pub(crate) fn is_digits(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
}

/// Cuts a string to at most `max` bytes on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn push_short(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn minted_wacid_decodes_to_user_token_and_business() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let user = WaId::parse("917358580180").unwrap();
        let id = WaCallId::mint(&mut rng, &user, "15551441906");
        let b64 = id.as_str().strip_prefix("wacid.").unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("917358580180"));
        assert!(text.contains("15551441906"));
        assert!(WaCallId::parse(id.as_str()).is_ok());
        assert!(
            (60..=150).contains(&id.as_str().len()),
            "{}",
            id.as_str().len()
        );
    }

    #[test]
    fn wa_id_normalize_strips_formatting_but_rejects_letters() {
        assert_eq!(
            WaId::normalize("+1 (408) 555-1234").unwrap().as_str(),
            "14085551234"
        );
        assert!(WaId::normalize("1408abc5551234").is_err());
        assert!(WaId::parse("").is_err());
    }
}
