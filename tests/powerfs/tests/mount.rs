//! The filesystem through the kernel: real `open`/`write`/`fsync`/`rename` system calls on a
//! mounted kvset-powerfs, then a power cut, then what is left.
//!
//! Needs root and `/dev/fuse`; without them each test prints SKIPPED, and fails under `CI=true`
//! (CI runs as root with FUSE available).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use kvset_powerfs::{PowerFs, CONTROL_FILE};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A fresh mount, or None (skipped) where FUSE cannot work.
fn mounted() -> Option<(tempfile::TempDir, PowerFs)> {
    if let Some(why) = kvset_powerfs::unavailable_reason() {
        assert!(!in_ci(), "kvset-powerfs tests need FUSE under CI: {why}");
        eprintln!("SKIPPED: {why}; under CI=true this fails");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let fs = PowerFs::mount(&mnt, &dir.path().join("backing")).expect("mount");
    Some((dir, fs))
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

fn write_file(path: &Path, data: &[u8], fsync: bool) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
    if fsync {
        f.sync_data().unwrap();
    }
}

#[test]
fn unsynced_data_is_lost_and_fsynced_data_survives() {
    let Some((_dir, fs)) = mounted() else { return };
    let m = fs.mountpoint().to_path_buf();
    write_file(&m.join("synced"), b"kept", true);
    write_file(&m.join("unsynced"), b"lost", false);
    sync_dir(&m);
    // Appends after the syncs: visible now, gone after the cut.
    OpenOptions::new()
        .append(true)
        .open(m.join("synced"))
        .unwrap()
        .write_all(b" and more")
        .unwrap();
    assert_eq!(fs::read(m.join("synced")).unwrap(), b"kept and more");
    assert!(fs.unsynced_bytes() > 0);

    let report = fs.cut_power().unwrap();
    assert!(report.dropped_pages >= 2, "{report:?}");
    assert_eq!(fs::read(m.join("synced")).unwrap(), b"kept");
    assert_eq!(
        fs::read(m.join("unsynced")).unwrap(),
        b"",
        "name durable, data not"
    );
    assert_eq!(fs.unsynced_bytes(), 0);
}

#[test]
fn a_new_file_needs_its_directory_fsynced() {
    let Some((_dir, fs)) = mounted() else { return };
    let m = fs.mountpoint().to_path_buf();
    fs::create_dir(m.join("sub")).unwrap();
    write_file(&m.join("sub/a"), b"data", true);
    sync_dir(&m.join("sub")); // "sub" itself is not durable in the root yet.
    write_file(&m.join("b"), b"data", true);
    fs.cut_power().unwrap();
    assert!(
        !m.join("b").exists(),
        "fsync(file) must not make its name durable"
    );
    assert!(
        !m.join("sub").exists(),
        "mkdir without fsync of the parent is lost"
    );

    fs::create_dir(m.join("sub")).unwrap();
    write_file(&m.join("sub/a"), b"data", true);
    write_file(&m.join("b"), b"data", true);
    sync_dir(&m.join("sub"));
    sync_dir(&m);
    fs.cut_power().unwrap();
    assert_eq!(fs::read(m.join("b")).unwrap(), b"data");
    assert_eq!(fs::read(m.join("sub/a")).unwrap(), b"data");
    let names: Vec<_> = fs::read_dir(&m)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "the control file is hidden: {names:?}");
}

#[test]
fn rename_over_a_file_is_durable_with_its_directory() {
    let Some((_dir, fs)) = mounted() else { return };
    let m = fs.mountpoint().to_path_buf();
    write_file(&m.join("current"), b"old", true);
    sync_dir(&m);

    write_file(&m.join("current.tmp"), b"new", true);
    fs::rename(m.join("current.tmp"), m.join("current")).unwrap();
    assert_eq!(fs::read(m.join("current")).unwrap(), b"new");
    fs.cut_power().unwrap();
    assert_eq!(
        fs::read(m.join("current")).unwrap(),
        b"old",
        "rename not synced"
    );
    assert!(!m.join("current.tmp").exists());

    write_file(&m.join("current.tmp"), b"new", true);
    fs::rename(m.join("current.tmp"), m.join("current")).unwrap();
    sync_dir(&m);
    fs.cut_power().unwrap();
    assert_eq!(fs::read(m.join("current")).unwrap(), b"new");
    assert!(!m.join("current.tmp").exists());
}

#[test]
fn unlink_and_truncate_come_back_unless_synced() {
    let Some((_dir, fs)) = mounted() else { return };
    let m = fs.mountpoint().to_path_buf();
    let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    write_file(&m.join("big"), &big, true);
    write_file(&m.join("doomed"), b"x", true);
    sync_dir(&m);
    fs::remove_file(m.join("doomed")).unwrap();
    let f = OpenOptions::new().write(true).open(m.join("big")).unwrap();
    f.set_len(5000).unwrap();
    assert_eq!(fs::metadata(m.join("big")).unwrap().len(), 5000);
    drop(f);
    fs.cut_power().unwrap();
    assert_eq!(fs::read(m.join("big")).unwrap(), big);
    assert_eq!(fs::read(m.join("doomed")).unwrap(), b"x");

    let f = OpenOptions::new().write(true).open(m.join("big")).unwrap();
    f.set_len(5000).unwrap();
    f.sync_all().unwrap();
    fs::remove_file(m.join("doomed")).unwrap();
    sync_dir(&m);
    fs.cut_power().unwrap();
    assert_eq!(fs::read(m.join("big")).unwrap(), &big[..5000]);
    assert!(!m.join("doomed").exists());
}

#[test]
fn the_control_file_cuts_and_a_remount_shows_the_durable_state() {
    let Some((dir, fs)) = mounted() else { return };
    let m = fs.mountpoint().to_path_buf();
    write_file(&m.join("kept"), b"kept", true);
    sync_dir(&m);
    write_file(&m.join("kept"), b"overwritten", false);
    fs::write(m.join(CONTROL_FILE), "cut\n").unwrap();
    assert_eq!(fs::read(m.join("kept")).unwrap(), b"kept");
    assert!(fs::write(m.join(CONTROL_FILE), "nonsense").is_err());

    write_file(&m.join("kept"), b"overwritten", false);
    fs.unmount().unwrap();
    let _fs = PowerFs::mount(&m, &dir.path().join("backing")).unwrap();
    assert_eq!(
        fs::read(m.join("kept")).unwrap(),
        b"kept",
        "remount shows durable state"
    );
}
