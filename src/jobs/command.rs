//! `command`: runs a shell command.
//!
//! The command runs under `/bin/sh -c` in its own process group, so a terminal's Ctrl-C reaches
//! beatd (which then grants running commands the shutdown grace period) rather than every
//! child, and so the whole group can be killed at once when the grace period ends. The child
//! learns which fire it is from `BEATD_JOB`, `BEATD_SCHEDULED_AT` and `BEATD_FIRE_ID`; its
//! output is logged line by line under the job's name.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::SecondsFormat;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command as Process;
use toml::de::DeValue;

use super::{Outcome, RunContext};
use crate::config::diag::Diags;
use crate::config::table::{Table, type_name};
use crate::fire::Fire;

pub const KEYS: &[&str] = &["command", "workdir", "env"];

#[derive(Debug, Clone)]
pub struct Command {
    pub command: String,
    pub workdir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl Command {
    pub fn parse(t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<Self> {
        let command = t.req_str(d, "command");
        if let Some(c) = &command
            && c.value.trim().is_empty()
        {
            t.error(d, c.span.clone(), "\"command\" must not be empty");
        }
        let workdir = t.path(d, "workdir", base).map(|(p, _)| p);
        let mut env = Vec::new();
        if let Some((table, _)) = t.table(d, "env") {
            for (k, v) in table {
                match v.get_ref() {
                    DeValue::String(s) => env.push((k.get_ref().to_string(), s.to_string())),
                    other => t.error(
                        d,
                        v.span(),
                        format!("env \"{}\" must be a string, not {}", k.get_ref(), type_name(other)),
                    ),
                }
            }
        }
        Some(Command { command: command?.value.to_string(), workdir, env })
    }

    pub async fn run(&self, fire: &Fire, cx: &RunContext) -> Outcome {
        let job = fire.job.name.as_str();
        let zone = fire.job.timezone;
        let scheduled = fire.scheduled_at.with_timezone(&zone).to_rfc3339_opts(SecondsFormat::AutoSi, false);
        let mut cmd = Process::new("/bin/sh");
        cmd.arg("-c")
            .arg(&self.command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("BEATD_JOB", job)
            .env("BEATD_SCHEDULED_AT", scheduled)
            .env("BEATD_FIRE_ID", fire.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let msg = match &self.workdir {
                    Some(dir) => format!("cannot start command in {}: {e}", dir.display()),
                    None => format!("cannot start command: {e}"),
                };
                tracing::error!(job = %job, "{msg}");
                return Outcome::Failure(msg);
            }
        };
        let pgid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
        let out = child.stdout.take().map(|s| tokio::spawn(log_lines(job.to_string(), "stdout", s)));
        let err = child.stderr.take().map(|s| tokio::spawn(log_lines(job.to_string(), "stderr", s)));

        let status = tokio::select! {
            status = child.wait() => status,
            () = cx.kill.cancelled() => {
                if let Some(pgid) = pgid {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                tracing::warn!(job = %job, "killed: the shutdown grace period is over");
                child.wait().await
            }
        };
        for task in [out, err].into_iter().flatten() {
            let _ = task.await;
        }
        match status {
            Ok(s) if s.success() => {
                tracing::info!(job = %job, "command exited with status 0");
                Outcome::Success
            }
            Ok(s) => {
                let msg = match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                    (Some(code), _) => format!("command exited with status {code}"),
                    (None, Some(sig)) => format!("command killed by signal {sig}"),
                    _ => format!("command ended: {s}"),
                };
                tracing::warn!(job = %job, "{msg}");
                Outcome::Failure(msg)
            }
            Err(e) => {
                let msg = format!("waiting for command failed: {e}");
                tracing::error!(job = %job, "{msg}");
                Outcome::Failure(msg)
            }
        }
    }
}

async fn log_lines(job: String, stream: &'static str, pipe: impl AsyncRead + Unpin) {
    // Split on bytes, not lines of UTF-8: output that is not UTF-8 is still logged (lossily)
    // and, above all, still read, so the child never blocks on a full pipe.
    let mut lines = BufReader::new(pipe).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        let line = String::from_utf8_lossy(&line);
        tracing::info!(job = %job, stream = %stream, "{}", line.trim_end_matches('\r'));
    }
}
