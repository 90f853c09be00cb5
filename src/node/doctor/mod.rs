//! `knit doctor SRC DST[:PORT[/tcp|udp]]`: walks the path a packet from SRC to DST takes,
//! asking the kernel at each step rather than re-implementing it (the route the source
//! picks, the next hop's neighbour entry, the links on the way, the node's forwarding
//! switch and input route with its reverse-path filter, every foreign firewall chain on the
//! hooks the packet crosses, the DNAT of a published port or service, masquerade, conntrack
//! entries in the way, the way back, the path MTU, a listener at the destination) and says
//! which step breaks it, why, and what fixes it. It changes nothing (the one packet it
//! sends, a DNS query from the source, leaves only the neighbour and conntrack entries any
//! query would).
//!
//! SRC: a sandbox, `node`, or an outside address. DST: a sandbox, `node[:PORT]` (a
//! published port or node port), a service name or VIP, or any address.

mod arrive;
pub(in crate::node) mod ends;
mod firewall;
mod hops;
mod names;
pub(in crate::node) mod policy;

use crate::error::{Error, Result};
use crate::netlink::Netlink;
use crate::node::Node;
use ends::{End, Source, Via};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: String,
    pub ok: bool,
    pub detail: String,
    /// For a broken step: what fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Diagnosis {
    pub source: String,
    pub destination: String,
    pub healthy: bool,
    pub steps: Vec<Step>,
}

/// Why a walk stopped early.
pub(crate) enum Halt {
    /// A step is broken (it is the report's last).
    Broken,
    /// Nothing more to check (e.g. the source leaves through an interface knit did not make).
    Done,
    /// doctor itself could not run a check.
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Self {
        Halt::Failed(e)
    }
}

pub(crate) type Walk<T = ()> = std::result::Result<T, Halt>;

/// The steps so far.
#[derive(Default)]
pub(crate) struct Report {
    steps: Vec<Step>,
}

impl Report {
    fn pass(&mut self, step: &str, detail: impl Into<String>) {
        self.steps.push(Step {
            step: step.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        });
    }

    /// Records a broken step; the caller returns the `Halt` it gives.
    fn fail(&mut self, step: &str, detail: impl Into<String>, fix: impl Into<String>) -> Halt {
        self.steps.push(Step {
            step: step.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
        Halt::Broken
    }
}

impl Node {
    pub fn doctor(&self, src: &str, dst: &str) -> Result<Diagnosis> {
        let mut r = Report::default();
        match self.walk(src, dst, &mut r) {
            Ok(()) | Err(Halt::Broken) | Err(Halt::Done) => {}
            Err(Halt::Failed(e)) => return Err(e),
        }
        Ok(Diagnosis {
            source: src.into(),
            destination: dst.into(),
            healthy: r.steps.iter().all(|s| s.ok),
            steps: r.steps,
        })
    }

    fn walk(&self, src_raw: &str, dst_raw: &str, r: &mut Report) -> Walk {
        let src = self.source(src_raw, r)?;
        let dst = self.destination(dst_raw, &src, r)?;
        if let (Via::Service(svc), true) = (&dst.via, dst.backends.is_empty()) {
            r.steps.pop();
            return Err(r.fail(
                "service",
                format!("service {} ({}) has no backends: knit refuses its connections at once (TCP reset / ICMP unreachable)", svc.name, svc.vip),
                format!("knit service backend add {} SANDBOX:PORT", svc.name),
            ));
        }
        let nets = self.store.networks()?;
        let mut nl = Netlink::open()?;
        let leg = match &src {
            Source::Sandbox { key, ns, atts } => {
                let from = names::Asker {
                    ns,
                    name: key,
                    atts,
                };
                let leg = self.leave_sandbox(&from, &dst, &nets, &mut nl, r)?;
                // After the link checks: a resolver behind a down link fails for that reason.
                if let (Some(name), End::Sandbox { att, .. }) = (&dst.by_name, &dst.end) {
                    self.dns_step(&from, &nets, name, att, dst.ip.is_ipv4(), r)?;
                }
                leg
            }
            Source::Node | Source::Outside(_) => {
                self.leave_node_or_outside(&src, &dst, &mut nl, r)?
            }
        };
        self.admit(&leg, &dst, &nets, r)?;
        self.cross_node(&leg, &dst, &mut nl, r)?;
        self.arrive(&leg, &dst, &nets, &mut nl, r)
    }

    /// knit's isolation between networks and its policy.
    fn admit(
        &self,
        leg: &hops::Leg,
        dst: &ends::Dest,
        nets: &[crate::store::Network],
        r: &mut Report,
    ) -> Walk {
        let dst_att = match &dst.end {
            End::Sandbox { att, .. } => Some(&**att),
            _ => None,
        };
        // knit isolates its networks from each other: a sandbox on another knit network is
        // reached only through a network both are on (or a published port or service).
        if let (Some(src), Some(d), Via::Direct) = (&leg.att, dst_att, &dst.via) {
            let shared = self
                .store
                .attachments_of_sandbox(&leg.name)?
                .iter()
                .any(|s| s.network_id == d.network_id);
            if !shared && src.network_id != d.network_id {
                return Err(r.fail(
                    "isolation",
                    format!("{} and {} share no knit network, and knit isolates networks from each other", leg.name, d.sandbox),
                    format!("attach {} to {} (`knit attach {} {}`), or publish the port on {} and use the node's address", leg.name, d.network, d.network, leg.name, d.sandbox),
                ));
            }
        }
        if matches!(dst.end, End::Node) && leg.att.is_none() {
            return Ok(());
        }
        let src_net = leg
            .att
            .as_ref()
            .and_then(|a| nets.iter().find(|n| n.id == a.network_id));
        let dst_net = dst_att.and_then(|d| nets.iter().find(|n| n.id == d.network_id));
        if src_net.is_none() && dst_net.is_none() {
            return Ok(());
        }
        let flow = policy::Flow {
            src: leg.att.as_ref(),
            src_ip: leg.src_ip.unwrap_or(dst.ip),
            dst: dst_att,
            dst_ip: dst.final_ip,
            port: dst.final_port,
        };
        match policy::verdict(&flow, src_net, dst_net, &self.store.rules()?) {
            Ok(d) => {
                r.pass("policy", d);
                Ok(())
            }
            Err((cause, fix)) => Err(r.fail("policy", cause, fix)),
        }
    }
}
