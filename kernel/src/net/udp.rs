//! UDP for applications: [`UdpSocket`], bound to a port, sending and
//! receiving datagrams from any cpu (each call runs on the network thread).

use alloc::vec::Vec;
use core::net::SocketAddrV4;
use core::task::Poll;
use core::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;

use super::stack::call;
use super::{buffer, socket_addr, NetError};

/// Datagrams and bytes each socket buffers per direction.
const PACKETS: usize = 128;
const BYTES: usize = 128 * 1024;

pub struct UdpSocket {
    handle: SocketHandle,
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
        let handle = call(None, move |stack, _| {
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
            stack.udp_ports.push(port);
            Poll::Ready(Ok(stack.sockets.add(socket)))
        })?;
        Ok(UdpSocket { handle, port, read_timeout: None })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Sends one datagram to `peer` (sleeping while the send buffer is
    /// full).
    pub fn send_to(&self, data: &[u8], peer: SocketAddrV4) -> Result<usize, NetError> {
        if data.len() > BYTES {
            return Err(NetError::NoBufferSpace);
        }
        let (h, data) = (self.handle, data.to_vec());
        call(Some(Duration::from_secs(5)), move |stack, _| {
            let socket = stack.sockets.get_mut::<udp::Socket>(h);
            match socket.send_slice(&data, (*peer.ip(), peer.port())) {
                Ok(()) => Poll::Ready(Ok(data.len())),
                Err(udp::SendError::BufferFull) => Poll::Pending,
                Err(udp::SendError::Unaddressable) => Poll::Ready(Err(NetError::InvalidInput)),
            }
        })
    }

    /// Sleeps until a datagram arrives; copies it into `buf` (cut to fit)
    /// and returns its length and sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddrV4), NetError> {
        let h = self.handle;
        let (data, peer): (Vec<u8>, SocketAddrV4) = call(self.read_timeout, move |stack, _| {
            let socket = stack.sockets.get_mut::<udp::Socket>(h);
            match socket.recv() {
                Ok((data, meta)) => Poll::Ready(Ok((data.to_vec(), socket_addr(meta.endpoint)))),
                Err(_) => Poll::Pending,
            }
        })?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok((n, peer))
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let (h, port) = (self.handle, self.port);
        let _ = call(None, move |stack, _| {
            stack.sockets.remove(h);
            stack.udp_ports.retain(|&p| p != port);
            Poll::Ready(Ok(()))
        });
    }
}
