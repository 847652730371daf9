//! The checker against 102 real Jepsen etcd histories whose verdicts porcupine's test suite
//! fixes (`tests/testdata/porcupine-etcd`, see its README for provenance and licence): 23
//! linearizable, 79 violations. Every verdict must match, and each file must be decided quickly
//! even in a debug build.
//!
//! The data lives in the repository, so a plain clone runs this test with nothing beside it.
//! `$KVSET_PORCUPINE_DIR` may point at another copy (e.g. one just regenerated). If the data is
//! missing the test fails: a skipped conformance test would look like a passing one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kvset_tests::checker::{check_file, CheckOptions, Verdict};

/// Per-file time limit. Generous for slow CI machines; typical files take milliseconds.
const PER_FILE_LIMIT: Duration = Duration::from_secs(5);

fn data_dir() -> PathBuf {
    match std::env::var_os("KVSET_PORCUPINE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/porcupine-etcd"),
    }
}

fn expected() -> BTreeMap<String, bool> {
    let dir = data_dir();
    let path = dir.join("EXPECTED.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the porcupine-etcd test data is missing ({}: {e}); set KVSET_PORCUPINE_DIR to the \
             directory holding EXPECTED.tsv and etcd_NNN.jsonl",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (file, verdict) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("bad EXPECTED.tsv line {line:?}"));
            let linearizable = match verdict.trim() {
                "linearizable" => true,
                "violation" => false,
                other => panic!("bad verdict {other:?} in EXPECTED.tsv"),
            };
            (file.to_string(), linearizable)
        })
        .collect()
}

#[test]
fn porcupine_etcd_verdicts_match() {
    let expected = expected();
    assert_eq!(
        expected.len(),
        102,
        "EXPECTED.tsv should list 102 histories"
    );
    assert_eq!(expected.values().filter(|&&l| l).count(), 23);

    let options = CheckOptions::default();
    let mut mismatches = Vec::new();
    let mut slowest = (String::new(), Duration::ZERO);
    let started = Instant::now();
    for (file, &linearizable) in &expected {
        let path = data_dir().join(file);
        let t = Instant::now();
        let report =
            check_file(&path, &options).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let took = t.elapsed();
        let got = match &report.verdict {
            Verdict::Linearizable => "linearizable",
            Verdict::Violation { details, .. } => {
                // The evidence must be a real window of the history, not empty.
                assert!(!details.window.is_empty(), "{file}: empty violation window");
                "violation"
            }
            Verdict::Inconclusive { .. } => "inconclusive",
        };
        let want = if linearizable {
            "linearizable"
        } else {
            "violation"
        };
        let steps: u64 = report.keys.iter().map(|k| k.steps).sum();
        println!(
            "{file}: {got:<12} expected {want:<12} {:>8.1} ms {steps:>8} steps{}",
            took.as_secs_f64() * 1000.0,
            match &report.verdict {
                Verdict::Violation { details, .. } =>
                    format!(" window {} ops", details.window.len()),
                _ => String::new(),
            }
        );
        if got != want {
            mismatches.push(format!("{file}: got {got}, expected {want}\n{report}"));
        }
        assert!(took < PER_FILE_LIMIT, "{file} took {took:?}");
        if took > slowest.1 {
            slowest = (file.clone(), took);
        }
    }
    println!(
        "all {} files in {:?}; slowest {} in {:?}",
        expected.len(),
        started.elapsed(),
        slowest.0,
        slowest.1
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
