//! A node's part in the cluster: the keeper task that takes, renews and gives up the lease,
//! and the fence the timer loop asks before each tick.
//!
//! The keeper and the loop share a [`Node`]: the role, the current term and what the API shows.
//! The loop never waits for the keeper; it reads the term (may this node still dispatch, on
//! the monotonic clock?) and then asks Redis itself, so a keeper stuck on a Redis that never
//! answers cannot keep a leader firing past its term.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, RedisConnectionInfo};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::{Fenced, Lease};
use super::{ClusterConfig, Target, Term, default_node};
use crate::metrics::ClusterMetrics;
use crate::status::{Board, JobSet};

/// What a node is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Holds the lease: dispatches, after the fence says yes for each tick.
    Leader,
    /// Another node (or none) holds the lease: keeps the schedule, dispatches nothing.
    Follower,
}

/// What the API, the status line and the loop read about this node.
#[derive(Debug, Clone)]
pub struct View {
    pub node: String,
    pub role: Role,
    /// The leader's node name, as last seen (this node's own when it leads).
    pub leader: Option<String>,
    /// How long this node has led, when it does.
    pub leading_for: Option<Duration>,
    /// This node's jobs differ from the leader's.
    pub config_mismatch: bool,
}

#[derive(Debug)]
struct State {
    term: Option<Term>,
    since: Option<Instant>,
    leader: Option<String>,
    config_mismatch: bool,
}

/// One node of the cluster, shared by the keeper task, the loop and the API.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub cluster: ClusterConfig,
    lease: Lease,
    target: Target,
    state: Mutex<State>,
    /// Wakes the loop when this node becomes leader, so catch-up runs at once.
    pub became_leader: Notify,
    pub metrics: ClusterMetrics,
    /// The live jobs: paused flags follow the cluster's paused set.
    board: Arc<Board>,
    /// Runs a job now (a run asked for on another node, taken from Redis by the leader).
    run_now: RunNow,
    keys: Keys,
}

/// Starts a manual run of a job at an instant (which decides its fire id).
pub struct RunNow(pub Box<RunNowFn>);

type RunNowFn = dyn Fn(&str, DateTime<Utc>) + Send + Sync;

impl std::fmt::Debug for RunNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunNow")
    }
}

/// The cluster's shared keys besides the lease.
#[derive(Debug)]
struct Keys {
    /// A set: the paused jobs, for every node.
    paused: String,
    /// A list of runs asked for on followers, for the leader to start.
    runs: String,
    /// The leader's job-set hash.
    leader_config: String,
}

/// What the fence decided for a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Dispatch: the cluster's watermark was `before` (every fire at or before it is handled).
    Dispatch { before: Option<DateTime<Utc>> },
    /// Dispatch nothing.
    Stand,
}

impl Node {
    /// This node of `config`'s cluster; nothing is sent to Redis until [`keep`] runs.
    pub fn new(
        config: &ClusterConfig,
        metrics: ClusterMetrics,
        board: Arc<Board>,
        run_now: RunNow,
    ) -> Result<Arc<Node>, redis::RedisError> {
        let name = config.node.clone().unwrap_or_else(default_node);
        if let Target::Direct(url) = &config.target {
            redis::Client::open(url.as_str())?;
        }
        let prefix = format!("beatd:{}", config.name);
        Ok(Arc::new(Node {
            lease: Lease::new(&config.name, &name, config.lease),
            name,
            cluster: config.clone(),
            target: config.target.clone(),
            state: Mutex::new(State { term: None, since: None, leader: None, config_mismatch: false }),
            became_leader: Notify::new(),
            metrics,
            board,
            run_now,
            keys: Keys {
                paused: format!("{prefix}:paused"),
                runs: format!("{prefix}:runs"),
                leader_config: format!("{prefix}:leader_config"),
            },
        }))
    }

    /// Pauses or resumes `job` for the whole cluster.
    pub async fn set_paused(&self, job: &str, paused: bool) -> redis::RedisResult<()> {
        let mut conn = self.connect().await?;
        let verb = if paused { "SADD" } else { "SREM" };
        redis::cmd(verb).arg(&self.keys.paused).arg(job).query_async::<()>(&mut conn).await
    }

    /// Asks the leader to run `job` now, as of `at` (which decides the fire id).
    pub async fn ask_leader_to_run(&self, job: &str, at: DateTime<Utc>) -> redis::RedisResult<()> {
        let mut conn = self.connect().await?;
        let request = format!("{} {job}", at.timestamp_nanos_opt().unwrap_or_default());
        redis::cmd("LPUSH").arg(&self.keys.runs).arg(request).query_async::<()>(&mut conn).await
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node may dispatch at `now` (monotonic): it holds a term that has not ended.
    pub fn holds(&self, now: Instant) -> bool {
        self.state().term.is_some_and(|t| t.holds(now))
    }

    pub fn view(&self) -> View {
        let state = self.state();
        let leading = state.term.is_some();
        View {
            node: self.name.clone(),
            role: if leading { Role::Leader } else { Role::Follower },
            leader: state.leader.clone(),
            leading_for: state.since.filter(|_| leading).map(|s| s.elapsed()),
            config_mismatch: state.config_mismatch,
        }
    }

    /// How long one Redis request may take: a third of the lease, at most 2 s.
    fn request_timeout(&self) -> Duration {
        (self.cluster.lease / 3).min(Duration::from_secs(2))
    }

    /// A connection to the cluster's Redis, with this node's timeouts.
    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let timeout = self.request_timeout();
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
        let client = match &self.target {
            Target::Direct(url) => redis::Client::open(url.as_str())?,
            Target::Sentinel { sentinels, service, db, password } => {
                let mut info = RedisConnectionInfo::default().set_db(*db);
                if let Some(p) = password {
                    info = info.set_password(p);
                }
                let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                let mut sentinel =
                    SentinelClient::build(sentinels.clone(), service.as_str(), Some(node), SentinelServerType::Master)?;
                // Asked at every (re)connection: after a failover, the promoted replica.
                match tokio::time::timeout(timeout, sentinel.async_get_client()).await {
                    Ok(client) => client?,
                    Err(_) => return Err(timed_out(timeout)),
                }
            }
        };
        match tokio::time::timeout(timeout, client.get_multiplexed_async_connection_with_config(&config)).await {
            Ok(conn) => conn,
            Err(_) => Err(timed_out(timeout)),
        }
    }

    fn lead(&self, sent: Instant) {
        let mut state = self.state();
        state.term = Some(Term::new(self.cluster.lease, sent));
        state.since = Some(Instant::now());
        state.leader = Some(self.name.clone());
        drop(state);
        self.metrics.leader.set(1);
        self.metrics.leader_changes.inc();
        tracing::info!(node = %self.name, "this node is now the cluster's leader");
        self.became_leader.notify_one();
    }

    fn renewed(&self, sent: Instant) {
        if let Some(term) = &mut self.state().term {
            term.renewed(sent);
        }
    }

    /// Stops leading (`why` says why), if it did.
    pub fn step_down(&self, why: &str) {
        let mut state = self.state();
        if state.term.take().is_none() {
            return;
        }
        state.since = None;
        if state.leader.as_deref() == Some(&self.name) {
            state.leader = None;
        }
        drop(state);
        self.metrics.leader.set(0);
        self.metrics.leader_changes.inc();
        tracing::warn!(node = %self.name, "no longer the cluster's leader: {why}");
    }

    /// Brings the board's paused flags to the cluster's paused set.
    fn follow_paused(&self, paused: &HashSet<String>) {
        for e in &self.board.jobs().jobs {
            let now = paused.contains(&*e.job.name);
            if e.status.paused.swap(now, Ordering::Relaxed) != now {
                tracing::info!(job = %e.job.name, "{} for the cluster", if now { "paused" } else { "resumed" });
            }
        }
    }

    /// Compares this node's jobs with the leader's (`leader_hash`).
    fn compare_config(&self, leader_hash: Option<String>, own: &str) {
        let mismatch = leader_hash.is_some_and(|h| h != own);
        let mut state = self.state();
        if state.config_mismatch != mismatch {
            state.config_mismatch = mismatch;
            self.metrics.config_mismatch.set(i64::from(mismatch));
            if mismatch {
                tracing::warn!(
                    node = %self.name,
                    "this node's jobs differ from the leader's: the leader runs its own; make the configs the same"
                );
            } else {
                tracing::info!(node = %self.name, "this node's jobs are the leader's again");
            }
        }
    }

    /// The shared control state, read and written once per keeper round: the paused set, the
    /// runs asked for on followers (the leader takes and starts them), and the job-set hashes.
    async fn sync(&self, conn: &mut MultiplexedConnection, config_hash: &str) -> redis::RedisResult<()> {
        let paused: HashSet<String> = redis::cmd("SMEMBERS").arg(&self.keys.paused).query_async(conn).await?;
        self.follow_paused(&paused);
        if self.view().role == Role::Leader {
            let ttl = u64::try_from(self.cluster.lease.as_millis() * 3).unwrap_or(u64::MAX);
            redis::cmd("SET")
                .arg(&self.keys.leader_config)
                .arg(config_hash)
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(conn)
                .await?;
            self.compare_config(None, config_hash);
            let runs: Option<Vec<String>> = redis::cmd("RPOP").arg(&self.keys.runs).arg(100).query_async(conn).await?;
            for request in runs.unwrap_or_default() {
                let Some((nanos, job)) = request.split_once(' ') else { continue };
                let at = nanos.parse().map(DateTime::from_timestamp_nanos).unwrap_or_else(|_| Utc::now());
                tracing::info!(job, "run asked for on another node");
                (self.run_now.0)(job, at);
            }
        } else {
            let leader: Option<String> = redis::cmd("GET").arg(&self.keys.leader_config).query_async(conn).await?;
            self.compare_config(leader, config_hash);
        }
        Ok(())
    }

    fn saw_leader(&self, leader: Option<String>) {
        let mut state = self.state();
        if state.term.is_none() && state.leader != leader {
            match &leader {
                Some(l) => tracing::info!(node = %self.name, "the cluster's leader is {l}"),
                None => tracing::info!(node = %self.name, "the cluster has no leader"),
            }
            state.leader = leader;
        }
    }
}

/// A hash of a job set: the same jobs give the same hash on every node.
pub fn config_hash(set: &JobSet) -> String {
    use std::fmt::Write;
    let mut jobs: Vec<(&str, uuid::Uuid)> = set.jobs.iter().map(|e| (&*e.job.name, e.job.definition)).collect();
    jobs.sort_unstable();
    let mut text = String::new();
    for (name, definition) in jobs {
        let _ = writeln!(text, "{name}\n{}", definition.simple());
    }
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes()).simple().to_string()
}

/// Takes the lease when no node holds it, renews it every `lease / 3` while it is this node's,
/// keeps the shared control state in step every round (half a second at most), and gives the
/// lease up at `shutdown` so another node takes over at once. Runs until `shutdown`.
pub async fn keep(node: Arc<Node>, shutdown: CancellationToken) {
    let lease = node.cluster.lease;
    let every = Term::renew_every(lease);
    // A follower asks often enough that a released lease is taken within half a second.
    let poll = every.min(Duration::from_millis(500));
    let timeout = node.request_timeout();
    let mut conn: Option<MultiplexedConnection> = None;
    let mut unreachable_logged = false;
    let mut renew_at = Instant::now();
    // The job set last hashed, kept (so its address cannot be reused by the next one) with its
    // hash: recomputed after a reload only.
    let mut hashed: Option<(Arc<JobSet>, String)> = None;
    loop {
        let round = Instant::now();
        let c = match &mut conn {
            Some(c) => Some(c),
            None => match node.connect().await {
                Ok(c) => {
                    if unreachable_logged {
                        tracing::info!(node = %node.name, "the cluster's Redis answers again");
                        unreachable_logged = false;
                    }
                    Some(conn.insert(c))
                }
                Err(e) => {
                    if !unreachable_logged {
                        tracing::error!(
                            node = %node.name,
                            "cannot reach the cluster's Redis ({e}); no node can lead, so nothing fires until it is back"
                        );
                        unreachable_logged = true;
                    }
                    if node.view().role == Role::Leader {
                        node.metrics.renew_failures.inc();
                        if !node.holds(Instant::now()) {
                            node.step_down("cannot reach Redis to renew the lease");
                        }
                    }
                    None
                }
            },
        };
        if let Some(c) = c {
            let sent = Instant::now();
            let mut broken = false;
            if node.view().role == Role::Leader {
                if sent >= renew_at {
                    match tokio::time::timeout(timeout, node.lease.renew(c)).await {
                        Ok(Ok(true)) => node.renewed(sent),
                        Ok(Ok(false)) => node.step_down("another node holds the lease"),
                        failed => {
                            node.metrics.renew_failures.inc();
                            let why = match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => format!("no answer within {}", humantime::format_duration(timeout)),
                            };
                            tracing::warn!(node = %node.name, "cannot renew the lease: {why}");
                            broken = true;
                            if !node.holds(Instant::now()) {
                                node.step_down("the lease could not be renewed in time");
                            }
                        }
                    }
                    renew_at = sent + every;
                }
            } else {
                match tokio::time::timeout(timeout, node.lease.acquire(c)).await {
                    Ok(Ok(true)) => {
                        node.lead(sent);
                        renew_at = sent + every;
                    }
                    Ok(Ok(false)) => {
                        if let Ok(Ok(holder)) = tokio::time::timeout(timeout, node.lease.holder(c)).await {
                            node.saw_leader(holder);
                        }
                    }
                    Ok(Err(_)) | Err(_) => broken = true,
                }
            }
            if !broken {
                let set = node.board.jobs();
                let hash = match &hashed {
                    Some((last, hash)) if Arc::ptr_eq(last, &set) => hash.clone(),
                    _ => {
                        let hash = config_hash(&set);
                        hashed = Some((set, hash.clone()));
                        hash
                    }
                };
                if let Err(e) | Ok(Err(e)) =
                    tokio::time::timeout(timeout, node.sync(c, &hash)).await.map_err(|_| timed_out(timeout))
                {
                    tracing::warn!(node = %node.name, "cannot read the cluster's shared state: {e}");
                    broken = true;
                }
            }
            if broken {
                conn = None;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(round + poll) => {}
        }
    }
    if node.view().role == Role::Leader {
        node.step_down("stopping");
        if let Some(c) = &mut conn {
            let _ = tokio::time::timeout(timeout, node.lease.release(c)).await;
        }
    }
}

fn timed_out(timeout: Duration) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {}", humantime::format_duration(timeout)),
    ))
}

/// The loop's side: asks the fence for each tick while this node holds a term.
#[derive(Debug)]
pub struct Member {
    pub node: Arc<Node>,
    conn: Option<MultiplexedConnection>,
    failing: bool,
    /// The latest tick this node's fence accepted.
    fenced_until: Option<DateTime<Utc>>,
}

impl Member {
    pub fn new(node: Arc<Node>) -> Member {
        Member { node, conn: None, failing: false, fenced_until: None }
    }

    /// Whether a tick at `now` (wall clock) may dispatch: this node's term has not ended on
    /// the monotonic clock, and the fence in Redis accepted the tick.
    pub async fn fence(&mut self, now: DateTime<Utc>) -> Verdict {
        if !self.node.holds(Instant::now()) {
            return Verdict::Stand;
        }
        let asked = Instant::now();
        let answer = match &mut self.conn {
            Some(c) => self.node.lease.fence(c, now).await,
            None => match self.node.connect().await {
                Ok(c) => self.node.lease.fence(self.conn.insert(c), now).await,
                Err(e) => Err(e),
            },
        };
        self.node.metrics.fence.observe(asked.elapsed().as_secs_f64());
        match answer {
            Ok(Fenced::Ours { before }) => {
                if self.failing {
                    tracing::info!(node = %self.node.name, "the fence answers again");
                    self.failing = false;
                }
                // A watermark behind what this node itself fenced was lost by Redis (a failover
                // to a replica that had not caught up): this node's own ticks were handled.
                let before = before.max(self.fenced_until);
                self.fenced_until = Some(self.fenced_until.map_or(now, |f| f.max(now)));
                Verdict::Dispatch { before }
            }
            Ok(Fenced::NotOurs) => {
                self.node.step_down("the fence refused a tick: the lease expired or another node took it");
                Verdict::Stand
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(node = %self.node.name, "cannot fence a tick ({e}); nothing fires until it can");
                    self.failing = true;
                }
                self.conn = None;
                Verdict::Stand
            }
        }
    }
}
