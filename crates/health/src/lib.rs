//! Health probes of cluster members: PostgreSQL (connect + query: role, LSNs, replication),
//! TCP and command checks, each with interval, timeout, fall and rise so that a blip shorter
//! than the threshold never changes a member's verdict.
//!
//! This crate observes; it must never act on a server (no promotion, no stop, no write).
