//! The `kubectl` backend: a kvset StatefulSet already running in a user's cluster (kind,
//! minikube, ...), with faults done through `kubectl`.
//!
//! The backend deploys nothing and removes nothing: point it at a cluster made from `k8s/`
//! (`kubectl apply -k k8s/overlays/kind`). It needs the StatefulSet's names: the set `kv`, pods
//! `kv-N`, claims `data-kv-N` (the claim template is `data`); `--namespace` and `--context`
//! choose where.
//!
//! | fault | command |
//! | --- | --- |
//! | kill -9 | `kubectl delete pod kv-N --grace-period=0 --force --wait=false`: the container is killed at once; the StatefulSet recreates the pod with the same name and claim |
//! | graceful restart | `kubectl delete pod kv-N --wait=false`: SIGTERM, the pod's grace period, then a new pod |
//! | kill all | one `delete pod kv-0 kv-1 kv-2 --grace-period=0 --force` |
//! | wipe | `delete pvc data-kv-N --wait=false`, `delete pod kv-N --grace-period=0 --force`, `wait --for=delete pvc/data-kv-N`; then, if the recreated pod is stuck `Pending` on the deleted claim, delete it once more so the StatefulSet creates it with a fresh claim |
//! | pause | unsupported: the image is distroless (no shell, no `kill` to `exec`), and an ephemeral debug container per pause is too heavy to time a fault with |
//! | partition | unsupported: it would need a NetworkPolicy, which kind's default CNI does not enforce |
//! | scale | `kubectl scale statefulset kv --replicas=N`; then `kubectl exec kv-M -- kvsetctl … -o json members list` (M the lowest pod below N that answers) until the membership is kv-0 … kv-(N-1): the controller lowers `spec.replicas` and deletes the pods above it one at a time, each leaves the cluster as it stops (it reads the size through the API, see k8s/base/statefulset-reader-rbac.yaml), or creates the new ones in order |
//!
//! A forced delete removes the pod object at once and the kubelet kills the container moments
//! later, so for a short while the old container may still run as the new pod is created; the
//! harness times the member's return from when it stops answering. That is how a node losing a
//! pod looks to a StatefulSet too.
//!
//! Endpoints: `--endpoints` (in ordinal order, e.g. NodePorts or LoadBalancer addresses), or else
//! one `kubectl port-forward pod/kv-N` per member on a free local port, restarted whenever it
//! exits (a port-forward dies with its pod). Logs: `kubectl logs kv-N` and, when the container
//! restarted, `--previous`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{
    argv, member_ids_from_json, run_command, unsupported, wait_for_membership, Backend,
    BackendError, MemberInfo, WaitReady, SCALE_TIMEOUT,
};
use crate::chaos::faults::FaultKind;

/// Where the StatefulSet is and how to reach it.
#[derive(Debug, Clone)]
pub struct KubectlConfig {
    /// The kubectl program (default `kubectl` from `PATH`).
    pub kubectl: String,
    /// `--context`, if not the current one.
    pub context: Option<String>,
    /// `--namespace`, if not the context's.
    pub namespace: Option<String>,
    /// The StatefulSet's name (pods `<set>-N`).
    pub set: String,
    /// The volume claim template's name (claims `<claim>-<set>-N`).
    pub claim: String,
    /// Number of members.
    pub replicas: usize,
    /// Client endpoints reachable from here, by ordinal; `None`: port-forward.
    pub endpoints: Option<Vec<String>>,
}

/// A StatefulSet driven through kubectl.
pub struct KubectlBackend {
    config: KubectlConfig,
    /// Local ports of the port-forwards (when no endpoints were given).
    forward_ports: Vec<u16>,
    forwards: Mutex<Vec<JoinHandle<()>>>,
    forward_children: Arc<Mutex<Vec<Option<Child>>>>,
    stopping: Arc<AtomicBool>,
}

impl KubectlBackend {
    /// A backend for `config`. Without endpoints, local ports for the port-forwards are chosen
    /// now.
    pub fn new(config: KubectlConfig) -> Result<KubectlBackend, BackendError> {
        let forward_ports = if config.endpoints.is_some() {
            Vec::new()
        } else {
            super::free_local_ports(config.replicas)?
        };
        if let Some(endpoints) = &config.endpoints {
            if endpoints.len() != config.replicas {
                return Err(BackendError::Setup(format!(
                    "--endpoints lists {} endpoints for {} replicas; give one per member, in \
                     ordinal order",
                    endpoints.len(),
                    config.replicas
                )));
            }
        }
        Ok(KubectlBackend {
            forward_children: Arc::new(Mutex::new((0..config.replicas).map(|_| None).collect())),
            config,
            forward_ports,
            forwards: Mutex::new(Vec::new()),
            stopping: Arc::new(AtomicBool::new(false)),
        })
    }

    fn base(&self) -> Vec<String> {
        let mut line = vec![self.config.kubectl.clone()];
        if let Some(c) = &self.config.context {
            line.push(format!("--context={c}"));
        }
        if let Some(n) = &self.config.namespace {
            line.push(format!("--namespace={n}"));
        }
        line
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, BackendError> {
        let mut line = self.base();
        line.extend(argv(args));
        let out = run_command(&line, &[])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn pod(&self, m: usize) -> String {
        format!("{}-{m}", self.config.set)
    }

    fn pvc(&self, m: usize) -> String {
        format!("{}-{}-{m}", self.config.claim, self.config.set)
    }

    fn start_forwards(&self) {
        let mut handles = self.forwards.lock().unwrap_or_else(|p| p.into_inner());
        for (m, port) in self.forward_ports.iter().copied().enumerate() {
            let mut line = self.base();
            line.extend(argv(&[
                "port-forward",
                "--address=127.0.0.1",
                &format!("pod/{}", self.pod(m)),
                &format!("{port}:7379"),
            ]));
            let stopping = self.stopping.clone();
            let children = self.forward_children.clone();
            handles.push(std::thread::spawn(move || {
                // A port-forward ends when its pod goes away: start it again until teardown.
                while !stopping.load(Ordering::SeqCst) {
                    let spawned = Command::new(&line[0])
                        .args(&line[1..])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn();
                    if let Ok(child) = spawned {
                        children.lock().unwrap_or_else(|p| p.into_inner())[m] = Some(child);
                        loop {
                            std::thread::sleep(Duration::from_millis(100));
                            let mut guard = children.lock().unwrap_or_else(|p| p.into_inner());
                            let done = match guard[m].as_mut() {
                                Some(c) => !matches!(c.try_wait(), Ok(None)),
                                None => true,
                            };
                            if done || stopping.load(Ordering::SeqCst) {
                                if let Some(mut c) = guard[m].take() {
                                    let _ = c.kill();
                                    let _ = c.wait();
                                }
                                break;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            }));
        }
    }

    fn stop_forwards(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let handles: Vec<JoinHandle<()>> = self
            .forwards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Backend for KubectlBackend {
    fn name(&self) -> &'static str {
        "kubectl"
    }

    fn members(&self) -> Vec<MemberInfo> {
        (0..self.config.replicas)
            .map(|m| MemberInfo {
                name: self.pod(m),
                endpoint: match &self.config.endpoints {
                    Some(list) => list[m].clone(),
                    None => format!("127.0.0.1:{}", self.forward_ports[m]),
                },
            })
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "{} (statefulset {}, {} replicas{}{}), endpoints {}",
            self.config.kubectl,
            self.config.set,
            self.config.replicas,
            self.config
                .context
                .as_ref()
                .map(|c| format!(", context {c}"))
                .unwrap_or_default(),
            self.config
                .namespace
                .as_ref()
                .map(|n| format!(", namespace {n}"))
                .unwrap_or_default(),
            if self.config.endpoints.is_some() {
                "given with --endpoints"
            } else {
                "through kubectl port-forward"
            }
        )
    }

    fn unsupported(&self, kind: FaultKind) -> Option<String> {
        match kind {
            FaultKind::Pause => Some(
                "the image is distroless (no shell or kill to exec for SIGSTOP), and an ephemeral \
                 debug container per pause is too heavy to time a fault with"
                    .into(),
            ),
            FaultKind::Partition => Some(
                "cutting a pod off needs a NetworkPolicy, which kind's and minikube's default \
                 CNIs do not enforce"
                    .into(),
            ),
            FaultKind::DiskFull => Some(
                "filling a pod's volume needs a writer inside the pod, and the image is \
                 distroless (no shell); use --backend process"
                    .into(),
            ),
            FaultKind::PowerLoss | FaultKind::PowerLossAll => Some(
                "a power cut needs each member's volume on kvset-powerfs, a FUSE filesystem the \
                 harness serves; a pod's volume is mounted by the kubelet; use --backend process"
                    .into(),
            ),
            _ => None,
        }
    }

    fn start(&self, _wait_ready: &WaitReady<'_>) -> Result<(), BackendError> {
        self.kubectl(&["get", "statefulset", &self.config.set, "-o", "name"])
            .map_err(|e| {
                BackendError::Setup(format!(
                    "cannot find the StatefulSet {:?} (deploy k8s/ first, e.g. kubectl apply -k \
                     k8s/overlays/kind; check --context and --namespace): {e}",
                    self.config.set
                ))
            })?;
        if self.config.endpoints.is_none() {
            self.start_forwards();
        }
        Ok(())
    }

    fn scale(&self, replicas: usize) -> Result<(), BackendError> {
        if replicas == 0 || replicas > self.config.replicas {
            return Err(BackendError::Setup(format!(
                "the harness scales between 1 and the run's {} members, not to {replicas}",
                self.config.replicas
            )));
        }
        self.kubectl(&[
            "scale",
            "statefulset",
            &self.config.set,
            &format!("--replicas={replicas}"),
        ])?;
        wait_for_membership("kubectl", replicas, SCALE_TIMEOUT, || {
            (0..replicas).find_map(|m| {
                self.kubectl(&[
                    "exec",
                    &self.pod(m),
                    "--",
                    "kvsetctl",
                    "--endpoints",
                    "127.0.0.1:7379",
                    "--timeout",
                    "2s",
                    "-o",
                    "json",
                    "members",
                    "list",
                ])
                .ok()
                .and_then(|text| member_ids_from_json(&text))
            })
        })
    }

    fn crash(&self, members: &[usize]) -> Result<(), BackendError> {
        let pods: Vec<String> = members.iter().map(|&m| self.pod(m)).collect();
        let mut args = vec!["delete", "pod"];
        args.extend(pods.iter().map(String::as_str));
        args.extend(["--grace-period=0", "--force", "--wait=false"]);
        self.kubectl(&args).map(|_| ())
    }

    fn restart(&self, member: usize) -> Result<(), BackendError> {
        self.kubectl(&["delete", "pod", &self.pod(member), "--wait=false"])
            .map(|_| ())
    }

    fn pause(&self, _member: usize) -> Result<(), BackendError> {
        Err(unsupported(self, FaultKind::Pause))
    }

    fn resume(&self, _member: usize) -> Result<(), BackendError> {
        Err(unsupported(self, FaultKind::Pause))
    }

    fn partition(&self, _member: usize) -> Result<(), BackendError> {
        Err(unsupported(self, FaultKind::Partition))
    }

    fn heal_partition(&self, _member: usize) -> Result<(), BackendError> {
        Err(unsupported(self, FaultKind::Partition))
    }

    fn wipe_begin(&self, member: usize) -> Result<(), BackendError> {
        let pvc = self.pvc(member);
        self.kubectl(&["delete", "pvc", &pvc, "--wait=false"])?;
        self.kubectl(&[
            "delete",
            "pod",
            &self.pod(member),
            "--grace-period=0",
            "--force",
            "--wait=false",
        ])?;
        self.kubectl(&[
            "wait",
            "--for=delete",
            &format!("pvc/{pvc}"),
            "--timeout=120s",
        ])
        .map(|_| ())
    }

    fn wipe_end(&self, member: usize) -> Result<(), BackendError> {
        // The StatefulSet may have recreated the pod while the old claim was still terminating;
        // such a pod stays Pending. Deleting it makes the controller create it with a new claim.
        let phase = self
            .kubectl(&[
                "get",
                "pod",
                &self.pod(member),
                "-o",
                "jsonpath={.status.phase}",
                "--ignore-not-found",
            ])
            .unwrap_or_default();
        if phase == "Pending" {
            self.kubectl(&["delete", "pod", &self.pod(member), "--wait=false"])?;
        }
        Ok(())
    }

    fn heal_all(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn collect_logs(&self, dir: &Path) -> Result<Vec<PathBuf>, BackendError> {
        fs::create_dir_all(dir)
            .map_err(|e| BackendError::io(format!("create {}", dir.display()), e))?;
        let mut written = Vec::new();
        for m in 0..self.config.replicas {
            let pod = self.pod(m);
            for (suffix, extra) in [("", None), (".previous", Some("--previous"))] {
                let mut args = vec!["logs", pod.as_str()];
                args.extend(extra);
                let text = match self.kubectl(&args) {
                    Ok(text) => text,
                    Err(_) if extra.is_some() => continue,
                    Err(e) => format!("kvset-chaos: cannot read the logs: {e}"),
                };
                let path = dir.join(format!("{pod}{suffix}.log"));
                fs::write(&path, text + "\n")
                    .map_err(|e| BackendError::io(format!("write {}", path.display()), e))?;
                written.push(path);
            }
        }
        Ok(written)
    }

    fn teardown(&self) -> Result<(), BackendError> {
        self.stop_forwards();
        Ok(())
    }
}

impl Drop for KubectlBackend {
    fn drop(&mut self) {
        self.stop_forwards();
    }
}
