//! Which snapshots a command means: the filters (`--tag`, `--host`, `--path`) every command
//! that names or lists snapshots shares, with restic's semantics.
//!
//! Lives here: [`SnapshotFilter`] and the [`Repository`] methods that apply it
//! ([`Repository::find_snapshot_matching`], [`Repository::snapshots_matching`]).
//! Never here: command-line parsing (the binary makes `--path` absolute) or printing.

use std::fmt;
use std::path::Path;

use lifeboat_types::SnapshotId;

use crate::error::{Error, Result};
use crate::format::Snapshot;
use crate::repository::{Repository, SnapshotList};

/// Narrows which snapshots a command considers. Empty fields match everything; a snapshot
/// must satisfy every non-empty field:
///
/// - `tags`: each entry is a comma-separated list of tags (`db,nightly`) the snapshot must
///   all have; it matches when **any** entry does (`--tag a,b --tag c`: a and b, or c).
/// - `hosts`: the snapshot's host is **one of** them.
/// - `paths`: the snapshot's paths include **every one** of them (a snapshot of `/srv` and
///   `/etc` matches `--path /srv`). Compared as paths: `/srv/` is `/srv`. A stream backed up
///   with `--stdin-filename shop.sql` has the path `/shop.sql`.
///
/// `latest` is the newest snapshot that matches; an id or prefix must name a snapshot that
/// matches too (restic ignores the filters there; a mismatch is refused rather than silently
/// taking a snapshot the filters exclude).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Tag lists, each comma-separated (all of a list must be present; any list may match).
    pub tags: Vec<String>,
    /// Host names (any may match).
    pub hosts: Vec<String>,
    /// Absolute paths (all must be among the snapshot's paths).
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Whether the filter lets every snapshot through.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.hosts.is_empty() && self.paths.is_empty()
    }

    /// Whether `s` passes the filter.
    pub fn matches(&self, s: &Snapshot) -> bool {
        let tags = self.tags.is_empty()
            || self.tags.iter().any(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .all(|t| s.tags.iter().any(|have| have == t))
            });
        let host = self.hosts.is_empty() || self.hosts.contains(&s.hostname);
        let paths = self.paths.iter().all(|want| {
            s.paths
                .iter()
                .any(|have| Path::new(have) == Path::new(want))
        });
        tags && host && paths
    }
}

impl fmt::Display for SnapshotFilter {
    /// The filter as command-line flags (`--tag db --path /srv/shop`), for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = (self.tags.iter().map(|t| ("--tag", t)))
            .chain(self.hosts.iter().map(|h| ("--host", h)))
            .chain(self.paths.iter().map(|p| ("--path", p)));
        for (i, (flag, value)) in flags.enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{flag} {value}")?;
        }
        Ok(())
    }
}

impl Repository {
    /// Finds a snapshot by full id, unique id prefix, or `latest` (the newest snapshot that
    /// passes `filter`). A snapshot named by id must pass `filter` too.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`], [`Error::AmbiguousSnapshot`], and
    /// [`Error::NoSnapshotMatches`] when snapshots exist but none that passes the filter;
    /// storage errors.
    pub fn find_snapshot_matching(
        &self,
        spec: &str,
        filter: &SnapshotFilter,
    ) -> Result<(SnapshotId, Snapshot)> {
        let no_match = || Error::NoSnapshotMatches {
            spec: spec.into(),
            filter: filter.to_string(),
        };
        if spec == "latest" {
            let (snaps, _) = self.snapshots()?;
            let any = !snaps.is_empty();
            return match snaps.into_iter().rev().find(|(_, s)| filter.matches(s)) {
                Some(found) => Ok(found),
                None if any && !filter.is_empty() => Err(no_match()),
                None => Err(Error::SnapshotNotFound { spec: spec.into() }),
            };
        }
        let found = match self.find_snapshot_by_id(spec) {
            Err(Error::SnapshotNotFound { .. }) => self.find_copy_of(spec)?,
            other => other?,
        };
        if filter.matches(&found.1) {
            Ok(found)
        } else {
            Err(no_match())
        }
    }

    /// The snapshot `copy` made of the snapshot whose id starts with `spec` in the source
    /// repository (its `original`): how the DR copy of a snapshot is found by the id people
    /// know. Consulted only when no snapshot's own id matches.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`] when no copy has that original,
    /// [`Error::AmbiguousSnapshot`] when several originals start with `spec`.
    fn find_copy_of(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        let want = spec.to_ascii_lowercase();
        let (snaps, _) = self.snapshots()?;
        let mut copies: Vec<(SnapshotId, Snapshot)> = snaps
            .into_iter()
            .filter(|(_, s)| s.original.is_some_and(|o| o.to_hex().starts_with(&want)))
            .collect();
        let originals: std::collections::BTreeSet<_> =
            copies.iter().filter_map(|(_, s)| s.original).collect();
        match originals.len() {
            0 => Err(Error::SnapshotNotFound { spec: spec.into() }),
            // Copied twice (to the same target): the newest copy.
            1 => copies
                .pop()
                .ok_or_else(|| Error::SnapshotNotFound { spec: spec.into() }),
            count => Err(Error::AmbiguousSnapshot {
                spec: spec.into(),
                count,
            }),
        }
    }

    /// Every snapshot that passes `filter`, oldest first; damaged snapshot files in the
    /// second list, as [`Repository::snapshots`].
    ///
    /// # Errors
    /// Storage errors listing the snapshots.
    pub fn snapshots_matching(&self, filter: &SnapshotFilter) -> Result<SnapshotList> {
        let (mut snaps, bad) = self.snapshots()?;
        snaps.retain(|(_, s)| filter.matches(s));
        Ok((snaps, bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(tags: &[&str], host: &str, paths: &[&str]) -> Snapshot {
        Snapshot {
            time: "2026-12-01T00:00:00Z".into(),
            tree: lifeboat_types::BlobId([0; 32]),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            hostname: host.into(),
            username: "u".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            parent: None,
            partial: false,
            original: None,
            summary: Default::default(),
            postgres: None,
        }
    }

    fn filter(tags: &[&str], hosts: &[&str], paths: &[&str]) -> SnapshotFilter {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        SnapshotFilter {
            tags: v(tags),
            hosts: v(hosts),
            paths: v(paths),
        }
    }

    #[test]
    fn restic_semantics() {
        let s = snap(&["db", "nightly"], "web1", &["/srv/shop", "/etc"]);
        assert!(filter(&[], &[], &[]).matches(&s));
        assert!(filter(&["db"], &[], &[]).matches(&s));
        assert!(filter(&["db,nightly"], &[], &[]).matches(&s));
        assert!(!filter(&["db,hourly"], &[], &[]).matches(&s), "a list: all");
        assert!(
            filter(&["hourly", "db"], &[], &[]).matches(&s),
            "lists: any"
        );
        assert!(
            filter(&[], &["web2", "web1"], &[]).matches(&s),
            "hosts: any"
        );
        assert!(!filter(&[], &["web2"], &[]).matches(&s));
        assert!(filter(&[], &[], &["/srv/shop/"]).matches(&s), "as paths");
        assert!(
            filter(&[], &[], &["/etc", "/srv/shop"]).matches(&s),
            "paths: all"
        );
        assert!(!filter(&[], &[], &["/etc", "/var"]).matches(&s));
        assert!(
            !filter(&[], &[], &["/srv"]).matches(&s),
            "not a prefix match"
        );
        assert!(!filter(&["db"], &["web2"], &[]).matches(&s), "fields: all");
        assert_eq!(
            filter(&["db"], &["web1"], &["/srv"]).to_string(),
            "--tag db --host web1 --path /srv"
        );
    }
}
