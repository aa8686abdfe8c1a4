//! Time for applications: a monotonic [`Instant`] from the TSC (calibrated
//! once at boot, the same on every cpu) and the time since boot
//! ([`uptime`]). A service uses it to measure (latencies, rates), to set
//! deadlines, and to report its uptime. There is no wall clock.
//!
//! Durations are `core::time::Duration`; to wait, use
//! [`thread::sleep`](crate::thread::sleep) or a socket's timeout.

use core::ops::{Add, Sub};
use core::time::Duration;

use crate::arch::tsc;

/// A point on the monotonic clock, comparable across cpus.
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() {
/// use core::time::Duration;
/// use bravo::time::Instant;
///
/// let start = Instant::now();
/// bravo::thread::sleep(Duration::from_millis(10));
/// assert!(start.elapsed() >= Duration::from_millis(10));
///
/// // A deadline.
/// let deadline = Instant::now() + Duration::from_secs(1);
/// while Instant::now() < deadline {
///     bravo::thread::yield_now();
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(u64);

impl Instant {
    /// The current time.
    pub fn now() -> Self {
        Self(tsc::now())
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub fn duration_since(&self, earlier: Instant) -> Duration {
        ticks_to_duration(self.0.saturating_sub(earlier.0))
    }

    /// Time since `self` (zero if `self` is later).
    pub fn elapsed(&self) -> Duration {
        Instant::now().duration_since(*self)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_to_ticks(d)))
    }
}

impl Sub for Instant {
    type Output = Duration;

    fn sub(self, earlier: Instant) -> Duration {
        self.duration_since(earlier)
    }
}

/// TSC ticks in `duration` (saturating).
pub(crate) fn duration_to_ticks(duration: Duration) -> u64 {
    (duration.as_nanos().saturating_mul(tsc::hz() as u128) / 1_000_000_000).min(u64::MAX as u128) as u64
}

/// The duration of `ticks` TSC ticks.
pub(crate) fn ticks_to_duration(ticks: u64) -> Duration {
    let hz = tsc::hz().max(1) as u128;
    Duration::from_nanos((ticks as u128 * 1_000_000_000 / hz).min(u64::MAX as u128) as u64)
}

/// Time since the clock was calibrated at boot.
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() {
/// bravo::println!("up for {} ms", bravo::time::uptime().as_millis());
/// # }
/// ```
pub fn uptime() -> Duration {
    Duration::from_nanos(tsc::nanos_since_boot())
}

/// Lets something happen at most once per period (a warning that would
/// otherwise repeat for every packet of a flood). Usable from any cpu.
pub(crate) struct RateLimit {
    /// The earliest TSC tick of the next occurrence.
    next: core::sync::atomic::AtomicU64,
}

impl RateLimit {
    pub const fn new() -> Self {
        RateLimit { next: core::sync::atomic::AtomicU64::new(0) }
    }

    /// Whether the thing may happen now; if so, the next one waits
    /// `period`.
    pub fn allow(&self, period: Duration) -> bool {
        use core::sync::atomic::Ordering;
        let now = tsc::now();
        let next = self.next.load(Ordering::Relaxed);
        now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now.saturating_add(duration_to_ticks(period)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}
