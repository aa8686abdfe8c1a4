//! A bounded single-producer, single-consumer ring: one cpu pushes, one
//! cpu pops, no lock. The mailboxes between cpus are built from these.
//!
//! `head` and `tail` count pushes and pops since creation (wrapping), so
//! `tail - head` is the number of items and a full ring is told apart from
//! an empty one without a spare slot. They sit on separate cache lines so
//! that producer and consumer do not fight over one.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

#[repr(C, align(64))]
struct CacheLine<T>(T);

/// A ring of `N` slots of `T`; see the module documentation.
pub struct Ring<T, const N: usize> {
    /// Pushes so far (written by the producer).
    tail: CacheLine<AtomicUsize>,
    /// Pops so far (written by the consumer).
    head: CacheLine<AtomicUsize>,
    slots: [UnsafeCell<MaybeUninit<T>>; N],
}

// SAFETY: a slot is written only by the producer before it publishes it
// (tail, Release) and read only by the consumer after it sees it published
// (Acquire), which then hands it back (head, Release). Callers keep to one
// producer and one consumer at a time (see `push` and `pop`).
unsafe impl<T: Send, const N: usize> Sync for Ring<T, N> {}

impl<T, const N: usize> Default for Ring<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Ring<T, N> {
    /// An empty ring. `N` must be at least 1 (checked at compile time in
    /// a `const`, else on the first call).
    pub const fn new() -> Self {
        assert!(N > 0, "a ring needs at least one slot");
        Self {
            tail: CacheLine(AtomicUsize::new(0)),
            head: CacheLine(AtomicUsize::new(0)),
            slots: [const { UnsafeCell::new(MaybeUninit::uninit()) }; N],
        }
    }

    /// Adds `item`, or hands it back when the ring is full. Only one
    /// thread of execution may push at a time.
    pub fn push(&self, item: T) -> Result<(), T> {
        let tail = self.tail.0.load(Ordering::Relaxed);
        if tail.wrapping_sub(self.head.0.load(Ordering::Acquire)) == N {
            return Err(item);
        }
        // SAFETY: the slot is free (the consumer has popped it) and only
        // the single producer writes slots.
        unsafe { (*self.slots[tail % N].get()).write(item) };
        self.tail.0.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Takes the oldest item. Only one thread of execution may pop at a
    /// time.
    pub fn pop(&self) -> Option<T> {
        let head = self.head.0.load(Ordering::Relaxed);
        if head == self.tail.0.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: the producer published this slot; only the single
        // consumer reads it, once, before handing it back.
        let item = unsafe { (*self.slots[head % N].get()).assume_init_read() };
        self.head.0.store(head.wrapping_add(1), Ordering::Release);
        Some(item)
    }

    /// The number of items (a snapshot when the other side is active).
    pub fn len(&self) -> usize {
        self.tail.0.load(Ordering::Acquire).wrapping_sub(self.head.0.load(Ordering::Acquire))
    }

    /// Whether the ring holds no items (a snapshot, as [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T, const N: usize> Drop for Ring<T, N> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;
    use std::sync::Arc;

    #[test]
    fn items_come_out_in_order() {
        let ring: Ring<u32, 4> = Ring::new();
        assert!(ring.is_empty());
        for i in 0..3 {
            ring.push(i).unwrap();
        }
        assert_eq!(ring.len(), 3);
        assert_eq!((ring.pop(), ring.pop(), ring.pop(), ring.pop()), (Some(0), Some(1), Some(2), None));
    }

    #[test]
    fn a_full_ring_hands_the_item_back_and_uses_every_slot() {
        let ring: Ring<String, 3> = Ring::new();
        for i in 0..3 {
            ring.push(i.to_string()).unwrap();
        }
        assert_eq!(ring.push("late".into()), Err("late".to_string()));
        assert_eq!(ring.pop().as_deref(), Some("0"));
        ring.push("3".into()).unwrap();
        assert_eq!(ring.len(), 3);
    }

    #[test]
    fn indices_wrap_around_many_times() {
        let ring: Ring<usize, 5> = Ring::new();
        // Fewer rounds under Miri (which is ~1000x slower), still wrapping.
        let rounds = if cfg!(miri) { 50 } else { 10_000 };
        for i in 0..rounds {
            ring.push(i).unwrap();
            ring.push(i + 1).unwrap();
            assert_eq!(ring.pop(), Some(i));
            assert_eq!(ring.pop(), Some(i + 1));
        }
        assert!(ring.is_empty());
    }

    #[test]
    fn items_left_in_a_dropped_ring_are_dropped() {
        let item = Arc::new(());
        let ring: Ring<Arc<()>, 4> = Ring::new();
        ring.push(item.clone()).unwrap();
        ring.push(item.clone()).unwrap();
        drop(ring);
        assert_eq!(Arc::strong_count(&item), 1);
    }

    #[test]
    fn one_producer_and_one_consumer_thread_lose_nothing() {
        const ITEMS: u64 = if cfg!(miri) { 2_000 } else { 200_000 };
        let ring: Arc<Ring<u64, 64>> = Arc::new(Ring::new());
        let producer = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                for i in 0..ITEMS {
                    let mut item = i;
                    while let Err(back) = ring.push(item) {
                        item = back;
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let mut expected = 0;
        while expected < ITEMS {
            if let Some(item) = ring.pop() {
                assert_eq!(item, expected);
                expected += 1;
            }
        }
        producer.join().unwrap();
        assert!(ring.is_empty());
    }
}
