//! A small libcni-style driver: runs a conflist's plugins in order for ADD (each gets the
//! previous result as prevResult), in reverse for DEL (with the cached result), passes only
//! declared capabilities in runtimeConfig, and caches results like libcni does.

use super::{KNIT, World};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;

pub const REF_DIR: &str = "/usr/lib/cni";

#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
}

impl Outcome {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.stdout))
    }
    pub fn err_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected a failure, got {}", self.stdout);
        self.json()["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code in {}", self.stdout))
    }
}

fn binary(kind: &str) -> String {
    if kind == "knit" {
        KNIT.to_string()
    } else {
        format!("{REF_DIR}/{kind}")
    }
}

impl World {
    /// Runs one plugin binary once, inside the node namespace.
    pub fn cni_exec(&self, kind: &str, conf: &Value, env: &[(&str, &str)]) -> Outcome {
        self.cni_exec_raw(kind, conf.to_string().as_bytes(), env)
    }

    pub fn cni_exec_raw(&self, kind: &str, stdin: &[u8], env: &[(&str, &str)]) -> Outcome {
        let mut c = super::command_in(&self.node, &binary(kind));
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("KNIT_STATE_DIR", &self.state)
            .env("CNI_PATH", REF_DIR);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plugin");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let o = child.wait_with_output().unwrap();
        Outcome {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        }
    }
}

pub struct Conflist {
    pub name: String,
    pub version: String,
    pub plugins: Vec<Value>,
    cache: HashMap<(String, String), Value>,
}

impl Conflist {
    pub fn new(name: &str, version: &str, plugins: Vec<Value>) -> Self {
        Conflist {
            name: name.into(),
            version: version.into(),
            plugins,
            cache: HashMap::new(),
        }
    }

    fn conf_for(&self, plugin: &Value, runtime: &Value, prev: Option<&Value>) -> Value {
        let mut c = plugin.clone();
        c["name"] = json!(self.name);
        c["cniVersion"] = json!(self.version);
        let caps = plugin["capabilities"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut rc = serde_json::Map::new();
        if let Some(r) = runtime.as_object() {
            for (k, v) in r {
                if caps.get(k).and_then(Value::as_bool) == Some(true) {
                    rc.insert(k.clone(), v.clone());
                }
            }
        }
        if !rc.is_empty() {
            c["runtimeConfig"] = Value::Object(rc);
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn env<'a>(
        cmd: &'a str,
        cid: &'a str,
        netns: &'a str,
        ifname: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", ifname),
            ("CNI_ARGS", "IgnoreUnknown=1"),
        ]
    }

    pub fn add(
        &mut self,
        w: &World,
        cid: &str,
        netns: &str,
        ifname: &str,
        runtime: &Value,
    ) -> Result<Value, Outcome> {
        let mut prev: Option<Value> = None;
        for p in &self.plugins {
            let conf = self.conf_for(p, runtime, prev.as_ref());
            let o = w.cni_exec(
                p["type"].as_str().unwrap(),
                &conf,
                &Self::env("ADD", cid, netns, ifname),
            );
            if o.code != 0 {
                return Err(o);
            }
            prev = Some(o.json());
        }
        let result = prev.unwrap_or(Value::Null);
        self.cache
            .insert((cid.into(), ifname.into()), result.clone());
        Ok(result)
    }

    /// Runs `cmd` through `plugins` in order, each with the cached result as prevResult.
    fn run_chain<'a>(
        &self,
        w: &World,
        cmd: &str,
        plugins: impl Iterator<Item = &'a Value>,
        ids: (&str, &str, &str),
        runtime: &Value,
        prev: Option<&Value>,
    ) -> Result<(), Outcome> {
        let (cid, netns, ifname) = ids;
        for p in plugins {
            let conf = self.conf_for(p, runtime, prev);
            let o = w.cni_exec(
                p["type"].as_str().unwrap(),
                &conf,
                &Self::env(cmd, cid, netns, ifname),
            );
            if o.code != 0 {
                return Err(o);
            }
        }
        Ok(())
    }

    pub fn check(
        &self,
        w: &World,
        cid: &str,
        netns: &str,
        ifname: &str,
        runtime: &Value,
    ) -> Result<(), Outcome> {
        let prev = self.cache.get(&(cid.into(), ifname.into()));
        self.run_chain(
            w,
            "CHECK",
            self.plugins.iter(),
            (cid, netns, ifname),
            runtime,
            prev,
        )
    }

    pub fn del(
        &mut self,
        w: &World,
        cid: &str,
        netns: &str,
        ifname: &str,
        runtime: &Value,
    ) -> Result<(), Outcome> {
        let prev = self.cache.remove(&(cid.into(), ifname.into()));
        self.run_chain(
            w,
            "DEL",
            self.plugins.iter().rev(),
            (cid, netns, ifname),
            runtime,
            prev.as_ref(),
        )
    }
}

/// The address (without prefix) of a result's first IP.
pub fn result_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"]
        .as_str()
        .expect("result has an address");
    a.split('/').next().unwrap_or(a).to_string()
}

/// The conflist shape podman 4.3 writes, with `bridge` swapped for `knit` (and portmap
/// dropped: knit maps ports itself).
pub fn knit_plugins(bridge: &str, subnet: &str) -> Vec<Value> {
    vec![json!({
        "type": "knit", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
        "capabilities": {"portMappings": true, "ips": true, "mac": true},
        "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": subnet}]]}
    })]
}

/// The same network with the reference plugins: bridge + host-local + portmap.
pub fn reference_plugins(bridge: &str, subnet: &str, data_dir: &str) -> Vec<Value> {
    vec![
        json!({
            "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
            "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": subnet}]], "dataDir": data_dir}
        }),
        json!({"type": "portmap", "capabilities": {"portMappings": true}}),
    ]
}
