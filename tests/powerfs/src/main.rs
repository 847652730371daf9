//! `kvset-powerfs MOUNTPOINT BACKING`: mounts the power-loss filesystem in the foreground.
//!
//! For trying it by hand and for harnesses that are not Rust tests: cut the power with
//! `echo cut > MOUNTPOINT/.powerfs-control` (after killing whatever writes there), stop it
//! with `umount MOUNTPOINT` (or `fusermount3 -u`). The durable state stays in BACKING, and a
//! later run with the same BACKING shows it.

use std::path::PathBuf;

use anyhow::{bail, Context};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mountpoint, backing] = args.as_slice() else {
        bail!(
            "usage: kvset-powerfs MOUNTPOINT BACKING\n\
             Mounts a filesystem on MOUNTPOINT whose durable state is kept in BACKING and whose \
             unsynced writes live in memory; `echo cut > MOUNTPOINT/{}` drops them as a power \
             cut would.",
            kvset_powerfs::CONTROL_FILE
        );
    };
    let (mountpoint, backing) = (PathBuf::from(mountpoint), PathBuf::from(backing));
    let fs = kvset_powerfs::PowerFs::mount(&mountpoint, &backing)
        .with_context(|| format!("mounting {}", mountpoint.display()))?;
    eprintln!(
        "kvset-powerfs: {} mounted (durable state in {}); unmount to stop",
        mountpoint.display(),
        backing.display()
    );
    fs.wait()?;
    Ok(())
}
