//! Delivery: one task per broker takes fires from the runner, builds their messages, and sends
//! each burst in one round trip; what cannot be sent goes to the outbox and is retried.
//!
//! States: while the outbox holds nothing for the broker, a burst is sent directly. When a send
//! fails, the burst is stored (jobs with `on_broker_down = "drop"` drop theirs, recorded as a
//! failure), and retries start: after 0.5 s, doubling up to 30 s. While the outbox holds
//! messages, new ones are stored behind them, so delivery stays in slot order; each retry sends
//! the oldest first and, once the outbox is empty, direct sending resumes. Messages that wait
//! past their `expires` are dropped instead of sent. On shutdown, what is in memory is sent
//! once more or stored.
//!
//! Every message ends in the run history exactly once: a success when the broker took it, a
//! failure when it was dropped (expired, `drop`, the outbox bound).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::amqp::Amqp;
use super::outbox::Outbox;
use super::redis::Redis;
use super::{BrokerConfigs, Kind, Message, OnBrokerDown};
use crate::clock::Clock;
use crate::fire::Fire;
use crate::jobs::Action;
use crate::state::history::{Entry, History, RunOutcome, RunRecord};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Messages read from the outbox per retry round.
const DRAIN_BATCH: usize = 10_000;
/// Fires taken from the channel at once (a tick's burst).
const MAX_BURST: usize = 100_000;

/// What every broker's task shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub history: History,
    pub clock: Clock,
    pub max_outbox: u64,
    /// `beatd_outbox_messages`.
    pub waiting: Gauge,
    /// `beatd_outbox_dropped_total`.
    pub dropped: Counter,
}

/// The brokers' delivery tasks. Cloning is cheap; sending never blocks.
#[derive(Debug, Clone, Default)]
pub struct Brokers {
    senders: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Fire>>>>,
    tracker: TaskTracker,
    /// Where a fire no task can take is recorded as failed.
    shared: Option<Shared>,
}

impl Brokers {
    /// Starts a delivery task per broker, with the outbox in `state_dir`.
    pub fn start(configs: &BrokerConfigs, state_dir: &Path, shared: Shared) -> Result<Brokers, String> {
        let brokers = Brokers { shared: Some(shared.clone()), ..Brokers::default() };
        let mut senders = HashMap::new();
        for (name, config) in configs {
            let transport = match config.url.kind {
                Kind::Redis => {
                    Transport::Redis(Box::new(Redis::new(&config.url).map_err(|e| format!("broker \"{name}\": {e}"))?))
                }
                Kind::Amqp => Transport::Amqp(Box::new(Amqp::new(&config.url))),
            };
            let outbox = Outbox::open(state_dir).map_err(|e| e.to_string())?;
            let (tx, rx) = mpsc::unbounded_channel();
            senders.insert(name.clone(), tx);
            let task = Task::new(name.clone(), transport, outbox, shared.clone());
            tracing::info!("broker \"{name}\": {}", config.url);
            brokers.tracker.spawn(task.run(rx));
        }
        *brokers.senders.lock().unwrap_or_else(|p| p.into_inner()) = senders;
        Ok(brokers)
    }

    /// Hands a fire of a queue job to its broker's task.
    pub fn send(&self, fire: Fire) {
        let Some(broker) = fire.job.action.broker().map(str::to_string) else { return };
        let sender = self.senders.lock().unwrap_or_else(|p| p.into_inner()).get(&broker).cloned();
        let why = match sender {
            Some(tx) => match tx.send(fire) {
                Ok(()) => return,
                Err(mpsc::error::SendError(fire)) => (fire, format!("broker \"{broker}\" has stopped")),
            },
            None => (
                fire,
                format!("no broker \"{broker}\" is running (brokers added by a reload start at the next restart)"),
            ),
        };
        let (fire, why) = why;
        tracing::error!(job = %fire.job.name, slot = %fire.scheduled_at, "message not sent: {why}");
        if let Some(shared) = &self.shared {
            let now = shared.clock.now();
            fire.status.finished(fire.scheduled_at, None, now, RunOutcome::Failure, None);
            shared.history.record(RunRecord {
                job: fire.job.name.clone(),
                fire_id: fire.id().to_string(),
                scheduled_at: fire.scheduled_at,
                started_at: None,
                finished_at: now,
                outcome: RunOutcome::Failure,
                attempt: 1,
                exit_code: None,
                error: Some(format!("message not sent: {why}")),
                details: Default::default(),
            });
        }
    }

    /// Stops taking fires and waits up to `limit` for the tasks to send or store what they hold.
    pub async fn shutdown(&self, limit: Duration) {
        self.senders.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.tracker.close();
        if tokio::time::timeout(limit, self.tracker.wait()).await.is_err() {
            tracing::error!("broker deliveries did not finish within {}", humantime::format_duration(limit));
        }
    }
}

/// A message and, when it comes from a fire of this process, that fire (for the job's status).
struct Item {
    message: Message,
    fire: Option<Fire>,
    on_down: OnBrokerDown,
}

/// The connection a task sends through.
#[derive(Debug)]
enum Transport {
    Redis(Box<Redis>),
    Amqp(Box<Amqp>),
}

impl Transport {
    fn kind(&self) -> Kind {
        match self {
            Transport::Redis(_) => Kind::Redis,
            Transport::Amqp(_) => Kind::Amqp,
        }
    }

    async fn push(&mut self, messages: &[&Message]) -> Result<(), (usize, String)> {
        match self {
            Transport::Redis(r) => r.push(messages).await,
            Transport::Amqp(a) => a.push(messages).await,
        }
    }
}

struct Task {
    name: String,
    transport: Transport,
    outbox: Outbox,
    shared: Shared,
    /// Messages of this broker in the outbox.
    waiting: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Since when the broker has been failing, for the log.
    down: Option<DateTime<Utc>>,
}

impl Task {
    fn new(name: String, transport: Transport, outbox: Outbox, shared: Shared) -> Task {
        let waiting = outbox.len(Some(&name)).unwrap_or_else(|e| {
            tracing::error!("broker \"{name}\": cannot read the outbox: {e}");
            0
        });
        if waiting > 0 {
            tracing::info!("broker \"{name}\": {waiting} message(s) waiting in the outbox since before this start");
        }
        shared.waiting.inc_by(waiting as i64);
        let retry_at = (waiting > 0).then(Instant::now);
        Task { name, transport, outbox, shared, waiting, retry_at, backoff: BACKOFF_MIN, down: None }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Fire>) {
        loop {
            let fires = tokio::select! {
                biased;
                fire = rx.recv() => match fire {
                    Some(f) => {
                        let mut burst = vec![f];
                        while burst.len() < MAX_BURST {
                            match rx.try_recv() {
                                Ok(f) => burst.push(f),
                                Err(_) => break,
                            }
                        }
                        burst
                    }
                    None => break,
                },
                () = sleep_until(self.retry_at) => Vec::new(),
            };
            let kind = self.transport.kind();
            let items: Vec<Item> = fires.into_iter().filter_map(|f| build(f, kind)).collect();
            if self.waiting == 0 {
                self.send_direct(items).await;
            } else {
                // Behind the outbox: keep slot order.
                let (keep, direct): (Vec<Item>, Vec<Item>) =
                    items.into_iter().partition(|i| i.on_down == OnBrokerDown::Outbox);
                self.store(keep, "waiting behind the outbox");
                if self.retry_at.is_some_and(|t| t <= Instant::now()) {
                    self.drain().await;
                }
                self.send_direct(direct).await;
            }
        }
        // Shutdown: one last attempt for the outbox, then keep it for the next start.
        if self.waiting > 0 {
            self.drain().await;
        }
    }

    async fn send_direct(&mut self, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        let messages: Vec<&Message> = items.iter().map(|i| &i.message).collect();
        match self.transport.push(&messages).await {
            Ok(()) => self.delivered(items),
            Err((sent, e)) => {
                let mut items = items;
                let rest = items.split_off(sent);
                self.delivered(items);
                self.failed(&e);
                let (keep, drop): (Vec<Item>, Vec<Item>) =
                    rest.into_iter().partition(|i| i.on_down == OnBrokerDown::Outbox);
                for i in drop {
                    self.record_failure(
                        &i.message,
                        i.fire.as_ref(),
                        &format!("broker \"{}\" is down ({e}); on_broker_down = \"drop\"", self.name),
                    );
                }
                self.store(keep, &e);
            }
        }
    }

    /// The broker failed: log when an outage starts, and schedule the next retry.
    fn failed(&mut self, error: &str) {
        let now = self.shared.clock.now();
        if self.down.is_none() {
            tracing::error!("broker \"{}\" is unreachable ({error}); messages go to the outbox", self.name);
            self.down = Some(now);
        } else {
            tracing::debug!("broker \"{}\" still unreachable ({error})", self.name);
        }
        // A retry already planned stands: failures of direct sends in between (jobs that drop)
        // must not push the outbox's next attempt further out.
        let now = Instant::now();
        if self.retry_at.is_none_or(|t| t <= now) {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Stores `items` in the outbox; on a full outbox, drops the oldest messages.
    fn store(&mut self, items: Vec<Item>, why: &str) {
        if items.is_empty() {
            return;
        }
        let messages: Vec<Message> = items.iter().map(|i| i.message.clone()).collect();
        if let Err(e) = self.outbox.push(&self.name, &messages) {
            // Nowhere left to keep them: say so loudly, once per message.
            for i in &items {
                self.record_failure(
                    &i.message,
                    i.fire.as_ref(),
                    &format!("cannot store in the outbox ({e}) after: {why}"),
                );
            }
            return;
        }
        tracing::debug!("broker \"{}\": {} message(s) to the outbox ({why})", self.name, messages.len());
        self.waiting += messages.len() as u64;
        self.shared.waiting.inc_by(messages.len() as i64);
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.backoff);
        }
        match self.outbox.trim(self.shared.max_outbox) {
            Ok(dropped) if !dropped.is_empty() => {
                tracing::error!(
                    "the outbox is full ({} messages): dropped the {} oldest",
                    self.shared.max_outbox,
                    dropped.len()
                );
                self.shared.dropped.inc_by(dropped.len() as u64);
                self.shared.waiting.dec_by(dropped.len() as i64);
                for (broker, m) in &dropped {
                    if *broker == self.name {
                        self.waiting = self.waiting.saturating_sub(1);
                    }
                    self.record_failure(m, None, "dropped: the outbox was full (max_outbox)");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!("cannot trim the outbox: {e}"),
        }
    }

    /// Sends the outbox, oldest first, until it is empty or the broker fails.
    async fn drain(&mut self) {
        let mut sent_total = 0;
        loop {
            let rows = match self.outbox.oldest(&self.name, DRAIN_BATCH) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!("broker \"{}\": cannot read the outbox: {e}", self.name);
                    self.failed(&e.to_string());
                    return;
                }
            };
            if rows.is_empty() {
                // Another task may have trimmed ours: what is left is the truth.
                self.shared.waiting.dec_by(self.waiting as i64);
                self.waiting = 0;
                self.retry_at = None;
                self.backoff = BACKOFF_MIN;
                if let Some(since) = self.down.take() {
                    tracing::info!(
                        "broker \"{}\" is back (down since {since}); delivered {sent_total} message(s) from the outbox",
                        self.name
                    );
                }
                return;
            }
            let now = self.shared.clock.now();
            let (stale, fresh): (Vec<_>, Vec<_>) =
                rows.into_iter().partition(|(_, m)| m.expires_at.is_some_and(|e| e < now));
            let messages: Vec<&Message> = fresh.iter().map(|(_, m)| m).collect();
            let (sent, error) = match self.transport.push(&messages).await {
                Ok(()) => (fresh.len(), None),
                Err((sent, e)) => (sent, Some(e)),
            };
            let done: Vec<i64> = stale.iter().chain(&fresh[..sent]).map(|(id, _)| *id).collect();
            if let Err(e) = self.outbox.remove(&done) {
                tracing::error!("broker \"{}\": cannot remove sent messages from the outbox: {e}", self.name);
                self.failed(&e.to_string());
                return;
            }
            self.waiting = self.waiting.saturating_sub(done.len() as u64);
            self.shared.waiting.dec_by(done.len() as i64);
            for (_, m) in &stale {
                self.record_failure(m, None, "expired while waiting in the outbox");
            }
            let delivered: Vec<RunRecord> =
                fresh[..sent].iter().map(|(_, m)| self.record(m, RunOutcome::Success, None)).collect();
            sent_total += delivered.len();
            if !delivered.is_empty() {
                self.shared
                    .history
                    .send(Entry::Batch(delivered.into_iter().map(|r| Entry::Run(Box::new(r))).collect()));
            }
            if let Some(e) = error {
                self.failed(&e);
                return;
            }
        }
    }

    fn delivered(&self, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        let now = self.shared.clock.now();
        let mut batch = Vec::with_capacity(items.len());
        for i in items {
            match i.fire {
                Some(f) => {
                    f.status.finished(f.scheduled_at, Some(f.fired_at), now, RunOutcome::Success, None);
                    if f.manual.is_some() {
                        batch.push(Entry::Run(Box::new(self.record(&i.message, RunOutcome::Success, None))));
                    } else {
                        batch.push(Entry::Instant { job: f.job, slot: f.scheduled_at, at: now });
                    }
                }
                None => batch.push(Entry::Run(Box::new(self.record(&i.message, RunOutcome::Success, None)))),
            }
        }
        self.shared.history.send(Entry::Batch(batch));
    }

    fn record(&self, m: &Message, outcome: RunOutcome, error: Option<String>) -> RunRecord {
        let now = self.shared.clock.now();
        RunRecord {
            job: m.job.clone(),
            fire_id: m.fire_id.clone(),
            scheduled_at: m.slot,
            started_at: (outcome == RunOutcome::Success).then_some(now),
            finished_at: now,
            outcome,
            attempt: 1,
            exit_code: None,
            error,
            details: Default::default(),
        }
    }

    fn record_failure(&self, m: &Message, fire: Option<&Fire>, why: &str) {
        tracing::error!(job = %m.job, slot = %m.slot, fire_id = %m.fire_id, "message not delivered: {why}");
        if let Some(f) = fire {
            f.status.finished(f.scheduled_at, None, self.shared.clock.now(), RunOutcome::Failure, None);
        }
        self.shared.history.record(self.record(m, RunOutcome::Failure, Some(why.to_string())));
    }
}

/// The message of a queue job's fire, for a broker of `kind`.
fn build(fire: Fire, kind: Kind) -> Option<Item> {
    let id = fire.id().to_string();
    let (message, on_down) = match &fire.job.action {
        Action::Celery(c) => (c.message(&fire.job.name, id, fire.scheduled_at, kind), c.on_broker_down),
        Action::Push(p) => (p.message(&fire.job.name, id, fire.scheduled_at, fire.fired_at), p.on_broker_down),
        _ => return None,
    };
    Some(Item { message, fire: Some(fire), on_down })
}

/// The message a queue job would send for `slot` to its broker of `kind`, for fires a crash
/// left unsent.
pub fn message_for(job: &crate::config::Job, slot: DateTime<Utc>, kind: Kind) -> Option<(String, Message)> {
    let id = crate::fire::fire_id(&job.name, slot).to_string();
    match &job.action {
        Action::Celery(c) => Some((c.broker.clone(), c.message(&job.name, id, slot, kind))),
        Action::Push(p) => Some((p.broker.clone(), p.message(&job.name, id, slot, slot))),
        _ => None,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
