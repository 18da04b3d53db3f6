//! `sql`: statements on a `[databases.NAME]`, in one transaction by default, with rows
//! affected and duration recorded per statement; `sql_check`: one value compared with
//! `expect`, a check like `tcp_check` (up or down, transitions notified, `beatd_check_up`).
//!
//! Statements are text from the root-owned config; nothing is templated into them. They run
//! with the rights of the database user in the URL: give checks a read-only user.

use std::time::Duration;

use super::{RunContext, RunResult};
use crate::job::Details;

#[derive(Debug, Clone)]
pub struct Sql {
    pub database: String,
    pub statements: Vec<String>,
    pub transaction: bool,
    /// Per statement; past it the statement is cancelled on the server.
    pub statement_timeout: Option<Duration>,
}

impl Sql {
    pub async fn run(&self, cx: &RunContext) -> RunResult {
        let databases = &cx.services.databases;
        match databases
            .execute(&self.database, &self.statements, self.transaction, self.statement_timeout, &cx.stop)
            .await
        {
            Ok(done) => RunResult::ok().with_details(Details { statements: Some(done), ..Details::default() }),
            Err(failure) => RunResult::failed(format!("database {}: {}", self.database, failure.message))
                .with_details(Details { statements: Some(failure.done), ..Details::default() }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqlCheck {
    pub database: String,
    pub query: String,
    pub expect: Expect,
    /// The job's timeout (default 10 s): past it the check is down.
    pub timeout: Duration,
}

impl SqlCheck {
    pub async fn run(&self, cx: &RunContext) -> RunResult {
        let started = std::time::Instant::now();
        let value = cx.services.databases.value(&self.database, &self.query, self.timeout, &cx.stop).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (result, value) = match value {
            Ok(v) if self.expect.holds(&v) => (RunResult::ok(), Some(v)),
            Ok(v) => (RunResult::failed(format!("database {}: {v} is not {}", self.database, self.expect)), Some(v)),
            Err(e) => (RunResult::failed(format!("database {}: {e}", self.database)), None),
        };
        let up = result.result.is_ok();
        result.with_details(Details { up: Some(up), latency_ms: Some(latency_ms), value, ..Details::default() })
    }
}

/// `< 1000`, `>= 1`, `== ok`, `!= 0`: a comparison with the single value a check's query
/// returns. Numbers compare as numbers; `==` and `!=` compare text otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub op: Op,
    pub operand: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Expect {
    pub fn parse(text: &str) -> Result<Expect, String> {
        let text = text.trim();
        let (op, rest) = [("<=", Op::Le), (">=", Op::Ge), ("==", Op::Eq), ("!=", Op::Ne), ("<", Op::Lt), (">", Op::Gt)]
            .iter()
            .find_map(|(s, op)| text.strip_prefix(s).map(|rest| (*op, rest.trim())))
            .ok_or_else(|| format!("\"{text}\" must start with <, <=, >, >=, == or !=, such as \"< 1000\""))?;
        if rest.is_empty() {
            return Err(format!("\"{text}\" compares with nothing"));
        }
        if !matches!(op, Op::Eq | Op::Ne) && rest.parse::<f64>().is_err() {
            return Err(format!("\"{text}\": {rest} is not a number"));
        }
        Ok(Expect { op, operand: rest.to_string() })
    }

    pub fn holds(&self, value: &str) -> bool {
        match (value.trim().parse::<f64>(), self.operand.parse::<f64>()) {
            (Ok(v), Ok(x)) => match self.op {
                Op::Lt => v < x,
                Op::Le => v <= x,
                Op::Gt => v > x,
                Op::Ge => v >= x,
                Op::Eq => v == x,
                Op::Ne => v != x,
            },
            _ => match self.op {
                Op::Eq => value.trim() == self.operand,
                Op::Ne => value.trim() != self.operand,
                _ => false,
            },
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        };
        write!(f, "{op} {}", self.operand)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations() {
        let e = Expect::parse("< 1000").expect("valid");
        assert!(e.holds("999") && !e.holds("1000") && !e.holds("lots"));
        assert!(Expect::parse(">= 1").expect("valid").holds("1.0"));
        assert!(Expect::parse("== ok").expect("valid").holds("ok"));
        assert!(Expect::parse("!= 0").expect("valid").holds("3"));
        assert!(Expect::parse("== 0").expect("valid").holds("0.0"));
        assert!(Expect::parse("about 3").is_err_and(|e| e.contains("must start with")));
        assert!(Expect::parse("< many").is_err_and(|e| e.contains("not a number")));
        assert!(Expect::parse("<=").is_err());
        assert_eq!(Expect::parse(">=5").expect("valid").to_string(), ">= 5");
    }
}
