//! The fault schedule: which fault comes next, how long it lasts, and how long the cluster gets
//! to breathe before it — all drawn from the run's seed.
//!
//! The schedule is a sequence of rounds. Each round is the enabled fault kinds in an order the
//! seed shuffles, so every kind the backend supports is injected once before any is injected
//! twice, and a run long enough for one round exercises them all. Each planned fault carries:
//!
//! * `gap`: quiet time before it, after the previous fault healed (drawn from the gap range);
//! * `hold`: how long a pause, a partition or a wiped member's absence lasts (the hold range);
//! * `pick`: a random number that chooses the target among the candidates the fault allows
//!   (`pick % candidates`, candidates sorted by ordinal). Which member leads is only known when
//!   the fault is injected, so the target cannot be fixed in advance; with the same seed and
//!   the same roles the choice is the same.
//!
//! Wall-clock time is deliberately not part of the plan: a fault is injected only once the
//! cluster has healed from the previous one (see `faults`), so a slow recovery delays the rest
//! of the schedule instead of stacking faults on a cluster that has not recovered. The same
//! seed therefore gives the same sequence of faults, while how many of them fit into the
//! duration depends on how fast the cluster recovers.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::faults::FaultKind;

/// What the schedule draws from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Fault kinds to inject (unsupported ones already removed). Empty: no faults.
    pub kinds: Vec<FaultKind>,
    /// Range of the quiet time before each fault.
    pub gap: (Duration, Duration),
    /// Range of the time a pause, partition or wipe lasts.
    pub hold: (Duration, Duration),
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            kinds: FaultKind::ALL.to_vec(),
            gap: (Duration::from_millis(1000), Duration::from_millis(3000)),
            hold: (Duration::from_millis(1500), Duration::from_millis(4000)),
        }
    }
}

/// One fault of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedFault {
    /// Its position in the schedule (0-based).
    pub index: usize,
    /// What to do.
    pub kind: FaultKind,
    /// Chooses the target among the candidates (`pick % candidates.len()`).
    pub pick: u64,
    /// How long a pause, partition or wipe lasts.
    pub hold: Duration,
    /// Quiet time before the fault.
    pub gap: Duration,
}

impl PlannedFault {
    /// The candidate this fault targets (`None` when there is none).
    pub fn choose<T: Copy>(&self, candidates: &[T]) -> Option<T> {
        if candidates.is_empty() {
            None
        } else {
            Some(candidates[(self.pick % candidates.len() as u64) as usize])
        }
    }
}

/// The endless sequence of planned faults for one seed.
#[derive(Debug, Clone)]
pub struct Schedule {
    config: ScheduleConfig,
    rng: StdRng,
    round: Vec<FaultKind>,
    next: usize,
}

impl Schedule {
    /// The schedule for `seed`. The fault stream is derived from the seed alone (mixed with a
    /// constant so that it differs from the workload's streams).
    pub fn new(seed: u64, config: ScheduleConfig) -> Schedule {
        Schedule {
            config,
            rng: StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321),
            round: Vec::new(),
            next: 0,
        }
    }

    fn draw(&mut self, range: (Duration, Duration)) -> Duration {
        let (lo, hi) = (range.0.as_millis() as u64, range.1.as_millis() as u64);
        Duration::from_millis(if hi > lo {
            self.rng.random_range(lo..=hi)
        } else {
            lo
        })
    }
}

impl Iterator for Schedule {
    type Item = PlannedFault;

    fn next(&mut self) -> Option<PlannedFault> {
        if self.config.kinds.is_empty() {
            return None;
        }
        if self.round.is_empty() {
            self.round = self.config.kinds.clone();
            self.round.shuffle(&mut self.rng);
            // Pop from the back: keep the shuffled order front to back.
            self.round.reverse();
        }
        let kind = self.round.pop()?;
        let planned = PlannedFault {
            index: self.next,
            kind,
            pick: self.rng.random(),
            hold: self.draw(self.config.hold),
            gap: self.draw(self.config.gap),
        };
        self.next += 1;
        Some(planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let a: Vec<_> = Schedule::new(7, ScheduleConfig::default())
            .take(30)
            .collect();
        let b: Vec<_> = Schedule::new(7, ScheduleConfig::default())
            .take(30)
            .collect();
        let c: Vec<_> = Schedule::new(8, ScheduleConfig::default())
            .take(30)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_round_has_each_kind_once() {
        let config = ScheduleConfig::default();
        let n = config.kinds.len();
        let plan: Vec<_> = Schedule::new(1, config.clone()).take(3 * n).collect();
        for round in plan.chunks(n) {
            let mut kinds: Vec<_> = round.iter().map(|p| p.kind).collect();
            kinds.sort();
            let mut all = config.kinds.clone();
            all.sort();
            assert_eq!(kinds, all);
        }
        for p in &plan {
            assert!(p.gap >= config.gap.0 && p.gap <= config.gap.1);
            assert!(p.hold >= config.hold.0 && p.hold <= config.hold.1);
        }
        assert_eq!(
            plan.iter().map(|p| p.index).collect::<Vec<_>>(),
            (0..3 * n).collect::<Vec<_>>()
        );
    }

    #[test]
    fn only_enabled_kinds_and_none_without_kinds() {
        let config = ScheduleConfig {
            kinds: vec![FaultKind::Pause],
            ..ScheduleConfig::default()
        };
        assert!(Schedule::new(3, config)
            .take(5)
            .all(|p| p.kind == FaultKind::Pause));
        let none = ScheduleConfig {
            kinds: vec![],
            ..ScheduleConfig::default()
        };
        assert_eq!(Schedule::new(3, none).next(), None);
    }

    #[test]
    fn choose_wraps_the_pick() {
        let p = PlannedFault {
            index: 0,
            kind: FaultKind::Pause,
            pick: 7,
            hold: Duration::ZERO,
            gap: Duration::ZERO,
        };
        assert_eq!(p.choose(&[0, 1, 2]), Some(1));
        assert_eq!(p.choose::<usize>(&[]), None);
    }
}
