//! Helpers for the harness's own tests (`tests/tests/chaos_*.rs`): run the `kvset-chaos`
//! binary with a hard bound, and read what it left behind.
//!
//! The tests drive the real binary, not the library, so that the command line, the exit code
//! and the files on disk are what is tested.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished `kvset-chaos run` left.
#[derive(Debug)]
pub struct Finished {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its stdout (the Markdown report).
    pub stdout: String,
    /// Its stderr (progress).
    pub stderr: String,
    /// The output directory.
    pub out: PathBuf,
    /// `report.json`, when it was written.
    pub report: Option<serde_json::Value>,
}

impl Finished {
    /// The report, or a panic that shows what the run printed.
    pub fn report(&self) -> &serde_json::Value {
        self.report.as_ref().unwrap_or_else(|| {
            panic!(
                "no report.json in {} (exit {:?})\nstderr:\n{}\nstdout:\n{}",
                self.out.display(),
                self.code,
                self.stderr,
                self.stdout
            )
        })
    }

    /// Everything the run printed, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "exit {:?}, files in {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.code,
            self.out.display(),
            self.stderr,
            self.stdout
        )
    }

    /// The kinds of the faults injected without error.
    pub fn injected_kinds(&self) -> Vec<String> {
        self.report()["faults"]
            .as_array()
            .map(|faults| {
                faults
                    .iter()
                    .filter(|f| f["error"].is_null())
                    .filter_map(|f| f["kind"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs `binary run ARGS --out OUT` with extra environment, waiting at most `bound`: past it
/// the run is interrupted (SIGINT: it heals, checks and tears down), and 60 s later killed,
/// with its local cluster and the mounts under its data directory.
/// A temporary directory for one harness run and the run's `--out` inside it. The caller keeps
/// the directory when the run fails, so its files can be read.
pub fn run_dir(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    let out = dir.path().join("run");
    (dir, out)
}

pub fn run_harness(
    binary: &Path,
    args: &[String],
    out: &Path,
    env: &[(String, String)],
    bound: Duration,
) -> Finished {
    let stdout_path = out.with_extension("stdout");
    let stderr_path = out.with_extension("stderr");
    let stdout = std::fs::File::create(&stdout_path).expect("create the stdout file");
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    let mut child = Command::new(binary)
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(out)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start kvset-chaos");
    let started = Instant::now();
    let mut interrupted = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for kvset-chaos") {
            break Some(status);
        }
        let elapsed = started.elapsed();
        if elapsed > bound && !interrupted {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            interrupted = true;
        }
        if elapsed > bound + Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            // The harness could not tear down: kill its local cluster, if it had one.
            if let Some(pgid) = std::fs::read_to_string(out.join("data").join("launcher.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                let _ = super::backend::process::kill_launcher_group(pgid);
            }
            // And its members' small filesystems (tmpfs, kvset-powerfs), which it would have
            // unmounted at teardown: a killed FUSE server leaves a dead mount behind.
            for mount in mounts_under(&out.join("data")) {
                let _ = Command::new("umount").arg("-l").arg(&mount).status();
            }
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let report = std::fs::read_to_string(out.join("report.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let mut finished = Finished {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        out: out.to_path_buf(),
        report,
    };
    if interrupted {
        finished.stderr.push_str(&format!(
            "\n(test: the run exceeded {bound:?} and was interrupted)\n"
        ));
    }
    finished
}

/// The mount points at or below `dir`, deepest first (from `/proc/self/mountinfo`; empty where
/// there is none).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        // mountinfo escapes space, tab, newline and backslash as octal.
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .filter(|p| p.starts_with(&dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_finds_a_mount_below_a_dir_and_nothing_elsewhere() {
        // /proc is a mount point on Linux; a directory holding no mount has none.
        if !Path::new("/proc/self/mountinfo").exists() {
            return;
        }
        assert!(mounts_under(Path::new("/proc")).contains(&PathBuf::from("/proc")));
        let empty = tempfile::tempdir().expect("temp dir");
        assert!(mounts_under(empty.path()).is_empty());
    }
}
