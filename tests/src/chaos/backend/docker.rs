//! The `docker` backend: the StatefulSet topology in containers, with faults done by the Docker
//! CLI.
//!
//! Two ways to lay the topology out, with the same names inside the network:
//!
//! * **compose** (the default): `docker/compose.yaml` from the repository — containers `kv-0`..
//!   `kv-2` with hostnames `kv-N`, the network `kvset` with the aliases
//!   `kv-N.kv.default.svc.cluster.local` (the names a headless Service gives), volumes
//!   `kvset-data-kv-N`, client ports published on `127.0.0.1:17379..17381`. Members are brought
//!   up one at a time with `compose up -d --no-deps kv-N`, each ready before the next
//!   (OrderedReady), as `docker/cluster.sh up` does. Those names are global, so only one such
//!   cluster can run per Docker host: the backend refuses to start when `kv-0` already exists,
//!   and removes what it created at the end (`compose down --volumes`). The compose file passes
//!   no extra flags to the server, so `--server-arg` is not honoured in this mode (the members
//!   run the image's default timing).
//! * **plain** (`--docker-prefix P`): the same layout made with `docker run`, every name
//!   prefixed (`P-kv-N`, `P-net`, `P-data-kv-N`, label `kvset.chaos=P`) and client ports chosen
//!   free, so runs (and tests) can share a Docker host; `--server-arg` flags are passed to every
//!   member.
//!
//! Faults: kill -9 is `docker kill` followed by `docker start` (Docker's restart policy does not
//! restart a container killed through the API, so the harness plays the kubelet, see
//! `Backend::revive`); a graceful restart is `docker stop -t 30` (SIGTERM, up to 30 s) and
//! `docker start`; pause is `docker pause`
//! (the cgroup freezer, like SIGSTOP to every process of the container); a partition is
//! `docker network disconnect` (the member loses its peers *and* its published client port),
//! healed by `docker network connect` with the alias restored; a wipe removes the container and
//! its volume and recreates both. Logs of a container about to be removed are saved first, so
//! `logs/kv-N.log` covers the member's whole life.
//!
//! Scaling plays the StatefulSet controller: the desired size is written first to
//! `/record/replicas` on the volume every member shares (`KVSET_REPLICAS_FROM` points them there;
//! `docker cp` through a member's container, since the image has no shell), then the containers at or
//! above it are stopped highest ordinal first (`docker stop -t 30`: SIGTERM, and each leaves the
//! cluster as it stops), or the stopped ones are started in ordinal order, each a member before
//! the next. A scaled-away container is kept with its volume, as a PVC is kept; started again, it
//! rejoins as a new member. The scale returns once `kvsetctl members list`, run inside a member's
//! container, lists exactly kv-0 … kv-(N-1).
//!
//! # Full disks (`disk-full`, plain layout only)
//!
//! A disk-full fault needs each member's volume to be a small filesystem of its own that keeps
//! its contents while the member is down: the member stops on the storage failure, and must
//! find its data (and the filler) again when it starts. Docker's local driver mounts whatever
//! `mount(2)` can, so the obvious size-limited volume is `type=tmpfs,o=size=…`; but the driver
//! unmounts a volume with mount options when its last container stops, and a tmpfs loses
//! everything then: a member stopping on the full disk would come back wiped, and the disk no
//! longer full. So with `small_disks_mb` set, each member's volume is an ext4 filesystem in an
//! image file of that size (sparse, in a directory of the run's own under the temp dir) on a
//! loop device the harness attaches (`losetup`), made with its root owned by the image's user
//! (65532), and handed to Docker as `--driver local --opt type=ext4 --opt device=/dev/loopN`.
//! It is formatted again when the volume is created again (a wipe), and the loop devices and
//! images go at teardown. Root, `losetup` and `mkfs.ext4` are needed.
//!
//! The fault fills the filesystem from the host, through the volume's mount point
//! (`docker volume inspect`'s `Mountpoint`, mounted while the member runs), with a filler file:
//! the image has no shell to do it from inside. The member fails its next write and stops
//! (exit 74); the fault waits (bounded) until the container has stopped, and nothing restarts it
//! during the hold (a crash-looping pod would not get far either). At the end of the hold the
//! filler is removed by mounting the loop device on a private directory for the moment it takes
//! (the container is stopped, so the filesystem is mounted once only; through the volume's
//! mount point instead if the member never stopped), and the stopped member is started again.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    argv, fill_until_full, is_mount_point, is_root, member_ids_from_json, run_command,
    wait_for_membership, Backend, BackendError, MemberInfo, WaitReady, SCALE_TIMEOUT,
};
use crate::chaos::faults::FaultKind;

/// How the containers are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerTopology {
    /// `docker/compose.yaml` (or another file with the same service, network and volume names).
    Compose {
        /// The compose file.
        file: PathBuf,
        /// The compose project name (`-p`).
        project: String,
    },
    /// `docker run` with every name prefixed.
    Plain {
        /// The prefix.
        prefix: String,
    },
}

/// How to run the containers.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The layout.
    pub topology: DockerTopology,
    /// The image (`docker/build-image.sh` builds `kvset:dev`).
    pub image: String,
    /// Number of members (the compose file has 3).
    pub replicas: usize,
    /// Host port (on 127.0.0.1) each member's client port is published on.
    pub host_ports: Vec<u16>,
    /// Flags for every member (plain mode only).
    pub server_args: Vec<String>,
    /// `RUST_LOG` for the members.
    pub rust_log: String,
    /// Give each member's volume a filesystem of this many MiB (for `disk-full`; plain layout,
    /// root, `losetup` and `mkfs.ext4` needed).
    pub small_disks_mb: Option<u64>,
}

/// The user the image runs as (owner of a small disk's root).
const IMAGE_USER: &str = "65532:65532";

/// Where the members read the set's desired size (`KVSET_REPLICAS_FROM`, as docker/compose.yaml
/// sets it): on the volume they all share.
const DESIRED_SIZE_FILE: &str = "/record/replicas";

/// The file a disk-full fault fills a member's volume with.
const DISK_FILLER: &str = "chaos-disk-filler";

/// How long a member on a full disk gets to stop (its next write fails at once under load; its
/// shutdown grace is at most 30 s, `--stop-timeout`).
const STOP_ON_FULL_DISK: Duration = Duration::from_secs(30);

/// A member's small disk: an ext4 image file on a loop device.
#[derive(Debug, Clone)]
struct SmallDisk {
    image: PathBuf,
    device: String,
}

/// Where a compose file for the default layout is: `docker/compose.yaml` under the current
/// directory, else under the repository this harness was built from.
pub fn default_compose_file() -> Option<PathBuf> {
    let here = PathBuf::from("docker/compose.yaml");
    if here.exists() {
        return Some(here);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    Some(repo.join("docker/compose.yaml")).filter(|p| p.exists())
}

/// The containers, their network and volumes.
pub struct DockerBackend {
    config: DockerConfig,
    /// `docker compose` or `docker-compose`, found at start (compose mode only).
    compose: Mutex<Option<Vec<String>>>,
    started: Mutex<bool>,
    partitioned: Mutex<HashSet<usize>>,
    paused: Mutex<HashSet<usize>>,
    wiped: Mutex<HashSet<usize>>,
    /// Logs of containers removed by a wipe, by ordinal.
    saved_logs: Mutex<HashMap<usize, String>>,
    /// Small disks by ordinal (with `small_disks_mb`).
    disks: Mutex<HashMap<usize, SmallDisk>>,
}

impl DockerBackend {
    /// A backend for `config`; nothing is started yet.
    pub fn new(config: DockerConfig) -> DockerBackend {
        DockerBackend {
            config,
            compose: Mutex::new(None),
            started: Mutex::new(false),
            partitioned: Mutex::new(HashSet::new()),
            paused: Mutex::new(HashSet::new()),
            wiped: Mutex::new(HashSet::new()),
            saved_logs: Mutex::new(HashMap::new()),
            disks: Mutex::new(HashMap::new()),
        }
    }

    /// The container of member `m`.
    pub fn container(&self, m: usize) -> String {
        match &self.config.topology {
            DockerTopology::Compose { .. } => format!("kv-{m}"),
            DockerTopology::Plain { prefix } => format!("{prefix}-kv-{m}"),
        }
    }

    /// The members' network.
    pub fn network(&self) -> String {
        match &self.config.topology {
            DockerTopology::Compose { .. } => "kvset".to_string(),
            DockerTopology::Plain { prefix } => format!("{prefix}-net"),
        }
    }

    /// Member `m`'s data volume.
    pub fn volume(&self, m: usize) -> String {
        match &self.config.topology {
            DockerTopology::Compose { .. } => format!("kvset-data-kv-{m}"),
            DockerTopology::Plain { prefix } => format!("{prefix}-data-kv-{m}"),
        }
    }

    /// The volume every member shares for the cluster record (`/record`), which must outlive
    /// any one member's data volume (a wiped kv-0 then waits to be re-admitted).
    pub fn record_volume(&self) -> String {
        match &self.config.topology {
            DockerTopology::Compose { .. } => "kvset-cluster-record".to_string(),
            DockerTopology::Plain { prefix } => format!("{prefix}-cluster-record"),
        }
    }

    fn alias(m: usize) -> String {
        format!("kv-{m}.kv.default.svc.cluster.local")
    }

    fn docker(&self, args: &[&str]) -> Result<String, BackendError> {
        let mut full = vec!["docker"];
        full.extend_from_slice(args);
        let out = run_command(&argv(&full), &[])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn containers(&self, members: &[usize]) -> Vec<String> {
        members.iter().map(|&m| self.container(m)).collect()
    }

    fn compose_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("KVSET_IMAGE".to_string(), self.config.image.clone()),
            ("RUST_LOG".to_string(), self.config.rust_log.clone()),
        ];
        for (m, port) in self.config.host_ports.iter().enumerate() {
            env.push((format!("KVSET_PORT_KV{m}"), port.to_string()));
        }
        env
    }

    fn compose(&self, args: &[&str]) -> Result<(), BackendError> {
        let DockerTopology::Compose { file, project } = &self.config.topology else {
            return Err(BackendError::Setup("not a compose layout".into()));
        };
        let mut guard = self.compose.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let plugin = run_command(&argv(&["docker", "compose", "version"]), &[]).is_ok();
            let legacy = run_command(&argv(&["docker-compose", "version"]), &[]).is_ok();
            *guard = Some(match (plugin, legacy) {
                (true, _) => argv(&["docker", "compose"]),
                (false, true) => argv(&["docker-compose"]),
                (false, false) => {
                    return Err(BackendError::Setup(
                        "neither `docker compose` nor `docker-compose` is installed (or pass \
                         --docker-prefix to run plain containers)"
                            .into(),
                    ))
                }
            });
        }
        let mut line = guard.clone().unwrap_or_default();
        drop(guard);
        line.extend(argv(&["-p", project, "-f"]));
        line.push(file.display().to_string());
        line.extend(argv(args));
        run_command(&line, &self.compose_env()).map(|_| ())
    }

    /// Creates (or recreates) member `m`'s container, and its volume in plain mode, and starts it.
    fn create_member(&self, m: usize) -> Result<(), BackendError> {
        self.create_stopped_member(m)?;
        self.docker(&["start", &self.container(m)]).map(|_| ())
    }

    /// Creates member `m`'s container (and its volumes) without starting it.
    fn create_stopped_member(&self, m: usize) -> Result<(), BackendError> {
        match &self.config.topology {
            DockerTopology::Compose { .. } => {
                self.compose(&["up", "--no-start", "--no-deps", &format!("kv-{m}")])
            }
            DockerTopology::Plain { prefix } => {
                let label = format!("kvset.chaos={prefix}");
                let volume = self.volume(m);
                match self.config.small_disks_mb {
                    Some(mb) => self.create_small_volume(m, mb, &label)?,
                    None => {
                        self.docker(&["volume", "create", "--label", &label, &volume])?;
                    }
                }
                let record = self.record_volume();
                self.docker(&["volume", "create", "--label", &label, &record])?;
                let record_mount = format!("{record}:/record");
                let name = self.container(m);
                let hostname = format!("kv-{m}");
                let port = self
                    .config
                    .host_ports
                    .get(m)
                    .ok_or_else(|| BackendError::Setup(format!("no host port for kv-{m}")))?;
                let publish = format!("127.0.0.1:{port}:7379");
                let mount = format!("{volume}:/data");
                let envs = [
                    format!("POD_NAME=kv-{m}"),
                    "POD_NAMESPACE=default".to_string(),
                    "KVSET_SERVICE=kv".to_string(),
                    "KVSET_DATA_DIR=/data".to_string(),
                    "KVSET_CLUSTER_RECORD=file:/record/cluster-record.json".to_string(),
                    format!("KVSET_REPLICAS_FROM=file:{DESIRED_SIZE_FILE}"),
                    "NO_COLOR=1".to_string(),
                    format!("RUST_LOG={}", self.config.rust_log),
                ];
                let network = self.network();
                let alias = Self::alias(m);
                let mut args: Vec<&str> = vec![
                    "create",
                    "--name",
                    &name,
                    "--hostname",
                    &hostname,
                    "--label",
                    &label,
                    "--network",
                    &network,
                    "--network-alias",
                    &alias,
                    "-v",
                    &mount,
                    "-v",
                    &record_mount,
                    "-p",
                    &publish,
                    "--read-only",
                    "--tmpfs",
                    "/tmp",
                    "--cap-drop",
                    "ALL",
                    "--security-opt",
                    "no-new-privileges:true",
                    "--stop-timeout",
                    "30",
                ];
                for e in &envs {
                    args.push("-e");
                    args.push(e);
                }
                args.push(&self.config.image);
                args.extend(self.config.server_args.iter().map(String::as_str));
                self.docker(&args).map(|_| ())
            }
        }
    }

    /// Creates member `m`'s volume on a freshly formatted small disk (attaching the loop
    /// device the first time); an existing volume is kept as it is.
    fn create_small_volume(&self, m: usize, mb: u64, label: &str) -> Result<(), BackendError> {
        let volume = self.volume(m);
        if self
            .docker(&["volume", "inspect", "--format", "{{.Name}}", &volume])
            .is_ok()
        {
            return Ok(());
        }
        let disk = self.small_disk(m, mb)?;
        run_command(
            &argv(&[
                "mkfs.ext4",
                "-q",
                "-F",
                "-E",
                &format!("root_owner={IMAGE_USER}"),
                &disk.device,
            ]),
            &[],
        )?;
        self.docker(&[
            "volume",
            "create",
            "--label",
            label,
            "--driver",
            "local",
            "--opt",
            "type=ext4",
            "--opt",
            &format!("device={}", disk.device),
            &volume,
        ])
        .map(|_| ())
    }

    /// Member `m`'s small disk, its image made and its loop device attached on first use.
    fn small_disk(&self, m: usize, mb: u64) -> Result<SmallDisk, BackendError> {
        let mut disks = self.disks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = disks.get(&m) {
            return Ok(d.clone());
        }
        let dir = self.disk_dir();
        fs::create_dir_all(&dir)
            .map_err(|e| BackendError::io(format!("create {}", dir.display()), e))?;
        let image = dir.join(format!("kv-{m}.ext4"));
        fs::File::create(&image)
            .and_then(|f| f.set_len(mb << 20))
            .map_err(|e| BackendError::io(format!("create {}", image.display()), e))?;
        let out = run_command(
            &argv(&["losetup", "--find", "--show", &image.display().to_string()]),
            &[],
        )?;
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let disk = SmallDisk { image, device };
        disks.insert(m, disk.clone());
        Ok(disk)
    }

    /// Where the small disks' images are: a directory of this run's own.
    fn disk_dir(&self) -> PathBuf {
        let prefix = match &self.config.topology {
            DockerTopology::Plain { prefix } => prefix.as_str(),
            DockerTopology::Compose { project, .. } => project.as_str(),
        };
        std::env::temp_dir().join(format!("{prefix}-disks"))
    }

    /// Detaches the loop devices and deletes the images (after the volumes are gone).
    fn remove_small_disks(&self) {
        let disks: Vec<SmallDisk> = self
            .disks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, d)| d)
            .collect();
        for d in &disks {
            let _ = run_command(&argv(&["losetup", "--detach", &d.device]), &[]);
            let _ = fs::remove_file(&d.image);
        }
        if !disks.is_empty() {
            let _ = fs::remove_dir(self.disk_dir());
        }
    }

    /// Where Docker mounts member `m`'s volume on this host while a container uses it.
    fn volume_mountpoint(&self, m: usize) -> Result<PathBuf, BackendError> {
        self.docker(&[
            "volume",
            "inspect",
            "--format",
            "{{.Mountpoint}}",
            &self.volume(m),
        ])
        .map(PathBuf::from)
    }

    fn running(&self, m: usize) -> bool {
        self.docker(&[
            "container",
            "inspect",
            "--format",
            "{{.State.Running}}",
            &self.container(m),
        ])
        .is_ok_and(|s| s == "true")
    }

    /// Removes the filler from member `m`'s stopped small disk, mounting it on a private
    /// directory for the moment.
    fn free_stopped_disk(&self, m: usize) -> Result<(), BackendError> {
        let device = self
            .disks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&m)
            .map(|d| d.device.clone())
            .ok_or_else(|| BackendError::Setup(format!("kv-{m} has no small disk")))?;
        let dir = self.disk_dir().join(format!("kv-{m}.mnt"));
        fs::create_dir_all(&dir)
            .map_err(|e| BackendError::io(format!("create {}", dir.display()), e))?;
        let mnt = dir.display().to_string();
        run_command(&argv(&["mount", "-t", "ext4", &device, &mnt]), &[])?;
        let removed = remove_if_present(&dir.join(DISK_FILLER));
        let unmounted = run_command(&argv(&["umount", &mnt]), &[]);
        let _ = fs::remove_dir(&dir);
        removed?;
        unmounted.map(|_| ())
    }

    /// Writes the set's desired size (the StatefulSet's `spec.replicas`) to the volume every
    /// member mounts at `/record`, where `KVSET_REPLICAS_FROM` points them. The image has no shell
    /// to write it from inside, so it is copied in through the container of the lowest member
    /// that has one (it may be stopped; `docker cp` writes into its volume all the same).
    fn write_desired(&self, replicas: usize) -> Result<(), BackendError> {
        let via = (0..self.config.replicas)
            .find(|&m| self.exists(&self.container(m)))
            .ok_or_else(|| {
                BackendError::Setup("no member container to write the desired size through".into())
            })?;
        let dir = tempfile::Builder::new()
            .prefix("kvset-chaos-replicas-")
            .tempdir()
            .map_err(|e| BackendError::io("create a temp dir", e))?;
        let file = dir.path().join("replicas");
        fs::write(&file, format!("{replicas}\n"))
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&file, fs::Permissions::from_mode(0o644))
            })
            .map_err(|e| BackendError::io(format!("write {}", file.display()), e))?;
        let target = format!("{}:{DESIRED_SIZE_FILE}", self.container(via));
        self.docker(&["cp", &file.display().to_string(), &target])
            .map(|_| ())
    }

    /// The membership as the lowest running member below `below` reports it (`kvsetctl members
    /// list` inside its container), None when none answers.
    fn member_ids(&self, below: usize) -> Option<Vec<u64>> {
        (0..below).filter(|&m| self.running(m)).find_map(|m| {
            self.docker(&[
                "exec",
                &self.container(m),
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
    }

    fn exists(&self, container: &str) -> bool {
        self.docker(&["container", "inspect", "--format", "{{.Id}}", container])
            .is_ok()
    }

    fn save_logs(&self, m: usize) {
        if let Ok(out) = run_command(
            &argv(&["docker", "logs", "--timestamps", &self.container(m)]),
            &[],
        ) {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let mut saved = self.saved_logs.lock().unwrap_or_else(|p| p.into_inner());
            let entry = saved.entry(m).or_default();
            entry.push_str(&text);
            entry.push_str("---- kvset-chaos: container removed (volume wiped) ----\n");
        }
    }

    fn remove_all(&self) -> Result<(), BackendError> {
        let mut errors = Vec::new();
        match &self.config.topology {
            DockerTopology::Compose { .. } => {
                if let Err(e) = self.compose(&["down", "--volumes", "--timeout", "5"]) {
                    errors.push(e.to_string());
                }
            }
            DockerTopology::Plain { .. } => {
                for m in 0..self.config.replicas {
                    let c = self.container(m);
                    if self.exists(&c) {
                        if let Err(e) = self.docker(&["rm", "-f", "-v", &c]) {
                            errors.push(e.to_string());
                        }
                    }
                    let _ = self.docker(&["volume", "rm", "-f", &self.volume(m)]);
                }
                let _ = self.docker(&["volume", "rm", "-f", &self.record_volume()]);
                let _ = self.docker(&["network", "rm", &self.network()]);
            }
        }
        self.remove_small_disks();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(BackendError::Setup(errors.join("; ")))
        }
    }
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn members(&self) -> Vec<MemberInfo> {
        (0..self.config.replicas)
            .map(|m| MemberInfo {
                name: format!("kv-{m}"),
                endpoint: format!(
                    "127.0.0.1:{}",
                    self.config.host_ports.get(m).copied().unwrap_or(0)
                ),
            })
            .collect()
    }

    fn describe(&self) -> String {
        match &self.config.topology {
            DockerTopology::Compose { file, project } => format!(
                "docker compose -p {project} -f {} (image {}, containers kv-0..kv-{}, network {})",
                file.display(),
                self.config.image,
                self.config.replicas.saturating_sub(1),
                self.network()
            ),
            DockerTopology::Plain { prefix } => format!(
                "docker run (image {}, containers {prefix}-kv-0..{}, network {}, server args: {})",
                self.config.image,
                self.config.replicas.saturating_sub(1),
                self.network(),
                if self.config.server_args.is_empty() {
                    "none".to_string()
                } else {
                    self.config.server_args.join(" ")
                }
            ),
        }
    }

    fn unsupported(&self, kind: FaultKind) -> Option<String> {
        match kind {
            FaultKind::DiskFull => match &self.config.topology {
                DockerTopology::Compose { .. } => Some(
                    "docker/compose.yaml's volumes have no size limit; pass --docker-prefix \
                     (plain containers get a small filesystem per volume)"
                        .into(),
                ),
                DockerTopology::Plain { .. } if self.config.small_disks_mb.is_none() => {
                    Some("the members' volumes are not small filesystems".into())
                }
                DockerTopology::Plain { .. } if !is_root() => Some(
                    "a small filesystem per volume is an ext4 image on a loop device, which \
                     needs root"
                        .into(),
                ),
                DockerTopology::Plain { .. } => [("losetup", "--version"), ("mkfs.ext4", "-V")]
                    .into_iter()
                    .find(|(tool, flag)| run_command(&argv(&[*tool, *flag]), &[]).is_err())
                    .map(|(tool, _)| {
                        format!("{tool} is not installed (small volumes are ext4 on loop devices)")
                    }),
            },
            FaultKind::PowerLoss | FaultKind::PowerLossAll => Some(
                "a power cut needs each member's volume on kvset-powerfs, a FUSE filesystem the \
                 harness serves; a container's volume is mounted by Docker; use --backend process"
                    .into(),
            ),
            _ => None,
        }
    }

    fn revives_on_its_own(&self) -> bool {
        false
    }

    fn revive(&self, members: &[usize]) -> Result<(), BackendError> {
        let names = self.containers(members);
        let mut start = vec!["start"];
        start.extend(names.iter().map(String::as_str));
        self.docker(&start).map(|_| ())
    }

    fn start(&self, wait_ready: &WaitReady<'_>) -> Result<(), BackendError> {
        self.docker(&["version", "--format", "{{.Server.Version}}"])
            .map_err(|e| BackendError::Setup(format!("no Docker Engine answers: {e}")))?;
        self.docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &self.config.image,
        ])
        .map_err(|_| {
            BackendError::Setup(format!(
                "image {} not found: build it with docker/build-image.sh --tag {}",
                self.config.image, self.config.image
            ))
        })?;
        if let Some(c) = (0..self.config.replicas)
            .map(|m| self.container(m))
            .find(|c| self.exists(c))
        {
            return Err(BackendError::Setup(format!(
                "container {c} already exists: another kvset cluster runs on this Docker host \
                 (stop it, e.g. docker/cluster.sh down --volumes, or pass --docker-prefix for an \
                 isolated cluster)"
            )));
        }
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = true;
        if let DockerTopology::Plain { prefix } = &self.config.topology {
            let label = format!("kvset.chaos={prefix}");
            self.docker(&["network", "create", "--label", &label, &self.network()])?;
        }
        for m in 0..self.config.replicas {
            self.create_stopped_member(m)?;
            if m == 0 {
                // The members follow the set's size from their first moment.
                self.write_desired(self.config.replicas)?;
            }
            self.docker(&["start", &self.container(m)])?;
            wait_ready(m).map_err(|why| {
                BackendError::Setup(format!("{} did not become ready: {why}", self.container(m)))
            })?;
        }
        Ok(())
    }

    fn scale(&self, replicas: usize) -> Result<(), BackendError> {
        let full = self.config.replicas;
        if replicas == 0 || replicas > full {
            return Err(BackendError::Setup(format!(
                "the docker topology scales between 1 and its {full} members, not to {replicas}"
            )));
        }
        // The size first, as the StatefulSet controller changes spec.replicas before it deletes
        // pods: a member stopped below reads it again on SIGTERM and leaves the cluster.
        self.write_desired(replicas)?;
        for m in (replicas..full).rev() {
            if self.running(m) {
                self.docker(&["stop", "--time", "30", &self.container(m)])?;
            }
        }
        // Up: in ordinal order, each one a member before the next starts (OrderedReady). The
        // containers of members scaled away earlier are still there, with their volumes (like
        // PVCs): each comes back as a new member.
        for m in 0..replicas {
            if !self.running(m) {
                self.docker(&["start", &self.container(m)])?;
                wait_for_membership("docker", m + 1, SCALE_TIMEOUT, || {
                    self.member_ids(m + 1).map(|ids| {
                        // Members above m may still be leaving; only kv-0..kv-m matter here.
                        ids.into_iter().filter(|&id| id <= m as u64).collect()
                    })
                })?;
            }
        }
        wait_for_membership("docker", replicas, SCALE_TIMEOUT, || {
            self.member_ids(replicas)
        })
    }

    fn crash(&self, members: &[usize]) -> Result<(), BackendError> {
        let names = self.containers(members);
        let mut kill = vec!["kill", "--signal", "KILL"];
        kill.extend(names.iter().map(String::as_str));
        self.docker(&kill).map(|_| ())
    }

    fn restart(&self, member: usize) -> Result<(), BackendError> {
        self.docker(&["stop", "--time", "30", &self.container(member)])
            .map(|_| ())
    }

    fn pause(&self, member: usize) -> Result<(), BackendError> {
        self.docker(&["pause", &self.container(member)])?;
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(member);
        Ok(())
    }

    fn resume(&self, member: usize) -> Result<(), BackendError> {
        self.docker(&["unpause", &self.container(member)])?;
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&member);
        Ok(())
    }

    fn partition(&self, member: usize) -> Result<(), BackendError> {
        self.docker(&[
            "network",
            "disconnect",
            "--force",
            &self.network(),
            &self.container(member),
        ])?;
        self.partitioned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(member);
        Ok(())
    }

    fn heal_partition(&self, member: usize) -> Result<(), BackendError> {
        self.docker(&[
            "network",
            "connect",
            "--alias",
            &Self::alias(member),
            &self.network(),
            &self.container(member),
        ])?;
        self.partitioned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&member);
        Ok(())
    }

    fn fill_disk(&self, member: usize) -> Result<(), BackendError> {
        if self.config.small_disks_mb.is_none() {
            return Err(self.disk_full_unsupported());
        }
        let dir = self.volume_mountpoint(member)?;
        if !is_mount_point(&dir) {
            return Err(BackendError::Setup(format!(
                "{} is not mounted (is {} running?); refusing to fill the disk it is on",
                dir.display(),
                self.container(member)
            )));
        }
        let path = dir.join(DISK_FILLER);
        fill_until_full(&path)
            .map_err(|e| BackendError::io(format!("fill {}", path.display()), e))?;
        // The member fails its next write and stops within its shutdown grace; wait for that
        // (bounded), so that freeing finds it stopped and starts it again.
        let deadline = Instant::now() + STOP_ON_FULL_DISK;
        while self.running(member) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn free_disk(&self, member: usize) -> Result<(), BackendError> {
        if self.config.small_disks_mb.is_none() {
            return Err(self.disk_full_unsupported());
        }
        let dir = self.volume_mountpoint(member)?;
        if self.running(member) && is_mount_point(&dir) {
            remove_if_present(&dir.join(DISK_FILLER))?;
        }
        // Stopped on the full disk (or it stopped meanwhile): free it and start it again.
        if !self.running(member) {
            self.free_stopped_disk(member)?;
            self.docker(&["start", &self.container(member)])?;
        }
        Ok(())
    }

    fn wipe_begin(&self, member: usize) -> Result<(), BackendError> {
        let c = self.container(member);
        self.wiped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(member);
        self.docker(&["kill", "--signal", "KILL", &c])?;
        self.save_logs(member);
        self.docker(&["rm", "-f", &c])?;
        self.docker(&["volume", "rm", &self.volume(member)])
            .map(|_| ())
    }

    fn wipe_end(&self, member: usize) -> Result<(), BackendError> {
        self.create_member(member)?;
        self.wiped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&member);
        Ok(())
    }

    fn heal_all(&self) -> Result<(), BackendError> {
        let paused = members_in(&self.paused);
        for m in paused {
            let _ = self.resume(m);
        }
        let cut = members_in(&self.partitioned);
        for m in cut {
            let _ = self.heal_partition(m);
        }
        let wiped = members_in(&self.wiped);
        for m in wiped {
            let _ = self.wipe_end(m);
        }
        for m in 0..self.config.replicas {
            let c = self.container(m);
            let running = self
                .docker(&["container", "inspect", "--format", "{{.State.Running}}", &c])
                .map(|s| s == "true")
                .unwrap_or(false);
            if !running {
                let _ = self.docker(&["start", &c]);
            }
        }
        Ok(())
    }

    fn collect_logs(&self, dir: &Path) -> Result<Vec<PathBuf>, BackendError> {
        fs::create_dir_all(dir)
            .map_err(|e| BackendError::io(format!("create {}", dir.display()), e))?;
        let saved = self
            .saved_logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut written = Vec::new();
        for m in 0..self.config.replicas {
            let mut text = saved.get(&m).cloned().unwrap_or_default();
            match run_command(
                &argv(&["docker", "logs", "--timestamps", &self.container(m)]),
                &[],
            ) {
                Ok(out) => {
                    text.push_str(&String::from_utf8_lossy(&out.stdout));
                    text.push_str(&String::from_utf8_lossy(&out.stderr));
                }
                Err(e) => text.push_str(&format!("kvset-chaos: cannot read the logs: {e}\n")),
            }
            let path = dir.join(format!("kv-{m}.log"));
            fs::write(&path, text)
                .map_err(|e| BackendError::io(format!("write {}", path.display()), e))?;
            written.push(path);
        }
        Ok(written)
    }

    fn teardown(&self) -> Result<(), BackendError> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if !*started {
            return Ok(());
        }
        *started = false;
        drop(started);
        // Thaw first: a paused container cannot be stopped.
        let paused: Vec<usize> = self
            .paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for m in paused {
            let _ = self.docker(&["unpause", &self.container(m)]);
        }
        self.remove_all()
    }
}

/// Removes `path`; one that is not there is fine.
fn remove_if_present(path: &Path) -> Result<(), BackendError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BackendError::io(format!("remove {}", path.display()), e)),
    }
}

/// The members in a fault set, copied out so the lock is not held while each is healed.
fn members_in(set: &Mutex<HashSet<usize>>) -> Vec<usize> {
    set.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .copied()
        .collect()
}

impl Drop for DockerBackend {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}
