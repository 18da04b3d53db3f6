//! `http_check`: is an HTTP service answering as expected?
//!
//! Up when the request completes within `timeout` with an expected status (default any 2xx or
//! 3xx) and, if `expect_body` is set, a body containing it. The run records up or down and the
//! latency; the runner logs and notifies transitions, not every run. TLS is verified with the
//! platform's roots and there is no option to turn that off.

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;

use super::{RunContext, RunResult};
use crate::job::Details;

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
    /// A CA and client certificate: the check then has a client of its own, made at each run
    /// (so renewed files are read), instead of the shared one.
    pub tls: crate::tls::TlsFiles,
}

impl HttpCheck {
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
            let http = match self.tls.is_empty() {
                true => cx.services.http.clone(),
                false => self.tls.read().and_then(|pem| pem.http_client()).map_err(|e| (None, e))?,
            };
            let resp = http
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
    while let Some(chunk) =
        resp.chunk().await.map_err(|e| format!("reading the body: {}", crate::http::error_chain(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
