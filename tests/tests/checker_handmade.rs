//! Hand-made histories with known answers: the classic anomalies a broken replicated store
//! shows (each must be a violation), valid concurrent histories that a too-strict checker
//! would reject (each must be linearizable), and an adversarial history that no search can
//! finish within a tiny budget (it must be inconclusive, never a pass).

use std::time::Duration;

use kvset_tests::checker::{check_history, CheckOptions, KeyResult, Verdict};
use kvset_tests::history::{Event, EventKind, History, Input, Output};

/// How an operation ends in a hand-made history.
#[derive(Clone, Copy)]
enum End {
    /// `ok` at this time.
    Ok(u64),
    /// `fail` at this time.
    Fail(u64),
    /// `info` (written at the end of the file; its time means nothing).
    Info,
    /// No completion at all.
    Open,
}

/// Builds histories from operations given as intervals.
#[derive(Default)]
struct Builder {
    events: Vec<(u64, Event)>,
    next_op: u64,
}

impl Builder {
    fn op(&mut self, client: u64, key: &str, input: Input, call: u64, end: End, out: Output) {
        let op = self.next_op;
        self.next_op += 1;
        let f = input.function();
        let event = |kind, ts_ns| Event {
            client,
            op,
            key: key.to_string(),
            kind,
            ts_ns,
            revision: None,
        };
        self.events
            .push((call, event(EventKind::Invoke(input), call)));
        match end {
            End::Ok(t) => self.events.push((t, event(EventKind::Ok(out), t))),
            End::Fail(t) => self.events.push((t, event(EventKind::Fail(f), t))),
            End::Info => self
                .events
                .push((u64::MAX, event(EventKind::Info(f), u64::MAX))),
            End::Open => {}
        }
    }

    fn put(&mut self, client: u64, key: &str, value: &str, call: u64, end: End) -> &mut Self {
        let input = Input::Put {
            value: value.to_string(),
        };
        self.op(client, key, input, call, end, Output::Put);
        self
    }

    fn get(
        &mut self,
        client: u64,
        key: &str,
        read: Option<&str>,
        call: u64,
        end: End,
    ) -> &mut Self {
        let out = Output::Get {
            value: read.map(str::to_string),
        };
        self.op(client, key, Input::Get, call, end, out);
        self
    }

    #[allow(clippy::too_many_arguments)]
    fn cas(
        &mut self,
        client: u64,
        key: &str,
        expected: Option<&str>,
        value: &str,
        succeeded: bool,
        call: u64,
        end: End,
    ) -> &mut Self {
        let input = Input::Cas {
            expected: expected.map(str::to_string),
            value: value.to_string(),
        };
        self.op(client, key, input, call, end, Output::Cas { succeeded });
        self
    }

    fn history(&self) -> History {
        let mut events = self.events.clone();
        events.sort_by_key(|(t, _)| *t);
        History::from_events(events.into_iter().map(|(_, e)| e)).expect("valid history")
    }
}

fn verdict(b: &Builder) -> Verdict {
    let report = check_history(&b.history(), &CheckOptions::default());
    println!("{report}");
    report.verdict
}

fn assert_violation(b: &Builder, key: &str) {
    match verdict(b) {
        Verdict::Violation { key: k, details } => {
            assert_eq!(k, key);
            assert!(!details.window.is_empty());
        }
        other => panic!("expected a violation on {key:?}, got {other:?}"),
    }
}

fn assert_linearizable(b: &Builder) {
    let v = verdict(b);
    assert_eq!(v, Verdict::Linearizable, "expected linearizable");
}

// ------------------------------------------------------------------------------------------
// Anomalies: each must be a violation.
// ------------------------------------------------------------------------------------------

#[test]
fn stale_read_after_acknowledged_write() {
    let mut b = Builder::default();
    b.put(1, "k", "v1", 0, End::Ok(10))
        .get(2, "k", None, 20, End::Ok(30));
    assert_violation(&b, "k");

    // Stale by one version.
    let mut b = Builder::default();
    b.put(1, "k", "v1", 0, End::Ok(10))
        .put(1, "k", "v2", 20, End::Ok(30))
        .get(2, "k", Some("v1"), 40, End::Ok(50));
    assert_violation(&b, "k");
}

#[test]
fn lost_acknowledged_write() {
    // The write of v2 was acknowledged, yet every later read sees v1 (e.g. a leader that lost
    // its log on failover).
    let mut b = Builder::default();
    b.put(1, "k", "v1", 0, End::Ok(10))
        .get(2, "k", Some("v1"), 12, End::Ok(14))
        .put(3, "k", "v2", 20, End::Ok(30))
        .get(2, "k", Some("v2"), 31, End::Ok(33))
        .get(1, "k", Some("v1"), 40, End::Ok(50))
        .get(2, "k", Some("v1"), 60, End::Ok(70));
    assert_violation(&b, "k");
}

#[test]
fn cas_applied_twice() {
    // Two concurrent cas expecting v0 both succeed: only one of them can have seen v0.
    let mut b = Builder::default();
    b.put(1, "k", "v0", 0, End::Ok(10))
        .cas(2, "k", Some("v0"), "a", true, 20, End::Ok(40))
        .cas(3, "k", Some("v0"), "b", true, 25, End::Ok(45));
    assert_violation(&b, "k");

    // The same cas request applied twice (a retried write without exactly-once): a
    // counter-style increment observed twice.
    let mut b = Builder::default();
    b.put(1, "k", "0", 0, End::Ok(10))
        .cas(2, "k", Some("0"), "1", true, 20, End::Ok(30))
        .cas(2, "k", Some("0"), "1", true, 40, End::Ok(50));
    assert_violation(&b, "k");
}

#[test]
fn read_of_a_value_never_written() {
    let mut b = Builder::default();
    b.put(1, "k", "v1", 0, End::Ok(10))
        .get(2, "k", Some("garbage"), 5, End::Ok(15));
    assert_violation(&b, "k");
    let Verdict::Violation { details, .. } = verdict(&b) else {
        unreachable!()
    };
    assert_eq!(details.window.len(), 1, "the read alone is the evidence");
    assert!(details.reason.contains("ever writes"), "{}", details.reason);
}

#[test]
fn failed_write_must_not_be_visible() {
    // `fail` means certainly no effect: reading its value is a violation.
    let mut b = Builder::default();
    b.put(1, "k", "v1", 0, End::Fail(10))
        .get(2, "k", Some("v1"), 20, End::Ok(30));
    assert_violation(&b, "k");
}

#[test]
fn failed_cas_while_the_value_certainly_matched() {
    // A cas that reports "not matched" although v1 was certainly the value throughout.
    let mut b = Builder::default();
    b.put(1, "k", "v1", 0, End::Ok(10))
        .cas(2, "k", Some("v1"), "v2", false, 20, End::Ok(30));
    assert_violation(&b, "k");
}

#[test]
fn read_that_goes_back_in_time() {
    // Two sequential reads by different clients during a concurrent write: new then old.
    let mut b = Builder::default();
    b.put(1, "k", "old", 0, End::Ok(5))
        .put(1, "k", "new", 10, End::Ok(100))
        .get(2, "k", Some("new"), 20, End::Ok(30))
        .get(3, "k", Some("old"), 40, End::Ok(50));
    assert_violation(&b, "k");
}

#[test]
fn violation_is_reported_on_its_own_key() {
    let mut b = Builder::default();
    b.put(1, "a", "1", 0, End::Ok(10))
        .put(2, "b", "1", 0, End::Ok(10))
        .get(1, "a", Some("1"), 20, End::Ok(30))
        .get(2, "b", None, 20, End::Ok(30));
    assert_violation(&b, "b");
    let report = check_history(&b.history(), &CheckOptions::default());
    assert_eq!(report.keys.len(), 2);
    assert_eq!(report.keys[0].result, KeyResult::Linearizable);
}

#[test]
fn violation_window_is_shrunk_to_the_contradiction() {
    // A long valid history, then one stale read at the end.
    let mut b = Builder::default();
    let mut t = 0;
    for i in 0..30 {
        let v = format!("v{i}");
        b.put(1, "k", &v, t, End::Ok(t + 5))
            .get(2, "k", Some(&v), t + 6, End::Ok(t + 8));
        t += 10;
    }
    b.get(3, "k", Some("v28"), t, End::Ok(t + 5));
    let Verdict::Violation { details, .. } = verdict(&b) else {
        panic!("expected a violation")
    };
    assert!(details.minimal);
    let culprit = details.culprit.clone().expect("a culprit");
    assert_eq!(culprit.call_ns, t);
    // All 30 writes stay (writes are never dropped), the 30 earlier reads go.
    assert_eq!(details.window.len(), 31, "{details}");
    assert_eq!(details.cut_ns, Some(t + 5));
}

// ------------------------------------------------------------------------------------------
// Valid histories: each must be linearizable.
// ------------------------------------------------------------------------------------------

#[test]
fn overlapping_put_and_gets() {
    // Reads concurrent with a write may see the old or the new value, as long as no read
    // that starts after another one saw the new value sees the old one.
    let mut b = Builder::default();
    b.put(1, "k", "old", 0, End::Ok(5))
        .put(1, "k", "new", 10, End::Ok(100))
        .get(2, "k", Some("old"), 20, End::Ok(30))
        .get(3, "k", Some("new"), 25, End::Ok(35))
        .get(4, "k", Some("old"), 28, End::Ok(90))
        .get(2, "k", Some("new"), 40, End::Ok(50));
    assert_linearizable(&b);
}

#[test]
fn read_invoked_before_the_write_may_see_it() {
    let mut b = Builder::default();
    b.get(2, "k", Some("v"), 0, End::Ok(20))
        .put(1, "k", "v", 10, End::Ok(30));
    assert_linearizable(&b);
}

#[test]
fn info_put_that_takes_effect_late() {
    // The put timed out; reads long after still see nothing, then its value appears.
    let mut b = Builder::default();
    b.put(1, "k", "late", 0, End::Info)
        .get(2, "k", None, 100, End::Ok(110))
        .get(2, "k", None, 1_000, End::Ok(1_010))
        .get(3, "k", Some("late"), 5_000, End::Ok(5_010))
        .get(2, "k", Some("late"), 6_000, End::Ok(6_010));
    assert_linearizable(&b);
}

#[test]
fn info_put_that_never_takes_effect() {
    let mut b = Builder::default();
    b.put(1, "k", "v1", 0, End::Ok(10))
        .put(2, "k", "lost", 20, End::Info)
        .get(3, "k", Some("v1"), 30, End::Ok(40))
        .put(3, "k", "v2", 50, End::Ok(60))
        .get(3, "k", Some("v2"), 70, End::Ok(80));
    assert_linearizable(&b);
}

#[test]
fn open_operation_at_end_of_file_is_info() {
    let mut b = Builder::default();
    b.put(1, "k", "v", 0, End::Open)
        .get(2, "k", Some("v"), 100, End::Ok(110));
    assert_linearizable(&b);
}

#[test]
fn info_cas_may_have_happened() {
    let mut b = Builder::default();
    b.put(1, "k", "a", 0, End::Ok(10))
        .cas(2, "k", Some("a"), "b", true, 20, End::Info)
        .get(3, "k", Some("a"), 30, End::Ok(40))
        .get(3, "k", Some("b"), 50, End::Ok(60));
    assert_linearizable(&b);
}

#[test]
fn failed_cas_and_fail_ops_are_fine() {
    let mut b = Builder::default();
    b.put(1, "k", "a", 0, End::Ok(10))
        .cas(2, "k", Some("x"), "y", false, 20, End::Ok(30))
        .cas(2, "k", None, "y", false, 31, End::Ok(32))
        .put(3, "k", "never", 40, End::Fail(50))
        .get(3, "k", None, 55, End::Fail(56))
        .get(4, "k", Some("a"), 60, End::Ok(70))
        .cas(4, "k", Some("a"), "b", true, 80, End::Ok(90))
        .get(4, "k", Some("b"), 100, End::Ok(110));
    assert_linearizable(&b);
}

#[test]
fn failed_cas_can_depend_on_an_unknown_write() {
    // The value was "a" and the only way a later cas expecting "a" can fail is that the
    // timed-out put of "b" (which nobody reads) took effect: a checker that threw unread
    // unknown writes away would call this a violation.
    let mut b = Builder::default();
    b.put(1, "k", "a", 0, End::Ok(10))
        .put(2, "k", "b", 20, End::Info)
        .cas(3, "k", Some("a"), "c", false, 30, End::Ok(40));
    assert_linearizable(&b);
}

#[test]
fn many_unknown_writes_with_unique_values_are_cheap() {
    // A chaos run during a partition: hundreds of timed-out puts with unique values that
    // nobody reads, around acknowledged writes and reads. Without pruning, each of them would
    // double the search space.
    let mut b = Builder::default();
    for i in 0..300u64 {
        let t = i * 10;
        b.put(100 + i, "k", &format!("lost-{i}"), t, End::Info)
            .put(1, "k", &format!("v{i}"), t + 1, End::Ok(t + 3))
            .get(2, "k", Some(&format!("v{i}")), t + 4, End::Ok(t + 6));
    }
    let options = CheckOptions {
        max_steps: 1_000_000,
        ..CheckOptions::default()
    };
    let report = check_history(&b.history(), &options);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
}

#[test]
fn cas_from_absent() {
    let mut b = Builder::default();
    b.cas(1, "k", None, "first", true, 0, End::Ok(10))
        .cas(2, "k", None, "second", false, 20, End::Ok(30))
        .get(3, "k", Some("first"), 40, End::Ok(50));
    assert_linearizable(&b);
}

#[test]
fn unknown_reads_are_ignored() {
    let mut b = Builder::default();
    b.put(1, "k", "a", 0, End::Ok(10))
        .get(2, "k", Some("zzz"), 20, End::Info);
    assert_linearizable(&b);
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&Builder::default());
}

// ------------------------------------------------------------------------------------------
// Budget: an adversarial history must come out inconclusive, not as a pass.
// ------------------------------------------------------------------------------------------

/// `n` mutually concurrent acknowledged puts, then (after all returned) a read of "absent":
/// a violation, but refuting it means trying every subset of the puts (2^n configurations).
fn concurrent_puts_then_absent_read(n: u64) -> Builder {
    let mut b = Builder::default();
    for i in 0..n {
        b.put(i, "k", &format!("v{i}"), i, End::Ok(1_000 + i));
    }
    b.get(n, "k", None, 2_000, End::Ok(2_001));
    b
}

#[test]
fn adversarial_history_is_a_violation_when_small() {
    assert_violation(&concurrent_puts_then_absent_read(8), "k");
}

#[test]
fn adversarial_history_with_tiny_step_budget_is_inconclusive() {
    let b = concurrent_puts_then_absent_read(60);
    let options = CheckOptions {
        max_steps: 10_000,
        ..CheckOptions::default()
    };
    let report = check_history(&b.history(), &options);
    println!("{report}");
    match report.verdict {
        Verdict::Inconclusive { ref reason } => assert!(reason.contains("steps"), "{reason}"),
        ref other => panic!("expected inconclusive, got {other:?}"),
    }
    assert_eq!(report.verdict.exit_code(), 2);
}

#[test]
fn adversarial_history_with_tiny_time_budget_is_inconclusive() {
    let b = concurrent_puts_then_absent_read(60);
    let options = CheckOptions {
        max_steps: u64::MAX,
        time_budget: Some(Duration::from_millis(50)),
        ..CheckOptions::default()
    };
    let report = check_history(&b.history(), &options);
    match &report.verdict {
        Verdict::Inconclusive { reason } => assert!(reason.contains("time"), "{reason}"),
        other => panic!("expected inconclusive, got {other:?}"),
    }
    // The deadline is honoured, not overrun by orders of magnitude.
    assert!(report.elapsed_ms < 5_000.0, "{} ms", report.elapsed_ms);
}
