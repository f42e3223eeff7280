//! The traffic plane: a TCP proxy that forwards to the current primary (and closes
//! connections to a fenced one) and a read port that balances over healthy standbys.
//!
//! It forwards bytes; it must never parse, log or keep what flows through it.
//!
//! Lives here: [`Route`] (what the failover controller publishes on a
//! `tokio::sync::watch` channel), [`Port`] (one listening port, [`Role::Write`] or
//! [`Role::Read`]), [`ProxyOptions`], the [`Counters`] behind the metrics and their
//! [`CountersSnapshot`], and [`Error`].
//! Never here: deciding who the primary is (that is `lifeboat-failover`), health probes,
//! reading configuration files, starting threads or runtimes (the daemon does), or any look
//! at the bytes a client and a server exchange.
//!
//! # Runtime
//! Each connection is one task that copies both directions with
//! `tokio::io::copy_bidirectional`. Run a port with [`Port::serve`] on any runtime; the
//! daemon runs it as ADR 0020 measured best: one current-thread runtime per CPU, each on its
//! own thread and accepting on its own `SO_REUSEPORT` listener ([`Port::bind_reuseport`]),
//! so a connection never leaves the thread that accepted it (`examples/proxy.rs`).
//!
//! # Example
//! ```no_run
//! use lifeboat_traffic::{Port, ProxyOptions, Role, Route};
//! # async fn run() -> Result<(), lifeboat_traffic::Error> {
//! let (tx, rx) = tokio::sync::watch::channel(Route::with_primary(1, "127.0.0.1:5432".parse().unwrap()));
//! let port = Port::bind(Role::Write, "127.0.0.1:6432".parse().unwrap(), rx, ProxyOptions::default()).await?;
//! let counters = port.counters();
//! tokio::spawn(port.serve());
//! // A failover: no primary while the standby is promoted (new clients are held) ...
//! tx.send_replace(Route { generation: 2, primary: None, replicas: vec![] });
//! // ... then the new primary; connections to the old one were closed at the first send.
//! tx.send_replace(Route::with_primary(2, "127.0.0.1:5433".parse().unwrap()));
//! println!("{:?}", counters.snapshot());
//! # Ok(()) }
//! ```

mod error;
mod metrics;
mod port;
mod route;

pub use error::Error;
pub use metrics::{Counters, CountersSnapshot};
pub use port::{Port, ProxyOptions, Role};
pub use route::Route;
