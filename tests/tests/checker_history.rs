//! The history format: the reader's validation (each error names its line), the writer's exact
//! shape, and the recorder's guarantees (unique op ids, strictly increasing timestamps in file
//! order, `info` for a dropped handle), checked from outside the crate.

use std::io::Write;
use std::sync::{Arc, Mutex};

use kvset_tests::history::{
    event_to_line, Event, EventKind, History, HistoryError, HistoryRecorder, Input, Outcome, Output,
};

fn read(text: &str) -> Result<History, HistoryError> {
    History::read(text.as_bytes())
}

fn error(text: &str) -> HistoryError {
    read(text).expect_err("the history should be rejected")
}

const PUT: &str = r#"{"client": 1, "op": 7, "type": "invoke", "f": "put", "key": "k", "value": "v", "ts_ns": 10}"#;

#[test]
fn reads_the_contract_example() {
    let h = read(concat!(
        r#"{"client": 3, "op": 17, "type": "invoke", "f": "put", "key": "k1", "value": "v5", "ts_ns": 123}"#,
        "\n",
        r#"{"client": 3, "op": 17, "type": "ok", "f": "put", "key": "k1", "ts_ns": 456}"#,
        "\n"
    ))
    .unwrap();
    let ops = h.operations();
    assert_eq!(ops.ops.len(), 1);
    let op = &ops.ops[0];
    assert_eq!((op.client, op.op, op.key.as_str()), (3, 17, "k1"));
    assert_eq!(op.input, Input::Put { value: "v5".into() });
    assert_eq!(op.output, Outcome::Ok(Output::Put));
    assert_eq!((op.call_ns, op.return_ns), (123, Some(456)));
}

#[test]
fn ignores_unknown_fields_and_blank_lines() {
    let h = read(concat!(
        r#"{"client": 1, "op": 1, "type": "invoke", "f": "get", "key": "k", "ts_ns": 1, "node": "kv-2", "attempt": 3}"#,
        "\n\n   \n",
        r#"{"client": 1, "op": 1, "type": "ok", "f": "get", "key": "k", "value": null, "ts_ns": 2, "revision": 9}"#,
    ))
    .unwrap();
    let ops = h.operations();
    assert_eq!(ops.ops[0].output, Outcome::Ok(Output::Get { value: None }));
}

#[test]
fn completion_without_invoke_names_the_line() {
    let e = error(concat!(
        r#"{"client": 1, "op": 1, "type": "invoke", "f": "get", "key": "k", "ts_ns": 1}"#,
        "\n",
        r#"{"client": 2, "op": 1, "type": "ok", "f": "get", "key": "k", "value": null, "ts_ns": 2}"#,
    ));
    assert!(
        matches!(
            e,
            HistoryError::CompletionWithoutInvoke {
                line: 2,
                client: 2,
                op: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().starts_with("line 2:"), "{e}");
}

#[test]
fn duplicate_invoke_is_rejected() {
    let e = error(&format!("{PUT}\n{PUT}\n"));
    assert!(
        matches!(
            e,
            HistoryError::DuplicateInvoke {
                line: 2,
                first_line: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn duplicate_completion_is_rejected() {
    let ok = r#"{"client": 1, "op": 7, "type": "ok", "f": "put", "key": "k", "ts_ns": 11}"#;
    let e = error(&format!("{PUT}\n{ok}\n{ok}\n"));
    assert!(
        matches!(
            e,
            HistoryError::DuplicateCompletion {
                line: 3,
                first_line: 2,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn mismatched_f_or_key_is_rejected() {
    let wrong_f = r#"{"client": 1, "op": 7, "type": "ok", "f": "get", "key": "k", "value": null, "ts_ns": 11}"#;
    let e = error(&format!("{PUT}\n{wrong_f}\n"));
    assert!(
        matches!(
            e,
            HistoryError::Mismatch {
                line: 2,
                field: "f",
                ..
            }
        ),
        "{e}"
    );
    let wrong_key =
        r#"{"client": 1, "op": 7, "type": "ok", "f": "put", "key": "other", "ts_ns": 11}"#;
    let e = error(&format!("{PUT}\n{wrong_key}\n"));
    assert!(
        matches!(
            e,
            HistoryError::Mismatch {
                line: 2,
                field: "key",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn unknown_type_and_f_are_rejected() {
    let e = error(&PUT.replace("\"invoke\"", "\"started\""));
    assert!(
        matches!(&e, HistoryError::UnknownType { line: 1, value } if value == "started"),
        "{e}"
    );
    let e = error(&PUT.replace("\"put\"", "\"delete\""));
    assert!(
        matches!(&e, HistoryError::UnknownFunction { line: 1, value } if value == "delete"),
        "{e}"
    );
}

#[test]
fn missing_fields_are_rejected() {
    // A get completion must say what it read, even when it read nothing.
    let get = r#"{"client": 1, "op": 1, "type": "invoke", "f": "get", "key": "k", "ts_ns": 1}"#;
    let ok = r#"{"client": 1, "op": 1, "type": "ok", "f": "get", "key": "k", "ts_ns": 2}"#;
    let e = error(&format!("{get}\n{ok}\n"));
    assert!(matches!(e, HistoryError::Shape { line: 2, .. }), "{e}");
    // A cas invoke needs "expected" and a cas completion needs "succeeded".
    let cas = r#"{"client": 1, "op": 1, "type": "invoke", "f": "cas", "key": "k", "value": "b", "ts_ns": 1}"#;
    assert!(matches!(error(cas), HistoryError::Shape { line: 1, .. }));
    let cas = r#"{"client": 1, "op": 1, "type": "invoke", "f": "cas", "key": "k", "expected": "a", "value": "b", "ts_ns": 1}"#;
    let ok = r#"{"client": 1, "op": 1, "type": "ok", "f": "cas", "key": "k", "ts_ns": 2}"#;
    assert!(matches!(
        error(&format!("{cas}\n{ok}")),
        HistoryError::Shape { line: 2, .. }
    ));
    // Not JSON, or a field of the wrong type.
    assert!(matches!(
        error("{not json"),
        HistoryError::Json { line: 1, .. }
    ));
    assert!(matches!(
        error(&PUT.replace("\"op\": 7", "\"op\": \"7\"")),
        HistoryError::Json { line: 1, .. }
    ));
}

#[test]
fn completion_before_invoke_is_rejected() {
    let ok = r#"{"client": 1, "op": 7, "type": "ok", "f": "put", "key": "k", "ts_ns": 5}"#;
    let e = error(&format!("{PUT}\n{ok}\n"));
    assert!(
        matches!(e, HistoryError::CompletionBeforeInvoke { line: 2, .. }),
        "{e}"
    );
    // ...but an info completion's time means nothing.
    let info = r#"{"client": 1, "op": 7, "type": "info", "f": "put", "key": "k", "ts_ns": 0}"#;
    read(&format!("{PUT}\n{info}\n")).unwrap();
}

#[test]
fn operations_pair_events() {
    let h = read(concat!(
        r#"{"client": 1, "op": 1, "type": "invoke", "f": "put", "key": "k", "value": "a", "ts_ns": 1}"#, "\n",
        r#"{"client": 2, "op": 2, "type": "invoke", "f": "put", "key": "k", "value": "b", "ts_ns": 2}"#, "\n",
        r#"{"client": 3, "op": 3, "type": "invoke", "f": "cas", "key": "k", "expected": null, "value": "c", "ts_ns": 3}"#, "\n",
        r#"{"client": 1, "op": 1, "type": "fail", "f": "put", "key": "k", "ts_ns": 4}"#, "\n",
        r#"{"client": 3, "op": 3, "type": "ok", "f": "cas", "key": "k", "succeeded": false, "ts_ns": 5}"#, "\n",
    ))
    .unwrap();
    let ops = h.operations();
    assert_eq!(ops.failed.len(), 1);
    assert_eq!(ops.failed[0].op, 1);
    assert_eq!(ops.ops.len(), 2);
    // Never completed: info, with an unbounded return.
    assert_eq!(
        (ops.ops[0].op, &ops.ops[0].output, ops.ops[0].return_ns),
        (2, &Outcome::Info, None)
    );
    assert_eq!(
        ops.ops[1].input,
        Input::Cas {
            expected: None,
            value: "c".into()
        }
    );
    assert_eq!(
        ops.ops[1].output,
        Outcome::Ok(Output::Cas { succeeded: false })
    );
}

#[test]
fn writer_uses_the_contract_shape() {
    let invoke = Event {
        client: 3,
        op: 17,
        key: "k1".into(),
        kind: EventKind::Invoke(Input::Put { value: "v5".into() }),
        ts_ns: 123,
        revision: None,
    };
    assert_eq!(
        event_to_line(&invoke),
        r#"{"client": 3, "op": 17, "type": "invoke", "f": "put", "key": "k1", "value": "v5", "ts_ns": 123}"#
    );
    let read_absent = Event {
        kind: EventKind::Ok(Output::Get { value: None }),
        ..invoke.clone()
    };
    assert_eq!(
        event_to_line(&read_absent),
        r#"{"client": 3, "op": 17, "type": "ok", "f": "get", "key": "k1", "value": null, "ts_ns": 123}"#
    );
    let cas = Event {
        kind: EventKind::Invoke(Input::Cas {
            expected: Some("a".into()),
            value: "b".into(),
        }),
        ..invoke.clone()
    };
    assert_eq!(
        event_to_line(&cas),
        r#"{"client": 3, "op": 17, "type": "invoke", "f": "cas", "key": "k1", "expected": "a", "value": "b", "ts_ns": 123}"#
    );
    let cas_ok = Event {
        kind: EventKind::Ok(Output::Cas { succeeded: true }),
        ..invoke.clone()
    };
    assert_eq!(
        event_to_line(&cas_ok),
        r#"{"client": 3, "op": 17, "type": "ok", "f": "cas", "key": "k1", "succeeded": true, "ts_ns": 123}"#
    );
    // A write's completion may carry the revision it produced; it reads back.
    let put_ok = Event {
        kind: EventKind::Ok(Output::Put),
        revision: Some(42),
        ..invoke
    };
    let line = event_to_line(&put_ok);
    assert_eq!(
        line,
        r#"{"client": 3, "op": 17, "type": "ok", "f": "put", "key": "k1", "ts_ns": 123, "revision": 42}"#
    );
    assert_eq!(kvset_tests::history::parse_event(&line, 1).unwrap(), put_ok);
}

/// A `Write` that appends to a shared buffer, to look at what the recorder wrote.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn recorder_round_trips_through_the_reader() {
    let sink = Shared::default();
    let rec = HistoryRecorder::to_writer(sink.clone());
    rec.invoke_put(1, "k", "a").ok_put();
    rec.invoke_get(2, "k").ok_get(Some("a".into()));
    rec.invoke_cas(1, "k", Some("a".into()), "b").ok_cas(true);
    rec.invoke_cas(2, "k", None, "c").ok_cas(false);
    rec.invoke_put(3, "k", "x").fail();
    rec.invoke_put(3, "k", "y").info();
    drop(rec.invoke_put(4, "k", "z")); // cancelled: recorded as info
    rec.flush().unwrap();

    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let h = read(&text).unwrap();
    assert_eq!(h.len(), 14);
    assert_eq!(h.events().cloned().collect::<Vec<_>>(), rec.events());
    let last = text.lines().last().unwrap();
    assert!(
        last.contains(r#""client": 4, "op": 6, "type": "info", "f": "put""#),
        "{last}"
    );
    let report = kvset_tests::checker::check_history(&h, &Default::default());
    assert!(report.verdict.is_linearizable(), "{report}");
}

#[test]
fn recorder_is_consistent_under_concurrency() {
    let rec = HistoryRecorder::in_memory();
    std::thread::scope(|s| {
        for client in 0..4 {
            let rec = rec.clone();
            s.spawn(move || {
                for i in 0..200 {
                    let h = rec.invoke_put(client, format!("k{}", i % 3), format!("{client}-{i}"));
                    h.ok_put();
                }
            });
        }
    });
    let events = rec.events();
    assert_eq!(events.len(), 4 * 200 * 2);
    // Strictly increasing timestamps in record order, and each op id invoked once.
    assert!(events.windows(2).all(|w| w[0].ts_ns < w[1].ts_ns));
    let mut ids: Vec<u64> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Invoke(_)))
        .map(|e| e.op)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 800);
    rec.history().unwrap();
}

#[test]
#[should_panic(expected = "completes as a get")]
fn completing_with_the_wrong_function_panics() {
    let rec = HistoryRecorder::in_memory();
    rec.invoke_put(1, "k", "v").ok_get(None);
}
