//! The coordinator: where a cluster's shared state lives (leader, generation, members'
//! reports, maintenance, approvals, failover history), in an embedded SQLite file or in etcd.
//!
//! It stores and compares; it must never decide a failover (that is `lifeboat-failover`).
