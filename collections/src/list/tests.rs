//! The list's specification, as host tests (also run under Miri).

use super::{Link, List};
use core::ptr::NonNull;
use std::collections::VecDeque;
use std::vec::Vec;

/// An entry like the kernel's: a key, a name to tell entries apart, and
/// two links (so it can be in two lists at once, like a thread in the run
/// queue and elsewhere).
struct Entry {
    key: u32,
    name: char,
    link: Link,
    other_link: Link,
}

crate::adapter!(ByLink = Entry { link: Link });
crate::adapter!(ByOtherLink = Entry { other_link: Link });

fn entry(name: char, key: u32) -> Entry {
    Entry { key, name, link: Link::new(), other_link: Link::new() }
}

fn at(e: &Entry) -> NonNull<Entry> {
    NonNull::from(e)
}

/// The entries' names, first to last.
fn names<A: super::Adapter<Item = Entry>>(list: &List<A>) -> Vec<char> {
    list.iter().map(|e| e.name).collect()
}

/// Pops every entry; returns the names in the order they came out.
fn drain(list: &mut List<ByLink>) -> Vec<char> {
    // SAFETY: the entries outlive the list in every test.
    core::iter::from_fn(|| list.pop_front().map(|e| unsafe { e.as_ref() }.name)).collect()
}

fn sooner(new: &Entry, old: &Entry) -> bool {
    new.key < old.key
}

#[test]
fn a_new_list_is_empty() {
    let mut list: List<ByLink> = List::new();
    assert!(list.is_empty());
    assert_eq!(list.len(), 0);
    assert!(list.front().is_none());
    assert_eq!(list.pop_front(), None);
}

#[test]
fn push_back_and_pop_front_are_first_in_first_out() {
    let (a, b, c) = (entry('a', 0), entry('b', 0), entry('c', 0));
    let mut list: List<ByLink> = List::new();
    // SAFETY: the entries are declared before the list, so they outlive
    // it (the list unlinks what is left when dropped); in every test below
    // "as above" means this.
    unsafe {
        list.push_back(at(&a));
        list.push_back(at(&b));
        list.push_back(at(&c));
    }
    assert_eq!(list.len(), 3);
    assert_eq!(list.front().map(|e| e.name), Some('a'));
    assert_eq!(list.pop_front(), Some(at(&a)));
    assert!(!a.link.is_linked());
    assert!(b.link.is_linked() && c.link.is_linked());
    assert_eq!(list.len(), 2);
    assert_eq!(drain(&mut list), ['b', 'c']);
    assert!(list.is_empty());
}

#[test]
fn insert_sorted_orders_by_key_and_keeps_equal_keys_in_insertion_order() {
    let entries =
        [entry('a', 5), entry('b', 1), entry('c', 5), entry('d', 3), entry('e', 1), entry('f', 9), entry('g', 5)];
    let mut list: List<ByLink> = List::new();
    for e in &entries {
        // SAFETY: as above.
        unsafe { list.insert_sorted(at(e), sooner) };
    }
    assert_eq!(names(&list), ['b', 'e', 'd', 'a', 'c', 'g', 'f']);
    assert_eq!(list.front().map(|e| e.key), Some(1));
    assert_eq!(list.len(), entries.len());
}

#[test]
fn remove_unlinks_from_head_middle_tail_and_an_only_entry() {
    let (a, b, c, d) = (entry('a', 0), entry('b', 0), entry('c', 0), entry('d', 0));
    let mut list: List<ByLink> = List::new();
    // SAFETY: as above.
    unsafe {
        for e in [&a, &b, &c, &d] {
            list.push_back(at(e));
        }
        assert!(list.remove(at(&b)), "middle");
        assert_eq!(names(&list), ['a', 'c', 'd']);
        assert!(list.remove(at(&a)), "head");
        assert_eq!(names(&list), ['c', 'd']);
        assert_eq!(list.front().map(|e| e.name), Some('c'));
        assert!(list.remove(at(&d)), "tail");
        assert_eq!(names(&list), ['c']);
        assert!(list.remove(at(&c)), "only");
    }
    assert!(list.is_empty() && list.front().is_none());
    assert_eq!(list.len(), 0);
    for e in [&a, &b, &c, &d] {
        assert!(!e.link.is_linked());
    }
    // The list is usable again after being emptied by removals (head and
    // tail were both reset).
    // SAFETY: as above.
    unsafe { list.push_back(at(&d)) };
    assert_eq!(drain(&mut list), ['d']);
}

#[test]
fn removing_an_unlinked_entry_changes_nothing() {
    let (a, b, loose) = (entry('a', 0), entry('b', 0), entry('x', 0));
    let mut list: List<ByLink> = List::new();
    // SAFETY: as above.
    unsafe {
        list.push_back(at(&a));
        list.push_back(at(&b));
        assert!(!list.remove(at(&loose)));
        assert!(list.remove(at(&a)));
        assert!(!list.remove(at(&a)), "a second removal is a no-op");
    }
    assert_eq!(list.len(), 1);
    assert_eq!(names(&list), ['b']);
}

#[test]
fn an_entry_can_be_linked_again_after_removal_or_pop() {
    let (a, b) = (entry('a', 2), entry('b', 1));
    let mut list: List<ByLink> = List::new();
    // SAFETY: as above.
    unsafe {
        list.push_back(at(&a));
        list.push_back(at(&b));
        assert!(list.remove(at(&a)));
        list.push_back(at(&a));
        assert_eq!(names(&list), ['b', 'a']);
        assert_eq!(list.pop_front(), Some(at(&b)));
        list.insert_sorted(at(&b), sooner);
        assert_eq!(names(&list), ['b', 'a']);
    }
    assert_eq!(list.len(), 2);
}

#[test]
fn an_entry_with_two_links_is_in_two_lists_independently() {
    let (a, b) = (entry('a', 0), entry('b', 0));
    let mut first: List<ByLink> = List::new();
    let mut second: List<ByOtherLink> = List::new();
    // SAFETY: as above.
    unsafe {
        first.push_back(at(&a));
        first.push_back(at(&b));
        second.push_back(at(&b));
        second.push_back(at(&a));
    }
    assert_eq!((names(&first), names(&second)), (vec!['a', 'b'], vec!['b', 'a']));
    // SAFETY: as above.
    assert!(unsafe { second.remove(at(&a)) });
    assert!(a.link.is_linked() && !a.other_link.is_linked());
    assert_eq!((names(&first), names(&second)), (vec!['a', 'b'], vec!['b']));
}

/// Like the wait queue: each waiter's entry lives in its own stack frame,
/// linked while the frame is live and unlinked before it returns.
#[test]
fn entries_on_the_stack_of_nested_calls() {
    fn wait(list: &mut List<ByLink>, depth: u32, seen: &mut Vec<Vec<char>>) {
        let me = entry(char::from(b'a' + depth as u8), depth);
        // SAFETY: `me` is removed below, before this frame ends.
        unsafe { list.push_back(at(&me)) };
        if depth < 4 {
            wait(list, depth + 1, seen);
        }
        seen.push(names(list));
        // SAFETY: `me` is live and, if linked, linked in `list`.
        assert!(unsafe { list.remove(at(&me)) });
        assert!(!me.link.is_linked());
    }
    let mut list: List<ByLink> = List::new();
    let mut seen = Vec::new();
    wait(&mut list, 0, &mut seen);
    assert!(list.is_empty());
    assert_eq!(
        seen,
        [vec!['a', 'b', 'c', 'd', 'e'], vec!['a', 'b', 'c', 'd'], vec!['a', 'b', 'c'], vec!['a', 'b'], vec!['a']]
    );
}

/// Like the run queue: entries in heap blocks, reached only through raw
/// pointers, and freed after they left the list.
#[test]
fn entries_on_the_heap_reached_through_raw_pointers() {
    let mut list: List<ByLink> = List::new();
    for (i, name) in ['a', 'b', 'c'].into_iter().enumerate() {
        let block = NonNull::from(Box::leak(Box::new(entry(name, i as u32))));
        // SAFETY: the block is freed only after it is popped below.
        unsafe { list.push_back(block) };
    }
    let mut order = Vec::new();
    while let Some(block) = list.pop_front() {
        // SAFETY: leaked above, unlinked now, freed once.
        let block = unsafe { Box::from_raw(block.as_ptr()) };
        order.push(block.name);
    }
    assert_eq!(order, ['a', 'b', 'c']);
}

#[test]
fn dropping_a_list_unlinks_its_entries() {
    let (a, b) = (entry('a', 0), entry('b', 0));
    {
        let mut list: List<ByLink> = List::new();
        // SAFETY: as above.
        unsafe {
            list.push_back(at(&a));
            list.push_back(at(&b));
        }
    }
    assert!(!a.link.is_linked() && !b.link.is_linked());
}

#[test]
#[should_panic(expected = "already in a list")]
fn linking_a_linked_entry_panics() {
    let a = entry('a', 0);
    let mut list: List<ByLink> = List::new();
    // SAFETY: as above; the second push panics before changing anything.
    unsafe {
        list.push_back(at(&a));
        list.push_back(at(&a));
    }
}

/// Like the wait queue: threads link entries on their own stacks into a
/// list behind a lock; a notifier pops them (reading each entry before it
/// releases the lock), and half of the waiters give up and remove
/// themselves. A waiter returns only once its entry is unlinked, checked
/// with `is_linked` under the lock. Every waiter leaves exactly once.
#[test]
fn a_locked_list_of_entries_on_waiting_threads_stacks() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    struct Waiter {
        id: usize,
        link: Link,
    }
    crate::adapter!(WaiterLink = Waiter { link: Link });

    const WAITERS: usize = if cfg!(miri) { 4 } else { 16 };
    let queue: Arc<Mutex<List<WaiterLink>>> = Arc::new(Mutex::new(List::new()));
    let gave_up = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..WAITERS)
        .map(|id| {
            let (queue, gave_up) = (queue.clone(), gave_up.clone());
            std::thread::spawn(move || {
                let me = Waiter { id, link: Link::new() };
                // SAFETY: `me` is unlinked before this thread returns (the
                // loop below ends only when it is), and its link is read
                // only under the lock.
                unsafe { queue.lock().unwrap().push_back(NonNull::from(&me)) };
                if id % 2 == 1 {
                    // SAFETY: `me` is live and linked, if at all, in `queue`.
                    if unsafe { queue.lock().unwrap().remove(NonNull::from(&me)) } {
                        gave_up.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Read under the lock, as the contract asks.
                while queue.lock().map(|_| me.link.is_linked()).unwrap() {
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    let mut woken = Vec::new();
    while woken.len() + gave_up.load(Ordering::Relaxed) < WAITERS {
        let mut list = queue.lock().unwrap();
        match list.pop_front() {
            // SAFETY: its waiter returns only once it sees the entry
            // unlinked, which it checks under the lock we still hold.
            Some(entry) => woken.push(unsafe { entry.as_ref() }.id),
            None => {
                drop(list);
                std::thread::yield_now();
            }
        }
    }
    for waiter in waiters {
        waiter.join().unwrap();
    }
    assert!(queue.lock().unwrap().is_empty());
    woken.sort();
    woken.dedup();
    assert_eq!(woken.len() + gave_up.load(Ordering::Relaxed), WAITERS, "each waiter left once: {woken:?}");
    assert!(
        (0..WAITERS).step_by(2).all(|id| woken.contains(&id)),
        "waiters that did not give up were woken: {woken:?}"
    );
}

/// A tiny xorshift generator: deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Random operations on a pool of entries, checked after each against a
/// `VecDeque` of entry indices. `sorted` picks insert_sorted (with few
/// distinct keys, so equal keys are common) instead of push_back. Phases
/// of mostly linking and mostly unlinking alternate, so the list goes
/// from empty to the whole pool and back (checked at the end).
fn matches_a_vecdeque_model(sorted: bool, seed: u64) {
    const POOL: usize = 16;
    // Miri interprets each step about 10^4 times slower: a few hundred
    // steps still reach every case (empty, full pool, equal keys).
    const STEPS: usize = if cfg!(miri) { 300 } else { 20_000 };
    let pool: Vec<Entry> = (0..POOL).map(|i| entry(char::from(b'a' + i as u8), (i % 4) as u32)).collect();
    let pool = &pool[..];
    let mut list: List<ByLink> = List::new();
    let mut model: VecDeque<usize> = VecDeque::new();
    let mut in_model = [false; POOL];
    let mut rng = XorShift(seed);
    let (mut emptied, mut filled) = (0, 0);
    for step in 0..STEPS {
        let growing = step / 64 % 2 == 0;
        let operation = match rng.below(8) {
            0..7 if growing => 0,
            0 => 0,
            r => 1 + r % 2,
        };
        let mut i = rng.below(POOL);
        if operation == 0 {
            // The next entry not linked yet, if any.
            i = (i..i + POOL).map(|j| j % POOL).find(|&j| !in_model[j]).unwrap_or(i);
        }
        match operation {
            0 if !in_model[i] => {
                in_model[i] = true;
                if sorted {
                    // SAFETY: `pool` outlives the list; `i` is unlinked.
                    unsafe { list.insert_sorted(at(&pool[i]), sooner) };
                    let key = pool[i].key;
                    let position = model.iter().position(|&j| key < pool[j].key).unwrap_or(model.len());
                    model.insert(position, i);
                } else {
                    // SAFETY: as above.
                    unsafe { list.push_back(at(&pool[i])) };
                    model.push_back(i);
                }
            }
            1 => {
                let expected = model.pop_front().inspect(|&j| in_model[j] = false);
                assert_eq!(list.pop_front(), expected.map(|j| at(&pool[j])));
            }
            _ => {
                let position = model.iter().position(|&j| j == i);
                // SAFETY: pool entries are linked only in `list`.
                assert_eq!(unsafe { list.remove(at(&pool[i])) }, position.is_some());
                if let Some(p) = position {
                    model.remove(p);
                    in_model[i] = false;
                }
            }
        }
        assert_eq!(list.len(), model.len());
        assert!(list.iter().map(|e| e as *const Entry).eq(model.iter().map(|&j| &pool[j] as *const Entry)));
        assert!(pool.iter().zip(in_model).all(|(e, linked)| e.link.is_linked() == linked));
        emptied += usize::from(step > 0 && model.is_empty());
        filled += usize::from(model.len() == POOL);
    }
    assert!(emptied > 1 && filled > 1, "the run covers an empty and a full list ({emptied}, {filled} times)");
}

#[test]
fn random_push_pop_remove_match_a_vecdeque() {
    matches_a_vecdeque_model(false, 0x9E37_79B9_7F4A_7C15);
}

#[test]
fn random_sorted_insert_pop_remove_match_a_sorted_vecdeque() {
    matches_a_vecdeque_model(true, 0x2545_F491_4F6C_DD1D);
}
