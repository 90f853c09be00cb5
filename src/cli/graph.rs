//! `knit graph --format svg|dot|json`: the node's topology drawn. SVG is laid out here
//! (no graphviz at run time): sandboxes in the left column, networks in the middle (with
//! their policy), services on the right, a line per interface and per backend.

use crate::node::graph::{Graph, GraphSandbox};
use std::fmt::Write;

const LINE: i32 = 14;
const PAD: i32 = 8;
const GAP: i32 = 14;
const COLS: [i32; 3] = [20, 400, 780];
const BOX_W: i32 = 330;

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn dot_str(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn sandbox_lines(s: &GraphSandbox) -> Vec<String> {
    let mut out = vec![s.name.clone()];
    for i in &s.interfaces {
        let link = if i.link == "up" {
            String::new()
        } else {
            format!(" [node end {}]", i.link)
        };
        out.push(format!(
            "{} {} ({}){link}",
            i.ifname,
            i.addresses.join(" "),
            i.network
        ));
        for p in &i.published {
            out.push(format!("  publish {p}"));
        }
        if !i.labels.is_empty() {
            out.push(format!("  labels {}", i.labels.join(",")));
        }
    }
    out
}

fn network_lines(g: &Graph, i: usize) -> Vec<String> {
    let n = &g.networks[i];
    let mut out = vec![format!("network {} ({})", n.name, n.driver)];
    if let Some(b) = &n.bridge {
        out.push(format!("bridge {b}"));
    }
    out.extend(n.subnets.iter().cloned());
    let mut flags = vec![];
    if n.internal {
        flags.push("internal".to_string());
    }
    if n.masquerade {
        flags.push("masquerade".into());
    }
    flags.push(format!("ingress {}, egress {}", n.ingress, n.egress));
    out.push(flags.join(", "));
    for r in g.rules.iter().filter(|r| r.network == n.name) {
        out.push(format!(
            "#{} {} {} -> {} :{}",
            r.id, r.direction, r.from, r.to, r.port
        ));
    }
    out
}

pub fn dot(g: &Graph) -> String {
    let mut s = String::from(
        "digraph knit {\n  rankdir=LR;\n  node [fontname=\"monospace\", fontsize=10];\n",
    );
    for (i, n) in g.networks.iter().enumerate() {
        let label = network_lines(g, i).join("\\n");
        let _ = writeln!(
            s,
            "  \"net:{}\" [shape=box, label=\"{}\"];",
            dot_str(&n.name),
            dot_str(&label)
        );
    }
    for sb in &g.sandboxes {
        let label = sandbox_lines(sb).join("\\n");
        let _ = writeln!(
            s,
            "  \"sb:{}\" [shape=ellipse, label=\"{}\"];",
            dot_str(&sb.name),
            dot_str(&label)
        );
        for i in &sb.interfaces {
            let _ = writeln!(
                s,
                "  \"sb:{}\" -> \"net:{}\" [label=\"{} / {}\", dir=none];",
                dot_str(&sb.name),
                dot_str(&i.network),
                dot_str(&i.ifname),
                dot_str(&i.host_ifname)
            );
        }
    }
    for svc in &g.services {
        let _ = writeln!(
            s,
            "  \"svc:{}\" [shape=diamond, label=\"{}\\n{}\"];",
            dot_str(&svc.name),
            dot_str(&svc.name),
            dot_str(&svc.vip)
        );
        for b in &svc.backends {
            let target = backend_sandbox(g, b)
                .map(|n| format!("sb:{n}"))
                .unwrap_or_else(|| format!("ip:{b}"));
            let _ = writeln!(
                s,
                "  \"svc:{}\" -> \"{}\" [label=\"{}\"];",
                dot_str(&svc.name),
                dot_str(&target),
                dot_str(b)
            );
        }
    }
    for p in &g.peers {
        let _ = writeln!(
            s,
            "  \"peer:{}\" [shape=box3d, label=\"node {}\"];",
            dot_str(p),
            dot_str(p)
        );
    }
    s.push_str("}\n");
    s
}

/// The sandbox a `SANDBOX:PORT` backend names, if it is one of the graph's.
fn backend_sandbox<'a>(g: &'a Graph, backend: &str) -> Option<&'a str> {
    let name = backend.rsplit_once(':').map(|(n, _)| n)?;
    g.sandboxes
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.name.as_str())
}

struct Placed {
    x: i32,
    y: i32,
    h: i32,
}

fn place(lines: &[Vec<String>], x: i32) -> (Vec<Placed>, i32) {
    let mut y = 40;
    let mut out = vec![];
    for l in lines {
        let h = PAD * 2 + LINE * l.len() as i32;
        out.push(Placed { x, y, h });
        y += h + GAP;
    }
    (out, y)
}

fn draw_box(s: &mut String, p: &Placed, lines: &[String], class: &str) {
    let _ = writeln!(
        s,
        "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{BOX_W}\" height=\"{}\" rx=\"6\"/>",
        p.x, p.y, p.h
    );
    for (i, l) in lines.iter().enumerate() {
        let weight = if i == 0 { " font-weight=\"bold\"" } else { "" };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\"{weight}>{}</text>",
            p.x + PAD,
            p.y + PAD + LINE * (i as i32 + 1) - 3,
            xml(l)
        );
    }
}

pub fn svg(g: &Graph) -> String {
    let sb_lines: Vec<Vec<String>> = g.sandboxes.iter().map(sandbox_lines).collect();
    let net_lines: Vec<Vec<String>> = (0..g.networks.len()).map(|i| network_lines(g, i)).collect();
    let svc_lines: Vec<Vec<String>> = g
        .services
        .iter()
        .map(|s| {
            let mut l = vec![format!("service {}", s.name), format!("vip {}", s.vip)];
            if let Some(p) = s.node_port {
                l.push(format!("node port {p}"));
            }
            l.extend(s.backends.iter().map(|b| format!("-> {b}")));
            l
        })
        .chain(g.peers.iter().map(|p| vec![format!("peer node {p}")]))
        .collect();
    let (sbs, h1) = place(&sb_lines, COLS[0]);
    let (nets, h2) = place(&net_lines, COLS[1]);
    let (svcs, h3) = place(&svc_lines, COLS[2]);
    let height = h1.max(h2).max(h3).max(80) + 20;
    let width = COLS[2] + BOX_W + 20;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"monospace\" font-size=\"11\">\n\
<style>rect.sb{{fill:#eef6ff;stroke:#3b78c4}} rect.net{{fill:#f3fbef;stroke:#4a9a3a}} rect.svc{{fill:#fff6e8;stroke:#c48a2b}} line{{stroke:#777;stroke-width:1.2}}</style>\n\
<text x=\"20\" y=\"24\" font-size=\"14\" font-weight=\"bold\">sandboxes</text><text x=\"{}\" y=\"24\" font-size=\"14\" font-weight=\"bold\">networks</text><text x=\"{}\" y=\"24\" font-size=\"14\" font-weight=\"bold\">services</text>\n",
        COLS[1], COLS[2]
    );
    // Lines first, so boxes are drawn over them.
    for (si, sb) in g.sandboxes.iter().enumerate() {
        for (k, i) in sb.interfaces.iter().enumerate() {
            if let Some(ni) = g.networks.iter().position(|n| n.name == i.network) {
                let from = &sbs[si];
                let to = &nets[ni];
                let y1 = from.y + PAD + LINE * (k as i32 + 2) - 6;
                let _ = writeln!(
                    s,
                    "<line x1=\"{}\" y1=\"{y1}\" x2=\"{}\" y2=\"{}\"/>",
                    from.x + BOX_W,
                    to.x,
                    to.y + PAD + LINE / 2
                );
            }
        }
    }
    for (vi, svc) in g.services.iter().enumerate() {
        for (k, b) in svc.backends.iter().enumerate() {
            if let Some(name) = backend_sandbox(g, b)
                && let Some(si) = g.sandboxes.iter().position(|x| x.name == name)
            {
                let from = &svcs[vi];
                let to = &sbs[si];
                let _ = writeln!(
                    s,
                    "<line stroke-dasharray=\"4 3\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
                    from.x,
                    from.y + PAD + LINE * (k as i32 + 3) - 6,
                    to.x + BOX_W,
                    to.y + PAD + LINE / 2
                );
            }
        }
    }
    for (p, l) in sbs.iter().zip(&sb_lines) {
        draw_box(&mut s, p, l, "sb");
    }
    for (p, l) in nets.iter().zip(&net_lines) {
        draw_box(&mut s, p, l, "net");
    }
    for (p, l) in svcs.iter().zip(&svc_lines) {
        draw_box(&mut s, p, l, "svc");
    }
    s.push_str("</svg>\n");
    s
}
