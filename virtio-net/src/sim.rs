//! A simulated virtio-net device for the unit tests: the MMIO register
//! window and the PCI common, notify, ISR and device-configuration windows
//! over one device state, DMA memory from the host heap (physical address
//! = host address), and just enough of a device's behaviour — reset,
//! feature negotiation, taking receive buffers from the available ring,
//! sending what the transmit queue holds when notified (completing
//! partial checksums), the used rings, notification and interrupt
//! suppression from its side — to check the driver from the device's side.
//! Each register access is checked for its width.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{fence, Ordering};

use crate::header::{NetHeader, HEADER_LEN, NEEDS_CSUM};
use crate::mmio::MAGIC;
use crate::queue::{need_event, AVAIL_F_NO_INTERRUPT, DESC_F_WRITE};
use crate::transport::{interrupt_status, status, NO_VECTOR};
use crate::{Dma, Features, Hardware, Registers};

pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// What the simulated device offers by default: everything the driver
/// knows, and merged receive buffers, which it must not take.
pub const OFFERED: u64 = Features::SUPPORTED | Features::MRG_RXBUF;

#[derive(Clone, Copy, Debug)]
pub struct SimQueue {
    pub max: u16,
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    pub msix_vector: u16,
    /// The next available entry the device takes.
    pub next_avail: u16,
    /// The used index the device published.
    pub used_idx: u16,
}

impl SimQueue {
    fn new(max: u16) -> Self {
        Self {
            max,
            size: max,
            ready: false,
            desc: 0,
            driver: 0,
            device: 0,
            msix_vector: NO_VECTOR,
            next_avail: 0,
            used_idx: 0,
        }
    }
}

pub struct State {
    pub magic: u32,
    pub version: u32,
    pub device_id: u32,
    pub offered: u64,
    pub accepted: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    /// The device clears FEATURES_OK whatever the driver accepted.
    pub refuse_features_ok: bool,
    /// A write of 0 does not reset the device.
    pub reset_stuck: bool,
    /// The device sets DEVICE_NEEDS_RESET when the driver sets DRIVER_OK.
    pub fails_at_driver_ok: bool,
    pub status: u8,
    pub status_writes: Vec<u8>,
    queue_sel: u16,
    pub queues: [SimQueue; 2],
    pub interrupt_status: u32,
    /// Used-buffer interrupts the device raised.
    pub interrupts_raised: usize,
    /// MAC, then the status field (link up).
    pub config: [u8; 8],
    pub config_generation: u32,
    /// A MAC the device switches to, with a new generation, right after the
    /// first read of a MAC byte.
    pub mac_change_during_read: Option<[u8; 6]>,
    pub notifications: [usize; 2],
    /// Frames the device sent (without the header), and their headers.
    pub sent: Vec<Vec<u8>>,
    pub sent_headers: Vec<NetHeader>,
    /// While set, transmit notifications do not make the device send.
    pub tx_stalled: bool,
    pub msix_config: u16,
    pub accept_msix: bool,
    /// DMA allocations that succeed, if limited.
    pub dma_budget: Option<usize>,
}

impl Default for State {
    fn default() -> Self {
        let mut config = [0; 8];
        config[..6].copy_from_slice(&MAC);
        config[6] = 1; // VIRTIO_NET_S_LINK_UP
        Self {
            magic: MAGIC,
            version: 2,
            device_id: 1,
            offered: OFFERED,
            accepted: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            refuse_features_ok: false,
            reset_stuck: false,
            fails_at_driver_ok: false,
            status: 0,
            status_writes: Vec::new(),
            queue_sel: 0,
            queues: [SimQueue::new(256), SimQueue::new(256)],
            interrupt_status: 0,
            interrupts_raised: 0,
            config,
            config_generation: 0,
            mac_change_during_read: None,
            notifications: [0; 2],
            sent: Vec::new(),
            sent_headers: Vec::new(),
            tx_stalled: false,
            msix_config: NO_VECTOR,
            accept_msix: true,
            dma_budget: None,
        }
    }
}

#[derive(Clone, Default)]
pub struct Sim(pub Rc<RefCell<State>>);

/// Which register window an access goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Mmio,
    Common,
    Notify,
    Isr,
    Device,
}

/// One window of the simulated device.
#[derive(Clone)]
pub struct SimWindow {
    sim: Sim,
    window: Window,
}

// SAFETY (for the helpers below): the simulated device reads and writes
// only addresses the driver gave it (queue parts and buffers in host memory,
// physical address = host address), which the driver keeps for its life.
fn read16(addr: u64) -> u16 {
    // SAFETY: see above.
    unsafe { (addr as *const u16).read_volatile() }
}

fn write16(addr: u64, value: u16) {
    // SAFETY: see above.
    unsafe { (addr as *mut u16).write_volatile(value) }
}

fn write32(addr: u64, value: u32) {
    // SAFETY: see above.
    unsafe { (addr as *mut u32).write_volatile(value) }
}

/// (addr, len, flags) of descriptor `id`.
fn descriptor(queue: &SimQueue, id: u16) -> (u64, u32, u16) {
    assert!(id < queue.size, "descriptor {id} outside a queue of {}", queue.size);
    let at = queue.desc + 16 * u64::from(id);
    // SAFETY: see above.
    unsafe { ((at as *const u64).read_volatile(), ((at + 8) as *const u32).read_volatile(), read16(at + 12)) }
}

impl Sim {
    pub fn new() -> Self {
        Sim::default()
    }

    pub fn with(configure: impl FnOnce(&mut State)) -> Self {
        let sim = Sim::new();
        configure(&mut sim.0.borrow_mut());
        sim
    }

    pub fn window(&self, window: Window) -> SimWindow {
        SimWindow { sim: self.clone(), window }
    }

    pub fn state(&self) -> std::cell::RefMut<'_, State> {
        self.0.borrow_mut()
    }

    fn event_idx(&self) -> bool {
        self.0.borrow().accepted & Features::RING_EVENT_IDX != 0
    }

    /// The device receives `frame` from the wire, with `header`, into the
    /// next available receive buffer (`used_len` overrides the length it
    /// reports). False when the driver gave it no buffer.
    pub fn deliver_with(&self, header: NetHeader, frame: &[u8], used_len: Option<u32>) -> bool {
        let mut s = self.0.borrow_mut();
        assert_eq!(
            s.status & (status::DRIVER_OK | status::FAILED),
            status::DRIVER_OK,
            "frames arrive once the driver is ready"
        );
        let q = s.queues[0];
        assert!(q.ready);
        if read16(q.driver + 2) == q.next_avail {
            return false;
        }
        fence(Ordering::Acquire);
        let id = read16(q.driver + 4 + 2 * u64::from(q.next_avail % q.size));
        let (addr, len, flags) = descriptor(&q, id);
        assert_ne!(flags & DESC_F_WRITE, 0, "receive buffers are device-writable");
        let total = HEADER_LEN + frame.len();
        assert!(total <= len as usize, "a {total}-byte frame does not fit a {len}-byte buffer");
        let mut bytes = [0; HEADER_LEN];
        header.write(&mut bytes);
        // SAFETY: see the helpers: the driver's buffer of `len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, HEADER_LEN);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), (addr as *mut u8).add(HEADER_LEN), frame.len());
        }
        s.queues[0].next_avail = q.next_avail.wrapping_add(1);
        drop(s);
        self.complete(0, &[(id, used_len.unwrap_or(total as u32))]);
        true
    }

    pub fn deliver(&self, frame: &[u8]) -> bool {
        self.deliver_with(NetHeader { num_buffers: 1, ..NetHeader::default() }, frame, None)
    }

    /// Puts `entries` in queue `index`'s used ring, asks to hear of new
    /// available entries (avail_event at what it took), and interrupts
    /// unless the driver suppressed it.
    fn complete(&self, index: usize, entries: &[(u16, u32)]) {
        let event_idx = self.event_idx();
        let mut s = self.0.borrow_mut();
        let q = s.queues[index];
        let mut used = q.used_idx;
        for &(id, len) in entries {
            let at = q.device + 4 + 8 * u64::from(used % q.size);
            write32(at, id.into());
            write32(at + 4, len);
            used = used.wrapping_add(1);
        }
        fence(Ordering::Release);
        write16(q.device + 2, used);
        if event_idx {
            write16(q.device + 4 + 8 * u64::from(q.size), q.next_avail);
        }
        fence(Ordering::SeqCst);
        s.queues[index].used_idx = used;
        let interrupt = if event_idx {
            need_event(read16(q.driver + 4 + 2 * u64::from(q.size)), used, q.used_idx)
        } else {
            read16(q.driver) & AVAIL_F_NO_INTERRUPT == 0
        };
        if interrupt && used != q.used_idx {
            s.interrupt_status |= interrupt_status::USED_BUFFER;
            s.interrupts_raised += 1;
        }
    }

    /// The device sends everything available in the transmit queue.
    pub fn run_tx(&self) {
        let mut entries = Vec::new();
        {
            let mut s = self.0.borrow_mut();
            let q = s.queues[1];
            let avail = read16(q.driver + 2);
            fence(Ordering::Acquire);
            let mut next = q.next_avail;
            while next != avail {
                let id = read16(q.driver + 4 + 2 * u64::from(next % q.size));
                let (addr, len, flags) = descriptor(&q, id);
                assert_eq!(flags & DESC_F_WRITE, 0, "transmit buffers are device-readable");
                // SAFETY: see the helpers: the driver's buffer of `len` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) }.to_vec();
                let header = NetHeader::read(bytes[..HEADER_LEN].try_into().unwrap());
                let mut frame = bytes[HEADER_LEN..].to_vec();
                if header.flags & NEEDS_CSUM != 0 {
                    insert_checksum(&mut frame, header.csum_start.into(), header.csum_offset.into());
                }
                s.sent.push(frame);
                s.sent_headers.push(header);
                entries.push((id, 0));
                next = next.wrapping_add(1);
            }
            s.queues[1].next_avail = next;
        }
        self.complete(1, &entries);
    }

    /// The device's avail_event for queue `index` (RING_EVENT_IDX).
    pub fn set_avail_event(&self, index: usize, value: u16) {
        let q = self.0.borrow().queues[index];
        write16(q.device + 4 + 8 * u64::from(q.size), value);
    }

    /// The used ring's flags of queue `index` (VIRTQ_USED_F_NO_NOTIFY).
    pub fn set_used_flags(&self, index: usize, flags: u16) {
        let q = self.0.borrow().queues[index];
        write16(q.device, flags);
    }

    /// The link goes up or down: a configuration change.
    pub fn set_link(&self, up: bool) {
        let mut s = self.0.borrow_mut();
        s.config[6] = up.into();
        s.config_generation += 1;
        s.interrupt_status |= interrupt_status::CONFIG_CHANGE;
    }

    fn reset(s: &mut State) {
        s.status = 0;
        s.accepted = 0;
        s.interrupt_status = 0;
        s.msix_config = NO_VECTOR;
        s.queues = s.queues.map(|q| SimQueue::new(q.max));
    }

    fn write_status(s: &mut State, value: u8) {
        s.status_writes.push(value);
        if value == 0 {
            if !s.reset_stuck {
                Self::reset(s);
            }
            return;
        }
        let mut value = value;
        if value & status::FEATURES_OK != 0 && s.status & status::FEATURES_OK == 0 {
            let known = s.accepted & !s.offered == 0 && s.accepted & Features::VERSION_1 != 0;
            if s.refuse_features_ok || !known {
                value &= !status::FEATURES_OK;
            }
        }
        if value & status::DRIVER_OK != 0 && s.fails_at_driver_ok {
            value |= status::DEVICE_NEEDS_RESET;
        }
        s.status = value;
    }

    fn notify(&self, queue: u32) {
        let (stalled, ready) = {
            let mut s = self.0.borrow_mut();
            assert_ne!(s.status & status::DRIVER_OK, 0, "no notification before DRIVER_OK");
            s.notifications[queue as usize] += 1;
            (s.tx_stalled, s.queues[queue as usize].ready)
        };
        assert!(ready, "queue {queue} notified before it was enabled");
        if queue == 1 && !stalled {
            self.run_tx();
        }
    }

    fn read_config(&self, offset: usize, width: usize) -> u32 {
        let mut s = self.0.borrow_mut();
        assert!(offset + width <= s.config.len(), "config read at {offset} of {width} bytes");
        assert!(width == 1 || offset == 6, "the MAC is read by bytes, the status as le16");
        let value = match width {
            1 => s.config[offset].into(),
            _ => u16::from_le_bytes([s.config[offset], s.config[offset + 1]]).into(),
        };
        if offset < 6 {
            if let Some(mac) = s.mac_change_during_read.take() {
                s.config[..6].copy_from_slice(&mac);
                s.config_generation += 1;
            }
        }
        value
    }

    fn queue(s: &mut State) -> Option<&mut SimQueue> {
        s.queues.get_mut(usize::from(s.queue_sel))
    }

    fn read_mmio(&self, offset: usize, width: usize) -> u32 {
        if offset >= 0x100 {
            return self.read_config(offset - 0x100, width);
        }
        assert_eq!(width, 4, "MMIO register {offset:#x} read with {width} bytes");
        let mut s = self.0.borrow_mut();
        match offset {
            0x000 => s.magic,
            0x004 => s.version,
            0x008 => s.device_id,
            0x010 => (s.offered >> (32 * s.device_features_sel)) as u32,
            0x034 => Self::queue(&mut s).map_or(0, |q| q.max.into()),
            0x044 => Self::queue(&mut s).map_or(0, |q| q.ready.into()),
            0x060 => s.interrupt_status,
            0x070 => s.status.into(),
            0x0fc => s.config_generation,
            _ => panic!("MMIO register {offset:#x} is not readable"),
        }
    }

    fn write_mmio(&self, offset: usize, width: usize, value: u32) {
        assert_eq!(width, 4, "MMIO register {offset:#x} written with {width} bytes");
        if offset == 0x050 {
            return self.notify(value);
        }
        let mut s = self.0.borrow_mut();
        let high = |old: u64| old & 0xffff_ffff | u64::from(value) << 32;
        let low = |old: u64| old & !0xffff_ffff | u64::from(value);
        match offset {
            0x014 => s.device_features_sel = value,
            0x020 => {
                let shift = 32 * s.driver_features_sel;
                s.accepted = s.accepted & !(0xffff_ffff << shift) | u64::from(value) << shift;
            }
            0x024 => s.driver_features_sel = value,
            0x030 => s.queue_sel = value as u16,
            0x038 => Self::queue(&mut s).expect("a queue selected").size = value as u16,
            0x044 => Self::queue(&mut s).expect("a queue selected").ready = value == 1,
            0x064 => s.interrupt_status &= !value,
            0x070 => Self::write_status(&mut s, value as u8),
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 => {
                let q = Self::queue(&mut s).expect("a queue selected");
                assert!(!q.ready, "queue addresses change only while the queue is disabled");
                let field = match offset & !0xf {
                    0x080 => &mut q.desc,
                    0x090 => &mut q.driver,
                    _ => &mut q.device,
                };
                *field = if offset & 4 == 0 { low(*field) } else { high(*field) };
            }
            _ => panic!("MMIO register {offset:#x} is not writable"),
        }
    }

    fn read_common(&self, offset: usize, width: usize) -> u32 {
        let mut s = self.0.borrow_mut();
        let expected = match offset {
            0x14 | 0x15 => 1,
            0x10..=0x1f => 2,
            _ => 4,
        };
        assert_eq!(width, expected, "common cfg field {offset:#x} read with {width} bytes");
        match offset {
            0x04 => (s.offered >> (32 * s.device_features_sel)) as u32,
            0x10 => s.msix_config.into(),
            0x12 => s.queues.len() as u32,
            0x14 => s.status.into(),
            0x15 => s.config_generation & 0xff,
            0x18 => Self::queue(&mut s).map_or(0, |q| q.size.into()),
            0x1a => Self::queue(&mut s).map_or(NO_VECTOR, |q| q.msix_vector).into(),
            0x1c => Self::queue(&mut s).map_or(0, |q| q.ready.into()),
            0x1e => s.queue_sel.into(),
            _ => panic!("common cfg field {offset:#x} is not readable"),
        }
    }

    fn write_common(&self, offset: usize, width: usize, value: u32) {
        let mut s = self.0.borrow_mut();
        let expected = match offset {
            0x14 => 1,
            0x10..=0x1f => 2,
            _ => 4,
        };
        assert_eq!(width, expected, "common cfg field {offset:#x} written with {width} bytes");
        let vector = |s: &State| if s.accept_msix { value as u16 } else { NO_VECTOR };
        match offset {
            0x00 => s.device_features_sel = value,
            0x08 => s.driver_features_sel = value,
            0x0c => {
                let shift = 32 * s.driver_features_sel;
                s.accepted = s.accepted & !(0xffff_ffff << shift) | u64::from(value) << shift;
            }
            0x10 => s.msix_config = vector(&s),
            0x14 => Self::write_status(&mut s, value as u8),
            0x16 => s.queue_sel = value as u16,
            0x18 => {
                let q = Self::queue(&mut s).expect("a queue selected");
                assert!(value as u16 <= q.max);
                q.size = value as u16;
            }
            0x1a => {
                let v = vector(&s);
                Self::queue(&mut s).expect("a queue selected").msix_vector = v;
            }
            0x1c => Self::queue(&mut s).expect("a queue selected").ready = value == 1,
            0x20..=0x37 => {
                let q = Self::queue(&mut s).expect("a queue selected");
                assert!(!q.ready, "queue addresses change only while the queue is disabled");
                let field = match offset & !7 {
                    0x20 => &mut q.desc,
                    0x28 => &mut q.driver,
                    _ => &mut q.device,
                };
                let shift = 8 * (offset & 4);
                *field = *field & !(0xffff_ffff << shift) | u64::from(value) << shift;
            }
            _ => panic!("common cfg field {offset:#x} is not writable"),
        }
    }

    fn read(&self, window: Window, offset: usize, width: usize) -> u32 {
        match window {
            Window::Mmio => self.read_mmio(offset, width),
            Window::Common => self.read_common(offset, width),
            Window::Isr => {
                assert_eq!((offset, width), (0, 1));
                std::mem::take(&mut self.0.borrow_mut().interrupt_status)
            }
            Window::Device => self.read_config(offset, width),
            Window::Notify => panic!("the notify region is write-only"),
        }
    }

    fn write(&self, window: Window, offset: usize, width: usize, value: u32) {
        match window {
            Window::Mmio => self.write_mmio(offset, width, value),
            Window::Common => self.write_common(offset, width, value),
            Window::Notify => {
                assert_eq!(width, 2, "notifications are 16-bit writes");
                assert_eq!(offset, value as usize * NOTIFY_OFF_MULTIPLIER as usize, "queue {value}'s doorbell");
                self.notify(value)
            }
            Window::Isr | Window::Device => panic!("{window:?} is read-only"),
        }
    }
}

/// What the device does for NEEDS_CSUM: the ones' complement sum from
/// `start` to the end of the frame (the field included, as the driver
/// seeded it), complemented, stored at `start + offset`.
fn insert_checksum(frame: &mut [u8], start: usize, offset: usize) {
    let mut sum: u32 =
        frame[start..].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[start + offset..start + offset + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

impl Registers for SimWindow {
    fn read8(&self, offset: usize) -> u8 {
        self.sim.read(self.window, offset, 1) as u8
    }

    fn read16(&self, offset: usize) -> u16 {
        self.sim.read(self.window, offset, 2) as u16
    }

    fn read32(&self, offset: usize) -> u32 {
        self.sim.read(self.window, offset, 4)
    }

    fn write8(&self, offset: usize, value: u8) {
        self.sim.write(self.window, offset, 1, value.into())
    }

    fn write16(&self, offset: usize, value: u16) {
        self.sim.write(self.window, offset, 2, value.into())
    }

    fn write32(&self, offset: usize, value: u32) {
        self.sim.write(self.window, offset, 4, value)
    }
}

impl Hardware for Sim {
    fn alloc_dma(&self, size: usize) -> Option<Dma> {
        if let Some(budget) = &mut self.0.borrow_mut().dma_budget {
            *budget = budget.checked_sub(1)?;
        }
        let layout = std::alloc::Layout::from_size_align(size, 4096).ok()?;
        // SAFETY: non-zero size; leaked on purpose (the driver keeps its DMA
        // memory for good).
        let virt = std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        Some(Dma { virt, phys: virt.as_ptr() as u64, size })
    }
}
