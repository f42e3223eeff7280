//! Translations between the crates' vocabularies: a health probe's result into the state
//! machine's observation, `synchronous_standby_names` into a list of names.
//!
//! Pure functions; nothing here talks to a server.

use lifeboat_failover::{Observation, PgFacts, Verdict};
use lifeboat_health::MemberHealth;

/// The machine's view of one probe result.
#[must_use]
pub fn observation(h: &MemberHealth) -> Observation {
    let verdict = match h.verdict {
        lifeboat_health::Verdict::Up => Verdict::Up,
        lifeboat_health::Verdict::Down => Verdict::Down,
        lifeboat_health::Verdict::Unknown => Verdict::Unknown,
    };
    let pg = h.last.pg.as_ref().filter(|_| h.last.ok).map(|pg| PgFacts {
        in_recovery: pg.in_recovery,
        lsn: if pg.in_recovery {
            pg.receive_lsn.or(pg.replay_lsn).unwrap_or(0)
        } else {
            pg.flush_lsn.or(pg.current_lsn).unwrap_or(0)
        },
        timeline: pg.timeline,
        streaming: pg.wal_receiver_streaming,
        sync_names: sync_names(&pg.synchronous_standby_names),
        replicas: pg
            .replication
            .iter()
            .filter(|r| r.state == "streaming")
            .map(|r| r.application_name.clone())
            .collect(),
        replica_flush: pg
            .replication
            .iter()
            .filter_map(|r| Some((r.application_name.clone(), r.flush_lsn?)))
            .collect(),
    });
    Observation {
        member: h.member.clone(),
        verdict,
        pg,
    }
}

/// The standby names in a `synchronous_standby_names` value: `ANY 1 ("a", b)`,
/// `FIRST 2 (a, b)`, `2 (a, b)` or `a, b`; quotes removed. Empty for an empty value.
#[must_use]
pub fn sync_names(value: &str) -> Vec<String> {
    let v = value.trim();
    let inner = match (v.find('('), v.rfind(')')) {
        (Some(open), Some(close)) if open < close => &v[open + 1..close],
        _ => v,
    };
    let mut names: Vec<String> = inner
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_string())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::sync_names;

    #[test]
    fn every_form_of_the_setting_yields_its_names() {
        assert_eq!(sync_names(""), Vec::<String>::new());
        assert_eq!(sync_names("ANY 1 (\"b\", \"a\")"), vec!["a", "b"]);
        assert_eq!(sync_names("FIRST 1 (s1)"), vec!["s1"]);
        assert_eq!(sync_names("2 (x, y)"), vec!["x", "y"]);
        assert_eq!(sync_names("s1, s2"), vec!["s1", "s2"]);
        assert_eq!(sync_names("\"Mixed-Case\""), vec!["Mixed-Case"]);
    }
}
