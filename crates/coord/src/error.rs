//! The coordinator's one error type: each variant names the object and, where there is
//! one, the fix; [`Error::is_transient`] says whether retrying can help.
//! Never here: logging (errors are logged where handled) or retry loops.

use std::time::Duration;

/// Why a coordinator call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The compare-and-swap of [`crate::Coordinator::promote`] lost: the generation moved on.
    #[error(
        "generation {expected} is stale: the coordinator is at generation {found} \
         (another promotion came first); re-read the state, never retry"
    )]
    Stale {
        /// The generation the caller acted on.
        expected: u64,
        /// The generation stored.
        found: u64,
    },
    /// The leader lease expired, was released or was taken by another member.
    #[error(
        "leader lease {id} of {member} is gone ({why}); stop acting as leader and acquire anew"
    )]
    LeaseLost {
        /// The member that held it.
        member: String,
        /// The lease id.
        id: i64,
        /// What the backend said.
        why: String,
    },
    /// [`crate::Coordinator::approve`] found no failover waiting for approval.
    #[error("no failover waits for approval in cluster {cluster}")]
    NothingToApprove {
        /// The cluster.
        cluster: String,
    },
    /// A cluster or member name that cannot be a key.
    #[error("{what} name {name:?} is not allowed: use 1 to 63 letters, digits, '-', '_' or '.'")]
    InvalidName {
        /// `cluster` or `member`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// A lease of one backend was handed to the other.
    #[error("a {lease} lease was given to the {backend} coordinator; it cannot be renewed there")]
    WrongBackend {
        /// The lease's backend.
        lease: &'static str,
        /// The coordinator's backend.
        backend: &'static str,
    },
    /// etcd did not answer within the call timeout.
    #[error(
        "etcd at {endpoints} did not answer {op} within {} ms: is it running, with a \
         quorum of members? check `url` in [coordinator]",
        timeout.as_millis()
    )]
    EtcdTimeout {
        /// The endpoints tried.
        endpoints: String,
        /// The operation (`read state`, `promote`, `renew leader lease`…).
        op: &'static str,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// etcd answered with an error (or the connection failed).
    #[error("etcd at {endpoints} failed to {op}: {source}{hint}")]
    Etcd {
        /// The endpoints tried.
        endpoints: String,
        /// The operation.
        op: &'static str,
        /// A hint for the fix, with its leading separator, or empty.
        hint: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// A SQLite call on the embedded state file failed.
    #[error("state file {path}: {op}: {source}{hint}")]
    Sqlite {
        /// The state file.
        path: String,
        /// The operation.
        op: &'static str,
        /// A hint for the fix, with its leading separator, or empty.
        hint: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored value is not what this version of Lifeboat writes.
    #[error("{location}: stored value {key} is not understood ({detail}); was it written by another program?")]
    Corrupt {
        /// The state file or the etcd endpoints.
        location: String,
        /// The key or column.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// The blocking task running a SQLite call died (a panic in SQLite's wrapper).
    #[error("state file {path}: the task running {op} died: {detail}")]
    TaskFailed {
        /// The state file.
        path: String,
        /// The operation.
        op: &'static str,
        /// The join error.
        detail: String,
    },
    /// Other writers changed a key between every read and write of a read-modify-write.
    #[error("{what} changed under {attempts} attempts in a row to update it; try again")]
    Contended {
        /// The value being updated.
        what: &'static str,
        /// How many compare-and-swaps were tried.
        attempts: usize,
    },
    /// The coordinator behind a [`crate::Changes`] is gone.
    #[error("the coordinator was closed; no more change notifications")]
    Closed,
}

impl Error {
    /// Whether the same call may succeed later (a timeout, an unreachable or leaderless
    /// etcd, a busy state file). [`Error::Stale`] and [`Error::LeaseLost`] are answers, not
    /// transient failures: never retry them.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::EtcdTimeout { .. } | Error::Contended { .. } => true,
            Error::Etcd { source, .. } => match source {
                etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
                etcd_client::Error::GRpcStatus(s) => matches!(
                    s.code() as i32,
                    GRPC_UNKNOWN | GRPC_DEADLINE_EXCEEDED | GRPC_UNAVAILABLE
                ),
                etcd_client::Error::LeaseKeepAliveError(_) | etcd_client::Error::WatchError(_) => {
                    true
                }
                _ => false,
            },
            Error::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

// gRPC status codes (grpc/doc/statuscodes.md), without a direct dependency on tonic.
const GRPC_UNKNOWN: i32 = 2;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

/// Result of a coordinator call.
pub type Result<T> = std::result::Result<T, Error>;

/// Refuses names that cannot be a path segment of an etcd key (or would read badly in
/// logs): 1 to 63 of `[A-Za-z0-9._-]`.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["shop", "db-1", "pg_2.example"] {
            assert!(check_name("member", good).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", ".", "..", "a/b", "a b", "ä", long.as_str()] {
            assert!(check_name("member", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stale_is_an_answer_not_a_transient_failure() {
        let e = Error::Stale {
            expected: 3,
            found: 4,
        };
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "generation 3 is stale: the coordinator is at generation 4 (another promotion \
             came first); re-read the state, never retry"
        );
        let t = Error::EtcdTimeout {
            endpoints: "127.0.0.1:2379".into(),
            op: "promote",
            timeout: Duration::from_millis(500),
        };
        assert!(t.is_transient());
        assert_eq!(
            t.to_string(),
            "etcd at 127.0.0.1:2379 did not answer promote within 500 ms: is it running, with \
             a quorum of members? check `url` in [coordinator]"
        );
    }
}
