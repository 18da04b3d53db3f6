//! Delivery: one task per broker takes fires from the runner, builds their messages, and sends
//! each burst in one round trip; what cannot be sent goes to the outbox and is retried.
//!
//! The transport answers for every message on its own ([`Sent`]), and each is handled on its
//! own: a message is recorded as delivered only when the broker has it, and never sent again
//! once it has.
//! - **Unreachable** (no connection, no confirm): the message is stored, the outage is logged
//!   once, and the outbox is retried after 0.5 s, doubling up to 30 s. While the broker is
//!   down, new messages are stored behind the outbox.
//! - **Held by its queue** (RabbitMQ returned it because no queue is bound to its routing key,
//!   or nacked it): only that queue's messages wait. Its oldest message is sent alone as a
//!   probe, with backoff up to 5 s, and the rest follow once the probe is taken; every other
//!   queue keeps its direct delivery. Logged once per queue as "has no binding".
//! - **Refused** (too large for the broker): it fails alone, recorded with why.
//!
//! Order: a queue's messages leave in slot order. While the outbox holds any message for a
//! queue, new ones for that queue are stored behind it. Messages that wait past their
//! `expires` are dropped instead of sent. On shutdown, the outbox is tried once more; what is
//! in it stays for the next start.
//!
//! Every message ends in the run history exactly once: a success when the broker took it, a
//! failure when it was dropped (expired, refused, `drop`, the outbox bound).

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
use super::{BrokerConfig, BrokerConfigs, Kind, OnBrokerDown, QueueMessage, Sent, StartError};
use crate::clock::Clock;
use crate::fire::Fire;
use crate::job::RunOutcome;
use crate::state::history::{History, Pending, RunRecord};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait between retries while the broker is unreachable.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The longest wait between probes of a queue the broker holds back (a probe is one message).
const HELD_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Messages read from the outbox per retry round.
const DRAIN_BATCH: usize = 10_000;
/// Fires taken from the channel at once: a tick's burst is built and sent this many at a
/// time (a Redis pipeline's worth), so only these messages are held at once. Taking 100 000
/// held a whole burst of 50 000 built messages, 78 MB, for the same throughput; 10 000 held
/// 147 MiB at the peak of 50 000 Celery jobs a second, 2 500 hold 110 MiB, and the burst is
/// in Redis as soon (`cargo bench --bench queue_throughput`).
const MAX_BURST: usize = 2_500;

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
    pub fn start(configs: &BrokerConfigs, state_dir: &Path, shared: Shared) -> Result<Brokers, StartError> {
        let brokers = Brokers { shared: Some(shared.clone()), ..Brokers::default() };
        let mut senders = HashMap::new();
        for (name, config) in configs {
            let broker = name.clone();
            let transport = match config.url.kind {
                Kind::Redis => Transport::Redis(Box::new(
                    Redis::new(&config.url, &config.tls).map_err(|source| StartError::Client { broker, source })?,
                )),
                Kind::Amqp => Transport::Amqp(Box::new(
                    Amqp::new(&config.url, &config.tls).map_err(|source| StartError::Url { broker, source })?,
                )),
            };
            let outbox = Outbox::open(state_dir)?;
            let (tx, rx) = mpsc::unbounded_channel();
            senders.insert(name.clone(), tx);
            let task = Task::new(config.clone(), transport, outbox, shared.clone());
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
                job: fire.job.name.to_string(),
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
    /// Returns whether they did (every message sent, stored in the outbox, or recorded).
    pub async fn shutdown(&self, limit: Duration) -> bool {
        self.senders.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.tracker.close();
        if tokio::time::timeout(limit, self.tracker.wait()).await.is_err() {
            tracing::error!("broker deliveries did not finish within {}", humantime::format_duration(limit));
            return false;
        }
        true
    }
}

/// A message and, when it comes from a fire of this process, that fire (for the job's status).
struct Item {
    message: QueueMessage,
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
    async fn push(&mut self, messages: &[&QueueMessage]) -> Vec<Sent> {
        match self {
            Transport::Redis(r) => r.push(messages).await,
            Transport::Amqp(a) => a.push(messages).await,
        }
    }
}

/// Why a queue's messages are held back while the broker itself is fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    NoBinding,
    Nacked,
}

struct Task {
    name: String,
    config: BrokerConfig,
    transport: Transport,
    outbox: Outbox,
    shared: Shared,
    /// Messages of this broker in the outbox, by key: new messages for such a key wait behind.
    waiting: HashMap<String, u64>,
    /// Keys the broker holds back (RabbitMQ returned or nacked their messages), and since when.
    held: HashMap<String, (Hold, DateTime<Utc>)>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Since when the broker has been unreachable, for the log.
    down: Option<DateTime<Utc>>,
}

/// What one send did, message by message.
#[derive(Default)]
struct Sorted {
    delivered: Vec<usize>,
    /// Index, and the reason it can never be sent.
    refused: Vec<(usize, String)>,
    /// Index, and why it waits.
    waiting: Vec<(usize, String)>,
    /// The first connection-level failure.
    unreachable: Option<String>,
}

impl Task {
    fn new(config: BrokerConfig, transport: Transport, outbox: Outbox, shared: Shared) -> Task {
        let name = config.name.clone();
        let waiting = outbox.counts(&name).unwrap_or_else(|e| {
            tracing::error!("broker \"{name}\": cannot read the outbox: {e}");
            HashMap::new()
        });
        let total: u64 = waiting.values().sum();
        if total > 0 {
            tracing::info!("broker \"{name}\": {total} message(s) waiting in the outbox since before this start");
        }
        shared.waiting.inc_by(total as i64);
        let retry_at = (total > 0).then(Instant::now);
        Task {
            name,
            config,
            transport,
            outbox,
            shared,
            waiting,
            held: HashMap::new(),
            retry_at,
            backoff: BACKOFF_MIN,
            down: None,
        }
    }

    fn total_waiting(&self) -> u64 {
        self.waiting.values().sum()
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
            let items: Vec<Item> = fires.into_iter().filter_map(|f| build(f, &self.config)).collect();
            // Behind the outbox, per queue: keep slot order. While the broker is down, all wait.
            let (behind, direct): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|i| {
                i.on_down == OnBrokerDown::Outbox
                    && (self.down.is_some() || self.waiting.get(&i.message.key).is_some_and(|n| *n > 0))
            });
            self.store(behind, "waiting behind the outbox");
            if self.retry_at.is_some_and(|t| t <= Instant::now()) {
                self.drain().await;
            }
            self.send_direct(direct).await;
        }
        // Shutdown: one last attempt for the outbox, then keep it for the next start.
        if self.total_waiting() > 0 {
            self.drain().await;
        }
    }

    /// Sends `messages` and sorts the outcomes; notes held keys and a broker that answers.
    async fn send(&mut self, messages: &[&QueueMessage]) -> Sorted {
        let outcomes = self.transport.push(messages).await;
        let mut sorted = Sorted::default();
        for (i, (m, outcome)) in messages.iter().zip(outcomes).enumerate() {
            match outcome {
                Sent::Delivered => {
                    sorted.delivered.push(i);
                    self.release(&m.key);
                }
                Sent::Refused(why) => sorted.refused.push((i, why)),
                Sent::NoRoute => {
                    self.hold(&m.key, Hold::NoBinding);
                    sorted.waiting.push((i, format!("queue \"{}\" has no binding", m.key)));
                }
                Sent::Nacked => {
                    self.hold(&m.key, Hold::Nacked);
                    sorted.waiting.push((i, format!("the broker refused a message for queue \"{}\" (nack)", m.key)));
                }
                Sent::Retry(e) => {
                    sorted.unreachable.get_or_insert_with(|| e.clone());
                    sorted.waiting.push((i, format!("broker unreachable ({e})")));
                }
            }
        }
        if !sorted.delivered.is_empty()
            && sorted.unreachable.is_none()
            && let Some(since) = self.down.take()
        {
            tracing::info!("broker \"{}\" is back (down since {since})", self.name);
        }
        sorted
    }

    async fn send_direct(&mut self, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        let messages: Vec<&QueueMessage> = items.iter().map(|i| &i.message).collect();
        let sorted = self.send(&messages).await;
        let mut items: Vec<Option<Item>> = items.into_iter().map(Some).collect();
        let delivered: Vec<Item> = sorted.delivered.iter().filter_map(|&i| items[i].take()).collect();
        self.delivered(delivered);
        for (i, why) in &sorted.refused {
            if let Some(item) = items[*i].take() {
                self.record_failure(&item.message, item.fire.as_ref(), &format!("refused by the broker: {why}"));
            }
        }
        let mut keep = Vec::new();
        for (i, why) in &sorted.waiting {
            let Some(item) = items[*i].take() else { continue };
            if item.on_down == OnBrokerDown::Drop {
                let why = format!("not delivered ({why}); on_broker_down = \"drop\"");
                self.record_failure(&item.message, item.fire.as_ref(), &why);
            } else {
                keep.push(item);
            }
        }
        if let Some(e) = &sorted.unreachable {
            self.failed(e);
        }
        self.store(keep, "not delivered");
    }

    /// The broker is unreachable: log when an outage starts, and schedule the next retry.
    fn failed(&mut self, error: &str) {
        if self.down.is_none() {
            tracing::error!("broker \"{}\" is unreachable ({error}); messages go to the outbox", self.name);
            self.down = Some(self.shared.clock.now());
            self.backoff = BACKOFF_MIN;
        } else {
            tracing::debug!("broker \"{}\" still unreachable ({error})", self.name);
        }
        self.schedule_retry(BACKOFF_MAX);
    }

    /// Plans the next retry, unless one is already planned: failures of direct sends in
    /// between (jobs that drop) must not push the outbox's next attempt further out.
    fn schedule_retry(&mut self, max: Duration) {
        let now = Instant::now();
        if self.retry_at.is_none_or(|t| t <= now) {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(max);
        }
    }

    /// The broker holds `key`'s messages back: log it once.
    fn hold(&mut self, key: &str, why: Hold) {
        if self.held.contains_key(key) {
            return;
        }
        match why {
            Hold::NoBinding => tracing::warn!(
                "broker \"{}\": queue \"{key}\" has no binding (no queue takes routing key \"{key}\"; has a worker declared it?): its messages wait in the outbox",
                self.name
            ),
            Hold::Nacked => tracing::warn!(
                "broker \"{}\": the broker refused a message for queue \"{key}\" (nack): its messages wait in the outbox",
                self.name
            ),
        }
        self.held.insert(key.to_string(), (why, self.shared.clock.now()));
    }

    /// `key` took a message: it is held back no more.
    fn release(&mut self, key: &str) {
        if let Some((_, since)) = self.held.remove(key) {
            tracing::info!("broker \"{}\": queue \"{key}\" takes messages again (held since {since})", self.name);
        }
    }

    /// Stores `items` in the outbox; on a full outbox, drops the oldest messages.
    fn store(&mut self, items: Vec<Item>, why: &str) {
        if items.is_empty() {
            return;
        }
        let messages: Vec<QueueMessage> = items.iter().map(|i| i.message.clone()).collect();
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
        for m in &messages {
            *self.waiting.entry(m.key.clone()).or_default() += 1;
        }
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
                    if *broker == self.name
                        && let Some(n) = self.waiting.get_mut(&m.key)
                    {
                        *n = n.saturating_sub(1);
                    }
                    self.record_failure(m, None, "dropped: the outbox was full (max_outbox)");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!("cannot trim the outbox: {e}"),
        }
    }

    /// The oldest messages to send in one retry round: the oldest of each held key alone (a
    /// probe), and the oldest of every other key.
    fn next_round(&mut self) -> rusqlite::Result<Vec<(i64, QueueMessage)>> {
        let held: Vec<String> = self.held.keys().cloned().collect();
        let mut rows = Vec::new();
        for key in &held {
            let probe = self.outbox.oldest_of_key(&self.name, key, 1)?;
            if probe.is_empty() {
                self.held.remove(key); // nothing left to hold (expired, trimmed)
            }
            rows.extend(probe);
        }
        rows.extend(self.outbox.oldest(&self.name, DRAIN_BATCH, &held)?);
        Ok(rows)
    }

    /// Sends the outbox, oldest first, until it is empty or what is left is held back.
    async fn drain(&mut self) {
        let mut sent_total = 0;
        loop {
            let rows = match self.next_round() {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!("broker \"{}\": cannot read the outbox: {e}", self.name);
                    self.failed(&e.to_string());
                    return;
                }
            };
            if rows.is_empty() {
                self.resync();
                if self.total_waiting() == 0 {
                    self.retry_at = None;
                    self.backoff = BACKOFF_MIN;
                    if sent_total > 0 {
                        tracing::info!("broker \"{}\": delivered {sent_total} message(s) from the outbox", self.name);
                    }
                }
                return;
            }
            let now = self.shared.clock.now();
            let (stale, fresh): (Vec<_>, Vec<_>) =
                rows.into_iter().partition(|(_, m)| m.expires_at.is_some_and(|e| e < now));
            let messages: Vec<&QueueMessage> = fresh.iter().map(|(_, m)| m).collect();
            let sorted = if messages.is_empty() { Sorted::default() } else { self.send(&messages).await };
            let mut done: Vec<i64> = stale.iter().map(|(id, _)| *id).collect();
            done.extend(sorted.delivered.iter().map(|&i| fresh[i].0));
            done.extend(sorted.refused.iter().map(|(i, _)| fresh[*i].0));
            if let Err(e) = self.outbox.remove(&done) {
                tracing::error!("broker \"{}\": cannot remove sent messages from the outbox: {e}", self.name);
                self.failed(&e.to_string());
                return;
            }
            let removed = stale.iter().map(|(_, m)| m).chain(sorted.delivered.iter().map(|&i| &fresh[i].1));
            let removed: Vec<&QueueMessage> = removed.chain(sorted.refused.iter().map(|(i, _)| &fresh[*i].1)).collect();
            for m in &removed {
                if let Some(n) = self.waiting.get_mut(&m.key) {
                    *n = n.saturating_sub(1);
                }
            }
            self.shared.waiting.dec_by(removed.len() as i64);
            for (_, m) in &stale {
                self.record_failure(m, None, "expired while waiting in the outbox");
            }
            for (i, why) in &sorted.refused {
                self.record_failure(&fresh[*i].1, None, &format!("refused by the broker: {why}"));
            }
            let delivered: Vec<Pending> = sorted
                .delivered
                .iter()
                .map(|&i| Pending::Run(Box::new(self.record(&fresh[i].1, RunOutcome::Success, None))))
                .collect();
            sent_total += delivered.len();
            if !delivered.is_empty() {
                self.shared.history.send(Pending::Batch(delivered));
            }
            if let Some(e) = &sorted.unreachable {
                self.failed(e);
                return;
            }
            if done.is_empty() {
                // Only held keys' probes were sent, and they are still held.
                self.schedule_retry(HELD_BACKOFF_MAX);
                return;
            }
        }
    }

    /// The outbox's counts for this broker are the truth (another task may have trimmed ours).
    fn resync(&mut self) {
        match self.outbox.counts(&self.name) {
            Ok(counts) => {
                let (old, new) = (self.total_waiting(), counts.values().sum::<u64>());
                self.shared.waiting.inc_by(new as i64 - old as i64);
                self.waiting = counts;
            }
            Err(e) => tracing::error!("broker \"{}\": cannot count the outbox: {e}", self.name),
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
                        batch.push(Pending::Run(Box::new(self.record(&i.message, RunOutcome::Success, None))));
                    } else {
                        batch.push(Pending::Instant { job: f.job.name.clone(), slot: f.scheduled_at, at: now });
                    }
                }
                None => batch.push(Pending::Run(Box::new(self.record(&i.message, RunOutcome::Success, None)))),
            }
        }
        self.shared.history.send(Pending::Batch(batch));
    }

    fn record(&self, m: &QueueMessage, outcome: RunOutcome, error: Option<String>) -> RunRecord {
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

    fn record_failure(&self, m: &QueueMessage, fire: Option<&Fire>, why: &str) {
        tracing::error!(job = %m.job, slot = %m.slot, fire_id = %m.fire_id, "message not delivered: {why}");
        if let Some(f) = fire {
            f.status.finished(f.scheduled_at, None, self.shared.clock.now(), RunOutcome::Failure, None);
        }
        self.shared.history.record(self.record(m, RunOutcome::Failure, Some(why.to_string())));
    }
}

/// The message of a queue job's fire, for `broker`.
fn build(fire: Fire, broker: &BrokerConfig) -> Option<Item> {
    let id = fire.id().to_string();
    let (message, on_down) =
        fire.job.action.queue_message(&fire.job.name, id, fire.scheduled_at, fire.fired_at, broker)?;
    Some(Item { message, fire: Some(fire), on_down })
}

/// The message a queue job would send for `slot` to `broker`, for fires a crash left unsent.
pub fn message_for(
    job: &crate::job::Job,
    slot: DateTime<Utc>,
    broker: &BrokerConfig,
) -> Option<(String, QueueMessage)> {
    let id = crate::job::fire_id(&job.name, slot).to_string();
    let (message, _) = job.action.queue_message(&job.name, id, slot, slot, broker)?;
    Some((broker.name.clone(), message))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
