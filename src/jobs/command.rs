//! `command`: runs a shell command.
//!
//! The command runs under `/bin/sh -c` in its own process group, so a terminal's Ctrl-C reaches
//! beatd (which then grants running commands the shutdown grace period) rather than every
//! child, and so the whole group, children included, can be stopped at once: SIGTERM, then
//! SIGKILL after `kill_grace`. The child learns which fire it is from `BEATD_JOB`,
//! `BEATD_SCHEDULED_AT` and `BEATD_FIRE_ID`; its output is logged line by line under the job's
//! name, up to `output_limit` bytes per run.
//!
//! Progress: the write end of a pipe is the child's descriptor 3, named by `BEATD_PROGRESS_FD`.
//! Lines `PROGRESS=42 copying files` written there become the run's progress
//! (`GET /api/runs/{id}`); anything else there is ignored. The pipe is close-on-exec in beatd,
//! so no other child inherits it, and beatd stops reading it when the command ends.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::SecondsFormat;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Pid, Uid};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command as Process;

use super::{RunContext, RunResult};
use crate::fire::Fire;

pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// A schedule of 100 000 commands keeps 100 000 of these, nearly all with nothing but the
/// command line set: the other settings live in a box only when one differs from its default
/// (8 bytes a command instead of 104: 8 MB at 90 000 commands).
#[derive(Debug, Clone)]
pub struct Command {
    pub command: Box<str>,
    settings: Option<Box<Settings>>,
}

/// A command's settings besides the command line. Boxed strings and slices rather than
/// `String` and `Vec` (no spare capacity word).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub workdir: Option<Box<Path>>,
    pub env: Box<[(String, String)]>,
    /// Between SIGTERM and SIGKILL when a run is stopped.
    pub kill_grace: Duration,
    /// Bytes of output logged per run; the rest is read and counted, not logged.
    pub output_limit: usize,
    pub user: Option<(Box<str>, Uid)>,
    pub group: Option<(Box<str>, Gid)>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            workdir: None,
            env: Box::default(),
            kill_grace: DEFAULT_KILL_GRACE,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            user: None,
            group: None,
        }
    }
}

pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

impl Command {
    pub fn new(command: Box<str>, settings: Settings) -> Command {
        let settings = (settings != Settings::default()).then(|| Box::new(settings));
        Command { command, settings }
    }

    pub fn settings(&self) -> &Settings {
        static DEFAULT: std::sync::LazyLock<Settings> = std::sync::LazyLock::new(Settings::default);
        self.settings.as_deref().unwrap_or(&DEFAULT)
    }
}

impl Command {
    pub async fn run(&self, fire: &Fire, cx: &RunContext) -> RunResult {
        let job = &*fire.job.name;
        let settings = self.settings();
        if (settings.user.is_some() || settings.group.is_some()) && !Uid::effective().is_root() {
            return RunResult::failed("\"user\" and \"group\" need beatd to run as root");
        }
        let scheduled =
            fire.scheduled_at.with_timezone(&fire.job.timezone).to_rfc3339_opts(SecondsFormat::AutoSi, false);
        let mut cmd = Process::new("/bin/sh");
        cmd.arg("-c")
            .arg(&*self.command)
            .envs(settings.env.iter().map(|(k, v)| (k, v)))
            .env("BEATD_JOB", job)
            .env("BEATD_SCHEDULED_AT", scheduled)
            .env("BEATD_FIRE_ID", fire.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &settings.workdir {
            cmd.current_dir(dir);
        }
        if let Some((_, gid)) = settings.group {
            cmd.gid(gid.as_raw());
        }
        if let Some((_, uid)) = settings.user {
            cmd.uid(uid.as_raw());
        }
        let progress = match progress_pipe(&mut cmd) {
            Ok(reader) => Some(reader),
            Err(e) => {
                tracing::warn!(job = %job, "no progress descriptor for this run: {e}");
                None
            }
        };
        let spawned = cmd.spawn();
        // The command holds the pipe's write end until it is dropped: only the child may keep it.
        drop(cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let msg = match &settings.workdir {
                    Some(dir) => format!("cannot start command in {}: {e}", dir.display()),
                    None => format!("cannot start command: {e}"),
                };
                tracing::error!(job = %job, "{msg}");
                return RunResult::failed(msg);
            }
        };
        let pgid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
        let budget = Arc::new(AtomicUsize::new(settings.output_limit));
        let dropped = Arc::new(AtomicUsize::new(0));
        let tail = Arc::new(std::sync::Mutex::new(Tail::default()));
        let readers: Vec<_> = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .zip(["stdout", "stderr"])
        .filter_map(|(pipe, stream)| {
            let pipe = pipe?;
            Some(tokio::spawn(log_lines(job.to_string(), stream, pipe, budget.clone(), dropped.clone(), tail.clone())))
        })
        .collect();
        let progress_reader = progress.map(|pipe| tokio::spawn(read_progress(pipe, cx.progress.clone())));

        let mut stopped = None;
        let status = tokio::select! {
            status = child.wait() => status,
            () = cx.stop.cancelled() => {
                if cx.kill.is_cancelled() {
                    signal_group(pgid, Signal::SIGKILL);
                    stopped = Some("killed at shutdown");
                    child.wait().await
                } else {
                    signal_group(pgid, Signal::SIGTERM);
                    match tokio::time::timeout(settings.kill_grace, child.wait()).await {
                        Ok(status) => {
                            stopped = Some("stopped with SIGTERM");
                            status
                        }
                        Err(_) => {
                            signal_group(pgid, Signal::SIGKILL);
                            stopped = Some("killed with SIGKILL after kill_grace");
                            child.wait().await
                        }
                    }
                }
            }
        };
        // The group may have stragglers that inherited the pipes; they must not outlive the run.
        if stopped.is_some() {
            signal_group(pgid, Signal::SIGKILL);
        }
        for reader in readers {
            let _ = reader.await;
        }
        if let Some(mut reader) = progress_reader {
            // What the command wrote before it ended is read; a descendant that kept the
            // descriptor open does not hold the run.
            if tokio::time::timeout(Duration::from_millis(200), &mut reader).await.is_err() {
                reader.abort();
            }
        }
        let lost = dropped.load(Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(job = %job, "output truncated: {lost} more bytes were not logged (output_limit)");
        }
        let mut result = match &status {
            Ok(s) if s.success() => RunResult::ok(),
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(s)) {
                (Some(code), _) => RunResult::failed(format!("exited with status {code}")),
                (None, Some(sig)) => RunResult::failed(format!("killed by signal {sig}")),
                _ => RunResult::failed(format!("ended: {s}")),
            },
            Err(e) => RunResult::failed(format!("waiting for the command failed: {e}")),
        };
        result.exit_code = status.as_ref().ok().and_then(|s| s.code());
        result.output = std::mem::take(&mut tail.lock().unwrap_or_else(|p| p.into_inner()).0).into();
        if let (Some(how), Err(e)) = (stopped, &mut result.result) {
            *e = format!("{how} ({e})");
        }
        match &result.result {
            Ok(()) => tracing::info!(job = %job, "command exited with status 0"),
            Err(e) => tracing::warn!(job = %job, "command {e}"),
        }
        result
    }
}

/// The child's descriptor [`PROGRESS_FD`] is the write end of a new pipe; returns the read end.
fn progress_pipe(cmd: &mut Process) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    use command_fds::{CommandFdExt, FdMapping};
    let (reader, writer) = std::io::pipe()?;
    cmd.fd_mappings(vec![FdMapping { parent_fd: writer.into(), child_fd: PROGRESS_FD }])
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    cmd.env("BEATD_PROGRESS_FD", PROGRESS_FD.to_string());
    tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())
}

/// The descriptor a command writes its progress lines to.
pub const PROGRESS_FD: i32 = 3;

/// Longest progress line read whole; longer ones are skipped.
const PROGRESS_LINE_MAX: usize = 4096;

async fn read_progress(pipe: tokio::net::unix::pipe::Receiver, progress: crate::runs::Progress) {
    use futures_util::StreamExt;
    use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), PROGRESS_LINE_MAX);
    let mut lines = FramedRead::new(pipe, codec);
    // Read to the end whatever comes, so the child never blocks on a full pipe.
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => progress.report_line(&String::from_utf8_lossy(&line)),
            Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => continue,
            Err(_) => break,
        }
    }
}

fn signal_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, signal);
    }
}

/// The last lines of a run's output (both streams, as they came), for its notification.
#[derive(Debug, Default)]
struct Tail(std::collections::VecDeque<String>);

impl Tail {
    fn push(&mut self, line: &str) {
        if self.0.len() == crate::notifications::OUTPUT_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line.chars().take(crate::notifications::OUTPUT_LINE_CHARS).collect());
    }
}

async fn log_lines(
    job: String,
    stream: &'static str,
    pipe: impl AsyncRead + Unpin,
    budget: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    tail: Arc<std::sync::Mutex<Tail>>,
) {
    // Split on bytes, not lines of UTF-8: output that is not UTF-8 is still logged (lossily)
    // and, above all, still read, so the child never blocks on a full pipe.
    let mut lines = BufReader::new(pipe).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        let len = line.len() + 1;
        tail.lock().unwrap_or_else(|p| p.into_inner()).push(String::from_utf8_lossy(&line).trim_end_matches('\r'));
        let allowed = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(len)).is_ok();
        if !allowed {
            budget.store(0, Ordering::Relaxed);
            dropped.fetch_add(len, Ordering::Relaxed);
            continue;
        }
        let line = String::from_utf8_lossy(&line);
        tracing::info!(job = %job, stream = %stream, "{}", line.trim_end_matches('\r'));
    }
}
