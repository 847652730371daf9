//! The checker against a brute-force oracle on thousands of small random histories.
//!
//! The oracle is the definition of linearizability written as directly as possible, with none
//! of the checker's machinery (no partitioning by key beyond the obvious, no memo, no pruning
//! of `info` operations, no pre-check): try every order of every subset of the `info`
//! operations together with all the completed ones. Any disagreement, in either direction, is
//! a bug in one of the checker's shortcuts.

use kvset_tests::checker::{check_history, CheckOptions, Verdict};
use kvset_tests::history::{Event, EventKind, History, Input, Operation, Outcome, Output};

/// A small deterministic PRNG (xorshift64*), so failures reproduce from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const VALUES: [&str; 3] = ["a", "b", "c"];

fn random_value(rng: &mut Rng) -> Option<String> {
    match rng.below(4) {
        0 => None,
        i => Some(VALUES[i as usize - 1].to_string()),
    }
}

/// How an operation of the generated history ends.
enum End {
    Ok(u64, Output),
    Fail(u64),
    Info,
}

/// Generates a history on one key by running a real register: each operation takes effect at
/// a random instant in its interval (an `info` one maybe later, maybe never), results are
/// computed from that, and then, sometimes, one result is corrupted.
fn generate(rng: &mut Rng) -> Vec<Event> {
    let n = 2 + rng.below(7) as usize;
    let mut ops: Vec<(u64, Input, u64, u64, Option<u64>)> = Vec::new(); // client, input, call, ret, point
    let mut free_at = [0u64; 3];
    for _ in 0..n {
        let client = rng.below(3);
        let call = free_at[client as usize] + rng.below(20);
        let ret = call + 1 + rng.below(30);
        free_at[client as usize] = ret + 1;
        let input = match rng.below(3) {
            0 => Input::Get,
            1 => Input::Put {
                value: random_value(rng).unwrap_or_else(|| "a".into()),
            },
            _ => Input::Cas {
                expected: random_value(rng),
                value: random_value(rng).unwrap_or_else(|| "b".into()),
            },
        };
        ops.push((client, input, call, ret, None));
    }
    // Outcome kinds, and linearization points for those that take effect.
    let mut kinds = Vec::new();
    for op in ops.iter_mut() {
        let kind = match rng.below(10) {
            0 => 1,     // fail: no effect
            1 | 2 => 2, // info
            _ => 0,     // ok
        };
        op.4 = match kind {
            0 => Some(op.2 * 100 + rng.below((op.3 - op.2) * 100 + 1)),
            2 if rng.chance(50) => Some(op.2 * 100 + rng.below(10_000)),
            _ => None,
        };
        kinds.push(kind);
    }
    let mut order: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].4.is_some()).collect();
    order.sort_by_key(|&i| ops[i].4);
    let mut state: Option<String> = None;
    let mut outputs: Vec<Option<Output>> = vec![None; ops.len()];
    for i in order {
        outputs[i] = Some(match &ops[i].1 {
            Input::Get => Output::Get {
                value: state.clone(),
            },
            Input::Put { value } => {
                state = Some(value.clone());
                Output::Put
            }
            Input::Cas { expected, value } => {
                let succeeded = state == *expected;
                if succeeded {
                    state = Some(value.clone());
                }
                Output::Cas { succeeded }
            }
        });
    }
    for _ in 0..2 {
        if !rng.chance(60) {
            continue;
        }
        let i = rng.below(ops.len() as u64) as usize;
        outputs[i] = match &ops[i].1 {
            Input::Get => Some(Output::Get {
                value: random_value(rng),
            }),
            Input::Put { .. } => Some(Output::Put),
            Input::Cas { .. } => Some(Output::Cas {
                succeeded: rng.chance(50),
            }),
        };
        if kinds[i] == 1 && rng.chance(50) {
            kinds[i] = 0;
        }
    }
    let mut events: Vec<(u64, Event)> = Vec::new();
    for (op_id, (i, (client, input, call, ret, _))) in ops.iter().enumerate().enumerate() {
        let f = input.function();
        let event = |kind, ts_ns| Event {
            client: *client,
            op: op_id as u64,
            key: "k".into(),
            kind,
            ts_ns,
            revision: None,
        };
        events.push((*call, event(EventKind::Invoke(input.clone()), *call)));
        let end = match kinds[i] {
            0 => End::Ok(*ret, outputs[i].clone().unwrap()),
            1 => End::Fail(*ret),
            _ => End::Info,
        };
        match end {
            End::Ok(t, out) => events.push((t, event(EventKind::Ok(out), t))),
            End::Fail(t) => events.push((t, event(EventKind::Fail(f), t))),
            End::Info => events.push((u64::MAX, event(EventKind::Info(f), 0))),
        }
    }
    events.sort_by_key(|(t, _)| *t);
    events.into_iter().map(|(_, e)| e).collect()
}

/// The definition, by exhaustive enumeration.
fn oracle(ops: &[Operation]) -> bool {
    fn step(op: &Operation, state: &Option<String>) -> Option<Option<String>> {
        match (&op.input, &op.output) {
            (Input::Get, Outcome::Ok(Output::Get { value })) => {
                (value == state).then(|| state.clone())
            }
            (Input::Get, _) => Some(state.clone()),
            (Input::Put { value }, _) => Some(Some(value.clone())),
            (Input::Cas { expected, value }, Outcome::Ok(Output::Cas { succeeded })) => {
                match (*succeeded, state == expected) {
                    (true, true) => Some(Some(value.clone())),
                    (false, false) => Some(state.clone()),
                    _ => None,
                }
            }
            // Unknown cas: whatever happened.
            (Input::Cas { expected, value }, _) => Some(if state == expected {
                Some(value.clone())
            } else {
                state.clone()
            }),
        }
    }
    fn go(ops: &[Operation], placed: &mut Vec<bool>, state: &Option<String>) -> bool {
        let done = ops
            .iter()
            .zip(placed.iter())
            .all(|(op, &p)| p || op.return_ns.is_none());
        if done {
            return true;
        }
        for i in 0..ops.len() {
            if placed[i] {
                continue;
            }
            // Real time: nothing still unplaced may have returned before this one was invoked.
            let blocked = ops
                .iter()
                .zip(placed.iter())
                .any(|(other, &p)| !p && other.return_ns.is_some_and(|r| r < ops[i].call_ns));
            if blocked {
                continue;
            }
            if let Some(next) = step(&ops[i], state) {
                placed[i] = true;
                if go(ops, placed, &next) {
                    return true;
                }
                placed[i] = false;
            }
        }
        false
    }
    let mut placed = vec![false; ops.len()];
    go(ops, &mut placed, &None)
}

#[test]
fn checker_agrees_with_brute_force() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut linearizable, mut violations) = (0, 0);
    for case in 0..6_000 {
        let events = generate(&mut rng);
        let history = History::from_events(events.clone()).expect("generated history is valid");
        let expected = oracle(&history.operations().ops);
        let report = check_history(&history, &CheckOptions::default());
        let got = match &report.verdict {
            Verdict::Linearizable => true,
            Verdict::Violation { .. } => false,
            Verdict::Inconclusive { reason } => panic!("case {case}: inconclusive: {reason}"),
        };
        if got != expected {
            let mut text = Vec::new();
            history.write(&mut text).unwrap();
            panic!(
                "case {case}: checker says {got}, oracle says {expected}\n{}\n{report}",
                String::from_utf8_lossy(&text)
            );
        }
        // The evidence shown for a violation must itself be a violation.
        if let Verdict::Violation { details, .. } = &report.verdict {
            let window: Vec<Operation> = details
                .window
                .iter()
                .map(|w| {
                    let mut op = w.operation.clone();
                    if w.pending_at_cut {
                        op.output = Outcome::Info;
                        op.return_ns = None;
                    }
                    op
                })
                .collect();
            assert!(
                !oracle(&window),
                "case {case}: the window is linearizable\n{report}"
            );
        }
        if expected {
            linearizable += 1;
        } else {
            violations += 1;
        }
    }
    println!("{linearizable} linearizable, {violations} violations");
    // The generator must exercise both answers.
    assert!(linearizable > 1_500 && violations > 1_000);
}
