//! resolv.conf for CLI sandboxes: /etc/netns/NAME/resolv.conf (what `ip netns exec` and
//! `knit sandbox exec` mount over /etc/resolv.conf) points at the gateways of the DNS
//! networks the sandbox is on. knit only rewrites or removes files it wrote itself.

use crate::error::{IoContext, Result};
use crate::store::Store;
use std::path::PathBuf;

const MARKER: &str =
    "# written by knit: nameservers are the gateways of the sandbox's DNS networks";

fn path(name: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(name).join("resolv.conf")
}

/// The file's content for a sandbox, or None if it is on no DNS network.
pub fn render(store: &Store, sandbox: &str) -> Result<Option<String>> {
    let mut servers = vec![];
    let mut search = vec![];
    for a in store.attachments_of_sandbox(sandbox)? {
        let net = store.network(&a.network)?;
        if !net.serves_dns() {
            continue;
        }
        for s in &net.subnets {
            if a.ips.iter().any(|ip| s.subnet.contains(&ip.addr())) && !servers.contains(&s.gateway)
            {
                servers.push(s.gateway);
            }
        }
        if let Some(d) = net.dns_domain
            && !search.contains(&d)
        {
            search.push(d);
        }
    }
    if servers.is_empty() {
        return Ok(None);
    }
    let mut s = format!("{MARKER}\n");
    for ns in servers.iter().take(3) {
        s += &format!("nameserver {ns}\n");
    }
    if !search.is_empty() {
        s += &format!("search {}\n", search.join(" "));
    }
    Ok(Some(s))
}

/// Brings a named sandbox's resolv.conf in line with its attachments.
pub fn sync(store: &Store, sandbox: &str) -> Result<()> {
    if crate::model::validate_name("sandbox", sandbox).is_err() {
        return Ok(()); // pid:, paths and CNI containers get DNS from their runtime
    }
    let p = path(sandbox);
    let ours = match std::fs::read_to_string(&p) {
        Ok(text) => text.starts_with(MARKER),
        Err(_) => true,
    };
    if !ours {
        return Ok(());
    }
    match render(store, sandbox)? {
        Some(text) => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).op(|| format!("create {}", dir.display()))?;
            }
            std::fs::write(&p, text).op(|| format!("write {}", p.display()))
        }
        None => {
            let _ = std::fs::remove_file(&p);
            if let Some(dir) = p.parent() {
                let _ = std::fs::remove_dir(dir); // only if empty
            }
            Ok(())
        }
    }
}
