//! Compound faults (`--overlap`): several faults in force at once, planned so that a pass can
//! still be expected.
//!
//! A single fault at a time into a healthy cluster (see `faults`) never tests what happens when
//! recoveries collide: a member rejoining from an empty volume while the leader is dead, a kill
//! in the middle of a snapshot install, a whole-cluster restart with one volume gone. A compound
//! fault is a short script of backend operations ([`Op`]) whose intervals overlap on purpose:
//!
//! | kind | script (n = 3: leader L, followers X and Y) | all in force at once |
//! | --- | --- | --- |
//! | `pause-wipe-kill-leader` | pause X; wipe Y; kill -9 L (its supervisor restarts it); Y rejoins empty; X thaws last | X frozen, Y gone, L dead |
//! | `kill-during-snapshot` | wipe a follower Y for the hold; let it start empty; once it answers, wait 0–400 ms and kill -9 it while it catches up (by a snapshot, when the leader's log was compacted: `--overlap` starts members with a small `--snapshot-every`) | the kill and Y's catch-up |
//! | `kill-all-wipe-one` | wipe Y (never kv-0); kill -9 every other member; Y comes back empty, the rest from their volumes | every member down, one volume gone |
//! | `kill-all-wipe-kv0` | the same with Y = kv-0, the bootstrapping member | as above |
//!
//! `kill-all-wipe-kv0` is the split brain of a lost kv-0 volume: without the cluster record an
//! empty kv-0 restarted together with the rest would bootstrap a fresh cluster of its own. Every
//! backend keeps a record outside kv-0's volume (the process launcher's file, the docker
//! topology's shared `/record` volume, the ConfigMap in Kubernetes), so an empty kv-0 waits to
//! be re-admitted, and the kind is part of `--overlap`. Name it in `--faults` to run only it.
//!
//! # Why a pass can be expected
//!
//! Raft keeps an acknowledged write as long as a majority keeps its log. Every compound fault
//! is injected, like any fault, only into a healthy cluster where every member has applied
//! every committed entry, and wipes **at most one member** — never more than `(n - 1) / 2`, the
//! number of volumes a quorum can lose while a majority still holds every committed entry.
//! Pauses and kills lose nothing (a frozen process keeps its state, a killed one restarts from
//! its volume). So a compound fault may make the cluster *unavailable* for a while (with X
//! frozen, Y empty and L dead no quorum exists until L restarts), and that is fine; a lost
//! acknowledged write or a non-linearizable read is a server bug. The unit tests below check
//! the plans for every seed they try: at most a minority wiped, no member hit by two faults at
//! once (Docker cannot kill a frozen container), every fault undone, and the intervals overlap.
//!
//! # Determinism
//!
//! The plan is a function of the [`PlannedFault`] (drawn from the run's seed) and the roles at
//! injection time: the same seed with the same leader gives the same script, down to the
//! delays. Each [`Event`] waits `after` from the end of the previous operation; the operations
//! themselves take what they take (a Docker volume removal is slower than `rm -rf`), so the
//! order — and with it the overlap — is fixed, while the wall-clock times are recorded in the
//! report as they happened.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use super::faults::FaultKind;
use super::schedule::PlannedFault;

/// Server flags `--overlap` adds (before `--server-arg`s, which can override them) on the
/// backends that pass flags to members: snapshot and compact the log often, so that a wiped
/// member has to catch up by a snapshot install.
pub const OVERLAP_SERVER_ARGS: &[&str] = &["--snapshot-every=400", "--keep-after-snapshot=50"];

/// One backend operation of a compound fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Freeze the member (SIGSTOP / docker pause).
    Pause(usize),
    /// Thaw it.
    Resume(usize),
    /// Kill the member and destroy its volume; it stays down until [`Op::WipeEnd`].
    WipeBegin(usize),
    /// Let the wiped member start again, empty.
    WipeEnd(usize),
    /// kill -9 these members at once; their supervisor (or [`Op::Revive`]) brings them back.
    Crash(Vec<usize>),
    /// Start crashed members again, on backends without a supervisor (docker); a no-op where
    /// the supervisor does it.
    Revive(Vec<usize>),
    /// Wait (bounded) until the member answers again after a wipe, then `delay`, then kill -9
    /// it: a kill while it catches up.
    KillWhileCatchingUp {
        /// The member.
        member: usize,
        /// From its first answer to the kill.
        delay: Duration,
    },
}

impl Op {
    /// True for an operation that puts a fault in force (the others undo one).
    pub fn begins(&self) -> bool {
        matches!(
            self,
            Op::Pause(_) | Op::WipeBegin(_) | Op::Crash(_) | Op::KillWhileCatchingUp { .. }
        )
    }

    /// The members it acts on.
    pub fn members(&self) -> Vec<usize> {
        match self {
            Op::Pause(m)
            | Op::Resume(m)
            | Op::WipeBegin(m)
            | Op::WipeEnd(m)
            | Op::KillWhileCatchingUp { member: m, .. } => vec![*m],
            Op::Crash(ms) | Op::Revive(ms) => ms.clone(),
        }
    }
}

/// One step of the script: wait `after` (from the end of the previous step), then do `op`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Delay before the operation.
    pub after: Duration,
    /// The operation.
    pub op: Op,
}

/// The script of one compound fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompoundPlan {
    /// The kind.
    pub kind: FaultKind,
    /// The steps, in order.
    pub events: Vec<Event>,
}

impl CompoundPlan {
    /// Every member the plan touches, sorted.
    pub fn targets(&self) -> Vec<usize> {
        let mut t: Vec<usize> = self.events.iter().flat_map(|e| e.op.members()).collect();
        t.sort_unstable();
        t.dedup();
        t
    }

    /// The members whose volume the plan destroys.
    pub fn wiped(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self
            .events
            .iter()
            .filter_map(|e| match e.op {
                Op::WipeBegin(m) => Some(m),
                _ => None,
            })
            .collect();
        w.sort_unstable();
        w.dedup();
        w
    }
}

/// The most volumes a cluster of `members` can lose while a majority still holds every
/// committed entry.
pub fn max_wipes(members: usize) -> usize {
    members.saturating_sub(1) / 2
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..=hi))
}

/// The script for a compound `planned` fault on a cluster of `members` with this `leader`, or
/// why it cannot be done now (no leader, too few members).
pub fn plan(
    planned: &PlannedFault,
    members: usize,
    leader: Option<usize>,
) -> Result<CompoundPlan, String> {
    if members < 3 {
        return Err(format!(
            "{} needs at least 3 members, the cluster has {members}",
            planned.kind
        ));
    }
    let mut rng = StdRng::seed_from_u64(planned.pick);
    let hold = planned.hold;
    let ev = |after: Duration, op: Op| Event { after, op };
    let all: Vec<usize> = (0..members).collect();
    let events = match planned.kind {
        FaultKind::PauseWipeKillLeader => {
            let l = leader.ok_or("no leader to kill")?;
            let mut followers: Vec<usize> = all.iter().copied().filter(|&m| m != l).collect();
            followers.shuffle(&mut rng);
            let (x, y) = (followers[0], followers[1]);
            let wipe_after = ms(&mut rng, 100, 400);
            let kill_after = ms(&mut rng, 200, 800);
            let thaw_after = ms(&mut rng, 500, 1500);
            vec![
                ev(Duration::ZERO, Op::Pause(x)),
                ev(wipe_after, Op::WipeBegin(y)),
                ev(kill_after, Op::Crash(vec![l])),
                ev(Duration::ZERO, Op::Revive(vec![l])),
                // Y stays away for the hold (at least 0.5 s after the kill), X even longer: for
                // a while L (restarting) and an empty Y are all there is.
                ev(
                    hold.saturating_sub(wipe_after + kill_after)
                        .max(Duration::from_millis(500)),
                    Op::WipeEnd(y),
                ),
                ev(thaw_after, Op::Resume(x)),
            ]
        }
        FaultKind::KillDuringSnapshot => {
            let followers: Vec<usize> =
                all.iter().copied().filter(|&m| Some(m) != leader).collect();
            let y = *followers.choose(&mut rng).ok_or("no follower")?;
            let delay = ms(&mut rng, 0, 400);
            vec![
                ev(Duration::ZERO, Op::WipeBegin(y)),
                ev(hold, Op::WipeEnd(y)),
                ev(Duration::ZERO, Op::KillWhileCatchingUp { member: y, delay }),
                ev(Duration::ZERO, Op::Revive(vec![y])),
            ]
        }
        FaultKind::KillAllWipeOne | FaultKind::KillAllWipeKv0 => {
            let y = if planned.kind == FaultKind::KillAllWipeKv0 {
                0
            } else {
                *all[1..].choose(&mut rng).ok_or("no member")?
            };
            let rest: Vec<usize> = all.iter().copied().filter(|&m| m != y).collect();
            let down = ms(&mut rng, 200, 1000);
            vec![
                ev(Duration::ZERO, Op::WipeBegin(y)),
                ev(Duration::ZERO, Op::Crash(rest.clone())),
                ev(down, Op::WipeEnd(y)),
                ev(Duration::ZERO, Op::Revive(rest)),
            ]
        }
        other => return Err(format!("{other} is not a compound fault")),
    };
    Ok(CompoundPlan {
        kind: planned.kind,
        events,
    })
}

/// An interval of a plan or a record: a label, and from/to positions (instants for a kill).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// `pause kv-1`, `wipe kv-2`, `kill -9 kv-0`, ...
    pub label: String,
    /// When it began.
    pub from: f64,
    /// When it was undone (equal to `from` for a kill).
    pub to: f64,
}

/// The pairs of spans in force at a common moment, with that common interval.
pub fn overlapping(spans: &[Span]) -> Vec<(usize, usize, f64, f64)> {
    let mut out = Vec::new();
    for i in 0..spans.len() {
        for j in i + 1..spans.len() {
            let from = spans[i].from.max(spans[j].from);
            let to = spans[i].to.min(spans[j].to);
            if from <= to {
                out.push((i, j, from, to));
            }
        }
    }
    out
}

/// The plan's spans on a nominal timeline (every operation instant, `after` delays only), for
/// tests and dry runs: pause…resume and wipe…end as intervals, each kill as an instant.
pub fn nominal_spans(plan: &CompoundPlan) -> Vec<Span> {
    let mut t = 0.0;
    let mut spans: Vec<Span> = Vec::new();
    let mut open: Vec<(String, usize)> = Vec::new();
    for e in &plan.events {
        t += e.after.as_secs_f64() * 1e3;
        let close = |label: String, spans: &mut Vec<Span>, open: &mut Vec<(String, usize)>| {
            if let Some(i) = open.iter().position(|(l, _)| *l == label) {
                let (_, at) = open.remove(i);
                spans[at].to = t;
            }
        };
        match &e.op {
            Op::Pause(m) | Op::WipeBegin(m) => {
                let label = span_label(&e.op, &[*m]);
                open.push((label.clone(), spans.len()));
                spans.push(Span {
                    label,
                    from: t,
                    to: f64::INFINITY,
                });
            }
            Op::Resume(m) => close(span_label(&Op::Pause(*m), &[*m]), &mut spans, &mut open),
            Op::WipeEnd(m) => close(span_label(&Op::WipeBegin(*m), &[*m]), &mut spans, &mut open),
            Op::Crash(ms) => spans.push(Span {
                label: span_label(&e.op, ms),
                from: t,
                to: t,
            }),
            Op::KillWhileCatchingUp { member, delay } => {
                t += delay.as_secs_f64() * 1e3;
                spans.push(Span {
                    label: span_label(&e.op, &[*member]),
                    from: t,
                    to: t,
                });
            }
            Op::Revive(_) => {}
        }
    }
    spans
}

/// The label of the span an operation opens (`kv-N` names from ordinals).
pub fn span_label(op: &Op, members: &[usize]) -> String {
    let names = members
        .iter()
        .map(|m| format!("kv-{m}"))
        .collect::<Vec<_>>()
        .join(" ");
    match op {
        Op::Pause(_) | Op::Resume(_) => format!("pause {names}"),
        Op::WipeBegin(_) | Op::WipeEnd(_) => format!("wipe {names}"),
        Op::Crash(_) | Op::Revive(_) => format!("kill -9 {names}"),
        Op::KillWhileCatchingUp { .. } => format!("kill -9 {names} while catching up"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::schedule::{Schedule, ScheduleConfig};

    fn overlap_config() -> ScheduleConfig {
        ScheduleConfig {
            kinds: FaultKind::COMPOUND.to_vec(),
            ..ScheduleConfig::default()
        }
    }

    /// Plans for the first `n` faults of a seed's schedule, each with a leader drawn from the
    /// fault too (any member may lead).
    fn plans(seed: u64, members: usize, n: usize) -> Vec<CompoundPlan> {
        Schedule::new(seed, overlap_config())
            .take(n)
            .map(|p| {
                let leader = Some((p.pick >> 7) as usize % members);
                plan(&p, members, leader).expect("plannable")
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_scripts() {
        assert_eq!(plans(11, 3, 40), plans(11, 3, 40));
        assert_ne!(plans(11, 3, 40), plans(12, 3, 40));
        // Every compound kind comes up in every round.
        let kinds: Vec<FaultKind> = plans(11, 3, 4).iter().map(|p| p.kind).collect();
        for k in FaultKind::COMPOUND {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
    }

    #[test]
    fn never_wipes_more_than_a_minority() {
        for seed in 0..200 {
            for members in [3, 5] {
                for p in plans(seed, members, 8) {
                    let wiped = p.wiped();
                    assert!(
                        !wiped.is_empty() && wiped.len() <= max_wipes(members),
                        "seed {seed}: {p:?} wipes {wiped:?} of {members}"
                    );
                    // Only kill-all-wipe-kv0 wipes kv-0 in a kill-all.
                    if p.kind == FaultKind::KillAllWipeOne {
                        assert!(!wiped.contains(&0), "{p:?}");
                    }
                    if p.kind == FaultKind::KillAllWipeKv0 {
                        assert_eq!(wiped, vec![0]);
                    }
                }
            }
        }
        assert_eq!(max_wipes(3), 1);
        assert_eq!(max_wipes(5), 2);
    }

    #[test]
    fn every_fault_is_undone_and_no_member_is_hit_twice_at_once() {
        for seed in 0..200 {
            for p in plans(seed, 3, 8) {
                // Walk the script: the set of members under an interval fault (paused or wiped)
                // and those crashed but not yet revived.
                let mut paused = Vec::new();
                let mut wiped = Vec::new();
                let mut crashed = Vec::new();
                for e in &p.events {
                    match &e.op {
                        Op::Pause(m) | Op::WipeBegin(m) => {
                            assert!(
                                !paused.contains(m) && !wiped.contains(m),
                                "seed {seed}: {m} hit twice in {p:?}"
                            );
                            if matches!(e.op, Op::Pause(_)) {
                                paused.push(*m);
                            } else {
                                wiped.push(*m);
                            }
                        }
                        Op::Resume(m) => paused.retain(|x| x != m),
                        Op::WipeEnd(m) => wiped.retain(|x| x != m),
                        Op::Crash(ms) => {
                            // Docker cannot kill a frozen container; a wiped one is gone.
                            for m in ms {
                                assert!(
                                    !paused.contains(m) && !wiped.contains(m),
                                    "seed {seed}: {p:?}"
                                );
                            }
                            crashed.extend(ms.iter().copied());
                        }
                        Op::KillWhileCatchingUp { member, .. } => {
                            assert!(!paused.contains(member) && !wiped.contains(member));
                            crashed.push(*member);
                        }
                        Op::Revive(ms) => crashed.retain(|x| !ms.contains(x)),
                    }
                }
                assert!(
                    paused.is_empty() && wiped.is_empty() && crashed.is_empty(),
                    "seed {seed}: left in force: {paused:?} {wiped:?} {crashed:?} in {p:?}"
                );
            }
        }
    }

    #[test]
    fn the_faults_overlap_as_intended() {
        for seed in 0..100 {
            for p in plans(seed, 3, 8) {
                let spans = nominal_spans(&p);
                let pairs = overlapping(&spans);
                let labels = |i: usize| spans[i].label.split(' ').next().unwrap().to_string();
                match p.kind {
                    FaultKind::PauseWipeKillLeader => {
                        // Three spans, each pair in force together: pause ∩ wipe ∩ kill.
                        assert_eq!(spans.len(), 3, "{spans:?}");
                        assert_eq!(pairs.len(), 3, "seed {seed}: {spans:?}");
                        let kill = &spans[2];
                        assert!(spans[0].from < kill.from && kill.from < spans[0].to);
                        assert!(spans[1].from < kill.from && kill.from < spans[1].to);
                        // The frozen member thaws only after the wiped one is back.
                        assert!(spans[0].to > spans[1].to);
                    }
                    FaultKind::KillAllWipeOne | FaultKind::KillAllWipeKv0 => {
                        // Every member down at once: the others killed while the wiped one is
                        // gone.
                        assert_eq!(spans.len(), 2, "{spans:?}");
                        assert_eq!(pairs.len(), 1);
                        assert_eq!(labels(0), "wipe");
                        let wiped_and_killed: usize = p
                            .events
                            .iter()
                            .map(|e| match &e.op {
                                Op::WipeBegin(_) => 1,
                                Op::Crash(ms) => ms.len(),
                                _ => 0,
                            })
                            .sum();
                        assert_eq!(wiped_and_killed, 3);
                    }
                    FaultKind::KillDuringSnapshot => {
                        // The kill follows the member's return from the wipe (it overlaps the
                        // catch-up, which only the run can observe).
                        assert_eq!(spans.len(), 2);
                        assert!(spans[1].label.ends_with("while catching up"));
                        assert!(spans[1].from >= spans[0].to);
                        assert_eq!(p.wiped(), p.events[2].op.members());
                    }
                    other => panic!("{other} is not compound"),
                }
            }
        }
    }

    #[test]
    fn a_plan_needs_a_leader_and_three_members() {
        let p = Schedule::new(1, overlap_config())
            .find(|p| p.kind == FaultKind::PauseWipeKillLeader)
            .unwrap();
        assert!(plan(&p, 3, None).unwrap_err().contains("no leader"));
        assert!(plan(&p, 2, Some(0)).unwrap_err().contains("at least 3"));
        let single = PlannedFault {
            kind: FaultKind::Pause,
            ..p
        };
        assert!(plan(&single, 3, Some(0))
            .unwrap_err()
            .contains("not a compound"));
    }
}
