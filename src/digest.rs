//! Content digests: the only names a file has inside upcache.
//!
//! A URL is parsed into one of these before anything else happens, so no
//! client-supplied string ever reaches the filesystem.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} hex digits, got {got:?}")]
pub struct DigestParseError {
    expected: usize,
    got: String,
}

macro_rules! digest_type {
    ($name:ident, $len:expr, $label:expr) => {
        #[doc = concat!("A ", $label, " digest (", stringify!($len), " bytes).")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Number of hex digits in the textual form.
            pub const HEX_LEN: usize = $len * 2;

            /// Lowercase hex, the canonical textual form.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The last byte: WSUS puts a file in folder `/Content/{XX}/` by it.
            pub fn last_byte(&self) -> u8 {
                self.0[$len - 1]
            }

            /// Parses from raw digest bytes (e.g. a hasher's output).
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(bytes).ok().map(Self)
            }
        }

        impl FromStr for $name {
            type Err = DigestParseError;

            /// Accepts upper- or lowercase hex of exactly the right length.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; $len];
                if s.len() != Self::HEX_LEN || hex::decode_to_slice(s, &mut out).is_err() {
                    return Err(DigestParseError {
                        expected: Self::HEX_LEN,
                        got: s.chars().take(80).collect(),
                    });
                }
                Ok(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let hex = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                hex.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_type!(Sha1Digest, 20, "SHA-1");
digest_type!(Sha256Digest, 32, "SHA-256");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_either_case_and_prints_lowercase() {
        let d: Sha1Digest = "00112233445566778899AABBCCDDEEFF0011223A".parse().unwrap();
        assert_eq!(d.to_hex(), "00112233445566778899aabbccddeeff0011223a");
        assert_eq!(d.last_byte(), 0x3a);
    }

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        assert!("abc".parse::<Sha1Digest>().is_err());
        assert!("zz112233445566778899aabbccddeeff00112233"
            .parse::<Sha1Digest>()
            .is_err());
        assert!("../../etc/passwd".parse::<Sha256Digest>().is_err());
        let sha1_hex = "00112233445566778899aabbccddeeff00112233";
        assert!(sha1_hex.parse::<Sha256Digest>().is_err());
    }
}
