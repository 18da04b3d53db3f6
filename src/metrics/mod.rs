//! Prometheus metrics.
//!
//! Counters and histograms that change per fire are created once per job and held by the
//! job's status, so the hot path is an atomic add. Gauges that describe a job's state (next
//! fire, running, last success, check up) are not stored twice: a collector reads them from the
//! live [`Board`] at scrape time. `per_job_metrics = false` drops the `job` label everywhere, for
//! very large schedules.

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

type Labels = Vec<(String, String)>;

/// Lateness buckets: 100 µs to 10 s.
pub const LATENESS_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Job duration buckets: 10 ms to 1 h.
const DURATION_BUCKETS: [f64; 12] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
const OUTCOMES: [&str; 5] = ["success", "failure", "timeout", "skipped", "cancelled"];

#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    per_job: bool,
    fires: Family<Labels, Counter>,
    /// Without per-job series, every job counts into the same five counters: one handle.
    fires_by_outcome: std::sync::OnceLock<Arc<[Counter; 5]>>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
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

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(true)
    }
}

impl Metrics {
    pub fn new(per_job: bool) -> Metrics {
        let mut registry = Registry::default();
        let fires = Family::<Labels, Counter>::default();
        let durations = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        let lateness = Histogram::new(LATENESS_BUCKETS);
        let jobs = Gauge::default();
        let reloads = Family::<Labels, Counter>::default();
        let outbox = Gauge::default();
        registry.register("beatd_jobs", "Jobs in the config", jobs.clone());
        registry.register(
            "beatd_fires",
            "Fires by job and outcome (success, failure, timeout, skipped)",
            fires.clone(),
        );
        registry.register(
            "beatd_fire_lateness_seconds",
            "Dispatch time minus scheduled time, per scheduled fire",
            lateness.clone(),
        );
        registry.register(
            "beatd_job_duration_seconds",
            "Run durations of jobs that are not instant",
            durations.clone(),
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
            per_job,
            fires,
            fires_by_outcome: Default::default(),
            durations,
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

    /// The per-job counters (by outcome) and duration histogram a job's status holds.
    pub fn job_handles(&self, job: &Job) -> (Arc<[Counter; 5]>, Option<Histogram>) {
        let labels = |outcome: &str| -> Labels {
            let mut l = vec![("outcome".to_string(), outcome.to_string())];
            if self.per_job {
                l.insert(0, ("job".into(), job.name.to_string()));
            }
            l
        };
        let counters = || Arc::new(OUTCOMES.map(|o| self.fires.get_or_create(&labels(o)).clone()));
        let fires = if self.per_job { counters() } else { self.fires_by_outcome.get_or_init(counters).clone() };
        (fires, self.duration_handle(job))
    }

    /// The job's duration histogram, for jobs that are not instant, with per-job metrics.
    pub fn duration_handle(&self, job: &Job) -> Option<Histogram> {
        (self.per_job && !matches!(job.action, Action::Noop(_)))
            .then(|| self.durations.get_or_create(&vec![("job".into(), job.name.to_string())]).clone())
    }

    /// Drops the series of a job that is gone (after a reload).
    pub fn forget(&self, job: &str) {
        if !self.per_job {
            return;
        }
        for o in OUTCOMES {
            self.fires.remove(&vec![("job".into(), job.to_string()), ("outcome".into(), o.to_string())]);
        }
        self.durations.remove(&vec![("job".into(), job.to_string())]);
    }

    /// Registers the gauges read from `board` at scrape time.
    pub fn watch(&self, board: &Arc<Board>) {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.register("beatd_loop_iterations", "Completed timer loop iterations", board.health.iterations.clone());
        registry.register_collector(Box::new(BoardGauges { board: Arc::downgrade(board), per_job: self.per_job }));
    }

    /// The text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        // About 1.4 kB a job with per-job series: size the buffer once instead of growing it.
        let jobs = usize::try_from(self.jobs.get()).unwrap_or(0);
        let mut out = String::with_capacity(if self.per_job { 4096 + jobs * 1536 } else { 16 * 1024 });
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// A per-job gauge: name, help, and how to read it (`None`: no sample for that job).
type JobGauge = (&'static str, &'static str, fn(&crate::status::LiveJob) -> Option<f64>);

/// Gauges read from the live board.
#[derive(Debug)]
struct BoardGauges {
    board: Weak<Board>,
    per_job: bool,
}

impl Collector for BoardGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(board) = self.board.upgrade() else { return Ok(()) };
        let board = board.jobs();
        if !self.per_job {
            let running: i64 =
                board.jobs.iter().map(|e| e.status.running.load(std::sync::atomic::Ordering::Relaxed) as i64).sum();
            let g = Gauge::<i64>::default();
            g.set(running);
            let m = encoder.encode_descriptor("beatd_jobs_running", "Runs in progress", None, g.metric_type())?;
            return g.encode(m);
        }
        let gauges: [JobGauge; 4] = [
            ("beatd_jobs_running", "Runs in progress, by job", |e| {
                Some(e.status.running.load(std::sync::atomic::Ordering::Relaxed) as f64)
            }),
            ("beatd_next_fire_timestamp_seconds", "When the job fires next (Unix time)", |e| {
                e.status.next_fire().map(|t| t.timestamp_millis() as f64 / 1e3)
            }),
            ("beatd_last_success_timestamp_seconds", "When the job last succeeded (Unix time)", |e| {
                e.status.last_success().map(|t| t.timestamp_millis() as f64 / 1e3)
            }),
            ("beatd_check_up", "1 when the check last found the service up, 0 when down", |e| {
                e.status.check_up().map(|up| if up { 1.0 } else { 0.0 })
            }),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for entry in &board.jobs {
                if let Some(v) = value(entry) {
                    family.encode_family(&[("job", &*entry.job.name)])?.encode_gauge(&v)?;
                }
            }
        }
        Ok(())
    }
}
