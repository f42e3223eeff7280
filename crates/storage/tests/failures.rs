//! How storage fails: transient failures are retried with backoff and end in a bounded time
//! with an error naming the object; permanent ones fail at once; no error, `Debug` or
//! `Display` ever shows a credential.

// Tests may unwrap: a panic is the failure report (STYLE.md §7 allows it in tests).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use lifeboat_storage::{ErrorKind, Location, S3Location, SecretString, Storage, StorageOptions};
use lifeboat_testkit::{GarageServer, HangingServer, StatusServer};

const SECRET: &str = "sEcReT-NeVeR-PrInT-0123456789abcdef";

fn s3_at(endpoint: &str, secret: &str) -> Location {
    Location::S3(S3Location {
        bucket: "shop-backups".into(),
        prefix: "eu/prod".into(),
        endpoint: Some(endpoint.into()),
        region: Some("garage".into()),
        access_key_id: Some("GK0123456789".into()),
        secret_access_key: Some(SecretString::new(secret.into())),
    })
}

/// Short timeouts and delays so a test proves bounded failure in seconds.
fn quick(max_attempts: usize) -> StorageOptions {
    StorageOptions {
        max_attempts,
        op_timeout: Duration::from_millis(400),
        io_timeout: Duration::from_millis(400),
        retry_min_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(100),
    }
}

/// Everything a user could ever see of an error: Display, alternate Display, Debug, and
/// every source in the chain.
fn all_text(e: &lifeboat_storage::Error) -> String {
    let mut text = format!("{e} | {e:#} | {e:?}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(&format!(" | {s} | {s:?}"));
        src = s.source();
    }
    text
}

#[test]
fn hanging_server_times_out_after_retries_naming_the_object() {
    let server = HangingServer::start().unwrap();
    let s = Storage::open(&s3_at(&server.endpoint(), SECRET), &quick(3)).unwrap();

    let started = Instant::now();
    let e = s.get("data/ab/ab12").unwrap_err();
    let took = started.elapsed();

    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.is_transient());
    assert!(
        e.to_string().contains("data/ab/ab12"),
        "names the object: {e}"
    );
    assert!(e.to_string().contains("timeout"), "says it timed out: {e}");
    assert!(took < Duration::from_secs(10), "bounded: took {took:?}");
    assert_eq!(server.accepted(), 3, "one connection per attempt");
    assert!(!all_text(&e).contains(SECRET));

    let e = s.put("index/0001", vec![1; 1024]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains("index/0001"), "{e}");
}

#[test]
fn server_errors_are_retried_then_reported_as_transient() {
    let server = StatusServer::start(503).unwrap();
    let s = Storage::open(&s3_at(&server.endpoint(), SECRET), &quick(4)).unwrap();
    let e = s.get("snapshots/42").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains("snapshots/42"), "{e}");
    assert_eq!(server.requests(), 4, "max_attempts requests, then give up");
    assert!(!all_text(&e).contains(SECRET));
}

#[test]
fn permission_denied_fails_fast_without_retry() {
    let server = StatusServer::start(403).unwrap();
    let mut options = quick(5);
    options.retry_min_delay = Duration::from_secs(5);
    options.retry_max_delay = Duration::from_secs(5);
    let s = Storage::open(&s3_at(&server.endpoint(), SECRET), &options).unwrap();

    let started = Instant::now();
    let e = s.put("data/ab/ab12", vec![0; 100]).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "no backoff before failing"
    );
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(!e.is_transient());
    assert!(e.to_string().contains("data/ab/ab12"), "{e}");
    assert!(
        e.to_string().contains("AWS_SECRET_ACCESS_KEY"),
        "hints at the fix: {e}"
    );
    assert_eq!(server.requests(), 1);
    assert!(!all_text(&e).contains(SECRET));
}

#[test]
fn secrets_never_appear_in_location_storage_or_errors() {
    let env = |k: &str| match k {
        "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9".to_string()),
        "AWS_ACCESS_KEY_ID" => Some("GK0123456789".to_string()),
        "AWS_SECRET_ACCESS_KEY" => Some(SECRET.to_string()),
        _ => None,
    };
    let loc = Location::parse("s3://shop-backups/eu/prod", &env).unwrap();
    let s = Storage::open(&loc, &quick(2)).unwrap();
    // Nothing listens on port 9 (discard): connection refused, retried, then reported.
    let e = s.stat("keys/master").unwrap_err();
    for text in [
        format!("{loc}"),
        format!("{loc:?}"),
        format!("{loc:#?}"),
        format!("{s:?}"),
        s.describe().to_string(),
        all_text(&e),
    ] {
        assert!(!text.contains(SECRET), "secret leaked in: {text}");
    }
    assert!(e.to_string().contains("keys/master"), "{e}");
    assert_eq!(
        e.kind(),
        ErrorKind::Transient,
        "connection refused is retried: {e}"
    );

    // Half a key pair is a configuration error that says what to set, not a hang.
    let half = |k: &str| (k == "AWS_SECRET_ACCESS_KEY").then(|| SECRET.to_string());
    let loc = Location::parse("s3://b/p", &half).unwrap();
    let e = Storage::open(&loc, &quick(2)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");
    assert!(!all_text(&e).contains(SECRET));
}

#[test]
fn garage_wrong_secret_is_permission_denied_and_not_leaked() {
    let garage = GarageServer::start().unwrap_or_else(|e| panic!("{e}"));
    let wrong = format!("{}x", &garage.secret_access_key()[1..]);
    let env = |k: &str| match k {
        "AWS_SECRET_ACCESS_KEY" => Some(wrong.clone()),
        _ => garage.env(k),
    };
    let loc = Location::parse(&format!("s3://{}/p", garage.bucket()), &env).unwrap();
    let mut options = quick(5);
    options.retry_min_delay = Duration::from_secs(5);
    let s = Storage::open(&loc, &options).unwrap();
    let started = Instant::now();
    let e = s.put("data/ab/ab12", vec![1; 10]).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "no retries for 403"
    );
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("data/ab/ab12"), "{e}");
    let text = all_text(&e);
    assert!(!text.contains(&wrong) && !text.contains(garage.secret_access_key()));
}

#[test]
fn garage_going_away_gives_a_bounded_transient_error() {
    let garage = GarageServer::start().unwrap_or_else(|e| panic!("{e}"));
    let env = |k: &str| garage.env(k);
    let loc = Location::parse(&format!("s3://{}/p", garage.bucket()), &env).unwrap();
    let s = Storage::open(&loc, &quick(3)).unwrap();
    s.put("data/ab/ab12", vec![1; 10]).unwrap();
    let secret = garage.secret_access_key().to_string();
    drop(garage); // kills the server by PID

    let started = Instant::now();
    let e = s.get("data/ab/ab12").unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains("data/ab/ab12"), "{e}");
    assert!(!all_text(&e).contains(&secret));
}
