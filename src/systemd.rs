//! systemd integration: readiness, status, stopping, and the watchdog.
//!
//! Everything is a no-op when `NOTIFY_SOCKET` is unset, so `beatd run` in a terminal behaves
//! the same. The watchdog ping is sent by the timer loop itself (see
//! [`crate::scheduler::Scheduler::with_watchdog`]), not by a helper task: if the loop stops
//! ticking, the pings stop and systemd restarts beatd.

use std::time::Duration;

use sd_notify::NotifyState;

#[derive(Debug, Default)]
pub struct Systemd {
    /// `NOTIFY_SOCKET` is set: someone is listening.
    active: bool,
    /// From `WATCHDOG_USEC`, when systemd expects pings.
    watchdog: Option<Duration>,
    /// The last STATUS sent, so an unchanged one is not sent again.
    last_status: std::sync::Mutex<String>,
}

impl Systemd {
    pub fn from_env() -> Self {
        Systemd {
            active: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
            last_status: Default::default(),
        }
    }

    /// Whether systemd is listening; without it, status lines need not even be made.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// How often to ping: half of systemd's watchdog timeout.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    pub fn ready(&self, status: &str) {
        *self.last_status.lock().unwrap_or_else(|p| p.into_inner()) = status.to_string();
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Updates the one-line status `systemctl status` shows, if it changed.
    pub fn status(&self, status: &str) {
        let mut last = self.last_status.lock().unwrap_or_else(|p| p.into_inner());
        if *last != status {
            status.clone_into(&mut last);
            send(&[NotifyState::Status(status)]);
        }
    }

    /// A reload starts: systemd waits for the READY=1 of [`Systemd::reloaded`].
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status("reloading the config")]),
            Err(e) => tracing::warn!("cannot read the monotonic clock for systemd: {e}"),
        }
    }

    /// A reload is over (applied or refused); `status` says which.
    pub fn reloaded(&self, status: &str) {
        self.ready(status);
    }

    pub fn stopping(&self) {
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    pub fn watchdog_ping() {
        send(&[NotifyState::Watchdog]);
    }
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
