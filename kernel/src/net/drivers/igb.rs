//! igb's glue: QEMU's igb (82576, PCI 8086:10C9) found on PCI, the
//! driver's view of the machine ([`igb::Hardware`]: registers through the
//! uncached BAR 0 window, shared by every queue; DMA memory from the node
//! of the cpu that asks, so each queue's rings are local to its cpu), one
//! MSI-X table entry per queue routed to that queue's cpu, and without
//! MSI-X (none on the device, or `msix=off`) one queue on the INTx line.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use igb::{Dma, Hardware, Igb, Queue};

use super::{Interrupt, NIC_VECTOR};
use crate::arch::mmio::Window;
use crate::arch::msix::MsixTable;
use crate::arch::{percpu, tsc};
use crate::net::device::{NetDevice, NicStats};
use crate::pci;

/// The igb's registers (shared by its queues: each touches its own).
#[derive(Clone, Copy)]
pub struct Registers {
    window: &'static Window,
}

impl Hardware for Registers {
    fn read(&self, register: u32) -> u32 {
        self.window.read32(register as usize)
    }

    fn write(&self, register: u32, value: u32) {
        self.window.write32(register as usize, value)
    }

    fn alloc_dma(&self, size: usize) -> Option<Dma> {
        let (virt, phys) = super::alloc_dma(percpu::this().node(), size)?;
        Some(Dma { virt, phys, size })
    }

    fn delay_us(&self, micros: u64) {
        tsc::spin_for_micros(micros);
    }
}

/// An igb found on PCI, not set up yet.
pub struct Found {
    registers: Registers,
    device: pci::Device,
    /// The MSI-X capability and table, or why the queues go without.
    msix: Result<(pci::Msix, MsixTable), &'static str>,
}

/// One queue of a set-up igb, not started yet.
pub struct QueueFound {
    igb: Arc<Igb<Registers>>,
    index: usize,
    interrupt_line: u8,
}

/// Finds QEMU's igb, maps BAR 0 and its MSI-X table (unless `msix` is
/// false: `msix=off`), enables DMA. `None` when there is no such device.
/// Logs one line when the device will run without MSI-X, saying why.
pub fn find(msix: bool) -> Option<Result<Found, String>> {
    let device = pci::find(0x8086, 0x10c9)?;
    let found = map(device, msix).map_err(|e| format!("igb: {e}"));
    if let Ok(Found { msix: Err(why), .. }) = &found {
        log::info!("net: igb without MSI-X ({why}): one queue on the legacy interrupt");
    }
    Some(found)
}

fn map(device: pci::Device, msix: bool) -> Result<Found, &'static str> {
    let Some(pci::Bar::Memory { phys, size }) = device.bar(0) else { return Err("BAR 0 is not a memory window") };
    if phys == 0 {
        return Err("BAR 0 not assigned by the firmware");
    }
    // The window lives as long as the VM: every queue's registers share it.
    let window: &'static Window = alloc::boxed::Box::leak(alloc::boxed::Box::new(Window::map(phys, size as usize)?));
    let msix = match (msix, device.msix()) {
        (false, _) => Err("msix=off"),
        (true, None) => Err("the device has no MSI-X capability"),
        (true, Some(cap)) => {
            let table = super::bar_range(&device, cap.table_bar, cap.table_offset as u64, cap.table_size as u64 * 16)?;
            Ok((cap, MsixTable::map(table, cap.table_size)?))
        }
    };
    device.enable();
    Ok(Found { registers: Registers { window }, device, msix })
}

impl Found {
    /// Queues usable: one per MSI-X vector up to the device's queues; 1
    /// without MSI-X.
    pub fn max_queues(&self) -> usize {
        match &self.msix {
            Ok((_, table)) => igb::MAX_QUEUES.min(usize::from(table.entries())),
            Err(_) => 1,
        }
    }

    /// Sets the device up on the calling cpu for `cpus.len()` queues, queue
    /// i's MSI-X entry sent to [`NIC_VECTOR`] on cpu `cpus[i]`.
    pub fn split(self, cpus: &[usize]) -> Result<Vec<QueueFound>, String> {
        if cpus.is_empty() || cpus.len() > self.max_queues() {
            return Err(format!("igb: {} queues asked for, 1 to {} possible", cpus.len(), self.max_queues()));
        }
        let msix = self.msix.is_ok();
        let igb = Igb::new(self.registers, cpus.len(), msix).map_err(|e| format!("igb setup failed: {e:?}"))?;
        if let Ok((cap, table)) = &self.msix {
            for (entry, &cpu) in cpus.iter().enumerate() {
                let apic_id = percpu::get(cpu).ok_or("igb: no such cpu")?.apic_id();
                table.route(entry as u16, NIC_VECTOR, apic_id).map_err(|e| format!("igb: MSI-X entry {entry}: {e}"))?;
            }
            self.device.set_msix(cap, true);
        }
        let igb = Arc::new(igb);
        let line = self.device.interrupt_line;
        Ok((0..cpus.len()).map(|index| QueueFound { igb: igb.clone(), index, interrupt_line: line }).collect())
    }
}

impl QueueFound {
    /// Starts the queue on the calling cpu (its rings from this cpu's
    /// node). Its MSI-X vector was routed here by [`Found::split`]; without
    /// MSI-X, its INTx line is found unless `poll`.
    pub fn start(self, poll: bool) -> Result<(Queue<Registers>, Interrupt), String> {
        let mut queue = self.igb.queue(self.index).map_err(|e| format!("igb queue {}: {e:?}", self.index))?;
        let interrupt = if poll {
            Interrupt::Polled("netpoll=on")
        } else if self.igb.msix() {
            Interrupt::Message
        } else {
            super::legacy_interrupt(self.interrupt_line, |raise| {
                if raise {
                    queue.raise_test_interrupt();
                } else {
                    queue.acknowledge_interrupt();
                }
            })
        };
        Ok((queue, interrupt))
    }
}

impl NetDevice for Queue<Registers> {
    fn mac(&self) -> [u8; 6] {
        Queue::mac(self)
    }

    fn link_up(&self) -> bool {
        Queue::link_up(self)
    }

    fn enable_interrupts(&mut self) {
        Queue::enable_interrupts(self)
    }

    fn acknowledge_interrupt(&mut self) -> u32 {
        Queue::acknowledge_interrupt(self)
    }

    fn rx_ready(&self) -> bool {
        Queue::rx_ready(self)
    }

    fn peek_frame(&self) -> Option<&[u8]> {
        Queue::peek_frame(self)
    }

    fn receive_with<R>(&mut self, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        Queue::receive_with(self, f)
    }

    fn can_transmit(&mut self) -> bool {
        Queue::can_transmit(self)
    }

    fn transmit_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        Queue::transmit_with(self, len, f)
    }

    fn flush(&mut self) {
        Queue::flush(self)
    }

    fn stats(&mut self) -> NicStats {
        Queue::stats(self).into()
    }

    fn queue(&self) -> usize {
        self.index()
    }

    fn receive_queue(&self, peer: core::net::SocketAddrV4, local: core::net::SocketAddrV4) -> usize {
        self.rss().queue_of_tcp4(peer.ip().octets(), local.ip().octets(), peer.port(), local.port())
    }

    fn rss(&self) -> Option<([u8; 40], [u8; 128])> {
        let rss = Queue::rss(self);
        Some((rss.key, rss.reta))
    }
}
