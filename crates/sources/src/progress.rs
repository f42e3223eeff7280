//! Progress counters shared between a running job and whoever displays it.
//! Never here: rendering (the CLI draws bars from these counters).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a backup or restore. All fields only grow.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files found so far.
    pub files_total: AtomicU64,
    /// Bytes of the files found so far.
    pub bytes_total: AtomicU64,
    /// Files finished.
    pub files_done: AtomicU64,
    /// Bytes finished.
    pub bytes_done: AtomicU64,
    /// Entries that failed.
    pub errors: AtomicU64,
}

impl Progress {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
