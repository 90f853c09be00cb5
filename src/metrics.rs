//! Prometheus building blocks (a leaf: nothing here reads the store or the kernel):
//! latency histograms of the work the daemon does itself, `knit_build_info`, and the
//! text format's helpers. The data plane's figures are read at scrape time by
//! `node::metrics_view`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Histogram bounds in seconds (Prometheus' convention), 1 ms to 5 s.
pub const BOUNDS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// A latency histogram. Observations are compared with the bounds as durations, so
/// 1.9 ms lands in `le="0.0025"`, not in `le="0.001"` (whole milliseconds would truncate).
pub struct Histogram {
    /// Observations per bucket, each counted once (in the first bound at or above it);
    /// made cumulative when rendered. One increment per observation, not one per bound:
    /// the ingress observes twice per request from every serving thread.
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS.len()],
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // Above the last bound: only in +Inf (the count).
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Adds another histogram's observations to this one's (shards summed for a scrape).
    pub fn absorb(&self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter().zip(&other.buckets) {
            mine.fetch_add(theirs.load(Relaxed), Relaxed);
        }
        self.count.fetch_add(other.count.load(Relaxed), Relaxed);
        self.sum_ns.fetch_add(other.sum_ns.load(Relaxed), Relaxed);
    }

    /// The histogram's lines; `labels` is `""` or `key="value",...` without braces.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// Calls the daemon answers for runtimes (Docker's plugin API), by call.
pub static PLUGIN_CALLS: PluginCalls = PluginCalls::new();

pub struct PluginCalls {
    calls: [(&'static str, Histogram); 6],
}

impl PluginCalls {
    const fn new() -> PluginCalls {
        PluginCalls {
            calls: [
                ("CreateNetwork", Histogram::new()),
                ("DeleteNetwork", Histogram::new()),
                ("CreateEndpoint", Histogram::new()),
                ("Join", Histogram::new()),
                ("DeleteEndpoint", Histogram::new()),
                ("other", Histogram::new()),
            ],
        }
    }

    pub fn observe(&self, call: &str, d: Duration) {
        let h = self
            .calls
            .iter()
            .find(|(c, _)| *c == call)
            .or(self.calls.last())
            .map(|(_, h)| h);
        if let Some(h) = h {
            h.observe(d);
        }
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP knit_docker_call_seconds Docker network driver calls answered by the daemon.\n# TYPE knit_docker_call_seconds histogram"
        );
        for (call, h) in &self.calls {
            h.render(out, "knit_docker_call_seconds", &format!("call=\"{call}\""));
        }
    }
}

/// How long the cluster agent's syncs take (watch event to kernel programmed).
pub static CLUSTER_SYNC: Histogram = Histogram::new();

/// Where knit commands (CLI, CNI, netavark) note how long they took, one line each
/// (`NAME<TAB>MICROSECONDS`), for the daemon to fold into `knit_command_seconds`. A line is
/// one `write` to a file opened with O_APPEND, so concurrent commands never interleave;
/// without a daemon emptying it the file stops growing at `COMMAND_LOG_MAX`.
pub const COMMAND_LOG: &str = "commands.log";
const COMMAND_LOG_MAX: u64 = 4 << 20;

/// Notes one command's duration (best effort: a failure costs the sample, never the
/// command).
pub fn record_command(state_dir: &std::path::Path, name: &str, d: Duration) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(state_dir.join(COMMAND_LOG))
    else {
        return;
    };
    if f.metadata().map_or(true, |m| m.len() > COMMAND_LOG_MAX) {
        return;
    }
    let _ = f.write_all(format!("{name}\t{}\n", d.as_micros()).as_bytes());
}

/// Commands' durations by command, as folded from `COMMAND_LOG`.
static COMMANDS: std::sync::Mutex<std::collections::BTreeMap<String, Histogram>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Folds what commands noted since the last call into the histograms: the log is renamed
/// aside first (commands then start a new one), read and removed.
pub fn collect_commands(state_dir: &std::path::Path) {
    let log = state_dir.join(COMMAND_LOG);
    let taken = state_dir.join(format!("{COMMAND_LOG}.reading"));
    if std::fs::rename(&log, &taken).is_err() {
        return;
    }
    let text = std::fs::read_to_string(&taken).unwrap_or_default();
    let _ = std::fs::remove_file(&taken);
    let Ok(mut by) = COMMANDS.lock() else {
        return;
    };
    for line in text.lines() {
        let Some((name, us)) = line.split_once('\t') else {
            continue;
        };
        let (Ok(us), true) = (us.parse::<u64>(), name.len() <= 64) else {
            continue;
        };
        by.entry(name.to_string())
            .or_default()
            .observe(Duration::from_micros(us));
    }
}

pub fn render_commands(out: &mut String) {
    gauge_header(
        out,
        "knit_command_seconds",
        "knit commands (CLI, CNI, netavark plugin) on this node, by command.",
        "histogram",
    );
    if let Ok(by) = COMMANDS.lock() {
        for (name, h) in by.iter() {
            h.render(
                out,
                "knit_command_seconds",
                &format!("command=\"{}\"", escape(name)),
            );
        }
    }
}

pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn gauge_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `knit_build_info`: 1, labelled with the release and the commit.
pub fn build_info(out: &mut String) {
    gauge_header(
        out,
        "knit_build_info",
        "The running knit's release and commit.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "knit_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        env!("KNIT_COMMIT")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_right_buckets() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(1900));
        h.observe(Duration::from_micros(900));
        h.observe(Duration::from_secs(7));
        let mut s = String::new();
        h.render(&mut s, "x", "");
        assert!(s.contains("x_bucket{le=\"0.001\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.0025\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"5\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count 3\n"), "{s}");
        let sum: f64 = s
            .lines()
            .find_map(|l| l.strip_prefix("x_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 7.0028).abs() < 1e-9, "{sum}");
        let mut s = String::new();
        h.render(&mut s, "y", "call=\"Join\"");
        assert!(
            s.contains("y_bucket{call=\"Join\",le=\"0.001\"} 1\n"),
            "{s}"
        );
        assert!(s.contains("y_count{call=\"Join\"} 3\n"), "{s}");
    }

    #[test]
    fn command_durations_are_folded_once() {
        let dir = std::env::temp_dir().join(format!("knit-cmdlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        record_command(&dir, "unit-attach", Duration::from_micros(1900));
        record_command(&dir, "unit-attach", Duration::from_millis(30));
        collect_commands(&dir);
        collect_commands(&dir);
        let mut s = String::new();
        render_commands(&mut s);
        assert!(
            s.contains("knit_command_seconds_count{command=\"unit-attach\"} 2\n"),
            "{s}"
        );
        assert!(
            s.contains("knit_command_seconds_bucket{command=\"unit-attach\",le=\"0.0025\"} 1\n"),
            "{s}"
        );
        assert!(!dir.join(COMMAND_LOG).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn build_info_names_version_and_commit() {
        let mut s = String::new();
        build_info(&mut s);
        assert!(s.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
        assert!(s.contains("commit=\""));
        assert!(s.trim_end().ends_with(" 1"));
    }
}
