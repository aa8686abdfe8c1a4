//! The intrusive doubly linked list: entries carry their own [`Link`], so
//! linking and unlinking never allocate and an entry can live anywhere
//! (a thread control block, or a waiting thread's own stack).
//!
//! An [`Adapter`] says where the [`Link`] sits inside an entry; declare
//! one with [`adapter!`](crate::adapter):
//!
//! ```
//! use core::ptr::NonNull;
//! use bravo_collections::list::{Link, List};
//!
//! struct Timer { deadline: u64, link: Link }
//! bravo_collections::adapter!(TimerAdapter = Timer { link: Link });
//!
//! let (early, late) = (Timer { deadline: 1, link: Link::new() }, Timer { deadline: 2, link: Link::new() });
//! let mut timers: List<TimerAdapter> = List::new();
//! // SAFETY: both are unlinked, and outlive the list (declared before it).
//! unsafe {
//!     timers.insert_sorted(NonNull::from(&late), |new, old| new.deadline < old.deadline);
//!     timers.insert_sorted(NonNull::from(&early), |new, old| new.deadline < old.deadline);
//! }
//! assert_eq!(timers.front().map(|t| t.deadline), Some(1));
//! assert_eq!(timers.pop_front(), Some(NonNull::from(&early)));
//! assert!(!early.link.is_linked() && late.link.is_linked());
//! ```
//!
//! The list holds raw pointers, so linking and removing are `unsafe`: the
//! caller promises (see [`List::push_back`]) that a linked entry stays
//! where it is, valid, until it is unlinked, and gives
//! [`List::remove`] only entries that are unlinked or in that list.
//! Within that: removing an unlinked entry is a no-op (it returns
//! `false`), linking a linked entry panics, dropping the list unlinks its
//! entries, and [`List::front`], [`List::iter`] and [`List::pop_front`]
//! are safe.
//!
//! An adapter is a byte offset, not a pair of functions, so declaring one
//! needs no unsafe code and the pointer arithmetic lives here only:
//! pointers to entries are derived from the pointers the caller handed in
//! (never from a reference to a [`Link`]), so they keep the provenance of
//! the whole entry; the links are [`Cell`]s, written through shared
//! access. Miri checks both (`just miri`).

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

/// The links an entry carries to be in a [`List`]: its neighbours and
/// whether it is linked. An entry is in at most one list per `Link`.
pub struct Link {
    prev: Cell<Option<NonNull<Link>>>,
    next: Cell<Option<NonNull<Link>>>,
    linked: Cell<bool>,
}

impl Link {
    /// An unlinked link.
    pub const fn new() -> Self {
        Self { prev: Cell::new(None), next: Cell::new(None), linked: Cell::new(false) }
    }

    /// Whether the entry is in a list. It changes only when the list that
    /// holds it is changed, so read it where that list is reachable (on
    /// the same thread, or under the lock that guards the list).
    pub fn is_linked(&self) -> bool {
        self.linked.get()
    }
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Link").field("linked", &self.is_linked()).finish()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // A linked entry that goes away leaves its list pointing at freed
        // memory; `push_back`'s contract forbids it, this catches it in tests.
        debug_assert!(!self.is_linked(), "an entry was dropped while still in a list");
    }
}

/// Where the [`Link`] sits inside an `Item`. Declare adapters with
/// [`adapter!`](crate::adapter), which computes the offset and checks the
/// field's type.
///
/// # Safety
///
/// `LINK_OFFSET` is the byte offset of a field of type [`Link`] inside
/// `Item`, so that an `Item` pointer advanced by it points to that link.
pub unsafe trait Adapter {
    /// The entries' type.
    type Item;
    /// The byte offset of the entries' [`Link`].
    const LINK_OFFSET: usize;
}

/// Declares a unit struct implementing [`list::Adapter`](crate::list::Adapter)
/// for a field of type [`Link`](crate::list::Link). It needs no unsafe
/// code where it is used:
///
/// ```
/// #![forbid(unsafe_code)]
/// use bravo_collections::list::Link;
/// struct Thread { id: u64, run_link: Link }
/// bravo_collections::adapter!(pub(crate) RunAdapter = Thread { run_link: Link });
/// ```
///
/// A field of another type does not compile:
///
/// ```compile_fail,E0308
/// use bravo_collections::list::Link;
/// struct Thread { id: u64, run_link: Link }
/// bravo_collections::adapter!(RunAdapter = Thread { id: Link });
/// ```
#[macro_export]
macro_rules! adapter {
    ($(#[$attr:meta])* $vis:vis $adapter:ident = $item:ty { $field:ident: Link }) => {
        $(#[$attr])*
        $vis struct $adapter;

        // SAFETY: `offset_of!` gives the offset of `$field` inside `$item`,
        // and `check` compiles only if that field is a `Link`.
        unsafe impl $crate::list::Adapter for $adapter {
            type Item = $item;
            const LINK_OFFSET: usize = {
                #[allow(dead_code)]
                fn check(item: &$item) -> &$crate::list::Link {
                    &item.$field
                }
                ::core::mem::offset_of!($item, $field)
            };
        }
    };
}

/// The link inside the entry `item` points to.
///
/// # Safety
///
/// `item` points to a live `A::Item`.
unsafe fn link_of<A: Adapter>(item: NonNull<A::Item>) -> NonNull<Link> {
    // SAFETY: the link is a field of the live entry (Adapter's contract),
    // so the result is inside the same allocation; the pointer keeps the
    // entry's provenance.
    unsafe { item.byte_add(A::LINK_OFFSET).cast() }
}

/// The entry `link` is embedded in: [`link_of`]'s inverse.
///
/// # Safety
///
/// `link` came from [`link_of`] of a live entry.
unsafe fn item_of<A: Adapter>(link: NonNull<Link>) -> NonNull<A::Item> {
    // SAFETY: `link` is `LINK_OFFSET` bytes into a live entry and carries
    // the provenance of the whole entry (it came from `link_of`).
    unsafe { link.byte_sub(A::LINK_OFFSET).cast() }
}

/// The links of a linked entry.
///
/// # Safety
///
/// `link` is the link of an entry that is live (or, in the list, linked).
unsafe fn cells<'a>(link: NonNull<Link>) -> &'a Link {
    // SAFETY: the entry is live (caller), and a `Link` is only `Cell`s, so
    // a shared reference to it never conflicts with the list's writes.
    unsafe { link.as_ref() }
}

/// A doubly linked list of entries that carry their own [`Link`]: oldest
/// (or smallest) first, with its length. It never allocates and does not
/// own its entries: dropping it unlinks them.
pub struct List<A: Adapter> {
    head: Option<NonNull<Link>>,
    tail: Option<NonNull<Link>>,
    len: usize,
    _adapter: PhantomData<fn() -> A>,
}

// SAFETY: the list itself touches only its entries' links, and
// `push_back`'s contract leaves a linked entry's link to whoever holds the
// list; so whoever holds the list may use it on any thread (for example a
// wait queue's list behind a spin lock). Entries reached through it are
// the caller's to use soundly (`pop_front` hands out raw pointers).
unsafe impl<A: Adapter> Send for List<A> {}

impl<A: Adapter> Default for List<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Adapter> fmt::Debug for List<A> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("List").field("len", &self.len).finish()
    }
}

impl<A: Adapter> List<A> {
    /// An empty list.
    pub const fn new() -> Self {
        Self { head: None, tail: None, len: 0, _adapter: PhantomData }
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The first entry, without unlinking it.
    pub fn front(&self) -> Option<&A::Item> {
        // SAFETY: linked entries are live and not mutably borrowed
        // (`push_back`'s contract) while the list is borrowed.
        self.head.map(|link| unsafe { item_of::<A>(link).as_ref() })
    }

    /// The entries, first to last.
    pub fn iter(&self) -> Iter<'_, A> {
        Iter { next: self.head, _list: PhantomData }
    }

    /// Links `item` at the end.
    ///
    /// # Safety
    ///
    /// `item` points to a live entry. Until it is unlinked (by
    /// [`pop_front`](Self::pop_front), [`remove`](Self::remove) or the
    /// list's drop) the entry is not moved, freed or mutably borrowed, and
    /// its link is read (with [`Link::is_linked`]) only where this list is
    /// reachable too (the same thread, or under the list's lock).
    ///
    /// # Panics
    ///
    /// If `item` is already linked (in any list, through this link).
    pub unsafe fn push_back(&mut self, item: NonNull<A::Item>) {
        // SAFETY: `item` is live (caller).
        let link = unsafe { link_of::<A>(item) };
        // SAFETY: as above.
        unsafe { self.link_before(link, None) };
    }

    /// Links `item` before the first entry `e` for which
    /// `goes_before(item, e)`, or at the end if there is none. With
    /// `goes_before` a strict "less than" on a list built this way, the
    /// list stays sorted and entries that compare equal keep the order
    /// they were inserted in (each goes after all its equals).
    ///
    /// # Safety
    ///
    /// As [`push_back`](Self::push_back).
    ///
    /// # Panics
    ///
    /// If `item` is already linked.
    pub unsafe fn insert_sorted(
        &mut self,
        item: NonNull<A::Item>,
        mut goes_before: impl FnMut(&A::Item, &A::Item) -> bool,
    ) {
        // SAFETY: `item` is live and not mutably borrowed (caller).
        let new = unsafe { item.as_ref() };
        let mut at = self.head;
        while let Some(link) = at {
            // SAFETY: linked entries are live and not mutably borrowed.
            if goes_before(new, unsafe { item_of::<A>(link).as_ref() }) {
                break;
            }
            // SAFETY: as above.
            at = unsafe { cells(link) }.next.get();
        }
        // SAFETY: `item` is live (caller).
        let link = unsafe { link_of::<A>(item) };
        // SAFETY: `at` is a linked entry of this list or None.
        unsafe { self.link_before(link, at) };
    }

    /// Unlinks the first entry and returns it.
    pub fn pop_front(&mut self) -> Option<NonNull<A::Item>> {
        let link = self.head?;
        // SAFETY: the head is a linked entry of this list, live until
        // unlinked; its pointer came from `link_of`.
        unsafe {
            self.unlink(link);
            Some(item_of::<A>(link))
        }
    }

    /// Unlinks `item` if it is linked; returns whether it was.
    ///
    /// # Safety
    ///
    /// `item` points to a live entry which, if it is linked, is linked in
    /// this list.
    pub unsafe fn remove(&mut self, item: NonNull<A::Item>) -> bool {
        // SAFETY: `item` is live (caller).
        let link = unsafe { link_of::<A>(item) };
        // SAFETY: as above.
        if !unsafe { cells(link) }.is_linked() {
            return false;
        }
        // SAFETY: linked, hence linked in this list (caller).
        unsafe { self.unlink(link) };
        true
    }

    /// Links `link` before `before` (at the end when `None`).
    ///
    /// # Safety
    ///
    /// `link` belongs to a live entry, which stays as `push_back` requires;
    /// `before` is a linked entry of this list.
    unsafe fn link_before(&mut self, link: NonNull<Link>, before: Option<NonNull<Link>>) {
        // SAFETY: the entry is live (caller).
        let new = unsafe { cells(link) };
        assert!(!new.is_linked(), "an entry was linked while already in a list");
        let prev = match before {
            // SAFETY: linked entries of this list are live.
            Some(next) => unsafe { cells(next) }.prev.replace(Some(link)),
            None => self.tail.replace(link),
        };
        match prev {
            // SAFETY: as above.
            Some(prev) => unsafe { cells(prev) }.next.set(Some(link)),
            None => self.head = Some(link),
        }
        new.prev.set(prev);
        new.next.set(before);
        new.linked.set(true);
        self.len += 1;
    }

    /// Unlinks `link`.
    ///
    /// # Safety
    ///
    /// `link` belongs to an entry linked in this list.
    unsafe fn unlink(&mut self, link: NonNull<Link>) {
        // SAFETY: linked entries of this list and their neighbours are live.
        let old = unsafe { cells(link) };
        let (prev, next) = (old.prev.get(), old.next.get());
        debug_assert!(prev.is_some() || self.head == Some(link), "unlinking an entry of another list");
        debug_assert!(next.is_some() || self.tail == Some(link), "unlinking an entry of another list");
        match prev {
            // SAFETY: as above.
            Some(prev) => unsafe { cells(prev) }.next.set(next),
            None => self.head = next,
        }
        match next {
            // SAFETY: as above.
            Some(next) => unsafe { cells(next) }.prev.set(prev),
            None => self.tail = prev,
        }
        old.prev.set(None);
        old.next.set(None);
        old.linked.set(false);
        self.len -= 1;
    }
}

impl<A: Adapter> Drop for List<A> {
    fn drop(&mut self) {
        while self.pop_front().is_some() {}
    }
}

/// The entries of a [`List`], first to last ([`List::iter`]).
pub struct Iter<'a, A: Adapter> {
    next: Option<NonNull<Link>>,
    _list: PhantomData<&'a List<A>>,
}

impl<'a, A: Adapter> Iterator for Iter<'a, A> {
    type Item = &'a A::Item;

    fn next(&mut self) -> Option<&'a A::Item> {
        let link = self.next?;
        // SAFETY: the list is borrowed for 'a, so its entries stay linked,
        // live and not mutably borrowed.
        unsafe {
            self.next = cells(link).next.get();
            Some(item_of::<A>(link).as_ref())
        }
    }
}

#[cfg(test)]
mod tests;
