//! The virtio-mmio transport, version 2 (virtio 1.1, 4.2.2): one window of
//! 32-bit registers, the device configuration from offset 0x100. Version 1
//! (legacy, page-frame queues) is refused. QEMU presents its virtio-mmio
//! devices as version 1 unless told `-global virtio-mmio.force-legacy=false`
//! (also on `-M microvm`: checked with QEMU 10's `info qtree`); Firecracker
//! and Cloud Hypervisor present version 2.

use crate::transport::{QueueAddresses, Transport, NO_VECTOR};
use crate::{Error, Registers};

const MAGIC_VALUE: usize = 0x000;
const VERSION: usize = 0x004;
const DEVICE_ID: usize = 0x008;
const DEVICE_FEATURES: usize = 0x010;
const DEVICE_FEATURES_SEL: usize = 0x014;
const DRIVER_FEATURES: usize = 0x020;
const DRIVER_FEATURES_SEL: usize = 0x024;
const QUEUE_SEL: usize = 0x030;
const QUEUE_NUM_MAX: usize = 0x034;
const QUEUE_NUM: usize = 0x038;
const QUEUE_READY: usize = 0x044;
const QUEUE_NOTIFY: usize = 0x050;
const INTERRUPT_STATUS: usize = 0x060;
const INTERRUPT_ACK: usize = 0x064;
const STATUS: usize = 0x070;
const QUEUE_DESC_LOW: usize = 0x080;
const QUEUE_DESC_HIGH: usize = 0x084;
const QUEUE_DRIVER_LOW: usize = 0x090;
const QUEUE_DRIVER_HIGH: usize = 0x094;
const QUEUE_DEVICE_LOW: usize = 0x0a0;
const QUEUE_DEVICE_HIGH: usize = 0x0a4;
const CONFIG_GENERATION: usize = 0x0fc;
const CONFIG: usize = 0x100;

/// "virt", little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// The virtio device id of a network card.
pub const NETWORK_DEVICE: u32 = 1;

/// A virtio-mmio device (version 2) behind `registers`.
pub struct Mmio<R: Registers> {
    registers: R,
}

impl<R: Registers> Mmio<R> {
    /// Checks that a modern virtio network device sits behind `registers`.
    pub fn new(registers: R) -> Result<Self, Error> {
        if registers.read32(MAGIC_VALUE) != MAGIC {
            return Err(Error::NoDevice);
        }
        match registers.read32(VERSION) {
            2 => {}
            1 => return Err(Error::Legacy),
            _ => return Err(Error::NoDevice),
        }
        match registers.read32(DEVICE_ID) {
            NETWORK_DEVICE => Ok(Self { registers }),
            0 => Err(Error::NoDevice),
            _ => Err(Error::NotNetwork),
        }
    }

    fn write64(&self, low: usize, high: usize, value: u64) {
        self.registers.write32(low, value as u32);
        self.registers.write32(high, (value >> 32) as u32);
    }
}

impl<R: Registers> Transport for Mmio<R> {
    fn status(&self) -> u8 {
        self.registers.read32(STATUS) as u8
    }

    fn set_status(&self, status: u8) {
        self.registers.write32(STATUS, status.into());
    }

    fn device_features(&self) -> u64 {
        self.registers.write32(DEVICE_FEATURES_SEL, 0);
        let low = self.registers.read32(DEVICE_FEATURES);
        self.registers.write32(DEVICE_FEATURES_SEL, 1);
        let high = self.registers.read32(DEVICE_FEATURES);
        u64::from(high) << 32 | u64::from(low)
    }

    fn set_driver_features(&self, features: u64) {
        self.registers.write32(DRIVER_FEATURES_SEL, 0);
        self.registers.write32(DRIVER_FEATURES, features as u32);
        self.registers.write32(DRIVER_FEATURES_SEL, 1);
        self.registers.write32(DRIVER_FEATURES, (features >> 32) as u32);
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        self.registers.write32(QUEUE_SEL, queue.into());
        // A size beyond 16 bits is impossible; saturating keeps it visible
        // (and refused: u16::MAX is no power of two).
        self.registers.read32(QUEUE_NUM_MAX).try_into().unwrap_or(u16::MAX)
    }

    fn set_up_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) {
        self.registers.write32(QUEUE_SEL, queue.into());
        self.registers.write32(QUEUE_NUM, size.into());
        self.write64(QUEUE_DESC_LOW, QUEUE_DESC_HIGH, addresses.descriptors);
        self.write64(QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH, addresses.driver);
        self.write64(QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH, addresses.device);
        self.registers.write32(QUEUE_READY, 1);
    }

    fn set_config_vector(&self, vector: u16) -> bool {
        vector == NO_VECTOR
    }

    fn set_queue_vector(&self, _queue: u16, vector: u16) -> bool {
        vector == NO_VECTOR
    }

    fn notify(&self, queue: u16) {
        self.registers.write32(QUEUE_NOTIFY, queue.into());
    }

    fn acknowledge_interrupt(&self) -> u32 {
        let status = self.registers.read32(INTERRUPT_STATUS);
        if status != 0 {
            self.registers.write32(INTERRUPT_ACK, status);
        }
        status
    }

    fn config_generation(&self) -> u32 {
        self.registers.read32(CONFIG_GENERATION)
    }

    fn read_config8(&self, offset: usize) -> u8 {
        self.registers.read8(CONFIG + offset)
    }

    fn read_config16(&self, offset: usize) -> u16 {
        self.registers.read16(CONFIG + offset)
    }
}
