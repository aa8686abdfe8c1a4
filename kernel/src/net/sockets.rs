//! The stack's sockets, spread over [`SETS`] smoltcp socket sets.
//!
//! smoltcp finds the socket of a received segment by asking every slot of
//! its set in turn, and looks at every slot again on each transmit pass;
//! with one set, each frame costs as much as there are connections
//! (10,000 idle connections cut a client's rate 60-fold). So a TCP
//! connection lives in the set chosen by a keyed hash of its remote
//! address, remote port and local port, and each received frame is
//! handed to smoltcp with that set only: a frame costs a connection
//! count divided by [`SETS`]. Everything else (UDP, DHCP, ICMP, ARP)
//! goes to set 0, where the UDP and DHCP sockets live. A listening port
//! keeps listening sockets in every set (see `listener`).
//!
//! smoltcp also asks every socket for its next timer, and for what it has
//! to send on each transmit pass: the stack does that only for the sets
//! that changed. Every mutable access to a set marks it touched
//! ([`Sockets::take_touched`]); a set untouched since its last pass keeps
//! the timer then computed.
//!
//! A set also starts empty and grows only when full, by one slot: its
//! storage then moves to a block twice its size with an allocation that
//! cannot fail cleanly, so [`Sockets::add`] first checks that one can be
//! had.

use alloc::vec::Vec;

use smoltcp::iface::{SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::{AnySocket, Socket};
use smoltcp::wire::Ipv4Address;

use super::NetError;

/// Socket sets.
pub const SETS: usize = 32;

/// A socket: its set and its handle there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SocketId {
    set: u8,
    handle: SocketHandle,
}

impl SocketId {
    pub fn set(self) -> usize {
        self.set as usize
    }
}

pub struct Sockets {
    sets: Vec<SocketSet<'static>>,
    /// Sockets and slots (used or not) of each set.
    counts: [usize; SETS],
    slots: [usize; SETS],
    count: usize,
    max: usize,
    /// The hash's key, so that a peer cannot aim at one set.
    key: u64,
    /// Sets mutably reached since the last [`take_touched`](Self::take_touched), one bit each.
    touched: u32,
}

const _: () = assert!(SETS <= 32, "touched sets are bits of a u32");

impl Sockets {
    /// Room for at most `max` sockets; `key` seeds the hash.
    pub fn new(max: usize, key: u64) -> Self {
        Sockets {
            sets: (0..SETS).map(|_| SocketSet::new(Vec::new())).collect(),
            counts: [0; SETS],
            slots: [0; SETS],
            count: 0,
            max,
            key: key | 1,
            touched: 0,
        }
    }

    /// Sockets held, in every set.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether another socket may be added (memory permitting).
    pub fn has_room(&self) -> bool {
        self.count < self.max
    }

    /// The set of a TCP connection.
    pub fn set_of_connection(&self, remote: Ipv4Address, remote_port: u16, local_port: u16) -> usize {
        set_of(self.key, remote.octets(), remote_port, local_port)
    }

    /// The set a received Ethernet frame goes to: its TCP connection's, or
    /// 0 for anything that is not an unfragmented TCP/IPv4 segment.
    pub fn set_of_frame(&self, frame: &[u8]) -> usize {
        tcp_tuple(frame).map_or(0, |(ip, sport, dport)| set_of(self.key, ip, sport, dport))
    }

    /// Adds `socket` to `set`; `NoBufferSpace` when the stack holds its
    /// most sockets or the set's storage cannot grow.
    pub fn add<T: AnySocket<'static>>(&mut self, set: usize, socket: T) -> Result<SocketId, NetError> {
        if self.count >= self.max {
            return Err(NetError::NoBufferSpace);
        }
        if self.counts[set] == self.slots[set] {
            // smoltcp will push a slot: its storage may move to a block of
            // twice the size. Make sure one can be had (the network thread
            // may use the memory reserve, so this fails only when memory
            // is really gone).
            let bytes = (2 * self.slots[set]).max(4) * core::mem::size_of::<SocketStorage>();
            let mut probe: Vec<u8> = Vec::new();
            probe.try_reserve_exact(bytes).map_err(|_| NetError::NoBufferSpace)?;
            drop(probe);
            self.slots[set] += 1;
        }
        self.counts[set] += 1;
        self.count += 1;
        self.touched |= 1 << set;
        Ok(SocketId { set: set as u8, handle: self.sets[set].add(socket) })
    }

    /// Removes a socket, returning it (to be dropped by the caller).
    pub fn remove(&mut self, id: SocketId) -> Socket<'static> {
        self.counts[id.set()] -= 1;
        self.count -= 1;
        self.touched |= 1 << id.set();
        self.sets[id.set()].remove(id.handle)
    }

    pub fn get<T: AnySocket<'static>>(&self, id: SocketId) -> &T {
        self.sets[id.set()].get::<T>(id.handle)
    }

    pub fn get_mut<T: AnySocket<'static>>(&mut self, id: SocketId) -> &mut T {
        self.touched |= 1 << id.set();
        self.sets[id.set()].get_mut::<T>(id.handle)
    }

    /// A socket, to take something from that the transmit pass does not
    /// care about (the DHCP socket's last event): its set is not marked.
    pub fn get_mut_quietly<T: AnySocket<'static>>(&mut self, id: SocketId) -> &mut T {
        self.sets[id.set()].get_mut::<T>(id.handle)
    }

    /// One set, to hand to smoltcp.
    pub fn set_mut(&mut self, set: usize) -> &mut SocketSet<'static> {
        self.touched |= 1 << set;
        &mut self.sets[set]
    }

    /// One set for smoltcp's transmit pass, without marking it touched:
    /// the stack wakes the requests of the sets it passed over itself.
    pub fn set_for_transmit(&mut self, set: usize) -> &mut SocketSet<'static> {
        &mut self.sets[set]
    }

    /// The sets touched since the last call (one bit each), forgetting them.
    pub fn take_touched(&mut self) -> u32 {
        core::mem::take(&mut self.touched)
    }

    /// The sets touched since the last [`take_touched`](Self::take_touched).
    pub fn touched(&self) -> u32 {
        self.touched
    }

    /// Marks every set touched (something all of them may wait for
    /// happened: a neighbour's address arrived).
    pub fn touch_all(&mut self) {
        self.touched = u32::MAX;
    }

    /// Every set.
    pub fn sets(&self) -> &[SocketSet<'static>] {
        &self.sets
    }
}

/// The set of a connection: a multiplicative hash, keyed.
fn set_of(key: u64, ip: [u8; 4], remote_port: u16, local_port: u16) -> usize {
    let tuple = (u32::from_be_bytes(ip) as u64) << 32 | (remote_port as u64) << 16 | local_port as u64;
    let mixed = (tuple ^ key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 58) as usize % SETS
}

/// (source address, source port, destination port) of a frame holding an
/// unfragmented TCP segment over IPv4.
fn tcp_tuple(frame: &[u8]) -> Option<([u8; 4], u16, u16)> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    // More fragments, or an offset: not a whole segment (smoltcp drops it).
    if u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff != 0 {
        return None;
    }
    let tcp = ip.get(((ip[0] & 0x0f) as usize) * 4..)?;
    let port = |at: usize| Some(u16::from_be_bytes([*tcp.get(at)?, *tcp.get(at + 1)?]));
    Some((ip.get(12..16)?.try_into().ok()?, port(0)?, port(2)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame with a TCP/IPv4 segment from `src`:`sport` to
    /// port `dport` (checksums are not looked at).
    fn tcp_frame(src: [u8; 4], sport: u16, dport: u16, flags_and_offset: u16) -> Vec<u8> {
        let mut frame = vec![0u8; 14 + 20 + 20];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14] = 0x45;
        frame[14 + 6..14 + 8].copy_from_slice(&flags_and_offset.to_be_bytes());
        frame[14 + 9] = 6;
        frame[14 + 12..14 + 16].copy_from_slice(&src);
        frame[34..36].copy_from_slice(&sport.to_be_bytes());
        frame[36..38].copy_from_slice(&dport.to_be_bytes());
        frame
    }

    #[test]
    fn a_segment_goes_to_the_set_of_its_connection() {
        let sockets = Sockets::new(100, 0x1234);
        for (i, port) in (1000..1200).enumerate() {
            let src = [10, 0, 0, i as u8];
            let frame = tcp_frame(src, port, 80, 0x4000); // don't fragment
            assert_eq!(sockets.set_of_frame(&frame), sockets.set_of_connection(Ipv4Address::from(src), port, 80));
        }
    }

    #[test]
    fn connections_spread_over_every_set() {
        let sockets = Sockets::new(100, 0xfeed);
        let mut per_set = [0usize; SETS];
        for i in 0..(SETS * 100) as u32 {
            per_set[sockets.set_of_connection(
                Ipv4Address::from((0x0a00_0000 + i / 50).to_be_bytes()),
                40000 + (i % 50) as u16,
                80,
            )] += 1;
        }
        assert!(per_set.iter().all(|&n| (50..=150).contains(&n)), "uneven: {per_set:?}");
    }

    #[test]
    fn mutable_access_marks_a_set_touched_until_taken() {
        let mut sockets = Sockets::new(100, 3);
        assert_eq!(sockets.take_touched(), 0);
        let id = sockets.add(5, smoltcp::socket::udp::Socket::new(udp_buffer(), udp_buffer())).unwrap();
        assert_eq!(sockets.take_touched(), 1 << 5);
        let _ = sockets.get::<smoltcp::socket::udp::Socket>(id);
        assert_eq!(sockets.touched(), 0, "reading does not touch");
        let _ = sockets.get_mut::<smoltcp::socket::udp::Socket>(id);
        let _ = sockets.set_mut(7);
        assert_eq!(sockets.take_touched(), 1 << 5 | 1 << 7);
        drop(sockets.remove(id));
        assert_eq!(sockets.take_touched(), 1 << 5);
    }

    fn udp_buffer() -> smoltcp::socket::udp::PacketBuffer<'static> {
        smoltcp::socket::udp::PacketBuffer::new(vec![smoltcp::socket::udp::PacketMetadata::EMPTY; 4], vec![0; 64])
    }

    #[test]
    fn everything_else_goes_to_set_zero() {
        let sockets = Sockets::new(100, 7);
        let mut udp = tcp_frame([10, 0, 0, 9], 5000, 53, 0);
        udp[14 + 9] = 17;
        let mut arp = tcp_frame([10, 0, 0, 9], 5000, 53, 0);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let fragment = tcp_frame([10, 0, 0, 9], 5000, 80, 0x2000); // more fragments
        let later_fragment = tcp_frame([10, 0, 0, 9], 5000, 80, 0x0010);
        for frame in
            [&udp[..], &arp, &fragment, &later_fragment, &[], &[0u8; 20], &tcp_frame([1, 2, 3, 4], 1, 2, 0)[..36]]
        {
            assert_eq!(sockets.set_of_frame(frame), 0, "{frame:?}");
        }
    }
}
