//! Durations as people write them: `250ms`, `30s`, `1.5s`, `1h`, `7d`, `1h 30m`.
//!
//! Lives here: the one duration syntax of the command line and of `lifeboat.toml`
//! ([`HumanDuration`], [`parse_duration`], [`DurationError`]); parsing is `humantime`'s
//! (docs/decisions/0027-durations-and-errors.md), bounds and messages are ours.
//! Never here: clap or TOML specifics; the callers wrap the error in their own format.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration any flag or config key takes (a week): longer ones are typos, such
/// as `5M` (months) written for `5m` (minutes).
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 86_400);

/// What a duration looks like, for messages.
pub const DURATION_EXAMPLES: &str = "250ms, 30s, 1h or 7d";

/// Why a text is not an acceptable duration. The message names the text; [`Self::fix`]
/// says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// A plain number: the unit is missing.
    #[error("{text:?} has no unit")]
    NoUnit {
        /// The text that was given.
        text: String,
    },
    /// Not a duration at all.
    #[error("{text:?} is not a duration: {reason}")]
    Malformed {
        /// The text that was given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A duration, but shorter or longer than allowed.
    #[error("{text:?} is out of range: it must be between {} and {}", HumanDuration(*.min), HumanDuration(*.max))]
    OutOfRange {
        /// The text that was given.
        text: String,
        /// The shortest allowed.
        min: Duration,
        /// The longest allowed.
        max: Duration,
    },
}

impl DurationError {
    /// What to write instead, e.g. `write a number and a unit: 250ms, 30s, 1h or 7d`.
    pub fn fix(&self) -> String {
        match self {
            DurationError::NoUnit { text } => {
                format!(
                    "add a unit, e.g. \"{}s\" or \"{}ms\"",
                    text.trim(),
                    text.trim()
                )
            }
            DurationError::Malformed { .. } => {
                format!("write a number and a unit, e.g. {DURATION_EXAMPLES}")
            }
            DurationError::OutOfRange { min, max, .. } => format!(
                "write a duration from {} to {}",
                HumanDuration(*min),
                HumanDuration(*max)
            ),
        }
    }
}

/// Parses a duration between zero and [`MAX_DURATION`]: a number (fractions allowed) and
/// a unit (`ms`, `s`, `m`, `h`, `d`, `w`; long forms such as `sec`, `min`, `hours`, `days`
/// too), several of them summed (`1h 30m`). Never panics.
///
/// # Errors
/// [`DurationError::NoUnit`] for a plain number, [`DurationError::Malformed`] for other
/// text, [`DurationError::OutOfRange`] above a week.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    parse_duration_between(text, Duration::ZERO, MAX_DURATION)
}

/// Parses a duration (as [`parse_duration`]) and checks that it lies in `min..=max`.
///
/// # Errors
/// As [`parse_duration`]; [`DurationError::OutOfRange`] outside `min..=max`.
pub fn parse_duration_between(
    text: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let malformed = |reason: String| DurationError::Malformed {
        text: text.to_string(),
        reason,
    };
    if trimmed.bytes().any(|b| b.is_ascii_digit())
        && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return Err(DurationError::NoUnit {
            text: text.to_string(),
        });
    }
    let d = humantime::parse_duration(trimmed).map_err(|e| match e {
        humantime::DurationError::Empty => malformed("it is empty".into()),
        humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            malformed("a number has no unit".into())
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            malformed(format!("unknown unit {unit:?}"))
        }
        humantime::DurationError::NumberOverflow => DurationError::OutOfRange {
            text: text.to_string(),
            min,
            max,
        },
        _ => malformed("expected a number followed by a unit".into()),
    })?;
    if d < min || d > max {
        return Err(DurationError::OutOfRange {
            text: text.to_string(),
            min,
            max,
        });
    }
    Ok(d)
}

/// A [`Duration`] that reads and prints as people write it (`250ms`, `1h 30m`): the type of
/// every time-valued flag and config key. Serialises as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        // humantime writes "1h 30m"; without the spaces it pastes into a shell as one word.
        let text = humantime::format_duration(self.0).to_string();
        f.write_str(&text.replace(' ', ""))
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, DurationError> {
        parse_duration(s).map(HumanDuration)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e: DurationError| serde::de::Error::custom(format!("{e} (fix: {})", e.fix())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_syntax_for_every_duration() {
        for (text, want) in [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("1h 30m", Duration::from_secs(5400)),
            (" 0s ", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn mistakes_are_named_with_a_fix() {
        assert!(matches!(
            parse_duration("120"),
            Err(DurationError::NoUnit { .. })
        ));
        let e = parse_duration("5x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"5x\" is not a duration: unknown unit \"x\""
        );
        assert!(e.fix().contains("250ms"));
        for bad in [
            "",
            "s",
            "-1s",
            "1e9s",
            "NaNs",
            "1h30",
            "é",
            "1és",
            "8d",
            "5M",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let e = parse_duration_between("5ms", Duration::from_millis(10), MAX_DURATION).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"5ms\" is out of range: it must be between 10ms and 7days"
        );
    }

    #[test]
    fn prints_as_it_parses() {
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(5400),
            Duration::from_secs(120),
            Duration::ZERO,
        ] {
            let text = HumanDuration(d).to_string();
            assert_eq!(parse_duration(&text), Ok(d), "{text}");
        }
        assert_eq!(
            HumanDuration(Duration::from_secs(5400)).to_string(),
            "1h30m"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,24}", near in "[0-9. ]{0,6}(ms|s|m|h|d|w|x|M|y)?") {
            let _ = parse_duration(&text);
            let _ = parse_duration(&near);
        }

        #[test]
        fn roundtrips(ms in 0u64..604_800_000) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(d));
            proptest::prop_assert_eq!(parse_duration(&HumanDuration(d).to_string()), Ok(d));
        }
    }
}
