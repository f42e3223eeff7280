//! Probe timing: how often a member is probed, how long one probe may take, and how many
//! results in a row change its verdict.
//!
//! Lives here: [`ProbeSettings`] and its validation.
//! Never here: reading lifeboat.toml (that is `lifeboat-config`, whose `[health]` table this
//! mirrors) or any I/O.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// How members are probed; the defaults mirror lifeboat-config's `[health]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSettings {
    /// Time between the starts of two probes of one member (250 ms). A probe that takes
    /// longer delays the next one: two probes of one member never overlap.
    pub interval: Duration,
    /// How long one probe may take, connect and query together (250 ms).
    pub timeout: Duration,
    /// Consecutive failures before a member counts as down (3).
    pub fall: u32,
    /// Consecutive successes before it counts as up again (2).
    pub rise: u32,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            interval: Duration::from_millis(250),
            timeout: Duration::from_millis(250),
            fall: 3,
            rise: 2,
        }
    }
}

impl ProbeSettings {
    /// Checks that every value can be used: non-zero interval and timeout, `fall` and
    /// `rise` at least 1.
    ///
    /// # Errors
    /// [`Error::InvalidSettings`] naming the first value that cannot.
    pub fn validate(&self) -> Result<(), Error> {
        let problem = if self.interval.is_zero() {
            Some("interval must be greater than zero")
        } else if self.timeout.is_zero() {
            Some("timeout must be greater than zero")
        } else if self.fall == 0 {
            Some("fall must be at least 1")
        } else if self.rise == 0 {
            Some("rise must be at least 1")
        } else {
            None
        };
        match problem {
            Some(reason) => Err(Error::InvalidSettings { reason }),
            None => Ok(()),
        }
    }

    /// The longest a member that stops answering can keep its `Up` verdict, assuming probes
    /// run on time: `fall` probes, each started at most one `interval` after the previous
    /// and failing after at most `timeout`.
    pub fn detection_bound(&self) -> Duration {
        self.interval.max(self.timeout) * self.fall + self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_mirror_the_config() {
        let s = ProbeSettings::default();
        assert_eq!(s.interval, Duration::from_millis(250));
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!((s.fall, s.rise), (3, 2));
        assert!(s.validate().is_ok());
        assert_eq!(s.detection_bound(), Duration::from_millis(1000));
    }

    #[test]
    fn zero_values_are_refused() {
        let d = ProbeSettings::default();
        for bad in [
            ProbeSettings {
                interval: Duration::ZERO,
                ..d
            },
            ProbeSettings {
                timeout: Duration::ZERO,
                ..d
            },
            ProbeSettings { fall: 0, ..d },
            ProbeSettings { rise: 0, ..d },
        ] {
            assert!(matches!(bad.validate(), Err(Error::InvalidSettings { .. })));
        }
    }
}
