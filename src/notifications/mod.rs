//! Notifications: webhooks and e-mail told about failures, recoveries and reports. (The module
//! is not called `notify`: that is the file-watching crate the reload uses.)
//!
//! `[notifiers.NAME]` names a webhook or a mailbox ([`email`]); a job points at it with
//! `notify = "NAME"`. Delivery runs in its own task with retries and backoff, so a slow or
//! failing receiver never holds up the loop or the job; a message that still cannot be
//! delivered is logged as an error.

pub mod email;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::task::TaskTracker;

pub const EVENTS: &[&str] = &["failure", "recovery"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The [`Notification`] as JSON.
    Json,
    /// `{"text": "..."}`, what Slack incoming webhooks (and many chat tools) accept.
    Slack,
}

#[derive(Debug, Clone)]
pub struct Notifier {
    pub name: String,
    pub target: Target,
}

/// Where a notifier's messages go.
#[derive(Debug, Clone)]
pub enum Target {
    Webhook {
        url: reqwest::Url,
        format: Format,
        /// A CA and client certificate for an `https://` URL.
        tls: crate::tls::TlsFiles,
    },
    Email(Box<email::Email>),
}

/// What a webhook receives (as JSON; Slack gets `text` alone).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// `failure`, `recovery` or `report`.
    pub event: &'static str,
    pub job: String,
    pub fire_id: String,
    pub scheduled_at: DateTime<Utc>,
    /// One line for people.
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A report's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// The run's last lines of output (a `command`'s), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
    /// The job is a check: its failure is "down", its recovery "up again".
    #[serde(skip)]
    pub check: bool,
    /// The job's zone, to show the slot as the job's schedule reads.
    #[serde(skip)]
    pub timezone: Option<chrono_tz::Tz>,
    /// A report's Markdown, for mail (webhooks get the figures).
    #[serde(skip)]
    pub attachment: Option<ReportFile>,
}

/// A report's Markdown file.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFile {
    pub name: String,
    pub text: String,
}

/// The most lines of output a notification carries, and the most characters of each.
pub const OUTPUT_LINES: usize = 20;
pub const OUTPUT_LINE_CHARS: usize = 500;

/// Sends messages to notifiers, in the background.
#[derive(Debug, Clone)]
pub struct Notifications {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Replaced whole by a reload.
    notifiers: std::sync::RwLock<Arc<HashMap<String, Notifier>>>,
    http: reqwest::Client,
    tracker: TaskTracker,
    /// Waits between attempts; one attempt more than there are waits.
    backoff: Vec<Duration>,
}

impl Notifications {
    pub fn new(notifiers: HashMap<String, Notifier>, http: reqwest::Client) -> Self {
        let backoff = (0..5).map(|i| Duration::from_secs(1 << i)).collect();
        Notifications {
            inner: Arc::new(Inner {
                notifiers: std::sync::RwLock::new(Arc::new(notifiers)),
                http,
                tracker: TaskTracker::new(),
                backoff,
            }),
        }
    }

    /// Waits up to `limit` for deliveries in progress; what is left is logged as lost.
    pub async fn shutdown(&self, limit: Duration) {
        let tracker = &self.inner.tracker;
        tracker.close();
        if tokio::time::timeout(limit, tracker.wait()).await.is_err() {
            tracing::error!("{} notification(s) not delivered before shutdown", tracker.len());
        }
    }

    /// Delivery waits `delays` between attempts instead of the default 1, 2, 4, 8, 16 s.
    pub fn with_backoff(self, delays: Vec<Duration>) -> Self {
        let inner = &self.inner;
        Notifications {
            inner: Arc::new(Inner {
                notifiers: std::sync::RwLock::new(inner.notifiers()),
                http: inner.http.clone(),
                tracker: inner.tracker.clone(),
                backoff: delays,
            }),
        }
    }

    /// Replaces the notifiers (a reload); deliveries in progress finish with the old ones.
    pub fn set_notifiers(&self, notifiers: HashMap<String, Notifier>) {
        *self.inner.notifiers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(notifiers);
    }

    /// Queues `message` for the notifier `name`.
    pub fn send(&self, name: &str, message: Notification) {
        let Some(notifier) = self.inner.notifiers().get(name).cloned() else {
            tracing::error!(job = %message.job, "no notifier \"{name}\"; message dropped: {}", message.text);
            return;
        };
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move { deliver(&inner, &notifier, &message).await });
    }
}

impl Inner {
    fn notifiers(&self) -> Arc<HashMap<String, Notifier>> {
        self.notifiers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One attempt to hand `message` to a webhook: `Err` says why it did not arrive.
async fn post(
    inner: &Inner,
    url: &reqwest::Url,
    format: Format,
    tls: &crate::tls::TlsFiles,
    message: &Notification,
) -> Result<(), String> {
    let body = match format {
        Format::Json => serde_json::to_value(message).unwrap_or_default(),
        Format::Slack => serde_json::json!({ "text": message.text }),
    };
    let http = match tls.is_empty() {
        true => inner.http.clone(),
        false => tls.read().and_then(|pem| pem.http_client())?,
    };
    let resp = http
        .post(url.clone())
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await
        .map_err(|e| crate::http::error_chain(&e))?;
    match resp.status().is_success() {
        true => Ok(()),
        false => Err(format!("answered {}", resp.status())),
    }
}

async fn deliver(inner: &Inner, notifier: &Notifier, message: &Notification) {
    let attempts = inner.backoff.len() + 1;
    for attempt in 1..=attempts {
        let sent = match &notifier.target {
            Target::Webhook { url, format, tls } => post(inner, url, *format, tls, message).await,
            Target::Email(mail) => email::send(mail, message).await,
        };
        let problem = match sent {
            Ok(()) => {
                tracing::debug!(job = %message.job, notifier = %notifier.name, "notified ({})", message.event);
                return;
            }
            Err(e) => e,
        };
        match inner.backoff.get(attempt - 1) {
            Some(wait) => {
                tracing::warn!(
                    job = %message.job, notifier = %notifier.name,
                    "notification attempt {attempt}/{attempts} failed ({problem}); retrying in {}",
                    humantime::format_duration(*wait)
                );
                tokio::time::sleep(*wait).await;
            }
            None => tracing::error!(
                job = %message.job, notifier = %notifier.name,
                "notification not delivered after {attempts} attempts ({problem}): {}", message.text
            ),
        }
    }
}
