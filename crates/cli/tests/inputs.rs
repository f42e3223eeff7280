//! Issue 9 (items 8 and 9) end to end through the `lifeboat` binary: hostile values of every
//! flag that takes a time, LSN, transaction id, restore point, timeline, size, percentage or
//! duration are usage errors (exit 2, the flag and its format named), never a panic (exit
//! 101); the key-derivation floor; warnings about secrets others can read and a public API;
//! a password on the command line.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;

use common::Env;

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `args` and asserts a usage error that names `flag` and says what `format` wants.
fn refused(env: &Env, args: &[&str], flag: &str, format: &str) {
    let o = env.run(args);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{args:?} should be a usage error:\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    assert!(
        err.contains(flag),
        "{args:?}: the message does not name {flag}:\n{err}"
    );
    assert!(
        err.contains(format),
        "{args:?}: the message does not say {format:?}:\n{err}"
    );
}

/// Issue 9 item 8: `pg restore --to-time '2026-11-30 14:03:27+1é1'` panicked (exit 101)
/// slicing the offset inside the `é`.
#[test]
fn r9_hostile_recovery_targets_are_usage_errors_naming_the_flag() {
    let env = Env::new();
    env.init();
    let dir = env.path("restored");
    let dir = dir.to_str().unwrap();
    let restore = |flag: &str, value: &str| -> Vec<String> {
        ["pg", "restore", "--source", "shop", "-t", dir, flag, value]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>, flag: &str, format: &str| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&env, &a, flag, format);
    };
    for t in [
        "2026-11-30 14:03:27+1é1",
        "2026-11-30 14:03:27+é",
        "2026-11-30 14:03:27-ééé",
        "2026-11-30 14:03:27",
        "2026-13-45 25:61:61+00",
        "é",
        "",
    ] {
        run(restore("--to-time", t), "--to-time", "UTC offset");
        run(
            ["pg", "verify", "--source", "shop", "--to-time", t]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "--to-time",
            "UTC offset",
        );
    }
    for l in ["0/é", "é/0", "1/FFFFFFFFF", "16B3748", "0/1/2", ""] {
        run(restore("--to-lsn", l), "--to-lsn", "0/16B3748");
    }
    for x in ["0", "0x10", "12é", "1' restore_command = 'x", "1\n2"] {
        run(restore("--to-xid", x), "--to-xid", "transaction id");
    }
    for n in ["a\nrestore_command = 'touch /tmp/x'", "", &"é".repeat(40)] {
        run(restore("--to-name", n), "--to-name", "63 bytes");
    }
    for t in ["0", "é", "next", "4294967296", "1'"] {
        run(restore("--timeline", t), "--timeline", "latest, current");
    }
    // Nothing was created for any of them.
    assert!(!env.path("restored").exists());
}

#[test]
fn r9_hostile_sizes_percentages_and_durations_are_usage_errors() {
    let env = Env::new();
    for m in ["é", "1é", "19MiBé", "99999999999999999999TiB", "2GiB"] {
        refused(&env, &["init", "--kdf-memory", m], "--kdf-memory", "");
    }
    for p in ["0", "1é", "1GiB", "99999999999999999999", "é"] {
        refused(&env, &["init", "--pack-size", p], "--pack-size", "");
    }
    assert!(!env.repo.exists(), "a refused init created the repository");
    env.init();
    for p in ["NaN%", "inf%", "1e2%", "101%", "é%", "10%%"] {
        refused(
            &env,
            &["check", "--read-data-subset", p],
            "--read-data-subset",
            "percentage",
        );
    }
    let huge = u64::MAX.to_string();
    refused(
        &env,
        &[
            "pg",
            "backup",
            "--source",
            "s",
            "--dsn",
            "host=127.0.0.1 port=1",
            "--wal-wait",
            &huge,
        ],
        "--wal-wait",
        "7days",
    );
    refused(
        &env,
        &["pg", "verify", "--source", "s", "--timeout", &huge],
        "--timeout",
        "7days",
    );
    refused(
        &env,
        &[
            "pg",
            "stream",
            "--source",
            "s",
            "--dsn",
            "host=127.0.0.1 port=1",
            "--flush-interval-ms",
            &huge,
        ],
        "--flush-interval-ms",
        "3600000",
    );
}

/// Issue 9 item 8: `--kdf-memory 8KiB` was accepted for a human password.
#[test]
fn r9_kdf_memory_below_the_floor_is_refused_for_passwords() {
    let env = Env::new();
    for m in ["8KiB", "1MiB", "19455KiB"] {
        let o = env
            .cmd()
            .env_remove("LIFEBOAT_INSECURE_KDF_FOR_TESTS")
            .args(["init", "--kdf-memory", m])
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "--kdf-memory {m} accepted:\n{err}");
        assert!(
            err.contains("--kdf-memory") && err.contains("19MiB"),
            "{err}"
        );
        assert!(!env.repo.join("config").exists());
    }
    // The floor itself is accepted (and the repository opens with it).
    let o = env
        .cmd()
        .env_remove("LIFEBOAT_INSECURE_KDF_FOR_TESTS")
        .args(["init", "--kdf-memory", "19MiB", "--pack-size", "1MiB"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // The key file (JSON) records the cost it was made with.
    let key_files: Vec<_> = std::fs::read_dir(env.repo.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(key_files.len(), 1, "{key_files:?}");
    let key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&key_files[0]).unwrap()).unwrap();
    assert_eq!(key["params"]["m_cost"], 19 * 1024, "{key}");
    // So is the test-only escape hatch, and machine keys keep their minimum cost.
    let pw = env.path("second");
    std::fs::write(&pw, "another human password\n").unwrap();
    let o = env
        .cmd()
        .env_remove("LIFEBOAT_INSECURE_KDF_FOR_TESTS")
        .args(["key", "add", "--kdf-memory", "8KiB", "--new-password-file"])
        .arg(&pw)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = env
        .cmd()
        .env_remove("LIFEBOAT_INSECURE_KDF_FOR_TESTS")
        .args(["key", "add", "--generate"])
        .arg(env.path("machine.key"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A two-member config with `cluster_extra` in [cluster], `[proxy]` and `[api]` as given.
fn config_text(cluster_extra: &str, proxy: &str, api: &str) -> String {
    format!(
        "[cluster]\nname = \"orders\"\n{cluster_extra}\n\n\
         [[cluster.member]]\nname = \"db1\"\nhost = \"127.0.0.1\"\nport = 5432\ndata_dir = \"/srv/pg1\"\n\n\
         [[cluster.member]]\nname = \"db2\"\nhost = \"127.0.0.1\"\nport = 5433\ndata_dir = \"/srv/pg2\"\n\n\
         [proxy]\n{proxy}\n\n[api]\n{api}\n"
    )
}

/// Issue 9 item 9: `config validate` accepted a world-readable config holding an inline
/// password, a token file of mode 0666 and an API on 0.0.0.0 without a word.
#[test]
fn r9_config_validate_warns_about_exposed_secrets_and_a_public_api() {
    let env = Env::new();
    let cfg = env.path("lifeboat.toml");
    let token = env.path("api.token");
    std::fs::write(&token, "a-token-of-24-characters\n").unwrap();
    chmod(&token, 0o666);
    std::fs::write(
        &cfg,
        config_text(
            "password = \"hunter2-inline\"",
            "listen = \"0.0.0.0:6432\"",
            "listen = \"0.0.0.0:8008\"\ntoken_file = \"api.token\"",
        ),
    )
    .unwrap();
    chmod(&cfg, 0o644);
    let c = cfg.to_str().unwrap();
    // Valid, so exit 0, but every exposure is named with its line, key and fix.
    let o = env.run(&["config", "validate", "--config", c]);
    let err = stderr(&o);
    assert_eq!(code(&o), 0, "{err}");
    for (line, key, what) in [
        (3, "cluster.password", "readable by every user"),
        (18, "proxy.listen", "every network"),
        (21, "api.listen", "unencrypted"),
        (22, "api.token_file", "writable by every user"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("warning: {c}:{line}:"))
                    && l.contains(key)
                    && l.contains(what)
                    && l.contains("fix:")),
            "no warning about {key} at line {line}:\n{err}"
        );
    }
    assert!(
        !err.contains("hunter2") && !err.contains("a-token-of"),
        "{err}"
    );
    // --strict fails on them (a config error: exit 2), also in JSON.
    let o = env.run(&["config", "validate", "--strict", "--config", c]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = env.run(&["--json", "config", "validate", "--strict", "--config", c]);
    assert_eq!(code(&o), 2);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false, "{v}");
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 4, "{v}");
    assert!(warnings
        .iter()
        .all(|w| w["line"].as_u64() > Some(0) && w["fix"].as_str().is_some_and(|f| !f.is_empty())));
    assert!(!v.to_string().contains("hunter2"));

    // A config file others can change is named even without a secret in it.
    std::fs::write(
        &cfg,
        config_text(
            "",
            "listen = \"127.0.0.1:6432\"",
            "token_file = \"api.token\"",
        ),
    )
    .unwrap();
    chmod(&cfg, 0o666);
    chmod(&token, 0o600);
    let o = env.run(&["config", "validate", "--strict", "--config", c]);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(
        err.contains("writable by every user") && err.contains("chmod go-w"),
        "{err}"
    );

    // Fixed: private token file, secret from the environment, loopback API: no warning.
    std::fs::write(
        &cfg,
        config_text(
            "password = \"${PG_PASSWORD}\"",
            "listen = \"10.0.1.5:6432\"",
            "listen = \"127.0.0.1:8008\"\ntoken_file = \"api.token\"",
        ),
    )
    .unwrap();
    chmod(&cfg, 0o644);
    let o = env
        .cmd()
        .env("PG_PASSWORD", "hunter2-env")
        .args(["config", "validate", "--strict", "--config", c])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    // The same inline password in a file only its owner (and group) can read: fine too.
    std::fs::write(
        &cfg,
        config_text(
            "password = \"hunter2-inline\"",
            "listen = \"127.0.0.1:6432\"",
            "token_file = \"api.token\"",
        ),
    )
    .unwrap();
    chmod(&cfg, 0o640);
    let o = env.run(&["config", "validate", "--strict", "--config", c]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// Issue 9 item 9: a password in `--dsn` shows in `ps`; warn, never echo it.
#[test]
fn r9_password_in_dsn_on_the_command_line_is_warned_about_without_echo() {
    let env = Env::new();
    env.init();
    for dsn in [
        "host=127.0.0.1 port=1 password=hunter2",
        "postgresql://app:hunter2@127.0.0.1:1/shop",
    ] {
        let o = env.run(&["pg", "backup", "--source", "shop", "--dsn", dsn]);
        let err = stderr(&o);
        assert!(
            err.contains("warning:") && err.contains("LIFEBOAT_PG_DSN"),
            "pg backup: no warning:\n{err}"
        );
        assert!(
            !err.contains("hunter2"),
            "pg backup echoed the password:\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        // `pg stream` retries for ever: read its first line of stderr, then stop it.
        let mut child = env
            .cmd()
            .args(["pg", "stream", "--source", "shop", "--dsn", dsn])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        let read = std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stderr.take().unwrap()),
            &mut first,
        );
        let _ = child.kill();
        let _ = child.wait();
        read.unwrap();
        assert!(
            first.starts_with("warning:") && first.contains("LIFEBOAT_PG_DSN"),
            "pg stream: {first}"
        );
        assert!(!first.contains("hunter2"), "{first}");
    }
    // The same DSN from LIFEBOAT_PG_DSN, or a DSN without a password: no warning.
    let o = env
        .cmd()
        .env("LIFEBOAT_PG_DSN", "host=127.0.0.1 port=1 password=hunter2")
        .args(["pg", "backup", "--source", "shop", "--wal-wait", "1s"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(
        !err.contains("warning:") && !err.contains("hunter2"),
        "{err}"
    );
    let o = env.run(&[
        "pg",
        "backup",
        "--source",
        "shop",
        "--dsn",
        "host=127.0.0.1 port=1 user=postgres",
    ]);
    assert!(!stderr(&o).contains("warning:"), "{}", stderr(&o));
}
