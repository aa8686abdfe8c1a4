//! What the driver asks of a virtio transport (virtio 1.1, section 4):
//! device status, the 64-bit feature words, queue setup, notifications,
//! the interrupt status and the device-specific configuration. [`Mmio`]
//! and [`Pci`] implement it over [`Registers`](crate::Registers).
//!
//! [`Mmio`]: crate::Mmio
//! [`Pci`]: crate::Pci

/// Device status bits (virtio 1.1, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
}

/// Interrupt status bits (the MMIO InterruptStatus register, the PCI ISR).
pub mod interrupt_status {
    /// The device used buffers in a queue.
    pub const USED_BUFFER: u32 = 1;
    /// The device configuration changed (for the network device: link).
    pub const CONFIG_CHANGE: u32 = 2;
}

/// "No MSI-X vector" for `msix_config` and `queue_msix_vector`.
pub const NO_VECTOR: u16 = 0xffff;

/// Guest-physical addresses of a split virtqueue's three parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueAddresses {
    /// The descriptor table.
    pub descriptors: u64,
    /// The available ring ("driver area").
    pub driver: u64,
    /// The used ring ("device area").
    pub device: u64,
}

/// A virtio transport. Methods that concern one queue select it first.
/// Object safe: a kernel that drives both transports can use
/// `VirtioNet<Box<dyn Transport + Send>>`.
pub trait Transport {
    /// The device status byte.
    fn status(&self) -> u8;
    /// Writes the device status byte (0 resets the device).
    fn set_status(&self, status: u8);
    /// The 64 feature bits the device offers.
    fn device_features(&self) -> u64;
    /// Writes the 64 feature bits the driver accepts.
    fn set_driver_features(&self, features: u64);
    /// The largest size the device allows for `queue` (0: no such queue).
    fn queue_max_size(&self, queue: u16) -> u16;
    /// Tells the device where `queue` lives and how long it is, then enables it.
    fn set_up_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses);
    /// Routes configuration-change interrupts to MSI-X table entry `vector`
    /// ([`NO_VECTOR`] for none); whether the device took it. A transport
    /// without MSI-X takes only [`NO_VECTOR`].
    fn set_config_vector(&self, vector: u16) -> bool;
    /// Routes `queue`'s interrupts to MSI-X table entry `vector`, as
    /// [`set_config_vector`](Self::set_config_vector); before the queue is enabled.
    fn set_queue_vector(&self, queue: u16, vector: u16) -> bool;
    /// Tells the device that `queue` has new available buffers.
    fn notify(&self, queue: u16);
    /// Reads the interrupt status and acknowledges it (lowering the line);
    /// 0 when the device did not interrupt.
    fn acknowledge_interrupt(&self) -> u32;
    /// Changes whenever the device configuration changes.
    fn config_generation(&self) -> u32;
    /// A byte of the device-specific configuration.
    fn read_config8(&self, offset: usize) -> u8;
    /// A little-endian 16-bit field of the device-specific configuration.
    fn read_config16(&self, offset: usize) -> u16;
}

impl<T: Transport + ?Sized> Transport for alloc::boxed::Box<T> {
    fn status(&self) -> u8 {
        (**self).status()
    }

    fn set_status(&self, status: u8) {
        (**self).set_status(status)
    }

    fn device_features(&self) -> u64 {
        (**self).device_features()
    }

    fn set_driver_features(&self, features: u64) {
        (**self).set_driver_features(features)
    }

    fn queue_max_size(&self, queue: u16) -> u16 {
        (**self).queue_max_size(queue)
    }

    fn set_up_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) {
        (**self).set_up_queue(queue, size, addresses)
    }

    fn set_config_vector(&self, vector: u16) -> bool {
        (**self).set_config_vector(vector)
    }

    fn set_queue_vector(&self, queue: u16, vector: u16) -> bool {
        (**self).set_queue_vector(queue, vector)
    }

    fn notify(&self, queue: u16) {
        (**self).notify(queue)
    }

    fn acknowledge_interrupt(&self) -> u32 {
        (**self).acknowledge_interrupt()
    }

    fn config_generation(&self) -> u32 {
        (**self).config_generation()
    }

    fn read_config8(&self, offset: usize) -> u8 {
        (**self).read_config8(offset)
    }

    fn read_config16(&self, offset: usize) -> u16 {
        (**self).read_config16(offset)
    }
}
