//! Issue 10, "exit codes and errors" and "units": a table of bad inputs walked through the
//! real binary. For each: the documented exit code (docs/exit-codes.md), a message that names
//! the thing (path, flag, host:port, variable), a fix (`hint:` or `(fix: …)`), every line
//! once, no ANSI escapes, and no backtrace or panic — with `RUST_BACKTRACE=1` set throughout.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use std::process::Output;

use common::*;
use lifeboat_testkit::free_port;

/// One bad input and what the user must see.
struct Case {
    /// What the case is, for failure messages.
    what: &'static str,
    /// Arguments after `lifeboat`.
    args: Vec<String>,
    /// Extra environment.
    env: Vec<(&'static str, String)>,
    /// The exit code.
    code: i32,
    /// Texts the message must contain (the thing it is about).
    names: Vec<String>,
}

fn case(what: &'static str, args: &[&str], code: i32, names: &[&str]) -> Case {
    Case {
        what,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        code,
        names: names.iter().map(|s| s.to_string()).collect(),
    }
}

/// Asserts what every bad input must show.
fn assert_reported(c: &Case, o: &Output) {
    let err = stderr(o);
    let what = c.what;
    assert_eq!(code(o), c.code, "{what}: exit code; stderr:\n{err}");
    for n in &c.names {
        assert!(
            err.contains(n.as_str()),
            "{what}: the message names {n:?}:\n{err}"
        );
    }
    assert!(
        err.contains("hint:") || err.contains("(fix:"),
        "{what}: the message states a fix:\n{err}"
    );
    assert!(!err.contains('\u{1b}'), "{what}: ANSI escapes:\n{err:?}");
    for bad in ["stack backtrace", "panicked", "Backtrace"] {
        assert!(!err.contains(bad), "{what}: {bad:?} in:\n{err}");
    }
    // Once: no line repeats, at most one `error:` line, and no cause repeats inside a line
    // (the old "Not a directory (os error 20): Not a directory (os error 20)").
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, l) in lines.iter().enumerate() {
        assert!(
            !lines[i + 1..].contains(l),
            "{what}: line printed twice: {l:?}\n{err}"
        );
        let parts: Vec<&str> = l.split(": ").filter(|p| p.len() > 8).collect();
        for (j, p) in parts.iter().enumerate() {
            assert!(
                !parts[j + 1..].contains(p),
                "{what}: {p:?} repeated in one line: {l}"
            );
        }
    }
    assert!(
        lines.iter().filter(|l| l.starts_with("error:")).count() <= 1,
        "{what}: more than one error line:\n{err}"
    );
}

fn run_case(env: &Env, c: &Case) -> Output {
    let mut cmd = env.cmd();
    cmd.env("RUST_BACKTRACE", "1");
    for (k, v) in &c.env {
        cmd.env(k, v);
    }
    cmd.args(&c.args).output().unwrap()
}

/// A config file for `config validate` with this `[health] interval`.
fn config_with_interval(env: &Env, interval: &str) -> String {
    let p = env.path(&format!("lifeboat-{}.toml", interval.len()));
    std::fs::write(
        &p,
        format!(
            r#"[cluster]
name = "orders"
replication = "async"

[[cluster.member]]
name = "db1"
host = "127.0.0.1"
port = 5432
data_dir = "/var/lib/postgresql/15/db1"

[health]
interval = "{interval}"

[api]
token = "${{LB_TEST_TOKEN}}"
"#
        ),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn bad_inputs_exit_with_their_code_name_the_thing_and_state_a_fix_once() {
    let env = Env::new();
    env.init();
    let a_file = env.path("a-file");
    std::fs::write(&a_file, b"not a repository").unwrap();
    let a_file = a_file.to_str().unwrap().to_string();
    let under_file = format!("{a_file}/repo");
    let missing_pw = env
        .path("no-such-dir/password")
        .to_str()
        .unwrap()
        .to_string();
    let missing_src = env.path("no-such-source").to_str().unwrap().to_string();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    let src = src.to_str().unwrap().to_string();
    let dead_pg = free_port().unwrap();
    let dead_dsn = format!("host=127.0.0.1 port={dead_pg} user=postgres");
    let dead_pg_at = format!("connection refused at 127.0.0.1:{dead_pg}");
    let good_dsn = "host=127.0.0.1 port=1 user=postgres";

    let mut cases = vec![
        // Item 1: usage errors (2), each naming its thing.
        case(
            "a --password-file that does not exist",
            &["--password-file", &missing_pw, "snapshots"],
            2,
            &[&missing_pw, "password file"],
        ),
        case(
            "a repository path that is a regular file",
            &["-r", &a_file, "snapshots"],
            2,
            &[&a_file, "not a directory"],
        ),
        case(
            "init on a regular file",
            &["-r", &a_file, "init", "--kdf-memory", "1MiB"],
            2,
            &[&a_file, "not a directory"],
        ),
        case(
            "a repository path below a regular file",
            &["-r", &under_file, "snapshots"],
            2,
            &[&under_file, "not a directory"],
        ),
        case(
            "a backup source that does not exist",
            &["backup", &missing_src],
            2,
            &[&missing_src, "No such file"],
        ),
        case(
            "pg backup --source 'bad name'",
            &["pg", "backup", "--source", "bad name", "--dsn", good_dsn],
            2,
            &["\"bad name\"", "source name"],
        ),
        // Item 1: a dead PostgreSQL port is a runtime failure (3) naming host:port.
        case(
            "pg backup against a dead port",
            &["pg", "backup", "--source", "shop", "--dsn", &dead_dsn],
            3,
            &[&dead_pg_at],
        ),
        // Item 2: a partial backup lists each unreadable entry once (it was twice: the
        // library's log and the command's list).
        case(
            "a partial backup",
            &["backup", &src, "/proc/self/mem"],
            3,
            &["/proc/self/mem", "partial"],
        ),
        // Item 4: malformed durations, on every time-valued flag.
        case(
            "--wal-wait with an unknown unit",
            &[
                "pg",
                "backup",
                "--source",
                "shop",
                "--dsn",
                good_dsn,
                "--wal-wait",
                "5x",
            ],
            2,
            &["--wal-wait", "\"5x\"", "unknown unit"],
        ),
        case(
            "--wal-wait above a week",
            &[
                "pg",
                "backup",
                "--source",
                "shop",
                "--dsn",
                good_dsn,
                "--wal-wait",
                "8d",
            ],
            2,
            &["--wal-wait", "\"8d\"", "out of range"],
        ),
        case(
            "--flush-interval without a unit on its last number",
            &[
                "pg",
                "stream",
                "--source",
                "shop",
                "--dsn",
                good_dsn,
                "--flush-interval",
                "1h30",
            ],
            2,
            &["--flush-interval", "\"1h30\""],
        ),
        case(
            "--flush-interval above an hour",
            &[
                "pg",
                "stream",
                "--source",
                "shop",
                "--dsn",
                good_dsn,
                "--flush-interval",
                "2h",
            ],
            2,
            &["--flush-interval", "\"2h\"", "out of range"],
        ),
        case(
            "pg verify --timeout that is not a duration",
            &["pg", "verify", "--source", "shop", "--timeout", "soon"],
            2,
            &["--timeout", "\"soon\""],
        ),
        case(
            "pg verify --timeout of zero",
            &["pg", "verify", "--source", "shop", "--timeout", "0s"],
            2,
            &["--timeout", "\"0s\"", "out of range"],
        ),
    ];
    let bad_config = config_with_interval(&env, "5x");
    let mut c = case(
        "lifeboat.toml with a malformed duration",
        &["config", "validate", "--config", &bad_config],
        2,
        &["health.interval", "\"5x\"", "unknown unit"],
    );
    c.env
        .push(("LB_TEST_TOKEN", "a-token-of-24-characters".into()));
    cases.push(c);

    // Item 1: S3 without credentials is a configuration error naming the variables, found
    // before any request: the endpoint is a free local port nobody listens on, no AWS_*
    // variable is set (`Env::cmd` clears the environment) and HOME is empty, so neither
    // ~/.aws nor the network is read. AWS_EC2_METADATA_DISABLED keeps the test hermetic
    // on an EC2 host, where an instance role would otherwise be looked for.
    let home = env.path("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let dead_s3 = free_port().unwrap();
    let mut c = case(
        "S3 without credentials",
        &["-r", "s3://lifeboat/repo", "snapshots"],
        2,
        &[
            "s3://lifeboat/repo",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ],
    );
    c.env = vec![
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{dead_s3}")),
        ("HOME", home.to_str().unwrap().to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ];
    cases.push(c);

    for c in &cases {
        let o = run_case(&env, c);
        assert_reported(c, &o);
    }
}

/// An S3 endpoint that does not answer: exit 3, the message names host:port and a fix, the
/// retries show as one line each (at most one per retry), and `RUST_BACKTRACE=1` adds no
/// backtrace and no dump of OpenDAL's internals.
#[test]
fn an_unreachable_s3_endpoint_is_one_line_per_retry_and_no_backtrace() {
    let env = Env::new();
    let home = env.path("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let port = free_port().unwrap();
    let c = Case {
        what: "an unreachable S3 endpoint",
        args: ["-r", "s3://lifeboat/repo", "snapshots"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        env: vec![
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
            ("AWS_ACCESS_KEY_ID", "lifeboat-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "not-a-real-secret".into()),
            ("HOME", home.to_str().unwrap().to_string()),
        ],
        code: 3,
        names: vec![format!("127.0.0.1:{port}")],
    };
    let o = run_case(&env, &c);
    assert_reported(&c, &o);
    let err = stderr(&o);
    let retries = err.lines().filter(|l| l.contains("retrying")).count();
    assert!(
        (1..=4).contains(&retries),
        "one line per retry (4 retries at most): {err}"
    );
    assert!(!err.contains("not-a-real-secret"), "{err}");
    assert!(!err.contains("context: {"), "OpenDAL's context dump: {err}");
}

/// `--wal-wait 120` still means 120 seconds, with a warning that names the fix; the old
/// `--flush-interval-ms` still means milliseconds, with a warning.
#[test]
fn plain_numbers_on_old_flags_still_work_and_warn() {
    let env = Env::new();
    env.init();
    let dead = free_port().unwrap();
    let dsn = format!("host=127.0.0.1 port={dead} user=postgres");
    let o = env.run(&[
        "pg",
        "backup",
        "--source",
        "shop",
        "--dsn",
        &dsn,
        "--wal-wait",
        "120",
    ]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: --wal-wait 120") && l.contains("write 120s")),
        "{err}"
    );
    // `pg stream` reconnects to a dead server for ever: an invalid source name ends it
    // (exit 2) after the flags were read.
    let o = env.run(&[
        "pg",
        "stream",
        "--source",
        "bad name",
        "--dsn",
        &dsn,
        "--flush-interval-ms",
        "250",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: --flush-interval-ms")
                && l.contains("--flush-interval 250ms")),
        "{err}"
    );
    // The old and the new spelling together are a usage error.
    let o = env.run(&[
        "pg",
        "stream",
        "--source",
        "shop",
        "--dsn",
        &dsn,
        "--flush-interval-ms",
        "250",
        "--flush-interval",
        "1s",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

/// `config validate` takes the command line's duration syntax: `1h` is valid.
#[test]
fn config_validate_accepts_the_duration_syntax_of_flags() {
    let env = Env::new();
    for ok in ["1h", "7d", "1.5s", "1m 30s"] {
        let p = config_with_interval(&env, ok);
        let o = env
            .cmd()
            .env("LB_TEST_TOKEN", "a-token-of-24-characters")
            .args(["config", "validate", "--config", &p])
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{ok}: {}", stderr(&o));
    }
}

/// `--log-format json`: every log event is one JSON object on its own line of stderr; the
/// command's own warnings and errors stay text.
#[test]
fn log_format_json_writes_one_object_per_line() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    let o = env
        .cmd()
        .env("LIFEBOAT_LOG", "debug")
        .args([
            "--log-format",
            "json",
            "backup",
            src.to_str().unwrap(),
            "/proc/self/mem",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    let events: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["level"] == "DEBUG"
            && e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("/proc/self/mem"))),
        "the unreadable file's event as JSON: {err}"
    );
    assert!(events.iter().all(|e| e["timestamp"].is_string()), "{err}");
    assert!(err.contains("error: snapshot"), "{err}");
}
