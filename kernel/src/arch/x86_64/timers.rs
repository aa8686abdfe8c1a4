//! The fixed-rate timers the TSC is calibrated against, each read without
//! interrupts: PIT channel 0 (latched reads on ports 0x40/0x43, which need
//! no speaker gate, so they work on microvm too), the ACPI power-management
//! timer (its port from the FADT), and the CMOS RTC's periodic flag.
//! Each reader first checks that its timer is there and moving.

use x86_64::instructions::port::Port;

/// PIT input clock.
pub const PIT_HZ: u64 = 1_193_182;
/// ACPI PM timer clock.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// The RTC's periodic rate used for measuring (rate select 5): periods of
/// 488 us, far longer than a poll, so that no rise of the flag is missed.
pub const RTC_PERIODIC_HZ: u64 = 2048;
const RTC_RATE_SELECT: u8 = 5;

/// Reads of a counter that must show it moving before it counts as
/// present: the slowest (the PIT, 1.19 MHz) moves between any two reads,
/// which take at least a microsecond each.
const PRESENCE_READS: u32 = 200;

/// The timers the firmware's tables describe (the rest are probed).
#[derive(Clone, Copy, Debug, Default)]
pub struct FirmwareTimers {
    /// The ACPI PM timer's I/O port and whether it is 32 bits wide.
    pub pm_timer: Option<(u16, bool)>,
}
/// A free-running counter at a known rate.
pub trait Counter {
    /// The count now.
    fn read(&mut self) -> u64;
    /// Ticks per second.
    fn hz(&self) -> u64;
    /// Width in bits (it wraps at 2^bits).
    fn bits(&self) -> u32;
    /// Whether it counts down.
    fn counts_down(&self) -> bool;
}

/// Whether `counter` changes within [`PRESENCE_READS`] reads (an absent
/// device reads the same all-ones value every time).
pub fn is_moving(counter: &mut impl Counter) -> bool {
    let first = counter.read();
    (0..PRESENCE_READS).any(|_| counter.read() != first)
}

/// PIT channel 0, reprogrammed as a free-running rate generator (mode 2,
/// full 65,536 count: it wraps every 55 ms). Its interrupt (IRQ 0) stays
/// masked: the 8259s are masked and the I/O APIC pin is never enabled.
pub struct Pit {
    command: Port<u8>,
    channel0: Port<u8>,
}

impl Pit {
    pub fn start() -> Self {
        let mut pit = Self { command: Port::new(0x43), channel0: Port::new(0x40) };
        // SAFETY: channel 0 drives only IRQ 0, which nothing in the kernel
        // uses; mode 2 with count 0 (65,536) makes it free-running.
        unsafe {
            pit.command.write(0b0011_0100); // channel 0, lobyte/hibyte, mode 2, binary
            pit.channel0.write(0);
            pit.channel0.write(0);
        }
        pit
    }
}

impl Counter for Pit {
    fn read(&mut self) -> u64 {
        // SAFETY: the latch command (channel 0, counter latch) freezes the
        // count for the two reads that follow; it changes nothing else.
        unsafe {
            self.command.write(0b0000_0000);
            let low = self.channel0.read() as u64;
            let high = self.channel0.read() as u64;
            high << 8 | low
        }
    }
    fn hz(&self) -> u64 {
        PIT_HZ
    }
    fn bits(&self) -> u32 {
        16
    }
    fn counts_down(&self) -> bool {
        true
    }
}

/// The ACPI power-management timer at the I/O port the FADT gives.
pub struct PmTimer {
    port: Port<u32>,
    bits: u32,
}

impl PmTimer {
    /// The timer at `port`, 32 or 24 bits wide (the FADT's TMR_VAL_EXT flag).
    pub fn new(port: u16, wide: bool) -> Self {
        Self { port: Port::new(port), bits: if wide { 32 } else { 24 } }
    }
}

impl Counter for PmTimer {
    fn read(&mut self) -> u64 {
        // SAFETY: reading the PM timer's port has no side effects.
        let value = unsafe { self.port.read() } as u64;
        value & ((1 << self.bits) - 1)
    }
    fn hz(&self) -> u64 {
        PM_TIMER_HZ
    }
    fn bits(&self) -> u32 {
        self.bits
    }
    fn counts_down(&self) -> bool {
        false
    }
}

/// The CMOS RTC, used for its periodic flag (register C bit 6), which
/// rises [`RTC_PERIODIC_HZ`] times a second.
pub struct Rtc {
    index: Port<u8>,
    data: Port<u8>,
    saved_a: u8,
    saved_b: u8,
}

const RTC_A: u8 = 0x0a;
const RTC_B: u8 = 0x0b;
const RTC_C: u8 = 0x0c;
/// Register index bit that keeps NMIs masked while the index is set.
const NMI_OFF: u8 = 0x80;
const PERIODIC_FLAG: u8 = 0x40;
const PERIODIC_ENABLE: u8 = 0x40;

impl Rtc {
    /// Sets the periodic rate and enables the periodic flag, if an RTC
    /// answers (an absent one reads all ones). Its interrupt (IRQ 8) stays
    /// masked like every legacy line.
    pub fn start() -> Option<Self> {
        let mut rtc = Self { index: Port::new(0x70), data: Port::new(0x71), saved_a: 0, saved_b: 0 };
        rtc.saved_a = rtc.get(RTC_A);
        rtc.saved_b = rtc.get(RTC_B);
        if rtc.saved_a == 0xff && rtc.saved_b == 0xff {
            return None;
        }
        rtc.set(RTC_A, (rtc.saved_a & 0xf0) | RTC_RATE_SELECT);
        rtc.set(RTC_B, rtc.saved_b | PERIODIC_ENABLE);
        rtc.get(RTC_C);
        Some(rtc)
    }

    fn get(&mut self, register: u8) -> u8 {
        // SAFETY: selecting an RTC register and reading it; reading register
        // C clears its flags, which only this code uses.
        unsafe {
            self.index.write(NMI_OFF | register);
            self.data.read()
        }
    }

    fn set(&mut self, register: u8, value: u8) {
        // SAFETY: registers A and B set the periodic rate and its enable;
        // the clock itself (date and time) is untouched.
        unsafe {
            self.index.write(NMI_OFF | register);
            self.data.write(value);
        }
    }

    /// Waits for the next rise of the periodic flag, for at most `max_polls`
    /// reads, each after a `pause`; returns whether it rose.
    ///
    /// The pause matters under QEMU: each read is a port access that takes
    /// its big lock, and the flag is raised by a timer of QEMU's main loop,
    /// which back-to-back reads starved (rises came milliseconds late: rates
    /// of 5-30 GHz on a busy host).
    pub fn wait_period(&mut self, max_polls: u32, mut pause: impl FnMut()) -> bool {
        (0..max_polls).any(|_| {
            pause();
            self.get(RTC_C) & PERIODIC_FLAG != 0
        })
    }
}

impl Drop for Rtc {
    fn drop(&mut self) {
        self.set(RTC_B, self.saved_b);
        self.set(RTC_A, self.saved_a);
        self.get(RTC_C);
    }
}
