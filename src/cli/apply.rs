//! `knit apply FILE` and `knit destroy FILE`: read the file, plan, print, run (see
//! `crate::apply`).

use super::print_json;
use crate::apply::plan::Plan;
use crate::apply::{Topology, exec, load};
use crate::error::Result;
use crate::node::Node;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ApplyCli {
    /// The topology file (YAML).
    pub file: PathBuf,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ApplyCli {
    /// Whether the command changes the node (for `knit_command_seconds`).
    pub fn changes(&self) -> bool {
        !self.dry_run
    }
}

pub fn apply(a: ApplyCli, state_dir: &Path, json: bool) -> Result<i32> {
    let mut node = Node::open(state_dir, false)?;
    let known = exec::known(&node)?;
    let want = load(&a.file, Some(&known))?;
    let plan = exec::apply(&mut node, &want, a.dry_run)?;
    report(&plan, a.dry_run, json, "applied");
    Ok(0)
}

pub fn destroy(a: ApplyCli, state_dir: &Path, json: bool) -> Result<i32> {
    // What the file refers to may be gone by now: only its name matters here.
    let name = load(&a.file, None)?.name;
    let mut node = Node::open(state_dir, false)?;
    let plan = exec::apply(&mut node, &Topology::empty(&name), a.dry_run)?;
    report(&plan, a.dry_run, json, "removed");
    Ok(0)
}

fn report(plan: &Plan, dry_run: bool, json: bool, done: &str) {
    if json {
        let steps: Vec<_> = plan.steps.iter().map(|s| s.view()).collect();
        print_json(&serde_json::json!({
            "topology": plan.topology,
            "dry_run": dry_run,
            "changed": !dry_run && !plan.steps.is_empty(),
            "steps": steps,
            "notes": plan.notes,
        }));
        return;
    }
    for l in plan.lines() {
        println!("{l}");
    }
    for n in &plan.notes {
        println!("  note: {n}");
    }
    if !plan.steps.is_empty() {
        println!(
            "topology {}: {} step(s) {}",
            plan.topology,
            plan.steps.len(),
            if dry_run {
                "planned (dry run: nothing changed)"
            } else {
                done
            }
        );
    }
}
