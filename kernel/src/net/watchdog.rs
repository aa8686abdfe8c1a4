//! A guard for the network stack as a whole: a thread, on another cpu
//! than the network cpu where there is one, that looks every
//! [`PERIOD`] at whether the network thread has work waiting (a request
//! or a NIC interrupt) yet has completed no round for [`STUCK_AFTER`],
//! and then warns (at most every [`WARN_EVERY`]). A wedged stack is thus
//! loud in the log instead of silently refusing service.

use core::time::Duration;

use super::{counters, stack};
use crate::time::RateLimit;

const PERIOD: Duration = Duration::from_millis(250);
const STUCK_AFTER: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Starts the watchdog for a network thread on `net_cpu`.
pub fn start(net_cpu: usize) {
    let cpus = crate::sched::cpu_count();
    let cpu = if cpus > 1 { (net_cpu + 1) % cpus } else { net_cpu };
    if let Err(e) = crate::sched::spawn_on(cpu, watch) {
        log::warn!("net: no watchdog for the network thread: {e}");
    }
}

fn watch() {
    static WARNING: RateLimit = RateLimit::new();
    loop {
        crate::sched::sleep(PERIOD);
        let since_last_round = crate::time::uptime().saturating_sub(Duration::from_millis(counters::read().last_round_ms));
        if stack::work_waiting() && since_last_round >= STUCK_AFTER && WARNING.allow(WARN_EVERY) {
            log::warn!(
                "net: the network cpu has work waiting but has completed no round for {} ms ({} rounds so far)",
                since_last_round.as_millis(),
                counters::read().rounds
            );
        }
    }
}
