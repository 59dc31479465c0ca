//! The layout keeps its promises: `lib.rs`'s map names every module, and no two modules import
//! each other, directly or around a loop. An edge is a `crate::...` path in one file that
//! names an item of another file's module; the crate root (which holds `Gateway` and `run`, and
//! so names every module) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/routes/session.rs` is `routes::session`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The module a `crate::a::b::c` path lands in: its longest prefix that is a module.
fn target(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// Every `crate::` path in the text, with `use crate::a::{b, c::d}` groups expanded.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let head = rest[..end].trim_end_matches(':');
        if rest[end..].starts_with('{') && rest[..end].ends_with("::") {
            let group = &rest[end + 1..rest[end..].find('}').map_or(rest.len(), |j| end + j)];
            for item in group.split(',') {
                let item = item.trim().split([' ', ':']).next().unwrap_or("");
                if !item.is_empty() && item != "self" {
                    out.push(format!("{head}::{item}"));
                }
            }
        }
        out.push(head.to_owned());
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| !f.ends_with("lib.rs") && !f.ends_with("main.rs"))
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let from = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        let to: BTreeSet<String> = crate_paths(&text)
            .iter()
            .filter_map(|p| target(p, &modules))
            .filter(|m| *m != from)
            .collect();
        edges.insert(from, to);
    }
    edges
}

#[test]
fn no_two_modules_import_each_other() {
    let edges = graph();
    assert!(
        edges["routes::session"].contains("ws::driver"),
        "the graph sees imports"
    );
    // Depth-first search for a back edge; report the loop it closes.
    fn visit<'a>(
        m: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(i) = path.iter().position(|p| *p == m) {
            panic!("import cycle: {} -> {m}", path[i..].join(" -> "));
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for next in &edges[m] {
            visit(next, edges, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        visit(m, &edges, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_map_in_lib_rs_names_every_module() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let map: String = lib.lines().filter(|l| l.starts_with("//!")).collect();
    for line in lib.lines() {
        if let Some(name) = line.strip_prefix("pub mod ") {
            let name = name.trim_end_matches(';');
            assert!(
                map.contains(&format!("[`{name}`]")),
                "lib.rs's map leaves out `{name}`"
            );
        }
    }
    // And each folder's own map names its files.
    for (module, _) in graph() {
        let Some((parent, child)) = module.rsplit_once("::") else {
            continue;
        };
        let text = std::fs::read_to_string(src().join(parent).join("mod.rs")).unwrap();
        assert!(
            text.contains(&format!("[`{child}`]")),
            "{parent}/mod.rs's map leaves out `{child}`"
        );
    }
}
