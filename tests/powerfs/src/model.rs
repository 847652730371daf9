//! The durability model: what a file system has promised to keep, and what it has not yet.
//!
//! Two states live side by side. The **durable** state is what survives a power cut: the data
//! of each file as of its last `fsync`/`fdatasync` (stored in `BACKING/objects/<id>`), and the
//! entries of each directory as of its last directory `fsync` (kept in memory and written to
//! `BACKING/manifest.json` after every change). The **live** state is what programs see: the
//! durable state plus every change made since, held in memory: dirty 4 KiB pages and a
//! truncation watermark per file, and the full entry table of each directory.
//!
//! Rules, the strict reading of POSIX that careful storage code has to be written against:
//!
//! - `fsync`/`fdatasync` of a file makes that file's *data and size* durable, nothing else. It
//!   does not make the file's name durable: a new file survives a power cut only once its
//!   parent directory has been fsynced after the file was created (ext4 usually commits the
//!   name along with the data in practice; this model does not, on purpose).
//! - `fsync` of a directory makes that directory's entry table durable as it is now: names
//!   created, removed and renamed into or out of it. A directory made durable in its parent
//!   starts with no durable entries of its own until it is fsynced itself.
//! - A rename is durable per directory: within one directory (the common write-temp-then-rename
//!   pattern) one directory fsync covers it atomically. Across directories, fsyncing only the
//!   target keeps both names after a cut and fsyncing only the source keeps neither; journaling
//!   file systems commit a rename as one transaction, so this is stricter than them.
//! - [`Model::cut_power`] drops everything not durable: every unsynced write, truncate, create,
//!   unlink, mkdir and rename. Objects no durable name reaches are deleted.
//!
//! What it does not model: partial survival of unsynced writes (a real power cut may keep some
//! of them, in any order, and tear a write at sector boundaries; here all of them are lost,
//! which is the worst case for lost data but never produces a torn or reordered write);
//! durability of metadata other than size (mode, owner and times are whatever they were when
//! the name became durable); hard links, symlinks and special files (refused); and the backing
//! directory's own durability (it is written without fsync: it stands for the disk, and the
//! test host is not expected to lose power).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The granularity of unsynced data in memory.
pub const PAGE: u64 = 4096;
/// The root directory's id (FUSE's root inode number).
pub const ROOT: u64 = 1;
/// Ids below this are reserved (the FUSE layer's control file uses one).
const FIRST_ID: u64 = 16;
const MANIFEST: &str = "manifest.json";
const MANIFEST_FORMAT: u32 = 1;

/// An operation the model refuses, or a failure of the backing directory.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument")]
    Invalid,
    #[error("operation not supported by kvset-powerfs")]
    Unsupported,
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("backing dir {}: {detail}", path.display())]
    Backing { path: PathBuf, detail: String },
}

impl FsError {
    /// The errno a FUSE reply carries for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid => libc::EINVAL,
            FsError::Unsupported => libc::EPERM,
            FsError::Io { .. } | FsError::Backing { .. } => libc::EIO,
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// File or directory: the only kinds the model has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
}

/// What `stat` shows of a node.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub id: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// Metadata kept with a durable name.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Meta {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
}

/// A live node.
#[derive(Debug)]
struct Node {
    meta: Meta,
    nlink: u32,
    /// Open handles: a file unlinked while open lives on until the last one is released.
    open: u32,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Live size (files).
    size: u64,
    /// How much of the object file is still this file's content (files); the rest of the file
    /// is zeros unless a dirty page covers it. Never above `size` nor the object's length.
    base_valid: u64,
    /// Pages written since the last fsync, by page index (files). Bytes past `size` are zero.
    dirty: BTreeMap<u64, Box<[u8]>>,
    /// Live entries (directories).
    entries: BTreeMap<OsString, u64>,
}

impl Node {
    fn new(meta: Meta, size: u64) -> Self {
        let now = SystemTime::now();
        Self {
            meta,
            nlink: if meta.kind == Kind::Dir { 2 } else { 1 },
            open: 0,
            mtime: now,
            ctime: now,
            size,
            base_valid: size,
            dirty: BTreeMap::new(),
            entries: BTreeMap::new(),
        }
    }

    fn touch(&mut self) {
        let now = SystemTime::now();
        self.mtime = now;
        self.ctime = now;
    }
}

/// The durable state as stored in `manifest.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    next_id: u64,
    meta: BTreeMap<u64, Meta>,
    /// Directory id -> (name bytes, child id).
    dirs: BTreeMap<u64, Vec<(Vec<u8>, u64)>>,
}

/// What a power cut threw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Dirty pages dropped (unsynced file data).
    pub dropped_pages: u64,
    /// Directories whose live entries differed from their durable ones.
    pub dirs_reverted: u64,
    /// Live nodes that had no durable name and are gone.
    pub nodes_lost: u64,
}

/// The live and the durable state of one file system (see the module docs).
#[derive(Debug)]
pub struct Model {
    backing: PathBuf,
    objects_dir: PathBuf,
    nodes: HashMap<u64, Node>,
    durable_meta: BTreeMap<u64, Meta>,
    durable_dirs: BTreeMap<u64, BTreeMap<OsString, u64>>,
    /// Ids with an object file.
    objects: BTreeSet<u64>,
    /// Open object files, by id.
    files: HashMap<u64, File>,
    /// Open handles (handle -> node); a power cut invalidates all of them.
    handles: HashMap<u64, u64>,
    next_handle: u64,
    next_id: u64,
    cuts: u64,
}

impl Model {
    /// Opens the durable state in `backing` (created when missing; it must be empty or hold a
    /// state this model wrote) and shows exactly that.
    pub fn open(backing: &Path) -> Result<Self, FsError> {
        std::fs::create_dir_all(backing).map_err(io("create", backing))?;
        let objects_dir = backing.join("objects");
        let manifest_path = backing.join(MANIFEST);
        let manifest = match std::fs::read(&manifest_path) {
            Ok(bytes) => {
                let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| FsError::Backing {
                    path: backing.to_path_buf(),
                    detail: format!("{MANIFEST} does not parse: {e}"),
                })?;
                if m.format != MANIFEST_FORMAT {
                    return Err(FsError::Backing {
                        path: backing.to_path_buf(),
                        detail: format!(
                            "{MANIFEST} has format {}, this build reads {MANIFEST_FORMAT}",
                            m.format
                        ),
                    });
                }
                m
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let other = std::fs::read_dir(backing)
                    .map_err(io("list", backing))?
                    .filter_map(Result::ok)
                    .any(|e| e.file_name() != "objects");
                if other {
                    return Err(FsError::Backing {
                        path: backing.to_path_buf(),
                        detail: format!(
                            "not empty and no {MANIFEST}: give an empty directory or one \
                             kvset-powerfs wrote"
                        ),
                    });
                }
                // SAFETY: geteuid/getegid only read the calling process's ids.
                let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
                let mut m = Manifest {
                    format: MANIFEST_FORMAT,
                    next_id: FIRST_ID,
                    ..Manifest::default()
                };
                m.meta.insert(
                    ROOT,
                    Meta {
                        kind: Kind::Dir,
                        perm: 0o755,
                        uid,
                        gid,
                    },
                );
                m.dirs.insert(ROOT, Vec::new());
                m
            }
            Err(e) => return Err(io("read", &manifest_path)(e)),
        };
        std::fs::create_dir_all(&objects_dir).map_err(io("create", &objects_dir))?;
        let mut objects = BTreeSet::new();
        for entry in std::fs::read_dir(&objects_dir).map_err(io("list", &objects_dir))? {
            let entry = entry.map_err(io("list", &objects_dir))?;
            match entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u64>().ok())
            {
                Some(id) => {
                    objects.insert(id);
                }
                None => {
                    return Err(FsError::Backing {
                        path: backing.to_path_buf(),
                        detail: format!("unexpected file objects/{:?}", entry.file_name()),
                    })
                }
            }
        }
        let max_id = objects
            .iter()
            .chain(manifest.meta.keys())
            .max()
            .copied()
            .unwrap_or(0);
        let mut model = Model {
            backing: backing.to_path_buf(),
            objects_dir,
            nodes: HashMap::new(),
            durable_meta: manifest.meta,
            durable_dirs: manifest
                .dirs
                .into_iter()
                .map(|(id, entries)| {
                    let entries = entries
                        .into_iter()
                        .map(|(name, child)| (OsString::from_vec(name), child))
                        .collect();
                    (id, entries)
                })
                .collect(),
            objects,
            files: HashMap::new(),
            handles: HashMap::new(),
            next_handle: 1,
            next_id: manifest.next_id.max(max_id + 1).max(FIRST_ID),
            cuts: 0,
        };
        model.rebuild_live()?;
        Ok(model)
    }

    /// The backing directory.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// How many power cuts this model has been through (since it was opened).
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// Bytes of file data written and not yet fsynced (whole dirty pages).
    pub fn unsynced_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| n.dirty.len() as u64 * PAGE)
            .sum()
    }

    /// Drops every change not made durable, as a power cut would (see the module docs).
    pub fn cut_power(&mut self) -> Result<CutReport, FsError> {
        let mut report = CutReport {
            dropped_pages: self.nodes.values().map(|n| n.dirty.len() as u64).sum(),
            ..CutReport::default()
        };
        for (id, node) in &self.nodes {
            if node.meta.kind == Kind::Dir && self.durable_dirs.get(id) != Some(&node.entries) {
                report.dirs_reverted += 1;
            }
        }
        let live: Vec<u64> = self.nodes.keys().copied().collect();
        self.nodes.clear();
        let reachable = self.durably_reachable();
        report.nodes_lost = live.iter().filter(|id| !reachable.contains(id)).count() as u64;
        self.rebuild_live()?;
        self.cuts += 1;
        Ok(report)
    }

    /// Replaces the live state by the durable one and deletes what no durable name reaches.
    fn rebuild_live(&mut self) -> Result<(), FsError> {
        self.nodes.clear();
        self.files.clear();
        self.handles.clear();
        self.collect_garbage()?;
        let mut nlinks: HashMap<u64, u32> = HashMap::new();
        for entries in self.durable_dirs.values() {
            for child in entries.values() {
                *nlinks.entry(*child).or_default() += 1;
            }
        }
        for id in self.durably_reachable() {
            let meta = *self.durable_meta.get(&id).ok_or_else(|| FsError::Backing {
                path: self.backing.clone(),
                detail: format!("node {id} is named but has no metadata"),
            })?;
            let size = if meta.kind == Kind::File && self.objects.contains(&id) {
                let path = self.object_path(id);
                std::fs::metadata(&path).map_err(io("stat", &path))?.len()
            } else {
                0
            };
            let mut node = Node::new(meta, size);
            if meta.kind == Kind::Dir {
                node.entries = self.durable_dirs.get(&id).cloned().unwrap_or_default();
                let subdirs = node
                    .entries
                    .values()
                    .filter(|c| self.durable_dirs.contains_key(*c))
                    .count();
                node.nlink = 2 + subdirs as u32;
            } else {
                node.nlink = nlinks.get(&id).copied().unwrap_or(1);
            }
            self.nodes.insert(id, node);
        }
        self.save_manifest()
    }

    /// Ids a durable name reaches from the root (the root included).
    fn durably_reachable(&self) -> BTreeSet<u64> {
        let mut seen = BTreeSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(dir) = todo.pop() {
            for child in self
                .durable_dirs
                .get(&dir)
                .into_iter()
                .flat_map(|e| e.values())
            {
                if seen.insert(*child) && self.durable_dirs.contains_key(child) {
                    todo.push(*child);
                }
            }
        }
        seen
    }

    /// Forgets durable records and objects of nodes that are neither durably named nor live.
    fn collect_garbage(&mut self) -> Result<(), FsError> {
        let mut keep = self.durably_reachable();
        keep.extend(self.nodes.keys().copied());
        self.durable_dirs.retain(|id, _| keep.contains(id));
        self.durable_meta.retain(|id, _| keep.contains(id));
        let doomed: Vec<u64> = self
            .objects
            .iter()
            .filter(|id| !keep.contains(id))
            .copied()
            .collect();
        for id in doomed {
            self.files.remove(&id);
            let path = self.object_path(id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &path)(e)),
            }
            self.objects.remove(&id);
        }
        Ok(())
    }

    fn save_manifest(&self) -> Result<(), FsError> {
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            next_id: self.next_id,
            meta: self.durable_meta.clone(),
            dirs: self
                .durable_dirs
                .iter()
                .map(|(id, entries)| {
                    let entries = entries
                        .iter()
                        .map(|(name, child)| (name.as_bytes().to_vec(), *child))
                        .collect();
                    (*id, entries)
                })
                .collect(),
        };
        let tmp = self.backing.join(format!("{MANIFEST}.tmp"));
        let bytes = serde_json::to_vec(&manifest).expect("the manifest serializes");
        std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
        let path = self.backing.join(MANIFEST);
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))
    }

    fn object_path(&self, id: u64) -> PathBuf {
        self.objects_dir.join(id.to_string())
    }

    fn node(&self, id: u64) -> Result<&Node, FsError> {
        self.nodes.get(&id).ok_or(FsError::NotFound)
    }

    fn dir(&self, id: u64) -> Result<&Node, FsError> {
        let node = self.node(id)?;
        if node.meta.kind == Kind::Dir {
            Ok(node)
        } else {
            Err(FsError::NotDir)
        }
    }

    /// The attributes of a live node.
    pub fn attr(&self, id: u64) -> Result<Attr, FsError> {
        let n = self.node(id)?;
        Ok(Attr {
            id,
            kind: n.meta.kind,
            size: n.size,
            perm: n.meta.perm,
            nlink: n.nlink,
            uid: n.meta.uid,
            gid: n.meta.gid,
            mtime: n.mtime,
            ctime: n.ctime,
        })
    }

    /// The node `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        let id = *self
            .dir(parent)?
            .entries
            .get(name)
            .ok_or(FsError::NotFound)?;
        self.attr(id)
    }

    /// The entries of a directory, in name order.
    pub fn list(&self, dir: u64) -> Result<Vec<(OsString, u64, Kind)>, FsError> {
        let node = self.dir(dir)?;
        Ok(node
            .entries
            .iter()
            .map(|(name, id)| {
                let kind = self.nodes.get(id).map_or(Kind::File, |n| n.meta.kind);
                (name.clone(), *id, kind)
            })
            .collect())
    }

    /// Creates an empty file or directory `name` in `parent`.
    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<Attr, FsError> {
        if name.is_empty() || name == "." || name == ".." || name.as_bytes().contains(&b'/') {
            return Err(FsError::Invalid);
        }
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        let id = self.next_id;
        self.next_id += 1;
        let meta = Meta {
            kind,
            perm,
            uid,
            gid,
        };
        self.nodes.insert(id, Node::new(meta, 0));
        let p = self.nodes.get_mut(&parent).expect("checked");
        p.entries.insert(name.to_os_string(), id);
        p.touch();
        if kind == Kind::Dir {
            p.nlink += 1;
        }
        self.attr(id)
    }

    /// Removes a file's name (`unlink`) or an empty directory (`rmdir`, `dir` true).
    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), FsError> {
        let id = *self
            .dir(parent)?
            .entries
            .get(name)
            .ok_or(FsError::NotFound)?;
        let node = self.node(id)?;
        match (node.meta.kind, dir) {
            (Kind::Dir, false) => return Err(FsError::IsDir),
            (Kind::File, true) => return Err(FsError::NotDir),
            (Kind::Dir, true) if !node.entries.is_empty() => return Err(FsError::NotEmpty),
            _ => {}
        }
        let p = self.nodes.get_mut(&parent).expect("checked");
        p.entries.remove(name);
        p.touch();
        if dir {
            p.nlink = p.nlink.saturating_sub(1);
        }
        self.unlink_node(id, dir);
        Ok(())
    }

    /// One live name of `id` is gone; drops the node when none is left.
    fn unlink_node(&mut self, id: u64, dir: bool) {
        let node = self.nodes.get_mut(&id).expect("named nodes are live");
        node.nlink = if dir { 0 } else { node.nlink.saturating_sub(1) };
        node.ctime = SystemTime::now();
        if node.nlink == 0 && node.open == 0 {
            self.nodes.remove(&id);
            self.files.remove(&id);
        }
    }

    /// Opens node `id`; returns a handle for [`Model::release`].
    pub fn open_handle(&mut self, id: u64) -> Result<u64, FsError> {
        let node = self.nodes.get_mut(&id).ok_or(FsError::NotFound)?;
        node.open += 1;
        let fh = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(fh, id);
        Ok(fh)
    }

    /// Closes a handle. Handles from before a power cut are ignored: their nodes were rebuilt.
    pub fn release(&mut self, fh: u64) {
        let Some(id) = self.handles.remove(&fh) else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(&id) {
            node.open = node.open.saturating_sub(1);
            if node.open == 0 && node.nlink == 0 {
                self.nodes.remove(&id);
                self.files.remove(&id);
            }
        }
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a target of the same kind
    /// (an empty directory, or a file) unless `no_replace`.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), FsError> {
        if new_name.is_empty() || new_name == "." || new_name == ".." {
            return Err(FsError::Invalid);
        }
        let id = *self
            .dir(parent)?
            .entries
            .get(name)
            .ok_or(FsError::NotFound)?;
        let kind = self.node(id)?.meta.kind;
        let target = self.dir(new_parent)?.entries.get(new_name).copied();
        if kind == Kind::Dir && self.is_ancestor(id, new_parent) {
            return Err(FsError::Invalid);
        }
        if let Some(target) = target {
            if target == id {
                return Ok(());
            }
            if no_replace {
                return Err(FsError::Exists);
            }
            let t = self.node(target)?;
            match (kind, t.meta.kind) {
                (Kind::File, Kind::Dir) => return Err(FsError::IsDir),
                (Kind::Dir, Kind::File) => return Err(FsError::NotDir),
                (Kind::Dir, Kind::Dir) if !t.entries.is_empty() => return Err(FsError::NotEmpty),
                _ => {}
            }
            let np = self.nodes.get_mut(&new_parent).expect("checked");
            np.entries.remove(new_name);
            if kind == Kind::Dir {
                np.nlink = np.nlink.saturating_sub(1);
            }
            self.unlink_node(target, kind == Kind::Dir);
        }
        let p = self.nodes.get_mut(&parent).expect("checked");
        p.entries.remove(name);
        p.touch();
        if kind == Kind::Dir {
            p.nlink = p.nlink.saturating_sub(1);
        }
        let np = self.nodes.get_mut(&new_parent).expect("checked");
        np.entries.insert(new_name.to_os_string(), id);
        np.touch();
        if kind == Kind::Dir {
            np.nlink += 1;
        }
        Ok(())
    }

    /// True when directory `dir` is `node` or below it.
    fn is_ancestor(&self, node: u64, dir: u64) -> bool {
        if node == dir {
            return true;
        }
        let mut todo = vec![node];
        while let Some(d) = todo.pop() {
            for child in self
                .nodes
                .get(&d)
                .into_iter()
                .flat_map(|n| n.entries.values())
            {
                if *child == dir {
                    return true;
                }
                todo.push(*child);
            }
        }
        false
    }

    fn file_mut(&mut self, id: u64) -> Result<&mut Node, FsError> {
        let node = self.nodes.get_mut(&id).ok_or(FsError::NotFound)?;
        if node.meta.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        Ok(node)
    }

    /// The object file of `id`, opened once and kept.
    fn object(
        files: &mut HashMap<u64, File>,
        objects: &mut BTreeSet<u64>,
        dir: &Path,
        id: u64,
    ) -> Result<File, FsError> {
        if let Some(f) = files.get(&id) {
            return f.try_clone().map_err(io("dup", dir));
        }
        let path = dir.join(id.to_string());
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        objects.insert(id);
        files.insert(id, f.try_clone().map_err(io("dup", &path))?);
        Ok(f)
    }

    /// Reads durable bytes `[off, off + buf.len())`, which must lie below `base_valid`.
    fn read_base(&mut self, id: u64, off: u64, buf: &mut [u8]) -> Result<(), FsError> {
        if buf.is_empty() {
            return Ok(());
        }
        let f = Self::object(&mut self.files, &mut self.objects, &self.objects_dir, id)?;
        f.read_exact_at(buf, off)
            .map_err(io("read", &self.object_path(id)))
    }

    /// Up to `len` bytes of file `id` from `off`.
    pub fn read(&mut self, id: u64, off: u64, len: u64) -> Result<Vec<u8>, FsError> {
        let node = self.file_mut(id)?;
        let end = off.saturating_add(len).min(node.size);
        if off >= end {
            return Ok(Vec::new());
        }
        let base_end = end.min(node.base_valid);
        let mut out = vec![0u8; (end - off) as usize];
        if off < base_end {
            self.read_base(id, off, &mut out[..(base_end - off) as usize])?;
        }
        let node = self.nodes.get(&id).expect("checked");
        for (page, bytes) in node.dirty.range(off / PAGE..=(end - 1) / PAGE) {
            let start = page * PAGE;
            let from = start.max(off);
            let to = (start + PAGE).min(end);
            out[(from - off) as usize..(to - off) as usize]
                .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
        }
        Ok(out)
    }

    /// Writes `data` at `off` into file `id` (live only, until fsync).
    pub fn write(&mut self, id: u64, off: u64, data: &[u8]) -> Result<(), FsError> {
        self.file_mut(id)?;
        if data.is_empty() {
            return Ok(());
        }
        let end = off + data.len() as u64;
        for page in off / PAGE..=(end - 1) / PAGE {
            let start = page * PAGE;
            if !self.nodes[&id].dirty.contains_key(&page) {
                let mut bytes = vec![0u8; PAGE as usize].into_boxed_slice();
                let base_valid = self.nodes[&id].base_valid;
                if start < base_valid {
                    let n = (base_valid - start).min(PAGE) as usize;
                    self.read_base(id, start, &mut bytes[..n])?;
                }
                self.file_mut(id)?.dirty.insert(page, bytes);
            }
            let from = start.max(off);
            let to = (start + PAGE).min(end);
            let node = self.file_mut(id)?;
            node.dirty.get_mut(&page).expect("just made")
                [(from - start) as usize..(to - start) as usize]
                .copy_from_slice(&data[(from - off) as usize..(to - off) as usize]);
        }
        let node = self.file_mut(id)?;
        node.size = node.size.max(end);
        node.touch();
        Ok(())
    }

    /// Truncates or extends file `id` to `size` (live only, until fsync).
    pub fn set_size(&mut self, id: u64, size: u64) -> Result<(), FsError> {
        let node = self.file_mut(id)?;
        if size < node.size {
            node.base_valid = node.base_valid.min(size);
            let first_gone = size.div_ceil(PAGE);
            node.dirty.split_off(&first_gone);
            if !size.is_multiple_of(PAGE) {
                if let Some(bytes) = node.dirty.get_mut(&(size / PAGE)) {
                    bytes[(size % PAGE) as usize..].fill(0);
                }
            }
        }
        node.size = size;
        node.touch();
        Ok(())
    }

    /// Changes the permission bits (live; durable with the name, see the module docs).
    pub fn set_perm(&mut self, id: u64, perm: u16) -> Result<(), FsError> {
        let node = self.nodes.get_mut(&id).ok_or(FsError::NotFound)?;
        node.meta.perm = perm;
        node.ctime = SystemTime::now();
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file (its data and size) or of a directory (its entries).
    pub fn fsync(&mut self, id: u64) -> Result<(), FsError> {
        match self.node(id)?.meta.kind {
            Kind::File => self.sync_file(id),
            Kind::Dir => self.sync_dir(id),
        }
    }

    fn sync_file(&mut self, id: u64) -> Result<(), FsError> {
        let node = self.nodes.get(&id).expect("checked");
        if node.dirty.is_empty() && self.objects.contains(&id) && node.base_valid == node.size {
            let len = self.files.get(&id).map(File::metadata);
            if matches!(len, Some(Ok(m)) if m.len() == node.size) {
                return Ok(());
            }
        }
        let f = Self::object(&mut self.files, &mut self.objects, &self.objects_dir, id)?;
        let path = self.object_path(id);
        let node = self.nodes.get_mut(&id).expect("checked");
        let len = f.metadata().map_err(io("stat", &path))?.len();
        if node.base_valid < len {
            f.set_len(node.base_valid).map_err(io("truncate", &path))?;
        }
        if node.size != node.base_valid.min(len) {
            f.set_len(node.size).map_err(io("truncate", &path))?;
        }
        for (page, bytes) in std::mem::take(&mut node.dirty) {
            let start = page * PAGE;
            if start >= node.size {
                continue;
            }
            let n = (node.size - start).min(PAGE) as usize;
            f.write_all_at(&bytes[..n], start)
                .map_err(io("write", &path))?;
        }
        node.base_valid = node.size;
        Ok(())
    }

    fn sync_dir(&mut self, id: u64) -> Result<(), FsError> {
        let entries = self.nodes[&id].entries.clone();
        let meta = self.nodes[&id].meta;
        self.durable_meta.entry(id).or_insert(meta);
        for child in entries.values() {
            if let Some(node) = self.nodes.get(child) {
                self.durable_meta.entry(*child).or_insert(node.meta);
                if node.meta.kind == Kind::Dir {
                    self.durable_dirs.entry(*child).or_default();
                }
            }
        }
        if self.durable_dirs.get(&id) == Some(&entries) {
            return Ok(());
        }
        self.durable_dirs.insert(id, entries);
        self.collect_garbage()?;
        self.save_manifest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> (tempfile::TempDir, Model) {
        let dir = tempfile::tempdir().unwrap();
        let m = Model::open(&dir.path().join("backing")).unwrap();
        (dir, m)
    }

    fn file(m: &mut Model, parent: u64, name: &str) -> u64 {
        m.create(parent, OsStr::new(name), Kind::File, 0o644, 0, 0)
            .unwrap()
            .id
    }

    fn content(m: &mut Model, parent: u64, name: &str) -> Option<Vec<u8>> {
        let id = m.lookup(parent, OsStr::new(name)).ok()?.id;
        Some(m.read(id, 0, u64::MAX).unwrap())
    }

    #[test]
    fn unsynced_data_is_lost_and_synced_data_survives() {
        let (_d, mut m) = model();
        let id = file(&mut m, ROOT, "f");
        m.fsync(ROOT).unwrap();
        m.write(id, 0, b"durable").unwrap();
        m.fsync(id).unwrap();
        m.write(id, 7, b" and not").unwrap();
        m.write(id, 0, b"D").unwrap();
        assert_eq!(content(&mut m, ROOT, "f").unwrap(), b"Durable and not");
        let report = m.cut_power().unwrap();
        assert_eq!(report.dropped_pages, 1);
        assert_eq!(content(&mut m, ROOT, "f").unwrap(), b"durable");
    }

    #[test]
    fn a_new_name_needs_its_directory_synced() {
        let (_d, mut m) = model();
        let id = file(&mut m, ROOT, "new");
        m.write(id, 0, b"data").unwrap();
        m.fsync(id).unwrap();
        assert_eq!(m.cut_power().unwrap().nodes_lost, 1);
        assert!(content(&mut m, ROOT, "new").is_none());
        // The orphan's data object is gone too.
        assert!(m.objects.is_empty(), "{:?}", m.objects);

        let id = file(&mut m, ROOT, "new");
        m.write(id, 0, b"data").unwrap();
        m.fsync(ROOT).unwrap();
        m.cut_power().unwrap();
        assert_eq!(
            content(&mut m, ROOT, "new").unwrap(),
            b"",
            "name without data"
        );
    }

    #[test]
    fn truncate_and_extend_read_zeros_and_sync_exactly() {
        let (_d, mut m) = model();
        let id = file(&mut m, ROOT, "f");
        m.fsync(ROOT).unwrap();
        let long: Vec<u8> = (0..3 * PAGE + 100).map(|i| (i % 251) as u8 + 1).collect();
        m.write(id, 0, &long).unwrap();
        m.fsync(id).unwrap();
        m.set_size(id, PAGE + 10).unwrap();
        m.set_size(id, 2 * PAGE).unwrap();
        let mut want = long[..(PAGE + 10) as usize].to_vec();
        want.resize(2 * PAGE as usize, 0);
        assert_eq!(m.read(id, 0, u64::MAX).unwrap(), want);
        m.cut_power().unwrap();
        assert_eq!(
            content(&mut m, ROOT, "f").unwrap(),
            long,
            "truncate was not synced"
        );
        m.set_size(id, PAGE + 10).unwrap();
        m.write(id, 2 * PAGE, b"x").unwrap();
        m.fsync(id).unwrap();
        want.truncate(2 * PAGE as usize);
        want.push(b'x');
        assert_eq!(m.read(id, 0, u64::MAX).unwrap(), want);
        m.cut_power().unwrap();
        assert_eq!(content(&mut m, ROOT, "f").unwrap(), want);
    }

    #[test]
    fn rename_is_durable_once_its_directory_is_synced() {
        let (_d, mut m) = model();
        let old = file(&mut m, ROOT, "current");
        m.write(old, 0, b"old").unwrap();
        m.fsync(old).unwrap();
        m.fsync(ROOT).unwrap();
        let new = file(&mut m, ROOT, "current.tmp");
        m.write(new, 0, b"new").unwrap();
        m.fsync(new).unwrap();
        m.rename(
            ROOT,
            OsStr::new("current.tmp"),
            ROOT,
            OsStr::new("current"),
            false,
        )
        .unwrap();
        assert_eq!(content(&mut m, ROOT, "current").unwrap(), b"new");
        m.cut_power().unwrap();
        assert_eq!(content(&mut m, ROOT, "current").unwrap(), b"old");
        assert!(content(&mut m, ROOT, "current.tmp").is_none());

        let new = file(&mut m, ROOT, "current.tmp");
        m.write(new, 0, b"new").unwrap();
        m.fsync(new).unwrap();
        m.rename(
            ROOT,
            OsStr::new("current.tmp"),
            ROOT,
            OsStr::new("current"),
            false,
        )
        .unwrap();
        m.fsync(ROOT).unwrap();
        m.cut_power().unwrap();
        assert_eq!(content(&mut m, ROOT, "current").unwrap(), b"new");
        assert!(content(&mut m, ROOT, "current.tmp").is_none());
        assert_eq!(
            m.objects.len(),
            1,
            "the replaced file's object is collected"
        );
    }

    #[test]
    fn unlink_and_mkdir_revert_until_synced() {
        let (_d, mut m) = model();
        let id = file(&mut m, ROOT, "gone");
        m.write(id, 0, b"x").unwrap();
        m.fsync(id).unwrap();
        m.fsync(ROOT).unwrap();
        m.remove(ROOT, OsStr::new("gone"), false).unwrap();
        let sub = m
            .create(ROOT, OsStr::new("sub"), Kind::Dir, 0o755, 0, 0)
            .unwrap()
            .id;
        file(&mut m, sub, "inner");
        m.fsync(ROOT).unwrap(); // "gone" is gone, "sub" exists, "sub/inner" is not durable.
        m.cut_power().unwrap();
        assert!(content(&mut m, ROOT, "gone").is_none());
        let sub = m.lookup(ROOT, OsStr::new("sub")).unwrap().id;
        assert!(m.list(sub).unwrap().is_empty());
        assert_eq!(
            m.remove(ROOT, OsStr::new("sub"), false)
                .unwrap_err()
                .errno(),
            libc::EISDIR
        );
    }

    #[test]
    fn directories_rebuilt_after_a_cut_count_their_subdirectories() {
        let (_d, mut m) = model();
        for name in ["a", "b", "c"] {
            m.create(ROOT, OsStr::new(name), Kind::Dir, 0o755, 0, 0)
                .unwrap();
        }
        m.fsync(ROOT).unwrap();
        m.cut_power().unwrap();
        assert_eq!(m.attr(ROOT).unwrap().nlink, 5);
        for name in ["a", "b", "c"] {
            m.remove(ROOT, OsStr::new(name), true).unwrap();
        }
        assert_eq!(m.attr(ROOT).unwrap().nlink, 2);
    }

    #[test]
    fn durable_state_survives_reopening_the_backing_dir() {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("b");
        {
            let mut m = Model::open(&backing).unwrap();
            let id = file(&mut m, ROOT, "kept");
            m.write(id, 0, b"synced").unwrap();
            m.fsync(id).unwrap();
            m.fsync(ROOT).unwrap();
            m.write(id, 0, b"unsynced!").unwrap();
            file(&mut m, ROOT, "lost");
        }
        let mut m = Model::open(&backing).unwrap();
        assert_eq!(content(&mut m, ROOT, "kept").unwrap(), b"synced");
        assert!(content(&mut m, ROOT, "lost").is_none());
        std::fs::write(dir.path().join("other/x"), b"").ok();
        std::fs::create_dir_all(dir.path().join("other")).unwrap();
        std::fs::write(dir.path().join("other/x"), b"").unwrap();
        let err = Model::open(&dir.path().join("other")).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }
}
