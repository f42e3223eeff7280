//! Retention: which snapshots a `forget` policy keeps, and why.
//!
//! Lives here: [`KeepPolicy`] and [`KeepPolicy::apply`], a pure function of the snapshots
//! and their times (no clock, no I/O). Semantics follow restic's: snapshots are considered
//! newest first; `last N` keeps the N newest; `hourly N` keeps the newest snapshot of each of
//! the N most recent hours that have one (likewise daily, weekly, monthly, yearly); a
//! snapshot with a kept tag is always kept. Times are bucketed in UTC.

use jiff::Timestamp;
use serde::Serialize;

use lifeboat_types::SnapshotId;

/// How many snapshots to keep per period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// Keep the N newest.
    pub last: u32,
    /// Keep the newest of each of the last N hours.
    pub hourly: u32,
    /// … days.
    pub daily: u32,
    /// … ISO weeks.
    pub weekly: u32,
    /// … months.
    pub monthly: u32,
    /// … years.
    pub yearly: u32,
    /// Always keep snapshots with any of these tags.
    pub tags: Vec<String>,
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The snapshot.
    #[serde(rename = "snapshot_id")]
    pub id: SnapshotId,
    /// Its time.
    pub time: String,
    /// Kept?
    pub keep: bool,
    /// Why it is kept (`last`, `daily 2026-11-21`, `tag prod`, …); empty when removed.
    pub reasons: Vec<String>,
}

impl KeepPolicy {
    /// Whether the policy keeps nothing (forgetting with it would remove every snapshot).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.tags.is_empty()
    }

    /// Decides for each snapshot `(id, time, tags)`; returns verdicts newest first.
    /// Snapshots whose time cannot be parsed are kept (never delete what we cannot judge).
    pub fn apply(&self, snapshots: &[(SnapshotId, String, Vec<String>)]) -> Vec<Verdict> {
        let mut sorted: Vec<_> = snapshots.iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        type Bucket = fn(&jiff::civil::DateTime) -> String;
        let buckets: [(&str, u32, Bucket); 5] = [
            ("hourly", self.hourly, |d| {
                format!(
                    "{:04}-{:02}-{:02}T{:02}",
                    d.year(),
                    d.month(),
                    d.day(),
                    d.hour()
                )
            }),
            ("daily", self.daily, |d| {
                format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
            }),
            ("weekly", self.weekly, |d| {
                let w = d.date().iso_week_date();
                format!("{:04}-W{:02}", w.year(), w.week())
            }),
            ("monthly", self.monthly, |d| {
                format!("{:04}-{:02}", d.year(), d.month())
            }),
            ("yearly", self.yearly, |d| format!("{:04}", d.year())),
        ];
        let mut remaining: Vec<u32> = buckets.iter().map(|b| b.1).collect();
        let mut last_bucket: Vec<Option<String>> = vec![None; buckets.len()];
        let mut out = Vec::with_capacity(sorted.len());
        for (n, (id, time, tags)) in sorted.into_iter().enumerate() {
            let mut reasons = Vec::new();
            if (n as u32) < self.last {
                reasons.push("last".to_string());
            }
            for t in tags {
                if self.tags.contains(t) {
                    reasons.push(format!("tag {t}"));
                }
            }
            match time.parse::<Timestamp>() {
                Ok(ts) => {
                    let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
                    for (i, (name, _, f)) in buckets.iter().enumerate() {
                        let b = f(&dt);
                        if remaining[i] > 0 && last_bucket[i].as_deref() != Some(b.as_str()) {
                            remaining[i] -= 1;
                            reasons.push(format!("{name} {b}"));
                            last_bucket[i] = Some(b);
                        }
                    }
                }
                Err(_) => reasons.push("unparsable time".into()),
            }
            out.push(Verdict {
                id: *id,
                time: time.clone(),
                keep: !reasons.is_empty(),
                reasons,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snaps(times: &[&str]) -> Vec<(SnapshotId, String, Vec<String>)> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| (SnapshotId([i as u8; 32]), t.to_string(), vec![]))
            .collect()
    }

    fn kept(v: &[Verdict]) -> Vec<String> {
        v.iter()
            .filter(|v| v.keep)
            .map(|v| v.time.clone())
            .collect()
    }

    #[test]
    fn keep_last_and_daily() {
        let s = snaps(&[
            "2026-11-20T01:00:00Z",
            "2026-11-20T23:00:00Z",
            "2026-11-21T05:00:00Z",
            "2026-11-21T06:00:00Z",
            "2026-11-22T07:00:00Z",
        ]);
        let p = KeepPolicy {
            last: 1,
            ..Default::default()
        };
        assert_eq!(kept(&p.apply(&s)), vec!["2026-11-22T07:00:00Z"]);
        let p = KeepPolicy {
            daily: 2,
            ..Default::default()
        };
        assert_eq!(
            kept(&p.apply(&s)),
            vec!["2026-11-22T07:00:00Z", "2026-11-21T06:00:00Z"]
        );
        let p = KeepPolicy {
            daily: 10,
            ..Default::default()
        };
        assert_eq!(kept(&p.apply(&s)).len(), 3, "one per day");
    }

    #[test]
    fn tags_and_weekly_monthly_yearly() {
        let mut s = snaps(&[
            "2024-06-01T00:00:00Z",
            "2025-01-15T00:00:00Z",
            "2025-12-31T00:00:00Z",
            "2026-11-02T00:00:00Z",
            "2026-11-16T00:00:00Z",
            "2026-11-17T00:00:00Z",
        ]);
        s[0].2 = vec!["audit".into()];
        let p = KeepPolicy {
            weekly: 1,
            monthly: 2,
            yearly: 2,
            tags: vec!["audit".into()],
            ..Default::default()
        };
        let v = p.apply(&s);
        assert_eq!(
            kept(&v),
            vec![
                "2026-11-17T00:00:00Z",
                "2025-12-31T00:00:00Z",
                "2024-06-01T00:00:00Z"
            ]
        );
        let audit = v.iter().find(|x| x.time.starts_with("2024")).unwrap();
        assert_eq!(audit.reasons, vec!["tag audit"]);
    }

    #[test]
    fn empty_policy_is_detected() {
        assert!(KeepPolicy::default().is_empty());
        assert!(!KeepPolicy {
            last: 1,
            ..Default::default()
        }
        .is_empty());
    }
}
