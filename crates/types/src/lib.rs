//! Shared vocabulary of Lifeboat: identifiers, byte sizes, durations and secrets.
//!
//! Lives here: 32-byte content identifiers (`BlobId`, `PackId`, `SnapshotId`, …) made by one
//! macro, `ByteSize`, `HumanDuration` (the one duration syntax of flags and config), and
//! `Secret<T>`, which never prints its content.
//! Never here: I/O, hashing or anything that depends on the repository format; this crate has
//! no heavy dependencies so that every other crate can use it.

mod duration;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use duration::{
    parse_duration, parse_duration_between, DurationError, HumanDuration, DURATION_EXAMPLES,
    MAX_DURATION,
};

/// Why a hexadecimal identifier could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The text is not 64 hexadecimal digits.
    #[error("{text:?} is not an id: expected 64 hexadecimal digits")]
    Malformed {
        /// The text that was given.
        text: String,
    },
}

/// Defines a 32-byte identifier newtype printed as 64 lowercase hex digits.
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The id as 64 lowercase hexadecimal digits.
            pub fn to_hex(&self) -> String {
                $crate::hex_encode(&self.0)
            }
            /// The first 8 hex digits, the short form shown to people.
            pub fn short(&self) -> String {
                let mut s = self.to_hex();
                s.truncate(8);
                s
            }
            /// Parses 64 hexadecimal digits.
            ///
            /// # Errors
            /// [`IdError::Malformed`] when the text is not 64 hex digits.
            pub fn from_hex(text: &str) -> Result<Self, $crate::IdError> {
                $crate::hex_decode32(text).map($name)
            }
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_hex(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::deserialize_id(d).map($name)
            }
        }
    };
}

#[doc(hidden)]
pub fn hex_encode(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

#[doc(hidden)]
pub fn hex_decode32(text: &str) -> Result<[u8; 32], IdError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| IdError::Malformed {
        text: text.chars().take(80).collect(),
    })?;
    Ok(out)
}

#[doc(hidden)]
pub fn deserialize_id<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = [u8; 32];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("32 bytes or 64 hex digits")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            hex_decode32(v).map_err(E::custom)
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            v.try_into()
                .map_err(|_| E::custom(format!("id has {} bytes, expected 32", v.len())))
        }
    }
    if d.is_human_readable() {
        d.deserialize_str(V)
    } else {
        d.deserialize_bytes(V)
    }
}

define_id!(
    /// Identifies a blob (a chunk of file data or a tree): keyed BLAKE3 of its plaintext.
    BlobId
);
define_id!(
    /// Identifies a pack file: BLAKE3 of the file's bytes, which is also its name.
    PackId
);
define_id!(
    /// Identifies a snapshot file: BLAKE3 of the file's bytes.
    SnapshotId
);
define_id!(
    /// Identifies an index file: BLAKE3 of the file's bytes.
    IndexId
);
define_id!(
    /// Identifies a key file: BLAKE3 of the file's bytes.
    KeyId
);

/// A position in a PostgreSQL write-ahead log, printed the way PostgreSQL does (`0/16B3748`:
/// the high and low 32 bits in hex). Serialized as that text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The zero position (`0/0`), which PostgreSQL uses for "invalid".
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// Why a text is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a WAL position: write it as PostgreSQL prints one, e.g. 0/16B3748")]
pub struct LsnError {
    /// The text given.
    pub text: String,
}

impl FromStr for Lsn {
    type Err = LsnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || LsnError {
            text: s.chars().take(80).collect(),
        };
        let (hi, lo) = s.trim().split_once('/').ok_or_else(err)?;
        let ok =
            |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok(hi) || !ok(lo) {
            return Err(err());
        }
        let hi = u64::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((hi << 32) | lo))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A number of bytes, printed in binary units (`1.5 MiB`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut v = self.0 as f64;
        let mut unit = 0;
        while v >= 1024.0 && unit + 1 < UNITS.len() {
            v /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.2} {}", UNITS[unit])
        }
    }
}

/// Why a size could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a size: use a number with an optional unit B, KiB, MiB, GiB (e.g. \"16MiB\")"
)]
pub struct ByteSizeError {
    text: String,
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ByteSizeError {
            text: s.chars().take(80).collect(),
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| err())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" | "kb" => 1 << 10,
            "m" | "mib" | "mb" => 1 << 20,
            "g" | "gib" | "gb" => 1 << 30,
            "t" | "tib" | "tb" => 1 << 40,
            _ => return Err(err()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(err)
    }
}

/// Why a percentage could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a percentage: give a number from 0 to 100, e.g. \"10%\"")]
pub struct PercentError {
    text: String,
}

/// Parses a percentage from 0 to 100 as people write it: `10%`, `2.5%`, `10` (one optional
/// `%` sign; no NaN, infinity or exponent).
///
/// # Errors
/// [`PercentError`] for anything else.
pub fn parse_percent(s: &str) -> Result<f64, PercentError> {
    let err = || PercentError {
        text: s.chars().take(80).collect(),
    };
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim_end();
    // Digits with at most one '.', so "inf", "NaN" and "1e2" never reach `f64::from_str`.
    let plain = !t.is_empty()
        && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && t.bytes().filter(|b| *b == b'.').count() <= 1
        && t != ".";
    if !plain {
        return Err(err());
    }
    let v: f64 = t.parse().map_err(|_| err())?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(err())
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(ByteSize)
    }
}

/// A secret value (password, key, token): `Debug` and `Display` print `***`, and the memory
/// is wiped when it is dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T: zeroize::Zeroize>(T);

impl<T: zeroize::Zeroize> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// Gives access to the secret; keep the borrow short and never log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: zeroize::Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: zeroize::Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T: zeroize::Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hex_roundtrip_and_rejects_garbage() {
        let id = BlobId([0xab; 32]);
        let hex = id.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(BlobId::from_hex(&hex), Ok(id));
        assert!(BlobId::from_hex("xyz").is_err());
        assert!(BlobId::from_hex(&hex[..62]).is_err());
        assert_eq!(id.short(), "abababab");
    }

    #[test]
    fn id_serde_json_is_hex() {
        let id = PackId([1; 32]);
        let j = serde_json::to_string(&id).unwrap();
        assert_eq!(j, format!("\"{}\"", id.to_hex()));
        let back: PackId = serde_json::from_str(&j).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn byte_size_parses_and_prints() {
        assert_eq!("16MiB".parse::<ByteSize>(), Ok(ByteSize(16 << 20)));
        assert_eq!("512".parse::<ByteSize>(), Ok(ByteSize(512)));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(1536).to_string(), "1.50 KiB");
        assert_eq!(ByteSize(12).to_string(), "12 B");
    }

    #[test]
    fn lsn_prints_and_parses_like_postgres() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l, Lsn(0x16_B374_D848));
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn(0x0300_0028).to_string(), "0/3000028");
        assert_eq!("0/0".parse::<Lsn>(), Ok(Lsn::ZERO));
        for bad in ["", "0", "/1", "1/", "g/1", "123456789/0", "0/1/2"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
        let j = serde_json::to_string(&l).unwrap();
        assert_eq!(j, "\"16/B374D848\"");
        assert_eq!(serde_json::from_str::<Lsn>(&j).unwrap(), l);
    }

    #[test]
    fn percentages_parse_and_refuse_what_is_not_one() {
        assert_eq!(parse_percent("10%"), Ok(10.0));
        assert_eq!(parse_percent(" 2.5 % "), Ok(2.5));
        assert_eq!(parse_percent("100"), Ok(100.0));
        for bad in [
            "", "%", "10%%", "NaN%", "inf", "1e2", "-1%", "100.5%", ".", "1.2.3", "é%",
        ] {
            assert!(parse_percent(bad).is_err(), "{bad:?} parsed");
        }
    }

    proptest::proptest! {
        /// Issue 9 item 8: no user-supplied size, LSN or percentage panics, whatever it is.
        #[test]
        fn user_input_parsers_never_panic(
            any_text in "\\PC{0,40}",
            near_miss in "[0-9a-fA-FkKmMiIbBtT/ .%é+-]{0,16}",
        ) {
            for s in [&any_text, &near_miss] {
                let _ = s.parse::<ByteSize>();
                let _ = s.parse::<Lsn>();
                let _ = parse_percent(s);
                let _ = BlobId::from_hex(s);
            }
        }

        #[test]
        fn lsn_text_roundtrips(v in proptest::prelude::any::<u64>()) {
            proptest::prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>(), Ok(Lsn(v)));
            proptest::prop_assert_eq!(Lsn(v).to_string().to_lowercase().parse::<Lsn>(), Ok(Lsn(v)));
        }

        #[test]
        fn byte_sizes_roundtrip_in_every_unit(n in 0u64..(1 << 24), unit in 0usize..5) {
            let (suffix, mult) = [("B", 1u64), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40)][unit];
            proptest::prop_assert_eq!(format!("{n}{suffix}").parse::<ByteSize>(), Ok(ByteSize(n * mult)));
            proptest::prop_assert_eq!(format!(" {n} {} ", suffix.to_lowercase()).parse::<ByteSize>(), Ok(ByteSize(n * mult)));
        }

        #[test]
        fn percentages_roundtrip(tenths in 0u32..=1000) {
            let v = f64::from(tenths) / 10.0;
            proptest::prop_assert_eq!(parse_percent(&format!("{v}%")), Ok(v));
        }
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
