//! A guard for the network stacks as a whole: a thread that looks every
//! [`PERIOD`] at whether a stack's thread has work waiting (a request or
//! a NIC interrupt) yet has completed no round for [`STUCK_AFTER`], and
//! then warns (at most every [`WARN_EVERY`]). A wedged stack is thus loud
//! in the log instead of silently refusing service.

use core::time::Duration;

use super::{counters, netcpus};
use crate::time::RateLimit;

const PERIOD: Duration = Duration::from_millis(250);
const STUCK_AFTER: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Starts the watchdog on a cpu that runs no stack, where there is one
/// (else the cpu after the home stack's).
pub fn start() {
    let cpus = crate::sched::cpu_count();
    let home = netcpus::control(netcpus::HOME).cpu();
    let free = (0..cpus).find(|&cpu| netcpus::all().all(|i| netcpus::control(i).cpu() != cpu));
    let cpu = free.unwrap_or((home + 1) % cpus);
    if let Err(e) = crate::thread::spawn_on(cpu, watch) {
        log::warn!("net: no watchdog for the network stacks: {e}");
    }
}

fn watch() {
    static WARNING: RateLimit = RateLimit::new();
    loop {
        crate::sched::sleep(PERIOD);
        for index in netcpus::all() {
            let since_last_round =
                crate::time::uptime().saturating_sub(Duration::from_millis(counters::last_round_ms(index)));
            if netcpus::control(index).work_waiting() && since_last_round >= STUCK_AFTER && WARNING.allow(WARN_EVERY) {
                log::warn!(
                    "net: the network cpu has work waiting but has completed no round for {} ms (cpu {}, stack {index}; {} rounds so far, all stacks)",
                    since_last_round.as_millis(),
                    netcpus::control(index).cpu(),
                    counters::read().rounds
                );
            }
        }
    }
}
