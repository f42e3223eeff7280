//! Decoders of what a PostgreSQL server leaves for us to read: its lock file
//! (`postmaster.pid`) and `pg_controldata`'s report.
//!
//! Lives here: [`PostmasterPid::parse`] and [`parse_controldata`], pure (text in, value
//! out), never panicking on any text (a crashed server can leave a torn `postmaster.pid`),
//! and fuzzed (fuzz/fuzz_targets/pg_server_files.rs).
//! Never here: reading the files, running `pg_controldata`, or deciding whether the process
//! named runs (`cluster`, the daemon's executor).

use std::collections::HashMap;
use std::path::PathBuf;

/// What the first lines of `postmaster.pid` say (PostgreSQL's `LOCK_FILE_LINE_*`): the
/// postmaster's PID, its data directory, port and socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostmasterPid {
    /// Line 1: the postmaster's process id (a positive `pid_t`).
    pub pid: u32,
    /// Line 2: the data directory, when present.
    pub data_dir: Option<PathBuf>,
    /// Line 4: the port, when present and a port.
    pub port: Option<u16>,
    /// Line 5: the first Unix socket directory, when present and not empty.
    pub socket_dir: Option<PathBuf>,
}

impl PostmasterPid {
    /// Reads `postmaster.pid`'s text. `None` when the first line is not a PID a postmaster
    /// can have (1 to `i32::MAX`: a standalone backend writes its PID negated, and anything
    /// else could send a signal to a process group or to every process).
    pub fn parse(text: &str) -> Option<PostmasterPid> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse::<u32>().ok()?;
        if pid == 0 || i32::try_from(pid).is_err() {
            return None;
        }
        let data_dir = lines
            .next()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from);
        let _start_time = lines.next();
        let port = lines
            .next()
            .and_then(|l| l.trim().parse::<u16>().ok())
            .filter(|p| *p > 0);
        let socket_dir = lines
            .next()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from);
        Some(PostmasterPid {
            pid,
            data_dir,
            port,
            socket_dir,
        })
    }
}

/// `pg_controldata`'s report (run with `LC_ALL=C`) as name → value: each `Name: value`
/// line, both sides trimmed; lines without a colon are skipped.
pub fn parse_controldata(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_postmaster_pid_file() {
        let text = "4242\n/var/lib/postgresql/15/main\n1764500000\n5432\n/var/run/postgresql\n\
                    127.0.0.1\n  5432001   32769\nready   \n";
        let p = PostmasterPid::parse(text).unwrap();
        assert_eq!(p.pid, 4242);
        assert_eq!(p.port, Some(5432));
        assert_eq!(
            p.socket_dir.as_deref(),
            Some(std::path::Path::new("/var/run/postgresql"))
        );
        assert_eq!(
            p.data_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/postgresql/15/main"))
        );
        // Torn by a crash: the PID alone is enough.
        assert_eq!(PostmasterPid::parse("17").unwrap().port, None);
        // Never a PID that signals a group or everyone.
        for bad in ["", "0", "-1", "-4242", "4294967295", "2147483648", "x", "é"] {
            assert_eq!(PostmasterPid::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_pg_controldata() {
        let cd = parse_controldata(
            "pg_control version number:            1300\n\
             Database cluster state:               in production\n\
             wal_level setting:                    replica\n\
             Latest checkpoint's REDO WAL file:    000000010000000000000002\n",
        );
        assert_eq!(cd["Database cluster state"], "in production");
        assert_eq!(cd["wal_level setting"], "replica");
        assert_eq!(
            cd["Latest checkpoint's REDO WAL file"],
            "000000010000000000000002"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_text_never_panics(text in "\\PC{0,200}") {
            if let Some(p) = PostmasterPid::parse(&text) {
                proptest::prop_assert!(p.pid > 0 && i32::try_from(p.pid).is_ok());
            }
            let _ = parse_controldata(&text);
        }
    }
}
