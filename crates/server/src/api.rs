//! The HTTP API.
//!
//! * Health endpoints for external load balancers, in the conventions Patroni made
//!   standard, answering 200 or 503 with a one-line JSON body: `GET /primary`,
//!   `GET /replica[?lag=BYTES]`, `GET /read-only`, `GET /health`. Each takes `?member=NAME`
//!   (the daemon watches every member); without it, `/primary` and `/health` answer for the
//!   cluster (200 while writes are routed to a primary), `/replica` and `/read-only` 200
//!   when any member qualifies — except on an etcd agent, which answers for its own
//!   member (one agent per node, as Patroni does). They need no token: a load balancer cannot send one, and
//!   they reveal no more than a TCP probe would.
//! * Everything else needs `Authorization: Bearer <token>`: `GET /status`, `GET /metrics`
//!   (Prometheus text format), `POST /failover/approve` `{"to": NAME?}`, `POST /switchover`
//!   `{"to": NAME}`, `POST /maintenance` `{"on": bool}`.
//!
//! Never here: a decision (commands go to the main loop as they are) or a secret in a
//! response or log line.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lifeboat_failover::Command;
use lifeboat_types::Secret;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::daemon::CommandRequest;
use crate::exec::Executor;
use crate::status::Status;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) commands: mpsc::Sender<CommandRequest>,
    pub(crate) token: Secret<String>,
    pub(crate) executor: Executor,
    /// The member this node's agent acts for (etcd mode): the health endpoints answer for
    /// it when no `?member` is given (Patroni's per-node convention).
    pub(crate) local: Option<String>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/primary", get(primary))
        .route("/replica", get(replica))
        .route("/read-only", get(read_only))
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/failover/approve", post(approve))
        .route("/switchover", post(switchover))
        .route("/maintenance", post(maintenance))
        .with_state(Arc::new(state))
}

/// `?member=NAME&lag=BYTES`.
#[derive(Debug, Deserialize)]
pub struct Check {
    member: Option<String>,
    lag: Option<String>,
}

impl Check {
    /// The check with this node's member filled in when none was asked for (etcd mode).
    fn or_local(mut self, st: &ApiState) -> Self {
        if self.member.is_none() {
            self.member.clone_from(&st.local);
        }
        self
    }
}

fn answer(ok: bool, what: &str) -> Response {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(serde_json::json!({ "ok": ok, "check": what }))).into_response()
}

fn writable(s: &Status) -> bool {
    s.phase == "healthy" && (s.proxy.routed_to.is_some() || s.proxy.write.is_none())
}

async fn primary(State(st): State<Arc<ApiState>>, Query(q): Query<Check>) -> Response {
    let q = q.or_local(&st);
    let s = st.status.borrow().clone();
    let ok = match &q.member {
        Some(m) => {
            s.phase == "healthy"
                && s.primary.as_deref() == Some(m.as_str())
                && s.members
                    .iter()
                    .any(|x| x.name == *m && x.role == "primary" && x.state == "up")
        }
        None => writable(&s),
    };
    answer(ok, "primary")
}

/// `16384`, `16kB`, `1MB`, `1GB` → bytes.
fn parse_lag(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn is_replica(s: &Status, m: &crate::status::MemberStatus, lag: Option<u64>) -> bool {
    m.role == "standby"
        && m.state == "up"
        && m.streaming
        && !m.needs_rejoin
        && s.primary.as_deref() != Some(m.name.as_str())
        && lag.is_none_or(|max| m.lag_bytes.is_some_and(|l| l <= max))
}

async fn replica(State(st): State<Arc<ApiState>>, Query(q): Query<Check>) -> Response {
    let q = q.or_local(&st);
    let lag =
        match q.lag.as_deref().map(parse_lag) {
            Some(None) => return (
                StatusCode::BAD_REQUEST,
                Json(
                    serde_json::json!({"error": "lag: give bytes, or a number with kB, MB or GB"}),
                ),
            )
                .into_response(),
            Some(Some(l)) => Some(l),
            None => None,
        };
    let s = st.status.borrow().clone();
    let ok = s
        .members
        .iter()
        .filter(|m| q.member.as_ref().is_none_or(|n| *n == m.name))
        .any(|m| is_replica(&s, m, lag));
    answer(ok, "replica")
}

async fn read_only(State(st): State<Arc<ApiState>>, Query(q): Query<Check>) -> Response {
    let q = q.or_local(&st);
    let s = st.status.borrow().clone();
    let ok = s
        .members
        .iter()
        .filter(|m| q.member.as_ref().is_none_or(|n| *n == m.name))
        .any(|m| {
            is_replica(&s, m, None)
                || (m.role == "primary"
                    && m.state == "up"
                    && s.primary.as_deref() == Some(m.name.as_str()))
        });
    answer(ok, "read-only")
}

async fn health(State(st): State<Arc<ApiState>>, Query(q): Query<Check>) -> Response {
    let q = q.or_local(&st);
    let s = st.status.borrow().clone();
    let ok = match &q.member {
        Some(n) => s
            .members
            .iter()
            .any(|m| m.name == *n && m.state == "up" && !m.needs_rejoin),
        None => writable(&s),
    };
    answer(ok, "health")
}

fn authorized(st: &ApiState, headers: &HeaderMap) -> bool {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let want = st.token.expose().as_bytes();
    // Constant time in the token's length: no early exit on the first differing byte.
    given.len() == want.len()
        && given
            .as_bytes()
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"error": "missing or wrong bearer token: send `Authorization: Bearer <[api] token>`"})),
    )
        .into_response()
}

async fn status(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    let mut s = st.status.borrow().clone();
    // PIDs from postmaster.pid (members on this host).
    let executor = st.executor.clone();
    let names: Vec<String> = s.members.iter().map(|m| m.name.clone()).collect();
    let pids = tokio::task::spawn_blocking(move || {
        names
            .iter()
            .map(|n| {
                executor
                    .member(n)
                    .and_then(|m| executor.pg().postmaster_pid(m).ok().flatten())
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (m, pid) in s.members.iter_mut().zip(pids) {
        m.pid = pid;
    }
    Json(s).into_response()
}

async fn metrics(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    let s = st.status.borrow().clone();
    let mut out = String::new();
    let c = &s.cluster;
    out.push_str("# HELP lifeboat_cluster_generation Promotions so far (the coordinator's generation).\n# TYPE lifeboat_cluster_generation gauge\n");
    out.push_str(&format!(
        "lifeboat_cluster_generation{{cluster=\"{c}\"}} {}\n",
        s.coordinator.generation
    ));
    out.push_str("# HELP lifeboat_cluster_writable 1 while writes are routed to a healthy primary.\n# TYPE lifeboat_cluster_writable gauge\n");
    out.push_str(&format!(
        "lifeboat_cluster_writable{{cluster=\"{c}\"}} {}\n",
        u8::from(writable(&s))
    ));
    out.push_str("# HELP lifeboat_cluster_maintenance 1 while automation is paused.\n# TYPE lifeboat_cluster_maintenance gauge\n");
    out.push_str(&format!(
        "lifeboat_cluster_maintenance{{cluster=\"{c}\"}} {}\n",
        u8::from(s.maintenance)
    ));
    out.push_str("# HELP lifeboat_member_up 1 while the member's health checks pass.\n# TYPE lifeboat_member_up gauge\n");
    for m in &s.members {
        out.push_str(&format!(
            "lifeboat_member_up{{cluster=\"{c}\",member=\"{}\",role=\"{}\"}} {}\n",
            m.name,
            m.role,
            u8::from(m.state == "up")
        ));
    }
    out.push_str("# HELP lifeboat_member_lag_bytes A standby's distance behind the primary.\n# TYPE lifeboat_member_lag_bytes gauge\n");
    for m in &s.members {
        if let Some(l) = m.lag_bytes {
            out.push_str(&format!(
                "lifeboat_member_lag_bytes{{cluster=\"{c}\",member=\"{}\"}} {l}\n",
                m.name
            ));
        }
    }
    out.push_str("# HELP lifeboat_proxy_connections_active Client connections open through the proxy.\n# TYPE lifeboat_proxy_connections_active gauge\n");
    out.push_str(&format!(
        "lifeboat_proxy_connections_active{{cluster=\"{c}\"}} {}\n",
        s.proxy.active
    ));
    out.push_str("# HELP lifeboat_proxy_connections_total Client connections accepted by the proxy.\n# TYPE lifeboat_proxy_connections_total counter\n");
    out.push_str(&format!(
        "lifeboat_proxy_connections_total{{cluster=\"{c}\"}} {}\n",
        s.proxy.accepted
    ));
    out.push_str("# HELP lifeboat_proxy_closed_on_switch_total Connections closed because the primary changed.\n# TYPE lifeboat_proxy_closed_on_switch_total counter\n");
    out.push_str(&format!(
        "lifeboat_proxy_closed_on_switch_total{{cluster=\"{c}\"}} {}\n",
        s.proxy.closed_on_switch
    ));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

/// `{"to": NAME}`.
#[derive(Debug, Deserialize)]
pub struct To {
    to: Option<String>,
}

/// `{"on": bool}`.
#[derive(Debug, Deserialize)]
pub struct On {
    on: bool,
}

async fn send(st: &ApiState, cmd: Command) -> Response {
    let (tx, rx) = oneshot::channel();
    if st.commands.send((cmd, tx)).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "the daemon is stopping"})),
        )
            .into_response();
    }
    match rx.await {
        Ok(said) if said.starts_with("error:") => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": said})),
        )
            .into_response(),
        Ok(said) => Json(serde_json::json!({"result": said})).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "the daemon is stopping"})),
        )
            .into_response(),
    }
}

async fn approve(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Option<Json<To>>,
) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    let to = body.and_then(|Json(b)| b.to);
    send(&st, Command::Approve { to }).await
}

async fn switchover(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(body): Json<To>,
) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    let Some(to) = body.to else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "switchover needs {\"to\": MEMBER}"})),
        )
            .into_response();
    };
    // A checkpoint first, while writes still flow: the shutdown checkpoint of the
    // switchover then has little to write, and the write gap stays short.
    let s = st.status.borrow().clone();
    if let Some(p) = s.primary.clone() {
        let executor = st.executor.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(m) = executor.member(&p) {
                let _ = executor.pg().connect(m).and_then(|mut c| {
                    c.batch_execute("checkpoint").map_err(|e| {
                        lifeboat_postgres::cluster::ClusterError::Invalid(format!(
                            "checkpoint: {e}"
                        ))
                    })
                });
            }
        })
        .await;
    }
    send(&st, Command::Switchover { to }).await
}

async fn maintenance(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(body): Json<On>,
) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    send(&st, Command::Maintenance(body.on)).await
}

#[cfg(test)]
mod tests {
    use super::parse_lag;

    #[test]
    fn lag_limits_read_like_patroni() {
        assert_eq!(parse_lag("16384"), Some(16384));
        assert_eq!(parse_lag("16kB"), Some(16 << 10));
        assert_eq!(parse_lag("1MB"), Some(1 << 20));
        assert_eq!(parse_lag("2 GB"), Some(2 << 30));
        assert_eq!(parse_lag("fast"), None);
        assert_eq!(parse_lag("1TB"), None);
    }
}
