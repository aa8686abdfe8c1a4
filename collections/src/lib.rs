//! # bravo-collections
//!
//! The containers Bravo's kernel builds its queues from, independent of any
//! kernel so they are tested on the host and under Miri:
//!
//! - [`list`]: the one intrusive doubly linked list (run queue, timers,
//!   wait queues). Entries carry their own [`list::Link`], so linking
//!   never allocates.
//! - [`spsc`]: a bounded lock-free ring with one producer and one
//!   consumer (the mailboxes between cpus).

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod list;
pub mod spsc;
