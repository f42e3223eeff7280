//! `lifeboat quickstart --detach` end to end with the built binary: a two-member sync
//! cluster, its daemon, proxy and API come up; `status --json` shows them; the primary's
//! loss is failed over; `--stop` removes everything and leaves no server running. And
//! `status` without a daemon says so (exit 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lifeboat_testkit::free_port;

fn lifeboat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    c.env_remove("LIFEBOAT_REPOSITORY")
        .env_remove("LIFEBOAT_PASSWORD")
        .env_remove("LIFEBOAT_PASSWORD_FILE");
    c
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A port with the five after it free too (quickstart takes six in a row).
fn port_base() -> u16 {
    let mut last = String::new();
    for _ in 0..50 {
        let p = free_port().unwrap();
        if p > u16::MAX - 7 {
            continue;
        }
        match (p..p + 6).try_for_each(|q| std::net::TcpListener::bind(("127.0.0.1", q)).map(drop)) {
            Ok(()) => return p,
            Err(e) => last = format!("{p}: {e}"),
        }
    }
    panic!("no six free ports in a row (last: {last})");
}

/// Processes whose working directory is inside `dir` (PostgreSQL's run in their data
/// directory) or whose command line names it (the daemon, the WAL streamer).
fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .replace('\0', " ");
        let inside =
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(dir));
        if inside || cmd.contains(&dir.display().to_string()) {
            out.push((pid, cmd));
        }
    }
    out
}

fn status(config: &Path) -> (Output, Option<serde_json::Value>) {
    let o = lifeboat()
        .args(["--json", "status", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout).ok();
    (o, v)
}

/// Stops the estate however the test ends.
struct Estate {
    dir: std::path::PathBuf,
}

impl Drop for Estate {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = lifeboat()
                .args(["quickstart", "--stop", "--dir"])
                .arg(&self.dir)
                .output();
        }
    }
}

#[test]
fn quickstart_detaches_fails_over_and_stops_cleanly() {
    let tmp = tempfile::Builder::new().prefix("lb-qs-").tempdir().unwrap();
    let dir = tmp.path().join("estate");
    let config = dir.join("lifeboat.toml");
    let started = Instant::now();
    // The daemon tells systemd it is ready (Type=notify): a notify socket as systemd makes.
    let notify_path = tmp.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    // Ports can be taken between the check and the start: retry with another base.
    let mut attempt = 0;
    let estate = loop {
        attempt += 1;
        let base = port_base();
        let o = lifeboat()
            .env("NOTIFY_SOCKET", &notify_path)
            .args([
                "quickstart",
                "--detach",
                "--port-base",
                &base.to_string(),
                "--dir",
            ])
            .arg(&dir)
            .output()
            .unwrap();
        if o.status.success() {
            println!("{}", String::from_utf8_lossy(&o.stdout));
            break Estate { dir: dir.clone() };
        }
        let log = std::fs::read_to_string(dir.join("lifeboat.log")).unwrap_or_default();
        let _ = lifeboat()
            .args(["quickstart", "--stop", "--dir"])
            .arg(&dir)
            .output();
        assert!(
            attempt < 3 && log.contains("in use"),
            "quickstart failed: {}\nlog: {log}",
            text(&o)
        );
    };
    println!("quickstart up in {:.1} s", started.elapsed().as_secs_f64());
    // The detached daemon said READY=1 once its listeners were up (blocking read, bounded).
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .expect("the daemon never notified READY=1");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        msg.lines().any(|l| l == "READY=1"),
        "notify message: {msg:?}"
    );

    let (o, v) = status(&config);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = v.unwrap_or_else(|| panic!("status --json printed no JSON: {}", text(&o)));
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{v:#}");
    let primary = v["primary"].as_str().unwrap().to_string();
    let target = v["failover_target"].as_str().unwrap().to_string();
    assert_ne!(primary, target);
    assert!(members
        .iter()
        .any(|m| m["name"] == primary.as_str() && m["role"] == "primary"));
    assert!(members
        .iter()
        .any(|m| m["name"] == target.as_str() && m["role"] == "standby"));

    // The primary dies.
    let pid: u32 = std::fs::read_to_string(dir.join(format!("pg/{primary}/postmaster.pid")))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let killed = Instant::now();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = killed + Duration::from_secs(15);
    let v = loop {
        let (o, v) = status(&config);
        if let Some(v) = v {
            if v["primary"] == target.as_str()
                && v["phase"] == "healthy"
                && o.status.code() == Some(0)
            {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new primary 15 s after the kill: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "status shows {target} as the primary {:.3} s after the kill (generation {})",
        killed.elapsed().as_secs_f64(),
        v["coordinator"]["generation"]
    );

    // Stop and remove it all.
    let stopping = Instant::now();
    let o = lifeboat()
        .args(["quickstart", "--stop", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    println!(
        "stopped and removed in {:.1} s",
        stopping.elapsed().as_secs_f64()
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
    let left = processes_in(&dir);
    assert!(
        left.is_empty(),
        "processes still run in the estate: {left:?}"
    );
    drop(estate);
}

#[test]
fn status_without_a_daemon_exits_3_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let api = free_port().unwrap();
    let config = tmp.path().join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nname = \"orders\"\nreplication = \"async\"\n\
             [[cluster.member]]\nname = \"m1\"\nhost = \"127.0.0.1\"\nport = {}\ndata_dir = \"{}/m1\"\n\
             [coordinator]\nurl = \"embedded\"\nstate = \"{}/state.sqlite\"\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\ntoken = \"test-token-0123456789\"\n",
            free_port().unwrap(),
            tmp.path().display(),
            tmp.path().display()
        ),
    )
    .unwrap();
    let o = lifeboat()
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    println!("{}", text(&o));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not answer") && err.contains(&api.to_string()),
        "{err}"
    );
    assert!(
        err.contains("lifeboat run"),
        "the hint names the fix: {err}"
    );
}
