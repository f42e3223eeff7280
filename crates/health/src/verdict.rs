//! Hysteresis: turns a stream of probe results into a verdict that changes only after
//! `fall` failures or `rise` successes in a row, so a blip never flips it.
//!
//! Lives here: [`Verdict`], [`Transition`], [`Hysteresis`].
//! Never here: I/O, clocks or probing — the tracker is pure and sees only `ok`/not `ok`.

use serde::Serialize;

/// What the probes say about a member after hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Not decided yet: fewer than `rise` successes or `fall` failures in a row since the
    /// start.
    Unknown,
    /// `rise` successes in a row (and no `fall` failures in a row since).
    Up,
    /// `fall` failures in a row (and no `rise` successes in a row since).
    Down,
}

/// A change of verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// The verdict before.
    pub from: Verdict,
    /// The verdict now.
    pub to: Verdict,
}

/// The fall/rise tracker of one member. Starts [`Verdict::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    fall: u32,
    rise: u32,
    verdict: Verdict,
    failures: u32,
    successes: u32,
}

impl Hysteresis {
    /// A tracker that turns `Down` after `fall` failures in a row and `Up` after `rise`
    /// successes in a row. A 0 counts as 1 (one result decides).
    pub fn new(fall: u32, rise: u32) -> Self {
        Hysteresis {
            fall: fall.max(1),
            rise: rise.max(1),
            verdict: Verdict::Unknown,
            failures: 0,
            successes: 0,
        }
    }

    /// Records one probe result and returns the transition when the verdict flips.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        let from = self.verdict;
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.rise {
                self.verdict = Verdict::Up;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.fall {
                self.verdict = Verdict::Down;
            }
        }
        (self.verdict != from).then_some(Transition {
            from,
            to: self.verdict,
        })
    }

    /// The current verdict.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Failures in a row up to now (0 after a success).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Successes in a row up to now (0 after a failure).
    pub fn consecutive_successes(&self) -> u32 {
        self.successes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Verdict::*;

    /// Feeds `results` ('+' ok, '-' failed) and returns the verdict after each.
    fn run(fall: u32, rise: u32, results: &str) -> Vec<Verdict> {
        let mut h = Hysteresis::new(fall, rise);
        results
            .chars()
            .map(|c| {
                h.observe(c == '+');
                h.verdict()
            })
            .collect()
    }

    #[test]
    fn starts_unknown_and_decides_after_rise_or_fall() {
        assert_eq!(Hysteresis::new(3, 2).verdict(), Unknown);
        assert_eq!(run(3, 2, "++"), [Unknown, Up]);
        assert_eq!(run(3, 2, "---"), [Unknown, Unknown, Down]);
        assert_eq!(run(3, 2, "+-+-+-"), [Unknown; 6]);
    }

    #[test]
    fn goes_down_after_exactly_fall_failures_and_up_after_rise_successes() {
        assert_eq!(run(3, 2, "++---++"), [Unknown, Up, Up, Up, Down, Down, Up]);
    }

    #[test]
    fn a_blip_of_fall_minus_one_failures_never_flips() {
        for fall in 1..=6u32 {
            let blip = "-".repeat(fall as usize - 1);
            let pattern = format!("++{blip}+{blip}+{blip}");
            let got = run(fall, 2, &pattern);
            assert!(
                got[1..].iter().all(|v| *v == Up),
                "fall {fall}: {pattern} gave {got:?}"
            );
        }
    }

    #[test]
    fn a_single_success_while_down_does_not_bring_it_up() {
        assert_eq!(
            run(2, 3, "--+-++-+++"),
            [Unknown, Down, Down, Down, Down, Down, Down, Down, Down, Up]
        );
    }

    #[test]
    fn transitions_are_reported_once_with_from_and_to() {
        let mut h = Hysteresis::new(2, 2);
        let mut seen = Vec::new();
        for ok in [true, true, true, false, false, false, true, true, true] {
            if let Some(t) = h.observe(ok) {
                seen.push((t.from, t.to));
            }
        }
        assert_eq!(seen, [(Unknown, Up), (Up, Down), (Down, Up)]);
    }

    #[test]
    fn counters_reset_on_the_other_result() {
        let mut h = Hysteresis::new(3, 2);
        h.observe(false);
        h.observe(false);
        assert_eq!(
            (h.consecutive_failures(), h.consecutive_successes()),
            (2, 0)
        );
        h.observe(true);
        assert_eq!(
            (h.consecutive_failures(), h.consecutive_successes()),
            (0, 1)
        );
    }

    #[test]
    fn zero_fall_or_rise_counts_as_one() {
        assert_eq!(run(0, 0, "-+-"), [Down, Up, Down]);
    }

    /// A reference model: the verdict is decided by the last run of equal results that
    /// reached its threshold.
    fn model(fall: u32, rise: u32, results: &[bool]) -> Verdict {
        let mut verdict = Unknown;
        let mut run_len = 0u32;
        let mut last = None;
        for &ok in results {
            run_len = if last == Some(ok) { run_len + 1 } else { 1 };
            last = Some(ok);
            if ok && run_len >= rise {
                verdict = Up;
            } else if !ok && run_len >= fall {
                verdict = Down;
            }
        }
        verdict
    }

    proptest! {
        #[test]
        fn matches_the_model(fall in 1u32..6, rise in 1u32..6,
                             results in proptest::collection::vec(any::<bool>(), 0..200)) {
            let mut h = Hysteresis::new(fall, rise);
            let mut flips = 0;
            for (i, &ok) in results.iter().enumerate() {
                let before = h.verdict();
                let t = h.observe(ok);
                prop_assert_eq!(h.verdict(), model(fall, rise, &results[..=i]));
                prop_assert_eq!(t.is_some(), h.verdict() != before);
                flips += usize::from(t.is_some());
                // A flip to Down needs `fall` failures in a row ending here, to Up `rise`
                // successes.
                if let Some(t) = t {
                    let need = if t.to == Down { fall } else { rise } as usize;
                    prop_assert!(i + 1 >= need);
                    prop_assert!(results[i + 1 - need..=i].iter().all(|&r| r == (t.to == Up)));
                }
            }
            prop_assert!(flips <= results.len());
        }

        #[test]
        fn runs_shorter_than_fall_never_bring_an_up_member_down(
            fall in 2u32..6,
            blips in proptest::collection::vec(1u32..6, 0..30),
        ) {
            let mut h = Hysteresis::new(fall, 1);
            h.observe(true);
            for b in blips {
                for _ in 0..b.min(fall - 1) {
                    prop_assert_eq!(h.observe(false), None);
                }
                h.observe(true);
                prop_assert_eq!(h.verdict(), Up);
            }
        }
    }
}
