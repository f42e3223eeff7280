//! The `lifeboat` command-line tool: parse arguments, call one library function, render the
//! result as text or JSON, and exit with a code scripts can trust.
//!
//! Exit codes (docs/exit-codes.md): 0 ok; 1 the command ran and found damage (or a partial
//! restore); 2 usage or configuration error (bad arguments, wrong password, no repository);
//! 3 runtime failure (I/O, backend, lease, partial backup); 130 interrupted.
//! Never here: repository logic, or any secret in output.

mod cli;
mod commands;
mod demo;
mod ha;
mod output;
mod pg;
mod pg_verify;
mod progress;

use std::process::ExitCode;

use clap::Parser;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the command ran and found damage.
pub const EXIT_DAMAGE: u8 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: runtime failure.
pub const EXIT_RUNTIME: u8 = 3;

/// An error that carries its own exit code (and maybe a hint).
#[derive(Debug)]
pub struct Exit {
    /// The exit code.
    pub code: u8,
    /// The message printed after `error: ` (empty for none).
    pub message: String,
    /// An optional `hint:` line.
    pub hint: Option<String>,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Maps an error to an exit code by what it is.
fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(x) = cause.downcast_ref::<Exit>() {
            return x.code;
        }
        if let Some(r) = cause.downcast_ref::<lifeboat_repo::Error>() {
            return repo_code(r);
        }
        if let Some(p) = cause.downcast_ref::<lifeboat_postgres::Error>() {
            // `Repo` is transparent: its `source()` skips the repository error itself, so
            // it is classified here rather than further down the chain.
            if let lifeboat_postgres::Error::Repo(r) = p {
                return repo_code(r);
            }
            if p.is_usage() {
                return EXIT_USAGE;
            }
            return EXIT_RUNTIME;
        }
        if let Some(s) = cause.downcast_ref::<lifeboat_storage::Error>() {
            if s.kind() == lifeboat_storage::ErrorKind::Config {
                return EXIT_USAGE;
            }
        }
    }
    EXIT_RUNTIME
}

/// The exit code of a repository error.
fn repo_code(r: &lifeboat_repo::Error) -> u8 {
    if r.is_usage() {
        return EXIT_USAGE;
    }
    if r.is_damage() {
        return EXIT_DAMAGE;
    }
    if let lifeboat_repo::Error::Storage(s) = r {
        if matches!(
            s.kind(),
            lifeboat_storage::ErrorKind::Config | lifeboat_storage::ErrorKind::PermissionDenied
        ) {
            return EXIT_USAGE;
        }
    }
    EXIT_RUNTIME
}

fn hint_of(e: &anyhow::Error) -> Option<String> {
    for cause in e.chain() {
        if let Some(x) = cause.downcast_ref::<Exit>() {
            return x.hint.clone();
        }
        if let Some(lifeboat_repo::Error::WrongPassword { .. }) = cause.downcast_ref() {
            return Some(
                "check LIFEBOAT_PASSWORD / --password-file; `lifeboat key list` shows the keys of a repository you can open".into(),
            );
        }
    }
    None
}

/// The error and its causes on one line, joined by `: ` like anyhow's `{:#}`, but a cause
/// whose text the level above already shows is left out: a library error that prints its
/// source in its own message (`read config: Not a directory (os error 20)`) and also returns
/// it from `source()` would otherwise be printed twice.
fn error_text(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || parts.last().is_some_and(|above| above.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// Sets up the log on stderr: `LIFEBOAT_LOG` (tracing's EnvFilter syntax, docs/logging.md)
/// or `-v`/`-vv`; `--log-format json` writes one JSON object per event and line (journald,
/// Loki). Colour only on a terminal and without `NO_COLOR`.
fn init_logging(args: &cli::Args) {
    use std::io::IsTerminal;
    // OpenDAL and its signer log their own retries and credential attempts with `Debug`
    // dumps (and backtraces under RUST_BACKTRACE); the storage crate logs one line per
    // retry instead, so theirs show only with -vv or LIFEBOAT_LOG.
    let filter = match args.global.verbose {
        0 => "warn,opendal=error,reqsign_core=error,reqsign_aws_core=error",
        1 => "info,opendal=error,reqsign_core=error,reqsign_aws_core=error",
        _ => "debug",
    };
    let env_filter = tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let log = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    // The daemon's log is read against other logs (kill → detection → promotion): it
    // carries times; one-shot commands do not, unless the log goes to a collector.
    let timed = matches!(
        args.command,
        cli::Command::Run(_) | cli::Command::Quickstart(_)
    );
    match (args.global.log_format, timed) {
        (cli::LogFormat::Json, _) => log.json().with_current_span(true).init(),
        (cli::LogFormat::Text, true) => log.init(),
        (cli::LogFormat::Text, false) => log.without_time().init(),
    }
}

/// Caps glibc's mmap threshold at 1 MiB. By default glibc raises the threshold to the size
/// of the largest buffer freed (a 16 MiB pack), after which freed pack and chunk buffers stay
/// in per-thread heaps: restore peaked at 108 MB instead of 91 MB, backup at 94 MB instead of
/// 80 MB (docs/decisions/0007-allocator.md).
/// The mmap threshold set by [`tune_allocator`].
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: i32 = 1 << 20;

#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return; // the user chose a threshold for glibc; keep it
    }
    // SAFETY: mallopt only changes allocator parameters; it is called once, first thing in
    // main, before any other thread exists, with a documented option and a valid value.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(not(target_env = "gnu"))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let args = match cli::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&args);
    match commands::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if output::is_broken_pipe(&e) {
                return ExitCode::from(EXIT_OK);
            }
            let code = code_of(&e);
            let msg = error_text(&e);
            if !msg.is_empty() {
                eprintln!("error: {msg}");
            }
            if let Some(h) = hint_of(&e) {
                eprintln!("hint: {h}");
            }
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10: a library error that writes its source into its message and returns it
    /// from `source()` printed "Not a directory (os error 20): Not a directory (os error
    /// 20)"; each cause is now printed once, whatever the error type.
    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotADirectory);
        let io_text = io.to_string();
        let e = anyhow::Error::new(lifeboat_repo::Error::Io {
            path: "/srv/a-file/x".into(),
            source: io,
        })
        .context("restore snapshot 1234abcd");
        let text = error_text(&e);
        assert_eq!(
            text,
            format!("restore snapshot 1234abcd: /srv/a-file/x: {io_text}")
        );
        // Causes the level above does not show are kept.
        let e = anyhow::anyhow!("connection reset").context("read index 12ab");
        assert_eq!(error_text(&e), "read index 12ab: connection reset");
    }
}
