//! Issue 10, "one vocabulary": every `--json` document the real binary prints matches its
//! JSON Schema in `docs/schema/` (draft 2020-12, `additionalProperties: false`, so a new or
//! renamed field fails here until it is documented), and docs/json.md names a schema for
//! every command it documents.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lifeboat_testkit::postgres::owner_tempdir;
use serde_json::Value;

use common::pg::{Shop, SOURCE};
use common::*;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// The schema files under docs/schema, by name without `.json`.
fn schema_names() -> BTreeSet<String> {
    std::fs::read_dir(docs().join("schema"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect()
}

/// Runs `lifeboat ARGS --json` expecting exit `want`; returns the one document printed.
fn json_exit(env: &Env, args: &[&str], want: i32) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let o = env.run(&a);
    assert_eq!(code(&o), want, "lifeboat {a:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "lifeboat {a:?}: not one JSON document ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// `lifeboat ARGS --json` (exit 0), checked against docs/schema/`schema`.json.
fn checked(env: &Env, schema: &str, args: &[&str]) -> Value {
    let v = json_exit(env, args, 0);
    assert_schema(schema, &v);
    v
}

/// Every repository command with `--json` — init, backup (with a parent), snapshots, ls,
/// diff, stats, check (with and without a data subset), restore, copy, forget (dry run,
/// then for real with --prune), prune (dry run and real), key add/list/remove, migrate,
/// config validate (valid and not), pg wal-push and wal-fetch — prints a document its
/// schema accepts, under the names of docs/json.md.
#[test]
fn every_repository_command_prints_json_its_schema_accepts() {
    let env = Env::new();
    let init = checked(
        &env,
        "init",
        &["init", "--kdf-memory", "1MiB", "--pack-size", "1MiB"],
    );
    assert_eq!(init["schema_version"], 1);

    let src = env.path("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("a/orders.txt"), text(200_000, 1)).unwrap();
    std::fs::write(src.join("a/noise.bin"), noise(300_000, 2)).unwrap();
    std::os::unix::fs::symlink("orders.txt", src.join("a/link")).unwrap();
    let s = src.to_str().unwrap();
    let first = checked(&env, "backup", &["backup", "--tag", "daily", s]);
    std::fs::write(src.join("a/new.txt"), text(5_000, 3)).unwrap();
    std::fs::remove_file(src.join("a/noise.bin")).unwrap();
    let second = checked(&env, "backup", &["backup", "--tag", "daily", s]);
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    let (id1, id2) = (
        first["snapshot_id"].as_str().unwrap(),
        second["snapshot_id"].as_str().unwrap(),
    );
    // One idea, one name: sizes end in _bytes, durations in _seconds.
    assert!(second["summary"]["stored_bytes"].as_u64().unwrap() > 0);
    assert!(second["summary"]["duration_seconds"].as_f64().unwrap() > 0.0);

    let snaps = checked(&env, "snapshots", &["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let ls = checked(&env, "ls", &["ls", &format!("{id1}:/src/a")]);
    assert_eq!(ls["snapshot_id"], id1, "{ls}");
    checked(&env, "ls", &["ls", "latest"]);
    let diff = checked(&env, "diff", &["diff", id1, id2]);
    assert_eq!(diff["added"].as_array().unwrap().len(), 1, "{diff}");
    checked(&env, "stats", &["stats"]);
    checked(&env, "check", &["check", "--read-data"]);
    let subset = checked(&env, "check", &["check", "--read-data-subset", "50%"]);
    assert_eq!(subset["read_data_subset"], 50.0, "{subset}");

    let target = env.path("restored");
    let restored = checked(
        &env,
        "restore",
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_eq!(restored["snapshot_id"], id2, "restore names its snapshot");

    let dr = env.path("dr");
    let copy = checked(&env, "copy", &["copy", "--to", dr.to_str().unwrap()]);
    assert_eq!(copy["copied"].as_array().unwrap().len(), 2, "{copy}");

    let dry = checked(&env, "forget", &["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["remove"], serde_json::json!([id1]), "{dry}");
    assert!(dry["prune"].is_null());
    assert_eq!(
        json_exit(&env, &["snapshots"], 0).as_array().unwrap().len(),
        2,
        "a dry run removes nothing"
    );
    let forget = checked(&env, "forget", &["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(forget["remove"], serde_json::json!([id1]), "{forget}");
    assert!(forget["prune"].is_object(), "{forget}");
    checked(&env, "prune", &["prune", "--dry-run"]);
    checked(&env, "prune", &["prune"]);

    let pw = env.path("second.pw");
    std::fs::write(&pw, "another password\n").unwrap();
    let added = checked(
        &env,
        "key-add",
        &[
            "key",
            "add",
            "--new-password-file",
            pw.to_str().unwrap(),
            "--kdf-memory",
            "1MiB",
        ],
    );
    let machine = env.path("machine.key");
    checked(
        &env,
        "key-add",
        &["key", "add", "--generate", machine.to_str().unwrap()],
    );
    let keys = checked(&env, "key-list", &["key", "list"]);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 3, "{keys}");
    checked(
        &env,
        "key-remove",
        &["key", "remove", &added["added"].as_str().unwrap()[..12]],
    );
    checked(&env, "migrate", &["migrate"]);

    let good = env.path("lifeboat.toml");
    std::fs::write(env.path("api.token"), "a-token-of-24-characters\n").unwrap();
    std::fs::write(
        &good,
        "[cluster]\nname = \"orders\"\n\n\
         [[cluster.member]]\nname = \"db1\"\nhost = \"127.0.0.1\"\nport = 5432\ndata_dir = \"/srv/pg1\"\n\n\
         [[cluster.member]]\nname = \"db2\"\nhost = \"127.0.0.1\"\nport = 5433\ndata_dir = \"/srv/pg2\"\n\n\
         [api]\ntoken_file = \"api.token\"\n",
    )
    .unwrap();
    checked(
        &env,
        "config-validate",
        &["config", "validate", "--config", good.to_str().unwrap()],
    );
    let bad = env.path("bad.toml");
    std::fs::write(
        &bad,
        "[cluster]\nname = \"orders\"\nreplication = \"semi\"\n",
    )
    .unwrap();
    let invalid = json_exit(
        &env,
        &["config", "validate", "--config", bad.to_str().unwrap()],
        2,
    );
    assert_schema("config-validate", &invalid);
    assert_eq!(invalid["valid"], false);

    // WAL archiving needs no server: a file with a WAL segment's name.
    let seg = env.path("000000010000000000000001");
    std::fs::write(&seg, text(1 << 20, 4)).unwrap();
    let pushed = checked(
        &env,
        "pg-wal-push",
        &["pg", "wal-push", "--source", SOURCE, seg.to_str().unwrap()],
    );
    assert!(
        pushed["outcome"]["stored"]["stored_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    let again = checked(
        &env,
        "pg-wal-push",
        &["pg", "wal-push", "--source", SOURCE, seg.to_str().unwrap()],
    );
    assert_eq!(again["outcome"], "already_stored");
    let fetched = env.path("fetched");
    checked(
        &env,
        "pg-wal-fetch",
        &[
            "pg",
            "wal-fetch",
            "--source",
            SOURCE,
            "000000010000000000000001",
            fetched.to_str().unwrap(),
        ],
    );
    let missing = json_exit(
        &env,
        &[
            "pg",
            "wal-fetch",
            "--source",
            SOURCE,
            "000000010000000000000002",
            fetched.to_str().unwrap(),
        ],
        1,
    );
    assert_schema("pg-wal-fetch", &missing);
    assert_eq!(missing["fetched"], false);
}

/// The PostgreSQL commands against a real PostgreSQL 15: pg backup, pg backups, pg restore
/// and pg verify print documents their schemas accept; the base backup is named by
/// `snapshot_id` everywhere, and `pg backups` reports its `stored_bytes` (the backup's
/// `summary.stored_bytes`), not a plaintext size.
#[test]
fn pg_commands_print_json_their_schemas_accept() {
    let shop = Shop::new();
    for id in 1..=3 {
        shop.insert(id);
    }
    let backup = shop.backup();
    assert_schema("pg-backup", &backup);
    shop.insert(4);
    shop.archive_now();
    let parse = |out: String| -> Value { serde_json::from_str(&out).unwrap() };

    let listing = parse(shop.lb_ok(&["pg", "backups", "--source", SOURCE, "--json"]));
    assert_schema("pg-backups", &listing);
    assert_eq!(listing["backups"][0]["snapshot_id"], backup["snapshot_id"]);
    assert_eq!(
        listing["backups"][0]["stored_bytes"], backup["summary"]["stored_bytes"],
        "pg backups and pg backup mean the same by stored_bytes"
    );

    let work = owner_tempdir("lifeboat-json-restore-").unwrap();
    let data = work.path().join("data");
    let restored = parse(shop.lb_ok(&[
        "pg",
        "restore",
        "--source",
        SOURCE,
        "--target",
        data.to_str().unwrap(),
        "--json",
    ]));
    assert_schema("pg-restore", &restored);
    assert_eq!(restored["backup"]["snapshot_id"], backup["snapshot_id"]);

    let scratch = work.path().join("scratch");
    let verified = parse(shop.lb_ok(&[
        "pg",
        "verify",
        "--source",
        SOURCE,
        "--latest",
        "--sql",
        "select count(*) from orders",
        "--scratch",
        scratch.to_str().unwrap(),
        "--json",
    ]));
    assert_schema("pg-verify", &verified);
    assert_eq!(verified["ok"], true, "{verified:#}");
    assert_eq!(verified["backup"]["snapshot_id"], backup["snapshot_id"]);
}

/// `dump` writes a file's bytes and `demo` a walk-through: neither has a JSON form, so
/// `--json` is refused with exit 2 (it used to be accepted and ignored), and nothing is
/// written on stdout.
#[test]
fn commands_without_json_output_refuse_the_flag() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let file = "latest:/src/f".to_string();
    assert_eq!(env.ok(&["dump", &file]).as_bytes(), b"content");
    let o = env.run(&["dump", &file, "--json"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "dump --json wrote to stdout");
    assert!(stderr(&o).contains("--json"), "{}", stderr(&o));
    let work = env.path("demo");
    let o = env.run(&["demo", "--workdir", work.to_str().unwrap(), "--json"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "demo --json wrote to stdout");
    assert!(!work.exists(), "demo --json did work before refusing");
}

/// docs/json.md and docs/schema/ agree: each documented command (a `## ` section) names a
/// schema, every schema it names exists and is a draft 2020-12 schema whose objects forbid
/// unknown fields, and no schema file is left undocumented.
#[test]
fn every_documented_command_has_a_schema_and_every_schema_is_documented() {
    let text = std::fs::read_to_string(docs().join("json.md")).unwrap();
    let files = schema_names();
    let mut named = BTreeSet::new();
    let mut sections = text.split("\n## ").skip(1).peekable();
    assert!(sections.peek().is_some(), "docs/json.md has no sections");
    for section in sections {
        let title = section.lines().next().unwrap_or("");
        let links: Vec<String> = section
            .match_indices("](schema/")
            .filter_map(|(i, m)| {
                let rest = &section[i + m.len()..];
                rest.split(".json)").next().map(str::to_string)
            })
            .collect();
        if title.starts_with('`') {
            assert!(
                !links.is_empty(),
                "docs/json.md section {title:?} links no schema (schema/NAME.json)"
            );
        }
        named.extend(links);
    }
    for n in &named {
        assert!(
            files.contains(n),
            "docs/json.md links schema/{n}.json, which does not exist"
        );
    }
    for f in &files {
        assert!(
            named.contains(f),
            "docs/schema/{f}.json is not linked from docs/json.md"
        );
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(docs().join("schema").join(format!("{f}.json"))).unwrap(),
        )
        .unwrap_or_else(|e| panic!("docs/schema/{f}.json: not JSON: {e}"));
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{f}"
        );
        jsonschema::options()
            .build(&schema)
            .unwrap_or_else(|e| panic!("docs/schema/{f}.json: not a valid schema: {e}"));
        assert_closed(f, "", &schema);
    }
}

/// Asserts every object schema within `s` has `additionalProperties: false`.
fn assert_closed(file: &str, at: &str, s: &Value) {
    match s {
        Value::Object(m) => {
            if m.contains_key("properties") {
                assert_eq!(
                    m.get("additionalProperties"),
                    Some(&Value::Bool(false)),
                    "docs/schema/{file}.json{at}: an object schema without \
                     \"additionalProperties\": false"
                );
            }
            for (k, v) in m {
                assert_closed(file, &format!("{at}/{k}"), v);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                assert_closed(file, &format!("{at}/{i}"), v);
            }
        }
        _ => {}
    }
}

/// A port with the five after it free too (quickstart takes six in a row).
fn port_base() -> u16 {
    for _ in 0..50 {
        let p = lifeboat_testkit::free_port().unwrap();
        if p <= u16::MAX - 7
            && (p..p + 6).all(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok())
        {
            return p;
        }
    }
    panic!("no six free ports in a row");
}

/// Stops the quickstart estate however the test ends.
struct Estate(PathBuf);

impl Drop for Estate {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
                .args(["quickstart", "--stop", "--dir"])
                .arg(&self.0)
                .output();
        }
    }
}

/// The daemon's documents: `quickstart --detach --json`, `status --json` (healthy, then
/// after the primary is killed and failed over: the last transition's steps in
/// `at_seconds`, alerts with an RFC 3339 `time`), and `maintenance on/off --json`.
#[test]
fn daemon_commands_print_json_their_schemas_accept() {
    let tmp = tempfile::Builder::new().prefix("lb-qs-").tempdir().unwrap();
    let dir = tmp.path().join("estate");
    // No repository or password from the environment: quickstart makes its own.
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .env_remove("LIFEBOAT_REPOSITORY")
            .env_remove("LIFEBOAT_PASSWORD")
            .env_remove("LIFEBOAT_PASSWORD_FILE")
            .args(args)
            .output()
            .unwrap()
    };
    let checked = |schema: &str, args: &[&str]| {
        let mut a = args.to_vec();
        a.push("--json");
        let o = run(&a);
        assert_eq!(code(&o), 0, "lifeboat {a:?}: {}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_schema(schema, &v);
        v
    };
    let config = dir.join("lifeboat.toml");
    let cfg = config.to_str().unwrap().to_string();
    let d = dir.to_str().unwrap().to_string();
    let mut attempt = 0;
    let (_estate, started) = loop {
        attempt += 1;
        let base = port_base().to_string();
        let o = run(&[
            "quickstart",
            "--detach",
            "--port-base",
            &base,
            "--dir",
            &d,
            "--json",
        ]);
        if code(&o) == 0 {
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            break (Estate(dir.clone()), v);
        }
        // Ports can be taken between the check and the start: retry with another base.
        let log = std::fs::read_to_string(dir.join("lifeboat.log")).unwrap_or_default();
        let _ = run(&["quickstart", "--stop", "--dir", &d]);
        assert!(
            attempt < 3 && log.contains("in use"),
            "quickstart failed: {}\nlog: {log}",
            stderr(&o)
        );
    };
    assert_schema("quickstart", &started);
    let status = checked("status", &["status", "--config", &cfg]);
    let primary = status["primary"].as_str().unwrap().to_string();
    let target = status["failover_target"].as_str().unwrap().to_string();

    let on = checked("daemon-command", &["maintenance", "on", "--config", &cfg]);
    assert!(
        on.get("result").is_some() || on.get("error").is_some(),
        "{on}"
    );
    checked("daemon-command", &["maintenance", "off", "--config", &cfg]);

    let pid = std::fs::read_to_string(dir.join(format!("pg/{primary}/postmaster.pid")))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let after = loop {
        let o = run(&["status", "--config", &cfg, "--json"]);
        if let Ok(v) = serde_json::from_slice::<Value>(&o.stdout) {
            if code(&o) == 0
                && v["primary"] == target.as_str()
                && v["phase"] == "healthy"
                && v["last_transition"]["steps"].as_array().is_some()
            {
                break v;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failover to {target} 30 s after the kill: {}",
            stderr(&o)
        );
        // Polling a daemon with a deadline; there is nothing to wait on.
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_schema("status", &after);
    assert!(
        after["last_transition"]["steps"][0]["at_seconds"].is_number(),
        "{after:#}"
    );
    assert!(!after["alerts"].as_array().unwrap().is_empty(), "{after:#}");
}
