//! TCP for applications: [`TcpListener`] (a port's sockets, handshakes and
//! accept queue are bounded by `listener`, on every stack) and
//! [`TcpStream`]. Every call runs on the thread of the stack that holds
//! the socket (see `netcpus`): a stream's calls go to its stack; a
//! listener's accept takes connections from whichever stacks signal some
//! waiting ([`AcceptReady`]). `TcpStream` is also an
//! `embedded_io` stream (`Read`, `Write`, `ReadReady`, `WriteReady`), its
//! trait methods the inherent ones, so that crates written against those
//! traits work on it.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::net::SocketAddrV4;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::Poll;
use core::time::Duration;

use smoltcp::socket::tcp;

use super::accept::{AcceptReady, Acceptor};
use super::device::NetDevice;
use super::lent::{call_on_lending, call_on_lending_mut};
use super::listener::{Limits, Listener};
use super::netcpus;
use super::requests;
use super::sockets::SocketId;
use super::stack::{new_socket, ListenerSockets, Stack, BUFFER_SIZE};
use super::{socket_addr, NetError};

/// The most bytes [`TcpStream::write_last`] leaves to its final request
/// (what comes before goes through `write`): at most a send buffer, so
/// that it fits whole once the buffer has room.
const LAST_WRITE: usize = BUFFER_SIZE;
/// The accept queue's length unless the service asks for another.
pub const DEFAULT_BACKLOG: usize = 128;
/// Connections taken from the accept queue by one `accept` request; the
/// rest wait in the [`TcpListener`] for the next calls.
const ACCEPT_BATCH: usize = 32;
/// Local ports tried for an outgoing connection whose replies the NIC
/// steers to the calling cpu's queue (each has a 1-in-queues chance).
const PORT_TRIES: usize = 1024;

/// The bounds of every listening port (see `listener`).
fn listen_limits(backlog: usize) -> Limits {
    let ticks = |d: Duration| crate::time::duration_to_ticks(d);
    Limits {
        // In each of the 32 socket sets; topped up after every SYN.
        spare: 1,
        max_half_open: 1024,
        syn_timeout: ticks(Duration::from_secs(4)),
        evictable_after: ticks(Duration::from_secs(1)),
        backlog: backlog.max(1),
        accept_timeout: ticks(Duration::from_secs(60)),
    }
}

impl Stack {
    /// A local port for a connection to `peer` whose replies the NIC
    /// steers to this stack's queue; `None` when none is found (a NIC
    /// whose table leaves this queue out).
    fn port_for(&mut self, peer: SocketAddrV4) -> Option<u16> {
        let Some(address) = self.address else { return Some(self.ephemeral_port()) };
        let queue = self.nic.queue();
        for _ in 0..PORT_TRIES {
            let port = self.ephemeral_port();
            if self.nic.receive_queue(peer, SocketAddrV4::new(address.address(), port)) == queue {
                return Some(port);
            }
        }
        None
    }

    fn listener(&mut self, port: u16) -> Option<&mut Listener<SocketId>> {
        self.listeners.iter_mut().find(|l| l.port == port)
    }
}

/// Accepts TCP connections on a port, on every network stack.
///
/// Dropping it stops listening (on every stack) and closes the connections
/// it had taken but not handed out.
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() -> Result<(), bravo::net::NetError> {
/// use bravo::net::TcpListener;
///
/// let listener = TcpListener::bind(8080)?;
/// loop {
///     let (mut stream, peer) = listener.accept()?;
///     bravo::println!("{peer} on cpu {}", stream.cpu());
///     stream.write_last(b"HTTP/1.1 204 No Content\r\n\r\n")?;
/// }
/// # }
/// ```
pub struct TcpListener {
    port: u16,
    accept_timeout: Option<Duration>,
    /// Connections taken from an accept queue and not yet handed out, with
    /// their stack.
    taken: spin::Mutex<VecDeque<(usize, SocketId, SocketAddrV4)>>,
    ready: Arc<AcceptReady>,
    /// The stack the next accept looks at first.
    next_stack: AtomicUsize,
}

impl TcpListener {
    /// Starts listening on `port` (all addresses of the interface), with
    /// an accept queue of [`DEFAULT_BACKLOG`] connections on each stack.
    ///
    /// Fails with `InvalidInput` for port 0, `AddrInUse` when the port is
    /// taken, `NoNetwork` without a network, `NoBufferSpace` when memory
    /// for the listener's sockets is short.
    ///
    /// ```no_run
    /// # #![no_std]
    /// # #![no_main]
    /// # bravo::main!(main);
    /// # fn main() -> Result<(), bravo::net::NetError> {
    /// let listener = bravo::net::TcpListener::bind(7)?;
    /// assert_eq!(listener.port(), 7);
    /// # Ok(()) }
    /// ```
    pub fn bind(port: u16) -> Result<TcpListener, NetError> {
        TcpListener::bind_with_backlog(port, DEFAULT_BACKLOG)
    }

    /// Starts listening on `port` with an accept queue of `backlog`
    /// connections (completed handshakes waiting for [`accept`](Self::accept))
    /// on each stack.
    pub fn bind_with_backlog(port: u16, backlog: usize) -> Result<TcpListener, NetError> {
        if port == 0 {
            return Err(NetError::InvalidInput);
        }
        if !netcpus::running() {
            return Err(NetError::NoNetwork);
        }
        let ready = Arc::new(AcceptReady::new());
        let listener = TcpListener {
            port,
            accept_timeout: None,
            taken: spin::Mutex::new(VecDeque::new()),
            ready,
            next_stack: AtomicUsize::new(0),
        };
        // Dropped on failure: unbinds the stacks already bound.
        for index in netcpus::all() {
            let ready = listener.ready.clone();
            requests::call(index, None, move |stack, _| {
                if stack.listener(port).is_some() {
                    return Poll::Ready(Err(NetError::AddrInUse));
                }
                if stack.listeners.try_reserve(1).is_err() || stack.accept_ready.try_reserve(1).is_err() {
                    return Poll::Ready(Err(NetError::NoBufferSpace));
                }
                match Listener::new(&mut ListenerSockets(stack), port, listen_limits(backlog)) {
                    Ok(listener) => stack.listeners.push(listener),
                    Err(e) => return Poll::Ready(Err(e)),
                }
                stack.accept_ready.push((port, ready.clone()));
                stack.update_listeners();
                Poll::Ready(Ok(()))
            })?;
        }
        Ok(listener)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes [`accept`](Self::accept) give up after `timeout` (None: wait
    /// for good).
    pub fn set_accept_timeout(&mut self, timeout: Option<Duration>) {
        self.accept_timeout = timeout;
    }

    /// Sleeps until a connection arrives; returns it and its peer.
    /// `TimedOut` once the [accept timeout](Self::set_accept_timeout)
    /// passes.
    ///
    /// A thread on a network cpu takes its own stack's connections, and
    /// those of stacks whose cpu has no thread waiting here: a service with
    /// an accepting thread on each cpu takes, and can serve, each
    /// connection where it lives, with no cross-cpu hop; one accepting
    /// thread takes them all.
    ///
    /// ```no_run
    /// # #![no_std]
    /// # #![no_main]
    /// # bravo::main!(main);
    /// # fn main() -> Result<(), bravo::net::NetError> {
    /// use alloc::sync::Arc;
    /// use bravo::net::TcpListener;
    /// use bravo::thread;
    /// # extern crate alloc;
    ///
    /// // One accepting thread per cpu; each serves what its cpu accepted.
    /// let listener = Arc::new(TcpListener::bind(8080)?);
    /// for cpu in 0..thread::cpu_count() {
    ///     let listener = listener.clone();
    ///     let _ = thread::spawn_on(cpu, move || {
    ///         while let Ok((mut stream, _peer)) = listener.accept() {
    ///             let _ = stream.write_last(b"hello\n");
    ///         }
    ///     });
    /// }
    /// # Ok(()) }
    /// ```
    pub fn accept(&self) -> Result<(TcpStream, SocketAddrV4), NetError> {
        let deadline = self.accept_timeout.map(|t| crate::time::Instant::now() + t);
        loop {
            if let Some((index, handle, peer)) = self.taken.lock().pop_front() {
                return Ok((TcpStream::new(index, handle), peer));
            }
            let start = self.next_stack.fetch_add(1, Ordering::Relaxed);
            let local = netcpus::on_this_cpu();
            let _acceptor = Acceptor::enter(&self.ready, local);
            let ready = || self.ready.take_any(start, local);
            let queue = self.ready.queue(local);
            let index = match deadline {
                None => queue.wait_until(ready),
                Some(deadline) => {
                    let left = deadline.duration_since(crate::time::Instant::now());
                    queue.wait_timeout(ready, left).ok_or(NetError::TimedOut)?
                }
            };
            let mut batch = self.take_batch(index)?;
            let Some((handle, peer)) = batch.pop_front() else { continue };
            self.taken.lock().extend(batch.into_iter().map(|(handle, peer)| (index, handle, peer)));
            return Ok((TcpStream::new(index, handle), peer));
        }
    }

    /// Takes up to [`ACCEPT_BATCH`] connections from stack `index`'s
    /// accept queue (none if another accept took them first).
    fn take_batch(&self, index: usize) -> Result<VecDeque<(SocketId, SocketAddrV4)>, NetError> {
        let port = self.port;
        requests::call(index, None, move |stack, _| {
            let Some(listener) = stack.listener(port) else {
                return Poll::Ready(Err(NetError::NotConnected));
            };
            let mut batch = VecDeque::new();
            if batch.try_reserve(listener.queued().min(ACCEPT_BATCH)).is_err() {
                return Poll::Ready(Err(NetError::NoBufferSpace));
            }
            while batch.len() < ACCEPT_BATCH {
                let Some(handle) = stack.listener(port).and_then(|l| l.accept()) else { break };
                match stack.tcp(handle).remote_endpoint().map(socket_addr) {
                    Some(peer) => batch.push_back((handle, peer)),
                    None => stack.remove_socket(handle),
                }
            }
            // Room in the queue: completed handshakes waiting for it move
            // in (and what is still queued is signalled again).
            stack.update_listeners();
            Poll::Ready(Ok(batch))
        })
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        // Connections taken but never handed out are closed like any other.
        for (index, handle, _) in self.taken.get_mut().drain(..) {
            drop(TcpStream::new(index, handle));
        }
        let port = self.port;
        for index in netcpus::all() {
            let ready = self.ready.clone();
            let _ = requests::call(index, None, move |stack, _| {
                // Only this listener's entry: a failed bind leaves another
                // listener's port alone.
                let Some(at) = stack.accept_ready.iter().position(|(p, r)| *p == port && Arc::ptr_eq(r, &ready)) else {
                    return Poll::Ready(Ok(()));
                };
                stack.accept_ready.remove(at);
                if let Some(at) = stack.listeners.iter().position(|l| l.port == port) {
                    let listener = stack.listeners.remove(at);
                    listener.close(&mut ListenerSockets(stack));
                }
                Poll::Ready(Ok(()))
            });
        }
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

/// A TCP connection, from [`TcpListener::accept`] or
/// [`TcpStream::connect`].
///
/// It may be used from any cpu (each call is a request to the stack that
/// holds it); a thread on [`cpu`](Self::cpu) makes no cross-cpu hop.
/// Dropping it closes the connection like [`close`](Self::close).
///
/// ```no_run
/// # #![no_std]
/// # #![no_main]
/// # bravo::main!(main);
/// # fn main() -> Result<(), bravo::net::NetError> {
/// use core::net::{Ipv4Addr, SocketAddrV4};
/// use core::time::Duration;
/// use bravo::net::TcpStream;
///
/// let peer = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 80);
/// let mut stream = TcpStream::connect(peer, Duration::from_secs(5))?;
/// stream.set_read_timeout(Some(Duration::from_secs(5)));
/// stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
/// let mut buf = [0u8; 512];
/// loop {
///     let n = stream.read(&mut buf)?;
///     if n == 0 {
///         break; // the server closed its side
///     }
///     bravo::print!("{}", core::str::from_utf8(&buf[..n]).unwrap_or("?"));
/// }
/// stream.close()?;
/// # Ok(()) }
/// ```
pub struct TcpStream {
    /// The stack that holds it.
    stack: usize,
    handle: Option<SocketId>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl TcpStream {
    fn new(stack: usize, handle: SocketId) -> Self {
        TcpStream { stack, handle: Some(handle), read_timeout: None, write_timeout: None }
    }

    /// The cpu whose network stack holds the connection: a thread serving
    /// it there makes no cross-cpu hop per call.
    pub fn cpu(&self) -> usize {
        netcpus::control(self.stack).cpu()
    }

    fn handle(&self) -> Result<SocketId, NetError> {
        self.handle.ok_or(NetError::NotConnected)
    }

    /// Connects to `peer`, giving up after `timeout`. The calling cpu's
    /// stack makes the connection where there is one (else the home
    /// stack), from a local port whose replies come back to its queue.
    pub fn connect(peer: SocketAddrV4, timeout: Duration) -> Result<TcpStream, NetError> {
        let index = netcpus::on_this_cpu().unwrap_or(netcpus::HOME);
        let mut handle: Option<SocketId> = None;
        let handle = requests::call(index, Some(timeout), move |stack, expired| {
            let h = match handle {
                Some(h) => h,
                None => {
                    if !stack.sockets.has_room() {
                        return Poll::Ready(Err(NetError::NoBufferSpace));
                    }
                    let mut new = match new_socket() {
                        Ok(new) => new,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    let Some(local) = stack.port_for(peer) else {
                        return Poll::Ready(Err(NetError::NoBufferSpace));
                    };
                    let cx = stack.iface.context();
                    if new.socket.connect(cx, (*peer.ip(), peer.port()), local).is_err() {
                        return Poll::Ready(Err(NetError::InvalidInput));
                    }
                    let set = stack.sockets.set_of_connection(*peer.ip(), peer.port(), local);
                    let h = match stack.add_tcp_socket(set, new) {
                        Ok(h) => h,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
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
        Ok(TcpStream::new(index, handle))
    }

    /// Makes [`read`](Self::read) give up with `TimedOut` after `timeout`
    /// (None: wait for good, the default).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Makes [`write`](Self::write) and [`flush`](Self::flush) give up with
    /// `TimedOut` after `timeout` (None: wait for good, the default).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// Reads what has arrived (sleeping until something does) into `buf`;
    /// 0 means the peer closed its side. The bytes go straight from the
    /// socket's buffer into `buf` (see `lent`); a read that fails or times
    /// out leaves `buf` as it was.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        let h = self.handle()?;
        if buf.is_empty() {
            return Ok(0);
        }
        call_on_lending_mut(self.stack, Some(h), self.read_timeout, buf, move |stack, _, buf| {
            // Looking does not mark the socket's set changed; taking does.
            let socket = stack.tcp_ref(h);
            if socket.can_recv() {
                return Poll::Ready(stack.tcp(h).recv_slice(buf).map_err(|_| NetError::Reset));
            }
            if !socket.may_recv() {
                return Poll::Ready(match socket.state() {
                    // Closed without the peer's FIN: reset or aborted.
                    tcp::State::Closed | tcp::State::Listen => Err(NetError::Reset),
                    _ => Ok(0),
                });
            }
            Poll::Pending
        })
    }

    /// Queues as much of `data` as fits (sleeping until something fits);
    /// returns how much. The bytes go straight from `data` into the
    /// socket's buffer (see `lent`).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, NetError> {
        let h = self.handle()?;
        if data.is_empty() {
            return Ok(0);
        }
        call_on_lending(self.stack, Some(h), self.write_timeout, data, move |stack, _, data| {
            let socket = stack.tcp_ref(h);
            if let Some(e) = unsendable(socket) {
                return Poll::Ready(Err(e));
            }
            if socket.can_send() {
                return Poll::Ready(stack.tcp(h).send_slice(data).map_err(|_| NetError::Reset));
            }
            Poll::Pending
        })
    }

    /// Writes all of `data`, sleeping while the send buffer is full.
    ///
    /// ```no_run
    /// # #![no_std]
    /// # #![no_main]
    /// # bravo::main!(main);
    /// # fn main() -> Result<(), bravo::net::NetError> {
    /// # let listener = bravo::net::TcpListener::bind(7)?;
    /// // An echo: what arrives goes back until the peer closes.
    /// let (mut stream, _) = listener.accept()?;
    /// let mut buf = [0u8; 2048];
    /// loop {
    ///     match stream.read(&mut buf)? {
    ///         0 => break stream.close(),
    ///         n => stream.write_all(&buf[..n])?,
    ///     }
    /// }
    /// # }
    /// ```
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
        while data.len() > LAST_WRITE {
            let n = self.write(data)?;
            data = &data[n..];
        }
        let h = self.handle()?;
        call_on_lending(self.stack, Some(h), self.write_timeout, data, move |stack, _, data| {
            let socket = stack.tcp_ref(h);
            if let Some(e) = unsendable(socket) {
                return Poll::Ready(Err(e));
            }
            // The rest goes in once it fits whole (it is at most a send
            // buffer), with the close in the same round: one segment
            // carries the last bytes and the FIN.
            if socket.send_capacity() - socket.send_queue() < data.len() {
                return Poll::Pending;
            }
            let socket = stack.tcp(h);
            match socket.send_slice(data) {
                Ok(n) if n == data.len() => {
                    socket.close();
                    Poll::Ready(Ok(()))
                }
                _ => Poll::Ready(Err(NetError::Reset)),
            }
        })
    }

    /// Sleeps until the peer has acknowledged everything written (the
    /// send buffer is empty), or the write timeout passes: what was
    /// written has then reached the peer's TCP. `Reset` when the
    /// connection was reset before that.
    pub fn flush(&mut self) -> Result<(), NetError> {
        let h = self.handle()?;
        requests::call_on(self.stack, Some(h), self.write_timeout, move |stack, _| {
            let socket = stack.tcp_ref(h);
            match socket.state() {
                tcp::State::Closed => Poll::Ready(Err(NetError::Reset)),
                _ if socket.send_queue() == 0 => Poll::Ready(Ok(())),
                _ => Poll::Pending,
            }
        })
    }

    /// Whether [`read`](Self::read) would return without sleeping: bytes
    /// have arrived, or the peer closed its side, or the connection is
    /// reset. Asks the network thread, which answers at once.
    pub fn read_ready(&self) -> Result<bool, NetError> {
        let h = self.handle()?;
        requests::call_on(self.stack, Some(h), None, move |stack, _| {
            let socket = stack.tcp_ref(h);
            Poll::Ready(Ok(socket.can_recv() || !socket.may_recv()))
        })
    }

    /// Whether [`write`](Self::write) would return without sleeping: the
    /// send buffer has room, or nothing more can be sent (the write then
    /// fails at once). Asks the network thread, which answers at once.
    pub fn write_ready(&self) -> Result<bool, NetError> {
        let h = self.handle()?;
        requests::call_on(self.stack, Some(h), None, move |stack, _| {
            let socket = stack.tcp_ref(h);
            Poll::Ready(Ok(socket.can_send() || unsendable(socket).is_some()))
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddrV4, NetError> {
        let h = self.handle()?;
        requests::call(self.stack, None, move |stack, _| {
            Poll::Ready(stack.tcp_ref(h).remote_endpoint().map(socket_addr).ok_or(NetError::NotConnected))
        })
    }

    /// Our own address of the connection (the interface's address and the
    /// local port).
    pub fn local_addr(&self) -> Result<SocketAddrV4, NetError> {
        let h = self.handle()?;
        requests::call(self.stack, None, move |stack, _| {
            Poll::Ready(stack.tcp_ref(h).local_endpoint().map(socket_addr).ok_or(NetError::NotConnected))
        })
    }

    /// Ends our side (FIN after the queued data); reading still works.
    pub fn shutdown(&mut self) -> Result<(), NetError> {
        let h = self.handle()?;
        requests::call(self.stack, None, move |stack, _| {
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
        requests::call(self.stack, None, move |stack, _| {
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

impl embedded_io::ErrorType for TcpStream {
    type Error = NetError;
}

impl embedded_io::Read for TcpStream {
    /// [`TcpStream::read`]: sleeps until a byte arrives; 0 at the peer's
    /// FIN.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        TcpStream::read(self, buf)
    }
}

impl embedded_io::Write for TcpStream {
    /// [`TcpStream::write`]: sleeps until some of `buf` fits.
    fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        TcpStream::write(self, buf)
    }

    /// [`TcpStream::flush`]: sleeps until the peer acknowledged it all.
    fn flush(&mut self) -> Result<(), NetError> {
        TcpStream::flush(self)
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), NetError> {
        TcpStream::write_all(self, buf)
    }
}

impl embedded_io::ReadReady for TcpStream {
    fn read_ready(&mut self) -> Result<bool, NetError> {
        TcpStream::read_ready(self)
    }
}

impl embedded_io::WriteReady for TcpStream {
    fn write_ready(&mut self) -> Result<bool, NetError> {
        TcpStream::write_ready(self)
    }
}
