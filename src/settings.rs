//! What every module's settings share: the units keys are written in
//! (seconds, milliseconds, sizes, networks, URLs), read and written by
//! serde, and the error of a value that types cannot catch.
//!
//! Each module owns a settings struct (`#[serde(default)]`, documented
//! per key); `config` merges the file, the environment and the flags into
//! them, and names the key of any value these helpers refuse.

use serde::{Deserialize, Deserializer, Serializer};

/// A value that parses but makes no sense (or settings that must go
/// together), named by its key.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct Invalid {
    pub setting: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(setting: &'static str, message: impl Into<String>) -> Invalid {
        Invalid {
            setting,
            message: message.into(),
        }
    }
}

/// `1073741824`, `1GiB`, `500 GB`, `2TiB`: binary (KiB..TiB) and decimal
/// (KB..TB) units, case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 500GiB or 1073741824)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A size as written: bytes, or text with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

impl SizeText {
    fn bytes<E: serde::de::Error>(self) -> Result<u64, E> {
        match self {
            SizeText::Bytes(n) => Ok(n),
            SizeText::Text(t) => parse_size(&t).map_err(E::custom),
        }
    }
}

/// Durations written in whole seconds (`*_secs` keys).
pub mod secs {
    use super::*;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match u64::deserialize(d)? {
            0 => Err(serde::de::Error::custom("must be at least one second")),
            n => Ok(Duration::from_secs(n)),
        }
    }
}

/// Durations written in milliseconds (`*_ms` keys).
pub mod millis {
    use super::*;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Sizes: bytes, or `"500GiB"`.
pub mod size {
    use super::*;

    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&show_size(*n))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        SizeText::deserialize(d)?.bytes()
    }
}

/// Sizes that may be unset (no limit).
pub mod opt_size {
    use super::*;

    pub fn serialize<S: Serializer>(n: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match n {
            Some(n) => s.serialize_some(&show_size(*n)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<SizeText>::deserialize(d)?
            .map(SizeText::bytes)
            .transpose()
    }
}

/// `1073741824` as `"1GiB"`: the largest binary unit that divides it.
pub fn show_size(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n != 0 && n.trailing_zeros() >= shift {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// Addresses (`10.0.0.5`) and networks (`10.0.0.0/24`, `fd00::/8`).
pub mod networks {
    use super::*;
    use ipnet::IpNet;

    pub fn serialize<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(nets.iter().map(|n| n.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|n| parse(n).map_err(serde::de::Error::custom))
            .collect()
    }

    pub fn parse(n: &str) -> Result<IpNet, String> {
        let n = n.trim();
        n.parse::<IpNet>()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                format!("{n:?} is not an address or network (e.g. \"10.0.0.5\" or \"10.0.0.0/24\")")
            })
    }
}

/// An http(s) URL with a host; empty or unset is none.
pub mod opt_http_url {
    use super::*;

    pub fn serialize<S: Serializer>(url: &Option<reqwest::Url>, s: S) -> Result<S::Ok, S::Error> {
        match url {
            Some(url) => s.serialize_some(url.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<reqwest::Url>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) if !s.trim().is_empty() => {
                parse(&s).map(Some).map_err(serde::de::Error::custom)
            }
            _ => Ok(None),
        }
    }

    pub fn parse(s: &str) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{s:?} is not an http(s) URL with a host"));
        }
        Ok(url)
    }
}

/// A secret or name where an empty value means unset.
pub mod nonempty {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.filter(|v| !v.trim().is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("500GiB"), Ok(500 << 30));
        assert_eq!(parse_size("2 tb"), Ok(2_000_000_000_000));
        assert!(parse_size("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes_are_shown_in_the_largest_unit_that_divides_them() {
        assert_eq!(show_size(1 << 30), "1GiB");
        assert_eq!(show_size(128 << 20), "128MiB");
        assert_eq!(show_size(1000), "1000");
        assert_eq!(show_size(0), "0");
        for n in [1 << 30, 128 << 20, 1000, 0, 64 << 10] {
            assert_eq!(parse_size(&show_size(n)), Ok(n));
        }
    }
}
