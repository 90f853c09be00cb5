//! The path tree: routes hang on the node of their path's segments, so a lookup walks the
//! request's path once (static child first, then a `:param` child, backing off to the
//! subtrees on the way) instead of scanning every route. Candidates come out most specific
//! first: a deeper node before a shallower one, an exact path before a subtree at the same
//! node, a static segment before a parameter.

use super::route::{PathSpec, Seg};
use std::collections::HashMap;

#[derive(Default, Debug)]
struct Node {
    statics: HashMap<String, Node>,
    param: Option<Box<Node>>,
    /// Routes whose path ends exactly here, best first.
    exact: Vec<usize>,
    /// Routes that match here and everything below, best first.
    subtree: Vec<usize>,
}

#[derive(Default, Debug)]
pub struct Tree {
    root: Node,
}

impl Tree {
    /// Adds route `index`. Call in priority order (best first) for each node's lists to be
    /// ordered.
    pub fn insert(&mut self, spec: &PathSpec, index: usize) {
        let (segs, exact) = match spec {
            PathSpec::Exact(s) => (s, true),
            PathSpec::Subtree(s) => (s, false),
        };
        let mut node = &mut self.root;
        for s in segs {
            node = match s {
                Seg::Static(name) => node.statics.entry(name.clone()).or_default(),
                Seg::Param => node.param.get_or_insert_with(Box::default),
            };
        }
        if exact {
            node.exact.push(index);
        } else {
            node.subtree.push(index);
        }
    }

    /// Offers the candidates for `path` to `accept`, most specific first, until it takes
    /// one; returns that one.
    pub fn lookup(&self, path: &str, accept: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        let segs: Vec<&str> = super::route::segments(path).collect();
        walk(&self.root, &segs, accept)
    }
}

fn walk(node: &Node, segs: &[&str], accept: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
    match segs.split_first() {
        None => {
            if let Some(&i) = node.exact.iter().find(|&&i| accept(i)) {
                return Some(i);
            }
        }
        Some((first, rest)) => {
            if let Some(child) = node.statics.get(*first)
                && let Some(i) = walk(child, rest, accept)
            {
                return Some(i);
            }
            // A parameter takes a non-empty segment only ("/a/" is not "/a/:id").
            if !first.is_empty()
                && let Some(child) = &node.param
                && let Some(i) = walk(child, rest, accept)
            {
                return Some(i);
            }
        }
    }
    node.subtree.iter().copied().find(|&i| accept(i))
}
