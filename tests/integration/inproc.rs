//! The whole daemon in this process, on paused tokio time and the manual clock.
//!
//! For tests where the process is not the point: the API, reloads, pauses that hold across a
//! restart. `beatd::daemon::Daemon` is what `beatd run` starts, so these test the same
//! assembly; but a simulated minute takes milliseconds, and "no fire in the next three
//! seconds" is a fact about the schedule, not a bet on the machine's load.
//!
//! Rules that keep such a test deterministic:
//! - jobs are `noop`: a real child process or socket would let tokio's paused clock jump ahead
//!   while the runtime waits on it;
//! - simulated time passes only through [`Sim::advance`];
//! - what lands on another thread (the history writer) is waited for with [`eventually`],
//!   which waits in real time on a blocking thread, so simulated time stands still meanwhile.
//!
//! Logs go to a buffer of the test's own (a subscriber for this thread only: the runtime is
//! current-thread), so tests assert on the same lines an operator reads.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use beatd::clock::Clock;
use beatd::daemon::{Daemon, Options};
use serde_json::Value;
use tower::ServiceExt;

use crate::util::Beatd;

/// Where simulated wall time starts: a Monday morning, UTC.
const START: &str = "2026-03-02T09:00:00Z";

/// A daemon started in-process on `b`'s config; stopped (and its history flushed) with
/// [`Sim::stop`].
pub struct Sim {
    pub b: Beatd,
    pub clock: Clock,
    daemon: Option<Daemon>,
    logs: Logs,
    _logging: tracing::subscriber::DefaultGuard,
}

impl Sim {
    /// Starts the daemon on `b`'s `beatd.toml`; call from a current-thread runtime with paused
    /// time (`#[tokio::test(start_paused = true)]`).
    pub async fn start(b: Beatd) -> Sim {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_target(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let logging = tracing::subscriber::set_default(subscriber);
        let clock = Clock::manual(START.parse().expect("a valid instant"));
        let mut sim = Sim { b, clock, daemon: None, logs, _logging: logging };
        sim.start_again().await;
        sim
    }

    /// Starts the daemon (again, after [`Sim::stop`]) with the config as it is on disk now.
    pub async fn start_again(&mut self) {
        assert!(self.daemon.is_none(), "the daemon is running");
        let config = beatd::config::load(&self.b.config()).expect("a valid config");
        let daemon = Daemon::start(config, Options::with_clock(self.clock.clone())).await.expect("the daemon starts");
        self.daemon = Some(daemon);
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon is running")
    }

    /// Lets `by` of simulated time pass, the daemon doing whatever falls due meanwhile.
    pub async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }

    /// Stops the daemon as SIGTERM does and waits until its history is written.
    pub async fn stop(&mut self) {
        let daemon = self.daemon.take().expect("the daemon is running");
        daemon.stop();
        daemon.wait().await;
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Reloads the config from disk, as SIGHUP does; whether it was applied.
    pub async fn reload(&self) -> bool {
        self.daemon().reload().await
    }

    /// The recorded runs of `job`, newest first, read from the state folder as `beatd history`
    /// does (the config on disk may be a broken one a test left there).
    pub fn history(&self, job: &str) -> Vec<beatd::state::history::RunRecord> {
        let conn = beatd::state::open_read_only(&self.b.path("state")).expect("the state database");
        beatd::state::history::query(&conn, Some(job), None, None).expect("the history")
    }

    /// What the daemon has logged so far, as text lines.
    pub fn log(&self) -> String {
        self.logs.text()
    }

    /// One API request, as a client on loopback sends it; the body as JSON when it is JSON.
    pub async fn request(&self, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = Request::builder().method(method).uri(path).header("host", "127.0.0.1");
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = self
            .daemon()
            .api()
            .oneshot(request.body(Body::empty()).expect("a valid request"))
            .await
            .expect("the router answers");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.expect("a body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None).await
    }

    /// A POST with the token the daemon made in its state folder.
    pub async fn post(&self, path: &str) -> (u16, Value) {
        let token = std::fs::read_to_string(self.b.path("state/api-token")).expect("the API token");
        self.request("POST", path, Some(token.trim())).await
    }
}

/// Waits in real time, 5 s at most, until `cond` holds, with simulated time standing still;
/// whether it did. For what another thread writes (the history).
pub async fn eventually<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..250 {
        if cond().await {
            return true;
        }
        // A blocking task holds tokio's paused clock where it is while it runs.
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(20))).await.expect("sleep");
    }
    cond().await
}

/// A log buffer shared with the subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
