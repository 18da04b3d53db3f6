//! Prometheus metrics.
//!
//! Counters and histograms that change per fire are created once per job and held by the
//! job's status, so the hot path is an atomic add. No per-job series sits in a registry
//! family: a collector walks the live [`Board`] at scrape time and writes each job's fire
//! counters, duration histogram and state gauges (next fire, running, last success, check up).
//! A family keyed by label set held a second copy of every name and cost a locked hash look-up
//! per series per scrape. `per_job_metrics = false` drops the per-job series, for very large
//! schedules.
//!
//! The per-job label is `job_name`, not `job`: Prometheus sets `job` on every series it
//! scrapes (the scrape job's name) and renames a target's own `job` label to `exported_job`.
//!
//! [`exposition`] picks the format a scraper asked for: OpenMetrics or the classic text format.

pub mod exposition;
pub mod per_job;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::job::Job;
use crate::jobs::Action;
use crate::status::Board;

use self::exposition::Format;
use self::per_job::{DurationHistogram, FIRES, OUTCOMES};

type Labels = Vec<(String, String)>;

/// The per-job label (see the module docs for why not `job`).
pub const JOB_LABEL: &str = "job_name";

/// Lateness buckets: 100 µs to 10 s. 20 ms (not 25) is a bound because it is the p99 target of
/// a burst of 100 000 fires: a histogram can only say "within" at its bounds.
pub const LATENESS_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// The board whose jobs the per-job series are read from ([`Metrics::watch`]).
    board: Mutex<Weak<Board>>,
    per_job: bool,
    /// Without per-job series, every job counts into the same five counters: one handle.
    fires_by_outcome: Arc<[Counter; 5]>,
    /// Dispatch time minus scheduled time, for every scheduled fire.
    pub lateness: Histogram,
    pub jobs: Gauge,
    pub reloads: Family<Labels, Counter>,
    pub outbox: Gauge,
    pub outbox_dropped: Counter,
    /// Writes of the state (journal, history) that failed.
    pub state_write_errors: Counter,
    /// State files found damaged at start.
    pub state_damaged: Counter,
}

/// A cluster node's series.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    pub leader: Gauge,
    pub leader_changes: Counter,
    pub renew_failures: Counter,
    pub config_mismatch: Gauge,
    /// The round trip of each tick's fence: what a cluster adds to every fire's lateness.
    pub fence: Histogram,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        ClusterMetrics {
            leader: Gauge::default(),
            leader_changes: Counter::default(),
            renew_failures: Counter::default(),
            config_mismatch: Gauge::default(),
            fence: Histogram::new([0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0]),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(true)
    }
}

impl Metrics {
    pub fn new(per_job: bool) -> Metrics {
        let mut registry = Registry::default();
        let lateness = Histogram::new(LATENESS_BUCKETS);
        let jobs = Gauge::default();
        let reloads = Family::<Labels, Counter>::default();
        let outbox = Gauge::default();
        registry.register("beatd_jobs", "Jobs in the config", jobs.clone());
        let fires_by_outcome = Arc::new(OUTCOMES.map(|_| Counter::default()));
        if !per_job {
            // With per-job series the board's collector writes this family, by job.
            registry.register_collector(Box::new(FiresByOutcome(fires_by_outcome.clone())));
        }
        registry.register(
            "beatd_fire_lateness_seconds",
            "Dispatch time minus scheduled time, per scheduled fire",
            lateness.clone(),
        );
        registry.register("beatd_config_reloads", "Config reloads by result", reloads.clone());
        registry.register("beatd_outbox_messages", "Queue messages waiting for their broker", outbox.clone());
        let outbox_dropped = Counter::default();
        registry.register(
            "beatd_outbox_dropped",
            "Queue messages dropped because the outbox was full",
            outbox_dropped.clone(),
        );
        let state_write_errors = Counter::default();
        registry.register(
            "beatd_state_write_errors",
            "Writes of the fire journal or the run history that failed (a full disk, a read-only file system)",
            state_write_errors.clone(),
        );
        let state_damaged = Counter::default();
        registry.register(
            "beatd_state_damaged_files",
            "State files found damaged at start (a damaged run history is moved aside and started afresh)",
            state_damaged.clone(),
        );
        for result in ["success", "failure"] {
            let _ = reloads.get_or_create(&vec![("result".into(), result.into())]);
        }
        Metrics {
            registry: Mutex::new(registry),
            board: Mutex::new(Weak::new()),
            per_job,
            fires_by_outcome,
            lateness,
            jobs,
            reloads,
            outbox,
            outbox_dropped,
            state_write_errors,
            state_damaged,
        }
    }

    /// Registers the cluster's series (only a node with `[cluster]` has them).
    pub fn cluster(&self) -> ClusterMetrics {
        let m = ClusterMetrics::default();
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.register("beatd_cluster_leader", "1 while this node leads the cluster, else 0", m.leader.clone());
        registry.register(
            "beatd_cluster_leader_changes",
            "Times this node became leader or stopped being leader",
            m.leader_changes.clone(),
        );
        registry.register(
            "beatd_cluster_lease_renew_failures",
            "Lease renewals that got no answer or an error from Redis",
            m.renew_failures.clone(),
        );
        registry.register(
            "beatd_cluster_config_mismatch",
            "1 while this node's jobs differ from the leader's",
            m.config_mismatch.clone(),
        );
        registry.register(
            "beatd_cluster_fence_seconds",
            "Round trip of each tick's fence in Redis, which every fire of the tick waits for",
            m.fence.clone(),
        );
        m
    }

    /// The counters (by outcome) and duration histogram a job's status holds: its own with
    /// per-job series, else the shared counters and none.
    pub fn job_handles(&self, job: &Job) -> (Arc<[Counter; 5]>, Option<Box<DurationHistogram>>) {
        let fires = match self.per_job {
            true => Arc::new(OUTCOMES.map(|_| Counter::default())),
            false => self.fires_by_outcome.clone(),
        };
        (fires, self.duration_handle(job))
    }

    /// A duration histogram for a job that is not instant, with per-job series.
    pub fn duration_handle(&self, job: &Job) -> Option<Box<DurationHistogram>> {
        (self.per_job && !matches!(job.action, Action::Noop(_))).then(Box::default)
    }

    /// Registers the series read from `board` at scrape time.
    pub fn watch(&self, board: &Arc<Board>) {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.register("beatd_loop_iterations", "Completed timer loop iterations", board.health.iterations.clone());
        registry.register_collector(Box::new(BoardSeries { board: Arc::downgrade(board), per_job: self.per_job }));
        drop(registry);
        *self.board.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(board);
    }

    /// Every series, in `format`.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        // About 1.4 kB a job with per-job series: size the buffer once instead of growing it.
        let jobs = usize::try_from(self.jobs.get()).unwrap_or(0);
        let mut out = String::with_capacity(if self.per_job { 4096 + jobs * 1536 } else { 16 * 1024 });
        {
            let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            prometheus_client::encoding::text::encode(&mut out, &registry)?;
        }
        // The registry's part is a few dozen lines: rewritten for the classic format, then the
        // per-job series, written in the format asked for, go before OpenMetrics' `# EOF`.
        out.truncate(out.strip_suffix(EOF).map_or(out.len(), str::len));
        if format == Format::Text {
            out = exposition::to_text(&out);
        }
        let board = self.board.lock().unwrap_or_else(|p| p.into_inner()).upgrade();
        if let (true, Some(board)) = (self.per_job, board) {
            per_job::write(&mut out, &board.jobs(), format);
        }
        if format == Format::OpenMetrics {
            out.push_str(EOF);
        }
        Ok(out)
    }
}

/// `beatd_fires` by outcome alone, without per-job series.
#[derive(Debug)]
struct FiresByOutcome(Arc<[Counter; 5]>);

impl Collector for FiresByOutcome {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(FIRES.0, FIRES.1, None, MetricType::Counter)?;
        for (outcome, counter) in OUTCOMES.iter().zip(self.0.iter()) {
            counter.encode(family.encode_family(&[("outcome", *outcome)])?)?;
        }
        Ok(())
    }
}

const EOF: &str = "# EOF\n";

/// The series read from the live board, but for the per-job ones ([`per_job`]).
#[derive(Debug)]
struct BoardSeries {
    board: Weak<Board>,
    per_job: bool,
}

impl Collector for BoardSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(board) = self.board.upgrade() else { return Ok(()) };
        let overdue = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        overdue.set(board.health.overdue().as_secs_f64());
        overdue.encode(encoder.encode_descriptor(
            "beatd_loop_overdue_seconds",
            "How far the timer loop is past the deadline it slept until: 0 while it keeps time, over 5 when stuck",
            None,
            MetricType::Gauge,
        )?)?;
        let board = board.jobs();
        if !self.per_job {
            let running: i64 = board.jobs.iter().map(|e| e.status.running.load(Ordering::Relaxed) as i64).sum();
            let g = Gauge::<i64>::default();
            g.set(running);
            let m = encoder.encode_descriptor("beatd_jobs_running", "Runs in progress", None, g.metric_type())?;
            g.encode(m)?;
        }
        Ok(())
    }
}
