//! The source tree's layering, checked over the code itself (std only, no cargo plugin):
//! every `.rs` file under `src/` (not `src/bin/`, a crate of its own) is read, comments,
//! string contents and `#[cfg(test)]` items are blanked, and every path that names one of
//! the crate's modules (`crate::a::b`, `super::x`, `self::x`, a child module's name; in
//! `use` lines, groups included, and in code) is an edge from the file's module to it.
//!
//! - The top-level modules (`src/X.rs` or `src/X/`) must form no cycle.
//! - Inside every module directory, its direct submodules must form no cycle among
//!   themselves. (A submodule may use its parent's items and the parent declares, calls and
//!   re-exports its submodules: that is Rust's module tree, not a cycle between peers.)
//!   Test-only modules (`tests`, from `#[cfg(test)] mod tests;`) are not part of the graph.
//! - No source file is over 600 lines, unless its opening `//!` comment says it is "one
//!   coherent thing" (and why).
//!
//! `cargo test --test layering -- --nocapture` prints what the checks find. The graph code
//! itself is tested by the unit tests at the end.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// A module path below the crate root (`["dns", "server"]`); empty is the crate root.
type ModPath = Vec<String>;

/// Where a dependency was seen: file (relative to the crate) and line.
type Evidence = (String, usize);

/// Files over this many lines need a reason in their opening comment.
const MAX_LINES: usize = 600;
const COHERENT: &str = "one coherent thing";

/// One source file: its module and its cleaned code.
struct Source {
    rel: String,
    module: ModPath,
    code: String,
    lines: usize,
    opening_doc: String,
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module a file under `src/` defines: `lib.rs` the root, `X/mod.rs` and `X.rs` X.
fn module_of(rel_to_src: &Path) -> ModPath {
    let mut parts: Vec<String> = rel_to_src
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    if !(parts.is_empty() && stem == "lib") && stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

fn load(root: &Path) -> Vec<Source> {
    let src = root.join("src");
    let mut files = vec![];
    collect(&src, &mut files);
    files
        .into_iter()
        .filter(|p| !p.starts_with(src.join("bin")))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let rel_src = p.strip_prefix(&src).unwrap();
            Source {
                rel: format!("src/{}", rel_src.display()),
                module: module_of(rel_src),
                code: strip_cfg_test(&clean(&text)),
                lines: text.lines().count(),
                opening_doc: opening_doc(&text),
            }
        })
        .collect()
}

/// The file's opening `//!` comment, prefixes removed and whitespace collapsed.
fn opening_doc(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!"))
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The code with comments and the contents of string and character literals replaced by
/// spaces (newlines kept, so line numbers stay), so nothing in them reads as a path.
fn clean(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            // A raw string: r"..", r#".."#, br#".."#.
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            let start = i + if c[i] == 'b' { 2 } else { 1 };
            let mut j = start;
            while c[j] == '#' {
                j += 1;
            }
            let hashes = j - start;
            out.extend(&c[i..=j]);
            i = j + 1;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '"' && (0..hashes).all(|k| c.get(i + 1 + k) == Some(&'#')) {
                    out.push('"');
                    out.extend(std::iter::repeat_n('#', hashes));
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\'' && (c.get(i + 1) == Some(&'\\') || c.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\u{..}'); otherwise a lifetime, kept.
            out.push('\'');
            i += 1;
            while i < c.len() && c[i] != '\'' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push('\'');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Blanks every item under `#[cfg(test)]` (a test module, function or `use`): from the
/// attribute to the item's `;` or its closing brace. Runs on cleaned code, so braces in
/// strings and comments are gone.
fn strip_cfg_test(code: &str) -> String {
    let mut c: Vec<char> = code.chars().collect();
    let pat: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + pat.len() <= c.len() {
        if c[i..i + pat.len()] != pat[..] {
            i += 1;
            continue;
        }
        let mut j = i + pat.len();
        let mut depth = 0usize;
        while j < c.len() {
            match c[j] {
                ';' if depth == 0 => break,
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        let end = j.min(c.len() - 1);
        for ch in &mut c[i..=end] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        i = end + 1;
    }
    c.into_iter().collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Sep,
    Punct(char),
}

fn tokens(code: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = vec![];
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if is_ident(ch) {
            let start = i;
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::Sep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// Every path in the code (`a::b::c`, and each member of `a::{b, c::d}` groups) with at
/// least one `::`, and its line.
fn paths(code: &str) -> Vec<(Vec<String>, usize)> {
    let t = tokens(code);
    let mut out = vec![];
    let mut i = 0;
    while i < t.len() {
        let starts = matches!(t[i].0, Tok::Ident(_))
            && (i == 0 || !matches!(t[i - 1].0, Tok::Sep))
            && matches!(t.get(i + 1), Some((Tok::Sep, _)));
        if starts {
            i = path_at(&t, i, vec![], &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Reads the path starting at `t[i]` (after `prefix`), pushing every full path; returns
/// the index after it.
fn path_at(
    t: &[(Tok, usize)],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let mut segs = prefix;
    let line = t.get(i).map(|x| x.1).unwrap_or(0);
    loop {
        match t.get(i) {
            Some((Tok::Ident(s), _)) => {
                segs.push(s.clone());
                i += 1;
            }
            Some((Tok::Punct('*'), _)) => {
                i += 1;
                break;
            }
            Some((Tok::Punct('{'), _)) => {
                // A group: each member is a path of its own under `segs`.
                i += 1;
                loop {
                    match t.get(i) {
                        Some((Tok::Punct('}'), _)) | None => {
                            i += 1;
                            break;
                        }
                        Some((Tok::Punct(','), _)) => i += 1,
                        Some((Tok::Ident(s), _)) if s == "self" => {
                            out.push((segs.clone(), line));
                            i += 1;
                        }
                        _ => {
                            let before = i;
                            i = path_at(t, i, segs.clone(), out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
                return i;
            }
            _ => break,
        }
        if matches!(t.get(i), Some((Tok::Sep, _))) {
            i += 1;
        } else {
            break;
        }
    }
    out.push((segs, line));
    i
}

/// The crate's module that `path`, written in module `from`, names (the longest known
/// prefix), or None if it names none (another crate, a local item).
fn resolve(path: &[String], from: &ModPath, known: &BTreeSet<ModPath>) -> Option<ModPath> {
    let (mut base, mut rest): (ModPath, &[String]) = match path.first()?.as_str() {
        "crate" => (vec![], &path[1..]),
        "self" => (from.clone(), &path[1..]),
        "super" => (from.clone(), path),
        first => {
            let mut child = from.clone();
            child.push(first.to_string());
            if !known.contains(&child) {
                return None;
            }
            (from.clone(), path)
        }
    };
    while rest.first().is_some_and(|s| s == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    let mut target = base;
    for s in rest {
        let mut next = target.clone();
        next.push(s.clone());
        if !known.contains(&next) {
            break;
        }
        target = next;
    }
    Some(target)
}

/// Module → module it uses → where that was first seen.
type Deps = BTreeMap<ModPath, BTreeMap<ModPath, Evidence>>;

fn dependencies(sources: &[Source]) -> Deps {
    let known: BTreeSet<ModPath> = sources.iter().map(|s| s.module.clone()).collect();
    let mut deps: Deps = BTreeMap::new();
    for s in sources {
        let entry = deps.entry(s.module.clone()).or_default();
        for (p, line) in paths(&s.code) {
            if let Some(t) = resolve(&p, &s.module, &known)
                && t != s.module
            {
                entry.entry(t).or_insert((s.rel.clone(), line));
            }
        }
    }
    deps
}

/// A graph's node names and edges (with evidence).
type Graph = BTreeMap<String, BTreeMap<String, Evidence>>;

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// The graph inside module directory `dir`: its own code and its direct submodules, each
/// standing for everything below it. `dir` empty: the top-level modules.
fn graph_within(deps: &Deps, dir: &[String]) -> Graph {
    let node = |m: &ModPath| -> Option<String> {
        if !m.starts_with(dir) || m.iter().any(|s| s == "tests") {
            return None;
        }
        match m.get(dir.len()) {
            // The crate root's own code (lib.rs) only declares the top-level modules.
            None if dir.is_empty() => Some(format!("{} (own code)", name(dir))),
            // A directory's own code is its submodules' parent, not their peer.
            None => None,
            Some(_) => Some(name(&m[..=dir.len()])),
        }
    };
    let mut g = Graph::new();
    for (from, tos) in deps {
        let Some(f) = node(from) else { continue };
        g.entry(f.clone()).or_default();
        for (to, ev) in tos {
            if let Some(t) = node(to)
                && t != f
            {
                g.entry(f.clone())
                    .or_default()
                    .entry(t)
                    .or_insert(ev.clone());
            }
        }
    }
    g
}

/// Strongly connected components with more than one node (Tarjan), each sorted.
fn cyclic_components(g: &Graph) -> Vec<Vec<String>> {
    struct St<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut St<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        let succ: Vec<&'a str> =
            s.g.get(v)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
        for w in succ {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = vec![];
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = St {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        out: vec![],
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A shortest path from `from` to `to` (breadth first) through nodes of `within` only, as
/// its nodes in order, both ends included.
fn shortest_path(g: &Graph, from: &str, to: &str, within: &BTreeSet<&str>) -> Option<Vec<String>> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut path = vec![v.to_string()];
            let mut at = v;
            while at != from {
                at = prev[at];
                path.push(at.to_string());
            }
            path.reverse();
            return Some(path);
        }
        for w in g.get(v).into_iter().flat_map(|m| m.keys()) {
            if within.contains(w.as_str()) && w != from && !prev.contains_key(w.as_str()) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}

/// The cycles of `g`: for every edge inside a cyclic component, the shortest cycle that
/// takes it (so each dependency that would have to go to break the component is shown),
/// distinct ones only, each starting at its least node.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![];
    for comp in cyclic_components(g) {
        let within: BTreeSet<&str> = comp.iter().map(String::as_str).collect();
        for u in &comp {
            for v in g[u].keys().filter(|v| within.contains(v.as_str())) {
                let Some(back) = shortest_path(g, v, u, &within) else {
                    continue;
                };
                // u → v → ... → u, without repeating u at the end.
                let mut c = vec![u.clone()];
                c.extend(back[..back.len() - 1].iter().cloned());
                let least = (0..c.len()).min_by_key(|&i| &c[i]).unwrap_or(0);
                let canon: Vec<String> = c[least..].iter().chain(&c[..least]).cloned().collect();
                if !out.contains(&canon) {
                    out.push(canon);
                }
            }
        }
    }
    out
}

/// A cycle as one line, with where each of its dependencies was seen.
fn show_cycle(g: &Graph, c: &[String]) -> String {
    let mut line = c[0].clone();
    for (i, from) in c.iter().enumerate() {
        let to = &c[(i + 1) % c.len()];
        let (file, at) = &g[from][to];
        line.push_str(&format!(" → {to} ({file}:{at})"));
    }
    line
}

/// The cyclic components of `g` and their cycles, as report lines (`prefix` first).
fn cycle_report(g: &Graph, prefix: &str) -> Vec<String> {
    let mut out = vec![];
    for comp in cyclic_components(g) {
        out.push(format!("{prefix}modules in one cycle: {}", comp.join(", ")));
    }
    for c in cycles(g) {
        out.push(format!("{prefix}  {}", show_cycle(g, &c)));
    }
    out
}

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Module directories: modules some file is below.
fn module_dirs(sources: &[Source]) -> BTreeSet<ModPath> {
    let known: BTreeSet<&ModPath> = sources.iter().map(|s| &s.module).collect();
    known
        .iter()
        .filter(|m| !m.is_empty() && known.iter().any(|o| o.len() > m.len() && o.starts_with(m)))
        .map(|m| (*m).clone())
        .collect()
}

fn report(what: &str, problems: &[String]) {
    if problems.is_empty() {
        eprintln!("{what}: none");
        return;
    }
    eprintln!("{what} ({}):", problems.len());
    for p in problems {
        eprintln!("  {p}");
    }
    panic!("{what}: {} found (listed above)", problems.len());
}

#[test]
fn top_level_modules_form_no_cycle() {
    let deps = dependencies(&load(&crate_root()));
    let g = graph_within(&deps, &[]);
    report("top-level module cycles", &cycle_report(&g, ""));
}

#[test]
fn submodules_form_no_cycle() {
    let sources = load(&crate_root());
    let deps = dependencies(&sources);
    let mut all = vec![];
    for dir in module_dirs(&sources) {
        let g = graph_within(&deps, &dir);
        all.extend(cycle_report(&g, &format!("in {}: ", name(&dir))));
    }
    report("submodule cycles", &all);
}

#[test]
fn no_file_over_600_lines_without_a_reason() {
    let big: Vec<String> = load(&crate_root())
        .into_iter()
        .filter(|s| s.lines > MAX_LINES && !s.opening_doc.to_lowercase().contains(COHERENT))
        .map(|s| format!("{}: {} lines", s.rel, s.lines))
        .collect();
    report(
        &format!("files over {MAX_LINES} lines whose opening comment does not say \"{COHERENT}\""),
        &big,
    );
}

// The checker itself.

fn graph(edges: &[(&str, &str)]) -> Graph {
    let mut g = Graph::new();
    for (i, (a, b)) in edges.iter().enumerate() {
        g.entry(a.to_string())
            .or_default()
            .insert(b.to_string(), ("f.rs".into(), i + 1));
        g.entry(b.to_string()).or_default();
    }
    g
}

#[test]
fn cycle_finder_finds_cycles_and_only_cycles() {
    // A chain and a diamond: no cycle.
    let dag = graph(&[("a", "b"), ("b", "c"), ("a", "d"), ("d", "c"), ("c", "e")]);
    assert!(cyclic_components(&dag).is_empty());
    assert!(cycles(&dag).is_empty());
    // Two cycles: a → b → c → a, and d ⇄ e; f hangs off without being in one.
    let g = graph(&[
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("c", "d"),
        ("d", "e"),
        ("e", "d"),
        ("e", "f"),
    ]);
    assert_eq!(
        cyclic_components(&g),
        vec![
            vec!["d".to_string(), "e".into()],
            vec!["a".into(), "b".into(), "c".into()]
        ]
    );
    let found: Vec<String> = cycles(&g).iter().map(|c| show_cycle(&g, c)).collect();
    assert_eq!(
        found,
        vec![
            "d → e (f.rs:5) → d (f.rs:6)".to_string(),
            "a → b (f.rs:1) → c (f.rs:2) → a (f.rs:3)".into(),
        ]
    );
    // Every edge of a component is shown on some cycle: x ⇄ y and x ⇄ z.
    let two = graph(&[("x", "y"), ("y", "x"), ("x", "z"), ("z", "x")]);
    assert_eq!(
        cycles(&two),
        vec![
            vec!["x".to_string(), "y".into()],
            vec!["x".into(), "z".into()]
        ]
    );
    // A self-dependency is not a cycle between modules.
    assert!(cycles(&graph(&[("s", "s")])).is_empty());
}

#[test]
fn paths_are_read_from_code_not_comments_strings_or_tests() {
    let code = r##"
//! Uses crate::doc::only in a comment.
use crate::a::b::{c, d::{e, self}};
use super::sibling::*;
use std::io;
/* crate::block::comment */
fn f<'a>(x: &'a str) -> char {
    let _ = "crate::in_string::x";
    let _ = r#"crate::raw::x "quoted" "#;
    crate::inline::call(x);
    'x'
}
#[cfg(test)]
mod tests {
    use crate::test_only::x;
    fn g() { crate::also_test::y(); }
}
fn h() { rules::data(); }
"##;
    let cleaned = strip_cfg_test(&clean(code));
    assert_eq!(cleaned.lines().count(), code.lines().count());
    let found: Vec<(String, usize)> = paths(&cleaned)
        .into_iter()
        .map(|(p, l)| (p.join("::"), l))
        .collect();
    assert_eq!(
        found,
        vec![
            ("crate::a::b::c".into(), 3),
            ("crate::a::b::d::e".into(), 3),
            ("crate::a::b::d".into(), 3),
            ("super::sibling".into(), 4),
            ("std::io".into(), 5),
            ("crate::inline::call".into(), 10),
            ("rules::data".into(), 18),
        ]
    );
    // Resolution: the longest known module prefix, relative paths from the file's module.
    let known: BTreeSet<ModPath> = [
        vec![],
        vec!["a".to_string()],
        vec!["a".into(), "b".into()],
        vec!["svc".into()],
        vec!["svc".into(), "rules".into()],
        vec!["svc".into(), "spec".into()],
    ]
    .into();
    let p = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let svc = vec!["svc".to_string()];
    let spec = vec!["svc".to_string(), "spec".into()];
    assert_eq!(
        resolve(&p("crate::a::b::d::e"), &svc, &known),
        Some(p("a::b"))
    );
    assert_eq!(
        resolve(&p("rules::data"), &svc, &known),
        Some(p("svc::rules"))
    );
    assert_eq!(
        resolve(&p("super::rules::x"), &spec, &known),
        Some(p("svc::rules"))
    );
    assert_eq!(resolve(&p("super::Thing"), &spec, &known), Some(p("svc")));
    assert_eq!(resolve(&p("std::io"), &svc, &known), None);
    assert_eq!(module_of(Path::new("dns/mod.rs")), p("dns"));
    assert_eq!(module_of(Path::new("dns/server.rs")), p("dns::server"));
    assert_eq!(module_of(Path::new("lib.rs")), ModPath::new());
}
