//! The S3 path end to end, against a real S3-compatible server (Garage) started on
//! 127.0.0.1: init, backup, snapshots, restore, check, copy between S3 and local, prune.

#![allow(clippy::unwrap_used)] // tests: a failed setup step should panic

mod common;

use common::*;
use lifeboat_testkit::GarageServer;

fn s3_cmd(env: &Env, g: &GarageServer, url: &str) -> std::process::Command {
    let mut c = env.cmd();
    c.env("LIFEBOAT_REPOSITORY", url)
        .env("AWS_ENDPOINT_URL", g.endpoint())
        .env("AWS_REGION", g.region())
        .env("AWS_ACCESS_KEY_ID", g.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", g.secret_access_key());
    c
}

fn ok(mut c: std::process::Command, args: &[&str]) -> String {
    let o = c.args(args).output().unwrap();
    assert!(
        o.status.success(),
        "lifeboat {args:?}: {:?}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn garage_a_repository_on_s3_backs_up_restores_checks_copies_and_prunes() {
    let g = GarageServer::start().expect("start Garage (install it with `cargo xtask setup`)");
    let env = Env::new();
    let url = format!("s3://{}/shop/prod", g.bucket());
    let src = env.path("src");
    std::fs::create_dir_all(src.join("orders")).unwrap();
    for i in 0..30u64 {
        std::fs::write(src.join(format!("orders/{i}.json")), text(30_000, i)).unwrap();
    }
    std::fs::write(src.join("photo.jpg"), noise(3_000_000, 1)).unwrap();

    ok(
        s3_cmd(&env, &g, &url),
        &["init", "--kdf-memory", "1MiB", "--pack-size", "1MiB"],
    );
    ok(s3_cmd(&env, &g, &url), &["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("orders/new.json"), b"{}").unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(
        s3_cmd(&env, &g, &url),
        &["backup", src.to_str().unwrap(), "--json"],
    ))
    .unwrap();
    assert_eq!(
        v["summary"]["files_read"], 1,
        "unchanged files skipped on S3 too: {v}"
    );
    let snaps: serde_json::Value =
        serde_json::from_str(&ok(s3_cmd(&env, &g, &url), &["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2);

    let t = env.path("restored");
    ok(
        s3_cmd(&env, &g, &url),
        &["restore", "latest", "--target", t.to_str().unwrap()],
    );
    assert_same_tree(&src, &t.join("src"));
    ok(s3_cmd(&env, &g, &url), &["check", "--read-data"]);

    // DR copy from S3 to a local repository, then back from local to a second S3 prefix.
    let dr = env.path("dr");
    ok(
        s3_cmd(&env, &g, &url),
        &["copy", "--to", dr.to_str().unwrap()],
    );
    let local = Env {
        dir: tempfile::tempdir().unwrap(),
        repo: dr,
    };
    let t2 = env.path("restored-dr");
    local.ok(&["restore", "latest", "--target", t2.to_str().unwrap()]);
    assert_same_tree(&src, &t2.join("src"));
    let url2 = format!("s3://{}/shop/dr", g.bucket());
    let mut c = s3_cmd(&env, &g, &url2);
    c.env("LIFEBOAT_REPOSITORY", &local.repo);
    ok(c, &["copy", "--to", &url2]);
    ok(s3_cmd(&env, &g, &url2), &["check", "--read-data"]);

    // Forget + prune on S3 leaves a healthy repository whose remaining snapshot restores.
    ok(
        s3_cmd(&env, &g, &url),
        &["forget", "--keep-last", "1", "--prune"],
    );
    ok(s3_cmd(&env, &g, &url), &["check", "--read-data"]);
    let t3 = env.path("restored-after-prune");
    ok(
        s3_cmd(&env, &g, &url),
        &["restore", "latest", "--target", t3.to_str().unwrap()],
    );
    assert_same_tree(&src, &t3.join("src"));
}

#[test]
fn garage_wrong_s3_credentials_fail_fast_with_a_clear_message_and_no_secret() {
    let g = GarageServer::start().expect("start Garage (install it with `cargo xtask setup`)");
    let env = Env::new();
    let url = format!("s3://{}/x", g.bucket());
    let o = s3_cmd(&env, &g, &url)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
        .args(["init", "--kdf-memory", "1MiB"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(!err.contains("not-the-secret"), "secret leaked: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
}
