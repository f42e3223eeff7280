//! The high-availability commands: `run` (the daemon), `status`, `failover approve`,
//! `switchover`, `maintenance`, `cluster bootstrap` and `quickstart`.
//!
//! `run` and `cluster bootstrap` work from the config file; the others ask the running
//! daemon over its HTTP API (address and token from the same config file). Exit codes:
//! 0 done (status: the cluster takes writes), 1 the cluster does not take writes or the
//! daemon refused, 2 usage or config mistakes, 3 the daemon cannot be reached or failed.
//! Never here: failover logic (the daemon's), or a token on stdout or in an error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use lifeboat_server::{Daemon, DaemonOptions, Status};

use crate::cli::Global;
use crate::commands::usage;
use crate::output::{json, line};
use crate::{Exit, EXIT_DAMAGE, EXIT_OK, EXIT_RUNTIME};

/// Where the config file is.
#[derive(Debug, Clone, ClapArgs)]
pub struct ConfigArg {
    /// The daemon's config file.
    #[arg(
        short = 'c',
        long,
        env = "LIFEBOAT_CONFIG",
        default_value = "/etc/lifeboat/lifeboat.toml"
    )]
    pub config: PathBuf,
}

/// `run`.
#[derive(Debug, ClapArgs)]
pub struct RunCmd {
    #[command(flatten)]
    cfg: ConfigArg,
    /// With the etcd coordinator: the member of this node, whose PostgreSQL this agent
    /// watches and acts on (required there; one agent per database node).
    #[arg(long, env = "LIFEBOAT_MEMBER")]
    member: Option<String>,
}

/// `status`.
#[derive(Debug, ClapArgs)]
pub struct StatusCmd {
    #[command(flatten)]
    cfg: ConfigArg,
}

/// `failover ...`.
#[derive(Debug, Subcommand)]
pub enum FailoverCmd {
    /// Go ahead with a failover the daemon holds (manual mode, or no safe candidate), or
    /// fail over now.
    Approve {
        #[command(flatten)]
        cfg: ConfigArg,
        /// The member to promote (default: the best candidate).
        #[arg(long)]
        to: Option<String>,
    },
}

/// `switchover`.
#[derive(Debug, ClapArgs)]
pub struct SwitchoverCmd {
    #[command(flatten)]
    cfg: ConfigArg,
    /// The standby to promote.
    #[arg(long)]
    to: String,
}

/// on | off.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    /// Pause automation.
    On,
    /// Resume automation.
    Off,
}

/// `maintenance`.
#[derive(Debug, ClapArgs)]
pub struct MaintenanceCmd {
    #[command(flatten)]
    cfg: ConfigArg,
    /// on: pause automatic failover, rejoin and recovery; off: resume.
    #[arg(value_enum)]
    state: OnOff,
}

/// `cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Create the first member (or adopt an existing cluster) and clone the others from it
    /// with streaming replication and replication slots.
    Bootstrap {
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

/// `quickstart`.
#[derive(Debug, ClapArgs)]
pub struct QuickstartCmd {
    /// Where the estate lives (created; a second run reuses it).
    #[arg(long)]
    dir: PathBuf,
    /// First of six consecutive ports: two PostgreSQL members, the proxy's write and
    /// read ports, the API.
    #[arg(long, default_value_t = 15432)]
    port_base: u16,
    /// Run in the background (log in DIR/lifeboat.log); `--stop` stops it.
    #[arg(long)]
    detach: bool,
    /// Stop a detached estate, its PostgreSQL servers, and remove DIR.
    #[arg(long, conflicts_with = "detach")]
    stop: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn load(path: &Path) -> Result<lifeboat_config::Config> {
    lifeboat_config::load(path, &env).map_err(|problems| {
        usage(
            problems.to_string(),
            Some("`lifeboat config validate --config FILE` lists every mistake with its fix"),
        )
    })
}

/// Runs `run`.
pub fn run_daemon(_g: &Global, c: &RunCmd) -> Result<u8> {
    let config = load(&c.cfg.config)?;
    // Valid but unsafe (a secret others can read, an API open to the network): the daemon
    // runs, and says so once in its log.
    for w in config.warnings.to_string().lines() {
        tracing::warn!("config: {w}");
    }
    let rt = runtime()?;
    let code = rt.block_on(async {
        let options = DaemonOptions {
            member: c.member.clone(),
            ..DaemonOptions::default()
        };
        let d = Daemon::start(config, options).await.map_err(|e| {
            anyhow::Error::new(Exit {
                code: EXIT_RUNTIME,
                message: e.to_string(),
                hint: None,
            })
        })?;
        eprintln!(
            "lifeboat: running; API http://{}, proxy writes {}, reads {}",
            d.api_addr(),
            d.write_addr().map_or("-".into(), |a| a.to_string()),
            d.read_addr().map_or("-".into(), |a| a.to_string())
        );
        serve(d).await;
        eprintln!("lifeboat: stopped");
        Ok::<u8, anyhow::Error>(EXIT_OK)
    });
    // A repair still running on the blocking pool (a rewind, a wait for streaming) must
    // not hold the exit: it is abandoned, and redone by the next daemon.
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    code
}

/// Runs a started daemon until SIGINT/SIGTERM, telling systemd (Type=notify) that it is
/// ready (every listener is bound by now) and, at the end, that it is stopping. Outside
/// systemd (no `NOTIFY_SOCKET`) the notifications do nothing; failing to send one is
/// logged, never fatal.
async fn serve(d: Daemon) {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot tell systemd the daemon is ready: {e}");
    }
    d.run_until(shutdown_signal()).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// How long an exiting daemon waits for work still running on the blocking pool.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon runs until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The daemon's API, from the config: base URL and token.
struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    fn from_config(path: &Path) -> Result<Self> {
        let config = load(path)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .context("build the HTTP client")?;
        Ok(Api {
            base: format!("http://{}", config.api.listen),
            token: config.api.token.expose().clone(),
            client,
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        anyhow::Error::new(Exit {
            code: EXIT_RUNTIME,
            message: format!(
                "the daemon's API at {} does not answer: {}",
                self.base,
                short(e)
            ),
            hint: Some(
                "is `lifeboat run` (or `lifeboat quickstart`) running with this config?".into(),
            ),
        })
    }

    async fn status(&self) -> Result<Status> {
        let r = self
            .client
            .get(format!("{}/status", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if r.status() == reqwest::StatusCode::UNAUTHORIZED {
            bail!(Exit {
                code: EXIT_RUNTIME,
                message: "the daemon refused the token in [api]".into(),
                hint: Some("the config's token must be the running daemon's".into())
            });
        }
        r.json::<Status>().await.context("read the daemon's status")
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<(bool, serde_json::Value)> {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let ok = r.status().is_success();
        let v = r.json::<serde_json::Value>().await.unwrap_or_default();
        Ok((ok, v))
    }
}

fn short(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s = format!("{s}: {inner}");
        src = inner.source();
    }
    s
}

fn takes_writes(s: &Status) -> bool {
    s.phase == "healthy" && (s.proxy.routed_to.is_some() || s.proxy.write.is_none())
}

/// Ready for a disaster: takes writes, and a failover would not need approval.
fn protected(s: &Status) -> bool {
    takes_writes(s) && s.failover_target.is_some()
}

/// Runs `status`.
pub fn status(g: &Global, c: &StatusCmd) -> Result<u8> {
    let api = Api::from_config(&c.cfg.config)?;
    let s = runtime()?.block_on(api.status())?;
    if g.json {
        json(&s)?;
    } else if !g.quiet {
        render(&s)?;
    }
    Ok(if takes_writes(&s) {
        EXIT_OK
    } else {
        EXIT_DAMAGE
    })
}

fn render(s: &Status) -> Result<()> {
    let mut head = format!(
        "cluster {}: {}, {} replication, {} failover, generation {}",
        s.cluster,
        s.phase.replace('_', " "),
        s.replication,
        s.failover,
        s.coordinator.generation
    );
    if s.maintenance {
        head.push_str(", MAINTENANCE (automation paused)");
    }
    line(&head)?;
    if let Some(r) = &s.reason {
        line(&format!("  waiting: {r}"))?;
    }
    line(&format!(
        "coordinator: {} ({})",
        s.coordinator.kind, s.coordinator.location
    ))?;
    line(&format!(
        "proxy: writes {} → {}, reads {}; {} connections open, {} closed on switch",
        s.proxy.write.as_deref().unwrap_or("-"),
        s.proxy.routed_to.as_deref().unwrap_or("(held: no primary)"),
        s.proxy.read.as_deref().unwrap_or("-"),
        s.proxy.active,
        s.proxy.closed_on_switch
    ))?;
    line(&format!("api: http://{}", s.api))?;
    match &s.failover_target {
        Some(t) => line(&format!("failover target: {t}"))?,
        None if s.phase == "healthy" => line("failover target: none (losing the primary now would wait for `lifeboat failover approve`)")?,
        None => {}
    }
    line("")?;
    line(&format!(
        "{:<10} {:<8} {:<6} {:>8} {:<22} {:>3} {:<12} {}",
        "MEMBER", "ROLE", "STATE", "PID", "ADDRESS", "TL", "LSN", "LAG"
    ))?;
    for m in &s.members {
        let lsn = m
            .current_lsn
            .clone()
            .or_else(|| m.receive_lsn.clone())
            .unwrap_or_else(|| "-".into());
        let lag = match (m.lag_bytes, m.lag_seconds) {
            (Some(b), Some(t)) => format!("{b} B, {t:.1} s"),
            (Some(b), None) => format!("{b} B"),
            _ => String::new(),
        };
        let mut role = m.role.clone();
        if m.needs_rejoin {
            role.push('*');
        }
        line(&format!(
            "{:<10} {:<8} {:<6} {:>8} {:<22} {:>3} {:<12} {}",
            m.name,
            role,
            m.state,
            m.pid.map_or("-".into(), |p| p.to_string()),
            m.address,
            m.timeline.map_or("-".into(), |t| t.to_string()),
            lsn,
            lag
        ))?;
    }
    if s.members.iter().any(|m| m.needs_rejoin) {
        line("  * former primary: being rewound to follow the new one")?;
    }
    if let Some(t) = &s.last_transition {
        line("")?;
        line(&format!(
            "last {}: {} → {} (generation {})",
            t["kind"].as_str().unwrap_or("change"),
            t["from"].as_str().unwrap_or("?"),
            t["to"].as_str().unwrap_or("?"),
            t["generation"]
        ))?;
        if let Some(steps) = t["steps"].as_array() {
            let at = |x: &serde_json::Value| x["at_seconds"].as_f64().unwrap_or(0.0);
            let first = steps.first().map(at).unwrap_or(0.0);
            for st in steps {
                line(&format!(
                    "  +{:>6.0} ms  {}",
                    ((at(st) - first) * 1000.0).max(0.0),
                    st["what"].as_str().unwrap_or("")
                ))?;
            }
        }
    }
    if let Some(a) = s.alerts.last() {
        line("")?;
        line(&format!("last alert ({}): {}", a.severity, a.message))?;
    }
    Ok(())
}

fn command(g: &Global, cfg: &ConfigArg, path: &str, body: serde_json::Value) -> Result<u8> {
    let api = Api::from_config(&cfg.config)?;
    let (ok, v) = runtime()?.block_on(api.post(path, body))?;
    // Every --json document is an object (docs/json.md), whatever the daemon sent.
    let v = if v.is_object() {
        v
    } else {
        serde_json::json!({ "error": format!("the daemon answered {v}") })
    };
    if g.json {
        json(&v)?;
    } else if !g.quiet {
        let text = v["result"]
            .as_str()
            .or_else(|| v["error"].as_str())
            .unwrap_or("");
        line(text)?;
    }
    let refused = v["result"].as_str().is_some_and(|r| {
        r.contains("nothing done") || r.contains("no healthy") || r.contains("not a healthy")
    });
    Ok(if ok && !refused { EXIT_OK } else { EXIT_DAMAGE })
}

/// Runs `failover approve`.
pub fn failover(g: &Global, c: &FailoverCmd) -> Result<u8> {
    match c {
        FailoverCmd::Approve { cfg, to } => {
            command(g, cfg, "/failover/approve", serde_json::json!({ "to": to }))
        }
    }
}

/// Runs `switchover`.
pub fn switchover(g: &Global, c: &SwitchoverCmd) -> Result<u8> {
    command(g, &c.cfg, "/switchover", serde_json::json!({ "to": c.to }))
}

/// Runs `maintenance`.
pub fn maintenance(g: &Global, c: &MaintenanceCmd) -> Result<u8> {
    let on = matches!(c.state, OnOff::On);
    command(g, &c.cfg, "/maintenance", serde_json::json!({ "on": on }))
}

/// Runs `cluster bootstrap`.
pub fn cluster(g: &Global, c: &ClusterCmd) -> Result<u8> {
    let ClusterCmd::Bootstrap { cfg } = c;
    let config = load(&cfg.config)?;
    let report = runtime()?
        .block_on(lifeboat_server::bootstrap::bootstrap(&config, None))
        .map_err(|e| {
            anyhow::Error::new(Exit {
                code: EXIT_RUNTIME,
                message: e.to_string(),
                hint: None,
            })
        })?;
    if g.json {
        json(&report)?;
    } else if !g.quiet {
        for (m, what) in &report.members {
            line(&format!("{m}: {what}"))?;
        }
        line(&format!(
            "primary {} at generation {}, in {:.1} s",
            report.primary, report.generation, report.duration_seconds
        ))?;
    }
    Ok(EXIT_OK)
}

// ---------------------------------------------------------------------------------------
// quickstart

const MARKER: &str = "# lifeboat quickstart estate";

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn random_token() -> Result<String> {
    let mut buf = [0u8; 18];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .context("read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the estate's files (once) and returns the config path.
fn estate(dir: &Path, base: u16) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    // PostgreSQL runs as `postgres` and must reach its data directories below this one.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let dir = dir.canonicalize()?;
    let config = dir.join("lifeboat.toml");
    if config.exists() {
        let text = std::fs::read_to_string(&config)?;
        if !text.starts_with(MARKER) {
            bail!(usage(
                format!("{} exists and is not a quickstart estate", config.display()),
                Some("choose an empty --dir"),
            ));
        }
        return Ok(config);
    }
    let ports: Vec<u16> = (0..6).map(|i| base.saturating_add(i)).collect();
    write_private(&dir.join("api.token"), &format!("{}\n", random_token()?))?;
    write_private(
        &dir.join("repo.password"),
        &format!("{}\n", random_token()?),
    )?;
    let text = format!(
        "{MARKER} (lifeboat quickstart --dir {d} --stop removes it)\n\
         [cluster]\nname = \"quickstart\"\nreplication = \"sync\"\nfailover = \"automatic\"\n\n\
         [[cluster.member]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\nport = {p0}\ndata_dir = \"{d}/pg/pg1\"\n\n\
         [[cluster.member]]\nname = \"pg2\"\nhost = \"127.0.0.1\"\nport = {p1}\ndata_dir = \"{d}/pg/pg2\"\n\n\
         [coordinator]\nurl = \"embedded\"\nstate = \"{d}/state.sqlite\"\n\n\
         [proxy]\nlisten = \"127.0.0.1:{p2}\"\nread_listen = \"127.0.0.1:{p3}\"\n\n\
         [api]\nlisten = \"127.0.0.1:{p4}\"\ntoken_file = \"api.token\"\n",
        d = dir.display(),
        p0 = ports[0],
        p1 = ports[1],
        p2 = ports[2],
        p3 = ports[3],
        p4 = ports[4],
    );
    std::fs::write(&config, text)?;
    Ok(config)
}

fn lifeboat_exe() -> Result<PathBuf> {
    std::env::current_exe().context("find this program's path")
}

/// `lifeboat --repo DIR/repo --password-file DIR/repo.password ARGS...`, quietly.
fn repo_cmd(dir: &Path, args: &[&str]) -> Result<std::process::Output> {
    std::process::Command::new(lifeboat_exe()?)
        .arg("--repo")
        .arg(dir.join("repo"))
        .arg("--password-file")
        .arg(dir.join("repo.password"))
        .arg("--no-progress")
        .args(args)
        .env_remove("LIFEBOAT_REPOSITORY")
        .env_remove("LIFEBOAT_PASSWORD")
        .env_remove("LIFEBOAT_PASSWORD_FILE")
        .output()
        .context("run lifeboat")
}

/// `lifeboat pg stream` into the estate's repository, logging to DIR/stream.log.
fn spawn_streamer(dir: &Path, dsn: &str) -> Result<std::process::Child> {
    let log = std::fs::File::create(dir.join("stream.log"))?;
    std::process::Command::new(lifeboat_exe()?)
        .arg("--repo")
        .arg(dir.join("repo"))
        .arg("--password-file")
        .arg(dir.join("repo.password"))
        .args([
            "--no-progress",
            "pg",
            "stream",
            "--source",
            "quickstart",
            "--dsn",
            dsn,
        ])
        .env_remove("LIFEBOAT_REPOSITORY")
        .env_remove("LIFEBOAT_PASSWORD")
        .env_remove("LIFEBOAT_PASSWORD_FILE")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start the WAL streamer")
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("lifeboat.pid")
}

/// Runs `quickstart`.
pub fn quickstart(g: &Global, c: &QuickstartCmd) -> Result<u8> {
    if c.stop {
        return quickstart_stop(g, &c.dir);
    }
    if c.port_base > u16::MAX - 6 {
        bail!(usage("--port-base leaves no room for six ports", None));
    }
    let config_path = estate(&c.dir, c.port_base)?;
    let dir = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if c.detach {
        return quickstart_detach(g, &dir, &config_path, c.port_base);
    }
    let config = load(&config_path)?;
    let started = Instant::now();
    let rt = runtime()?;
    let _boot = rt
        .block_on(lifeboat_server::bootstrap::bootstrap(&config, None))
        .map_err(|e| anyhow::Error::new(Exit { code: EXIT_RUNTIME, message: format!("bootstrap: {e}"), hint: Some("is PostgreSQL 15 installed (/usr/lib/postgresql/15/bin)? `cargo xtask setup` installs it".into()) }))?;
    if !dir.join("repo").join("config").exists() {
        let out = repo_cmd(&dir, &["init"])?;
        if !out.status.success() {
            bail!(
                "repository init failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let config2 = load(&config_path)?;
    let ran = rt.block_on(async {
        let d = Daemon::start(config2, DaemonOptions::default())
            .await
            .map_err(|e| {
                anyhow::Error::new(Exit {
                    code: EXIT_RUNTIME,
                    message: e.to_string(),
                    hint: None,
                })
            })?;
        let mut rx = d.watch_status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if protected(&rx.borrow_and_update()) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                break;
            }
        }
        // Continuous protection through the proxy, so it follows every failover: the WAL
        // streamer, then a first base backup.
        let dsn = d
            .write_addr()
            .map(|a| {
                format!(
                    "host={} port={} user=postgres dbname=postgres",
                    a.ip(),
                    a.port()
                )
            })
            .unwrap_or_default();
        let streamer = spawn_streamer(&dir, &dsn);
        let backup_dir = dir.clone();
        let backup = tokio::task::spawn_blocking(move || {
            repo_cmd(
                &backup_dir,
                &[
                    "pg",
                    "backup",
                    "--source",
                    "quickstart",
                    "--dsn",
                    &dsn,
                    "--wal-wait",
                    "60s",
                ],
            )
        })
        .await
        .map_err(|e| anyhow::anyhow!("base backup: {e}"))??;
        let backup_note = match (&streamer, backup.status.success()) {
            (Ok(_), true) => "WAL streams into it; a base backup is in it".to_string(),
            (Err(e), _) => format!("the WAL streamer did not start: {e}"),
            (_, false) => format!(
                "the first base backup failed: {}",
                String::from_utf8_lossy(&backup.stderr).trim()
            ),
        };
        let s = d.status();
        summary(
            g,
            &dir,
            &config_path,
            &s,
            started.elapsed(),
            &backup_note,
            false,
        )?;
        serve(d).await;
        if let Ok(mut child) = streamer {
            if let Some(p) = i32::try_from(child.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
            }
            let _ = child.wait();
        }
        Ok::<(), anyhow::Error>(())
    });
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    ran?;
    // Interrupted: the servers stop with the estate's daemon; the files stay.
    stop_members(&config)?;
    if !g.quiet {
        eprintln!(
            "quickstart stopped; run it again to resume, or `lifeboat quickstart --dir {} --stop` to remove it",
            dir.display()
        );
    }
    Ok(EXIT_OK)
}

#[allow(clippy::too_many_arguments)]
fn summary(
    g: &Global,
    dir: &Path,
    config: &Path,
    s: &Status,
    took: Duration,
    backup: &str,
    detached: bool,
) -> Result<()> {
    let cfg = config.display();
    if g.json {
        return json(&serde_json::json!({
            "dir": dir, "config": config, "status": s, "duration_seconds": took.as_secs_f64(),
            "repository": dir.join("repo"), "backup": backup,
        }));
    }
    if g.quiet {
        return Ok(());
    }
    let write = s.proxy.write.clone().unwrap_or_default();
    let (host, port) = write.rsplit_once(':').unwrap_or(("127.0.0.1", "?"));
    if took.is_zero() {
        line(&format!(
            "Lifeboat quickstart is running, in {}:",
            dir.display()
        ))?;
    } else {
        line(&format!(
            "Lifeboat quickstart is running ({:.1} s), in {}:",
            took.as_secs_f64(),
            dir.display()
        ))?;
    }
    for m in &s.members {
        line(&format!(
            "  PostgreSQL {:<4} {:<8} {}  data {}",
            m.name, m.role, m.address, m.data_dir
        ))?;
    }
    line(&format!(
        "  writes (proxy, follows the primary)  psql -h {host} -p {port} -U postgres"
    ))?;
    line(&format!(
        "  reads  (proxy, standbys)             {}",
        s.proxy.read.as_deref().unwrap_or("-")
    ))?;
    line(&format!(
        "  API    http://{}   token in {}",
        s.api,
        dir.join("api.token").display()
    ))?;
    line(&format!(
        "  repository {}  ({backup})",
        dir.join("repo").display()
    ))?;
    line("")?;
    // The program as it was started (a fresh checkout has no `lifeboat` on PATH).
    let lb = lifeboat_exe().map_or_else(|_| "lifeboat".to_string(), |p| p.display().to_string());
    line("Try:")?;
    line(&format!("  {lb} status --config {cfg}"))?;
    line(&format!(
        "  kill -9 $(head -1 {}/pg/pg1/postmaster.pid)   # the primary dies; watch status",
        dir.display()
    ))?;
    line(&format!("  {lb} switchover --config {cfg} --to pg1"))?;
    line(&format!(
        "  {lb} --repo {} --password-file {} pg backups --source quickstart",
        dir.join("repo").display(),
        dir.join("repo.password").display()
    ))?;
    if !detached {
        line("Ctrl-C stops it (files stay; run again to resume).")?;
    }
    Ok(())
}

fn quickstart_detach(g: &Global, dir: &Path, config: &Path, base: u16) -> Result<u8> {
    use std::os::unix::process::CommandExt;
    if let Some(pid) = running_pid(dir) {
        bail!(usage(
            format!("a quickstart already runs in {} (pid {pid})", dir.display()),
            Some("`lifeboat quickstart --dir DIR --stop` stops it"),
        ));
    }
    let log = std::fs::File::create(dir.join("lifeboat.log"))?;
    let child = std::process::Command::new(lifeboat_exe()?)
        .args([
            "--no-progress",
            "quickstart",
            "--port-base",
            &base.to_string(),
            "--dir",
        ])
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("start the quickstart in the background")?;
    std::fs::write(pid_file(dir), format!("{}\n", child.id()))?;
    // Wait until the API says the cluster takes writes.
    let api = Api::from_config(config)?;
    let rt = runtime()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let s = loop {
        if let Ok(s) = rt.block_on(api.status()) {
            if protected(&s) {
                break s;
            }
        }
        if Instant::now() > deadline || running_pid(dir).is_none() {
            bail!(Exit {
                code: EXIT_RUNTIME,
                message: format!(
                    "the quickstart did not come up; see {}",
                    dir.join("lifeboat.log").display()
                ),
                hint: None,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    summary(g, dir, config, &s, Duration::ZERO, "see lifeboat.log", true)?;
    if !g.quiet && !g.json {
        line(&format!(
            "running in the background (pid {}); `lifeboat quickstart --dir {} --stop` stops it",
            child.id(),
            dir.display()
        ))?;
    }
    Ok(EXIT_OK)
}

fn running_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn stop_members(config: &lifeboat_config::Config) -> Result<()> {
    let pg = lifeboat_server::bootstrap::pg_for(config, None);
    for m in lifeboat_server::bootstrap::members_of(config) {
        if pg.is_running(&m).unwrap_or(false) {
            let _ = pg.stop(&m, lifeboat_postgres::cluster::StopMode::Fast);
        }
    }
    Ok(())
}

fn quickstart_stop(g: &Global, dir: &Path) -> Result<u8> {
    let config_path = dir.join("lifeboat.toml");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        usage(
            format!("{}: {e}", config_path.display()),
            Some("--dir must name a quickstart estate"),
        )
    })?;
    if !text.starts_with(MARKER) {
        bail!(usage(
            format!(
                "{} is not a quickstart estate; nothing removed",
                dir.display()
            ),
            None
        ));
    }
    if let Some(pid) = running_pid(dir) {
        if let Some(p) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if let Ok(config) = load(&config_path) {
        stop_members(&config)?;
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    if !g.quiet {
        line(&format!(
            "quickstart in {} stopped and removed",
            dir.display()
        ))?;
    }
    Ok(EXIT_OK)
}
