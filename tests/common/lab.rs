//! A lab: a `World` with one network `n` and named sandboxes attached to it, plus the
//! servers they run, kept alive as long as the lab (services, policy and spoofing tests).
//! Sandboxes are addressed by their short name: `l["web"]` is web's namespace.

use super::{Server, World};

pub struct Lab {
    pub w: World,
    /// (short name, namespace), in the order they were attached.
    sandboxes: Vec<(String, String)>,
    servers: Vec<Server>,
}

impl Lab {
    /// `w` with network `n` (bridge driver) on `subnets`.
    pub fn new(w: World, subnets: &[&str]) -> Lab {
        let mut args = vec!["network", "create", "n"];
        for s in subnets {
            args.extend(["--subnet", s]);
        }
        w.ok(&args);
        Lab {
            w,
            sandboxes: vec![],
            servers: vec![],
        }
    }

    /// A new sandbox `short` attached to `n` with `extra` attach arguments (labels,
    /// published ports, ...); returns its namespace.
    pub fn attach(&mut self, short: &str, extra: &[&str]) -> String {
        assert!(
            !self.sandboxes.iter().any(|(s, _)| s == short),
            "sandbox {short} twice in one lab"
        );
        let ns = self.w.sandbox(short);
        let mut args = vec!["attach", "n", ns.as_str()];
        args.extend_from_slice(extra);
        self.w.ok(&args);
        self.sandboxes.push((short.to_string(), ns.clone()));
        ns
    }

    /// Keeps `server` running until the lab is dropped.
    pub fn serve(&mut self, server: Server) {
        self.servers.push(server);
    }

    /// The namespace of sandbox `short`.
    pub fn ns(&self, short: &str) -> &str {
        self.sandboxes
            .iter()
            .find(|(s, _)| s == short)
            .map(|(_, ns)| ns.as_str())
            .unwrap_or_else(|| panic!("no sandbox {short} in this lab"))
    }

    /// Namespaces of the sandboxes named `prefix` followed by a number (`b0`, `b1`, ...),
    /// in the order they were attached.
    pub fn numbered(&self, prefix: &str) -> Vec<String> {
        self.sandboxes
            .iter()
            .filter(|(s, _)| {
                s.strip_prefix(prefix)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(_, ns)| ns.clone())
            .collect()
    }

    /// The bridge of network `n`.
    pub fn bridge(&self) -> String {
        self.w.json(&["network", "inspect", "n"])["network"]["bridge"]
            .as_str()
            .expect("network n has a bridge")
            .to_string()
    }
}

impl std::ops::Index<&str> for Lab {
    type Output = str;

    fn index(&self, short: &str) -> &str {
        self.ns(short)
    }
}
