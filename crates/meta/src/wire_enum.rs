//! `wire_enum!`: string enums of Meta's wire values that keep unknown values instead of failing.

/// Declares an enum of known wire strings plus `Other(String)`. Parsing ignores ASCII case
/// (Meta writes `COMPLETED`, its docs write `Completed`); printing uses the canonical form.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            /// A value this version does not know, kept as sent.
            Other(String),
        }

        impl $name {
            /// Parses a wire value, ignoring ASCII case; unknown values become `Other`.
            pub fn from_wire(s: &str) -> Self {
                $(if s.eq_ignore_ascii_case($wire) { return Self::$variant; })+
                Self::Other(s.to_owned())
            }

            /// The canonical wire value.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(s) => s,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(Self::from_wire(&s))
            }
        }
    };
}

pub(crate) use wire_enum;
