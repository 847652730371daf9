//! `kvset-chaos run`: the command line of the harness. Parses arguments into a [`RunConfig`],
//! runs it, prints the report, and returns the exit code (0 pass, 1 violation, 2 inconclusive or
//! error).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::backend::docker::{default_compose_file, DockerConfig, DockerTopology};
use super::backend::kubectl::KubectlConfig;
use super::backend::netns::Netns;
use super::backend::process::{
    find_server_binary, pick_base_port, pick_bind_ip, ProcessConfig, ProcessNetwork,
    DEFAULT_SERVER_ARGS,
};
use super::faults::FaultKind;
use super::overlap::OVERLAP_SERVER_ARGS;
use super::schedule::ScheduleConfig;
use super::workload::{ReadFrom, WorkloadConfig};
use super::{BackendConfig, ChaosError, RunConfig};

/// Size of each member's small filesystem when the run includes `disk-full` (a tmpfs on the
/// process backend, an ext4 volume on docker): room for a run's data many times over, small
/// enough to fill in a moment.
const DISK_FULL_TMPFS_MB: u64 = 256;

/// Which deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// `kvset-server local` (the launcher) as a child process, on loopback.
    Process,
    /// Containers: docker/compose.yaml, or plain `docker run` with --docker-prefix.
    Docker,
    /// An existing StatefulSet, through kubectl.
    Kubectl,
}

impl BackendKind {
    fn as_str(self) -> &'static str {
        match self {
            BackendKind::Process => "process",
            BackendKind::Docker => "docker",
            BackendKind::Kubectl => "kubectl",
        }
    }
}

/// How the process backend networks its members (`--network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkArg {
    /// One loopback address for every member (no partitions).
    Loopback,
    /// A network namespace per member (root); fails when namespaces cannot be made.
    Netns,
    /// Namespaces where they can be made, else loopback.
    Auto,
}

impl NetworkArg {
    fn as_str(self) -> &'static str {
        match self {
            NetworkArg::Loopback => "loopback",
            NetworkArg::Netns => "netns",
            NetworkArg::Auto => "auto",
        }
    }
}

/// Arguments of `kvset-chaos run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Where the cluster runs.
    #[arg(long, value_enum, default_value = "process")]
    pub backend: BackendKind,
    /// How long the workload and the faults run (e.g. 60s, 2m, 500ms).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed for every random choice (operations, fault sequence, targets). Default: random,
    /// printed in the report.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    pub clients: usize,
    /// Output directory (history.jsonl, report.md, report.json, report.html, logs/).
    /// Default: chaos-out/<backend>-seed<N>-<unix time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Contended keys (k0, k1, ...).
    #[arg(long, default_value_t = 5)]
    pub keys: usize,
    /// Total operations per second over all clients (0: as fast as they go).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Where linearizable reads go: leader (SDK routing), followers (pinned to a non-leader)
    /// or any (pinned to a random member).
    #[arg(long, value_enum, default_value = "leader")]
    pub read_from: ReadFrom,
    /// Fault kinds: all, none, or a list of kill-follower, kill-leader, restart, kill-all,
    /// pause, partition, wipe, and the compound pause-wipe-kill-leader, kill-during-snapshot,
    /// kill-all-wipe-one, kill-all-wipe-kv0 (`all` means every single kind; --overlap adds the
    /// four compound ones), and the opt-in disk-full, power-loss, power-loss-all, scale,
    /// partition-leader, partition-one-way, latency (only when named; the last three need the
    /// process backend with --network netns). Kinds the backend cannot do are reported and
    /// skipped.
    #[arg(long, default_value = "all")]
    pub faults: String,
    /// Add compound faults, several in force at once: pause-wipe-kill-leader,
    /// kill-during-snapshot, kill-all-wipe-one, kill-all-wipe-kv0 (see docs/CHAOS.md). Members
    /// (process, docker --docker-prefix) also get --snapshot-every=400 --keep-after-snapshot=50
    /// so that a wiped member catches up by a snapshot install.
    #[arg(long)]
    pub overlap: bool,
    /// Quiet time before each fault, MIN..MAX.
    #[arg(long, default_value = "1s..3s", value_parser = parse_range)]
    pub fault_gap: (Duration, Duration),
    /// How long a pause, partition or wiped member's absence lasts, MIN..MAX.
    #[arg(long, default_value = "1500ms..4s", value_parser = parse_range)]
    pub fault_hold: (Duration, Duration),
    /// Deadline of one client call, retries included.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub op_timeout: Duration,
    /// Bound on every wait for the cluster to heal; not healing in time fails the liveness
    /// check.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub heal_timeout: Duration,
    /// Bound on the cluster becoming healthy after the start.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    pub startup_timeout: Duration,
    /// Wall-clock budget of the linearizability check (running out: inconclusive).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub check_budget: Duration,
    /// Keep the members' data directories (process backend) even when the run passes.
    #[arg(long)]
    pub keep_data: bool,
    /// Watchers and lock clients.
    #[command(flatten)]
    pub coordination: super::coord::CoordArgs,

    /// process: the kvset-server binary (default: KVSET_SERVER_BIN, else next to kvset-chaos).
    #[arg(long, help_heading = "process backend")]
    pub server_bin: Option<PathBuf>,
    /// process: client ports are base+N, peer ports base+100+N (default: free ports).
    #[arg(long, help_heading = "process backend")]
    pub base_port: Option<u16>,
    /// process: loopback address to bind (default: a 127.x.y.z of the run's own on Linux).
    #[arg(long, help_heading = "process backend")]
    pub bind_ip: Option<Ipv4Addr>,
    /// process: how members are networked. loopback: one address for all (no partitions);
    /// netns: a network namespace per member on a bridge the run creates and removes (root;
    /// partitions, partition-leader, partition-one-way, latency); auto: netns where it works,
    /// else loopback. The report says which ran.
    #[arg(
        long,
        value_enum,
        default_value = "loopback",
        help_heading = "process backend"
    )]
    pub network: NetworkArg,
    /// process, docker --docker-prefix: extra flag for every member (repeatable), e.g.
    /// --server-arg=--fault=stale-linearizable-reads. Added after the defaults
    /// (--heartbeat-ms=100 --election-timeout-min-ms=400 --election-timeout-max-ms=600
    /// --shutdown-grace-secs=5), so it can override them.
    #[arg(long = "server-arg", allow_hyphen_values = true, value_name = "FLAG")]
    pub server_args: Vec<String>,
    /// process: the launcher's longest wait before restarting a member that was killed again
    /// within 30 s of its start (default: the launcher's, 10s, as a kubelet backs off). A soak
    /// lowers it to fit more faults in an hour.
    #[arg(long, value_parser = parse_duration)]
    pub restart_backoff_max: Option<Duration>,

    /// docker: the image (docker/build-image.sh builds kvset:dev).
    #[arg(
        long,
        env = "KVSET_IMAGE",
        default_value = "kvset:dev",
        help_heading = "docker backend"
    )]
    pub image: String,
    /// docker: run plain containers named <prefix>-kv-N on a network of their own, instead of
    /// docker/compose.yaml's global names (lets runs share a Docker host).
    #[arg(long, help_heading = "docker backend")]
    pub docker_prefix: Option<String>,
    /// docker: the compose file (default: docker/compose.yaml).
    #[arg(long, help_heading = "docker backend")]
    pub docker_compose: Option<PathBuf>,
    /// docker: the compose project name.
    #[arg(long, default_value = "kvset", help_heading = "docker backend")]
    pub docker_project: String,

    /// kubectl: the kubectl program.
    #[arg(long, default_value = "kubectl", help_heading = "kubectl backend")]
    pub kubectl: String,
    /// kubectl: the context.
    #[arg(long, help_heading = "kubectl backend")]
    pub context: Option<String>,
    /// kubectl: the namespace.
    #[arg(long, short = 'n', help_heading = "kubectl backend")]
    pub namespace: Option<String>,
    /// kubectl: client endpoints reachable from here, in ordinal order (default: one kubectl
    /// port-forward per pod).
    #[arg(long, value_delimiter = ',', help_heading = "kubectl backend")]
    pub endpoints: Vec<String>,
    /// Number of members (process: the launcher's --replicas; docker and kubectl: the members
    /// there are).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
}

/// Parses a duration the way kvsetctl does (`500ms`, `2s`, `3m`, …), zero allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    kvset_client::duration::parse(s).map_err(|e| e.to_string())
}

/// Parses `MIN..MAX` (each a duration), or one duration for both.
pub fn parse_range(s: &str) -> Result<(Duration, Duration), String> {
    let (lo, hi) = match s.split_once("..") {
        Some((lo, hi)) => (parse_duration(lo)?, parse_duration(hi)?),
        None => {
            let d = parse_duration(s)?;
            (d, d)
        }
    };
    if lo > hi {
        return Err(format!("{s:?}: the minimum is above the maximum"));
    }
    Ok((lo, hi))
}

fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl RunArgs {
    /// The command line that reruns this run (with the seed and output fixed).
    pub fn reproduce(&self, seed: u64) -> String {
        let mut parts = vec![
            "kvset-chaos run".to_string(),
            format!("--backend {}", self.backend.as_str()),
            format!("--duration {}", fmt_duration(self.duration)),
            format!("--seed {seed}"),
            format!("--clients {}", self.clients),
            format!("--keys {}", self.keys),
            format!("--rate {}", self.rate),
            format!(
                "--read-from {}",
                match self.read_from {
                    ReadFrom::Leader => "leader",
                    ReadFrom::Followers => "followers",
                    ReadFrom::Any => "any",
                }
            ),
            format!("--faults {}", self.faults),
        ];
        if self.overlap {
            parts.push("--overlap".into());
        }
        parts.extend([
            format!(
                "--fault-gap {}..{}",
                fmt_duration(self.fault_gap.0),
                fmt_duration(self.fault_gap.1)
            ),
            format!(
                "--fault-hold {}..{}",
                fmt_duration(self.fault_hold.0),
                fmt_duration(self.fault_hold.1)
            ),
            format!("--op-timeout {}", fmt_duration(self.op_timeout)),
        ]);
        parts.extend(self.coordination.reproduce());
        parts.extend(self.server_args.iter().map(|a| format!("--server-arg={a}")));
        match self.backend {
            BackendKind::Process => {
                if self.network != NetworkArg::Loopback {
                    parts.push(format!("--network {}", self.network.as_str()));
                }
                if let Some(max) = self.restart_backoff_max {
                    parts.push(format!("--restart-backoff-max {}", fmt_duration(max)));
                }
            }
            BackendKind::Docker => {
                parts.push(format!("--image {}", self.image));
                if let Some(p) = &self.docker_prefix {
                    parts.push(format!("--docker-prefix {p}"));
                }
            }
            BackendKind::Kubectl => {
                if let Some(c) = &self.context {
                    parts.push(format!("--context {c}"));
                }
                if let Some(n) = &self.namespace {
                    parts.push(format!("--namespace {n}"));
                }
                if !self.endpoints.is_empty() {
                    parts.push(format!("--endpoints {}", self.endpoints.join(",")));
                }
            }
        }
        parts.join(" ")
    }

    /// The run these arguments describe.
    pub fn config(&self) -> Result<RunConfig, ChaosError> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 % 1_000_000)
                .unwrap_or(1)
        });
        let mut faults = FaultKind::parse_list(&self.faults).map_err(ChaosError::Config)?;
        if self.overlap {
            for k in FaultKind::OVERLAP {
                if !faults.contains(&k) {
                    faults.push(k);
                }
            }
        }
        // Small snapshots, so that a wiped member catches up by a snapshot install; the user's
        // --server-arg flags come later and win.
        let server_args: Vec<String> = if faults.contains(&FaultKind::KillDuringSnapshot) {
            OVERLAP_SERVER_ARGS
                .iter()
                .map(|a| a.to_string())
                .chain(self.server_args.iter().cloned())
                .collect()
        } else {
            self.server_args.clone()
        };
        let power_disks = faults.iter().any(|k| k.is_power_loss());
        if power_disks && faults.contains(&FaultKind::DiskFull) {
            return Err(ChaosError::Config(
                "disk-full and power-loss put the members' data dirs on different filesystems \
                 (a small tmpfs, kvset-powerfs); run them separately"
                    .into(),
            ));
        }
        if self.replicas < 3 && self.backend != BackendKind::Process {
            return Err(ChaosError::Config(
                "--replicas must be at least 3 (a quorum must survive one fault)".into(),
            ));
        }
        let out = self.out.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from("chaos-out").join(format!("{}-seed{seed}-{now}", self.backend.as_str()))
        });
        let backend = match self.backend {
            BackendKind::Process => {
                let server_bin = self
                    .server_bin
                    .clone()
                    .or_else(find_server_binary)
                    .ok_or_else(|| {
                        ChaosError::Config(
                            "cannot find kvset-server: build it (cargo build --bins), or pass \
                             --server-bin / set KVSET_SERVER_BIN"
                                .into(),
                        )
                    })?;
                let bind_ip = self.bind_ip.unwrap_or_else(|| pick_bind_ip(seed));
                let base_port = match self.base_port {
                    Some(p) => p,
                    None => pick_base_port(bind_ip, self.replicas, seed).map_err(|source| {
                        ChaosError::Setup {
                            backend: "process",
                            source,
                        }
                    })?,
                };
                let out_abs = std::path::absolute(&out).unwrap_or_else(|_| out.clone());
                let network = match self.network {
                    NetworkArg::Loopback => ProcessNetwork::default(),
                    NetworkArg::Netns => ProcessNetwork::Namespaces(Arc::new(
                        Netns::create(self.replicas).map_err(|source| ChaosError::Setup {
                            backend: "process",
                            source,
                        })?,
                    )),
                    NetworkArg::Auto => match Netns::create(self.replicas) {
                        Ok(net) => ProcessNetwork::Namespaces(Arc::new(net)),
                        Err(e) => {
                            eprintln!(
                                "kvset-chaos: network namespaces unavailable ({e}); members run \
                                 on loopback"
                            );
                            ProcessNetwork::Loopback {
                                why: Some(e.to_string()),
                            }
                        }
                    },
                };
                BackendConfig::Process(ProcessConfig {
                    server_bin,
                    data_dir: out_abs.join("data"),
                    launcher_log: out_abs.join("logs").join("launcher.log"),
                    replicas: self.replicas,
                    bind_ip,
                    base_port,
                    server_args: server_args.clone(),
                    small_disks_mb: faults
                        .contains(&FaultKind::DiskFull)
                        .then_some(DISK_FULL_TMPFS_MB),
                    power_disks,
                    network,
                    restart_backoff_max: self.restart_backoff_max,
                })
            }
            BackendKind::Docker => {
                let (topology, host_ports) = match &self.docker_prefix {
                    Some(prefix) => (
                        DockerTopology::Plain {
                            prefix: prefix.clone(),
                        },
                        super::backend::free_local_ports(self.replicas).map_err(|source| {
                            ChaosError::Setup {
                                backend: "docker",
                                source,
                            }
                        })?,
                    ),
                    None => {
                        if !self.server_args.is_empty() {
                            eprintln!(
                                "kvset-chaos: warning: docker/compose.yaml passes no extra flags \
                                 to the members; --server-arg is ignored (use --docker-prefix)"
                            );
                        }
                        let file = self
                            .docker_compose
                            .clone()
                            .or_else(default_compose_file)
                            .ok_or_else(|| {
                                ChaosError::Config(
                                    "docker/compose.yaml not found: run from the repository, \
                                     pass --docker-compose FILE, or --docker-prefix for plain \
                                     containers"
                                        .into(),
                                )
                            })?;
                        let ports = (0..self.replicas)
                            .map(|m| {
                                std::env::var(format!("KVSET_PORT_KV{m}"))
                                    .ok()
                                    .and_then(|p| p.parse().ok())
                                    .unwrap_or(17379 + m as u16)
                            })
                            .collect();
                        (
                            DockerTopology::Compose {
                                file,
                                project: self.docker_project.clone(),
                            },
                            ports,
                        )
                    }
                };
                let server_args = match topology {
                    DockerTopology::Plain { .. } => DEFAULT_SERVER_ARGS
                        .iter()
                        .map(|a| a.to_string())
                        .chain(server_args.iter().cloned())
                        .collect(),
                    DockerTopology::Compose { .. } => Vec::new(),
                };
                BackendConfig::Docker(DockerConfig {
                    topology,
                    image: self.image.clone(),
                    replicas: self.replicas,
                    host_ports,
                    server_args,
                    rust_log: std::env::var("RUST_LOG")
                        .unwrap_or_else(|_| "info,openraft=warn".into()),
                    small_disks_mb: faults
                        .contains(&FaultKind::DiskFull)
                        .then_some(DISK_FULL_TMPFS_MB),
                })
            }
            BackendKind::Kubectl => BackendConfig::Kubectl(KubectlConfig {
                kubectl: self.kubectl.clone(),
                context: self.context.clone(),
                namespace: self.namespace.clone(),
                set: "kv".into(),
                claim: "data".into(),
                replicas: self.replicas,
                endpoints: (!self.endpoints.is_empty()).then(|| self.endpoints.clone()),
            }),
        };
        Ok(RunConfig {
            backend,
            duration: self.duration,
            seed,
            workload: WorkloadConfig {
                clients: self.clients,
                keys: self.keys,
                rate: self.rate,
                read_from: self.read_from,
                op_timeout: self.op_timeout,
                seed,
            },
            faults,
            schedule: ScheduleConfig {
                kinds: Vec::new(),
                gap: self.fault_gap,
                hold: self.fault_hold,
            },
            heal_timeout: self.heal_timeout,
            startup_timeout: self.startup_timeout,
            check_budget: self.check_budget,
            out_dir: out,
            keep_data: self.keep_data,
            reproduce: self.reproduce(seed),
            coordination: self.coordination.config(),
        })
    }
}

/// Runs `kvset-chaos run`: prints the Markdown report to stdout (progress goes to stderr) and
/// returns the exit code.
pub async fn run_cli(args: &RunArgs) -> u8 {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kvset-chaos run: {e}");
            return 2;
        }
    };
    let out = config.out_dir.clone();
    eprintln!(
        "kvset-chaos: seed {}, output in {}",
        config.seed,
        out.display()
    );
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // A second Ctrl-C gives up on an orderly end: kill the local clusters and exit.
    tokio::spawn(async {
        for _ in 0..2 {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
        }
        eprintln!(
            "kvset-chaos: interrupted twice: killing local clusters and exiting without checks \
             (docker containers carry the label kvset.chaos=<prefix>; remove them with docker rm)"
        );
        super::backend::process::kill_all_launchers();
        std::process::exit(130);
    });
    match super::run(config, interrupt).await {
        Ok(outcome) => {
            println!("{}", outcome.report.markdown());
            eprintln!(
                "kvset-chaos: {} (exit {}); report in {}",
                outcome.report.verdict.label(),
                outcome.exit_code(),
                out.join("report.md").display()
            );
            outcome.exit_code()
        }
        Err(e) => {
            eprintln!("kvset-chaos run: {e}");
            eprintln!("kvset-chaos: files of the run in {}", out.display());
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        run: RunArgs,
    }

    fn config_of(args: &[&str]) -> RunConfig {
        let mut argv = vec![
            "kvset-chaos",
            "--server-bin",
            "/nonexistent/kvset-server",
            "--bind-ip",
            "127.0.0.1",
            "--base-port",
            "20000",
            "--seed",
            "3",
        ];
        argv.extend_from_slice(args);
        Wrap::try_parse_from(argv).unwrap().run.config().unwrap()
    }

    fn server_args(config: &RunConfig) -> Vec<String> {
        match &config.backend {
            BackendConfig::Process(p) => p.server_args.clone(),
            other => panic!("not the process backend: {other:?}"),
        }
    }

    #[test]
    fn overlap_adds_the_compound_kinds_and_small_snapshots() {
        let plain = config_of(&["--faults", "pause"]);
        assert_eq!(plain.faults, vec![FaultKind::Pause]);
        assert!(server_args(&plain).is_empty());
        assert!(!plain.reproduce.contains("--overlap"));

        let overlap = config_of(&["--faults", "pause", "--overlap", "--server-arg=--x=1"]);
        let mut expected = vec![FaultKind::Pause];
        expected.extend(FaultKind::OVERLAP);
        assert_eq!(overlap.faults, expected);
        assert!(overlap.faults.contains(&FaultKind::KillAllWipeKv0));
        // The snapshot flags come first, so the user's flags can override them.
        let mut args: Vec<String> = OVERLAP_SERVER_ARGS.iter().map(|a| a.to_string()).collect();
        args.push("--x=1".into());
        assert_eq!(server_args(&overlap), args);
        assert!(overlap.reproduce.contains("--faults pause --overlap"));

        // Named alone, it runs alone.
        let kv0 = config_of(&["--faults", "kill-all-wipe-kv0"]);
        assert_eq!(kv0.faults, vec![FaultKind::KillAllWipeKv0]);
        assert!(server_args(&kv0).is_empty());
    }

    #[test]
    fn power_loss_puts_members_on_powerfs_and_excludes_disk_full() {
        let power = |c: &RunConfig| match &c.backend {
            BackendConfig::Process(p) => (p.power_disks, p.small_disks_mb),
            other => panic!("not the process backend: {other:?}"),
        };
        assert_eq!(power(&config_of(&["--faults", "pause"])), (false, None));
        for faults in ["power-loss", "power-loss-all", "pause,power-loss-all"] {
            assert_eq!(power(&config_of(&["--faults", faults])), (true, None));
        }
        assert_eq!(
            power(&config_of(&["--faults", "disk-full"])),
            (false, Some(DISK_FULL_TMPFS_MB))
        );
        let mut argv = vec!["kvset-chaos", "--server-bin", "/x", "--base-port", "20000"];
        argv.extend(["--faults", "disk-full,power-loss"]);
        let err = Wrap::try_parse_from(argv)
            .unwrap()
            .run
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("run them separately"), "{err}");
    }

    #[test]
    fn the_restart_backoff_cap_reaches_the_launcher_and_the_reproduce_line() {
        let backoff = |c: &RunConfig| match &c.backend {
            BackendConfig::Process(p) => p.restart_backoff_max,
            other => panic!("not the process backend: {other:?}"),
        };
        let plain = config_of(&["--faults", "pause"]);
        assert_eq!(backoff(&plain), None);
        assert!(!plain.reproduce.contains("--restart-backoff-max"));
        let soak = config_of(&["--faults", "pause", "--restart-backoff-max", "1s"]);
        assert_eq!(backoff(&soak), Some(Duration::from_secs(1)));
        assert!(
            soak.reproduce.contains("--restart-backoff-max 1s"),
            "{}",
            soak.reproduce
        );
    }

    #[test]
    fn durations_and_ranges_parse() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(
            parse_range("1s..3s").unwrap(),
            (Duration::from_secs(1), Duration::from_secs(3))
        );
        assert_eq!(
            parse_range("2s").unwrap(),
            (Duration::from_secs(2), Duration::from_secs(2))
        );
        assert!(parse_range("3s..1s").is_err());
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_duration(Duration::from_secs(60)), "60s");
    }
}
