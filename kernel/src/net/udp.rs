//! UDP for applications: [`UdpSocket`], bound to a port, sending and
//! receiving datagrams from any cpu. Datagrams all arrive on the NIC's
//! queue 0, so UDP sockets live on the home stack, where each call runs
//! (see `netcpus`).
//! [`Datagrams`] carries many datagrams through one call each way
//! ([`UdpSocket::recv_batch`], [`UdpSocket::send_batch`]): one request
//! per batch instead of per datagram.

use alloc::vec::Vec;
use core::net::SocketAddrV4;
use core::task::Poll;
use core::time::Duration;

use smoltcp::socket::udp;

use super::lent::{call_on_lending, call_on_lending_mut};
use super::netcpus::{self, HOME};
use super::requests;
use super::sockets::SocketId;
use super::{buffer, socket_addr, NetError};

/// Datagrams and bytes each socket buffers per direction.
const PACKETS: usize = 256;
const BYTES: usize = 256 * 1024;

/// A batch of datagrams, each with its peer (sender or destination), in
/// one buffer.
#[derive(Default)]
pub struct Datagrams {
    bytes: Vec<u8>,
    /// (end offset in `bytes`, peer) per datagram.
    ends: Vec<(usize, SocketAddrV4)>,
}

impl Datagrams {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a datagram for (or from) `peer`.
    pub fn push(&mut self, data: &[u8], peer: SocketAddrV4) {
        self.bytes.extend_from_slice(data);
        self.ends.push((self.bytes.len(), peer));
    }

    /// The number of datagrams.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no datagram.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The datagrams in order, with their peers.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddrV4)> {
        let starts = core::iter::once(0).chain(self.ends.iter().map(|&(end, _)| end));
        starts.zip(&self.ends).map(|(start, &(end, peer))| (&self.bytes[start..end], peer))
    }
}

/// A UDP socket bound to a port: datagrams to and from any peer.
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() -> Result<(), bravo::net::NetError> {
/// use bravo::net::UdpSocket;
///
/// // A UDP echo on port 7.
/// let socket = UdpSocket::bind(7)?;
/// let mut buf = [0u8; 1500];
/// loop {
///     let (n, peer) = socket.recv_from(&mut buf)?;
///     socket.send_to(&buf[..n], peer)?;
/// }
/// # }
/// ```
///
/// Many datagrams at a time, one request per batch:
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() -> Result<(), bravo::net::NetError> {
/// use bravo::net::{Datagrams, UdpSocket};
///
/// let socket = UdpSocket::bind(7)?;
/// let mut batch = Datagrams::new();
/// loop {
///     batch = socket.recv_batch(batch, 64)?; // sleeps until one arrives
///     batch = socket.send_batch(batch)?; // each back to its sender
///     batch.clear();
/// }
/// # }
/// ```
pub struct UdpSocket {
    handle: SocketId,
    port: u16,
    read_timeout: Option<Duration>,
}

fn packets() -> Result<udp::PacketBuffer<'static>, NetError> {
    let mut metadata = Vec::new();
    metadata.try_reserve_exact(PACKETS).map_err(|_| NetError::NoBufferSpace)?;
    metadata.resize(PACKETS, udp::PacketMetadata::EMPTY);
    Ok(udp::PacketBuffer::new(metadata, buffer(BYTES)?))
}

impl UdpSocket {
    /// A socket bound to `port` on every address of the interface.
    pub fn bind(port: u16) -> Result<UdpSocket, NetError> {
        if port == 0 {
            return Err(NetError::InvalidInput);
        }
        let handle = requests::call(HOME, None, move |stack, _| {
            if stack.udp_ports.contains(&port) {
                return Poll::Ready(Err(NetError::AddrInUse));
            }
            let (rx, tx) = match (packets(), packets()) {
                (Ok(rx), Ok(tx)) => (rx, tx),
                _ => return Poll::Ready(Err(NetError::NoBufferSpace)),
            };
            let mut socket = udp::Socket::new(rx, tx);
            if socket.bind(port).is_err() {
                return Poll::Ready(Err(NetError::InvalidInput));
            }
            if stack.udp_ports.try_reserve(1).is_err() {
                return Poll::Ready(Err(NetError::NoBufferSpace));
            }
            // Datagrams all go to set 0 (see `sockets`).
            let handle = stack.add_socket(0, socket);
            if handle.is_ok() {
                stack.udp_ports.push(port);
            }
            Poll::Ready(handle)
        })?;
        Ok(UdpSocket { handle, port, read_timeout: None })
    }

    /// The port it is bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cpu whose network stack holds the socket (the home stack's: the
    /// NIC delivers every datagram to its queue 0): a thread using the
    /// socket there makes no cross-cpu hop per call.
    pub fn cpu(&self) -> usize {
        netcpus::control(HOME).cpu()
    }

    /// Makes [`recv_from`](Self::recv_from) and
    /// [`recv_batch`](Self::recv_batch) give up with `TimedOut` after
    /// `timeout` (None: wait for good, the default).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Sends one datagram to `peer` (sleeping while the send buffer is
    /// full); its bytes go straight from `data` into the socket's buffer
    /// (see `lent`).
    pub fn send_to(&self, data: &[u8], peer: SocketAddrV4) -> Result<usize, NetError> {
        if data.len() > BYTES {
            return Err(NetError::NoBufferSpace);
        }
        let h = self.handle;
        call_on_lending(HOME, Some(h), Some(Duration::from_secs(5)), data, move |stack, _, data| {
            let socket = stack.sockets.get_mut::<udp::Socket>(h);
            match socket.send_slice(data, (*peer.ip(), peer.port())) {
                Ok(()) => Poll::Ready(Ok(data.len())),
                Err(udp::SendError::BufferFull) => Poll::Pending,
                Err(udp::SendError::Unaddressable) => Poll::Ready(Err(NetError::InvalidInput)),
            }
        })
    }

    /// Sleeps until a datagram arrives; copies it into `buf` (cut to fit),
    /// straight from the socket's buffer (see `lent`), and returns its
    /// length and sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddrV4), NetError> {
        let h = self.handle;
        call_on_lending_mut(HOME, Some(h), self.read_timeout, buf, move |stack, _, buf| {
            // Looking does not mark the socket's set changed; taking does.
            if !stack.sockets.get::<udp::Socket>(h).can_recv() {
                return Poll::Pending;
            }
            match stack.sockets.get_mut::<udp::Socket>(h).recv() {
                Ok((data, meta)) => {
                    let n = data.len().min(buf.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    Poll::Ready(Ok((n, socket_addr(meta.endpoint))))
                }
                Err(_) => Poll::Pending,
            }
        })
    }
}

impl UdpSocket {
    /// Sleeps until at least one datagram is there, then takes every
    /// datagram waiting (at most `max`) in one request. `batch` is emptied
    /// first; passing the same batch each time reuses its memory.
    pub fn recv_batch(&self, batch: Datagrams, max: usize) -> Result<Datagrams, NetError> {
        let h = self.handle;
        let mut batch = Some(batch);
        requests::call_on(HOME, Some(h), self.read_timeout, move |stack, _| {
            if !stack.sockets.get::<udp::Socket>(h).can_recv() {
                return Poll::Pending;
            }
            let socket = stack.sockets.get_mut::<udp::Socket>(h);
            let mut batch = batch.take().unwrap_or_default();
            batch.clear();
            while batch.len() < max.max(1) {
                let Ok((data, meta)) = socket.recv() else { break };
                batch.push(data, socket_addr(meta.endpoint));
            }
            Poll::Ready(Ok(batch))
        })
    }

    /// Sends every datagram of `batch` to its peer in one request
    /// (sleeping while the send buffer is full); returns the batch (to be
    /// reused) once all are queued. A datagram larger than the buffer, or
    /// to an unroutable peer, is an error and the rest are not sent.
    pub fn send_batch(&self, batch: Datagrams) -> Result<Datagrams, NetError> {
        if batch.iter().any(|(data, _)| data.len() > BYTES) {
            return Err(NetError::NoBufferSpace);
        }
        let h = self.handle;
        let (mut batch, mut next) = (Some(batch), 0usize);
        requests::call_on(HOME, Some(h), Some(Duration::from_secs(5)), move |stack, _| {
            let socket = stack.sockets.get_mut::<udp::Socket>(h);
            let Some(pending) = batch.as_ref() else { return Poll::Ready(Err(NetError::InvalidInput)) };
            for (data, peer) in pending.iter().skip(next) {
                match socket.send_slice(data, (*peer.ip(), peer.port())) {
                    Ok(()) => next += 1,
                    Err(udp::SendError::BufferFull) => return Poll::Pending,
                    Err(udp::SendError::Unaddressable) => return Poll::Ready(Err(NetError::InvalidInput)),
                }
            }
            Poll::Ready(Ok(batch.take().unwrap_or_default()))
        })
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let (h, port) = (self.handle, self.port);
        let _ = requests::call(HOME, None, move |stack, _| {
            stack.remove_socket(h);
            stack.udp_ports.retain(|&p| p != port);
            Poll::Ready(Ok(()))
        });
    }
}
