//! Requests from any thread to a stack's thread: [`call`] and [`call_on`]
//! hand an operation to the stack (see `stack`) and sleep until it
//! answers. `lent` builds on them to lend the caller's buffers.

use alloc::sync::Arc;
use core::task::Poll;
use core::time::Duration;

use super::netcpus;
use super::sockets::SocketId;
use super::stack::{submit, Job, Request, Stack};
use super::NetError;
use crate::arch::tsc;
use crate::sync::WaitQueue;

/// The answer to one request, and the caller sleeping for it.
struct Reply<R> {
    value: spin::Mutex<Option<Result<R, NetError>>>,
    ready: WaitQueue,
}

/// Runs `op` on stack `index`'s thread until it returns `Ready` (retrying
/// it after each round), or until `timeout` passes (then `op` is called
/// once more with `expired = true` to clean up and answer). Returns only
/// after `op`'s last run, and `op` never runs after that: `lent` lends
/// the caller's buffers to requests on this promise.
pub fn call<R, F>(index: usize, timeout: Option<Duration>, op: F) -> Result<R, NetError>
where
    R: Send + 'static,
    F: FnMut(&mut Stack, bool) -> Poll<Result<R, NetError>> + Send + 'static,
{
    call_on(index, None, timeout, op)
}

/// Like [`call`], for an operation that waits on one socket: it is
/// retried only after rounds that changed that socket's set.
pub fn call_on<R, F>(
    index: usize,
    socket: Option<SocketId>,
    timeout: Option<Duration>,
    mut op: F,
) -> Result<R, NetError>
where
    R: Send + 'static,
    F: FnMut(&mut Stack, bool) -> Poll<Result<R, NetError>> + Send + 'static,
{
    if index >= netcpus::count() || !netcpus::control(index).running() {
        return Err(NetError::NoNetwork);
    }
    let reply = Arc::new(Reply { value: spin::Mutex::new(None), ready: WaitQueue::new() });
    let theirs = reply.clone();
    let job = move |stack: &mut Stack, expired| match op(stack, expired) {
        Poll::Ready(result) => {
            *theirs.value.lock() = Some(result);
            theirs.ready.notify_one();
            true
        }
        Poll::Pending if expired => {
            *theirs.value.lock() = Some(Err(NetError::TimedOut));
            theirs.ready.notify_one();
            true
        }
        Poll::Pending => false,
    };
    // The operation's closure holds what the caller sent (a write's
    // bytes): allocated fallibly, like them.
    let job: Job = crate::memory::try_box(job).map_err(|_| NetError::NoBufferSpace)?;
    let deadline = timeout.map(|t| tsc::now().saturating_add(crate::time::duration_to_ticks(t)));
    submit(index, Request { job, deadline, set: socket.map(SocketId::set) });
    reply.ready.wait_until(|| reply.value.lock().take())
}
