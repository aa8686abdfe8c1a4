//! The virtio PCI transport, modern only (virtio 1.1, 4.1.4): the common
//! configuration structure, the notification region (a queue's doorbell
//! at `queue_notify_off * notify_off_multiplier`), the ISR byte (reading
//! it acknowledges) and the device configuration, each a window the
//! kernel found through the vendor capabilities and mapped.

use alloc::vec::Vec;

use crate::transport::{QueueAddresses, Transport};
use crate::Registers;

/// Offsets in `struct virtio_pci_common_cfg`.
mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub const DEVICE_FEATURE: usize = 0x04;
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub const DRIVER_FEATURE: usize = 0x0c;
    pub const MSIX_CONFIG: usize = 0x10;
    pub const DEVICE_STATUS: usize = 0x14;
    pub const CONFIG_GENERATION: usize = 0x15;
    pub const QUEUE_SELECT: usize = 0x16;
    pub const QUEUE_SIZE: usize = 0x18;
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    pub const QUEUE_ENABLE: usize = 0x1c;
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    pub const QUEUE_DESC: usize = 0x20;
    pub const QUEUE_DRIVER: usize = 0x28;
    pub const QUEUE_DEVICE: usize = 0x30;
}

/// The regions a modern virtio PCI device's vendor capabilities point at
/// (cfg_type 1 common, 2 notify, 3 ISR, 4 device), mapped by the kernel.
pub struct PciRegions<R: Registers> {
    /// The common configuration (features, status, queue set-up).
    pub common: R,
    /// The queues' doorbells.
    pub notify: R,
    /// From the notify capability: bytes between queues' doorbells per
    /// unit of `queue_notify_off`.
    pub notify_off_multiplier: u32,
    /// The interrupt status register (read to acknowledge).
    pub isr: R,
    /// The device-specific configuration (MAC, link status).
    pub device: R,
}

/// A modern virtio PCI device.
pub struct Pci<R: Registers> {
    regions: PciRegions<R>,
    /// Each set-up queue's doorbell offset in the notify region.
    doorbells: Vec<usize>,
}

impl<R: Registers> Pci<R> {
    /// The device whose capabilities point at `regions`.
    pub fn new(regions: PciRegions<R>) -> Self {
        Self { regions, doorbells: Vec::new() }
    }

    fn select(&self, queue: u16) {
        self.regions.common.write16(common::QUEUE_SELECT, queue);
    }

    fn write64(&self, offset: usize, value: u64) {
        self.regions.common.write32(offset, value as u32);
        self.regions.common.write32(offset + 4, (value >> 32) as u32);
    }
}

impl<R: Registers> Transport for Pci<R> {
    fn status(&self) -> u8 {
        self.regions.common.read8(common::DEVICE_STATUS)
    }

    fn set_status(&self, status: u8) {
        self.regions.common.write8(common::DEVICE_STATUS, status);
    }

    fn device_features(&self) -> u64 {
        let common = &self.regions.common;
        common.write32(common::DEVICE_FEATURE_SELECT, 0);
        let low = common.read32(common::DEVICE_FEATURE);
        common.write32(common::DEVICE_FEATURE_SELECT, 1);
        let high = common.read32(common::DEVICE_FEATURE);
        u64::from(high) << 32 | u64::from(low)
    }

    fn set_driver_features(&self, features: u64) {
        let common = &self.regions.common;
        common.write32(common::DRIVER_FEATURE_SELECT, 0);
        common.write32(common::DRIVER_FEATURE, features as u32);
        common.write32(common::DRIVER_FEATURE_SELECT, 1);
        common.write32(common::DRIVER_FEATURE, (features >> 32) as u32);
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        self.select(queue);
        self.regions.common.read16(common::QUEUE_SIZE)
    }

    fn set_up_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) {
        self.select(queue);
        self.regions.common.write16(common::QUEUE_SIZE, size);
        self.write64(common::QUEUE_DESC, addresses.descriptors);
        self.write64(common::QUEUE_DRIVER, addresses.driver);
        self.write64(common::QUEUE_DEVICE, addresses.device);
        let notify_off = usize::from(self.regions.common.read16(common::QUEUE_NOTIFY_OFF));
        let queue = usize::from(queue);
        if self.doorbells.len() <= queue {
            self.doorbells.resize(queue + 1, 0);
        }
        self.doorbells[queue] = notify_off * self.regions.notify_off_multiplier as usize;
        self.regions.common.write16(common::QUEUE_ENABLE, 1);
    }

    fn set_config_vector(&self, vector: u16) -> bool {
        self.regions.common.write16(common::MSIX_CONFIG, vector);
        self.regions.common.read16(common::MSIX_CONFIG) == vector
    }

    fn set_queue_vector(&self, queue: u16, vector: u16) -> bool {
        self.select(queue);
        self.regions.common.write16(common::QUEUE_MSIX_VECTOR, vector);
        self.regions.common.read16(common::QUEUE_MSIX_VECTOR) == vector
    }

    fn notify(&self, queue: u16) {
        // Only set-up queues are notified; another is a driver bug, and
        // ringing no doorbell is the harmless answer.
        if let Some(&offset) = self.doorbells.get(usize::from(queue)) {
            self.regions.notify.write16(offset, queue);
        }
    }

    fn acknowledge_interrupt(&self) -> u32 {
        self.regions.isr.read8(0).into()
    }

    fn config_generation(&self) -> u32 {
        self.regions.common.read8(common::CONFIG_GENERATION).into()
    }

    fn read_config8(&self, offset: usize) -> u8 {
        self.regions.device.read8(offset)
    }

    fn read_config16(&self, offset: usize) -> u16 {
        self.regions.device.read16(offset)
    }
}
