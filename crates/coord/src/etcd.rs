//! The etcd backend: one agent per database node, no single monitor. Everything lives under
//! `/lifeboat/<cluster>/` (layout in ADR 0019):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `generation` | decimal `u64`, absent = 0 | none |
//! | `primary` | member name | none |
//! | `maintenance` | `true` / `false` | none |
//! | `approval` | [`Approval`] as JSON | none |
//! | `leader` | member name | the holder's leader lease |
//! | `members/<member>` | `{"at": unix_ms, "report": …}` | the publishing agent's lease |
//! | `history/<unix_ms>-<suffix>` | `{"at": unix_ms, "event": …}` | none |
//!
//! Lives here: the transactions (promote: compare `generation`, then put `generation` and
//! `primary` and delete `approval` in one txn; leader: put `leader` only if its
//! `create_revision` is 0), the leases and their keepalive streams, a prefix watch.
//! Never here: an etcd request without the call timeout around it, or a retry of a txn
//! whose outcome is unknown (a timed-out promote is reported, not repeated).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::check_name;
use crate::{
    age_of, from_unix_ms, to_unix_ms, Approval, Changes, ClusterState, Error, HistoryEntry,
    LeaderLease, LeaseInner, MemberReport, Result,
};

/// How to reach etcd and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// `host:port` (or `http://host:port`) of each etcd member.
    pub endpoints: Vec<String>,
    /// The cluster's name: keys live under `/lifeboat/<cluster>/`.
    pub cluster: String,
    /// The longest any single etcd request may take before the call fails with
    /// [`Error::EtcdTimeout`]. Default 500 ms. Calls made of two requests (acquire: grant
    /// a lease, then the txn) may take twice this.
    pub call_timeout: Duration,
    /// Time to live of this agent's own lease, to which its published reports are
    /// attached: a report vanishes this long after its agent stopped publishing (etcd
    /// rounds up to whole seconds and grants at least its minimum, 1.5 election timeouts).
    /// Publish at least every `report_ttl / 3`. Default 3 s.
    pub report_ttl: Duration,
}

impl EtcdOptions {
    /// Options for `cluster` on `endpoints` with the default timeouts.
    pub fn new<S: Into<String>>(
        endpoints: impl IntoIterator<Item = S>,
        cluster: impl Into<String>,
    ) -> Self {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            cluster: cluster.into(),
            call_timeout: Duration::from_millis(500),
            report_ttl: Duration::from_secs(3),
        }
    }
}

/// A leader lease's etcd id and its keepalive stream (opened at the first renewal,
/// re-opened after a failed one).
#[derive(Debug)]
pub(crate) struct LeaseHandle {
    pub(crate) id: i64,
    keepalive: tokio::sync::Mutex<Option<(LeaseKeeper, LeaseKeepAliveStream)>>,
}

/// This agent's own lease for its reports.
#[derive(Debug)]
struct AgentLease {
    id: i64,
    keepalive: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    renewed: Instant,
}

/// A member's report as stored.
#[derive(Serialize, Deserialize)]
struct StoredReport {
    at: i64,
    report: serde_json::Value,
}

/// A history entry as stored.
#[derive(Serialize, Deserialize)]
struct StoredEvent {
    at: i64,
    event: serde_json::Value,
}

/// The etcd coordinator: a client (cheap to clone per call) and this agent's report lease.
pub struct Etcd {
    client: Client,
    endpoints: String,
    cluster: String,
    prefix: String,
    timeout: Duration,
    report_ttl: Duration,
    agent: tokio::sync::Mutex<Option<AgentLease>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("cluster", &self.cluster)
            .field("timeout", &self.timeout)
            .field("report_ttl", &self.report_ttl)
            .finish_non_exhaustive()
    }
}

/// How many times [`Etcd::approve`] and [`Etcd::record`] retry a lost compare (another
/// writer in between) before giving up with the last error.
const CAS_ATTEMPTS: usize = 5;

/// Whole seconds for etcd's lease TTL: `d` rounded up, at least 1.
fn ttl_secs(d: Duration) -> i64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// Whether etcd said that a lease does not exist (expired or revoked).
fn lease_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        etcd_client::Error::GRpcStatus(s) => s.message().contains("lease not found"),
        _ => false,
    }
}

impl Etcd {
    pub(crate) async fn connect(options: EtcdOptions) -> Result<Self> {
        check_name("cluster", &options.cluster)?;
        let endpoints = options.endpoints.join(",");
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.call_timeout)
            .with_timeout(options.call_timeout)
            // Fail fast with "no leader" from a member cut off from the quorum instead of
            // waiting for the timeout.
            .with_require_leader(true)
            // Notice a dead connection (a host gone without a TCP reset) between calls.
            .with_keep_alive(Duration::from_secs(1), options.call_timeout);
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|source| Error::Etcd {
                endpoints: endpoints.clone(),
                op: "connect",
                hint: "; list members as etcd://host:port,host:port in `url` of [coordinator]",
                source,
            })?;
        Ok(Etcd {
            client,
            prefix: format!("/lifeboat/{}/", options.cluster),
            cluster: options.cluster,
            endpoints,
            timeout: options.call_timeout,
            report_ttl: options.report_ttl,
            agent: tokio::sync::Mutex::new(None),
        })
    }

    pub(crate) fn cluster(&self) -> &str {
        &self.cluster
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn etcd_err(&self, op: &'static str, source: etcd_client::Error) -> Error {
        let hint = match &source {
            etcd_client::Error::GRpcStatus(s) if s.message().contains("no leader") => {
                "; the etcd cluster has no leader: a majority of its members is down or cut off"
            }
            etcd_client::Error::GRpcStatus(s) if s.code() as i32 == 14 => {
                "; is etcd running there? check `url` in [coordinator]"
            }
            etcd_client::Error::TransportError(_) => {
                "; is etcd running there? check `url` in [coordinator]"
            }
            _ => "",
        };
        Error::Etcd {
            endpoints: self.endpoints.clone(),
            op,
            hint,
            source,
        }
    }

    fn timed_out(&self, op: &'static str) -> Error {
        Error::EtcdTimeout {
            endpoints: self.endpoints.clone(),
            op,
            timeout: self.timeout,
        }
    }

    fn corrupt(&self, key: &str, detail: impl ToString) -> Error {
        Error::Corrupt {
            location: format!("etcd at {}", self.endpoints),
            key: self.key(key),
            detail: detail.to_string(),
        }
    }

    /// Runs one etcd request under the call timeout.
    async fn call<T>(
        &self,
        op: &'static str,
        request: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.etcd_err(op, e)),
            Err(_) => Err(self.timed_out(op)),
        }
    }

    async fn txn(&self, op: &'static str, txn: Txn) -> Result<etcd_client::TxnResponse> {
        let mut kv = self.client.kv_client();
        self.call(op, kv.txn(txn)).await
    }

    /// The value of the first key of the `i`-th response (a get) of a txn.
    fn get_value(responses: &[TxnOpResponse], i: usize) -> Option<Vec<u8>> {
        match responses.get(i) {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        }
    }

    fn text(&self, key: &str, value: Vec<u8>) -> Result<String> {
        String::from_utf8(value).map_err(|e| self.corrupt(key, e))
    }

    fn generation_of(&self, value: Option<Vec<u8>>) -> Result<u64> {
        match value {
            None => Ok(0),
            Some(v) => {
                let text = self.text("generation", v)?;
                text.parse()
                    .map_err(|_| self.corrupt("generation", format!("{text:?} is not a number")))
            }
        }
    }

    pub(crate) async fn state(&self) -> Result<ClusterState> {
        let keys = ["generation", "primary", "maintenance", "approval", "leader"];
        let gets: Vec<TxnOp> = keys.iter().map(|k| TxnOp::get(self.key(k), None)).collect();
        let resp = self.txn("read state", Txn::new().and_then(gets)).await?;
        let r = resp.op_responses();
        let generation = self.generation_of(Self::get_value(&r, 0))?;
        let primary = Self::get_value(&r, 1)
            .map(|v| self.text("primary", v))
            .transpose()?;
        let maintenance = match Self::get_value(&r, 2) {
            None => false,
            Some(v) => match v.as_slice() {
                b"true" => true,
                b"false" => false,
                other => {
                    return Err(self.corrupt(
                        "maintenance",
                        format!("{:?} is not true or false", String::from_utf8_lossy(other)),
                    ))
                }
            },
        };
        let pending_approval = Self::get_value(&r, 3)
            .map(|v| {
                serde_json::from_slice::<Approval>(&v).map_err(|e| self.corrupt("approval", e))
            })
            .transpose()?;
        let leader = Self::get_value(&r, 4)
            .map(|v| self.text("leader", v))
            .transpose()?;
        Ok(ClusterState {
            generation,
            primary,
            maintenance,
            pending_approval,
            leader,
        })
    }

    pub(crate) async fn promote(&self, expected: u64, member: &str) -> Result<u64> {
        let gen_key = self.key("generation");
        let guard = if expected == 0 {
            // Generation 0 is never written: "still 0" means "never promoted".
            Compare::version(gen_key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::value(gen_key.clone(), CompareOp::Equal, expected.to_string())
        };
        let next = expected.saturating_add(1);
        let txn = Txn::new()
            .when([guard])
            .and_then([
                TxnOp::put(gen_key.clone(), next.to_string(), None),
                TxnOp::put(self.key("primary"), member, None),
                TxnOp::delete(self.key("approval"), None),
            ])
            .or_else([TxnOp::get(gen_key, None)]);
        let resp = self.txn("promote", txn).await?;
        if resp.succeeded() {
            Ok(next)
        } else {
            let found = self.generation_of(Self::get_value(&resp.op_responses(), 0))?;
            Err(Error::Stale { expected, found })
        }
    }

    async fn grant(&self, op: &'static str, ttl: Duration) -> Result<i64> {
        let mut lease = self.client.lease_client();
        let resp = self.call(op, lease.grant(ttl_secs(ttl), None)).await?;
        Ok(resp.id())
    }

    /// Revokes a lease, best effort (it lapses on its own otherwise).
    async fn revoke(&self, id: i64) {
        let mut lease = self.client.lease_client();
        if let Err(e) = self.call("revoke a lease", lease.revoke(id)).await {
            tracing::debug!(lease = id, error = %e, "revoking an etcd lease failed; it lapses by its TTL");
        }
    }

    pub(crate) async fn acquire_leader(
        &self,
        member: &str,
        ttl: Duration,
    ) -> Result<Option<LeaderLease>> {
        let sent = Instant::now();
        let id = self.grant("grant the leader lease", ttl).await?;
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                member,
                Some(PutOptions::new().with_lease(id)),
            )]);
        let taken = match self.txn("take the leader key", txn).await {
            Ok(resp) => resp.succeeded(),
            Err(e) => {
                self.revoke(id).await;
                return Err(e);
            }
        };
        if !taken {
            self.revoke(id).await;
            return Ok(None);
        }
        Ok(Some(LeaderLease {
            member: member.to_string(),
            ttl,
            acquired_until: sent + ttl,
            inner: LeaseInner::Etcd(LeaseHandle {
                id,
                keepalive: tokio::sync::Mutex::new(None),
            }),
        }))
    }

    /// One keepalive of lease `id` on `slot`'s stream (opening one when empty; opening
    /// sends the first keepalive). `Ok(false)`: the lease is gone. The stream is kept only
    /// after a complete exchange, so a timed-out answer never pairs with a later request.
    async fn keep_alive_once(
        &self,
        op: &'static str,
        id: i64,
        slot: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    ) -> Result<bool> {
        let taken = slot.take();
        let mut lease = self.client.lease_client();
        let exchange = async move {
            match taken {
                None => {
                    let pair = lease.keep_alive(id).await?;
                    Ok::<_, etcd_client::Error>((true, pair))
                }
                Some((mut keeper, mut stream)) => {
                    keeper.keep_alive().await?;
                    let alive = match stream.message().await? {
                        Some(resp) => resp.ttl() > 0,
                        None => {
                            return Err(etcd_client::Error::LeaseKeepAliveError(
                                "the keepalive stream ended".into(),
                            ))
                        }
                    };
                    Ok((alive, (keeper, stream)))
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok((alive, pair))) => {
                if alive {
                    *slot = Some(pair);
                }
                Ok(alive)
            }
            Ok(Err(e)) if lease_gone(&e) => Ok(false),
            Ok(Err(e)) => Err(self.etcd_err(op, e)),
            Err(_) => Err(self.timed_out(op)),
        }
    }

    pub(crate) async fn renew(&self, lease: &LeaderLease) -> Result<Instant> {
        let LeaseInner::Etcd(handle) = &lease.inner else {
            return Err(Error::WrongBackend {
                lease: "embedded",
                backend: "etcd",
            });
        };
        let mut slot = handle.keepalive.lock().await;
        let sent = Instant::now();
        if self
            .keep_alive_once("renew the leader lease", handle.id, &mut slot)
            .await?
        {
            Ok(sent + lease.ttl)
        } else {
            Err(Error::LeaseLost {
                member: lease.member.clone(),
                id: handle.id,
                why: "etcd no longer knows the lease: it expired or was revoked".into(),
            })
        }
    }

    pub(crate) async fn release(&self, lease: LeaderLease) -> Result<()> {
        let LeaseInner::Etcd(handle) = &lease.inner else {
            return Err(Error::WrongBackend {
                lease: "embedded",
                backend: "etcd",
            });
        };
        let mut client = self.client.lease_client();
        match self
            .call("release the leader lease", client.revoke(handle.id))
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Etcd { source, .. }) if lease_gone(&source) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn leader(&self) -> Result<Option<String>> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call("read the leader", kv.get(self.key("leader"), None))
            .await?;
        resp.kvs()
            .first()
            .map(|kv| self.text("leader", kv.value().to_vec()))
            .transpose()
    }

    /// This agent's report lease, granted when absent or gone, renewed when a third of its
    /// TTL passed since the last renewal.
    async fn agent_lease(&self, agent: &mut Option<AgentLease>) -> Result<i64> {
        if let Some(a) = agent.as_mut() {
            if a.renewed.elapsed() < self.report_ttl / 3 {
                return Ok(a.id);
            }
            let sent = Instant::now();
            if self
                .keep_alive_once("renew the report lease", a.id, &mut a.keepalive)
                .await?
            {
                a.renewed = sent;
                return Ok(a.id);
            }
        }
        let sent = Instant::now();
        let id = self
            .grant("grant the report lease", self.report_ttl)
            .await?;
        *agent = Some(AgentLease {
            id,
            keepalive: None,
            renewed: sent,
        });
        Ok(id)
    }

    pub(crate) async fn publish(&self, member: &str, report: &serde_json::Value) -> Result<()> {
        let value = serde_json::to_vec(&StoredReport {
            at: to_unix_ms(SystemTime::now()),
            report: report.clone(),
        })
        .map_err(|e| self.corrupt("members/", e))?;
        let key = self.key(&format!("members/{member}"));
        let mut agent = self.agent.lock().await;
        for attempt in 0..2 {
            let id = self.agent_lease(&mut agent).await?;
            let mut kv = self.client.kv_client();
            let put = kv.put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(id)),
            );
            match tokio::time::timeout(self.timeout, put).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if lease_gone(&e) && attempt == 0 => {
                    // Lapsed between renewals (the agent stalled): take a new one, once.
                    *agent = None;
                }
                Ok(Err(e)) => return Err(self.etcd_err("publish a report", e)),
                Err(_) => return Err(self.timed_out("publish a report")),
            }
        }
        Err(self.timed_out("publish a report"))
    }

    pub(crate) async fn reports(&self) -> Result<Vec<MemberReport>> {
        let mut kv = self.client.kv_client();
        let prefix = self.key("members/");
        let resp = self
            .call(
                "read reports",
                kv.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let member = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
            let stored: StoredReport = serde_json::from_slice(kv.value())
                .map_err(|e| self.corrupt(&format!("members/{member}"), e))?;
            out.push(MemberReport {
                member,
                report: stored.report,
                age: age_of(stored.at),
            });
        }
        out.sort_by(|a, b| a.member.cmp(&b.member));
        Ok(out)
    }

    pub(crate) async fn set_maintenance(&self, on: bool) -> Result<()> {
        let mut kv = self.client.kv_client();
        let value = if on { "true" } else { "false" };
        self.call(
            "set maintenance",
            kv.put(self.key("maintenance"), value, None),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn request_approval(&self, generation: u64, to: Option<&str>) -> Result<()> {
        let approval = Approval {
            to: to.map(str::to_string),
            requested_at: crate::now_ms(),
            generation,
            approved_at: None,
        };
        let value = serde_json::to_vec(&approval).map_err(|e| self.corrupt("approval", e))?;
        let mut kv = self.client.kv_client();
        self.call(
            "request approval",
            kv.put(self.key("approval"), value, None),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn approve(&self, to: Option<&str>) -> Result<Approval> {
        let key = self.key("approval");
        for _ in 0..CAS_ATTEMPTS {
            let mut kv = self.client.kv_client();
            let resp = self
                .call("read approval", kv.get(key.clone(), None))
                .await?;
            let Some(current) = resp.kvs().first() else {
                return Err(Error::NothingToApprove {
                    cluster: self.cluster.clone(),
                });
            };
            let mut approval: Approval =
                serde_json::from_slice(current.value()).map_err(|e| self.corrupt("approval", e))?;
            approval.approved_at = Some(crate::now_ms());
            if let Some(to) = to {
                approval.to = Some(to.to_string());
            }
            let value = serde_json::to_vec(&approval).map_err(|e| self.corrupt("approval", e))?;
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    current.mod_revision(),
                )])
                .and_then([TxnOp::put(key.clone(), value, None)]);
            if self.txn("approve", txn).await?.succeeded() {
                return Ok(approval);
            }
        }
        Err(self.corrupt(
            "approval",
            format!("it changed under {CAS_ATTEMPTS} approvals in a row; try again"),
        ))
    }

    pub(crate) async fn clear_approval(&self) -> Result<()> {
        let mut kv = self.client.kv_client();
        self.call("clear approval", kv.delete(self.key("approval"), None))
            .await?;
        Ok(())
    }

    pub(crate) async fn record(&self, event: &serde_json::Value) -> Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let at = to_unix_ms(SystemTime::now());
        let value = serde_json::to_vec(&StoredEvent {
            at,
            event: event.clone(),
        })
        .map_err(|e| self.corrupt("history/", e))?;
        for _ in 0..CAS_ATTEMPTS {
            // Unique enough across agents (time, process, counter); the create-only txn
            // makes a collision a retry, never an overwrite.
            let suffix = format!(
                "{:08x}{:06x}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed) & 0xff_ffff
            );
            let key = self.key(&format!("history/{at:016}-{suffix}"));
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value.clone(), None)]);
            if self.txn("record history", txn).await?.succeeded() {
                return Ok(());
            }
        }
        Err(self.corrupt(
            "history/",
            format!("{CAS_ATTEMPTS} generated keys in a row already existed"),
        ))
    }

    pub(crate) async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let resp = self
            .call("read history", kv.get(self.key("history/"), Some(options)))
            .await?;
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs().iter().rev() {
            let stored: StoredEvent = serde_json::from_slice(kv.value())
                .map_err(|e| self.corrupt(&String::from_utf8_lossy(kv.key()), e))?;
            out.push(HistoryEntry {
                at: from_unix_ms(stored.at),
                event: stored.event,
            });
        }
        Ok(out)
    }

    pub(crate) async fn changes(&self) -> Result<Changes> {
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let client = self.client.clone();
        let prefix = self.prefix.clone();
        let watch = |mut client: Client, prefix: String| async move {
            client
                .watch(prefix, Some(WatchOptions::new().with_prefix()))
                .await
        };
        let first = self
            .call(
                "watch the cluster's keys",
                watch(client.clone(), prefix.clone()),
            )
            .await?;
        let timeout = self.timeout;
        let endpoints = self.endpoints.clone();
        tokio::spawn(async move {
            let mut current = Some(first);
            loop {
                if let Some((_watcher, mut stream)) = current.take() {
                    loop {
                        tokio::select! {
                            _ = tx.closed() => return,
                            msg = stream.message() => match msg {
                                Ok(Some(resp)) if !resp.events().is_empty() || resp.canceled() => {
                                    tx.send_modify(|n| *n = n.wrapping_add(1));
                                    if resp.canceled() { break; }
                                }
                                Ok(Some(_)) => {}
                                Ok(None) | Err(_) => break,
                            },
                        }
                    }
                    // The watch broke: changes may have been missed, so wake the reader.
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                match tokio::time::timeout(timeout, watch(client.clone(), prefix.clone())).await {
                    Ok(Ok(w)) => current = Some(w),
                    Ok(Err(e)) => {
                        tracing::debug!(%endpoints, error = %e, "re-watching etcd failed; retrying")
                    }
                    Err(_) => tracing::debug!(%endpoints, "re-watching etcd timed out; retrying"),
                }
            }
        });
        Ok(Changes { rx })
    }
}
