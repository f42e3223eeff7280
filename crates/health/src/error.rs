//! Errors: [`Error`] for setting up probes and the monitor, [`ProbeError`] for why one probe
//! failed.
//!
//! Lives here: both enums and the text they print.
//! Never here: a password or any other secret in a message — a probe's error text ends up
//! in logs, the API and alerts. Messages from servers and libraries are passed through
//! [`ProbeError`] only after the target's password is masked (see `probe`).

use std::time::Duration;

/// Why probes or the monitor could not be set up. None of these is transient: the input
/// must change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`ProbeSettings`](crate::ProbeSettings) value cannot be used.
    #[error("invalid health settings: {reason}")]
    InvalidSettings {
        /// What is wrong and what is allowed.
        reason: &'static str,
    },
    /// A target cannot be probed as given.
    #[error("invalid health target {target}: {reason}")]
    InvalidTarget {
        /// The target, without secrets.
        target: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two members share a name.
    #[error("member {member} is listed twice; member names must be unique")]
    DuplicateMember {
        /// The repeated name.
        member: String,
    },
    /// [`Monitor::start`](crate::Monitor::start) was called outside a tokio runtime.
    #[error("the health monitor needs a tokio runtime: start it from async code")]
    NoRuntime,
}

impl Error {
    /// Whether retrying the same call can help (never: every variant is about the input).
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Why one probe failed. Its text is short, names the stage that failed and never holds a
/// password; [`Observation::error`](crate::Observation::error) carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The probe did not finish within the timeout.
    #[error("timed out after {} ms while {stage}", after.as_millis())]
    Timeout {
        /// What the probe was doing: `connecting`, `querying`, `running the command`.
        stage: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The connection could not be made (refused, unreachable, authentication failed).
    #[error("connect: {detail}")]
    Connect {
        /// The cause, as the library or server put it (password masked).
        detail: String,
    },
    /// The connection was made but the health query failed.
    #[error("query: {detail}")]
    Query {
        /// The cause.
        detail: String,
    },
    /// The server answered something the probe cannot read.
    #[error("unexpected answer: {detail}")]
    Answer {
        /// What was wrong with it.
        detail: String,
    },
    /// The command could not be started.
    #[error("start {program}: {detail}")]
    Spawn {
        /// The program (argv\[0\]).
        program: String,
        /// The OS error.
        detail: String,
    },
    /// The command ran and failed.
    #[error("{program} {status}")]
    Exit {
        /// The program (argv\[0\]).
        program: String,
        /// `exited with status 1`, `killed by signal 9`.
        status: String,
    },
}
