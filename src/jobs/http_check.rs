//! `http_check`: is an HTTP service answering as expected?
//!
//! Up when the request completes within `timeout` with an expected status (default any 2xx or
//! 3xx) and, if `expect_body` is set, a body containing it. The run records up or down and the
//! latency; the runner logs and notifies transitions, not every run. TLS is verified with the
//! platform's roots and there is no option to turn that off.

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use toml::de::DeValue;

use super::{RunContext, RunResult};
use crate::config::diag::Diags;
use crate::config::table::{Table, type_name};
use crate::job::Details;

pub const KEYS: &[&str] = &["url", "method", "expect_status", "expect_body", "headers"];

/// The timeout of checks whose job sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies are read up to this size to look for `expect_body`.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct HttpCheck {
    pub url: reqwest::Url,
    pub method: Method,
    /// Inclusive ranges; empty means 200-399.
    pub expect_status: Vec<(u16, u16)>,
    pub expect_body: Option<String>,
    pub headers: HeaderMap,
    pub timeout: Duration,
}

impl HttpCheck {
    pub fn parse(t: &mut Table<'_, '_>, d: &mut Diags) -> Option<Self> {
        let url = t.http_url(d, "url");
        let method = match t.str(d, "method") {
            Some(m) => match Method::from_bytes(m.value.to_ascii_uppercase().as_bytes()) {
                Ok(method) => method,
                Err(_) => {
                    t.error(d, m.span.clone(), format!("invalid HTTP method \"{}\"", m.value));
                    Method::GET
                }
            },
            None => Method::GET,
        };
        let expect_status = parse_statuses(t, d);
        let expect_body = t.str(d, "expect_body").map(|b| b.value.to_string());
        let mut headers = HeaderMap::new();
        if let Some((table, _)) = t.table(d, "headers") {
            for (k, v) in table {
                let name = HeaderName::from_bytes(k.get_ref().as_bytes());
                let value = match v.get_ref() {
                    DeValue::String(s) => {
                        HeaderValue::from_str(s).map_err(|_| "is not a valid header value".to_string())
                    }
                    other => Err(format!("must be a string, not {}", type_name(other))),
                };
                match (name, value) {
                    (Ok(name), Ok(value)) => {
                        headers.insert(name, value);
                    }
                    (Err(_), _) => t.error(d, k.span(), format!("invalid header name \"{}\"", k.get_ref())),
                    (_, Err(e)) => t.error(d, v.span(), format!("header \"{}\" {e}", k.get_ref())),
                }
            }
        }
        Some(HttpCheck { url: url?, method, expect_status, expect_body, headers, timeout: DEFAULT_TIMEOUT })
    }

    fn status_ok(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            (200..400).contains(&status)
        } else {
            self.expect_status.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
        }
    }

    pub async fn run(&self, cx: &RunContext) -> RunResult {
        let started = Instant::now();
        let probe = async {
            let resp = cx
                .services
                .http
                .request(self.method.clone(), self.url.clone())
                .headers(self.headers.clone())
                .timeout(self.timeout)
                .send()
                .await
                .map_err(|e| (None, crate::http::error_chain(&e)))?;
            let status = resp.status().as_u16();
            if !self.status_ok(status) {
                return Err((Some(status), format!("unexpected status {}", resp.status())));
            }
            if let Some(want) = &self.expect_body {
                let body = read_body(resp).await.map_err(|e| (Some(status), e))?;
                if !body.contains(want.as_str()) {
                    return Err((Some(status), format!("body does not contain \"{want}\"")));
                }
            }
            Ok(status)
        };
        let outcome = tokio::select! {
            r = probe => r,
            () = cx.stop.cancelled() => Err((None, "stopped".to_string())),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (up, status, result) = match outcome {
            Ok(status) => (true, Some(status), RunResult::ok()),
            Err((status, reason)) => {
                (false, status, RunResult::failed(format!("{} {}: {reason}", self.method, self.url)))
            }
        };
        result.with_details(Details { up: Some(up), latency_ms: Some(latency_ms), status, ..Details::default() })
    }
}

async fn read_body(mut resp: reqwest::Response) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the body: {}", crate::http::error_chain(&e)))? {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn parse_statuses(t: &mut Table<'_, '_>, d: &mut Diags) -> Vec<(u16, u16)> {
    let Some(v) = t.get("expect_status") else { return Vec::new() };
    let items: Vec<&toml::Spanned<DeValue<'_>>> = match v.get_ref() {
        DeValue::Array(items) => items.iter().collect(),
        _ => vec![v],
    };
    let mut out = Vec::new();
    for item in items {
        let parsed = match item.get_ref() {
            DeValue::Integer(i) => i.as_str().parse::<u16>().ok().map(|s| (s, s)),
            DeValue::String(s) => match s.split_once('-') {
                Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
                None => s.trim().parse().ok().map(|s| (s, s)),
            },
            _ => None,
        };
        match parsed {
            Some((lo, hi)) if (100..=599).contains(&lo) && (lo..=599).contains(&hi) => out.push((lo, hi)),
            _ => t.error(
                d,
                item.span(),
                "\"expect_status\" takes statuses (200) or ranges (\"200-299\") from 100 to 599",
            ),
        }
    }
    out
}
