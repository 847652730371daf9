//! `kvset-bench chart` through the binary: the charts land where `--out-dir` says, one pair per
//! workload, and bad input exits non-zero with the file and line named.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kvset-bench-chart-cli-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn line(target: &str, workload: &str, c: usize, ops: f64, p99: f64) -> String {
    format!(
        r#"{{"target":"{target}","workload":"{workload}","client":"raw","concurrency":{c},"ops_per_sec":{ops},"p50_ms":1.0,"p99_ms":{p99},"p999_ms":9.0,"label":null}}"#
    )
}

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kvset-bench"))
}

#[test]
fn charts_every_workload_of_every_input() {
    let dir = scratch("ok");
    let a = dir.join("a.jsonl");
    let b = dir.join("b.jsonl");
    let lines_a = [
        line("kvset", "put", 1, 500.0, 3.0),
        line("etcd", "put", 1, 1100.0, 1.5),
        line("kvset", "put", 64, 2000.0, 50.0),
        line("etcd", "put", 64, 9000.0, 16.0),
    ];
    std::fs::write(&a, lines_a.join("\n") + "\n").unwrap();
    let lines_b = [
        line("kvset", "get", 16, 6000.0, 6.0),
        line("etcd", "get", 16, 3000.0, 27.0),
    ];
    std::fs::write(&b, lines_b.join("\n")).unwrap();
    let out = dir.join("charts");
    let run = bench()
        .args(["chart", "--input"])
        .arg(&a)
        .arg("--input")
        .arg(&b)
        .arg("--out-dir")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "get-p99.svg",
            "get-throughput.svg",
            "put-p99.svg",
            "put-throughput.svg"
        ]
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    let svg = std::fs::read_to_string(out.join("get-throughput.svg")).unwrap();
    assert!(svg.contains("<svg"));
    assert!(
        svg.contains("a.jsonl, b.jsonl"),
        "the title names both inputs"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_malformed_line_fails_naming_the_file_and_line() {
    let dir = scratch("bad");
    let bad = dir.join("bad.jsonl");
    let text = [
        line("kvset", "put", 1, 500.0, 3.0),
        String::new(),
        "{\"target\": oops".to_string(),
    ];
    std::fs::write(&bad, text.join("\n")).unwrap();
    // Refused with exit 2 and a message naming what is wrong.
    let refused = |input: &Path, expected: String| {
        let run = bench()
            .args(["chart", "--input"])
            .arg(input)
            .arg("--out-dir")
            .arg(dir.join("charts"))
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains(&expected), "{stderr}");
    };
    refused(
        &bad,
        format!("{} line 3: not a kvset-bench result", bad.display()),
    );
    let missing = dir.join("missing.jsonl");
    refused(&missing, format!("cannot read {}", missing.display()));
    assert!(!dir.join("charts").exists(), "nothing written on bad input");
    std::fs::remove_dir_all(&dir).unwrap();
}
