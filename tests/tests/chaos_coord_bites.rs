//! Proof that the coordination checks bite: small handmade runs (a history, the watchers'
//! records, the lock clients' increments, the lease keepers' records) that pass as written,
//! and the same runs with one planted bug each — a dropped event, a duplicate, a reordering,
//! an event at the wrong revision, a write that never happened, a lost increment, a lost
//! update, a kept lease's key deleted, a revoked lease's key still there — that must fail.
//! Each planted bug names itself in the violation, so a check that fails for the wrong reason
//! fails the test too.

use kvset_tests::chaos::checks::CheckStatus;
use kvset_tests::chaos::jsonl::parse_jsonl;
use kvset_tests::chaos::lease_check::check_leases;
use kvset_tests::chaos::leases::LeaseRecord;
use kvset_tests::chaos::lock_check::check_locks;
use kvset_tests::chaos::locks::LockRecord;
use kvset_tests::chaos::watch_check::{check_watch, WatchRecord};
use kvset_tests::history::{Event, HistoryRecorder};

/// Writes at revisions 5..=8 on k0/k1 (one with an unknown outcome that a read saw), a refused
/// put, a cas whose compare failed.
fn history(read_the_unknown_write: bool) -> Vec<Event> {
    let r = HistoryRecorder::in_memory();
    r.invoke_put(0, "k0", "a").ok_put_at(5);
    r.invoke_put(1, "k1", "b").ok_put_at(6);
    r.invoke_cas(0, "k0", Some("a".into()), "c")
        .ok_cas_at(true, 7);
    r.invoke_put(1, "k0", "d").info();
    if read_the_unknown_write {
        r.invoke_get(2, "k0").ok_get(Some("d".into()));
    }
    r.invoke_put(1, "k1", "e").fail();
    r.invoke_cas(0, "k1", Some("zz".into()), "f")
        .ok_cas_at(false, 8);
    r.events()
}

fn open(w: u64, start: i64) -> String {
    format!(
        r#"{{"type":"open","watcher":{w},"member":"kv-0","prefix":"k","start_revision":{start},"ms":0}}"#
    )
}

fn ev(w: u64, rev: i64, key: &str, value: &str) -> String {
    format!(
        r#"{{"type":"event","watcher":{w},"revision":{rev},"event":"put","key":"{key}","value":"{value}","ms":1}}"#
    )
}

fn end(w: u64, rev: i64) -> String {
    format!(r#"{{"type":"end","watcher":{w},"revision":{rev},"ms":2}}"#)
}

/// Watcher 0 in one stream; watcher 1 resumed once, from the revision after its last event.
fn watch_lines() -> Vec<String> {
    vec![
        open(0, 5),
        ev(0, 5, "k0", "a"),
        ev(0, 6, "k1", "b"),
        ev(0, 7, "k0", "c"),
        ev(0, 8, "k0", "d"),
        end(0, 8),
        open(1, 5),
        ev(1, 5, "k0", "a"),
        ev(1, 6, "k1", "b"),
        r#"{"type":"error","watcher":1,"member":"kv-0","error":"killed","ms":1}"#.into(),
        open(1, 7),
        ev(1, 7, "k0", "c"),
        ev(1, 8, "k0", "d"),
        end(1, 8),
    ]
}

fn judge(events: &[Event], lines: &[String]) -> (CheckStatus, Vec<String>) {
    let records: Vec<WatchRecord> = parse_jsonl(&lines.join("\n")).expect("records parse");
    let f = check_watch(events, &records);
    (f.result().status, f.violations)
}

fn assert_fails(events: &[Event], lines: &[String], expected: &str) {
    let (status, violations) = judge(events, lines);
    assert_eq!(status, CheckStatus::Fail, "{violations:?}");
    assert!(
        violations.iter().any(|v| v.contains(expected)),
        "expected a violation mentioning {expected:?}, got {violations:?}"
    );
}

#[test]
fn the_honest_watch_passes() {
    let (status, violations) = judge(&history(true), &watch_lines());
    assert_eq!(status, CheckStatus::Pass, "{violations:?}");
}

#[test]
fn a_dropped_event_fails() {
    let mut lines = watch_lines();
    lines.retain(|l| l != &ev(0, 6, "k1", "b"));
    assert_fails(
        &history(true),
        &lines,
        "watcher 0: acknowledged k1 = \"b\" at revision 6 was never delivered",
    );
}

#[test]
fn a_dropped_last_event_before_a_resume_fails() {
    // Watcher 1 resumed at 7: dropping its event at 6 leaves a gap no compaction explains
    // (coverage alone would no longer require revision 6 of it).
    let mut lines = watch_lines();
    lines.retain(|l| l != &ev(1, 6, "k1", "b"));
    assert_fails(
        &history(true),
        &lines,
        "watcher 1: resumed at revision 7 but only revisions up to 5 were delivered",
    );
}

#[test]
fn a_duplicate_fails() {
    // Watcher 1 resumes from the revision it already had.
    let mut lines = watch_lines();
    let at = lines.iter().position(|l| l == &open(1, 7)).unwrap();
    lines[at] = open(1, 6);
    lines.insert(at + 1, ev(1, 6, "k1", "b"));
    assert_fails(&history(true), &lines, "a duplicate");
}

#[test]
fn a_reordering_fails() {
    let mut lines = watch_lines();
    lines.swap(2, 3);
    assert_fails(&history(true), &lines, "out of order");
}

#[test]
fn an_event_at_the_wrong_revision_fails() {
    // Same order of revisions, but the values of 7 and 8 exchanged.
    let mut lines = watch_lines();
    lines[3] = ev(0, 7, "k0", "d");
    lines[4] = ev(0, 8, "k0", "c");
    assert_fails(&history(true), &lines, "but the write produced revision 7");
}

#[test]
fn a_write_that_did_not_happen_fails() {
    let mut lines = watch_lines();
    lines.insert(5, ev(0, 9, "k1", "e"));
    lines.insert(6, ev(0, 10, "k1", "f"));
    lines.insert(7, ev(0, 11, "k1", "never"));
    let (status, violations) = judge(&history(true), &lines);
    assert_eq!(status, CheckStatus::Fail);
    for expected in [
        "\"e\" was reported as not applied",
        "\"f\" was reported as not applied",
        "\"never\" was never written",
    ] {
        assert!(
            violations.iter().any(|v| v.contains(expected)),
            "{expected}: {violations:?}"
        );
    }
}

#[test]
fn an_unknown_write_must_be_delivered_iff_it_happened() {
    // Nobody delivered the unknown write "d".
    let mut lines = watch_lines();
    lines.retain(|l| l != &ev(0, 8, "k0", "d") && l != &ev(1, 8, "k0", "d"));
    // A read saw it: it happened, so a watcher that covered the whole run missed it.
    assert_fails(&history(true), &lines, "was read, so it happened");
    // Nothing shows it happened: not delivering it is right.
    let (status, violations) = judge(&history(false), &lines);
    assert_eq!(status, CheckStatus::Pass, "{violations:?}");
}

#[test]
fn watchers_must_agree_and_a_delete_that_no_one_made_fails() {
    let mut lines = watch_lines();
    // Watcher 1 never sees revision 8 though its coverage includes it (its end says so).
    lines.retain(|l| l != &ev(1, 8, "k0", "d"));
    assert_fails(&history(false), &lines, "delivered to watcher 0");
    let mut lines = watch_lines();
    lines.insert(
        5,
        r#"{"type":"event","watcher":0,"revision":9,"event":"delete","key":"k1","value":null,"ms":1}"#
            .into(),
    );
    assert_fails(&history(true), &lines, "a delete of k1 that no one made");
}

#[test]
fn a_compaction_gap_is_not_held_against_the_watcher() {
    let lines = vec![
        open(0, 5),
        ev(0, 5, "k0", "a"),
        r#"{"type":"canceled","watcher":0,"compact_revision":7,"reason":"compacted","ms":1}"#
            .into(),
        open(0, 7),
        ev(0, 7, "k0", "c"),
        ev(0, 8, "k0", "d"),
        end(0, 8),
    ];
    let (status, violations) = judge(&history(false), &lines);
    assert_eq!(status, CheckStatus::Pass, "{violations:?}");
}

fn inc(client: u64, value: i64, outcome: &str) -> LockRecord {
    LockRecord::Increment {
        client,
        lock_key: format!("lock/{client}"),
        lock_revision: 1,
        read: value - 1,
        value,
        outcome: outcome.into(),
        revision: (outcome == "ok").then_some(10 + value),
    }
}

fn locks(final_value: i64, twice: bool) -> Vec<LockRecord> {
    let mut r = vec![
        inc(0, 1, "ok"),
        inc(1, 2, "ok"),
        inc(0, 3, "lost_lock"),
        inc(0, 3, "ok"),
        inc(1, 4, "info"),
    ];
    if twice {
        r.push(inc(1, 3, "ok"));
    }
    r.push(LockRecord::Final {
        value: Some(final_value),
    });
    r
}

#[test]
fn the_lock_counter_must_match_the_acknowledged_increments() {
    for final_value in [3, 4] {
        let f = check_locks(&locks(final_value, false));
        assert_eq!(f.result().status, CheckStatus::Pass, "{:?}", f.violations);
    }
    let lost = check_locks(&locks(2, false));
    assert_eq!(lost.result().status, CheckStatus::Fail);
    assert!(
        lost.violations[0].contains("1 lost"),
        "{:?}",
        lost.violations
    );
    let extra = check_locks(&locks(5, false));
    assert_eq!(extra.result().status, CheckStatus::Fail);
    let update = check_locks(&locks(4, true));
    assert_eq!(update.result().status, CheckStatus::Fail);
    assert!(
        update.violations[0].contains("lost update"),
        "{:?}",
        update.violations
    );
    let unread = check_locks(&[inc(0, 1, "ok"), LockRecord::Final { value: None }]);
    assert_eq!(unread.result().status, CheckStatus::Inconclusive);
}

fn lease_lines(extra: &[&str]) -> Vec<LeaseRecord> {
    let mut lines = vec![
        r#"{"type":"grant","keeper":0,"lease":1,"role":"kept","ttl":10,"key":"lease/0/kept/1","attached":true,"invoked_ms":0,"ms":10}"#,
        r#"{"type":"renew","lease":1,"invoked_ms":1000,"ms":1010}"#,
        r#"{"type":"read","lease":1,"key":"lease/0/kept/1","present":true,"invoked_ms":1100,"ms":1110}"#,
        r#"{"type":"renew","lease":1,"invoked_ms":2000,"ms":2010}"#,
        r#"{"type":"grant","keeper":0,"lease":2,"role":"short","ttl":2,"key":"lease/0/short/2","attached":true,"invoked_ms":2100,"ms":2110}"#,
        r#"{"type":"revoke","lease":2,"outcome":"ok","ms":2200}"#,
        r#"{"type":"grant","keeper":0,"lease":3,"role":"short","ttl":2,"key":"lease/0/short/3","attached":true,"invoked_ms":2300,"ms":2310}"#,
        // The owner could not renew for longer than the TTL: the key may go.
        r#"{"type":"read","lease":1,"key":"lease/0/kept/1","present":false,"invoked_ms":20000,"ms":20010}"#,
        r#"{"type":"read","lease":2,"key":"lease/0/short/2","present":false,"invoked_ms":21000,"ms":21010,"at_end":true}"#,
        r#"{"type":"read","lease":3,"key":"lease/0/short/3","present":false,"invoked_ms":21000,"ms":21010,"at_end":true}"#,
    ];
    lines.extend(extra);
    parse_jsonl(&lines.join("\n")).expect("lease records parse")
}

#[test]
fn lease_keys_stay_while_kept_and_go_when_revoked_or_expired() {
    let f = check_leases(&lease_lines(&[]));
    assert_eq!(f.result().status, CheckStatus::Pass, "{:?}", f.violations);

    let deleted = check_leases(&lease_lines(&[
        r#"{"type":"read","lease":1,"key":"lease/0/kept/1","present":false,"invoked_ms":2500,"ms":2510}"#,
    ]));
    assert_eq!(deleted.result().status, CheckStatus::Fail);
    assert!(deleted.violations[0].contains("was renewed at 2000 ms"));

    let revoked = check_leases(&lease_lines(&[
        r#"{"type":"read","lease":2,"key":"lease/0/short/2","present":true,"invoked_ms":2300,"ms":2310}"#,
    ]));
    assert_eq!(revoked.result().status, CheckStatus::Fail);
    assert!(revoked.violations[0].contains("was revoked at 2200 ms"));

    let expired = check_leases(&lease_lines(&[
        r#"{"type":"read","lease":3,"key":"lease/0/short/3","present":true,"invoked_ms":22000,"ms":22010,"at_end":true}"#,
    ]));
    assert_eq!(expired.result().status, CheckStatus::Fail);
    assert!(expired.violations[0].contains("never renewed (expired)"));
}
