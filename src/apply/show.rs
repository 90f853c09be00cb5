//! Steps and plans as people and scripts read them: one line per step (`+` create, `-`
//! remove, `~` change) and a JSON view with stable fields (op, kind, name, detail).

use super::compare::{att_text, net_text, rule_text, svc_text};
use super::plan::{Plan, Step};
use serde::Serialize;

/// A step for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    /// create, remove or change.
    pub op: &'static str,
    /// network, default, sandbox, attachment, service, backend or rule.
    pub kind: &'static str,
    pub name: String,
    pub detail: String,
}

impl Step {
    pub fn view(&self) -> StepView {
        let why = |w: &Option<String>, base: String| match w {
            Some(w) if base.is_empty() => format!("({w})"),
            Some(w) => format!("{base} ({w})"),
            None => base,
        };
        let (op, kind, name, detail) = match self {
            Step::CreateNetwork { net, why: w } => (
                "create",
                "network",
                net.spec.name.clone(),
                why(w, net_text(net)),
            ),
            Step::RemoveNetwork { net, why: w } => (
                "remove",
                "network",
                net.spec.name.clone(),
                why(w, net_text(net)),
            ),
            Step::SetDefault {
                network,
                dir,
                from,
                to,
            } => (
                "change",
                "default",
                network.clone(),
                format!("{} {} → {}", dir.as_str(), from.as_str(), to.as_str()),
            ),
            Step::AddSandbox(s) => ("create", "sandbox", s.clone(), String::new()),
            Step::RemoveSandbox(s) => ("remove", "sandbox", s.clone(), String::new()),
            Step::Attach { att, why: w } => (
                "create",
                "attachment",
                format!("{} on {}", att.sandbox, att.network),
                why(w, att_text(att)),
            ),
            Step::Detach { att, why: w } => (
                "remove",
                "attachment",
                format!("{} on {}", att.sandbox, att.network),
                why(w, att_text(att)),
            ),
            Step::CreateService { svc, why: w } => {
                ("create", "service", svc.name.clone(), why(w, svc_text(svc)))
            }
            Step::RemoveService { svc, why: w } => {
                ("remove", "service", svc.name.clone(), why(w, svc_text(svc)))
            }
            Step::AddBackend { service, backend } => (
                "create",
                "backend",
                backend.to_string(),
                format!("of service {service}"),
            ),
            Step::RemoveBackend { service, backend } => (
                "remove",
                "backend",
                backend.to_string(),
                format!("of service {service}"),
            ),
            Step::AddRule(r) => ("create", "rule", r.network.clone(), rule_text(r)),
            Step::RemoveRule(r) => ("remove", "rule", r.network.clone(), rule_text(r)),
        };
        StepView {
            op,
            kind,
            name,
            detail,
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.view();
        let sign = match v.op {
            "create" => '+',
            "remove" => '-',
            _ => '~',
        };
        write!(f, "{sign} {} {}", v.kind, v.name)?;
        match v.detail.as_str() {
            "" => {}
            // Only the reason: "+ attachment a on n (its network is replaced)".
            d if d.starts_with('(') => write!(f, " {d}")?,
            d => write!(f, ": {d}")?,
        }
        Ok(())
    }
}

impl Plan {
    /// The plan as lines (empty plan: "nothing to do").
    pub fn lines(&self) -> Vec<String> {
        if self.steps.is_empty() {
            return vec![format!("topology {}: nothing to do", self.topology)];
        }
        self.steps.iter().map(|s| s.to_string()).collect()
    }
}
