//! etcd mode against real etcd 3.4 (three members) and PostgreSQL 15 (three members, `sync`):
//! one agent per node, each a separate process (this test binary re-run as
//! `agent_process`), so "killing the node" is SIGKILL of its agent and its postmaster, and
//! a partitioned node is a network namespace whose link goes down, with its PostgreSQL and
//! its agent inside. No monitor anywhere: the agents fail over through etcd.
//!
//! Why processes and not in-process daemons: a killed process leaves exactly what a dead
//! node leaves (an unreleased lease, a report that lapses, sockets that break), and only a
//! process can be started inside a network namespace (`ip netns exec`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lifeboat_coord::{Coordinator, EtcdOptions};
use lifeboat_postgres::cluster::{HostAuth, InitSettings, Member, Pg, StopMode, SyncMode};
use lifeboat_testkit::etcd::EtcdCluster;
use lifeboat_testkit::free_port;

/// The scenarios start nine servers each; on two cores they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
const TOKEN: &str = "test-token-0123456789";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Not a test: a node's agent, started by the scenarios as a process.
#[test]
#[ignore = "a node's agent process, started by the other tests"]
fn agent_process() {
    let (Ok(path), Ok(member)) = (
        std::env::var("LB_AGENT_CONFIG"),
        std::env::var("LB_AGENT_MEMBER"),
    ) else {
        return;
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,lifeboat_coord=warn,h2=warn,tower=warn",
        ))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path).unwrap();
        let config =
            lifeboat_config::parse("lifeboat.toml", &text, path.parent().unwrap(), &|_| None)
                .unwrap_or_else(|p| panic!("{p}"));
        let d = lifeboat_server::Daemon::start(
            config,
            lifeboat_server::DaemonOptions {
                member: Some(member),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        d.run_until(std::future::pending()).await;
    });
}

/// A network namespace with a veth pair to the root namespace (10.201.N.1 here, .2 there).
struct Netns {
    name: String,
    root_if: String,
    root_ip: String,
    ns_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let pid = std::process::id();
        let n = pid % 200 + 20;
        let ns = Netns {
            name: format!("lbt{pid}"),
            root_if: format!("lbr{pid}"),
            root_ip: format!("10.201.{n}.1"),
            ns_ip: format!("10.201.{n}.2"),
        };
        let peer = format!("lbn{pid}");
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), ns.name.clone()],
            vec![
                "link".into(),
                "add".into(),
                ns.root_if.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                peer.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                peer.clone(),
                "netns".into(),
                ns.name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{}/30", ns.root_ip),
                "dev".into(),
                ns.root_if.clone(),
            ],
            vec!["link".into(), "set".into(), ns.root_if.clone(), "up".into()],
            vec![
                "-n".into(),
                ns.name.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/30", ns.ns_ip),
                "dev".into(),
                peer.clone(),
            ],
            vec![
                "-n".into(),
                ns.name.clone(),
                "link".into(),
                "set".into(),
                peer,
                "up".into(),
            ],
            vec![
                "-n".into(),
                ns.name.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for s in steps {
            let args: Vec<&str> = s.iter().map(String::as_str).collect();
            ip(&args)?; // on failure, Drop removes what was made
        }
        Ok(ns)
    }

    fn cut(&self) {
        ip(&["link", "set", &self.root_if, "down"]).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.root_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Forwards `listen` to `to` (etcd listens on loopback; the namespace reaches it here).
fn relay(rt: &tokio::runtime::Runtime, listen: SocketAddr, to: SocketAddr) {
    let l = rt.block_on(tokio::net::TcpListener::bind(listen)).unwrap();
    rt.spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Ok(mut u) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
            });
        }
    });
}

struct Agent {
    child: Child,
    log: PathBuf,
}

struct Estate {
    _dir: tempfile::TempDir,
    root: PathBuf,
    etcd: EtcdCluster,
    hosts: Vec<String>,
    ports: Vec<u16>,
    apis: Vec<SocketAddr>,
    proxies: Vec<SocketAddr>,
    configs: Vec<PathBuf>,
    agents: Vec<Option<Agent>>,
    netns: Option<Netns>,
    rt: tokio::runtime::Runtime,
}

fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == "postgres").then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .expect("a postgres user (postgresql-15)")
}

impl Estate {
    /// Three etcd members, three PostgreSQL members (m1 primary, m2 and m3 synchronous
    /// standbys, generation 1 in etcd), and an agent process per member. With `netns`,
    /// m1 (its PostgreSQL and its agent) lives in its own network namespace.
    fn start(netns: Option<Netns>) -> Estate {
        Estate::start_with(netns, "")
    }

    /// As [`Estate::start`], with `cluster` added to every agent's `[cluster]` table.
    fn start_with(netns: Option<Netns>, cluster: &str) -> Estate {
        use std::os::unix::fs::PermissionsExt;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let etcd = EtcdCluster::start(3).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("lb-etcd-ha-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().to_path_buf();
        let pgdir = root.join("pg");
        std::fs::create_dir_all(&pgdir).unwrap();
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(&pgdir, Some(uid), Some(gid)).unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port().unwrap()).collect();
        let mut hosts: Vec<String> = vec!["127.0.0.1".into(); 3];
        let mut etcd_for_m1 = etcd.endpoints();
        if let Some(ns) = &netns {
            hosts[0] = ns.ns_ip.clone();
            let relayed: Vec<String> = etcd
                .endpoint_list()
                .iter()
                .map(|e| {
                    let port = free_port().unwrap();
                    let listen: SocketAddr = format!("{}:{port}", ns.root_ip).parse().unwrap();
                    relay(&rt, listen, e.parse().unwrap());
                    listen.to_string()
                })
                .collect();
            etcd_for_m1 = relayed.join(",");
        }
        let members_toml: String = (0..3)
            .map(|i| {
                format!(
                    "[[cluster.member]]\nname = \"m{}\"\nhost = \"{}\"\nport = {}\ndata_dir = \"{}/m{}\"\n",
                    i + 1,
                    hosts[i],
                    ports[i],
                    pgdir.display(),
                    i + 1
                )
            })
            .collect();
        let mut apis = Vec::new();
        let mut proxies = Vec::new();
        let mut configs = Vec::new();
        for i in 0..3 {
            let local = if i == 0 && netns.is_some() {
                hosts[0].clone()
            } else {
                "127.0.0.1".into()
            };
            let api: SocketAddr = format!("{local}:{}", free_port().unwrap()).parse().unwrap();
            let proxy: SocketAddr = format!("{local}:{}", free_port().unwrap()).parse().unwrap();
            let endpoints = if i == 0 {
                etcd_for_m1.clone()
            } else {
                etcd.endpoints()
            };
            let text = format!(
                "[cluster]\nname = \"orders\"\nreplication = \"sync\"\n{cluster}\n\
                 [coordinator]\nurl = \"etcd://{endpoints}\"\n\n\
                 [proxy]\nlisten = \"{proxy}\"\n\n\
                 [api]\nlisten = \"{api}\"\ntoken = \"{TOKEN}\"\n\n{members_toml}"
            );
            let path = root.join(format!("lifeboat-m{}.toml", i + 1));
            std::fs::write(&path, text).unwrap();
            apis.push(api);
            proxies.push(proxy);
            configs.push(path);
        }
        let mut estate = Estate {
            _dir: dir,
            root,
            etcd,
            hosts,
            ports,
            apis,
            proxies,
            configs,
            agents: vec![None, None, None],
            netns,
            rt,
        };
        estate.bootstrap();
        for i in 0..3 {
            estate.spawn_agent(i);
        }
        estate
    }

    fn member(&self, i: usize) -> Member {
        Member::new(
            format!("m{}", i + 1),
            &self.hosts[i],
            self.ports[i],
            self.root.join(format!("pg/m{}", i + 1)),
        )
    }

    /// A local (Unix socket) connection string: it reaches m1 also while its link is down.
    fn dsn(&self, i: usize) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres connect_timeout=1",
            self.root.join("pg").display(),
            self.ports[i]
        )
    }

    fn bootstrap(&mut self) {
        let pg = Pg::new("postgres").with_bin_dir(PG_BIN);
        let settings = InitSettings {
            auth: HostAuth::Trust,
            allowed_networks: vec![
                "127.0.0.1/32".into(),
                "::1/128".into(),
                "10.201.0.0/16".into(),
            ],
            socket_dir: Some(self.root.join("pg")),
            ..InitSettings::default()
        };
        let m: Vec<Member> = (0..3).map(|i| self.member(i)).collect();
        if let Some(ns) = &self.netns {
            // Made here, then started inside the namespace.
            let here = Member::new("m1", "127.0.0.1", self.ports[0], &m[0].data_dir);
            pg.init_primary(&here, &settings).unwrap();
            pg.stop(&here, StopMode::Fast).unwrap();
            trust_local(&m[0].data_dir);
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.name, "runuser", "-u", "postgres", "--"])
                .arg(format!("{PG_BIN}/pg_ctl"))
                .args(["start", "-w", "-t", "30", "-D"])
                .arg(&m[0].data_dir)
                .arg("-l")
                .arg(m[0].log_path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        } else {
            pg.init_primary(&m[0], &settings).unwrap();
            trust_local(&m[0].data_dir);
            let mut c = pg.connect(&m[0]).unwrap();
            c.batch_execute("select pg_reload_conf()").unwrap();
        }
        pg.clone_standby(&m[0], &m[1]).unwrap();
        pg.clone_standby(&m[0], &m[2]).unwrap();
        pg.set_synchronous_standbys(&m[0], &["m2", "m3"], SyncMode::Any(1))
            .unwrap();
        pg.set_generation(&m[0], 1).unwrap();
        let endpoints = self.etcd.endpoint_list();
        let g = self.rt.block_on(async {
            let c = Coordinator::connect_etcd(EtcdOptions::new(endpoints, "orders"))
                .await
                .unwrap();
            c.promote(0, "m1").await.unwrap()
        });
        assert_eq!(g, 1);
        let mut c = postgres::Client::connect(&self.dsn(0), postgres::NoTls).unwrap();
        c.batch_execute(
            "create table orders(id bigint primary key); create table probe(m text, at timestamptz default now())",
        )
        .unwrap();
    }

    fn spawn_agent(&mut self, i: usize) {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = match (&self.netns, i) {
            (Some(ns), 0) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name]).arg(exe);
                c
            }
            _ => Command::new(exe),
        };
        let log = self.root.join(format!("agent-m{}.log", i + 1));
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .args([
                "agent_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LB_AGENT_CONFIG", &self.configs[i])
            .env("LB_AGENT_MEMBER", format!("m{}", i + 1))
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        self.agents[i] = Some(Agent { child, log });
    }

    fn kill_agent(&mut self, i: usize) {
        if let Some(mut a) = self.agents[i].take() {
            // `ip netns exec` execs the agent: the child is the agent itself.
            let _ = a.child.kill();
            let _ = a.child.wait();
            self.agents[i] = None;
            let _ = a.log;
        }
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.root.join(format!("agent-m{}.log", i + 1))).unwrap_or_default()
    }

    /// The agents' lines about leases, fencing and promotions (the timeline, for the log).
    fn print_events(&self) {
        for i in 0..3 {
            for l in self.log(i).lines().filter(|l| {
                [
                    "lease",
                    "fenced",
                    "takes over",
                    "is the primary",
                    "unreachable",
                    "following",
                ]
                .iter()
                .any(|k| l.contains(k))
            }) {
                let l = l.replace("\u{1b}[2m", "").replace("\u{1b}[0m", "");
                println!("  m{}: {}", i + 1, l.chars().take(260).collect::<String>());
            }
        }
    }

    fn status(&self, i: usize) -> Option<serde_json::Value> {
        http_status(self.apis[i])
    }

    fn postmaster(&self, i: usize) -> Option<u32> {
        postmaster_pid(&self.root.join(format!("pg/m{}", i + 1)))
    }

    fn in_recovery(&self, i: usize) -> Option<bool> {
        let mut c = postgres::Client::connect(&self.dsn(i), postgres::NoTls).ok()?;
        c.query_one("select pg_is_in_recovery()", &[])
            .ok()
            .map(|r| r.get(0))
    }

    /// Waits for agent `i`'s status to satisfy `f`.
    fn wait_status(
        &self,
        i: usize,
        what: &str,
        secs: u64,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        loop {
            if let Some(s) = self.status(i) {
                if f(&s) {
                    return s;
                }
                last = Some(s);
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (agent m{}): {last:#?}\nlog:\n{}",
                i + 1,
                tail(&self.log(i), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every agent sees m1 primary and a failover target (the sync set is confirmed).
    fn wait_healthy(&self, primary: &str, agents: &[usize]) {
        for &i in agents {
            self.wait_status(i, &format!("healthy with {primary} primary"), 40, |s| {
                s["phase"] == "healthy"
                    && s["primary"] == primary
                    && !s["failover_target"].is_null()
                    && s["proxy"]["routed_to"].is_string()
            });
        }
    }
}

impl Drop for Estate {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill_agent(i);
        }
        if std::thread::panicking() {
            for i in 0..3 {
                eprintln!("---- agent m{} ----\n{}", i + 1, tail(&self.log(i), 60));
            }
        }
        for i in 0..3 {
            if let Some(pid) = self.postmaster(i) {
                kill_tree(pid);
            }
        }
    }
}

/// The test's probes connect over the Unix socket as `postgres` (the tests run as root).
fn trust_local(data_dir: &Path) {
    let hba = data_dir.join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("local all all trust\n{text}")).unwrap();
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn http_status(api: SocketAddr) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&api, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: lifeboat\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// `POST path` with a JSON `body` and the token: the status code and the body.
fn http_post(api: SocketAddr, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&api, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: lifeboat\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// The HTTP status code of `GET path` (the health endpoints need no token).
fn http_code(api: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&api, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: lifeboat\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|st| st != "Z" && st != "X")
}

/// SIGKILL to `pid` and its children (a postmaster and its backends).
fn kill_tree(pid: u32) {
    let children: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect();
    for p in std::iter::once(pid).chain(children) {
        let _ = Command::new("kill")
            .args(["-9", &p.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Inserts through `addr` every ~10 ms, logging acknowledged ids.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(i64, Instant)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(proxy: SocketAddr) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let dsn = format!(
            "host={} port={} user=postgres dbname=postgres connect_timeout=2",
            proxy.ip(),
            proxy.port()
        );
        let thread = std::thread::spawn(move || {
            let mut id = 0i64;
            let mut client: Option<postgres::Client> = None;
            while !s.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = postgres::Client::connect(&dsn, postgres::NoTls).ok();
                    if client.is_none() {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                }
                id += 1;
                match client
                    .as_mut()
                    .map(|c| c.execute("insert into orders(id) values ($1)", &[&id]))
                {
                    Some(Ok(_)) => a.lock().unwrap().push((id, Instant::now())),
                    _ => client = None,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Writer {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn acked_after(&self, t: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .find(|(_, at)| *at > t)
            .map(|(_, at)| *at)
    }

    /// The longest time between two acknowledged writes after `t`.
    fn longest_gap_after(&self, t: Instant) -> Duration {
        let acked = self.acked.lock().unwrap();
        let times: Vec<Instant> = acked.iter().map(|(_, at)| *at).collect();
        times
            .windows(2)
            .filter(|w| w[1] > t)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap_or_default()
    }

    fn finish(mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let ids = self.acked.lock().unwrap().iter().map(|(i, _)| *i).collect();
        ids
    }
}

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn new_primary(s: &serde_json::Value) -> Option<String> {
    let p = s["primary"].as_str()?;
    (p != "m1" && s["phase"] == "healthy").then(|| p.to_string())
}

#[tokio::test]
async fn an_agent_needs_its_member() {
    let text = "[cluster]\nname = \"orders\"\n[coordinator]\nurl = \"etcd://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3\"\n\
                [api]\nlisten = \"127.0.0.1:0\"\ntoken = \"test-token-0123456789\"\n\
                [[cluster.member]]\nname = \"m1\"\nhost = \"127.0.0.1\"\nport = 5432\ndata_dir = \"/tmp/x/m1\"\n\
                [[cluster.member]]\nname = \"m2\"\nhost = \"127.0.0.1\"\nport = 5433\ndata_dir = \"/tmp/x/m2\"\n";
    let config = || {
        lifeboat_config::parse("lifeboat.toml", text, Path::new("/tmp"), &|_| None)
            .unwrap_or_else(|p| panic!("{p}"))
    };
    let err = lifeboat_server::Daemon::start(config(), Default::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--member"), "{err}");
    let options = lifeboat_server::DaemonOptions {
        member: Some("m9".into()),
        ..Default::default()
    };
    let err = lifeboat_server::Daemon::start(config(), options)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("m9") && err.contains("m1, m2"), "{err}");
}

#[test]
fn killing_the_primary_node_fails_over_through_etcd_without_losing_a_write() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut e = Estate::start(None);
    e.wait_healthy("m1", &[0, 1, 2]);
    // Each agent's health endpoints answer for its own member (one agent per node).
    assert_eq!(http_code(e.apis[0], "/primary"), Some(200));
    assert_eq!(http_code(e.apis[1], "/primary"), Some(503));
    assert_eq!(http_code(e.apis[1], "/primary?member=m1"), Some(200));
    wait_until("m2's /replica to answer 200", 10, || {
        (http_code(e.apis[1], "/replica") == Some(200)).then_some(())
    });
    assert_eq!(http_code(e.apis[0], "/replica"), Some(503));
    let writer = Writer::start(e.proxies[2]);
    wait_until("50 acknowledged writes", 20, || {
        (writer.count() >= 50).then_some(())
    });

    // The node dies: its agent and its PostgreSQL, at once.
    let pid = e.postmaster(0).unwrap();
    kill_tree(pid);
    e.kill_agent(0);
    // Counted from when both are dead: no write can be acknowledged by m1 after this.
    let killed = Instant::now();

    let back = wait_until("a write acknowledged after the kill", 30, || {
        writer.acked_after(killed)
    });
    let rto = back.duration_since(killed);
    let s = e.wait_status(2, "a new primary", 10, |s| new_primary(s).is_some());
    let to = new_primary(&s).unwrap();
    println!(
        "RTO {:.3} s (node kill → first acknowledged write through m3's proxy); new primary {to}, generation {}",
        rto.as_secs_f64(),
        s["coordinator"]["generation"]
    );
    assert_eq!(s["coordinator"]["generation"], 2);
    assert!(rto < Duration::from_secs(10), "RTO {rto:?}");
    // The other standby follows the new primary.
    let other = if to == "m2" { 2 } else { 1 };
    let follower = format!("m{}", other + 1);
    e.wait_status(
        other,
        "the other standby streaming from the new one",
        30,
        |s| {
            s["members"].as_array().is_some_and(|ms| {
                ms.iter().any(|m| {
                    m["name"] == follower.as_str()
                        && m["role"] == "standby"
                        && m["streaming"] == true
                })
            })
        },
    );
    std::thread::sleep(Duration::from_millis(200));
    let acked = writer.finish();
    let i = if to == "m2" { 1 } else { 2 };
    let mut c = postgres::Client::connect(&e.dsn(i), postgres::NoTls).unwrap();
    let on_new: Vec<i64> = c
        .query("select id from orders order by id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<i64> = acked
        .iter()
        .filter(|id| on_new.binary_search(id).is_err())
        .copied()
        .collect();
    println!("{} writes acknowledged, none missing on {to}", acked.len());
    e.print_events();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing on {to}: {missing:?}"
    );
    assert_eq!(e.in_recovery(i), Some(false));
}

#[test]
fn an_unreachable_etcd_fences_the_primary_and_promotes_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut e = Estate::start(None);
    e.wait_healthy("m1", &[0, 1, 2]);
    let pid = e.postmaster(0).unwrap();
    let down = Instant::now();
    for i in 0..3 {
        e.etcd.kill_member(i).unwrap();
    }
    // The primary fences itself: its postmaster is gone within TTL/2 of its last renewal.
    wait_until("m1's postmaster to be fenced", 10, || {
        (!alive(pid)).then_some(())
    });
    let fenced = down.elapsed();
    println!(
        "m1 fenced itself {:.3} s after etcd went down",
        fenced.as_secs_f64()
    );
    assert!(
        fenced < Duration::from_millis(2000),
        "fenced after {fenced:?}"
    );
    assert!(Path::new(&e.root.join("pg/m1/standby.signal")).exists());
    // Status and logs say so.
    for i in 1..3 {
        let s = e.wait_status(i, "etcd unreachable in status", 10, |s| {
            s["phase"] == "coordinator_unreachable"
        });
        let reason = s["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("etcd at 127.0.0.1:") && reason.contains("unreachable"),
            "{reason}"
        );
    }
    assert!(e.log(0).contains("unreachable"), "{}", tail(&e.log(0), 20));
    assert!(e.log(1).contains("unreachable"), "{}", tail(&e.log(1), 20));
    // Nothing is promoted while etcd is away (longer than the lease's TTL).
    let until = down + Duration::from_secs(4);
    while Instant::now() < until {
        for i in 1..3 {
            assert_ne!(
                e.in_recovery(i),
                Some(false),
                "m{} was promoted without etcd",
                i + 1
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // etcd returns: a primary again, writes accepted.
    let back = Instant::now();
    e.etcd.restart_all().unwrap();
    let s = e.wait_status(1, "a primary after etcd returned", 40, |s| {
        new_primary(s).is_some()
    });
    println!(
        "after etcd returned: {} primary {:.3} s later, generation {}",
        s["primary"],
        back.elapsed().as_secs_f64(),
        s["coordinator"]["generation"]
    );
    let writer = Writer::start(e.proxies[1]);
    wait_until("a write through the proxy", 30, || {
        (writer.count() > 0).then_some(())
    });
    writer.finish();
    // The fenced m1 is rewound and follows the new primary.
    let rejoin = Instant::now();
    e.wait_status(1, "m1 back as a streaming standby", 60, |s| {
        s["members"].as_array().is_some_and(|ms| {
            ms.iter().any(|m| {
                m["name"] == "m1"
                    && m["role"] == "standby"
                    && m["streaming"] == true
                    && m["needs_rejoin"] == false
            })
        })
    });
    println!(
        "m1 rejoined as a standby {:.3} s later",
        rejoin.elapsed().as_secs_f64()
    );
    e.print_events();
    assert_eq!(e.in_recovery(0), Some(true));
}

#[test]
fn a_partitioned_primary_stops_taking_writes_before_another_is_promoted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            println!("SKIPPED: network namespaces are not available here: {why}");
            return;
        }
    };
    let e = Estate::start(Some(ns));
    e.wait_healthy("m1", &[1, 2]);
    // Probes that write (locally committed) on every member over its Unix socket, which
    // reaches m1 also while its link is down.
    let stop = Arc::new(AtomicBool::new(false));
    let oks: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let probes: Vec<_> = (0..3)
        .map(|i| {
            let (dsn, stop, oks) = (e.dsn(i), stop.clone(), oks.clone());
            std::thread::spawn(move || {
                let mut c: Option<postgres::Client> = None;
                while !stop.load(Ordering::Relaxed) {
                    if c.is_none() {
                        c = postgres::Client::connect(&dsn, postgres::NoTls).ok();
                    }
                    if let Some(cl) = c.as_mut() {
                        let r = cl.batch_execute(&format!(
                            "set statement_timeout = 1000; set synchronous_commit = local; \
                             insert into probe(m) values ('m{}')",
                            i + 1
                        ));
                        match r {
                            Ok(()) => oks.lock().unwrap().push((i, Instant::now())),
                            Err(_) if cl.is_closed() => c = None,
                            Err(_) => {}
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    wait_until("m1 to take probe writes", 10, || {
        oks.lock()
            .unwrap()
            .iter()
            .any(|(i, _)| *i == 0)
            .then_some(())
    });
    let cut = Instant::now();
    e.netns.as_ref().unwrap().cut();
    let s = e.wait_status(1, "a new primary after the cut", 30, |s| {
        new_primary(s).is_some()
    });
    let to = new_primary(&s).unwrap();
    let ti = if to == "m2" { 1 } else { 2 };
    wait_until("writes on the new primary", 10, || {
        oks.lock()
            .unwrap()
            .iter()
            .any(|(i, _)| *i == ti)
            .then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for p in probes {
        let _ = p.join();
    }
    let oks = oks.lock().unwrap().clone();
    let last_old = oks
        .iter()
        .filter(|(i, _)| *i == 0)
        .map(|(_, t)| *t)
        .max()
        .unwrap();
    let first_new = oks
        .iter()
        .filter(|(i, _)| *i == ti)
        .map(|(_, t)| *t)
        .min()
        .unwrap();
    println!(
        "cut at 0; last write on m1 at {:.3} s; first write on {to} at {:.3} s; gap {:.3} s",
        last_old.saturating_duration_since(cut).as_secs_f64(),
        first_new.saturating_duration_since(cut).as_secs_f64(),
        first_new.saturating_duration_since(last_old).as_secs_f64()
    );
    assert!(
        last_old < first_new,
        "two writable primaries: m1 took a write {:?} after {to}'s first",
        last_old.duration_since(first_new)
    );
    e.print_events();
    assert_eq!(e.in_recovery(0), None, "m1 must be fenced (not running)");
}

/// Every acknowledged id of `acked` that member `i` does not have.
fn missing_on(e: &Estate, i: usize, acked: &[i64]) -> Vec<i64> {
    let mut c = postgres::Client::connect(&e.dsn(i), postgres::NoTls).unwrap();
    let on: Vec<i64> = c
        .query("select id from orders order by id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    acked
        .iter()
        .filter(|id| on.binary_search(id).is_err())
        .copied()
        .collect()
}

#[test]
fn manual_mode_holds_a_failover_until_an_operator_approves_it_on_any_agent() {
    manual_failover(None);
}

#[test]
fn an_approval_naming_a_standby_promotes_that_one() {
    // m2 is the proposal (ties go to the lowest name); the operator names m3.
    manual_failover(Some("m3"));
}

/// Manual mode: kill the primary's node, check nothing happens for 3 s, approve through
/// m3's agent (naming `to` when given), check the promotion lost nothing.
fn manual_failover(to: Option<&str>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut e = Estate::start_with(None, "failover = \"manual\"\n");
    e.wait_healthy("m1", &[0, 1, 2]);
    // Nothing waits: approving is refused.
    let (code, body) = http_post(e.apis[1], "/failover/approve", "{}").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no failover waits"), "{body}");
    let writer = Writer::start(e.proxies[2]);
    wait_until("50 acknowledged writes", 20, || {
        (writer.count() >= 50).then_some(())
    });

    let pid = e.postmaster(0).unwrap();
    kill_tree(pid);
    e.kill_agent(0);
    let killed = Instant::now();
    let s = e.wait_status(1, "awaiting approval", 10, |s| {
        s["phase"] == "awaiting_approval"
    });
    println!("waiting: {}", s["reason"]);
    assert!(
        s["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("lifeboat failover approve"),
        "{s:#}"
    );
    std::thread::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed()));
    // 3 s after the kill: nobody promoted, both still standbys, the alert raised.
    assert_eq!(e.in_recovery(1), Some(true));
    assert_eq!(e.in_recovery(2), Some(true));
    let s = e.status(2).unwrap();
    assert_eq!(s["phase"], "awaiting_approval", "{s:#}");
    assert_eq!(s["coordinator"]["generation"], 1);
    // The critical alert (raised by the live standby with the lowest name, 1 s after it
    // saw no leader).
    let s = e.wait_status(1, "the critical alert", 5, |s| {
        s["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|a| {
                a["severity"] == "critical"
                    && a["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("waits for `lifeboat failover approve`"))
            })
        })
    });
    assert_eq!(s["coordinator"]["generation"], 1);
    assert_eq!(e.in_recovery(1), Some(true));

    // Approved through m3's agent (any agent will do).
    if to.is_some() {
        // Not a member: refused, nothing approved.
        let (code, body) = http_post(e.apis[2], "/failover/approve", r#"{"to": "m9"}"#).unwrap();
        assert_eq!(code, 503, "{body}");
        assert_eq!(e.in_recovery(2), Some(true));
    }
    let body = match to {
        Some(t) => format!("{{\"to\": \"{t}\"}}"),
        None => "{}".into(),
    };
    let approved = Instant::now();
    let (code, body) = http_post(e.apis[2], "/failover/approve", &body).unwrap();
    assert_eq!(code, 200, "{body}");
    let back = wait_until("a write acknowledged after the approval", 30, || {
        writer.acked_after(approved)
    });
    let s = e.wait_status(2, "a new primary", 10, |s| new_primary(s).is_some());
    let promoted = new_primary(&s).unwrap();
    println!(
        "approved → first acknowledged write {:.3} s; new primary {promoted}, generation {}",
        back.duration_since(approved).as_secs_f64(),
        s["coordinator"]["generation"]
    );
    assert_eq!(s["coordinator"]["generation"], 2);
    if let Some(named) = to {
        assert_eq!(named, promoted, "the approval named {named}");
    }
    let to = promoted;
    let acked = writer.finish();
    let i = if to == "m2" { 1 } else { 2 };
    let missing = missing_on(&e, i, &acked);
    println!(
        "{} writes acknowledged, {} missing on {to}",
        acked.len(),
        missing.len()
    );
    e.print_events();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing on {to}: {missing:?}"
    );
    // The approval was consumed by the promotion.
    let pending = e.rt.block_on(async {
        let c = Coordinator::connect_etcd(EtcdOptions::new(e.etcd.endpoint_list(), "orders"))
            .await
            .unwrap();
        c.state().await.unwrap().pending_approval
    });
    assert_eq!(pending, None);
}

#[test]
fn a_switchover_through_any_agent_loses_nothing_and_the_old_primary_follows() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let e = Estate::start(None);
    e.wait_healthy("m1", &[0, 1, 2]);
    // Refused: not a member, the primary itself.
    for (to, why) in [("m9", "not a member"), ("m1", "already the primary")] {
        let (code, body) =
            http_post(e.apis[2], "/switchover", &format!("{{\"to\": \"{to}\"}}")).unwrap();
        assert_eq!(code, 503, "{body}");
        assert!(body.contains(why), "{body}");
    }
    let writer = Writer::start(e.proxies[2]);
    wait_until("50 acknowledged writes", 20, || {
        (writer.count() >= 50).then_some(())
    });
    let asked = Instant::now();
    let (code, body) = http_post(e.apis[2], "/switchover", r#"{"to": "m2"}"#).unwrap();
    assert_eq!(code, 200, "{body}");
    let s = e.wait_status(2, "m2 primary", 20, |s| {
        s["primary"] == "m2" && s["phase"] == "healthy"
    });
    assert_eq!(s["coordinator"]["generation"], 2);
    wait_until("writes through the new primary", 10, || {
        writer
            .acked_after(Instant::now() - Duration::from_millis(100))
            .filter(|_| asked.elapsed() > Duration::from_secs(1))
    });
    // The old primary follows m2 as a streaming standby.
    e.wait_status(0, "m1 streaming from m2", 40, |s| {
        s["members"].as_array().is_some_and(|ms| {
            ms.iter()
                .any(|m| m["name"] == "m1" && m["role"] == "standby" && m["streaming"] == true)
        })
    });
    assert_eq!(e.in_recovery(0), Some(true));
    let gap = writer.longest_gap_after(asked);
    let acked = writer.finish();
    let missing = missing_on(&e, 1, &acked);
    println!(
        "switchover m1 → m2: write gap {:.3} s (longest between two acknowledged writes), {} writes acknowledged, {} missing",
        gap.as_secs_f64(),
        acked.len(),
        missing.len()
    );
    e.print_events();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing on m2: {missing:?}"
    );
    assert!(gap < Duration::from_secs(2), "write gap {gap:?}");
}

/// `chattr +i` on a directory while it lives (even root cannot create a file in it);
/// `chattr -i` on drop.
struct Immutable(PathBuf);

impl Immutable {
    fn new(dir: &Path) -> Immutable {
        let st = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .expect("chattr (e2fsprogs)");
        assert!(
            st.success(),
            "chattr +i {}: the test needs ext4 or xfs",
            dir.display()
        );
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// Issue 9 item 7, etcd mode: the primary's PostgreSQL dies while its data directory is
/// immutable, so its agent cannot write standby.signal (a restart would come up as a
/// primary). The agent must keep the lease — no standby is elected — and every agent says
/// why; an approval through another agent releases it and a standby is promoted.
#[test]
fn r9_7_an_unconfirmed_self_fence_keeps_the_lease_until_approved() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let e = Estate::start(None);
    e.wait_healthy("m1", &[0, 1, 2]);
    let immutable = Immutable::new(&e.root.join("pg/m1"));
    let pid = e.postmaster(0).unwrap();
    kill_tree(pid);
    let killed = Instant::now();
    let s = e.wait_status(1, "awaiting approval", 15, |s| {
        s["phase"] == "awaiting_approval" || new_primary(s).is_some()
    });
    println!(
        "{:.3} s after the kill: {} {}",
        killed.elapsed().as_secs_f64(),
        s["phase"],
        s["reason"]
    );
    assert_eq!(s["phase"], "awaiting_approval", "{s:#}");
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("standby.signal") && reason.contains("failover approve"),
        "{reason}"
    );
    // Nobody is promoted while nobody approves.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(e.in_recovery(1), Some(true), "m2 promoted without approval");
        assert_eq!(e.in_recovery(2), Some(true), "m3 promoted without approval");
        let s = e.status(2).unwrap();
        assert_eq!(s["coordinator"]["generation"], 1, "{s:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = http_post(e.apis[2], "/failover/approve", "{}").unwrap();
    assert_eq!(code, 200, "{body}");
    let approved = Instant::now();
    let s = e.wait_status(2, "a new primary", 20, |s| new_primary(s).is_some());
    println!(
        "new primary {} {:.3} s after the approval",
        new_primary(&s).unwrap(),
        approved.elapsed().as_secs_f64()
    );
    assert_eq!(s["coordinator"]["generation"], 2);
    drop(immutable);
}
