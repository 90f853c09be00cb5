//! The CNI_* environment, validated the way libcni and the reference skeleton do it.

use super::error::{CniError, INVALID_ENV, UNSUPPORTED_FIELD};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Empty on DEL when the runtime no longer has a namespace.
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
}

#[derive(Debug, Clone, Default)]
pub struct CniArgs {
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

/// libcni's container-id rule.
pub fn valid_container_id(id: &str) -> bool {
    let mut c = id.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
}

fn parse_args(raw: &str) -> Result<CniArgs, CniError> {
    let mut pairs = BTreeMap::new();
    for kv in raw.split(';').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| CniError::new(INVALID_ENV, format!("CNI_ARGS: invalid pair {kv:?}")))?;
        pairs.insert(k.to_string(), v.to_string());
    }
    let ignore_unknown = pairs
        .get("IgnoreUnknown")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
    let mut a = CniArgs::default();
    for (k, v) in pairs {
        match k.as_str() {
            "IgnoreUnknown" => {}
            "IP" => {
                a.ips = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "MAC" => a.mac = Some(v),
            "K8S_POD_NAME" => a.pod_name = Some(v),
            "K8S_POD_NAMESPACE" => a.pod_namespace = Some(v),
            "K8S_POD_INFRA_CONTAINER_ID" | "K8S_POD_UID" => {}
            _ if ignore_unknown => {}
            _ => {
                return Err(CniError::new(
                    UNSUPPORTED_FIELD,
                    format!("CNI_ARGS: unknown argument {k:?}"),
                )
                .details("set IgnoreUnknown=1 to ignore it"));
            }
        }
    }
    Ok(a)
}

impl Env {
    /// Reads and validates the environment for `command`.
    pub fn from(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let cmd = get("CNI_COMMAND").unwrap_or_default();
        let command = match cmd.as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::new(
                    INVALID_ENV,
                    format!("unknown CNI_COMMAND {other:?}"),
                ));
            }
        };
        let need_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let mut missing = vec![];
        let mut var = |name: &str, required: bool| {
            let v = get(name).unwrap_or_default();
            if required && v.is_empty() {
                missing.push(name.to_string());
            }
            v
        };
        let container_id = var("CNI_CONTAINERID", need_attachment);
        let netns = var(
            "CNI_NETNS",
            matches!(command, Command::Add | Command::Check),
        );
        let ifname = var("CNI_IFNAME", need_attachment);
        var(
            "CNI_PATH",
            need_attachment || command == Command::Gc || command == Command::Status,
        );
        if !missing.is_empty() {
            return Err(CniError::new(
                INVALID_ENV,
                format!("required env variables [{}] missing", missing.join(",")),
            ));
        }
        if need_attachment {
            if !valid_container_id(&container_id) {
                return Err(CniError::new(
                    INVALID_ENV,
                    format!("invalid characters in CNI_CONTAINERID {container_id:?}"),
                ));
            }
            crate::model::validate_ifname("CNI_IFNAME", &ifname)
                .map_err(|e| CniError::new(INVALID_ENV, e.to_string()))?;
        }
        let args = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }

    /// The store key of this attachment.
    pub fn sandbox_key(&self) -> String {
        format!("cni:{}/{}", self.container_id, self.ifname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from(|k| m.get(k).cloned())
    }

    const OK: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    #[test]
    fn args_and_validation() {
        let mut p = OK.to_vec();
        p.push((
            "CNI_ARGS",
            "IgnoreUnknown=1;IP=10.0.0.5,fd00::5;MAC=02:00:00:00:00:01;FOO=bar",
        ));
        let e = env(&p).unwrap();
        assert_eq!(e.args.ips, ["10.0.0.5", "fd00::5"]);
        assert_eq!(e.args.mac.as_deref(), Some("02:00:00:00:00:01"));
        p.pop();
        p.push(("CNI_ARGS", "FOO=bar"));
        assert_eq!(env(&p).unwrap_err().code, UNSUPPORTED_FIELD);
        for (k, v) in [
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_IFNAME", "averyveryverylongname"),
            ("CNI_COMMAND", "FROB"),
        ] {
            let mut p = OK.to_vec();
            p.retain(|(kk, _)| *kk != k);
            p.push((k, v));
            assert_eq!(env(&p).unwrap_err().code, INVALID_ENV, "{k}={v}");
        }
        let del: Vec<_> = OK
            .iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .map(|(k, v)| {
                if *k == "CNI_COMMAND" {
                    (*k, "DEL")
                } else {
                    (*k, *v)
                }
            })
            .collect();
        assert!(env(&del).is_ok(), "DEL without a netns is fine");
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
    }
}
