//! What a probe checks: a PostgreSQL server, a TCP port, or a command.
//!
//! Lives here: [`Target`], its validation and its secret-free `Debug`/`Display`.
//! Never here: printing a password (`Debug` masks it; `Serialize` leaves it out) or
//! resolving where a password comes from (`lifeboat-config` does that).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// One thing to probe.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Target {
    /// A PostgreSQL server: up when it accepts a connection and answers the health query
    /// (role, WAL positions, replication; see [`PgState`](crate::PgState)).
    Postgres {
        /// Host name, IP address, or a Unix socket directory (starting with `/`).
        host: String,
        /// TCP port (or the socket's port number).
        port: u16,
        /// Database user. Needs no privileges; with `pg_monitor` (or as superuser) the
        /// probe also sees the replication details that PostgreSQL hides from others.
        user: String,
        /// Database to connect to.
        dbname: String,
        /// Password, when the server asks for one. Never printed or serialized.
        #[serde(default, skip_serializing)]
        password: Option<String>,
    },
    /// A TCP port: up when a connection is accepted.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A command: up when it exits with status 0 before the timeout. It runs without a
    /// shell, in its own process group, with stdin, stdout and stderr closed; at the timeout
    /// the whole group is killed with SIGKILL.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
    },
}

impl Target {
    /// Checks that the target can be probed at all: a host and a non-zero port, a user and a
    /// database, a non-empty argv.
    ///
    /// # Errors
    /// [`Error::InvalidTarget`] naming what is missing.
    pub fn validate(&self) -> Result<(), Error> {
        let reason = match self {
            Target::Postgres {
                host,
                port,
                user,
                dbname,
                ..
            } => {
                if host.is_empty() {
                    Some("the host is empty")
                } else if *port == 0 {
                    Some("the port is 0")
                } else if user.is_empty() {
                    Some("the user is empty")
                } else if dbname.is_empty() {
                    Some("the database name is empty")
                } else {
                    None
                }
            }
            Target::Tcp { host, port } => {
                if host.is_empty() {
                    Some("the host is empty")
                } else if *port == 0 {
                    Some("the port is 0")
                } else {
                    None
                }
            }
            Target::Command { argv } => match argv.first() {
                None => Some("the command is empty"),
                Some(p) if p.is_empty() => Some("the program name is empty"),
                Some(_) => None,
            },
        };
        match reason {
            Some(reason) => Err(Error::InvalidTarget {
                target: self.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// The password, for masking it in messages.
    pub(crate) fn secret(&self) -> Option<&str> {
        match self {
            Target::Postgres {
                password: Some(p), ..
            } if !p.is_empty() => Some(p),
            _ => None,
        }
    }
}

/// `postgres://user@host:port/dbname`, `tcp://host:port` or the argv joined by spaces;
/// never the password.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Postgres {
                host,
                port,
                user,
                dbname,
                ..
            } => write!(f, "postgres://{user}@{host}:{port}/{dbname}"),
            Target::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Target::Command { argv } => write!(f, "command `{}`", argv.join(" ")),
        }
    }
}

/// Like the derived `Debug`, with the password shown as `***`.
impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Postgres {
                host,
                port,
                user,
                dbname,
                password,
            } => f
                .debug_struct("Postgres")
                .field("host", host)
                .field("port", port)
                .field("user", user)
                .field("dbname", dbname)
                .field("password", &password.as_ref().map(|_| "***"))
                .finish(),
            Target::Tcp { host, port } => f
                .debug_struct("Tcp")
                .field("host", host)
                .field("port", port)
                .finish(),
            Target::Command { argv } => f.debug_struct("Command").field("argv", argv).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(password: Option<&str>) -> Target {
        Target::Postgres {
            host: "db1".into(),
            port: 5432,
            user: "lifeboat".into(),
            dbname: "postgres".into(),
            password: password.map(str::to_string),
        }
    }

    #[test]
    fn the_password_is_never_printed() {
        let t = pg(Some("s3cret-horse"));
        for text in [format!("{t:?}"), t.to_string(), format!("{t:#?}")] {
            assert!(!text.contains("s3cret-horse"), "{text}");
        }
        assert!(format!("{t:?}").contains("***"));
        let json = serde_json::to_string(&t).unwrap();
        assert!(!json.contains("s3cret-horse"), "{json}");
        assert_eq!(t.to_string(), "postgres://lifeboat@db1:5432/postgres");
    }

    #[test]
    fn validation_names_what_is_missing() {
        assert!(pg(None).validate().is_ok());
        let bad = [
            Target::Tcp {
                host: String::new(),
                port: 1,
            },
            Target::Tcp {
                host: "h".into(),
                port: 0,
            },
            Target::Command { argv: vec![] },
            Target::Command {
                argv: vec![String::new()],
            },
        ];
        for t in bad {
            let e = t.validate().unwrap_err();
            assert!(matches!(e, Error::InvalidTarget { .. }), "{e}");
        }
    }
}
