//! `beatd status`, `trigger`, `pause`, `resume`, `cancel`: talk to the running daemon's HTTP API.
//!
//! The address and the token come from the config's `[api]` section, so an operator types no
//! URLs and no secrets: the token is `token_file`, or the one the daemon made in its state
//! folder, readable by beatd's user only (so mutations take `sudo`, or beatd's user). Over a
//! unix socket no token is needed: the socket's permissions decide.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{ConfigArg, Failed, fail, relative};
use crate::api::JobView;
use crate::api::Listen;
use crate::config::Config;
use crate::runs::RunView;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The API's JSON, one array.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The job's name.
    #[arg(add = clap_complete::engine::ArgValueCompleter::new(super::completions::job_names))]
    name: String,
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// A fire id (as `trigger` prints it, or `BEATD_FIRE_ID`), or a job's name: every queued
    /// or running run of that job.
    run: String,
}

/// What to ask of the daemon.
#[derive(Debug, Clone, Copy)]
pub enum Verb {
    Trigger,
    Pause,
    Resume,
}

struct Client {
    base: String,
    token: Option<String>,
    /// Why there is no token, when the daemon needs one.
    no_token: Option<String>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    fn new(config: &Config) -> Result<Client, Failed> {
        let api = config.api.as_ref().ok_or_else(|| {
            fail(format!(
                "{} has no [api] section: these commands talk to the running daemon's HTTP API",
                config.path.display()
            ))
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start the runtime: {e}")))?;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Listen::Unix(path) = &api.listen {
            http = http.unix_socket(path.as_path());
        }
        let http = http.build().map_err(|e| fail(format!("cannot build an HTTP client: {e}")))?;
        let (token, no_token) = match (&api.listen, api.allow_unauthenticated) {
            (Listen::Unix(_), _) | (_, true) => (None, None),
            _ => match crate::api::auth::token_for_client(api, &config.scheduler.state_dir).1 {
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        Ok(Client { base: api.client_base(), token, no_token, http, runtime })
    }

    fn call(&self, method: reqwest::Method, path: &str) -> Result<Value, Failed> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        self.runtime.block_on(async {
            let resp = req.send().await.map_err(|e| {
                fail(format!("cannot reach beatd at {}: {} (is it running?)", self.base, crate::http::error_chain(&e)))
            })?;
            let status = resp.status();
            let body: Value = resp.json().await.map_err(|e| fail(format!("unexpected answer from {url}: {e}")))?;
            if status.is_success() {
                return Ok(body);
            }
            let why = body["error"].as_str().map_or_else(|| format!("{url} answered {status}"), str::to_string);
            match (&self.no_token, status) {
                (Some(problem), reqwest::StatusCode::UNAUTHORIZED) => {
                    Err(fail(format!("{why}: {problem} (run this as root, or as beatd's user)")))
                }
                _ => Err(fail(why)),
            }
        })
    }
}

pub fn status(args: StatusArgs) -> Result<(), Failed> {
    let config = args.config.read()?;
    let client = Client::new(&config)?;
    let body = client.call(reqwest::Method::GET, "/api/jobs")?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let jobs: Vec<JobView> = serde_json::from_value(body).map_err(|e| fail(format!("unexpected job list: {e}")))?;
    let now = Utc::now();
    if config.cluster.is_some() {
        let cluster = client.call(reqwest::Method::GET, "/api/cluster")?;
        println!("{}", cluster_line(&cluster));
    }
    println!("{:<28}  {:<8}  {:<39}  {:<8}  {:>7}", "JOB", "STATE", "NEXT", "LAST", "RUNNING");
    for j in jobs {
        let state = if !j.enabled {
            "disabled"
        } else if j.paused {
            "paused"
        } else {
            "active"
        };
        let next = j.next_fire.as_deref().map_or("-".to_string(), |n| match DateTime::parse_from_rfc3339(n) {
            Ok(t) => format!("{} ({})", t.format("%Y-%m-%d %H:%M:%S %:z"), relative(t.with_timezone(&Utc) - now)),
            Err(_) => n.to_string(),
        });
        let last = j.last_run.as_ref().map_or("-", |r| r.outcome.as_str());
        println!("{:<28}  {state:<8}  {next:<39}  {last:<8}  {:>7}", j.name, j.running);
    }
    let runs = active_runs(&client)?;
    if !runs.is_empty() {
        println!();
        println!("{:<36}  {:<28}  {:<8}  {:>7}  PROGRESS", "RUN", "JOB", "STATE", "ATTEMPT");
        for r in runs {
            let progress = r.progress.map_or("-".to_string(), |p| match p.percent {
                Some(n) => format!("{n:>3}% {}", p.message),
                None => format!("   - {}", p.message),
            });
            let state = serde_json::to_value(r.state).unwrap_or_default();
            let state = state.as_str().unwrap_or("?");
            println!("{:<36}  {:<28}  {state:<8}  {:>7}  {progress}", r.fire_id, r.job, r.attempt);
        }
    }
    Ok(())
}

fn active_runs(client: &Client) -> Result<Vec<RunView>, Failed> {
    let body = client.call(reqwest::Method::GET, "/api/runs")?;
    serde_json::from_value(body).map_err(|e| fail(format!("unexpected run list: {e}")))
}

pub fn cancel(args: CancelArgs) -> Result<(), Failed> {
    let config = args.config.read()?;
    let client = Client::new(&config)?;
    let ids: Vec<String> = if uuid::Uuid::parse_str(&args.run).is_ok() {
        vec![args.run.clone()]
    } else {
        let ids: Vec<String> =
            active_runs(&client)?.into_iter().filter(|r| r.job == args.run).map(|r| r.fire_id).collect();
        if ids.is_empty() {
            return Err(fail(format!("job \"{}\" has no queued or running run", args.run)));
        }
        ids
    };
    for id in ids {
        let body = client.call(reqwest::Method::POST, &format!("/api/runs/{id}/cancel"))?;
        println!("cancelling {} run {id}", body["job"].as_str().unwrap_or("?"));
    }
    Ok(())
}

/// `cluster prod: this node beat-b is a follower; the leader is beat-a. Run history is this node's own.`
fn cluster_line(c: &Value) -> String {
    let (name, node) = (c["cluster"].as_str().unwrap_or("?"), c["node"].as_str().unwrap_or("?"));
    let mut line = match (c["role"].as_str(), c["leader"].as_str()) {
        (Some("leader"), _) => format!("cluster {name}: this node {node} is the leader"),
        (_, Some(leader)) => format!("cluster {name}: this node {node} is a follower; the leader is {leader}"),
        _ => format!("cluster {name}: this node {node} is a follower; no node leads (is Redis reachable?)"),
    };
    if c["config_mismatch"] == true {
        line.push_str("; this node's jobs DIFFER from the leader's");
    }
    line.push_str(". Run history (beatd history) is this node's own.");
    line
}

pub fn job(verb: Verb, args: JobArgs) -> Result<(), Failed> {
    let config = args.config.read()?;
    let client = Client::new(&config)?;
    let (path, done) = match verb {
        Verb::Trigger => ("run", "triggered"),
        Verb::Pause => ("pause", "paused"),
        Verb::Resume => ("resume", "resumed"),
    };
    let body = client.call(reqwest::Method::POST, &format!("/api/jobs/{}/{path}", args.name))?;
    match body["fire_id"].as_str() {
        Some(id) => println!("{done} {}: fire id {id}", args.name),
        None => println!("{done} {}", args.name),
    }
    Ok(())
}
