//! The trace's footprint in the kernel, and its cleanup: a table `knit_trace_PID` in each
//! namespace on the path (inet, plus bridge in the node, where frames between two ports of
//! one bridge pass only bridge hooks) whose chains, at the earliest priority of prerouting
//! and output, set `nftrace` on the probe and its answer and on nothing else. The tables
//! go when the session drops, whatever happened; SIGINT/SIGTERM/SIGHUP wait until then.
//! Tables left by a trace that was killed outright (its PID gone) are removed by the next.

use super::probe::{Kind, Probe};
use crate::error::Result;
use crate::netns::Netns;

/// One namespace on the path: a label for the output and the namespace.
pub struct Place {
    pub label: String,
    pub ns: Netns,
    /// The node namespace (bridge-family tracing too).
    pub node: bool,
}

use crate::nft::trace::TABLE_PREFIX as PREFIX;

fn table_name(pid: u32) -> String {
    format!("{PREFIX}{pid}")
}

/// The rules that mark the probe (source port or echo id `tag`) and its answer.
pub fn marks(p: &Probe) -> Vec<String> {
    let t = p.tag;
    match (p.kind, p.dst.is_ipv4()) {
        (Kind::Tcp, _) => vec![
            format!("tcp sport {t} tcp flags & (syn | rst) != 0 meta nftrace set 1"),
            format!("tcp dport {t} tcp flags & (syn | rst) != 0 meta nftrace set 1"),
        ],
        (Kind::Udp, _) => vec![
            format!("udp sport {t} meta nftrace set 1"),
            format!("udp dport {t} meta nftrace set 1"),
        ],
        (Kind::Icmp, true) => {
            vec![format!(
                "icmp type {{ echo-request, echo-reply }} icmp id {t} meta nftrace set 1"
            )]
        }
        (Kind::Icmp, false) => vec![format!(
            "icmpv6 type {{ echo-request, echo-reply }} icmpv6 id {t} meta nftrace set 1"
        )],
    }
}

/// The script that creates the trace table(s) of one namespace (one transaction).
pub fn script(pid: u32, p: &Probe, node: bool) -> String {
    let name = table_name(pid);
    let rules = marks(p)
        .iter()
        .map(|r| format!("\t\t{r}\n"))
        .collect::<String>();
    // -350: before raw (-300) and conntrack (-200), after defragmentation (-400).
    let chain = |c: &str, hook: &str| {
        format!(
            "\tchain {c} {{\n\t\ttype filter hook {hook} priority -350; policy accept;\n{rules}\t}}\n"
        )
    };
    let mut s = format!(
        "table inet {name} {{\n{}{}}}\n",
        chain("pre", "prerouting"),
        chain("out", "output")
    );
    if node {
        s += &format!("table bridge {name} {{\n{}}}\n", chain("pre", "prerouting"));
    }
    s
}

fn in_ns(ns: &Netns, script: String) -> Result<String> {
    ns.run(move || crate::nft::libnft::run(&script))?
}

/// Whether a process `pid` that is a knit runs (a trace table of any other PID is left
/// over: its trace was killed outright, or its PID since went to another program).
fn knit_runs(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "knit")
}

/// `delete table` commands for trace tables whose knit is gone.
fn stale_tables(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            let mut w = l.trim().strip_prefix("table ")?.split_whitespace();
            let (family, name) = (w.next()?, w.next()?);
            let pid = name.strip_prefix(PREFIX)?;
            let ours = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
            (ours && !knit_runs(pid)).then(|| format!("delete table {family} {name}"))
        })
        .collect()
}

/// Blocks the termination signals for the session's lifetime (threads started meanwhile
/// inherit the mask); restores the old mask on drop, when pending signals act.
struct Signals(libc::sigset_t);

impl Signals {
    fn block() -> Signals {
        // SAFETY: sigset operations on local, initialised sets; pthread_sigmask only
        // changes this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            Signals(old)
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `block`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

/// The installed trace tables; removed on drop.
pub struct Session<'a> {
    places: &'a [Place],
    installed: Vec<usize>,
    pid: u32,
    // Dropped last: signals act only once the tables are gone.
    _signals: Signals,
}

impl<'a> Session<'a> {
    pub fn start(places: &'a [Place], p: &Probe) -> Result<Session<'a>> {
        let mut s = Session {
            places,
            installed: vec![],
            pid: std::process::id(),
            _signals: Signals::block(),
        };
        for (i, place) in places.iter().enumerate() {
            let stale = stale_tables(&in_ns(&place.ns, "list tables".into())?);
            if !stale.is_empty() {
                in_ns(&place.ns, stale.join("\n"))?;
            }
            in_ns(&place.ns, script(s.pid, p, place.node))?;
            s.installed.push(i);
        }
        Ok(s)
    }

    /// The ruleset of place `i` with handles (for naming rules).
    pub fn listing(&self, i: usize) -> Result<String> {
        self.places[i].ns.run(|| {
            let mut s = crate::nft::libnft::Session::new()?;
            s.output_flags(crate::nft::libnft::OUTPUT_HANDLE);
            s.run("list ruleset")
        })?
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let name = table_name(self.pid);
        for i in self.installed.drain(..) {
            let place = &self.places[i];
            // One transaction each: a table already gone must not keep the other.
            let families: &[&str] = if place.node {
                &["inet", "bridge"]
            } else {
                &["inet"]
            };
            for family in families {
                if let Err(e) = in_ns(&place.ns, format!("delete table {family} {name}")) {
                    tracing::warn!(
                        "trace: could not remove table {family} {name} in {}: {e}",
                        place.label
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::trace::probe::{Kind, Probe};

    #[test]
    fn trace_tables_mark_only_the_probe_and_its_answer() {
        let p = Probe {
            kind: Kind::Tcp,
            dst: "10.0.0.2".parse().unwrap(),
            port: 80,
            tag: 41000,
        };
        let s = script(7, &p, true);
        assert!(s.contains("table inet knit_trace_7 {"));
        assert!(s.contains("table bridge knit_trace_7 {"));
        assert!(s.contains("type filter hook output priority -350;"));
        assert!(s.contains("tcp sport 41000 tcp flags & (syn | rst) != 0 meta nftrace set 1"));
        assert!(!script(7, &p, false).contains("bridge"));
        let i = Probe {
            kind: Kind::Icmp,
            dst: "fd00::1".parse().unwrap(),
            port: 0,
            tag: 5,
        };
        assert_eq!(
            marks(&i),
            ["icmpv6 type { echo-request, echo-reply } icmpv6 id 5 meta nftrace set 1"]
        );
    }

    #[test]
    fn only_tables_of_dead_traces_are_stale() {
        let me = std::process::id();
        let l = format!(
            "table inet knit\ntable inet knit_trace_{me}\ntable bridge knit_trace_4194399\ntable ip filter\ntable inet knit_trace_+5\ntable inet knit_trace_1\n"
        );
        // This test's own PID runs the test binary, not knit: its table counts as left
        // over; PID 1 is init, not knit; `+5` is not a PID and not knit's name.
        assert_eq!(
            stale_tables(&l),
            [
                format!("delete table inet knit_trace_{me}"),
                "delete table bridge knit_trace_4194399".into(),
                "delete table inet knit_trace_1".into(),
            ]
        );
    }
}
