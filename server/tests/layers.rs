//! The server's layer walls, checked from its source: no import circles between its modules, and
//! no arrow from a lower layer up.
//!
//! The layers, top to bottom: `api` (gRPC services, the metrics endpoint) → `node` (a running
//! member's decisions) → `raft` (openraft types, the outbound transport) and `store` (the log and
//! the state machine). `server.rs`, `launcher.rs` and `main.rs` sit above them all and wire them
//! together; the small shared modules beside them (`config`, `tls`, `telemetry`, `faults`, …)
//! belong to no layer but still take part in the circle check.
//!
//! How: every `.rs` file under `server/src` is parsed with `syn`, and every path that starts with
//! `crate`, `super` or `self` (in `use` items, types, expressions, patterns, macros' paths) is
//! resolved to the module file it names: the longest prefix of the path that is a module. That
//! gives a graph of files. A child reaching its own parent (`super::Node` from `node/quota.rs`) is
//! how a module shares its core with its parts and is not counted; every other arrow is. Code
//! under `#[cfg(test)]` is left out: tests may reach anywhere.
//!
//! Run it with `cargo test -p kvset-server --test layers` (or nextest's `binary(layers)`). A
//! failure lists each circle and each upward arrow with the file that makes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The layers, highest first: a module of one may use modules of the layers after it only.
const LAYERS: [&str; 4] = ["api", "node", "raft", "store"];

/// Layers that stand side by side: neither is above the other, and the store uses the Raft types.
fn rank(layer: &str) -> Option<u8> {
    match layer {
        "api" => Some(3),
        "node" => Some(2),
        "raft" | "store" => Some(1),
        _ => None,
    }
}

/// A module path such as `node::quota`; the crate root is the empty path.
type ModPath = Vec<String>;

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod") | Some("lib") | Some("main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// True for `#[cfg(test)]`.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// Collects the module-relative paths a file mentions.
struct Mentions {
    /// The module the file is (for `super` and `self`).
    here: ModPath,
    /// Absolute paths (without `crate`), as written.
    paths: Vec<Vec<String>>,
}

impl Mentions {
    fn absolute(&self, segments: &[String]) -> Option<Vec<String>> {
        let (first, rest) = segments.split_first()?;
        match first.as_str() {
            "crate" => Some(rest.to_vec()),
            "self" => Some(self.here.iter().chain(rest).cloned().collect()),
            "super" => {
                let mut base = self.here.clone();
                let mut rest = rest;
                base.pop()?;
                while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
                    base.pop()?;
                    rest = tail;
                }
                Some(base.into_iter().chain(rest.iter().cloned()).collect())
            }
            _ => None,
        }
    }

    fn record(&mut self, segments: Vec<String>) {
        if let Some(abs) = self.absolute(&segments) {
            self.paths.push(abs);
        }
    }

    fn use_tree(&mut self, prefix: Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                let mut next = prefix;
                next.push(p.ident.to_string());
                self.use_tree(next, &p.tree);
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix;
                full.push(n.ident.to_string());
                self.record(full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix;
                full.push(r.ident.to_string());
                self.record(full);
            }
            syn::UseTree::Glob(_) => self.record(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix.clone(), t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Mentions {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if is_test_only(attrs) {
            return;
        }
        if let syn::Item::Mod(m) = item {
            if m.content.is_some() {
                // An inline module: paths inside it are relative to it. Its arrows count as its
                // file's.
                self.here.push(m.ident.to_string());
                syn::visit::visit_item(self, item);
                self.here.pop();
                return;
            }
        }
        syn::visit::visit_item(self, item)
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(segments);
        syn::visit::visit_path(self, path);
    }
}

/// The module graph: file module -> modules it mentions (resolved to existing modules).
fn graph(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    // main.rs is a separate crate (the binary) that uses the library by name.
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let here = module_of(src, file);
        let text = std::fs::read_to_string(file).expect("read source");
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut mentions = Mentions {
            here: here.clone(),
            paths: Vec::new(),
        };
        // (Arrows made inside an inline module are its file's; `here` is the file's module
        // again once the visit is done.)
        mentions.visit_file(&ast);
        let mut targets = BTreeSet::new();
        for path in mentions.paths {
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p))
                .unwrap_or_default();
            // Itself, or its own ancestor (a part reaching the core of its module): not counted.
            if target.is_empty() || here.starts_with(&target) {
                continue;
            }
            targets.insert(target);
        }
        edges.insert(here, targets);
    }
    edges
}

fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn circles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on_stack: BTreeSet<&'a ModPath>,
        next: usize,
        found: Vec<Vec<ModPath>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a ModPath) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let edges = s.edges;
        for w in edges.get(v).into_iter().flatten() {
            if !edges.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn layer_of(m: &ModPath) -> Option<&str> {
    m.first()
        .map(String::as_str)
        .filter(|first| LAYERS.contains(first))
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_is_part_of_an_import_circle() {
    let edges = graph(&src_dir());
    let found = circles(&edges);
    let report: Vec<String> = found
        .iter()
        .map(|component| {
            let members: BTreeSet<&ModPath> = component.iter().collect();
            let arrows: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    edges[from]
                        .iter()
                        .filter(|to| members.contains(to))
                        .map(move |to| format!("{} -> {}", name(from), name(to)))
                })
                .collect();
            format!("circle: {}", arrows.join(", "))
        })
        .collect();
    assert!(
        report.is_empty(),
        "modules that import each other (directly or round a loop):\n{}",
        report.join("\n")
    );
}

#[test]
fn no_layer_reaches_up() {
    let edges = graph(&src_dir());
    let mut upward = Vec::new();
    for (from, targets) in &edges {
        let Some(from_rank) = layer_of(from).and_then(rank) else {
            continue;
        };
        for to in targets {
            if let Some(to_rank) = layer_of(to).and_then(rank) {
                if to_rank > from_rank {
                    upward.push(format!("{} -> {}", name(from), name(to)));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "arrows from a lower layer up ({}):\n{}",
        LAYERS.join(" → "),
        upward.join("\n")
    );
}

#[test]
fn the_check_sees_the_arrows_it_is_meant_to_catch() {
    // The graph must contain the arrows everyone knows are there, or the checks above pass
    // because they see nothing.
    let edges = graph(&src_dir());
    let m = |s: &str| -> ModPath { s.split("::").map(str::to_string).collect() };
    for (from, to) in [
        ("api::kv", "node"),
        ("api::peer", "raft::network"),
        ("node::quota", "store"),
        ("store::state_machine", "store::meta"),
        ("server", "api::cluster"),
    ] {
        assert!(
            edges.get(&m(from)).is_some_and(|t| t.contains(&m(to))),
            "expected {from} -> {to} in the module graph"
        );
    }
    // And a circle made up here is found.
    let mut made_up = edges.clone();
    made_up
        .get_mut(&m("store::meta"))
        .unwrap()
        .insert(m("store::state_machine"));
    assert!(!circles(&made_up).is_empty());
}
