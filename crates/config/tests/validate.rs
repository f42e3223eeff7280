//! `lifeboat.toml` validation: a good file loads with its values; a file with many mistakes
//! reports every one of them, each with its line, its key and a fix, and never a secret.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use lifeboat_config::{load, parse, Coordinator, FailoverMode, Replication};

const GOOD: &str = r#"
[cluster]
name = "orders"
replication = "sync"
failover = "manual"

[[cluster.member]]
name = "db1"
host = "127.0.0.1"
port = 5432
data_dir = "/var/lib/postgresql/15/db1"
site = "a"

[[cluster.member]]
name = "db2"
host = "127.0.0.1"
port = 5433
data_dir = "/var/lib/postgresql/15/db2"

[health]
interval = "500ms"
timeout = "300ms"
fall = 4

[coordinator]
url = "etcd://127.0.0.1:2379,127.0.0.1:2380,127.0.0.1:2381"

[proxy]
listen = "127.0.0.1:6432"
read_listen = "127.0.0.1:6433"

[api]
listen = "127.0.0.1:8008"
token = "${LB_TOKEN}"
"#;

fn env(name: &str) -> Option<String> {
    (name == "LB_TOKEN").then(|| "s3cret-token-0123456789".to_string())
}

#[test]
fn a_good_config_loads_with_its_values_and_defaults() {
    let c = parse("lifeboat.toml", GOOD, Path::new("/etc/lifeboat"), &env).unwrap();
    assert_eq!(c.cluster.name, "orders");
    assert_eq!(c.cluster.replication, Replication::Sync);
    assert_eq!(c.cluster.failover, FailoverMode::Manual);
    assert_eq!(c.cluster.members.len(), 2);
    assert_eq!(c.cluster.members[1].port, 5433);
    assert_eq!(c.cluster.members[0].site.as_deref(), Some("a"));
    assert_eq!(c.health.interval, Duration::from_millis(500));
    assert_eq!(c.health.fall, 4);
    assert_eq!(c.health.rise, 2, "default");
    assert!(matches!(c.coordinator, Coordinator::Etcd { ref endpoints } if endpoints.len() == 3));
    assert_eq!(c.api.token.expose(), "s3cret-token-0123456789");
    assert!(
        !format!("{:?}", c.api).contains("s3cret"),
        "Debug hides the token"
    );
}

#[test]
fn every_mistake_is_reported_with_line_key_and_fix() {
    let bad = r#"
[cluster]
name = "orders"
replication = "synchronous"
falover = "manual"

[[cluster.member]]
name = "db1"
host = "127.0.0.1"
port = 70000
data_dir = "relative/dir"

[[cluster.member]]
name = "db1"
host = "127.0.0.1"
data_dir = "/d2"

[health]
interval = "100ms"
timeout = "1s"
fall = 0

[coordinator]
url = "zookeeper://x"

[api]
token = "${UNSET_TOKEN}"
"#;
    let err = parse("lb.toml", bad, Path::new("/etc"), &env).unwrap_err();
    let text = err.to_string();
    let expect = [
        ("lb.toml:4:", "cluster.replication"),
        ("lb.toml:5:", "cluster.falover"),
        ("lb.toml:10:", "cluster.member[1].port"),
        ("lb.toml:11:", "cluster.member[1].data_dir"),
        ("lb.toml:14:", "cluster.member[2].name"),
        ("cluster.member[2].port", "missing"),
        ("lb.toml:20:", "health.timeout"),
        ("lb.toml:21:", "health.fall"),
        ("lb.toml:24:", "coordinator.url"),
        ("lb.toml:27:", "api.token"),
    ];
    for (a, b) in expect {
        assert!(
            text.lines().any(|l| l.contains(a) && l.contains(b)),
            "no line with {a:?} and {b:?} in:\n{text}"
        );
    }
    assert!(text.contains("did you mean `failover`?"), "{text}");
    assert!(text.contains("UNSET_TOKEN"), "{text}");
    assert!(err.list.iter().all(|p| !p.fix.is_empty()));
    assert_eq!(err.list.len(), expect.len(), "{text}");
}

#[test]
fn broken_toml_and_missing_sections_are_reported_and_secrets_never_shown() {
    let err = parse("x.toml", "[cluster\nname = 1", Path::new("/"), &env).unwrap_err();
    assert_eq!(err.list[0].line, 1, "{err}");
    assert!(err.to_string().contains("not valid TOML"), "{err}");

    let err = parse("x.toml", "", Path::new("/"), &env).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cluster: missing") && text.contains("api: missing"),
        "{text}"
    );

    // A short token is refused by its length, never echoed.
    let short = GOOD.replace("${LB_TOKEN}", "hunter2");
    let err = parse("x.toml", &short, Path::new("/"), &env).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(err.to_string().contains("7 characters"), "{err}");
}

#[test]
fn token_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.token"), "from-a-file-0123456789\n").unwrap();
    let text = GOOD.replace("token = \"${LB_TOKEN}\"", "token_file = \"api.token\"");
    let path = dir.path().join("lifeboat.toml");
    std::fs::write(&path, text).unwrap();
    let c = load(&path, &env).unwrap();
    assert_eq!(c.api.token.expose(), "from-a-file-0123456789");
    std::fs::remove_file(dir.path().join("api.token")).unwrap();
    let err = load(&path, &env).unwrap_err();
    assert!(err.to_string().contains("api.token_file"), "{err}");
}

#[test]
fn health_checks_and_database_credentials_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db.password"), "hunter2-but-longer\n").unwrap();
    let text = GOOD
        .replace(
            "fall = 4\n",
            "fall = 4\ncommand = [\"/usr/local/bin/check\", \"{host}\", \"${LB_TOKEN}\"]\nhost_port = 22\n",
        )
        .replace(
            "failover = \"manual\"\n",
            "failover = \"manual\"\nuser = \"lifeboat\"\npassword_file = \"db.password\"\n",
        );
    let c = parse("lifeboat.toml", &text, dir.path(), &env).unwrap();
    assert_eq!(
        c.health.command.as_deref(),
        Some(
            &[
                "/usr/local/bin/check".to_string(),
                "{host}".to_string(),
                "s3cret-token-0123456789".to_string()
            ][..]
        )
    );
    assert_eq!(c.health.host_port, Some(22));
    assert_eq!(
        c.cluster.when_no_standby,
        lifeboat_config::NoStandby::Continue
    );
    let w = GOOD.replace(
        "failover = \"manual\"\n",
        "failover = \"manual\"\nwhen_no_standby = \"wait\"\n",
    );
    assert_eq!(
        parse("lifeboat.toml", &w, dir.path(), &env)
            .unwrap()
            .cluster
            .when_no_standby,
        lifeboat_config::NoStandby::Wait
    );
    let w = GOOD.replace(
        "failover = \"manual\"\n",
        "failover = \"manual\"\nwhen_no_standby = \"block\"\n",
    );
    let err = parse("lifeboat.toml", &w, dir.path(), &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cluster.when_no_standby") && err.contains("\"wait\""),
        "{err}"
    );
    assert_eq!(c.cluster.user, "lifeboat");
    assert_eq!(
        c.cluster.password.as_ref().map(|p| p.expose().as_str()),
        Some("hunter2-but-longer")
    );
    // Defaults: no extra checks, user postgres, no password.
    let d = parse("lifeboat.toml", GOOD, dir.path(), &env).unwrap();
    assert_eq!(d.health.command, None);
    assert_eq!(d.cluster.user, "postgres");
    assert!(d.cluster.password.is_none());

    let bad = GOOD.replace("fall = 4\n", "fall = 4\ncommand = []\nhost_port = 70000\n");
    let err = parse("lifeboat.toml", &bad, dir.path(), &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("health.command") && err.contains("non-empty list"),
        "{err}"
    );
    assert!(
        err.contains("health.host_port") && err.contains("out of range"),
        "{err}"
    );
    // A password never appears in a problem.
    let both = text.replace(
        "password_file = \"db.password\"",
        "password_file = \"db.password\"\npassword = \"hunter2-but-longer\"",
    );
    let err = parse("lifeboat.toml", &both, dir.path(), &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cluster.password"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// Issue 10: the config takes the command line's duration syntax (`1h`, `7d`, `1.5s`), and
/// a malformed one is a problem that names the key and says what to write.
#[test]
fn durations_use_the_one_syntax_of_the_command_line() {
    let with = |interval: &str, timeout: &str| {
        GOOD.replace(
            "interval = \"500ms\"",
            &format!("interval = \"{interval}\""),
        )
        .replace("timeout = \"300ms\"", &format!("timeout = \"{timeout}\""))
    };
    let c = parse("lb.toml", &with("1h", "1.5s"), Path::new("/etc"), &env).unwrap();
    assert_eq!(c.health.interval, Duration::from_secs(3600));
    assert_eq!(c.health.timeout, Duration::from_millis(1500));
    let c = parse("lb.toml", &with("7d", "1m 30s"), Path::new("/etc"), &env).unwrap();
    assert_eq!(c.health.interval, Duration::from_secs(7 * 86_400));
    assert_eq!(c.health.timeout, Duration::from_secs(90));
    for (bad, says) in [
        ("5x", "unknown unit \"x\""),
        ("250", "has no unit"),
        ("8d", "out of range"),
        ("5ms", "out of range"),
    ] {
        let err = parse("lb.toml", &with(bad, "1ms"), Path::new("/etc"), &env).unwrap_err();
        let text = err.to_string();
        let line = text
            .lines()
            .find(|l| l.contains("health.interval"))
            .unwrap_or_else(|| panic!("{bad}: no health.interval problem in:\n{text}"));
        assert!(line.contains("lb.toml:21:"), "{line}");
        assert!(line.contains(says), "{bad}: {line}");
        assert!(line.contains("(fix: "), "{bad}: {line}");
    }
}
