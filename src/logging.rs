//! Logging: `tracing` to stderr, human text or JSON lines.
//!
//! Colours only when stderr is a terminal, so journald and log files get plain text with the
//! level on every line.
//!
//! The AMQP client library's own events are dropped at every level, whatever the filter asks:
//! it logs a returned message whole (headers and body), which would put task arguments, and
//! any secret in them, into the journal. beatd logs its own line for every failure instead.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Targets whose events may carry message payloads: never logged.
const SILENCED: &[&str] = &["lapin", "amq_protocol"];

/// Whether events of `target` may be logged at all.
pub fn allowed(target: &str) -> bool {
    !SILENCED.iter().any(|s| target == *s || target.strip_prefix(s).is_some_and(|rest| rest.starts_with("::")))
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid --log-level \"{level}\": {source}")]
    Level { level: String, source: tracing_subscriber::filter::ParseError },
    #[error("cannot set up logging: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber. `level` (from `--log-level`) wins over `RUST_LOG`; the
/// default is `info`.
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), LogError> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).map_err(|source| LogError::Level { level: l.to_string(), source })?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).with_target(false).boxed(),
        LogFormat::Json => fmt.json().with_current_span(false).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt.with_filter(filter_fn(|meta| allowed(meta.target()))))
        .try_init()
        .map_err(LogError::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_amqp_librarys_events_are_never_logged() {
        assert!(!super::allowed("lapin"));
        assert!(!super::allowed("lapin::returned_messages"));
        assert!(!super::allowed("amq_protocol::frame"));
        assert!(super::allowed("beatd::broker::amqp"));
        assert!(super::allowed("lapinized"));
    }
}
