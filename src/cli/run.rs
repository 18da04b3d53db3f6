//! `beatd run`: the daemon in the foreground.
//!
//! SIGINT or SIGTERM stops new fires; running jobs get `shutdown_grace` to finish and are then
//! killed; the process exits 0. A second signal kills running jobs at once. SIGHUP (and, with
//! `--watch`, a change to a config file) reloads the config: see [`crate::reload`].

use tokio::signal::unix::{SignalKind, signal};

use super::{ConfigArg, Failed, fail};
use crate::daemon::{Daemon, DaemonError, Options};
use crate::logging::{self, LogFormat};
use crate::state::StateError;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (overrides RUST_LOG), e.g. `debug` or `beatd=debug`.
    #[arg(long)]
    log_level: Option<String>,
    /// Also reload when a config file (the main one or a drop-in) changes.
    #[arg(long)]
    watch: bool,
}

pub fn run(args: Args) -> Result<(), Failed> {
    logging::init(args.log_format, args.log_level.as_deref()).map_err(fail)?;
    let config = args.config.load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("beatd")
        .build()
        .map_err(|e| fail(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(|e| fail(format!("cannot handle SIGTERM: {e}")))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| fail(format!("cannot handle SIGINT: {e}")))?;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| fail(format!("cannot handle SIGHUP: {e}")))?;
        let daemon = match Daemon::start(config, Options::system(args.watch)).await {
            Ok(daemon) => daemon,
            Err(DaemonError::State(StateError::Damaged(e))) => {
                fail(&e);
                return Err(Failed(crate::state::damage::EXIT_DAMAGED));
            }
            Err(e) => return Err(fail(e)),
        };
        let signals = tokio::spawn({
            let daemon = daemon.handle();
            async move {
                let mut stops = 0;
                loop {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                        Some(()) = hup.recv() => {
                            daemon.reload_soon();
                            continue;
                        }
                    };
                    stops += 1;
                    if stops == 1 {
                        tracing::info!("{name}: stopping; no new fires");
                        daemon.stop();
                    } else {
                        tracing::warn!("{name} again: killing running jobs now");
                        daemon.kill();
                    }
                }
            }
        });
        daemon.wait().await;
        signals.abort();
        Ok(())
    })
}
