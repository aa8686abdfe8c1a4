//! A simulated 8254x for the unit tests: registers in a map, DMA memory
//! from the host heap (physical address = host address), and just enough
//! of the device's behaviour — reset, receive into the ring, transmit on a
//! tail write (legacy descriptors, and context + data descriptors with
//! TCP/UDP checksum insertion), missed-packet counting, interrupt cause —
//! to check the driver's ring logic from the device's side.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::regs::*;
use crate::ring::{RxDescriptor, TxDescriptor, CMD_DEXT, DTYP_DATA, POPTS_TXSM, STATUS_DD, STATUS_EOP};
use crate::{Dma, Hardware};

#[derive(Default)]
pub struct State {
    pub regs: HashMap<u32, u32>,
    /// Every register write, in order.
    pub writes: Vec<(u32, u32)>,
    /// Frames the device sent.
    pub sent: Vec<Vec<u8>>,
    /// While set, tail writes do not make the device send.
    pub tx_stalled: bool,
    /// The checksum context (TUCSS, TUCSO) of the last context descriptor.
    pub context: Option<(usize, usize)>,
    /// Context descriptors processed.
    pub contexts: usize,
}

#[derive(Clone, Default)]
pub struct Sim(pub Rc<RefCell<State>>);

pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

impl Sim {
    pub fn new() -> Self {
        let sim = Sim::default();
        {
            let mut s = sim.0.borrow_mut();
            s.regs.insert(RAL0, u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]]));
            s.regs.insert(RAH0, u32::from_le_bytes([MAC[4], MAC[5], 0, 0]));
            s.regs.insert(STATUS, STATUS_LU);
        }
        sim
    }

    pub fn reg(&self, register: u32) -> u32 {
        self.0.borrow().regs.get(&register).copied().unwrap_or(0)
    }

    /// How many times `register` was written.
    pub fn writes_to(&self, register: u32) -> usize {
        self.0.borrow().writes.iter().filter(|(r, _)| *r == register).count()
    }

    fn ring_len(&self, len_register: u32) -> u32 {
        self.reg(len_register) / 16
    }

    /// The device receives `frame` from the wire: into the buffer of the
    /// descriptor at the head, unless the driver gave it no buffer (then
    /// it is missed, as the real device counts it). `errors` marks it bad.
    pub fn deliver_with(&self, frame: &[u8], errors: u8) -> bool {
        let (head, tail, len) = (self.reg(RDH), self.reg(RDT), self.ring_len(RDLEN));
        if head == tail {
            *self.0.borrow_mut().regs.entry(MPC).or_default() += 1;
            return false;
        }
        let base = (self.reg(RDBAL) as u64 | (self.reg(RDBAH) as u64) << 32) as *mut RxDescriptor;
        // SAFETY: the driver gave the device this ring (phys = host address).
        unsafe {
            let d = base.add(head as usize);
            let mut descriptor = d.read_volatile();
            std::ptr::copy_nonoverlapping(frame.as_ptr(), descriptor.addr as *mut u8, frame.len());
            descriptor.length = frame.len() as u16;
            descriptor.status = STATUS_DD | STATUS_EOP;
            descriptor.errors = errors;
            d.write_volatile(descriptor);
        }
        let mut s = self.0.borrow_mut();
        s.regs.insert(RDH, (head + 1) % len);
        *s.regs.entry(ICR).or_default() |= INT_RXT0;
        true
    }

    pub fn deliver(&self, frame: &[u8]) -> bool {
        self.deliver_with(frame, 0)
    }

    /// The device sends everything between its head and the tail.
    pub fn run_tx(&self) {
        let (mut head, tail, len) = (self.reg(TDH), self.reg(TDT), self.ring_len(TDLEN));
        let base = (self.reg(TDBAL) as u64 | (self.reg(TDBAH) as u64) << 32) as *mut TxDescriptor;
        while head != tail {
            // SAFETY: as in deliver_with, for the transmit ring.
            let descriptor = unsafe {
                let d = base.add(head as usize);
                let mut descriptor = d.read_volatile();
                let done = TxDescriptor { status: descriptor.status | STATUS_DD, ..descriptor };
                d.write_volatile(done);
                descriptor.status = done.status;
                descriptor
            };
            head = (head + 1) % len;
            let extended = descriptor.cmd & CMD_DEXT != 0;
            if extended && descriptor.cso & 0xf0 != DTYP_DATA {
                // A context descriptor: TUCSS and TUCSO are bytes 4 and 5.
                let bytes = descriptor.addr.to_le_bytes();
                let mut s = self.0.borrow_mut();
                s.context = Some((bytes[4] as usize, bytes[5] as usize));
                s.contexts += 1;
                continue;
            }
            // SAFETY: the driver's buffer (phys = host address).
            let mut frame = unsafe {
                std::slice::from_raw_parts(descriptor.addr as *const u8, descriptor.length as usize).to_vec()
            };
            if extended && descriptor.css & POPTS_TXSM != 0 {
                let (start, offset) = self.0.borrow().context.expect("a checksum asked for before any context");
                insert_checksum(&mut frame, start, offset);
            }
            self.0.borrow_mut().sent.push(frame);
        }
        self.0.borrow_mut().regs.insert(TDH, head);
    }
}

/// What the device does for POPTS.TXSM: the ones' complement sum from
/// `start` to the end of the frame (the field at `offset` included, as the
/// driver seeded it), complemented, stored at `offset` (0 sent as 0xffff).
fn insert_checksum(frame: &mut [u8], start: usize, offset: usize) {
    let mut sum: u32 =
        frame[start..].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    frame[offset..offset + 2].copy_from_slice(&checksum.to_be_bytes());
}

impl Hardware for Sim {
    fn read(&self, register: u32) -> u32 {
        let mut s = self.0.borrow_mut();
        match register {
            // Clear on read.
            ICR | MPC => s.regs.remove(&register).unwrap_or(0),
            _ => s.regs.get(&register).copied().unwrap_or(0),
        }
    }

    fn write(&self, register: u32, value: u32) {
        {
            let mut s = self.0.borrow_mut();
            s.writes.push((register, value));
            // Reset completes at once.
            let value = if register == CTRL { value & !CTRL_RST } else { value };
            s.regs.insert(register, value);
        }
        if register == TDT && !self.0.borrow().tx_stalled {
            self.run_tx();
        }
    }

    fn alloc_dma(&self, size: usize) -> Option<Dma> {
        let layout = std::alloc::Layout::from_size_align(size, 4096).ok()?;
        // SAFETY: non-zero size; leaked on purpose (the driver keeps its DMA
        // memory for good).
        let virt = std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        Some(Dma { virt, phys: virt.as_ptr() as u64, size })
    }

    fn delay_us(&self, _micros: u64) {}
}
