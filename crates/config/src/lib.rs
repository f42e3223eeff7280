//! The daemon's config file, `lifeboat.toml`: one PostgreSQL cluster (members, replication
//! mode, failover mode), health checks, the coordinator, the proxy and the API.
//!
//! Lives here: parsing, `${ENV}` references, `*_file` secrets, and validation that reports
//! **every** mistake at once with file, line, column and the fix ([`Problems`]). The TOML
//! is walked by hand over `toml`'s spanned tree rather than deserialised by serde, which
//! stops at the first error and loses the position of semantic ones.
//!
//! Also here: [`Warnings`], what is valid but unsafe — a secret other users can read (inline
//! in a config file others can read, or a `*_file` others can read or anyone but its owner
//! and group can write), a config file others can change, an API reachable beyond this host.
//! `lifeboat config validate` prints them (and fails on them with `--strict`).
//!
//! Never here: acting on the config (starting anything, connecting anywhere), or printing a
//! secret: problems name the key, never a secret's value.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lifeboat_types::Secret;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A validated config.
#[derive(Debug)]
pub struct Config {
    /// The PostgreSQL cluster.
    pub cluster: Cluster,
    /// Health checks of the members.
    pub health: Health,
    /// Who decides which member is primary.
    pub coordinator: Coordinator,
    /// The TCP proxy.
    pub proxy: Proxy,
    /// The HTTP API.
    pub api: Api,
    /// What is valid but unsafe (empty when nothing is).
    pub warnings: Warnings,
}

/// `[cluster]`.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Its name (in status, alerts and coordinator keys).
    pub name: String,
    /// The database user the daemon connects as (`user`, default `postgres`): a superuser,
    /// or a role with replication and `pg_monitor`.
    pub user: String,
    /// Its password (`password` or `password_file`); none with trust or peer auth.
    pub password: Option<Secret<String>>,
    /// Whether a commit waits for a standby.
    pub replication: Replication,
    /// `sync` mode with no standby able to take commits: `continue` (the default: the
    /// primary acknowledges alone, with a critical alert, and no standby is a failover
    /// candidate until one has caught up) or `wait` (commits wait for a standby).
    pub when_no_standby: NoStandby,
    /// Whether failover happens on its own or waits for approval.
    pub failover: FailoverMode,
    /// The members, in file order.
    pub members: Vec<Member>,
}

/// `[[cluster.member]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique name.
    pub name: String,
    /// Host name or address PostgreSQL listens on.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Its data directory (absolute).
    pub data_dir: PathBuf,
    /// Site (zone, region) for placement decisions; optional.
    pub site: Option<String>,
}

/// `replication = "sync" | "async"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// No commit is acknowledged before a standby has it (RPO 0).
    Sync,
    /// Commits do not wait; the lag is measured against the RPO.
    Async,
}

/// `when_no_standby = "continue" | "wait"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStandby {
    /// Keep taking writes on the primary alone (Patroni's `synchronous_mode`).
    Continue,
    /// Writes wait until a standby takes them (Patroni's `synchronous_mode_strict`).
    Wait,
}

/// `failover = "automatic" | "manual"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverMode {
    /// Fail over as soon as the primary is confirmed down.
    Automatic,
    /// Detect, alert, and wait for `lifeboat failover approve`.
    Manual,
}

/// `[health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Time between probes.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Consecutive failures before a member counts as down.
    pub fall: u32,
    /// Consecutive successes before it counts as up again.
    pub rise: u32,
    /// An extra check per member (`command = ["prog", "arg", …]`, without a shell; `{member}`,
    /// `{host}`, `{port}` and `{data_dir}` are replaced): exit 0 is healthy. A member whose
    /// command fails `fall` times in a row counts as down, like a failed PostgreSQL probe.
    pub command: Option<Vec<String>>,
    /// A TCP port on each member's host (e.g. 22) probed beside PostgreSQL: status then
    /// tells "PostgreSQL down, host up" from "host unreachable". Informational only.
    pub host_port: Option<u16>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            interval: Duration::from_millis(250),
            timeout: Duration::from_millis(250),
            fall: 3,
            rise: 2,
            command: None,
            host_port: None,
        }
    }
}

/// `[coordinator]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coordinator {
    /// One daemon is the monitor; its state lives in a local SQLite file.
    Embedded {
        /// The state file.
        state: PathBuf,
    },
    /// etcd holds a lease per cluster; an agent per node acts only while its lease is valid.
    Etcd {
        /// `host:port` of each etcd member.
        endpoints: Vec<String>,
    },
}

/// `[proxy]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proxy {
    /// Where clients connect to reach the primary.
    pub listen: Option<SocketAddr>,
    /// Where read-only clients connect (balanced over healthy standbys).
    pub read_listen: Option<SocketAddr>,
}

/// `[api]`.
pub struct Api {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The bearer token every request must carry.
    pub token: Secret<String>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("listen", &self.listen)
            .field("token", &"<secret>")
            .finish()
    }
}

/// One mistake in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line (0 when the file could not be read at all).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The key it is about, dotted (`cluster.member[2].port`).
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// Every mistake found in one config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    /// The file as given.
    pub file: String,
    /// The mistakes (never empty).
    pub list: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_problems(f, &self.file, &self.list)
    }
}

impl std::error::Error for Problems {}

/// One line per problem or warning: `file:line:column: key: message (fix: …)`.
fn write_problems(f: &mut fmt::Formatter<'_>, file: &str, list: &[Problem]) -> fmt::Result {
    for (i, p) in list.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        write!(
            f,
            "{}:{}:{}: {}: {} (fix: {})",
            file, p.line, p.column, p.key, p.message, p.fix
        )?;
    }
    Ok(())
}

/// What is valid but unsafe in one config file, in file order: secrets other users can read,
/// a config file others can change, a listener reachable beyond this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Warnings {
    /// The file as given.
    pub file: String,
    /// The warnings (line 0: about the file as a whole).
    pub list: Vec<Problem>,
}

impl Warnings {
    /// Whether there is nothing to warn about.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl fmt::Display for Warnings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_problems(f, &self.file, &self.list)
    }
}

/// Permission bits that make a file holding a secret unsafe: readable by others (not the
/// owner, not the group), or writable by anyone but the owner. A group may read a secret
/// (`0640 root:lifeboat` is a common way to share one with a service).
const UNSAFE_SECRET_BITS: u32 = 0o026;
/// Permission bits that make the config file itself unsafe whatever it holds: writable by
/// the group or others (it names commands the daemon runs and data directories it manages).
const UNSAFE_CONFIG_BITS: u32 = 0o022;

/// Who can do what to a file, in words: the bits of `mode` within `mask`.
fn exposure(mode: u32, mask: u32) -> String {
    let bits = mode & mask;
    let mut who = Vec::new();
    if bits & 0o004 != 0 {
        who.push("readable by every user");
    }
    if bits & 0o002 != 0 {
        who.push("writable by every user");
    }
    if bits & 0o020 != 0 {
        who.push("writable by its group");
    }
    format!("{} (mode {:04o})", who.join(" and "), mode & 0o7777)
}

/// The permission bits of `path`, when it can be looked at.
fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).ok().map(|m| m.permissions().mode())
}

/// Reads and validates the config file at `path`; `env` resolves `${NAME}` references
/// (pass `|n| std::env::var(n).ok()`). Relative `*_file` paths are relative to the
/// config file's directory.
///
/// # Errors
/// [`Problems`] listing every mistake.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Problems> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Problems {
        file: file.clone(),
        list: vec![Problem {
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
            fix: "check the path given with --config and its permissions".into(),
        }],
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mode = mode_of(path);
    let mut config = parse_inner(&file, &text, dir, env, mode)?;
    if let Some(m) = mode.filter(|m| m & UNSAFE_CONFIG_BITS != 0) {
        config.warnings.list.insert(
            0,
            Problem {
                line: 0,
                column: 0,
                key: String::new(),
                message: format!(
                    "the config file is {}: whoever can change it chooses the commands and \
                     data directories the daemon acts on",
                    exposure(m, UNSAFE_CONFIG_BITS)
                ),
                fix: format!("chmod go-w {file}"),
            },
        );
    }
    Ok(config)
}

/// Parses and validates config `text` (named `file` in problems; `dir` anchors relative
/// `*_file` paths).
///
/// # Errors
/// [`Problems`] listing every mistake.
pub fn parse(
    file: &str,
    text: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Problems> {
    parse_inner(file, text, dir, env, None)
}

/// [`parse`], knowing the config file's permission bits (`mode`) when it was read from disk,
/// so that an inline secret in a file others can read is warned about.
fn parse_inner(
    file: &str,
    text: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    mode: Option<u32>,
) -> Result<Config, Problems> {
    let mut cx = Cx {
        text,
        dir,
        env,
        mode,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let (doc, errors) = DeTable::parse_recoverable(text);
    for e in errors {
        let span = e.span().unwrap_or(0..0);
        cx.problem(
            span,
            "",
            format!("not valid TOML: {}", e.message().trim()),
            "see https://toml.io; strings need quotes, tables [brackets]",
        );
    }
    let config = if cx.problems.is_empty() {
        cx.config(doc.get_ref())
    } else {
        None
    };
    let mut problems = cx.problems;
    problems.sort_by_key(|p| (p.line, p.column));
    let mut warnings = cx.warnings;
    warnings.sort_by_key(|p| (p.line, p.column));
    let config = config.map(|mut c| {
        c.warnings = Warnings {
            file: file.to_string(),
            list: warnings,
        };
        c
    });
    if config.is_none() && problems.is_empty() {
        problems.push(Problem {
            line: 1,
            column: 1,
            key: String::new(),
            message: "the config is incomplete".into(),
            fix: "compare it with the example in docs/config.md".into(),
        });
    }
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(Problems {
            file: file.to_string(),
            list: problems,
        }),
    }
}

type Table<'i> = DeTable<'i>;

struct Cx<'a> {
    text: &'a str,
    dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// The config file's permission bits, when it came from disk.
    mode: Option<u32>,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Cx<'_> {
    /// A problem (or warning) at `span`: 1-based line and column (in characters).
    fn at(&self, span: Range<usize>, key: &str, message: String, fix: &str) -> Problem {
        let mut start = span.start.min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let before = self.text.get(..start).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Problem {
            line,
            column,
            key: key.to_string(),
            message,
            fix: fix.to_string(),
        }
    }

    fn problem(&mut self, span: Range<usize>, key: &str, message: String, fix: &str) {
        let p = self.at(span, key, message, fix);
        self.problems.push(p);
    }

    fn warning(&mut self, span: Range<usize>, key: &str, message: String, fix: &str) {
        let p = self.at(span, key, message, fix);
        self.warnings.push(p);
    }

    /// Reports keys of `table` that are not in `known` (with the closest known key).
    fn unknown_keys(&mut self, table: &Table<'_>, prefix: &str, known: &[&str]) {
        for (k, _) in table.iter() {
            let name: &str = k.get_ref();
            if known.contains(&name) {
                continue;
            }
            let close = known
                .iter()
                .map(|c| (edit_distance(name, c), *c))
                .filter(|(d, _)| *d <= 2)
                .min();
            let fix = match close {
                Some((_, c)) => format!("did you mean `{c}`?"),
                None => format!("known keys here: {}", known.join(", ")),
            };
            self.problem(k.span(), &join(prefix, name), "unknown key".into(), &fix);
        }
    }

    fn config(&mut self, doc: &Table<'_>) -> Option<Config> {
        self.unknown_keys(
            doc,
            "",
            &["cluster", "health", "coordinator", "proxy", "api"],
        );
        let cluster = match self.table(doc, "", "cluster", true) {
            Some(t) => self.cluster(t),
            None => None,
        };
        let health = match self.table(doc, "", "health", false) {
            Some(t) => self.health(t),
            None => Some(Health::default()),
        };
        let coordinator = match self.table(doc, "", "coordinator", false) {
            Some(t) => self.coordinator(t),
            None => Some(Coordinator::Embedded {
                state: PathBuf::from("/var/lib/lifeboat/state.sqlite"),
            }),
        };
        let proxy = match self.table(doc, "", "proxy", false) {
            Some(t) => self.proxy(t),
            None => Some(Proxy {
                listen: None,
                read_listen: None,
            }),
        };
        let api = match self.table(doc, "", "api", true) {
            Some(t) => self.api(t),
            None => None,
        };
        if let (Some(p), Some(a)) = (&proxy, &api) {
            let mut seen: BTreeMap<SocketAddr, &str> = BTreeMap::new();
            for (addr, what) in [
                (p.listen, "proxy.listen"),
                (p.read_listen, "proxy.read_listen"),
                (Some(a.listen), "api.listen"),
            ] {
                let Some(addr) = addr else { continue };
                if let Some(other) = seen.insert(addr, what) {
                    self.problem(
                        0..0,
                        what,
                        format!("{addr} is also {other}"),
                        "give each listener its own port",
                    );
                }
            }
        }
        if let (Some(c), Some(Coordinator::Etcd { .. })) = (&cluster, &coordinator) {
            if c.members.len() < 2 {
                self.problem(
                    0..0,
                    "coordinator.url",
                    "etcd coordinates several nodes, but the cluster has one member".into(),
                    "add members, or use url = \"embedded\"",
                );
            }
        }
        Some(Config {
            cluster: cluster?,
            health: health?,
            coordinator: coordinator?,
            proxy: proxy?,
            api: api?,
            warnings: Warnings::default(),
        })
    }

    /// The sub-table `key` of `parent` (reporting a missing required one or a non-table).
    fn table<'t, 'i>(
        &mut self,
        parent: &'t Table<'i>,
        prefix: &str,
        key: &str,
        required: bool,
    ) -> Option<&'t Table<'i>> {
        match parent.get(key) {
            Some(v) => match v.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => {
                    self.problem(
                        v.span(),
                        &join(prefix, key),
                        "is not a table".into(),
                        &format!("write it as a section: [{}]", join(prefix, key)),
                    );
                    None
                }
            },
            None => {
                if required {
                    self.problem(
                        0..0,
                        &join(prefix, key),
                        "missing".into(),
                        &format!("add a [{}] section (see docs/config.md)", join(prefix, key)),
                    );
                }
                None
            }
        }
    }

    /// A string value with `${NAME}` references resolved.
    fn string(
        &mut self,
        t: &Table<'_>,
        prefix: &str,
        key: &str,
        required: bool,
    ) -> Option<(String, Range<usize>)> {
        let full = join(prefix, key);
        match t.get(key) {
            None => {
                if required {
                    self.problem(
                        0..0,
                        &full,
                        "missing".into(),
                        &format!("add `{key} = \"…\"` to [{prefix}]"),
                    );
                }
                None
            }
            Some(v) => match v.get_ref() {
                DeValue::String(s) => match expand(s, self.env) {
                    Ok(x) => Some((x, v.span())),
                    Err(name) => {
                        self.problem(
                            v.span(),
                            &full,
                            format!("${{{name}}} is not set in the environment"),
                            &format!(
                                "export {name}=… before starting lifeboat, or write the value"
                            ),
                        );
                        None
                    }
                },
                _ => {
                    self.problem(
                        v.span(),
                        &full,
                        "must be a string".into(),
                        "put the value in double quotes",
                    );
                    None
                }
            },
        }
    }

    fn integer(
        &mut self,
        t: &Table<'_>,
        prefix: &str,
        key: &str,
        range: Range<i64>,
    ) -> Option<Option<(i64, Range<usize>)>> {
        let full = join(prefix, key);
        let Some(v) = t.get(key) else {
            return Some(None);
        };
        let n = match v.get_ref() {
            DeValue::Integer(i) => {
                i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()
            }
            _ => None,
        };
        match n {
            Some(n) if range.contains(&n) => Some(Some((n, v.span()))),
            Some(n) => {
                self.problem(
                    v.span(),
                    &full,
                    format!("{n} is out of range"),
                    &format!(
                        "use a whole number from {} to {}",
                        range.start,
                        range.end - 1
                    ),
                );
                None
            }
            None => {
                self.problem(
                    v.span(),
                    &full,
                    "must be a whole number".into(),
                    "write it without quotes, e.g. 5432",
                );
                None
            }
        }
    }

    fn duration(
        &mut self,
        t: &Table<'_>,
        prefix: &str,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        let Some((s, span)) = self.string(t, prefix, key, false) else {
            return t.get(key).is_none().then_some(default);
        };
        match lifeboat_types::parse_duration_between(
            &s,
            Duration::from_millis(10),
            lifeboat_types::MAX_DURATION,
        ) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(span, &join(prefix, key), e.to_string(), &e.fix());
                None
            }
        }
    }

    fn cluster(&mut self, t: &Table<'_>) -> Option<Cluster> {
        let p = "cluster";
        self.unknown_keys(
            t,
            p,
            &[
                "name",
                "replication",
                "failover",
                "member",
                "user",
                "password",
                "password_file",
                "when_no_standby",
            ],
        );
        let when_no_standby = match self.string(t, p, "when_no_standby", false) {
            None => t
                .get("when_no_standby")
                .is_none()
                .then_some(NoStandby::Continue),
            Some((s, span)) => match s.as_str() {
                "continue" => Some(NoStandby::Continue),
                "wait" => Some(NoStandby::Wait),
                _ => {
                    self.problem(
                        span,
                        "cluster.when_no_standby",
                        format!("{s:?} is not a choice"),
                        "use \"continue\" (writes go on, unreplicated, with an alert) or \"wait\" (writes wait for a standby)",
                    );
                    None
                }
            },
        };
        let user = match self.string(t, p, "user", false) {
            Some((s, _)) => Some(s),
            None => t.get("user").is_none().then(|| "postgres".to_string()),
        };
        let password = match self.secret(t, p, "password") {
            None => Some(None),
            Some(Some((s, _, _))) => Some(Some(Secret::new(s))),
            Some(None) => None,
        };
        let name = self.string(t, p, "name", true).map(|(s, span)| {
            if !valid_name(&s) {
                self.problem(
                    span,
                    "cluster.name",
                    format!("{s:?} is not a valid name"),
                    "use letters, digits, '-' and '_' (at most 63)",
                );
            }
            s
        });
        let replication = match self.string(t, p, "replication", false) {
            None => t.get("replication").is_none().then_some(Replication::Sync),
            Some((s, span)) => match s.as_str() {
                "sync" => Some(Replication::Sync),
                "async" => Some(Replication::Async),
                _ => {
                    self.problem(
                        span,
                        "cluster.replication",
                        format!("{s:?} is not a replication mode"),
                        "use \"sync\" (no acknowledged write is ever lost) or \"async\"",
                    );
                    None
                }
            },
        };
        let failover = match self.string(t, p, "failover", false) {
            None => t
                .get("failover")
                .is_none()
                .then_some(FailoverMode::Automatic),
            Some((s, span)) => match s.as_str() {
                "automatic" => Some(FailoverMode::Automatic),
                "manual" => Some(FailoverMode::Manual),
                _ => {
                    self.problem(
                        span,
                        "cluster.failover",
                        format!("{s:?} is not a failover mode"),
                        "use \"automatic\" or \"manual\"",
                    );
                    None
                }
            },
        };
        let members = self.members(t);
        if let (Some(Replication::Sync), Some(m)) = (replication, &members) {
            if m.len() < 2 {
                let span = t.get("replication").map_or(0..0, Spanned::span);
                self.problem(
                    span,
                    "cluster.replication",
                    "sync replication needs a standby, but the cluster has one member".into(),
                    "add a [[cluster.member]] for the standby, or use replication = \"async\"",
                );
            }
        }
        Some(Cluster {
            name: name?,
            user: user?,
            password: password?,
            replication: replication?,
            when_no_standby: when_no_standby?,
            failover: failover?,
            members: members?,
        })
    }

    fn members(&mut self, t: &Table<'_>) -> Option<Vec<Member>> {
        let Some(v) = t.get("member") else {
            self.problem(
                0..0,
                "cluster.member",
                "no members".into(),
                "add a [[cluster.member]] section per PostgreSQL server",
            );
            return None;
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.problem(
                v.span(),
                "cluster.member",
                "must be a list of tables".into(),
                "write each member as its own [[cluster.member]] section",
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let prefix = format!("cluster.member[{}]", i + 1);
            let DeValue::Table(m) = item.get_ref() else {
                self.problem(
                    item.span(),
                    &prefix,
                    "must be a table".into(),
                    "write each member as its own [[cluster.member]] section",
                );
                ok = false;
                continue;
            };
            self.unknown_keys(m, &prefix, &["name", "host", "port", "data_dir", "site"]);
            let name = self.string(m, &prefix, "name", true);
            if let Some((n, span)) = &name {
                if !valid_name(n) {
                    self.problem(
                        span.clone(),
                        &join(&prefix, "name"),
                        format!("{n:?} is not a valid name"),
                        "use letters, digits, '-' and '_' (at most 63)",
                    );
                } else if !names.insert(n.clone()) {
                    self.problem(
                        span.clone(),
                        &join(&prefix, "name"),
                        format!("{n:?} names two members"),
                        "give every member its own name",
                    );
                }
            }
            let host = self.string(m, &prefix, "host", true);
            let port = match self.integer(m, &prefix, "port", 1..65536) {
                Some(Some((p, span))) => Some((p as u16, span)),
                Some(None) => {
                    self.problem(
                        item.span(),
                        &join(&prefix, "port"),
                        "missing".into(),
                        "add `port = 5432` (the port PostgreSQL listens on)",
                    );
                    None
                }
                None => None,
            };
            if let (Some((h, _)), Some((p, span))) = (&host, &port) {
                if !addrs.insert((h.clone(), *p)) {
                    self.problem(
                        span.clone(),
                        &join(&prefix, "port"),
                        format!("{h}:{p} is also another member's address"),
                        "every member needs its own host and port",
                    );
                }
            }
            let data_dir = self
                .string(m, &prefix, "data_dir", true)
                .and_then(|(d, span)| {
                    let p = PathBuf::from(&d);
                    if p.is_absolute() {
                        Some(p)
                    } else {
                        self.problem(
                        span,
                        &join(&prefix, "data_dir"),
                        format!("{d:?} is not an absolute path"),
                        "write the data directory's full path, e.g. /var/lib/postgresql/15/main",
                    );
                        None
                    }
                });
            let site = self.string(m, &prefix, "site", false).map(|(s, _)| s);
            match (name, host, port, data_dir) {
                (Some((name, _)), Some((host, _)), Some((port, _)), Some(data_dir)) => {
                    out.push(Member {
                        name,
                        host,
                        port,
                        data_dir,
                        site,
                    })
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn health(&mut self, t: &Table<'_>) -> Option<Health> {
        let p = "health";
        self.unknown_keys(
            t,
            p,
            &[
                "interval",
                "timeout",
                "fall",
                "rise",
                "command",
                "host_port",
            ],
        );
        let command = self.string_list(t, p, "command");
        let host_port = self.integer(t, p, "host_port", 1..65536);
        let d = Health::default();
        let interval = self.duration(t, p, "interval", d.interval);
        let timeout = self.duration(t, p, "timeout", d.timeout);
        let fall = self.integer(t, p, "fall", 1..101);
        let rise = self.integer(t, p, "rise", 1..101);
        if let (Some(i), Some(to)) = (interval, timeout) {
            if to > i {
                let span = t.get("timeout").map_or(0..0, Spanned::span);
                self.problem(
                    span,
                    "health.timeout",
                    format!("{to:?} is longer than the interval ({i:?}): probes would overlap"),
                    "make timeout at most interval",
                );
            }
        }
        Some(Health {
            interval: interval?,
            timeout: timeout?,
            fall: fall?.map_or(d.fall, |(n, _)| n as u32),
            rise: rise?.map_or(d.rise, |(n, _)| n as u32),
            command: command?,
            host_port: host_port?.map(|(n, _)| n as u16),
        })
    }

    /// A non-empty list of strings (`${ENV}` expanded): `Some(None)` when absent, `None`
    /// after a problem.
    fn string_list(
        &mut self,
        t: &Table<'_>,
        prefix: &str,
        key: &str,
    ) -> Option<Option<Vec<String>>> {
        let full = join(prefix, key);
        let Some(v) = t.get(key) else {
            return Some(None);
        };
        let bad = |cx: &mut Self| {
            cx.problem(
                v.span(),
                &full,
                "must be a non-empty list of strings".into(),
                "write it as [\"/usr/local/bin/check\", \"{host}\"]",
            );
            None
        };
        let DeValue::Array(items) = v.get_ref() else {
            return bad(self);
        };
        if items.is_empty() {
            return bad(self);
        }
        let mut out = Vec::new();
        for item in items.iter() {
            let DeValue::String(s) = item.get_ref() else {
                return bad(self);
            };
            match expand(s, self.env) {
                Ok(x) => out.push(x),
                Err(name) => {
                    self.problem(
                        item.span(),
                        &full,
                        format!("${{{name}}} is not set in the environment"),
                        &format!("export {name}=… before starting lifeboat, or write the value"),
                    );
                    return None;
                }
            }
        }
        Some(Some(out))
    }

    fn coordinator(&mut self, t: &Table<'_>) -> Option<Coordinator> {
        let p = "coordinator";
        self.unknown_keys(t, p, &["url", "state"]);
        let (url, span) = self.string(t, p, "url", true)?;
        if url == "embedded" {
            let state = self
                .string(t, p, "state", false)
                .map_or(PathBuf::from("/var/lib/lifeboat/state.sqlite"), |(s, _)| {
                    self.dir.join(s)
                });
            return Some(Coordinator::Embedded { state });
        }
        if let Some(s) = t.get("state") {
            self.problem(
                s.span(),
                "coordinator.state",
                "only the embedded coordinator keeps a state file".into(),
                "remove `state`, or use url = \"embedded\"",
            );
        }
        let Some(rest) = url.strip_prefix("etcd://") else {
            self.problem(
                span,
                "coordinator.url",
                format!("{url:?} is not a coordinator"),
                "use \"embedded\" or \"etcd://host:port,host:port,host:port\"",
            );
            return None;
        };
        let endpoints: Vec<String> = rest.split(',').map(|e| e.trim().to_string()).collect();
        let bad: Vec<&String> = endpoints
            .iter()
            .filter(|e| {
                e.rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().map_or(true, |p| p == 0))
            })
            .collect();
        if !bad.is_empty() {
            self.problem(
                span,
                "coordinator.url",
                format!("{bad:?} is not host:port"),
                "list etcd members as etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379",
            );
            return None;
        }
        Some(Coordinator::Etcd { endpoints })
    }

    fn addr(&mut self, t: &Table<'_>, prefix: &str, key: &str) -> Option<Option<SocketAddr>> {
        let Some((s, span)) = self.string(t, prefix, key, false) else {
            return t.get(key).is_none().then_some(None);
        };
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(Some(a)),
            Err(_) => {
                self.problem(
                    span,
                    &join(prefix, key),
                    format!("{s:?} is not an address:port"),
                    "write e.g. \"0.0.0.0:6432\" or \"[::1]:6432\"",
                );
                None
            }
        }
    }

    fn proxy(&mut self, t: &Table<'_>) -> Option<Proxy> {
        let p = "proxy";
        self.unknown_keys(t, p, &["listen", "read_listen"]);
        let listen = self.addr(t, p, "listen");
        let read_listen = self.addr(t, p, "read_listen");
        for (key, addr) in [("listen", &listen), ("read_listen", &read_listen)] {
            if let Some(Some(a)) = addr {
                if a.ip().is_unspecified() {
                    let span = t.get(key).map_or(0..0, Spanned::span);
                    self.warning(
                        span,
                        &join(p, key),
                        format!(
                            "{a} listens on every network of this host: anyone who reaches one \
                             can try PostgreSQL logins through it"
                        ),
                        &format!(
                            "listen on the address of the network your applications use (e.g. \
                             \"10.0.1.5:{}\"), and let pg_hba.conf admit only them",
                            a.port()
                        ),
                    );
                }
            }
        }
        Some(Proxy {
            listen: listen?,
            read_listen: read_listen?,
        })
    }

    /// `KEY` or `KEY_file` (a file whose first line is the secret): `None` when neither is
    /// set, `Some(None)` after a problem, else the value, its span and the key used.
    fn secret(
        &mut self,
        t: &Table<'_>,
        p: &str,
        key: &str,
    ) -> Option<Option<(String, Range<usize>, String)>> {
        let file_key = format!("{key}_file");
        let full = join(p, key);
        match (t.get(key), t.get(file_key.as_str())) {
            (None, None) => None,
            (Some(a), Some(_)) => {
                self.problem(
                    a.span(),
                    &full,
                    format!("both {key} and {file_key} are set"),
                    &format!("keep one: {file_key} keeps the secret out of the config"),
                );
                Some(None)
            }
            (Some(raw), None) => {
                // Written out in the file (not a ${NAME} reference): as exposed as the file.
                let inline = matches!(raw.get_ref(), DeValue::String(v) if !v.contains("${"));
                if let (true, Some(m)) = (inline, self.mode) {
                    if m & UNSAFE_SECRET_BITS != 0 {
                        self.warning(
                            raw.span(),
                            &full,
                            format!(
                                "the {key} is written in a config file {}",
                                exposure(m, UNSAFE_SECRET_BITS)
                            ),
                            &format!(
                                "move it to {file_key} (mode 0600), or write {key} = \"${{ENV_VAR}}\", \
                                 or chmod o-rw,g-w the config file"
                            ),
                        );
                    }
                }
                Some(
                    self.string(t, p, key, true)
                        .map(|(s, span)| (s, span, full.clone())),
                )
            }
            (None, Some(_)) => {
                let full_file = join(p, &file_key);
                let Some((f, span)) = self.string(t, p, &file_key, true) else {
                    return Some(None);
                };
                let path = self.dir.join(&f);
                if let Some(m) = mode_of(&path).filter(|m| m & UNSAFE_SECRET_BITS != 0) {
                    self.warning(
                        span.clone(),
                        &full_file,
                        format!(
                            "{} holds a secret and is {}",
                            path.display(),
                            exposure(m, UNSAFE_SECRET_BITS)
                        ),
                        &format!(
                            "chmod 600 {} (or 640 to share it with a group)",
                            path.display()
                        ),
                    );
                }
                Some(match read_secret_file(&path) {
                    Ok(s) => Some((
                        s.lines().next().unwrap_or("").trim().to_string(),
                        span,
                        full_file,
                    )),
                    Err(e) => {
                        self.problem(
                            span,
                            &full_file,
                            format!("cannot read {}: {e}", path.display()),
                            "create the file (mode 0600) with the secret on its first line",
                        );
                        None
                    }
                })
            }
        }
    }

    fn api(&mut self, t: &Table<'_>) -> Option<Api> {
        let p = "api";
        self.unknown_keys(t, p, &["listen", "token", "token_file"]);
        let listen = match self.addr(t, p, "listen") {
            Some(Some(a)) => Some(a),
            Some(None) => Some(SocketAddr::from(([127, 0, 0, 1], 8008))),
            None => None,
        };
        if let Some(a) = listen.filter(|a| !a.ip().is_loopback()) {
            let span = t.get("listen").map_or(0..0, Spanned::span);
            let reach = if a.ip().is_unspecified() {
                "every network of this host"
            } else {
                "other hosts"
            };
            self.warning(
                span,
                "api.listen",
                format!(
                    "{a} opens the API (failover, switchover, maintenance) to {reach}; it speaks \
                     plain HTTP, so its token crosses the network unencrypted"
                ),
                "listen on 127.0.0.1 (the default) and reach it through SSH or a TLS proxy",
            );
        }
        let token = match self.secret(t, p, "token") {
            Some(found) => found,
            None => {
                self.problem(
                    0..0,
                    "api.token",
                    "the API needs a token".into(),
                    "add token_file = \"/etc/lifeboat/api.token\" (or token = \"${LIFEBOAT_API_TOKEN}\")",
                );
                None
            }
        };
        let token = token.and_then(|(s, span, key)| {
            let key = key.as_str();
            if s.len() < 16 {
                // Never the value itself: only its length.
                self.problem(
                    span,
                    key,
                    format!(
                        "the token has {} characters; at least 16 are needed",
                        s.len()
                    ),
                    "generate one, e.g. `head -c 24 /dev/urandom | base64`",
                );
                None
            } else {
                Some(Secret::new(s))
            }
        });
        Some(Api {
            listen: listen?,
            token: token?,
        })
    }
}

/// Largest secret file read (a secret file holds one line).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Reads a `*_file` secret, at most [`MAX_SECRET_FILE`] bytes: a mistyped path such as
/// `/dev/zero` must not make the daemon read for ever.
fn read_secret_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    // Looked at before opening: opening a FIFO (or /dev/stdin) would block.
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(std::io::Error::other(format!(
            "it is larger than {} KiB; a secret file holds one line",
            MAX_SECRET_FILE / 1024
        )));
    }
    Ok(text)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Replaces `${NAME}` with the variable's value; `$$` is a literal `$`. Returns the name of
/// the first unset variable.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            match body.find('}') {
                Some(end) => {
                    let name = &body[..end];
                    out.push_str(&env(name).ok_or_else(|| name.to_string())?);
                    rest = &body[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Levenshtein distance, for "did you mean" (keys are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_and_edit_distance() {
        let env = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("a${A}b$$c", &env), Ok("axb$c".into()));
        assert_eq!(expand("${B}", &env), Err("B".into()));
        assert_eq!(edit_distance("fal", "fall"), 1);
    }
}
