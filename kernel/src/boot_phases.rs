//! How long each step of the boot took: the TSC at the end of each phase,
//! noted on the boot cpu as it goes (before the TSC is calibrated too,
//! as raw ticks) and printed as one `log=debug` line just before `main`.

use core::fmt;

use spin::Mutex;

use crate::arch::tsc;

/// Phases kept; later ones are dropped.
const MAX_PHASES: usize = 16;

struct Phases {
    /// Each phase's name and the TSC when it ended.
    ends: [(&'static str, u64); MAX_PHASES],
    count: usize,
}

static PHASES: Mutex<Phases> = Mutex::new(Phases { ends: [("", 0); MAX_PHASES], count: 0 });

/// Notes that the phase `name` (which began when the previous one ended,
/// or at kernel entry) ends now.
pub fn done(name: &'static str) {
    let now = tsc::now();
    let mut phases = PHASES.lock();
    let count = phases.count;
    if let Some(slot) = phases.ends.get_mut(count) {
        *slot = (name, now);
        phases.count += 1;
    }
}

/// Logs every phase's duration at debug level.
pub fn log() {
    if log::log_enabled!(log::Level::Debug) {
        let phases = PHASES.lock();
        log::debug!("boot: {phases}");
    }
}

impl fmt::Display for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut start = tsc::at_entry();
        for (i, &(name, end)) in self.ends[..self.count].iter().enumerate() {
            let micros = tsc::ticks_to_nanos(end.saturating_sub(start)) / 1000;
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{name} {}.{:03} ms", micros / 1000, micros % 1000)?;
            start = end;
        }
        Ok(())
    }
}
