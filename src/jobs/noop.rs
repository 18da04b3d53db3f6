//! `noop`: does nothing. For trying a schedule, and for benchmarking the loop itself.

use super::RunResult;

#[derive(Debug, Clone, Copy)]
pub struct Noop;

impl Noop {
    pub fn run(&self) -> RunResult {
        RunResult::ok()
    }
}
