//! Messages between cpus.
//!
//! Each cpu has one [`Mailbox`]: a single-producer, single-consumer ring
//! per sending cpu (made by the sender on first use, in memory of the
//! receiver's node), and a bitmap of senders with something pending, so a
//! receiver looks only at rings that have messages. No lock is shared by
//! all cpus. When a ring is full the message goes to the receiver's
//! overflow list (its own lock); messages are independent, so order
//! across the two does not matter. A sender interrupts the receiver (an
//! IPI) only when the receiver is halted (the scheduler owns sending:
//! `scheduler::send` finds the receiver's mailbox and its halted flag).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::thread::ThreadRef;
use crate::arch::irq::IrqGuard;
use crate::arch::percpu::{self, CpuTable};
use crate::topology::MAX_CPUS;

/// What one cpu asks of another.
pub(crate) enum Message {
    /// Make a parked thread of the receiver runnable.
    Wake(ThreadRef),
    /// Create a thread running `entry` on the receiver and reply with its
    /// id (0 when memory is exhausted).
    Spawn { entry: Box<dyn FnOnce() + Send>, requester: ThreadRef },
    /// Store `value` in the requester's reply slot and wake it.
    Reply { requester: ThreadRef, value: u64 },
    /// Reply at once (measures a round trip).
    Ping { requester: ThreadRef },
    /// Run this in the receiver's scheduler loop (it must not block).
    Run(Box<dyn FnOnce() + Send>),
}

const RING_SLOTS: usize = 64;

/// The ring from one sending cpu: its producer is that cpu with interrupts
/// off, its consumer the receiving cpu's scheduler loop.
type Ring = bravo_collections::spsc::Ring<Message, RING_SLOTS>;

const WORDS: usize = MAX_CPUS / 64;

/// One cpu's incoming messages: a ring per sending cpu and an overflow
/// list.
pub(crate) struct Mailbox {
    node: usize,
    /// The ring from each sending cpu, indexed by the sender.
    rings: CpuTable<Ring>,
    /// Bit `s` set: sender `s`'s ring may hold messages.
    pending: [AtomicU64; WORDS],
    overflow: spin::Mutex<VecDeque<Message>>,
    overflowed: AtomicBool,
}

impl Mailbox {
    /// An empty mailbox whose rings will live in memory of `node`.
    pub fn new(node: usize) -> Self {
        Self {
            node,
            rings: CpuTable::new(),
            pending: [const { AtomicU64::new(0) }; WORDS],
            overflow: spin::Mutex::new(VecDeque::new()),
            overflowed: AtomicBool::new(false),
        }
    }

    /// The ring from cpu `src`, made on first use (only `src` makes it).
    fn ring_from(&self, src: usize) -> Option<&'static Ring> {
        match self.rings.get(src) {
            Some(ring) => Some(ring),
            None => Some(self.rings.publish(src, crate::memory::leak_in(self.node, Ring::new())?)),
        }
    }

    /// Queues `message` from this cpu (interrupts off, so that this cpu is
    /// the ring's only producer).
    pub fn push(&self, _interrupts_off: &IrqGuard, message: Message) {
        let src = percpu::cpu_id();
        let message = match self.ring_from(src) {
            Some(ring) => match ring.push(message) {
                Ok(()) => {
                    self.pending[src / 64].fetch_or(1 << (src % 64), Ordering::SeqCst);
                    return;
                }
                Err(message) => message,
            },
            None => message,
        };
        self.overflow.lock().push_back(message);
        self.overflowed.store(true, Ordering::SeqCst);
    }

    /// Whether anything waits to be received.
    pub fn has_pending(&self) -> bool {
        self.overflowed.load(Ordering::SeqCst) || self.pending.iter().any(|w| w.load(Ordering::SeqCst) != 0)
    }

    /// Hands every waiting message to `handle` (on the receiving cpu, with
    /// interrupts off). Returns how many there were.
    pub fn drain(&self, mut handle: impl FnMut(Message)) -> usize {
        let mut count = 0;
        for (word, bits) in self.pending.iter().enumerate() {
            // Look before swapping: the scheduler loop drains on every pass,
            // and a locked swap of a line other cpus write is not free.
            if bits.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = bits.swap(0, Ordering::SeqCst);
            while bits != 0 {
                let src = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let Some(ring) = self.rings.get(src) else { continue };
                while let Some(message) = ring.pop() {
                    handle(message);
                    count += 1;
                }
            }
        }
        if self.overflowed.swap(false, Ordering::SeqCst) {
            while let Some(message) = self.overflow.lock().pop_front() {
                handle(message);
                count += 1;
            }
        }
        count
    }
}
