//! Validated request types. Everything the user types is parsed here, once, into values
//! the rest of knit can trust; errors name the field and the value.

mod addr;
pub mod cluster;
mod names;
pub mod netpol;
mod network;
pub mod policy;
mod publish;
pub mod service;

pub use addr::*;
pub use names::*;
pub use network::*;
pub use publish::*;

use crate::error::{Error, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
    pub fn parse(field: &'static str, s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => Err(Error::invalid(
                field,
                s,
                "protocol must be tcp, udp or sctp",
            )),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which network driver a network uses: only its name here (parsed, printed, stored);
/// what each driver does lives in `crate::driver`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    #[default]
    Bridge,
    Ptp,
}

impl Driver {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "bridge" => Ok(Driver::Bridge),
            "ptp" => Ok(Driver::Ptp),
            _ => Err(Error::invalid("--driver", s, "must be bridge or ptp")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Ptp => "ptp",
        }
    }
}

/// A MAC address. knit generates locally administered unicast addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn parse(field: &'static str, s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || Error::invalid(field, s, "must be six hex octets like 02:42:ac:11:00:02");
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if out[0] & 1 == 1 {
            return Err(Error::invalid(field, s, "is a multicast address"));
        }
        if out == [0; 6] {
            return Err(Error::invalid(field, s, "is the all-zero address"));
        }
        Ok(Mac(out))
    }

    /// A random locally administered unicast MAC.
    pub fn random() -> Self {
        let mut b = random_bytes::<6>();
        b[0] = (b[0] & 0xfe) | 0x02;
        Mac(b)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Random bytes from the kernel (getrandom never fails for small requests after boot).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled tail of `b`.
        let r = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if r > 0 {
            filled += r as usize;
        }
    }
    b
}

pub(crate) fn parse_port(field: &'static str, whole: &str, s: &str) -> Result<u16> {
    let n: u32 = s
        .parse()
        .map_err(|_| Error::invalid(field, whole, format!("port {s:?} is not a number")))?;
    if !(1..=65535).contains(&n) {
        return Err(Error::invalid(
            field,
            whole,
            format!("port {n} is out of range 1-65535"),
        ));
    }
    Ok(n as u16)
}

/// Where a sandbox's network namespace lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxRef {
    /// A named namespace in /run/netns.
    Named(String),
    /// Any nsfs path (a bind mount or /proc/PID/ns/net).
    Path(String),
    /// A running process's namespace.
    Pid(u32),
    /// A CNI attachment: keyed by container id and interface, at the runtime's netns path.
    Container {
        id: String,
        ifname: String,
        netns: String,
    },
    /// A runtime that moves the interface into its container itself (Docker's remote
    /// network drivers): knit builds the veth pair and leaves the sandbox end, named
    /// `ifname` and unconfigured, in the node's namespace for the runtime to take.
    Handoff { endpoint: String, ifname: String },
}

pub const NETNS_DIR: &str = "/run/netns";

impl SandboxRef {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(pid) = s.strip_prefix("pid:") {
            let pid: u32 = pid.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                Error::invalid("sandbox", s, "pid: must be followed by a process id")
            })?;
            return Ok(SandboxRef::Pid(pid));
        }
        if s.starts_with('/') {
            return Ok(SandboxRef::Path(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("cni:") {
            let (id, ifname) = rest
                .split_once('/')
                .ok_or_else(|| Error::invalid("sandbox", s, "expected cni:CONTAINERID/IFNAME"))?;
            validate_name("sandbox", id)?;
            validate_ifname("sandbox", ifname)?;
            return Ok(SandboxRef::Container {
                id: id.into(),
                ifname: ifname.into(),
                netns: String::new(),
            });
        }
        validate_name("sandbox", s)?;
        Ok(SandboxRef::Named(s.to_string()))
    }

    /// The key the store files attachments under.
    pub fn key(&self) -> String {
        match self {
            SandboxRef::Named(n) => n.clone(),
            SandboxRef::Path(p) => p.clone(),
            SandboxRef::Pid(p) => format!("pid:{p}"),
            SandboxRef::Container { id, ifname, .. } => format!("cni:{id}/{ifname}"),
            SandboxRef::Handoff { endpoint, .. } => format!("docker:{endpoint}"),
        }
    }

    /// Whether a store key is a handoff's (`docker:ENDPOINT`).
    pub fn is_handoff_key(key: &str) -> bool {
        key.starts_with("docker:")
    }

    pub fn path(&self) -> String {
        match self {
            SandboxRef::Named(n) => format!("{NETNS_DIR}/{n}"),
            SandboxRef::Path(p) => p.clone(),
            SandboxRef::Pid(p) => format!("/proc/{p}/ns/net"),
            SandboxRef::Container { netns, .. } => netns.clone(),
            // Not knit's to enter: the runtime owns the namespace it moves the link into.
            SandboxRef::Handoff { .. } => String::new(),
        }
    }
}

/// What `attach` is asked for, by the CLI or a CNI ADD: the one request type from the
/// command line down to the store's reservation.
pub struct AttachRequest<'a> {
    pub network: &'a str,
    pub sandbox: &'a SandboxRef,
    /// None: the sandbox's next free ethN (eth0, then eth1 for a second network, ...).
    pub ifname: Option<&'a str>,
    pub static_ips: &'a [IpAddr],
    pub mac: Option<Mac>,
    pub publish: &'a [PublishSpec],
    pub container_id: Option<&'a str>,
    /// Routes to install instead of the network's default route (CNI ipam.routes).
    pub routes: Option<&'a [RouteSpec]>,
    /// Extra DNS names.
    pub aliases: &'a [String],
    /// `--label k=v` (what policies select).
    pub labels: &'a policy::Labels,
}

#[cfg(test)]
mod tests;
