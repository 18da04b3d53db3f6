//! The one seam through which wall-clock time enters the daemon.
//!
//! Fire times are wall-clock instants, but tokio's timers run on the monotonic clock, which
//! neither follows NTP steps nor (on Linux) counts time spent suspended. So the system clock
//! sleeps on a `timerfd` armed on `CLOCK_REALTIME` with an absolute deadline and
//! `TFD_TIMER_CANCEL_ON_SET`: it wakes exactly when the wall clock reaches the deadline, and
//! at once when the wall clock is stepped, so the loop notices a step without polling.
//!
//! Tests use [`Clock::manual`]: wall time derived from tokio's (pausable) clock plus a
//! steppable offset, so a paused-time test runs a simulated week in milliseconds and can
//! step the wall clock like NTP would.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub enum Clock {
    System,
    Manual(Arc<ManualClock>),
}

#[derive(Debug)]
pub struct ManualClock {
    origin_wall: DateTime<Utc>,
    origin: tokio::time::Instant,
    /// Total of all steps, in nanoseconds; a watch so sleepers wake when it changes.
    step: watch::Sender<i64>,
}

impl Clock {
    /// A clock that reads `start` now and then advances with tokio's clock (pause it in tests).
    pub fn manual(start: DateTime<Utc>) -> Clock {
        Clock::Manual(Arc::new(ManualClock {
            origin_wall: start,
            origin: tokio::time::Instant::now(),
            step: watch::Sender::new(0),
        }))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(m) => m.now(),
        }
    }

    /// Steps a manual clock's wall time, as an NTP correction would. No-op on the system clock.
    pub fn step(&self, by: Duration) {
        if let Clock::Manual(m) = self {
            m.step.send_modify(|s| *s += by.num_nanoseconds().unwrap_or(0));
        }
    }

    /// Sleeps until the wall clock reads `deadline`. May return early when the wall clock is
    /// stepped; callers read [`Clock::now`] again and decide.
    pub async fn sleep_until(&self, deadline: DateTime<Utc>) {
        match self {
            Clock::System => system_sleep_until(deadline).await,
            Clock::Manual(m) => m.sleep_until(deadline).await,
        }
    }

    /// The monotonic instant that goes with [`Clock::now`], to tell steps from elapsed time.
    pub fn monotonic(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
}

impl ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = Duration::from_std(self.origin.elapsed()).unwrap_or(Duration::MAX);
        self.origin_wall + elapsed + Duration::nanoseconds(*self.step.borrow())
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        let mut steps = self.step.subscribe();
        steps.mark_unchanged();
        let wait = (deadline - self.now()).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = steps.changed() => {}
        }
    }
}

struct RealtimeTimer(TimerFd);

impl AsRawFd for RealtimeTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

async fn system_sleep_until(deadline: DateTime<Utc>) {
    match arm_realtime_timer(deadline) {
        Ok(timer) => loop {
            let Ok(mut ready) = timer.readable().await else { break };
            // Expired (Ok), or ECANCELED because the clock was stepped: either way, return.
            match nix::unistd::read(timer.get_ref().0.as_fd(), &mut [0u8; 8]) {
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                _ => break,
            }
        },
        Err(e) => {
            // No timerfd (not Linux, or a sandbox that forbids it): monotonic sleep. Steps are
            // then noticed at the next wake-up.
            tracing::debug!("timerfd unavailable ({e}); using a monotonic sleep");
            let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
        }
    }
}

#[allow(unsafe_code)]
fn arm_realtime_timer(deadline: DateTime<Utc>) -> std::io::Result<AsyncFd<RealtimeTimer>> {
    let fd = TimerFd::new(ClockId::CLOCK_REALTIME, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
    // A deadline of 0 would disarm the timer; anything in the past fires at once.
    let secs = deadline.timestamp().max(1);
    let spec = TimeSpec::new(secs, i64::from(deadline.timestamp_subsec_nanos()));
    fd.set(
        Expiration::OneShot(spec),
        TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
    )?;
    // SAFETY: the descriptor is owned by the `RealtimeTimer` moved into the `AsyncFd`, which
    // deregisters it before dropping (and so closing) it; nothing else can close it meanwhile.
    unsafe { AsyncFd::register(RealtimeTimer(fd)) }.map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn manual_clock_follows_paused_time_and_steps() {
        let start = DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        let clock = Clock::manual(start);
        tokio::time::advance(std::time::Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + Duration::seconds(90));
        clock.step(Duration::hours(1));
        assert_eq!(clock.now(), start + Duration::seconds(3690));
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_wakes_a_sleeper() {
        let start = DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        let clock = Clock::manual(start);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(start + Duration::days(1)).await })
        };
        tokio::task::yield_now().await;
        clock.step(Duration::hours(2));
        sleeper.await.expect("sleeper ends");
        // It woke at the step, long before the deadline.
        assert_eq!(clock.now(), start + Duration::hours(2));
    }

    #[tokio::test]
    async fn system_clock_sleeps_until_a_wall_clock_deadline() {
        let before = Utc::now();
        Clock::System.sleep_until(before + Duration::milliseconds(30)).await;
        assert!(Utc::now() >= before + Duration::milliseconds(30));
    }
}
