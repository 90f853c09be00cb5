//! Where a key path (`networks.lab.subnets[0]`) is in a YAML text, for errors found after
//! parsing: serde_yaml gives no positions of values, and an error such as "bad CIDR"
//! should still point at the line to fix.
//!
//! Block style is followed by indentation (keys, `- ` list items, nesting); a path that
//! goes into flow style (`{...}`, `[...]`) stops at the deepest key found, and the value,
//! if given, is looked for on that line. Anything not found gives the deepest place found
//! (at worst none), never a wrong deeper one.

/// One step of a path: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the document's root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(pub Vec<Seg>);

impl Path {
    pub fn root() -> Path {
        Path(vec![])
    }

    pub fn key(&self, k: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One node start in the text: a `- ` item marker or a `key:` (or scalar) after it.
#[derive(Debug)]
struct Entry<'a> {
    line: usize,
    col: usize,
    dash: bool,
    text: &'a str,
}

fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut out = vec![];
    for (line, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut col = raw.len() - trimmed.len();
        let mut rest = trimmed;
        while let Some(r) = rest
            .strip_prefix('-')
            .filter(|r| r.is_empty() || r.starts_with(' '))
        {
            out.push(Entry {
                line,
                col,
                dash: true,
                text: rest,
            });
            let after = r.trim_start();
            col += rest.len() - after.len();
            rest = after;
            if rest.is_empty() {
                break;
            }
        }
        if !rest.is_empty() {
            out.push(Entry {
                line,
                col,
                dash: false,
                text: rest,
            });
        }
    }
    out
}

/// Whether an entry is `key:` (plain or quoted).
fn is_key(e: &Entry, key: &str) -> bool {
    let t = e.text;
    [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ]
    .iter()
    .any(|k| t.starts_with(k.as_str()) && t[k.len()..].chars().next().is_none_or(|c| c == ' '))
}

/// The direct children of the entry at `parent` (all top-level entries for None).
fn children<'a, 'b>(es: &'b [Entry<'a>], parent: Option<usize>) -> Vec<usize> {
    let (start, col) = match parent {
        Some(p) => (p + 1, Some(es[p].col)),
        None => (0, None),
    };
    let mut end = es.len();
    for (i, e) in es.iter().enumerate().skip(start) {
        if col.is_some_and(|c| e.col <= c) {
            end = i;
            break;
        }
    }
    let Some(min) = es[start..end].iter().map(|e| e.col).min() else {
        return vec![];
    };
    (start..end).filter(|&i| es[i].col == min).collect()
}

/// 1-based line and column of `path` in `text`; with `value`, of the value when it is on
/// the line found (a flow-style list item, an inline value).
pub fn locate(text: &str, path: &Path, value: Option<&str>) -> Option<(usize, usize)> {
    let es = entries(text);
    let mut at: Option<usize> = None;
    for seg in &path.0 {
        // A dash entry's content (a key on the same line) sits in the dash's children.
        let kids = children(&es, at);
        let next = match seg {
            Seg::Key(k) => kids
                .iter()
                .copied()
                .find(|&i| !es[i].dash && is_key(&es[i], k)),
            Seg::Index(n) => kids.iter().copied().filter(|&i| es[i].dash).nth(*n),
        };
        match next {
            Some(i) => at = Some(i),
            None => break,
        }
    }
    let e = &es[at?];
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(e.line).copied().unwrap_or("");
    let col = value
        .filter(|v| !v.is_empty())
        .and_then(|v| line[e.col..].find(v).map(|c| c + e.col))
        .unwrap_or(e.col);
    Some((e.line + 1, col + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
name: x # a comment
networks:
  lab:
    subnets:
      - 10.1.0.0/24
      - 10.2.0.0/24
  other: {subnet: 10.3.0.0/24}
policies:
  - network: lab
    from: a
  - network: other
    to: [b]
";

    fn at(path: Path, v: Option<&str>) -> Option<(usize, usize)> {
        locate(DOC, &path, v)
    }

    #[test]
    fn finds_keys_items_and_values() {
        let r = Path::root();
        assert_eq!(at(r.key("name"), None), Some((1, 1)));
        assert_eq!(at(r.key("networks").key("lab"), None), Some((3, 3)));
        let subnets = r.key("networks").key("lab").key("subnets");
        assert_eq!(at(subnets.index(1), None), Some((6, 7)));
        assert_eq!(at(subnets.index(1), Some("10.2.0.0/24")), Some((6, 9)));
        assert_eq!(
            at(r.key("policies").index(0).key("from"), None),
            Some((10, 5))
        );
        assert_eq!(
            at(r.key("policies").index(1).key("network"), None),
            Some((11, 5))
        );
        assert_eq!(at(r.key("policies").index(1), None), Some((11, 3)));
        // Flow style: the deepest key, the value on its line.
        let other = r.key("networks").key("other");
        assert_eq!(at(other.key("subnet"), Some("10.3.0.0/24")), Some((7, 19)));
        // Not there: the deepest place found, or none.
        assert_eq!(at(r.key("networks").key("nosuch"), None), Some((2, 1)));
        assert_eq!(at(r.key("nosuch"), None), None);
        assert_eq!(
            r.key("policies").index(1).key("to").to_string(),
            "policies[1].to"
        );
    }
}
