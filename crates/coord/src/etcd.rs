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
//! A request that failed in transport (a refused or broken connection: a member died, or
//! has no leader yet) is sent again within the same call timeout, to whichever member the
//! client's balancer picks next; so every request is written to be harmless when applied
//! twice (plain puts, compare-and-swap txns that read back their own effect).
//! Never here: an etcd request without the call timeout around it, or a retry that could
//! apply a change twice.

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

/// Decodes member `member`'s report as stored under `members/<member>`.
pub(crate) fn decode_report(member: &str, value: &[u8]) -> serde_json::Result<MemberReport> {
    let stored: StoredReport = serde_json::from_slice(value)?;
    Ok(MemberReport {
        member: member.to_string(),
        report: stored.report,
        age: age_of(stored.at),
    })
}

/// Decodes a history entry as stored under `history/`.
pub(crate) fn decode_event(value: &[u8]) -> serde_json::Result<HistoryEntry> {
    let stored: StoredEvent = serde_json::from_slice(value)?;
    Ok(HistoryEntry {
        at: from_unix_ms(stored.at),
        event: stored.event,
    })
}

/// The etcd coordinator: a client (cheap to clone per call) and this agent's report lease.
pub struct Etcd {
    /// Boxed: the client is ~2 KB, and [`crate::Coordinator`] is an enum.
    client: Box<Client>,
    endpoints: String,
    cluster: String,
    prefix: String,
    timeout: Duration,
    report_ttl: Duration,
    agent: tokio::sync::Mutex<Option<Box<AgentLease>>>,
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

/// At most this many sends of one request that failed in transport (see [`Etcd::call`]).
const MAX_SENDS: usize = 20;

/// Pause before sending a request again.
const RESEND_PAUSE: Duration = Duration::from_millis(20);

/// Whether a request failed in transport or found no etcd leader, so that sending it again
/// (to another member, or after an election) may succeed. It may have been applied (a
/// connection that broke after the request went out): requests must be harmless twice.
fn resendable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => match s.code() as i32 {
            GRPC_UNAVAILABLE => true,
            GRPC_UNKNOWN => s.message().contains("transport error"),
            // The connection to the member broke under the request (the member died): the
            // client reports "operation was canceled" with the transport error as its
            // source. A cancellation the server sent has no source.
            GRPC_CANCELLED => std::error::Error::source(s).is_some(),
            _ => false,
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_UNAVAILABLE: i32 = 14;

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
            // No tonic request timeout: `call` bounds every request (tonic's would cut a
            // request short with "cancelled" instead of our clear timeout error).
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
            client: Box::new(client),
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

    /// Runs one etcd request under the call timeout. A request that failed in transport
    /// ([`resendable`]: a dead member, a broken connection, no leader yet) is sent again
    /// until the deadline. The error is [`Error::EtcdTimeout`] when a send was still
    /// outstanding at the deadline (its fate unknown), else the last error seen.
    async fn call<T, F, Fut>(&self, op: &'static str, mut request: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut refused = None;
        for _ in 0..MAX_SENDS {
            match tokio::time::timeout_at(deadline, request(Client::clone(&self.client))).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if resendable(&e) => {
                    refused = Some(e);
                    tokio::time::sleep_until(deadline.min(Instant::now() + RESEND_PAUSE)).await;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Ok(Err(e)) => return Err(self.etcd_err(op, e)),
                // A send outstanding at the deadline may still be applied later (a member
                // without quorum keeps it): say "did not answer", not the earlier error.
                Err(_) => return Err(self.timed_out(op)),
            }
        }
        Err(match refused {
            Some(e) => self.etcd_err(op, e),
            None => self.timed_out(op),
        })
    }

    async fn txn(&self, op: &'static str, txn: Txn) -> Result<etcd_client::TxnResponse> {
        self.call(op, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    async fn get(
        &self,
        op: &'static str,
        key: String,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse> {
        self.call(op, |mut c| {
            let (key, options) = (key.clone(), options.clone());
            async move { c.get(key, options).await }
        })
        .await
    }

    async fn put(
        &self,
        op: &'static str,
        key: String,
        value: Vec<u8>,
        options: Option<PutOptions>,
    ) -> Result<etcd_client::PutResponse> {
        self.call(op, |mut c| {
            let (key, value, options) = (key.clone(), value.clone(), options.clone());
            async move { c.put(key, value, options).await }
        })
        .await
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

    pub(crate) async fn promote(
        &self,
        expected: u64,
        member: &str,
        lease: Option<&LeaderLease>,
    ) -> Result<u64> {
        let lease = match lease.map(|l| (l, &l.inner)) {
            None => None,
            Some((l, LeaseInner::Etcd(h))) => Some((l, h.id)),
            Some((_, LeaseInner::Embedded(_))) => {
                return Err(Error::WrongBackend {
                    lease: "embedded",
                    backend: "etcd",
                })
            }
        };
        let gen_key = self.key("generation");
        let leader_key = self.key("leader");
        let guard = if expected == 0 {
            // Generation 0 is never written: "still 0" means "never promoted".
            Compare::version(gen_key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::value(gen_key.clone(), CompareOp::Equal, expected.to_string())
        };
        let next = expected.saturating_add(1);
        let mut guards = vec![guard];
        if let Some((_, id)) = lease {
            // The leader key still carries this lease: the caller leads right now.
            guards.push(Compare::lease(leader_key.clone(), CompareOp::Equal, id));
        }
        let txn = Txn::new()
            .when(guards)
            .and_then([
                TxnOp::put(gen_key.clone(), next.to_string(), None),
                TxnOp::put(self.key("primary"), member, None),
                TxnOp::delete(self.key("approval"), None),
            ])
            .or_else([
                TxnOp::get(gen_key, None),
                TxnOp::get(self.key("primary"), None),
                TxnOp::get(leader_key, None),
            ]);
        let resp = self.txn("promote", txn).await?;
        if resp.succeeded() {
            return Ok(next);
        }
        let r = resp.op_responses();
        if let Some((l, id)) = lease {
            let holds = matches!(r.get(2),
                Some(TxnOpResponse::Get(g)) if g.kvs().first().is_some_and(|kv| kv.lease() == id));
            if !holds {
                return Err(Error::LeaseLost {
                    member: l.member.clone(),
                    id,
                    why: "the leader key no longer carries it".into(),
                });
            }
        }
        let found = self.generation_of(Self::get_value(&r, 0))?;
        let primary = Self::get_value(&r, 1);
        if found == next && primary.as_deref() == Some(member.as_bytes()) {
            // Our own earlier send was applied and its answer lost (see `call`); or another
            // caller made the same member primary in the same generation: the same outcome.
            return Ok(next);
        }
        Err(Error::Stale { expected, found })
    }

    async fn grant(&self, op: &'static str, ttl: Duration) -> Result<i64> {
        let secs = ttl_secs(ttl);
        let resp = self
            .call(op, |mut c| async move { c.lease_grant(secs, None).await })
            .await?;
        Ok(resp.id())
    }

    /// Revokes a lease, best effort (it lapses on its own otherwise).
    async fn revoke(&self, id: i64) {
        let revoke = |mut c: Client| async move { c.lease_revoke(id).await };
        if let Err(e) = self.call("revoke a lease", revoke).await {
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
                key.clone(),
                member,
                Some(PutOptions::new().with_lease(id)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let taken = match self.txn("take the leader key", txn).await {
            // Present with our lease: our own earlier send was applied (see `call`).
            Ok(resp) => {
                resp.succeeded()
                    || matches!(resp.op_responses().first(),
                        Some(TxnOpResponse::Get(g)) if g.kvs().first().is_some_and(|kv| kv.lease() == id))
            }
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
            inner: LeaseInner::Etcd(Box::new(LeaseHandle {
                id,
                keepalive: tokio::sync::Mutex::new(None),
            })),
        }))
    }

    /// One keepalive of lease `id` on `slot`'s stream (opening one when empty; opening
    /// sends the first keepalive), under the call timeout. `Ok(false)`: the lease is gone.
    /// A broken stream (its member died) is replaced by a new one within the same call.
    /// The stream is kept only after a complete exchange, so a timed-out answer never
    /// pairs with a later request.
    async fn keep_alive_once(
        &self,
        op: &'static str,
        id: i64,
        slot: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    ) -> Result<bool> {
        let deadline = Instant::now() + self.timeout;
        let mut last = None;
        for _ in 0..MAX_SENDS {
            let taken = slot.take();
            let mut client = Client::clone(&self.client);
            let exchange = async move {
                match taken {
                    None => {
                        let pair = client.lease_keep_alive(id).await?;
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
            match tokio::time::timeout_at(deadline, exchange).await {
                Ok(Ok((alive, pair))) => {
                    if alive {
                        *slot = Some(pair);
                    }
                    return Ok(alive);
                }
                Ok(Err(e)) if lease_gone(&e) => return Ok(false),
                Ok(Err(e)) => {
                    // A stream that broke, or a refused connection: open a new stream
                    // (the balancer picks a member) until the deadline.
                    last = Some(e);
                    tokio::time::sleep_until(deadline.min(Instant::now() + RESEND_PAUSE)).await;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Err(_) => return Err(self.timed_out(op)),
            }
        }
        Err(match last {
            Some(e) => self.etcd_err(op, e),
            None => self.timed_out(op),
        })
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
        let id = handle.id;
        let revoke = |mut c: Client| async move { c.lease_revoke(id).await };
        match self.call("release the leader lease", revoke).await {
            Ok(_) => Ok(()),
            Err(Error::Etcd { source, .. }) if lease_gone(&source) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn leader(&self) -> Result<Option<String>> {
        let key = self.key("leader");
        let resp = self
            .call("read the leader", |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        resp.kvs()
            .first()
            .map(|kv| self.text("leader", kv.value().to_vec()))
            .transpose()
    }

    /// This agent's report lease, granted when absent or gone, renewed when a third of its
    /// TTL passed since the last renewal.
    async fn agent_lease(&self, agent: &mut Option<Box<AgentLease>>) -> Result<i64> {
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
        *agent = Some(Box::new(AgentLease {
            id,
            keepalive: None,
            renewed: sent,
        }));
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
            let put = self
                .put(
                    "publish a report",
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(id)),
                )
                .await;
            match put {
                Ok(_) => return Ok(()),
                Err(Error::Etcd { source, .. }) if lease_gone(&source) && attempt == 0 => {
                    // Lapsed between renewals (the agent stalled): take a new one, once.
                    *agent = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(self.timed_out("publish a report"))
    }

    pub(crate) async fn reports(&self) -> Result<Vec<MemberReport>> {
        let prefix = self.key("members/");
        let resp = self
            .get(
                "read reports",
                prefix.clone(),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let member = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
            let report = decode_report(&member, kv.value())
                .map_err(|e| self.corrupt(&format!("members/{member}"), e))?;
            out.push(report);
        }
        out.sort_by(|a, b| a.member.cmp(&b.member));
        Ok(out)
    }

    pub(crate) async fn set_maintenance(&self, on: bool) -> Result<()> {
        let value = if on { "true" } else { "false" };
        self.put(
            "set maintenance",
            self.key("maintenance"),
            value.into(),
            None,
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
        self.put("request approval", self.key("approval"), value, None)
            .await?;
        Ok(())
    }

    pub(crate) async fn approve(&self, to: Option<&str>) -> Result<Approval> {
        let key = self.key("approval");
        for _ in 0..CAS_ATTEMPTS {
            let resp = self.get("read approval", key.clone(), None).await?;
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
        Err(Error::Contended {
            what: "the pending approval",
            attempts: CAS_ATTEMPTS,
        })
    }

    pub(crate) async fn clear_approval(&self) -> Result<()> {
        let key = self.key("approval");
        self.call("clear approval", |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
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
                .and_then([TxnOp::put(key.clone(), value.clone(), None)])
                .or_else([TxnOp::get(key, None)]);
            let resp = self.txn("record history", txn).await?;
            // Present with our value: our own earlier send was applied (see `call`).
            if resp.succeeded() || Self::get_value(&resp.op_responses(), 0) == Some(value.clone()) {
                return Ok(());
            }
        }
        Err(Error::Contended {
            what: "a new history key",
            attempts: CAS_ATTEMPTS,
        })
    }

    pub(crate) async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let resp = self
            .get("read history", self.key("history/"), Some(options))
            .await?;
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs().iter().rev() {
            let entry = decode_event(kv.value())
                .map_err(|e| self.corrupt(&String::from_utf8_lossy(kv.key()), e))?;
            out.push(entry);
        }
        Ok(out)
    }

    pub(crate) async fn close(self) -> Result<()> {
        let Some(agent) = self.agent.lock().await.take() else {
            return Ok(());
        };
        let id = agent.id;
        let revoke = |mut c: Client| async move { c.lease_revoke(id).await };
        match self.call("revoke the report lease", revoke).await {
            Ok(_) => Ok(()),
            Err(Error::Etcd { source, .. }) if lease_gone(&source) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn changes(&self) -> Result<Changes> {
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let client = Client::clone(&self.client);
        let prefix = self.prefix.clone();
        let watch = |mut client: Client, prefix: String| async move {
            client
                .watch(prefix, Some(WatchOptions::new().with_prefix()))
                .await
        };
        let first = self
            .call("watch the cluster's keys", |c| watch(c, prefix.clone()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(2)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
    }
}
