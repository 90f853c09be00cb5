//! Logging through `tracing`: levels from `RUST_LOG` (default `info`), text or JSON lines
//! (`--log-format json`) on stderr. Under systemd (`JOURNAL_STREAM` set) text lines carry
//! no timestamp of their own: journald stamps every line.
//!
//! Command output (tables, JSON, errors of a command) is not logging and stays on
//! stdout/stderr as it was; logs are what the daemon and background work report.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber once; later calls do nothing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = match (format, journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
}
