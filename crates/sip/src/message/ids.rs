//! Identifier newtypes: [`CallId`], [`Branch`], [`Tag`].

use std::fmt;

use rand::RngCore;

/// The RFC 3261 §8.1.1.7 magic cookie every compliant branch starts with.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

fn random_token(rng: &mut (impl RngCore + ?Sized), len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| {
            let i = (rng.next_u32() as usize) % ALPHABET.len();
            char::from(ALPHABET.get(i).copied().unwrap_or(b'x'))
        })
        .collect()
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value taken from a message or configuration.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The value as it appears on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_newtype!(
    /// A `Call-ID` header value (RFC 3261 §8.1.1.4). Compared byte for byte.
    CallId
);
id_newtype!(
    /// A Via `branch` parameter: the transaction identifier (RFC 3261 §8.1.1.7).
    Branch
);
id_newtype!(
    /// A `From`/`To` `tag` parameter identifying one side of a dialog (RFC 3261 §19.3).
    Tag
);

impl CallId {
    /// A fresh Call-ID: 24 random characters, `@host` appended when `host` is given.
    pub fn generate(rng: &mut (impl RngCore + ?Sized), host: Option<&str>) -> Self {
        let mut s = random_token(rng, 24);
        if let Some(h) = host {
            s.push('@');
            s.push_str(h);
        }
        Self(s)
    }
}

impl Branch {
    /// A fresh RFC 3261 branch: the magic cookie followed by 20 random characters.
    pub fn generate(rng: &mut (impl RngCore + ?Sized)) -> Self {
        Self(format!("{MAGIC_COOKIE}{}", random_token(rng, 20)))
    }

    /// Whether the branch starts with the RFC 3261 magic cookie, so that it can be used
    /// for transaction matching (§17.2.3). A bare cookie does not count (RFC 4475
    /// §3.1.3.1).
    pub fn is_rfc3261(&self) -> bool {
        self.0.len() > MAGIC_COOKIE.len() && self.0.starts_with(MAGIC_COOKIE)
    }
}

impl Tag {
    /// A fresh tag of 16 random characters (RFC 3261 §19.3 asks for 32 bits of
    /// randomness; this carries about 82).
    pub fn generate(rng: &mut (impl RngCore + ?Sized)) -> Self {
        Self(random_token(rng, 16))
    }
}
