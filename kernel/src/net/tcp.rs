//! TCP for applications: [`TcpListener`] (with a backlog: several
//! listening smoltcp sockets per port, topped up after every round) and
//! [`TcpStream`]. Every call runs on the network thread (see `stack`).

use alloc::vec::Vec;
use core::net::SocketAddrV4;
use core::task::Poll;
use core::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use super::stack::{call, Stack};
use super::{buffer, socket_addr, NetError};

/// Listening sockets kept ready per port.
pub const BACKLOG: usize = 16;
/// Receive and send buffer of each connection.
pub const BUFFER_SIZE: usize = 64 * 1024;
/// The largest write handed to the network thread at once.
const WRITE_CHUNK: usize = BUFFER_SIZE;

/// A socket with its buffers; `NoBufferSpace` when memory is exhausted.
fn new_socket() -> Result<tcp::Socket<'static>, NetError> {
    let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(buffer(BUFFER_SIZE)?), tcp::SocketBuffer::new(buffer(BUFFER_SIZE)?));
    socket.set_nagle_enabled(false);
    Ok(socket)
}

impl Stack {
    fn listening_socket(&mut self, port: u16) -> Result<SocketHandle, NetError> {
        let mut socket = new_socket()?;
        socket.listen(port).map_err(|_| NetError::InvalidInput)?;
        Ok(self.sockets.add(socket))
    }

    /// Keeps `BACKLOG` sockets listening on every bound port (connections
    /// that arrived wait in the same list until accepted).
    pub fn top_up_listeners(&mut self) {
        for i in 0..self.listeners.len() {
            let port = self.listeners[i].0;
            // A connection reset before it was accepted leaves a closed
            // socket behind: free it.
            let sockets = &mut self.sockets;
            self.listeners[i].1.retain(|&h| {
                let socket = sockets.get::<tcp::Socket>(h);
                let dead = !socket.is_listening() && !socket.is_active();
                if dead {
                    sockets.remove(h);
                }
                !dead
            });
            let sockets = &self.sockets;
            let listening = self.listeners[i].1.iter().filter(|&&h| sockets.get::<tcp::Socket>(h).is_listening()).count();
            for _ in listening..BACKLOG {
                if self.listeners[i].1.len() >= 4 * BACKLOG {
                    break; // unaccepted connections pile up: stop growing
                }
                match self.listening_socket(port) {
                    Ok(h) => self.listeners[i].1.push(h),
                    Err(_) => break,
                }
            }
        }
    }

    fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }
}

/// Accepts TCP connections on a port.
pub struct TcpListener {
    port: u16,
    accept_timeout: Option<Duration>,
}

impl TcpListener {
    /// Starts listening on `port` (all addresses of the interface).
    pub fn bind(port: u16) -> Result<TcpListener, NetError> {
        if port == 0 {
            return Err(NetError::InvalidInput);
        }
        call(None, move |stack, _| {
            if stack.listeners.iter().any(|(p, _)| *p == port) {
                return Poll::Ready(Err(NetError::AddrInUse));
            }
            // At least one listening socket, or the port stays free.
            let first = match stack.listening_socket(port) {
                Ok(handle) => handle,
                Err(e) => return Poll::Ready(Err(e)),
            };
            stack.listeners.push((port, alloc::vec![first]));
            stack.top_up_listeners();
            Poll::Ready(Ok(()))
        })?;
        Ok(TcpListener { port, accept_timeout: None })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes [`accept`](Self::accept) give up after `timeout` (None: wait
    /// for good).
    pub fn set_accept_timeout(&mut self, timeout: Option<Duration>) {
        self.accept_timeout = timeout;
    }

    /// Sleeps until a connection arrives; returns it and its peer.
    pub fn accept(&self) -> Result<(TcpStream, SocketAddrV4), NetError> {
        let port = self.port;
        let (handle, peer) = call(self.accept_timeout, move |stack, _| {
            let Some(at) = stack.listeners.iter().position(|(p, _)| *p == port) else {
                return Poll::Ready(Err(NetError::NotConnected));
            };
            let sockets = &stack.sockets;
            // A connection is accepted once its handshake is complete: in
            // SYN-RECEIVED it can neither be read nor written yet.
            let arrived = stack.listeners[at].1.iter().position(|&h| {
                let socket = sockets.get::<tcp::Socket>(h);
                !socket.is_listening() && socket.is_active() && socket.state() != tcp::State::SynReceived
            });
            if let Some(i) = arrived {
                let h = stack.listeners[at].1.remove(i);
                let peer = stack.tcp(h).remote_endpoint().map(socket_addr);
                stack.top_up_listeners();
                return match peer {
                    Some(peer) => Poll::Ready(Ok((h, peer))),
                    None => Poll::Ready(Err(NetError::Reset)),
                };
            }
            Poll::Pending
        })?;
        Ok((TcpStream::new(handle), peer))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let port = self.port;
        let _ = call(None, move |stack, _| {
            if let Some(at) = stack.listeners.iter().position(|(p, _)| *p == port) {
                let (_, handles) = stack.listeners.remove(at);
                for h in handles {
                    stack.tcp(h).abort();
                    stack.reap_later(h);
                }
            }
            Poll::Ready(Ok(()))
        });
    }
}

/// Why nothing more can be sent on `socket`, if so: reset (closed without
/// our close) or closed by us.
fn unsendable(socket: &tcp::Socket) -> Option<NetError> {
    match socket.state() {
        _ if socket.may_send() => None,
        tcp::State::Closed => Some(NetError::Reset),
        _ => Some(NetError::NotConnected),
    }
}

/// A TCP connection.
pub struct TcpStream {
    handle: Option<SocketHandle>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl TcpStream {
    fn new(handle: SocketHandle) -> Self {
        TcpStream { handle: Some(handle), read_timeout: None, write_timeout: None }
    }

    fn handle(&self) -> Result<SocketHandle, NetError> {
        self.handle.ok_or(NetError::NotConnected)
    }

    /// Connects to `peer`, giving up after `timeout`.
    pub fn connect(peer: SocketAddrV4, timeout: Duration) -> Result<TcpStream, NetError> {
        let mut handle: Option<SocketHandle> = None;
        let handle = call(Some(timeout), move |stack, expired| {
            let h = match handle {
                Some(h) => h,
                None => {
                    let mut socket = match new_socket() {
                        Ok(socket) => socket,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    let local = stack.ephemeral_port();
                    let cx = stack.iface.context();
                    if socket.connect(cx, (*peer.ip(), peer.port()), local).is_err() {
                        return Poll::Ready(Err(NetError::InvalidInput));
                    }
                    let h = stack.sockets.add(socket);
                    handle = Some(h);
                    h
                }
            };
            let state = stack.tcp(h).state();
            let result = match state {
                tcp::State::Established => Poll::Ready(Ok(h)),
                tcp::State::Closed => Poll::Ready(Err(NetError::Refused)),
                _ if expired => Poll::Ready(Err(NetError::TimedOut)),
                _ => Poll::Pending,
            };
            if matches!(result, Poll::Ready(Err(_))) {
                stack.tcp(h).abort();
                stack.reap_later(h);
            }
            result
        })?;
        Ok(TcpStream::new(handle))
    }

    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// Reads what has arrived (sleeping until something does) into `buf`;
    /// 0 means the peer closed its side.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        let h = self.handle()?;
        let want = buf.len();
        if want == 0 {
            return Ok(0);
        }
        let data = call(self.read_timeout, move |stack, _| {
            let socket = stack.tcp(h);
            if socket.can_recv() {
                let data = socket.recv(|b| {
                    let n = b.len().min(want);
                    (n, b[..n].to_vec())
                });
                return Poll::Ready(data.map_err(|_| NetError::Reset));
            }
            if !socket.may_recv() {
                return Poll::Ready(match socket.state() {
                    // Closed without the peer's FIN: reset or aborted.
                    tcp::State::Closed | tcp::State::Listen => Err(NetError::Reset),
                    _ => Ok(Vec::new()),
                });
            }
            Poll::Pending
        })?;
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }

    /// Queues as much of `data` as fits (sleeping until something fits);
    /// returns how much.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, NetError> {
        let h = self.handle()?;
        if data.is_empty() {
            return Ok(0);
        }
        let chunk = data[..data.len().min(WRITE_CHUNK)].to_vec();
        call(self.write_timeout, move |stack, _| {
            let socket = stack.tcp(h);
            if let Some(e) = unsendable(socket) {
                return Poll::Ready(Err(e));
            }
            if socket.can_send() {
                return Poll::Ready(socket.send_slice(&chunk).map_err(|_| NetError::Reset));
            }
            Poll::Pending
        })
    }

    /// Writes all of `data`.
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<(), NetError> {
        while !data.is_empty() {
            let n = self.write(data)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Writes all of `data`, then ends our side: the FIN leaves with the
    /// last data segment (a server closing after its response; the client
    /// then need not close first and keep the TIME-WAIT state).
    pub fn write_last(&mut self, mut data: &[u8]) -> Result<(), NetError> {
        while data.len() > WRITE_CHUNK {
            let n = self.write(data)?;
            data = &data[n..];
        }
        let h = self.handle()?;
        let mut rest = data.to_vec();
        call(self.write_timeout, move |stack, _| {
            let socket = stack.tcp(h);
            if let Some(e) = unsendable(socket) {
                return Poll::Ready(Err(e));
            }
            if socket.can_send() {
                match socket.send_slice(&rest) {
                    Ok(n) => drop(rest.drain(..n)),
                    Err(_) => return Poll::Ready(Err(NetError::Reset)),
                }
            }
            if !rest.is_empty() {
                return Poll::Pending;
            }
            // Queued in the same round as the data: one segment carries both.
            socket.close();
            Poll::Ready(Ok(()))
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddrV4, NetError> {
        let h = self.handle()?;
        call(None, move |stack, _| Poll::Ready(stack.tcp(h).remote_endpoint().map(socket_addr).ok_or(NetError::NotConnected)))
    }

    /// Ends our side (FIN after the queued data); reading still works.
    pub fn shutdown(&mut self) -> Result<(), NetError> {
        let h = self.handle()?;
        call(None, move |stack, _| {
            stack.tcp(h).close();
            Poll::Ready(Ok(()))
        })
    }

    /// Closes the connection (FIN after the queued data); the socket is
    /// freed when the close completes.
    pub fn close(mut self) -> Result<(), NetError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), NetError> {
        let Some(h) = self.handle.take() else { return Ok(()) };
        call(None, move |stack, _| {
            stack.tcp(h).close();
            stack.reap_later(h);
            Poll::Ready(Ok(()))
        })
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let _ = self.release();
    }
}
