//! Human-readable rendering of inspection results.

use crate::node::inspect::{NetnsView, SandboxView};

fn lines<T: std::fmt::Display>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn section(title: &str, lines: &[String]) {
    println!("  {title}:");
    if lines.is_empty() {
        println!("    (none)");
    }
    for l in lines {
        println!("    {l}");
    }
}

fn netns_view(v: &NetnsView) {
    let links: Vec<String> = v
        .links
        .iter()
        .map(|l| {
            format!(
                "{}: {} {} mac {} mtu {} {}",
                l.index,
                l.name,
                l.kind.as_deref().unwrap_or(""),
                l.mac.as_deref().unwrap_or("-"),
                l.mtu.map(|m| m.to_string()).unwrap_or("-".into()),
                if l.up { "UP" } else { "DOWN" }
            )
        })
        .collect();
    section("links", &links);
    section("addresses", &lines(&v.addresses));
    section("routes", &lines(&v.routes));
    section("neighbours", &lines(&v.neighbours));
    let sys: Vec<String> = v
        .sysctls
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    section("sysctls", &sys);
}

pub fn print_inspect(v: &SandboxView) {
    println!("sandbox {} ({})", v.sandbox, v.netns);
    let atts: Vec<String> = v
        .attachments
        .iter()
        .map(|a| {
            let ips: Vec<String> = a.ips.iter().map(|i| i.to_string()).collect();
            format!(
                "{} {} {} mac {} host {} {:?}",
                a.network,
                a.ifname,
                ips.join(","),
                a.mac,
                a.host_ifname,
                a.state
            )
        })
        .collect();
    section("attachments", &atts);
    match &v.inside {
        Some(inside) => {
            println!("inside the sandbox:");
            netns_view(inside);
        }
        None => println!("inside the sandbox: namespace not found"),
    }
    if let Some(flows) = &v.flows {
        let lines: Vec<String> = flows
            .iter()
            .map(|f| {
                format!(
                    "{} {} | reply {}{}{}{}",
                    f.proto,
                    f.original,
                    f.reply,
                    if f.nat.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", f.nat)
                    },
                    if f.state.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", f.state)
                    },
                    f.timeout_s
                        .map(|t| format!(" {t}s left"))
                        .unwrap_or_default()
                )
            })
            .collect();
        section("flows (node conntrack)", &lines);
    }
    println!("on the node:");
    let hl: Vec<String> = v
        .host_links
        .iter()
        .map(|l| {
            format!(
                "{}: {} mac {} {}",
                l.index,
                l.name,
                l.mac.as_deref().unwrap_or("-"),
                if l.up { "UP" } else { "DOWN" }
            )
        })
        .collect();
    section("host links", &hl);
    let sys: Vec<String> = v
        .node_sysctls
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    section("sysctls", &sys);
    section("knit nft rules and elements", &v.nft_rules);
    if let Some(peers) = &v.cluster_peers {
        let lines: Vec<String> = peers
            .iter()
            .map(|p| {
                let blocks: Vec<String> = p.blocks.iter().map(|b| b.to_string()).collect();
                format!(
                    "{} {} path {} blocks {} vtep {} lease {} programmed {}",
                    p.name,
                    p.underlay,
                    p.path,
                    blocks.join(","),
                    p.vtep_macs.join(","),
                    p.lease_left.map_or("expired".into(), |t| format!("{t} s")),
                    if p.programmed { "yes" } else { "NO" }
                )
            })
            .collect();
        section("cluster nodes", &lines);
    }
    if let Some(e) = &v.cluster_error {
        section("cluster nodes", &[format!("unavailable: {e}")]);
    }
}
