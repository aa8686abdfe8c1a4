//! The COM1 16550 UART, the kernel's console device.
//!
//! Every port access is a VM exit, so output is written in bursts of up to
//! the FIFO depth (16 bytes) after a single "transmitter empty" check, rather
//! than polling the line status before every byte.

use x86_64::instructions::port::{Port, PortWriteOnly};

const COM1: u16 = 0x3f8;
const FIFO_DEPTH: usize = 16;
const LSR_THR_EMPTY: u8 = 1 << 5;

pub struct Uart {
    data: PortWriteOnly<u8>,
    line_status: Port<u8>,
}

impl Uart {
    /// The COM1 port. Call [`Uart::init`] once before writing.
    pub const fn com1() -> Self {
        Self { data: PortWriteOnly::new(COM1), line_status: Port::new(COM1 + 5) }
    }

    /// Programs 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&mut self) {
        let regs: [(u16, u8); 6] = [
            (1, 0x00), // IER: no interrupts
            (3, 0x80), // LCR: DLAB on to set the divisor
            (0, 0x01), // DLL: divisor 1 = 115200 baud
            (1, 0x00), // DLM
            (3, 0x03), // LCR: 8 bits, no parity, one stop bit, DLAB off
            (2, 0xc7), // FCR: enable and clear FIFOs
        ];
        for (offset, value) in regs {
            // SAFETY: COM1's registers are fixed I/O ports owned by this
            // driver; these writes only configure the UART.
            unsafe { PortWriteOnly::<u8>::new(COM1 + offset).write(value) };
        }
    }

    /// Writes `bytes`, a FIFO's worth after each "transmitter empty".
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(FIFO_DEPTH) {
            // SAFETY: reading LSR and writing THR of COM1 have no effect
            // beyond transmitting the bytes.
            unsafe {
                let mut spins = 0u32;
                while self.line_status.read() & LSR_THR_EMPTY == 0 && spins < 100_000 {
                    spins += 1;
                    core::hint::spin_loop();
                }
                for &b in chunk {
                    self.data.write(b);
                }
            }
        }
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}
