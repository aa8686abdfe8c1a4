//! Choosing the TSC rate from what each source declared or measured: the
//! arithmetic of a measurement window and the rules that decide which rate
//! to trust (pure logic, tested on the host; `arch::tsc` does the reading).
//!
//! A rate is trusted when a second, independent source agrees with it. A
//! rate that no other source confirms, or one outside
//! [`MIN_PLAUSIBLE_HZ`]..=[`MAX_PLAUSIBLE_HZ`], is used only with a loud
//! error from the caller.

use core::fmt;

/// Slowest TSC taken as real (anything slower is a broken measurement).
pub const MIN_PLAUSIBLE_HZ: u64 = 100_000_000;
/// Fastest TSC taken as real.
pub const MAX_PLAUSIBLE_HZ: u64 = 10_000_000_000;

/// Where an estimate of the TSC rate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// CPUID leaf 0x15: crystal frequency times the TSC/crystal ratio.
    CpuidCrystal,
    /// The hypervisor's timing leaf (CPUID 0x4000_0010, TSC in kHz).
    HypervisorLeaf,
    /// CPUID leaf 0x16: the base frequency in MHz.
    CpuidBase,
    /// Measured against the ACPI power-management timer (3.579545 MHz).
    PmTimer,
    /// Measured against PIT channel 0 (1.193182 MHz).
    Pit,
    /// Measured against the local APIC timer at the 1 GHz bus QEMU and KVM
    /// give it.
    LocalApic,
    /// Measured against the CMOS RTC's periodic flag (2048 Hz).
    Rtc,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::CpuidCrystal => "CPUID 0x15",
            Source::HypervisorLeaf => "CPUID 0x40000010",
            Source::CpuidBase => "CPUID 0x16",
            Source::PmTimer => "ACPI PM timer",
            Source::Pit => "PIT",
            Source::LocalApic => "local APIC timer",
            Source::Rtc => "RTC",
        }
    }

    /// How far (in parts per million) an estimate from this source may be
    /// off: counters read at any moment are exact to a tick and a read; the
    /// RTC's flag is set by a timer event that QEMU's main loop delivers
    /// late (by its 50 us timer slack, and more on a busy host), so the RTC
    /// only rules out gross errors (a wrong APIC bus, a garbage reading).
    pub fn tolerance_ppm(self) -> u64 {
        match self {
            Source::Rtc => 100_000,
            _ => 10_000,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One source's idea of the TSC rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub source: Source,
    pub hz: u64,
}

/// Ticks a counter advanced from `earlier` to `later`, for a counter of
/// `bits` bits that counts down (`down`) or up and wraps around once at most.
pub fn elapsed_count(earlier: u64, later: u64, bits: u32, down: bool) -> u64 {
    let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let delta = if down { earlier.wrapping_sub(later) } else { later.wrapping_sub(earlier) };
    delta & mask
}

/// TSC ticks per second, from `tsc_ticks` counted while a counter running at
/// `counter_hz` advanced `counter_ticks`; `None` for an empty window.
pub fn rate(tsc_ticks: u64, counter_ticks: u64, counter_hz: u64) -> Option<u64> {
    if counter_ticks == 0 {
        return None;
    }
    let hz = tsc_ticks as u128 * counter_hz as u128 / counter_ticks as u128;
    u64::try_from(hz).ok()
}

/// Whether `hz` could be a real TSC.
pub fn plausible(hz: u64) -> bool {
    (MIN_PLAUSIBLE_HZ..=MAX_PLAUSIBLE_HZ).contains(&hz)
}

/// Whether `a` and `b` differ by at most `tolerance_ppm` of the larger.
pub fn agree(a: u64, b: u64, tolerance_ppm: u64) -> bool {
    let (diff, larger) = (a.abs_diff(b) as u128, a.max(b) as u128);
    diff * 1_000_000 <= larger * tolerance_ppm as u128
}

/// The rate chosen and how far it can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `chosen` is plausible and `by` agrees with it.
    Confirmed { chosen: Estimate, by: Source },
    /// `chosen` is plausible but no other source agrees (there is none, or
    /// every other one disagrees).
    Unconfirmed { chosen: Estimate },
    /// No source gave a plausible rate; `first` is the first one given.
    Implausible { first: Estimate },
    /// No source at all.
    Nothing,
}

impl Verdict {
    /// The rate to use, if any source gave one.
    #[cfg(test)]
    pub fn hz(&self) -> Option<u64> {
        match self {
            Verdict::Confirmed { chosen, .. } | Verdict::Unconfirmed { chosen } => Some(chosen.hz),
            Verdict::Implausible { first } => Some(first.hz),
            Verdict::Nothing => None,
        }
    }

    /// Whether another source confirmed the rate.
    pub fn is_confirmed(&self) -> bool {
        matches!(self, Verdict::Confirmed { .. })
    }
}

/// Chooses among `estimates`, given in order of preference: the first
/// plausible estimate that another plausible one agrees with (within the
/// looser tolerance of the two), else the first plausible one.
pub fn choose(estimates: &[Estimate]) -> Verdict {
    let plausible_ones = || estimates.iter().filter(|e| plausible(e.hz));
    for (i, chosen) in plausible_ones().enumerate() {
        let confirming = plausible_ones().enumerate().find(|&(j, other)| {
            j != i
                && other.source != chosen.source
                && agree(chosen.hz, other.hz, chosen.source.tolerance_ppm().max(other.source.tolerance_ppm()))
        });
        if let Some((_, other)) = confirming {
            return Verdict::Confirmed { chosen: *chosen, by: other.source };
        }
    }
    match (plausible_ones().next(), estimates.first()) {
        (Some(chosen), _) => Verdict::Unconfirmed { chosen: *chosen },
        (None, Some(first)) => Verdict::Implausible { first: *first },
        (None, None) => Verdict::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(source: Source, mhz: f64) -> Estimate {
        Estimate { source, hz: (mhz * 1e6) as u64 }
    }

    #[test]
    fn elapsed_count_handles_direction_and_wrap() {
        assert_eq!(elapsed_count(1000, 400, 16, true), 600);
        assert_eq!(elapsed_count(100, 0xff00, 16, true), 100 + 0x100);
        assert_eq!(elapsed_count(0xff_fff0, 0x10, 24, false), 0x20);
        assert_eq!(elapsed_count(5, 9, 32, false), 4);
        assert_eq!(elapsed_count(u64::MAX, 1, 64, false), 2);
    }

    #[test]
    fn rate_is_tsc_ticks_scaled_by_the_counter() {
        // 1 ms of a 1.193182 MHz PIT (1193 ticks) against 2.6 M TSC ticks.
        assert_eq!(rate(2_600_000, 1193, 1_193_182), Some(2_600_396_647));
        assert_eq!(rate(2_600_000, 0, 1_193_182), None);
        assert_eq!(rate(u64::MAX, 1, u64::MAX), None);
    }

    #[test]
    fn plausibility_rejects_a_3_mhz_tsc() {
        assert!(!plausible(3_000_000));
        assert!(!plausible(20_000_000_000));
        assert!(plausible(2_596_000_000));
    }

    #[test]
    fn agree_is_relative() {
        assert!(agree(2_600_000_000, 2_580_000_000, 10_000));
        assert!(!agree(2_600_000_000, 2_560_000_000, 10_000));
        assert!(agree(0, 0, 0));
    }

    #[test]
    fn two_agreeing_timers_confirm() {
        let v = choose(&[e(Source::PmTimer, 2596.2), e(Source::Pit, 2597.0)]);
        assert_eq!(v, Verdict::Confirmed { chosen: e(Source::PmTimer, 2596.2), by: Source::Pit });
        assert_eq!(v.hz(), Some(2_596_200_000));
    }

    #[test]
    fn a_wrong_first_source_yields_to_an_agreeing_pair() {
        // Leaf 0x16's base frequency is not always the TSC's.
        let v = choose(&[e(Source::CpuidBase, 2000.0), e(Source::Pit, 2597.0), e(Source::LocalApic, 2596.0)]);
        assert_eq!(v, Verdict::Confirmed { chosen: e(Source::Pit, 2597.0), by: Source::LocalApic });
    }

    #[test]
    fn garbage_from_one_timer_is_not_confirmation() {
        let v = choose(&[e(Source::Pit, 3.0), e(Source::LocalApic, 2596.0)]);
        assert_eq!(v, Verdict::Unconfirmed { chosen: e(Source::LocalApic, 2596.0) });
        assert!(!v.is_confirmed());
    }

    #[test]
    fn the_rtc_confirms_within_its_looser_tolerance() {
        let v = choose(&[e(Source::LocalApic, 2596.0), e(Source::Rtc, 2525.0)]);
        assert!(v.is_confirmed());
        let v = choose(&[e(Source::LocalApic, 2596.0), e(Source::Rtc, 2900.0)]);
        assert!(!v.is_confirmed());
    }

    #[test]
    fn only_absurd_rates_are_implausible() {
        assert_eq!(
            choose(&[e(Source::Pit, 3.0), e(Source::Rtc, 4.0)]),
            Verdict::Implausible { first: e(Source::Pit, 3.0) }
        );
        assert_eq!(choose(&[]), Verdict::Nothing);
        assert_eq!(choose(&[]).hz(), None);
    }
}
