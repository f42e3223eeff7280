//! One probe of one target: [`Prober`] runs a PostgreSQL, TCP or command check within the
//! timeout and turns the outcome into an [`Observation`].
//!
//! Lives here: the TCP and command checks, the deadline, masking the password in error
//! text, and the PostgreSQL connection kept between probes (its query is in `pg`).
//! Never here: scheduling (that is `monitor`), hysteresis (`verdict`), or acting on a
//! server — a probe only reads.

use std::process::Stdio;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use crate::pg::{self, PgConn};
use crate::{Error, Observation, PgState, ProbeError, Target};

/// The longest error text an [`Observation`] carries.
const MAX_ERROR_LEN: usize = 240;

/// Probes one target, one probe at a time (`probe` takes `&mut self`), keeping a
/// PostgreSQL connection open between probes.
pub struct Prober {
    target: Target,
    timeout: Duration,
    conn: Option<PgConn>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Prober {
    /// A prober for `target` whose probes each take at most `timeout`.
    ///
    /// # Errors
    /// [`Error::InvalidTarget`] when the target cannot be probed (see
    /// [`Target::validate`]); [`Error::InvalidSettings`] for a zero timeout.
    pub fn new(target: Target, timeout: Duration) -> Result<Prober, Error> {
        target.validate()?;
        if timeout.is_zero() {
            return Err(Error::InvalidSettings {
                reason: "timeout must be greater than zero",
            });
        }
        Ok(Prober {
            target,
            timeout,
            conn: None,
        })
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Probes once. Returns within the timeout (plus scheduling delay), whatever the
    /// target does; a failure is an `Observation` with `ok = false` and a short error.
    ///
    /// A PostgreSQL probe reuses the connection of the previous probe; when that broke or
    /// timed out, this probe connects afresh (connect and query share one deadline).
    ///
    /// # Cancellation
    /// Dropping the future drops any half-made connection or running command (the
    /// command's process group is killed), leaving nothing behind.
    pub async fn probe(&mut self) -> Observation {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let result: Result<Option<PgState>, ProbeError> = match &self.target {
            Target::Postgres {
                host,
                port,
                user,
                dbname,
                password,
            } => pg::probe(
                &mut self.conn,
                host,
                *port,
                user,
                dbname,
                password.as_deref(),
                self.timeout,
                deadline,
            )
            .await
            .map(Some),
            Target::Tcp { host, port } => tcp(host, *port, self.timeout, deadline)
                .await
                .map(|()| None),
            Target::Command { argv } => command(argv, self.timeout, deadline).await.map(|()| None),
        };
        let latency = start.elapsed();
        match result {
            Ok(pg) => Observation {
                at: start.into_std(),
                latency,
                ok: true,
                error: None,
                pg,
            },
            Err(e) => Observation {
                at: start.into_std(),
                latency,
                ok: false,
                error: Some(short_error(&e, self.target.secret())),
                pg: None,
            },
        }
    }
}

/// The error's text, with `secret` masked, cut to [`MAX_ERROR_LEN`] characters.
fn short_error(e: &ProbeError, secret: Option<&str>) -> String {
    let mut text = e.to_string().replace(['\n', '\r'], " ");
    if let Some(s) = secret {
        text = text.replace(s, "***");
    }
    if text.chars().count() > MAX_ERROR_LEN {
        text = text.chars().take(MAX_ERROR_LEN - 1).collect();
        text.push('…');
    }
    text
}

/// Up when a TCP connection is accepted before the deadline.
async fn tcp(
    host: &str,
    port: u16,
    timeout: Duration,
    deadline: Instant,
) -> Result<(), ProbeError> {
    match timeout_at(deadline, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(ProbeError::Connect {
            detail: e.to_string(),
        }),
        Err(_) => Err(ProbeError::Timeout {
            stage: "connecting",
            after: timeout,
        }),
    }
}

/// Up when the command exits 0 before the deadline; at the deadline its process group is
/// killed.
async fn command(argv: &[String], timeout: Duration, deadline: Instant) -> Result<(), ProbeError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ProbeError::Spawn {
            program: String::new(),
            detail: "the command is empty".into(),
        });
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ProbeError::Spawn {
            program: program.clone(),
            detail: e.to_string(),
        })?;
    // The child leads its own process group (pgid = pid): a timeout kills the group, so
    // grandchildren (`sh -c '…'`) go too.
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    let mut killer = GroupKiller(group);
    match timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => {
            // The leader has been reaped, so its pid (the group id) may be reused: disarm.
            // Processes it left running in the background are its own business.
            killer.0 = None;
            if status.success() {
                Ok(())
            } else {
                Err(ProbeError::Exit {
                    program: program.clone(),
                    status: describe_status(status),
                })
            }
        }
        Ok(Err(e)) => Err(ProbeError::Spawn {
            program: program.clone(),
            detail: format!("wait: {e}"),
        }),
        Err(_) => Err(ProbeError::Timeout {
            stage: "running the command",
            after: timeout,
        }),
    }
    // On a timeout or a dropped future, `killer` drops here while the leader is not yet
    // reaped (its pid still names the group), then `child`: kill_on_drop reaps it in the
    // background.
}

/// Kills a process group with SIGKILL when dropped, unless disarmed (`.0 = None`).
struct GroupKiller(Option<rustix::process::Pid>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH (the group is already empty) is the normal case after a clean exit.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => format!("ended with {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_short_single_lines_without_the_password() {
        let e = ProbeError::Connect {
            detail: format!(
                "FATAL: bad password hunter2\nsecond line {}",
                "x".repeat(500)
            ),
        };
        let text = short_error(&e, Some("hunter2"));
        assert!(!text.contains("hunter2"));
        assert!(text.contains("***"));
        assert!(!text.contains('\n'));
        assert_eq!(text.chars().count(), MAX_ERROR_LEN);
    }
}
