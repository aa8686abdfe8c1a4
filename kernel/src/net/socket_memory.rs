//! The memory behind TCP sockets: each socket's receive and send buffers
//! are lazily committed ranges ([`memory::lazy::Buffer`]), so a socket
//! costs the pages its data has touched, not its full 2 x 64 KiB: a
//! listening socket or a connection in its handshake costs none, an idle
//! keep-alive connection the first page of its receive buffer (smoltcp
//! writes an empty ring from its start).
//!
//! Send buffers that stay empty (everything sent was acknowledged) give
//! their pages back at the next [`SocketMemory::sweep`]. Receive buffers
//! keep theirs: smoltcp may hold out-of-order data past the end of what
//! it has queued, where an empty queue cannot show it.
//!
//! Only the network cpu touches these buffers (smoltcp runs there, and
//! reads and writes copy there), which is what giving pages back without
//! telling other cpus needs.

use alloc::collections::BTreeMap;

use smoltcp::socket::tcp;

use super::sockets::{SocketId, Sockets};
use super::NetError;
use crate::memory::lazy::Buffer;

/// One socket's buffers.
struct Buffers {
    rx: Buffer,
    tx: Buffer,
    /// The send buffer was empty at the last sweep.
    tx_was_empty: bool,
}

/// The buffers of every TCP socket in the stack's set, by handle.
pub struct SocketMemory {
    by_socket: BTreeMap<SocketId, Buffers>,
}

/// A TCP socket and the memory it borrows: the socket must be dropped
/// before the memory, which [`SocketMemory`] ensures once both are given
/// to it with [`SocketMemory::keep`].
pub struct NewSocket {
    pub socket: tcp::Socket<'static>,
    buffers: Buffers,
}

impl NewSocket {
    /// A socket with `len`-byte buffers; `NoBufferSpace` when there is no
    /// memory for their page tables.
    pub fn new(len: usize) -> Result<NewSocket, NetError> {
        let mut rx = Buffer::new(len).ok_or(NetError::NoBufferSpace)?;
        let mut tx = Buffer::new(len).ok_or(NetError::NoBufferSpace)?;
        // SAFETY: each buffer hands out this one slice. The socket that
        // holds them is dropped before the buffers: both stay in this
        // `NewSocket` until `SocketMemory::keep` stores the buffers and
        // the stack's set the socket, and `SocketMemory::release` drops
        // the buffers only after the set has removed (and dropped) the
        // socket.
        let (rx_bytes, tx_bytes) = unsafe { (rx.as_static_mut(), tx.as_static_mut()) };
        let socket = tcp::Socket::new(tcp::SocketBuffer::new(rx_bytes), tcp::SocketBuffer::new(tx_bytes));
        Ok(NewSocket { socket, buffers: Buffers { rx, tx, tx_was_empty: false } })
    }
}

impl SocketMemory {
    pub const fn new() -> Self {
        SocketMemory { by_socket: BTreeMap::new() }
    }

    /// Adds `new`'s socket to `sockets` with `add` and keeps its buffers.
    pub fn keep(
        &mut self,
        new: NewSocket,
        add: impl FnOnce(tcp::Socket<'static>) -> Result<SocketId, NetError>,
    ) -> Result<SocketId, NetError> {
        let NewSocket { socket, buffers } = new;
        // On failure `add` drops the socket, then `buffers` drops here.
        let handle = add(socket)?;
        self.by_socket.insert(handle, buffers);
        Ok(handle)
    }

    /// Frees the buffers of `handle`'s socket, which the caller has just
    /// removed from the set and dropped (a no-op for other sockets).
    pub fn release(&mut self, handle: SocketId) {
        self.by_socket.remove(&handle);
    }

    /// Gives back the pages of send buffers empty since the last sweep.
    /// Returns the bytes given back.
    pub fn sweep(&mut self, sockets: &Sockets) -> usize {
        let mut freed = 0;
        for (&handle, buffers) in self.by_socket.iter_mut() {
            let empty = sockets.get::<tcp::Socket>(handle).send_queue() == 0;
            if empty && buffers.tx_was_empty && buffers.tx.committed_bytes() > 0 {
                // SAFETY: the send buffer is empty (smoltcp keeps nothing
                // past its queue there: sent data stays queued until
                // acknowledged), and only this, the network cpu, touches
                // socket buffers.
                freed += unsafe { buffers.tx.decommit() };
            }
            buffers.tx_was_empty = empty;
        }
        freed
    }

    /// Bytes committed in the receive and send buffers of every socket.
    pub fn committed_bytes(&self) -> usize {
        self.by_socket.values().map(|b| b.rx.committed_bytes() + b.tx.committed_bytes()).sum()
    }
}
