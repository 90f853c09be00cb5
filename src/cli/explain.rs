//! The commands that explain the network: `doctor` (why can't A reach B), `trace` (the way
//! one real packet took) and `graph` (the topology drawn).

use super::{graph, print_json};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::node::trace::Trace;

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// A sandbox (NAME, /PATH, pid:PID, cni:CONTAINERID/IFNAME), `node`, or the address of
    /// a host outside the node.
    pub src: String,
    /// A sandbox, `node` (a published port or node port with :PORT), a service (NAME or
    /// VIP) or any address; optionally :PORT[/tcp|udp].
    pub dst: String,
}

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// A sandbox, any named network namespace (an outside host of a lab), or `node`.
    pub src: String,
    /// A sandbox, `node[:PORT]`, a service (NAME or VIP) or an address; optionally
    /// :PORT[/tcp|udp] (without a port the probe is an ICMP echo).
    pub dst: String,
    /// How long to wait for an answer (under TCP's first retransmission, 1 s).
    #[arg(long, default_value_t = 900)]
    pub timeout_ms: u64,
}

#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    /// svg (drawn by knit), dot (for graphviz) or json (the model).
    #[arg(long, default_value = "svg")]
    pub format: String,
    /// The node's network namespace, when it is not this command's own (e.g.
    /// /run/netns/NODE of a lab): links and addresses are read there.
    #[arg(long)]
    pub node_ns: Option<std::path::PathBuf>,
}

/// `--node-ns`: this command's thread moves there before anything reads the kernel.
pub fn enter_node_ns(a: &GraphArgs) -> Result<()> {
    match &a.node_ns {
        Some(p) => crate::netns::Netns::open(p)?.enter(),
        None => Ok(()),
    }
}

pub fn doctor(node: &Node, a: &DoctorArgs, json: bool) -> Result<i32> {
    // Exit 2 means "a step is broken": doctor's own failures (bad input, a name nobody
    // has) are 1, whatever their kind.
    let d = match node.doctor(&a.src, &a.dst) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("knit: error: {e}");
            return Ok(1);
        }
    };
    if json {
        print_json(&d);
    } else {
        let mut fixed = false;
        for s in &d.steps {
            println!("{} {}: {}", if s.ok { "✓" } else { "✗" }, s.step, s.detail);
            if let (Some(f), false) = (&s.fix, fixed) {
                println!("    fix: {f}");
                fixed = true;
            }
        }
    }
    Ok(if d.healthy { 0 } else { 2 })
}

pub fn trace(node: &Node, a: &TraceArgs, json: bool) -> Result<i32> {
    let t = node.trace(
        &a.src,
        &a.dst,
        std::time::Duration::from_millis(a.timeout_ms),
    )?;
    if json {
        print_json(&t);
    } else {
        print!("{}", text(&t));
    }
    Ok(if t.result == "delivered" { 0 } else { 2 })
}

pub fn graph(node: &Node, a: &GraphArgs) -> Result<i32> {
    let g = node.graph()?;
    match a.format.as_str() {
        "json" => print_json(&g),
        "dot" => print!("{}", graph::dot(&g)),
        "svg" => print!("{}", graph::svg(&g)),
        other => {
            return Err(Error::invalid(
                "--format",
                other,
                "expected svg, dot or json",
            ));
        }
    }
    Ok(0)
}

/// A trace as text: one block per namespace the packet passed, its hops in order.
pub fn text(t: &Trace) -> String {
    let mut out = format!("trace {} from {}", t.probe, t.source);
    if !t.probe.ends_with(&t.destination) {
        out += &format!(" ({})", t.destination);
    }
    out.push('\n');
    for p in &t.passes {
        out += &format!("\n{} [{}]: {}\n", p.namespace, p.direction, p.packet);
        if let Some(n) = &p.nat {
            out += &format!("    NAT on the way here: {n}\n");
        }
        for h in &p.hops {
            if let Some(n) = &h.nat {
                out += &format!("    {:<12} NAT: {n}\n", "");
            }
            let rule = h.rule.as_deref().unwrap_or("");
            out += &format!(
                "    {:<12} {} {}: {}{}{}\n",
                h.hook,
                h.table,
                h.chain,
                if rule.is_empty() {
                    String::new()
                } else {
                    format!("`{rule}` → ")
                },
                h.verdict,
                h.knit
                    .as_ref()
                    .map(|k| format!("  [{k}]"))
                    .unwrap_or_default()
            );
        }
    }
    out += &format!("\n{}: {}\n", t.result, t.detail);
    out
}
