//! kvset-powerfs: a FUSE filesystem that loses what a power cut loses.
//!
//! kvset acknowledges a write once a majority has it in its Raft log, which is only honest if
//! the log is on stable storage by then: a process crash leaves the page cache intact and
//! proves nothing about `fsync`. This filesystem makes the difference visible. A kvset member's
//! data directory is mounted on it; every write the member has not yet fsynced (file data,
//! truncates, and directory entries: creates, unlinks, renames, mkdirs) lives in the daemon's
//! memory; [`PowerFs::cut_power`] drops all of it, after which the mount shows only what was
//! durable. The harness kills the member first (`SIGKILL`), so the member never writes to the
//! state after the cut; together that is a power cut of one machine. [`model`] states exactly
//! which operations make what durable, and what is not modelled.
//!
//! Why FUSE: the kernel here has no device-mapper, so dm-flakey / dm-log-writes (which would
//! model the block device instead of the filesystem) are not available; FUSE needs only
//! `/dev/fuse` and root (or `fusermount3`). The `fuser` crate is built without libfuse, so
//! nothing beyond the Rust toolchain is needed to build it.
//!
//! Use it from a test with [`PowerFs::mount`] (mount point, backing directory), or from the
//! command line with the `kvset-powerfs MOUNTPOINT BACKING` binary and the control file:
//! `echo cut > MOUNTPOINT/.powerfs-control`.

pub mod model;

mod fuse;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use fuser::{BackgroundSession, Config, MountOption};

pub use model::{CutReport, FsError, Model};

/// Name of the hidden control file in the mount's root: write `cut` to it to cut the power.
pub const CONTROL_FILE: &str = ".powerfs-control";

/// Errors of mounting and unmounting.
#[derive(Debug, thiserror::Error)]
pub enum PowerFsError {
    #[error(transparent)]
    Model(#[from] FsError),
    #[error("mount kvset-powerfs on {}: {source} (needs /dev/fuse and root or fusermount3)", path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unmount {}: {source}", path.display())]
    Unmount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why FUSE mounts cannot work here, if they cannot: `/dev/fuse` missing or not root.
pub fn unavailable_reason() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some(
            "/dev/fuse does not exist (load the fuse module or run with --device /dev/fuse)".into(),
        );
    }
    // SAFETY: geteuid only reads the calling process's id.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (the tests mount with mount(2))".into());
    }
    None
}

/// A mounted power-loss filesystem. Dropping it unmounts.
pub struct PowerFs {
    model: Arc<Mutex<Model>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

impl PowerFs {
    /// Mounts the durable state in `backing` (an empty or missing directory starts empty) on
    /// the existing directory `mountpoint`.
    pub fn mount(mountpoint: &Path, backing: &Path) -> Result<Self, PowerFsError> {
        let model = Arc::new(Mutex::new(Model::open(backing)?));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("kvset-powerfs".into()),
            MountOption::Subtype("kvset-powerfs".into()),
            MountOption::NoAtime,
        ];
        let fs = fuse::PowerFs {
            model: model.clone(),
        };
        let session =
            fuser::spawn_mount(fs, mountpoint, &config).map_err(|source| PowerFsError::Mount {
                path: mountpoint.to_path_buf(),
                source,
            })?;
        Ok(Self {
            model,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Drops every change not made durable (see [`model`]). Kill the processes writing here
    /// first: a power cut stops them too.
    pub fn cut_power(&self) -> Result<CutReport, FsError> {
        self.model
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cut_power()
    }

    /// Bytes of file data written here and not yet fsynced.
    pub fn unsynced_bytes(&self) -> u64 {
        self.model
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unsynced_bytes()
    }

    /// Unmounts (the durable state stays in the backing directory; a later mount shows it).
    pub fn unmount(mut self) -> Result<(), PowerFsError> {
        self.unmount_inner()
    }

    /// Blocks until the filesystem is unmounted from outside (`umount MOUNTPOINT`).
    pub fn wait(mut self) -> Result<(), PowerFsError> {
        match self.session.take() {
            Some(s) => s.join().map_err(|source| PowerFsError::Unmount {
                path: self.mountpoint.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// Unmounts; a mount still busy right after its processes were killed (the kernel closes
    /// their files asynchronously) is retried for a few seconds, then detached lazily.
    fn unmount_inner(&mut self) -> Result<(), PowerFsError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes())
            .expect("a mount point path has no NUL");
        let started = std::time::Instant::now();
        loop {
            // SAFETY: umount2 with a valid NUL-terminated path.
            if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EBUSY) if started.elapsed() < std::time::Duration::from_secs(5) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Some(libc::EBUSY) => {
                    // SAFETY: as above.
                    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
                    // The session ends when the last user lets go; do not wait for it.
                    drop(session);
                    return Err(PowerFsError::Unmount {
                        path: self.mountpoint.clone(),
                        source: err,
                    });
                }
                // Not mounted (any more), or unmounted from outside: just join.
                _ => break,
            }
        }
        session.join().map_err(|source| PowerFsError::Unmount {
            path: self.mountpoint.clone(),
            source,
        })
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            eprintln!("kvset-powerfs: {e}");
        }
    }
}
