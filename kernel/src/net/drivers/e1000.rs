//! e1000's glue: QEMU's e1000 (82540EM, PCI 8086:100E) found on PCI, the
//! driver's view of the machine ([`e1000::Hardware`]: registers through
//! the uncached BAR 0 window, DMA memory from the network cpu's node), and
//! its INTx line, found by making it interrupt.

use alloc::format;
use alloc::string::String;
use e1000::{Dma, Hardware, E1000};

use super::Interrupt;
use crate::arch::mmio::Window;
use crate::arch::{percpu, tsc};
use crate::net::device::{NetDevice, NicStats};
use crate::pci;

/// The e1000's registers and the node its DMA memory comes from.
pub struct Registers {
    window: Window,
    node: usize,
}

impl Hardware for Registers {
    fn read(&self, register: u32) -> u32 {
        self.window.read32(register as usize)
    }

    fn write(&self, register: u32, value: u32) {
        self.window.write32(register as usize, value)
    }

    fn alloc_dma(&self, size: usize) -> Option<Dma> {
        let (virt, phys) = super::alloc_dma(self.node, size)?;
        Some(Dma { virt, phys, size })
    }

    fn delay_us(&self, micros: u64) {
        tsc::spin_for_micros(micros);
    }
}

/// An e1000 found on PCI, not set up yet.
pub struct Found {
    window: Window,
    device: pci::Device,
}

/// Finds QEMU's e1000, maps BAR 0 and enables DMA. `None` when there is
/// no such device.
pub fn find() -> Option<Result<Found, String>> {
    let device = pci::find(0x8086, 0x100e)?;
    Some(map(device).map_err(|e| format!("e1000: {e}")))
}

fn map(device: pci::Device) -> Result<Found, &'static str> {
    let Some(pci::Bar::Memory { phys, size }) = device.bar(0) else { return Err("BAR 0 is not a memory window") };
    if phys == 0 {
        return Err("BAR 0 not assigned by the firmware");
    }
    let window = Window::map(phys, size as usize)?;
    device.enable();
    Ok(Found { window, device })
}

impl Found {
    /// Sets the driver up on the calling cpu (DMA memory from its node),
    /// with its interrupt line routed here unless `poll`.
    pub fn start(self, poll: bool) -> Result<(E1000<Registers>, Interrupt), String> {
        let registers = Registers { window: self.window, node: percpu::this().node() };
        let mut driver = E1000::new(registers).map_err(|e| format!("e1000 setup failed: {e:?}"))?;
        let interrupt = if poll {
            Interrupt::Polled("netpoll=on")
        } else {
            super::legacy_interrupt(self.device.interrupt_line, |raise| {
                if raise {
                    driver.raise_test_interrupt();
                } else {
                    driver.handle_interrupt();
                }
            })
        };
        Ok((driver, interrupt))
    }
}

impl NetDevice for E1000<Registers> {
    fn mac(&self) -> [u8; 6] {
        E1000::mac(self)
    }

    fn link_up(&self) -> bool {
        E1000::link_up(self)
    }

    fn enable_interrupts(&mut self) {
        E1000::enable_interrupts(self)
    }

    fn acknowledge_interrupt(&mut self) -> u32 {
        self.handle_interrupt()
    }

    fn rx_ready(&self) -> bool {
        E1000::rx_ready(self)
    }

    fn peek_frame(&self) -> Option<&[u8]> {
        E1000::peek_frame(self)
    }

    fn receive_with<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        E1000::receive_with(self, f)
    }

    fn can_transmit(&mut self) -> bool {
        E1000::can_transmit(self)
    }

    fn transmit_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        E1000::transmit_with(self, len, f)
    }

    fn flush(&mut self) {
        E1000::flush(self)
    }

    fn stats(&mut self) -> NicStats {
        E1000::stats(self).into()
    }
}
