//! What the purity tests check: every path a source file names, resolved through its `use`
//! items (groups, renames, `self`, nested modules), against forbidden modules and items. A
//! comment or a string naming `std::fs` is not an import; `use std::{fs, time::Instant as
//! Clock}` and then `Clock::now()` are.

use std::collections::BTreeMap;
use std::path::Path;

use syn::visit::Visit;

/// A rule: paths starting with `prefix` are forbidden, except those starting with an entry of
/// `allowed`.
pub struct Rules<'a> {
    pub forbidden: &'a [&'a str],
    pub allowed: &'a [&'a str],
    /// Macros that do I/O by themselves (`println`).
    pub macros: &'a [&'a str],
}

/// Address types: plain values, allowed where sockets are not.
pub const ADDRESS_TYPES: &[&str] = &[
    "std::net::SocketAddr",
    "std::net::SocketAddrV4",
    "std::net::SocketAddrV6",
    "std::net::IpAddr",
    "std::net::Ipv4Addr",
    "std::net::Ipv6Addr",
];

/// The macros that write to stdout or stderr.
pub const PRINTING: &[&str] = &["println", "print", "eprintln", "eprint", "dbg"];

/// Paths named in one file, resolved.
struct Names {
    /// Local name -> full path, from `use` items.
    aliases: BTreeMap<String, String>,
    /// Every path used (resolved where its first segment is an alias), with its line.
    used: Vec<String>,
    macros: Vec<String>,
}

fn flatten(tree: &syn::UseTree, prefix: &str, out: &mut Vec<(String, String)>) {
    let join = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            format!("{a}::{b}")
        }
    };
    match tree {
        syn::UseTree::Path(p) => flatten(&p.tree, &join(prefix, &p.ident.to_string()), out),
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            if name == "self" {
                let last = prefix.rsplit("::").next().unwrap_or(prefix).to_string();
                out.push((last, prefix.to_string()));
            } else {
                out.push((name.clone(), join(prefix, &name)));
            }
        }
        syn::UseTree::Rename(r) => {
            let full = if r.ident == "self" {
                prefix.to_string()
            } else {
                join(prefix, &r.ident.to_string())
            };
            out.push((r.rename.to_string(), full));
        }
        syn::UseTree::Glob(_) => out.push(("*".to_string(), join(prefix, "*"))),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten(t, prefix, out);
            }
        }
    }
}

fn path_text(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

impl<'ast> Visit<'ast> for Names {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut out = Vec::new();
        flatten(&item.tree, "", &mut out);
        for (local, full) in out {
            self.used.push(full.clone());
            self.aliases.insert(local, full);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let text = path_text(path);
        self.used.push(text);
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.macros.push(path_text(&mac.path));
        syn::visit::visit_macro(self, mac);
    }
}

/// The forbidden paths and macros `source` (a whole Rust file) names.
pub fn check_source(source: &str, rules: &Rules) -> Vec<String> {
    let file = syn::parse_file(source).unwrap_or_else(|e| panic!("cannot parse: {e}"));
    let mut names = Names {
        aliases: BTreeMap::new(),
        used: Vec::new(),
        macros: Vec::new(),
    };
    names.visit_file(&file);
    let resolve = |path: &str| -> String {
        let path = path.trim_start_matches("::");
        let (head, tail) = path.split_once("::").unwrap_or((path, ""));
        match names.aliases.get(head) {
            Some(full) if full != path => {
                if tail.is_empty() {
                    full.clone()
                } else {
                    format!("{full}::{tail}")
                }
            }
            _ => path.to_string(),
        }
    };
    let starts =
        |path: &str, prefix: &str| path == prefix || path.starts_with(&format!("{prefix}::"));
    let mut hits = Vec::new();
    for path in &names.used {
        let full = resolve(path);
        let bad = rules.forbidden.iter().any(|f| starts(&full, f))
            && !rules.allowed.iter().any(|a| starts(&full, a));
        if bad {
            hits.push(full);
        }
    }
    for mac in &names.macros {
        if rules.macros.contains(&mac.as_str()) {
            hits.push(format!("{mac}!"));
        }
    }
    hits
}

/// [`check_source`] over every `.rs` file below `dir` but those named in `skip`; returns the
/// hits as `file: path` and the number of files read.
pub fn check_dir(dir: &Path, rules: &Rules, skip: &[&str]) -> (Vec<String>, usize) {
    let mut stack = vec![dir.to_path_buf()];
    let (mut hits, mut files) = (Vec::new(), 0);
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !skip
                    .iter()
                    .any(|s| path.file_name().is_some_and(|n| n == *s))
            {
                files += 1;
                let text = std::fs::read_to_string(&path).unwrap();
                for hit in check_source(&text, rules) {
                    hits.push(format!("{}: {hit}", path.display()));
                }
            }
        }
    }
    (hits, files)
}
