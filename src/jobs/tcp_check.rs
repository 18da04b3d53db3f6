//! `tcp_check`: does a TCP port accept connections within `timeout`?

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::{RunContext, RunResult};
use crate::job::Details;

#[derive(Debug, Clone)]
pub struct TcpCheck {
    /// `host:port`, resolved at each run.
    pub address: String,
    pub timeout: Duration,
}

impl TcpCheck {
    pub async fn run(&self, cx: &RunContext) -> RunResult {
        let started = Instant::now();
        let outcome = tokio::select! {
            r = tokio::time::timeout(self.timeout, TcpStream::connect(self.address.as_str())) => match r {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no connection within {}", humantime::format_duration(self.timeout))),
            },
            () = cx.stop.cancelled() => Err("stopped".to_string()),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let up = outcome.is_ok();
        let result = match outcome {
            Ok(()) => RunResult::ok(),
            Err(e) => RunResult::failed(format!("tcp {}: {e}", self.address)),
        };
        result.with_details(Details { up: Some(up), latency_ms: Some(latency_ms), ..Details::default() })
    }
}
