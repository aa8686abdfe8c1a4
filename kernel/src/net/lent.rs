//! Requests that borrow the caller's bytes: a read fills the caller's
//! buffer straight from the socket's, a write fills the socket's buffer
//! straight from the caller's bytes, with no `Vec` carrying them to and
//! from the stack's thread ([`call_on_lending`], [`call_on_lending_mut`]).
//!
//! A request's operation must be `Send + 'static` to reach the network
//! thread, so it cannot hold a borrow: it holds the caller's buffer as a
//! `Lent` or `LentMut` (raw pointer and length), made a slice again for
//! one run at a time. Why that is sound:
//!
//! - `call_on` returns only after the request has answered, and the
//!   request answers after the operation's final run (it returned `Ready`,
//!   or ran once more with `expired` set); it is then removed and never
//!   runs again. When `call_on` returns early (no network, no memory for
//!   the request), the operation has not run and never will. So every run
//!   happens while the lending function is still inside `call_on`, with
//!   the caller's borrow alive; the reply's lock orders the run's writes
//!   before the caller's next look at its buffer.
//! - The caller cannot leave `call_on` any other way: a panic aborts (no
//!   unwinding), and a sleeping thread is never killed.
//! - The slice lives for one run only: the operation receives it as an
//!   argument whose lifetime ends with the run (being `'static`, it cannot
//!   keep it), and neither `Lent` nor `LentMut` leaves this module. Runs
//!   of one request never overlap (one network thread runs them), and
//!   while `call_on` runs the caller's `&mut` (or `&`) borrow keeps every
//!   other user from writing (or, for `&mut`, reading) the buffer.
//! - Dropping the operation later (after `call_on` returned) drops a
//!   `Lent` or `LentMut`, which has no destructor: the buffer is not
//!   touched.

use core::ptr::NonNull;
use core::task::Poll;
use core::time::Duration;

use super::requests::call_on;
use super::sockets::SocketId;
use super::stack::Stack;
use super::NetError;

/// A caller's `&[u8]` lent to a request: valid while the caller is inside
/// `call_on` (see the module's doc).
struct Lent {
    start: NonNull<u8>,
    len: usize,
}

/// A caller's `&mut [u8]` lent to a request, likewise.
struct LentMut {
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: a borrow of plain bytes moved to the network thread while its
// owner waits; the bytes are touched only in the request's runs, one at a
// time (see the module's doc).
unsafe impl Send for Lent {}
// SAFETY: as for `Lent`.
unsafe impl Send for LentMut {}

impl Lent {
    /// The bytes, for one run of the request.
    fn bytes(&self) -> &[u8] {
        // SAFETY: the lender's `&[u8]` is alive while the request runs
        // (see the module's doc); the slice lives no longer than this
        // borrow of `self`, which the run ends.
        unsafe { core::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl LentMut {
    /// The buffer, for one run of the request.
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the lender's `&mut [u8]` is alive and unused while the
        // request runs (see the module's doc); `&mut self` makes this the
        // only slice made from it at a time.
        unsafe { core::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

/// [`call_on`] on stack `stack`, with `data` lent to each run of `op`: `op` reads the
/// caller's bytes where they are.
pub(super) fn call_on_lending<R, F>(
    stack: usize,
    socket: Option<SocketId>,
    timeout: Option<Duration>,
    data: &[u8],
    mut op: F,
) -> Result<R, NetError>
where
    R: Send + 'static,
    F: FnMut(&mut Stack, bool, &[u8]) -> Poll<Result<R, NetError>> + Send + 'static,
{
    let lent = Lent { start: NonNull::from(data).cast(), len: data.len() };
    call_on(stack, socket, timeout, move |s, expired| op(s, expired, lent.bytes()))
}

/// [`call_on`] on stack `stack`, with `buf` lent to each run of `op`: `op` fills the
/// caller's buffer where it is.
pub(super) fn call_on_lending_mut<R, F>(
    stack: usize,
    socket: Option<SocketId>,
    timeout: Option<Duration>,
    buf: &mut [u8],
    mut op: F,
) -> Result<R, NetError>
where
    R: Send + 'static,
    F: FnMut(&mut Stack, bool, &mut [u8]) -> Poll<Result<R, NetError>> + Send + 'static,
{
    let mut lent = LentMut { start: NonNull::from(&mut *buf).cast(), len: buf.len() };
    call_on(stack, socket, timeout, move |s, expired| op(s, expired, lent.bytes_mut()))
}
