//! `kvset-chaos check` as a user runs it: the real binary on files, checked by exit code
//! (0 linearizable, 1 violation, 2 inconclusive or error) and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VALID: &str = r#"{"client": 1, "op": 1, "type": "invoke", "f": "put", "key": "k", "value": "a", "ts_ns": 10}
{"client": 1, "op": 1, "type": "ok", "f": "put", "key": "k", "ts_ns": 20}
{"client": 2, "op": 2, "type": "invoke", "f": "get", "key": "k", "ts_ns": 30}
{"client": 2, "op": 2, "type": "ok", "f": "get", "key": "k", "value": "a", "ts_ns": 40}
"#;

/// A stale read: the acknowledged write of "a" is not seen by a later read.
const STALE: &str = r#"{"client": 1, "op": 1, "type": "invoke", "f": "put", "key": "k", "value": "a", "ts_ns": 10}
{"client": 1, "op": 1, "type": "ok", "f": "put", "key": "k", "ts_ns": 20}
{"client": 2, "op": 2, "type": "invoke", "f": "get", "key": "k", "ts_ns": 30}
{"client": 2, "op": 2, "type": "ok", "f": "get", "key": "k", "value": null, "ts_ns": 40}
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn check(args: &[&str], path: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kvset-chaos"))
        .arg("check")
        .arg(path)
        .args(args)
        .output()
        .expect("run kvset-chaos");
    println!("--- {} {args:?}: {:?}", path.display(), out.status);
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let valid = write(dir.path(), "valid.jsonl", VALID);
    let stale = write(dir.path(), "stale.jsonl", STALE);

    let out = check(&[], &valid);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("LINEARIZABLE"));

    let out = check(&[], &stale);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("VIOLATION on key \"k\""), "{text}");
    assert!(
        text.contains("client 2 op 2: get(\"k\") -> ok null"),
        "{text}"
    );

    // Malformed: a completion with no invoke, on line 2.
    let bad = write(
        dir.path(),
        "bad.jsonl",
        &VALID.lines().skip(1).collect::<Vec<_>>().join("\n"),
    );
    let out = check(&[], &bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));

    let garbage = write(dir.path(), "garbage.jsonl", "this is not json\n");
    assert_eq!(check(&[], &garbage).status.code(), Some(2));

    let missing = dir.path().join("missing.jsonl");
    assert_eq!(check(&[], &missing).status.code(), Some(2));
}

#[test]
fn budget_exhaustion_is_exit_code_2() {
    // 30 concurrent puts, then a read of "absent": refuting it needs ~2^30 configurations.
    let mut text = String::new();
    for i in 0..30 {
        text += &format!(
            "{{\"client\": {i}, \"op\": {i}, \"type\": \"invoke\", \"f\": \"put\", \"key\": \"k\", \"value\": \"v{i}\", \"ts_ns\": {i}}}\n"
        );
    }
    for i in 0..30 {
        text += &format!(
            "{{\"client\": {i}, \"op\": {i}, \"type\": \"ok\", \"f\": \"put\", \"key\": \"k\", \"ts_ns\": {}}}\n",
            100 + i
        );
    }
    text += "{\"client\": 99, \"op\": 99, \"type\": \"invoke\", \"f\": \"get\", \"key\": \"k\", \"ts_ns\": 200}\n";
    text += "{\"client\": 99, \"op\": 99, \"type\": \"ok\", \"f\": \"get\", \"key\": \"k\", \"value\": null, \"ts_ns\": 201}\n";
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hard.jsonl", &text);
    let out = check(&["--max-steps", "1000"], &path);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("INCONCLUSIVE"));
    let out = check(
        &["--budget-ms", "100", "--max-steps", "100000000000"],
        &path,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn json_output() {
    let dir = tempfile::tempdir().unwrap();
    let stale = write(dir.path(), "stale.jsonl", STALE);
    let out = check(&["--json"], &stale);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["verdict"], "violation");
    assert_eq!(v["key"], "k");
    assert_eq!(v["details"]["window"].as_array().unwrap().len(), 2);
    assert_eq!(v["keys"][0]["result"], "violation");

    let valid = write(dir.path(), "valid.jsonl", VALID);
    let out = check(&["--json"], &valid);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "linearizable");

    let bad = write(dir.path(), "bad.jsonl", "{}\n");
    let out = check(&["--json"], &bad);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "error");
}

/// `--html FILE` draws the history next to the verdict, without changing the exit code or the
/// printed report.
#[test]
fn html_output() {
    let dir = tempfile::tempdir().unwrap();
    let stale = write(dir.path(), "stale.jsonl", STALE);
    let html = dir.path().join("out.html");
    let plain = check(&[], &stale);
    let out = check(&["--html", html.to_str().unwrap()], &stale);
    assert_eq!(out.status.code(), Some(1));
    // The report is printed as without --html (the per-key times aside).
    let verdict = |o: &Output| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text[text.find("verdict:").expect("a verdict")..].to_string()
    };
    assert_eq!(verdict(&out), verdict(&plain), "--html changed the report");
    let page = std::fs::read_to_string(&html).expect("report written");
    assert!(page.starts_with("<!DOCTYPE html>"));
    for id in ["throughput", "latency", "violation-timeline"] {
        assert!(
            page.contains(&format!("<figure id=\"{id}\"><svg")),
            "no {id}"
        );
    }
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));

    // A linearizable history: no violation section; --json still prints one object.
    let valid = write(dir.path(), "valid.jsonl", VALID);
    let out = check(&["--json", "--html", html.to_str().unwrap()], &valid);
    assert_eq!(out.status.code(), Some(0));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("one JSON object");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<figure id=\"latency\">"));
    assert!(!page.contains("id=\"violation"));

    // An unwritable path is an error (exit 2), after nothing was printed as a verdict.
    let out = check(&["--html", "/nonexistent-dir/x.html"], &valid);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir/x.html"));
}
