//! Golden tests of the `kvsetctl` binary against a real three-member cluster.
//!
//! Each file in `tests/golden/` is a transcript of a few `kvsetctl` commands run in order against
//! one fresh cluster (the files themselves run in the order of [`GROUPS`], so revisions in them
//! are reproducible):
//!
//! ```text
//! $ kvsetctl get missing        the command (KVSET_ENDPOINTS names the three members)
//! stderr| not found: "missing"  stdout as is, then each stderr line prefixed with `stderr| `
//! [exit 1]                      the exit code
//! ```
//!
//! Run with `UPDATE_GOLDEN=1` to rewrite the files from what the binary prints now; review the
//! diff before committing it.
//!
//! # Normalization
//!
//! Output is normalized before it is compared, so only what is stable is pinned down
//! ([`Normalizer`]):
//!
//! 1. **Addresses.** Each member's client address becomes `<kv-N.addr>`, its peer address
//!    `<kv-N.peer>`, and the dead endpoint used for the "unavailable" cases `<dead.addr>`
//!    (the test kit picks a fresh 127.0.0.x address and free ports for every run). A temporary
//!    file's path becomes `<FILE>`.
//! 2. **Tables.** Because an address placeholder is not as wide as the address, each table
//!    (a header line of upper-case column names, then the lines with as many cells, cells
//!    separated by two or more spaces) is re-aligned with the CLI's own table renderer after
//!    the substitutions. In the `status` table the `TERM` and `APPLIED` cells become `<TERM>`
//!    and `<APPLIED>`.
//! 3. **JSON documents** (stdout starting with `{`) are parsed, the values of the fields
//!    `cluster_id`, `term` and `applied` are replaced with `"<CLUSTER_ID>"`, `"<TERM>"` and
//!    `"<APPLIED>"`, and the document is printed again the way kvsetctl prints it.
//!
//! Revisions are *not* normalized: the commands run in a fixed order against a fresh cluster,
//! each write bumps the revision once, and retried writes are applied once (request ids), so
//! they are reproducible. Raft terms and log indexes are not (an extra election or a
//! configuration entry moves them). Before each command the test waits until every running
//! member has applied everything, so `status` always shows a settled cluster.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvset_tests::testkit::{kvsetctl_binary, ProcessCluster};
use kvsetctl::output::table;
use serde_json::Value;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// What a step does.
enum Step {
    /// Run kvsetctl with these arguments (and this stdin).
    Run {
        args: Vec<String>,
        stdin: Option<String>,
    },
    /// Kill member `i` (shown in the transcript as a comment).
    Kill(usize),
}

fn run(args: &[&str]) -> Step {
    Step::Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
    }
}

fn run_stdin(args: &[&str], stdin: &str) -> Step {
    Step::Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: Some(stdin.to_string()),
    }
}

/// The golden files and their steps, in the order they run. `{dead}` and `{file}` in an
/// argument are replaced by the dead endpoint and the transaction file.
const GROUPS: &[&str] = &[
    "put",
    "get",
    "get_missing",
    "range",
    "del",
    "cas",
    "txn",
    "members",
    "status",
    "status_json",
    "health",
    "invalid_input",
    "unavailable",
    "degraded",
    "history",
];

const TXN_FILE: &str = r#"{
  "compare": [{"key": "hello", "target": "value", "op": "=", "value": "world"}],
  "success": [{"put": {"key": "hello", "value": "there", "prev_kv": true}}, {"get": {"key": "app/a"}}],
  "failure": [{"get": {"key": "hello"}}]
}
"#;

fn steps(group: &str) -> Vec<Step> {
    match group {
        "put" => vec![
            run(&["put", "hello", "world"]),
            run(&["put", "greeting", "hi", "--prev-kv"]),
            run(&["put", "greeting", "hello", "--prev-kv"]),
            run(&["-o", "json", "put", "greeting", "hey", "--prev-kv"]),
        ],
        "get" => vec![
            run(&["get", "hello"]),
            run(&["-o", "json", "get", "hello"]),
            run(&[
                "--consistency",
                "stale",
                "--member",
                "kv-2",
                "get",
                "greeting",
            ]),
        ],
        "get_missing" => vec![
            run(&["get", "missing"]),
            run(&["-o", "json", "get", "missing"]),
        ],
        "range" => vec![
            run(&["put", "app/a", "1"]),
            run(&["put", "app/b", "2"]),
            run(&["put", "app/c", "3"]),
            run(&["range", "--prefix", "app/"]),
            run(&["range", "--prefix", "app/", "--limit", "2"]),
            run(&["range", "--prefix", "app/", "--keys-only"]),
            run(&["-o", "json", "range", "--prefix", "app/", "--limit", "1"]),
            run(&["range", "app/b"]),
        ],
        "del" => vec![
            run(&["del", "app/c"]),
            run(&["del", "app/c"]),
            run(&["put", "tmp/1", "x"]),
            run(&["put", "tmp/2", "y"]),
            run(&["del", "tmp/", "--prefix", "--prev-kv"]),
            run(&["-o", "json", "del", "greeting", "--prev-kv"]),
        ],
        "cas" => vec![
            run(&["cas", "--absent", "lock", "me"]),
            run(&["cas", "lock", "me", "you"]),
            run(&["cas", "lock", "me", "again"]),
            run(&["cas", "--absent", "lock", "mine"]),
            run(&["cas", "nothing-here", "x", "y"]),
            run(&["-o", "json", "cas", "lock", "you", "us"]),
            run(&["-o", "json", "cas", "lock", "you", "them"]),
        ],
        "txn" => vec![
            run(&["txn", "{file}"]),
            run_stdin(&["txn"], TXN_FILE),
            run_stdin(
                &["-o", "json", "txn", "-"],
                r#"{"compare": [{"key": "app/a", "target": "version", "op": "<", "value": 2}],
 "success": [{"delete": {"key": "app/", "prefix": true, "prev_kv": true}}, {"range": {"key": "app/", "prefix": true}}]}
"#,
            ),
        ],
        "members" => vec![
            run(&["members", "list"]),
            run(&["-o", "json", "members", "list"]),
        ],
        "status" => vec![run(&["status"])],
        "status_json" => vec![run(&["-o", "json", "status"])],
        "health" => vec![
            run(&["health"]),
            run(&["-o", "json", "health", "--liveness"]),
            run(&["health", "--endpoint", "{dead}"]),
        ],
        "invalid_input" => vec![
            run(&["cas", "only-a-key"]),
            run(&["cas", "--absent", "k", "expected", "new"]),
            run(&["--timeout", "0", "get", "hello"]),
            run(&["--endpoints", "https://localhost:7379", "get", "hello"]),
            run(&["put", "", "empty-key"]),
            run_stdin(&["txn"], r#"{"compare": [{"key": "a", "valu": "typo"}]}"#),
            run_stdin(&["txn"], r#"{"success": [{"put": {"key": "a"}}]}"#),
        ],
        "unavailable" => vec![
            run(&["--endpoints", "{dead}", "--timeout", "1s", "get", "hello"]),
            run(&["--endpoints", "{dead}", "--timeout", "1s", "put", "a", "b"]),
            run(&["--endpoints", "{dead}", "--timeout", "1s", "status"]),
            run(&[
                "--endpoints",
                "{dead}",
                "--timeout",
                "1s",
                "-o",
                "json",
                "status",
            ]),
        ],
        "degraded" => vec![
            Step::Kill(2),
            run(&["status"]),
            run(&["health"]),
            run(&["get", "hello"]),
            run(&["--member", "kv-2", "--timeout", "1s", "get", "hello"]),
        ],
        // Revision history, watch, compaction and lease refusals (with kv-2 still down).
        "history" => vec![
            run(&["put", "hist/a", "1"]),
            run(&["put", "hist/a", "2"]),
            run(&["del", "hist/a"]),
            run(&["get", "hist/a", "--rev", "18"]),
            run(&["-o", "json", "get", "hist/a", "--rev", "19"]),
            run(&[
                "watch",
                "hist/",
                "--prefix",
                "--rev",
                "18",
                "--count",
                "3",
                "--prev-kv",
            ]),
            run(&[
                "-o", "json", "watch", "hist/a", "--rev", "18", "--count", "3",
            ]),
            run(&["compact", "19"]),
            run(&["get", "hist/a", "--rev", "18"]),
            run(&["-o", "json", "compact", "19"]),
            run(&["range", "--prefix", "hist/", "--rev", "99"]),
            run(&["watch", "hist/a", "--rev", "2", "--count", "1"]),
            run(&["lease", "list"]),
            run(&["lease", "ttl", "12345"]),
            run(&["put", "hist/b", "x", "--lease", "12345"]),
            run(&["lease", "grant", "0"]),
        ],
        other => panic!("no steps for {other}"),
    }
}

/// Replaces what changes from run to run; see the module docs.
struct Normalizer {
    /// (text, placeholder), longest text first.
    substitutions: Vec<(String, String)>,
}

impl Normalizer {
    fn new(c: &ProcessCluster, dead: &str, file: &Path) -> Normalizer {
        let mut substitutions = vec![
            (dead.to_string(), "<dead.addr>".to_string()),
            (file.display().to_string(), "<FILE>".to_string()),
        ];
        for m in &c.members {
            let name = &m.spec.name;
            substitutions.push((m.spec.client.to_string(), format!("<{name}.addr>")));
            substitutions.push((m.spec.peer.to_string(), format!("<{name}.peer>")));
        }
        substitutions.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
        Normalizer { substitutions }
    }

    /// Replaces each known text where it is not followed by another digit (so the address
    /// `…:4000` is not found inside `…:40001`).
    fn addresses(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (from, to) in &self.substitutions {
            let mut result = String::with_capacity(out.len());
            let mut rest = out.as_str();
            while let Some(at) = rest.find(from.as_str()) {
                let end = at + from.len();
                let next_is_digit = rest[end..].starts_with(|ch: char| ch.is_ascii_digit());
                result.push_str(&rest[..at]);
                result.push_str(if next_is_digit { from } else { to });
                rest = &rest[end..];
            }
            result.push_str(rest);
            out = result;
        }
        out
    }

    fn stdout(&self, text: &str) -> String {
        let text = self.addresses(text);
        if text.starts_with('{') {
            if let Ok(mut doc) = serde_json::from_str::<Value>(&text) {
                mask_json(&mut doc);
                let mut s = serde_json::to_string_pretty(&doc).expect("serializable");
                s.push('\n');
                return s;
            }
        }
        realign_tables(&text)
    }

    fn stderr(&self, text: &str) -> String {
        self.addresses(text)
    }
}

/// Replaces the values of volatile JSON fields, at any depth.
fn mask_json(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let placeholder = match k.as_str() {
                    "cluster_id" => Some("<CLUSTER_ID>"),
                    "term" => Some("<TERM>"),
                    "applied" => Some("<APPLIED>"),
                    _ => None,
                };
                match placeholder {
                    Some(p) if !v.is_null() => *v = Value::String(p.into()),
                    _ => mask_json(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        _ => {}
    }
}

/// Cells of a table line: separated by two or more spaces.
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn is_table_header(line: &str) -> bool {
    let cells = cells(line);
    cells.len() >= 2
        && cells
            .iter()
            .all(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
}

/// Re-aligns every table (see the module docs), masking `TERM` and `APPLIED` cells.
fn realign_tables(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        if !is_table_header(lines[i]) {
            out.push_str(lines[i]);
            out.push('\n');
            i += 1;
            continue;
        }
        let header = cells(lines[i]);
        let mut rows = Vec::new();
        i += 1;
        while i < lines.len() && cells(lines[i]).len() == header.len() {
            let mut row = cells(lines[i]);
            for (cell, name) in row.iter_mut().zip(&header) {
                if cell != "-" && (name == "TERM" || name == "APPLIED") {
                    *cell = format!("<{name}>");
                }
            }
            rows.push(row);
            i += 1;
        }
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        out.push_str(&table(&header, &rows));
    }
    if !text.ends_with('\n') {
        out.pop();
    }
    out
}

/// Where two transcripts first differ, with the lines around it.
fn first_difference(expected: &str, actual: &str) -> String {
    if expected.is_empty() {
        return "the golden file is missing or empty".to_string();
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let at = (0..e.len().max(a.len()))
        .find(|&i| e.get(i) != a.get(i))
        .unwrap_or(0);
    let around = |lines: &[&str]| {
        lines[at.saturating_sub(3)..(at + 3).min(lines.len())]
            .iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "first difference at line {}\n  expected:\n{}\n  actual:\n{}",
        at + 1,
        around(&e),
        around(&a)
    )
}

/// Shows a command line the way a shell user would type it.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:,<>=".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until kv-0 leads (while it runs), every running member has applied the leader's commit
/// index, and the leader sees no replication lag, so `status` shows a settled cluster.
async fn settle(c: &mut ProcessCluster) {
    use kvset_client::proto::v1::Role;
    let started = Instant::now();
    loop {
        let running: Vec<usize> = (0..c.members.len())
            .filter(|&i| c.members[i].is_running())
            .collect();
        let mut statuses = Vec::new();
        for &i in &running {
            statuses.extend(c.status(i).await);
        }
        let commit = statuses.iter().map(|s| s.commit_index).max().unwrap_or(0);
        let leader_sees_no_lag = statuses
            .iter()
            .filter(|s| s.role == Role::Leader as i32)
            .any(|s| {
                s.members
                    .iter()
                    .filter(|m| {
                        m.member
                            .as_ref()
                            .is_some_and(|m| running.contains(&(m.id as usize)))
                    })
                    .all(|m| m.lag == 0)
            });
        // kv-0 is the preferred primary: after an election elsewhere it takes leadership back,
        // and the transcripts show which member served each command.
        let kv0_leads = !running.contains(&0)
            || statuses.iter().any(|s| {
                s.role == Role::Leader as i32
                    && s.header
                        .as_ref()
                        .and_then(|h| h.member.as_ref())
                        .is_some_and(|m| m.ordinal == 0)
            });
        if statuses.len() == running.len()
            && kv0_leads
            && leader_sees_no_lag
            && statuses.iter().all(|s| s.applied_index >= commit)
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the cluster did not settle; logs in {}",
            c.dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvsetctl_output_matches_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0");
    let ctl = kvsetctl_binary();
    let mut c = ProcessCluster::new(3, &[]);
    c.start_all_ordered().await;
    assert!(
        c.wait_leader_is(0, Duration::from_secs(20)).await,
        "kv-0 leads a fresh cluster"
    );
    let endpoints = c.endpoints().join(",");
    // A port on the cluster's own address that nothing listens on.
    let dead = {
        let ip = c.members[0].spec.client.ip();
        let l = TcpListener::bind((ip, 0)).expect("a free port");
        l.local_addr().expect("local addr").to_string()
    };
    let txn_file = c.dir.path().join("txn.json");
    std::fs::write(&txn_file, TXN_FILE).expect("write txn file");
    let norm = Normalizer::new(&c, &dead, &txn_file);

    let mut mismatches = Vec::new();
    for group in GROUPS {
        let mut transcript = format!(
            "# kvsetctl golden transcript ({group}); see tests/tests/client_cli_golden.rs.\n\
             # KVSET_ENDPOINTS=<kv-0.addr>,<kv-1.addr>,<kv-2.addr>\n"
        );
        for step in steps(group) {
            transcript.push('\n');
            let (args, stdin) = match step {
                Step::Kill(i) => {
                    c.kill(i);
                    transcript.push_str(&format!("# kill -9 kv-{i}\n"));
                    continue;
                }
                Step::Run { args, stdin } => (args, stdin),
            };
            if args.iter().any(|a| a == "{file}") {
                transcript.push_str("# <FILE> holds:\n");
                for line in TXN_FILE.lines() {
                    transcript.push_str(&format!("#   {line}\n"));
                }
            }
            let args: Vec<String> = args
                .iter()
                .map(|a| {
                    a.replace("{dead}", &dead)
                        .replace("{file}", &txn_file.display().to_string())
                })
                .collect();
            settle(&mut c).await;
            let mut child = Command::new(&ctl)
                .args(&args)
                .env("KVSET_ENDPOINTS", &endpoints)
                .env_remove("RUST_LOG")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn kvsetctl");
            {
                let mut input = child.stdin.take().expect("stdin");
                if let Some(text) = &stdin {
                    input.write_all(text.as_bytes()).expect("write stdin");
                }
            }
            // kvsetctl bounds itself (--timeout, 10 s by default); this only keeps a bug from
            // hanging the test.
            let output = tokio::time::timeout(
                Duration::from_secs(60),
                tokio::task::spawn_blocking(move || child.wait_with_output()),
            )
            .await
            .unwrap_or_else(|_| panic!("kvsetctl {args:?} did not finish within 60 s"))
            .expect("join")
            .expect("kvsetctl output");
            let shown = norm.addresses(&shell_words(&args));
            match &stdin {
                Some(text) => transcript.push_str(&format!(
                    "$ kvsetctl {shown} <<'EOF'\n{}{}EOF\n",
                    text,
                    if text.ends_with('\n') { "" } else { "\n" }
                )),
                None => transcript.push_str(&format!("$ kvsetctl {shown}\n")),
            }
            transcript.push_str(&norm.stdout(&String::from_utf8_lossy(&output.stdout)));
            for line in norm
                .stderr(&String::from_utf8_lossy(&output.stderr))
                .lines()
            {
                transcript.push_str(format!("stderr| {line}").trim_end());
                transcript.push('\n');
            }
            transcript.push_str(&format!(
                "[exit {}]\n",
                output
                    .status
                    .code()
                    .map_or("signal".into(), |c| c.to_string())
            ));
        }

        let path = golden_dir().join(format!("{group}.txt"));
        if update {
            std::fs::create_dir_all(golden_dir()).expect("golden dir");
            std::fs::write(&path, &transcript).expect("write golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != transcript {
            mismatches.push(format!(
                "{}: {}\n--- actual transcript:\n{transcript}",
                path.display(),
                first_difference(&expected, &transcript)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "kvsetctl output differs from {} golden file(s); if the change is intended, rerun with \
         UPDATE_GOLDEN=1 and review the diff:\n\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn normalizer_masks_volatile_parts_and_realigns_tables() {
    let header = [
        "NAME", "ORDINAL", "ENDPOINT", "ROLE", "TERM", "APPLIED", "REVISION", "LAG", "HEALTHY",
    ];
    let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let raw = table(
        &header,
        &[
            row(&[
                "kv-0",
                "0",
                "127.0.9.9:40001",
                "leader",
                "3",
                "17",
                "9",
                "0",
                "true",
            ]),
            row(&[
                "kv-1",
                "1",
                "127.0.9.9:4000",
                "unknown",
                "-",
                "-",
                "-",
                "-",
                "false",
            ]),
        ],
    ) + "\nkv-1 (127.0.9.9:4000): connection refused\n";
    let expected = table(
        &header,
        &[
            row(&[
                "kv-0",
                "0",
                "<kv-0.addr>",
                "leader",
                "<TERM>",
                "<APPLIED>",
                "9",
                "0",
                "true",
            ]),
            row(&[
                "kv-1",
                "1",
                "<kv-1.addr>",
                "unknown",
                "-",
                "-",
                "-",
                "-",
                "false",
            ]),
        ],
    ) + "\nkv-1 (<kv-1.addr>): connection refused\n";
    let norm = Normalizer {
        substitutions: vec![
            ("127.0.9.9:40001".into(), "<kv-0.addr>".into()),
            ("127.0.9.9:4000".into(), "<kv-1.addr>".into()),
        ],
    };
    assert_eq!(norm.stdout(&raw), expected);
    // An address is not replaced inside a longer one, whatever the order of substitutions.
    let reversed = Normalizer {
        substitutions: norm.substitutions.iter().rev().cloned().collect(),
    };
    assert_eq!(reversed.stdout(&raw), expected);

    // JSON: volatile fields masked at any depth, nulls kept, the rest untouched.
    let doc = r#"{"header": {"cluster_id": "abc", "term": 4, "revision": 7},
                  "members": [{"term": null, "applied": 12, "endpoint": "127.0.9.9:4000"}]}"#;
    let masked: Value = serde_json::from_str(&norm.stdout(doc)).unwrap();
    assert_eq!(
        masked,
        serde_json::json!({"header": {"cluster_id": "<CLUSTER_ID>", "term": "<TERM>", "revision": 7},
                           "members": [{"term": null, "applied": "<APPLIED>", "endpoint": "<kv-1.addr>"}]})
    );
}
