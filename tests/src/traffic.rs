//! The host end of a guest's e1000 for `bench pps`: QEMU's `-netdev dgram`
//! over a pair of unix sockets (one Ethernet frame per datagram), so raw
//! traffic flows without touching the host's network. [`Wire`] plays a
//! host at 10.0.0.1 on that link: it answers ARP, and floods, counts and
//! echoes UDP against the guest's benchmark services (the protocol of
//! `tests/images/bench-net` and the Linux peer: sink, source, echo).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol,
    Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket,
};

/// The host's end of the link.
pub const HOST_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
/// The guest's address (the guests are configured with it).
pub const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const HOST_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
/// The host's UDP port for everything it sends.
const HOST_PORT: u16 = 40000;
/// Ethernet + IPv4 + UDP headers.
pub const HEADERS: usize = 42;

/// What a flood from the host did.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub packets: u64,
    pub elapsed: Duration,
}

/// What the host received from a guest's flood.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub packets: u64,
    pub bytes: u64,
    /// From the first to the last packet.
    pub elapsed: Duration,
}

/// A guest service's own counts (its answer to `STOP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCounts {
    pub packets: u64,
    pub bytes: u64,
}

/// Round trips with a window of datagrams in flight.
#[derive(Clone, Copy, Debug)]
pub struct Echoed {
    pub round_trips: u64,
    pub sent: u64,
    pub elapsed: Duration,
}

/// A received frame, as far as the wire cares.
enum Frame {
    /// An ARP request for our address (answered at once).
    ArpRequest {
        mac: EthernetAddress,
        ip: Ipv4Address,
    },
    ArpReply {
        mac: EthernetAddress,
        ip: Ipv4Address,
    },
    /// A UDP datagram from the guest: its source port and payload range.
    Udp {
        src_port: u16,
        payload: std::ops::Range<usize>,
    },
    Tcp(TcpSegment),
    Other,
}

/// A TCP segment from the guest, as far as a test cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSegment {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: Option<u32>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: Vec<u8>,
}

/// The control flags of a segment sent with [`Wire::send_tcp`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub fin: bool,
    pub psh: bool,
}

pub struct Wire {
    socket: UnixDatagram,
    guest_path: PathBuf,
    host_path: PathBuf,
    guest_mac: EthernetAddress,
    buf: Vec<u8>,
}

impl Wire {
    /// Binds the host end in `dir` (before QEMU starts: QEMU sends there).
    pub fn bind(dir: &Path) -> std::io::Result<Wire> {
        std::fs::create_dir_all(dir)?;
        let (guest_path, host_path) = (dir.join("guest.sock"), dir.join("host.sock"));
        let _ = std::fs::remove_file(&guest_path);
        let _ = std::fs::remove_file(&host_path);
        let socket = UnixDatagram::bind(&host_path)?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        socket.set_write_timeout(Some(Duration::from_millis(50)))?;
        Ok(Wire { socket, guest_path, host_path, guest_mac: EthernetAddress::BROADCAST, buf: vec![0; 65536] })
    }

    /// QEMU's end (`local.path` of its dgram netdev).
    pub fn guest_path(&self) -> &Path {
        &self.guest_path
    }

    /// Our end (`remote.path` of QEMU's dgram netdev).
    pub fn host_path(&self) -> &Path {
        &self.host_path
    }

    /// Learns the guest's MAC by ARP (and teaches it ours), retrying for
    /// `timeout` (a guest's NIC may ignore the wire for a second after it
    /// starts).
    pub fn resolve_guest(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let request = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: HOST_MAC,
            source_protocol_addr: HOST_IP,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: GUEST_IP,
        };
        while Instant::now() < deadline {
            self.send(&arp_frame(EthernetAddress::BROADCAST, request));
            let until = Instant::now() + Duration::from_millis(200);
            while Instant::now() < until {
                if let Some(Frame::ArpReply { mac, ip }) = self.recv() {
                    if ip == GUEST_IP {
                        self.guest_mac = mac;
                        return Ok(());
                    }
                }
            }
        }
        Err(format!("the guest at {GUEST_IP} did not answer ARP within {timeout:?}"))
    }

    /// A UDP datagram from us to the guest's `port`.
    pub fn udp_frame(&self, port: u16, payload: &[u8]) -> Vec<u8> {
        udp_frame(HOST_MAC, self.guest_mac, HOST_IP, GUEST_IP, HOST_PORT, port, payload)
    }

    fn send(&self, frame: &[u8]) -> bool {
        self.socket.send_to(frame, &self.guest_path).is_ok()
    }

    /// The next frame (within the socket's read timeout), ARP requests for
    /// us answered on the way.
    fn recv(&mut self) -> Option<Frame> {
        let n = match self.socket.recv(&mut self.buf) {
            Ok(n) => n,
            Err(_) => return None,
        };
        let frame = parse(&self.buf[..n]);
        if let Frame::ArpRequest { mac, ip } = frame {
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: HOST_MAC,
                source_protocol_addr: HOST_IP,
                target_hardware_addr: mac,
                target_protocol_addr: ip,
            };
            self.send(&arp_frame(mac, reply));
        }
        Some(frame)
    }

    fn payload(&self, range: &std::ops::Range<usize>) -> &[u8] {
        &self.buf[range.clone()]
    }

    /// Sends `payload`-byte datagrams to the guest's `port` as fast as
    /// QEMU takes them, for `duration`. The socket applies QEMU's
    /// back-pressure: when the guest's receive ring is full QEMU stops
    /// reading, and sends wait.
    pub fn flood(&mut self, port: u16, payload: usize, duration: Duration) -> Sent {
        let frame = self.udp_frame(port, &vec![0u8; payload]);
        let start = Instant::now();
        let mut packets = 0;
        while start.elapsed() < duration {
            for _ in 0..64 {
                if self.send(&frame) {
                    packets += 1;
                }
            }
        }
        Sent { packets, elapsed: start.elapsed() }
    }

    /// Sends `STOP` to the guest's `port` until it answers with its counts.
    pub fn stop(&mut self, port: u16, timeout: Duration) -> Result<GuestCounts, String> {
        let deadline = Instant::now() + timeout;
        let stop = self.udp_frame(port, b"STOP");
        while Instant::now() < deadline {
            self.send(&stop);
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                if let Some(Frame::Udp { src_port, payload }) = self.recv() {
                    if src_port == port {
                        if let Some(counts) = parse_done(self.payload(&payload)) {
                            return Ok(counts);
                        }
                    }
                }
            }
        }
        Err(format!("no answer to STOP from the guest's port {port} within {timeout:?}"))
    }

    /// Asks the guest's source at `port` for `payload`-byte datagrams for
    /// `duration` and counts what arrives.
    pub fn receive_flood(&mut self, port: u16, payload: usize, duration: Duration) -> Result<Received, String> {
        let go = self.udp_frame(port, format!("GO size={payload} secs={:.3}", duration.as_secs_f64()).as_bytes());
        let asked = Instant::now();
        let mut first: Option<Instant> = None;
        let (mut last, mut packets, mut bytes) = (Instant::now(), 0u64, 0u64);
        let mut next_go = Instant::now();
        loop {
            let now = Instant::now();
            match first {
                None if now.duration_since(asked) > Duration::from_secs(10) => {
                    return Err(format!("the guest's source at port {port} sent nothing within 10 s of GO"))
                }
                None if now >= next_go => {
                    self.send(&go);
                    next_go = now + Duration::from_millis(250);
                }
                // Done once the flood's time is over and the wire is quiet.
                Some(f)
                    if now.duration_since(f) > duration && now.duration_since(last) > Duration::from_millis(300) =>
                {
                    break
                }
                Some(f) if now.duration_since(f) > duration + Duration::from_secs(10) => break,
                _ => {}
            }
            if let Some(Frame::Udp { src_port, payload: range }) = self.recv() {
                let is_flood = src_port == port && !self.payload(&range).starts_with(b"DONE");
                if is_flood {
                    last = Instant::now();
                    first.get_or_insert(last);
                    packets += 1;
                    bytes += range.len() as u64;
                }
            }
        }
        let elapsed = first.map_or(Duration::ZERO, |f| last.duration_since(f));
        Ok(Received { packets, bytes, elapsed })
    }

    /// Keeps `window` datagrams of `payload` bytes in flight to the guest's
    /// echo at `port` for `duration`; a window that goes quiet for 200 ms
    /// is sent again (its datagrams count as lost).
    pub fn echo(&mut self, port: u16, payload: usize, window: usize, duration: Duration) -> Echoed {
        let frame = self.udp_frame(port, &vec![0x5a; payload]);
        let start = Instant::now();
        let (mut round_trips, mut sent) = (0u64, 0u64);
        let mut quiet_since = Instant::now();
        for _ in 0..window {
            sent += self.send(&frame) as u64;
        }
        while start.elapsed() < duration {
            match self.recv() {
                Some(Frame::Udp { src_port, .. }) if src_port == port => {
                    round_trips += 1;
                    quiet_since = Instant::now();
                    sent += self.send(&frame) as u64;
                }
                _ if quiet_since.elapsed() > Duration::from_millis(200) => {
                    quiet_since = Instant::now();
                    for _ in 0..window {
                        sent += self.send(&frame) as u64;
                    }
                }
                _ => {}
            }
        }
        let elapsed = start.elapsed();
        // Let the last answers in so that they do not disturb what follows.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            self.recv();
        }
        Echoed { round_trips, sent, elapsed }
    }
}

/// TCP by hand, for tests that need a client the host's stack would not
/// be (one that delays its handshake, for one).
impl Wire {
    /// Sends one TCP segment from our `src_port` to the guest's `dst_port`.
    pub fn send_tcp(&self, src_port: u16, dst_port: u16, seq: u32, ack: Option<u32>, flags: TcpFlags, payload: &[u8]) {
        let control = match (flags.syn, flags.fin, flags.psh) {
            (true, _, _) => TcpControl::Syn,
            (_, true, _) => TcpControl::Fin,
            (_, _, true) => TcpControl::Psh,
            _ => TcpControl::None,
        };
        let repr = TcpRepr {
            src_port,
            dst_port,
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: 65535,
            window_scale: None,
            max_seg_size: flags.syn.then_some(1460),
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let eth = EthernetRepr { src_addr: HOST_MAC, dst_addr: self.guest_mac, ethertype: EthernetProtocol::Ipv4 };
        let ip = Ipv4Repr {
            src_addr: HOST_IP,
            dst_addr: GUEST_IP,
            next_header: IpProtocol::Tcp,
            payload_len: repr.buffer_len(),
            hop_limit: 64,
        };
        let mut bytes = vec![0u8; 14 + 20 + repr.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        eth.emit(&mut frame);
        let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet, &ChecksumCapabilities::default());
        repr.emit(
            &mut TcpPacket::new_unchecked(packet.payload_mut()),
            &HOST_IP.into(),
            &GUEST_IP.into(),
            &ChecksumCapabilities::default(),
        );
        self.send(&bytes);
    }

    /// The next TCP segment from the guest to our `port` within `timeout`
    /// (ARP answered, anything else skipped).
    pub fn next_tcp(&mut self, port: u16, timeout: Duration) -> Option<TcpSegment> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(Frame::Tcp(segment)) = self.recv() {
                if segment.dst_port == port {
                    return Some(segment);
                }
            }
        }
        None
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.host_path);
    }
}

/// `DONE packets=N bytes=B`.
fn parse_done(payload: &[u8]) -> Option<GuestCounts> {
    let text = std::str::from_utf8(payload.strip_prefix(b"DONE ")?).ok()?;
    let (mut packets, mut bytes) = (None, None);
    for word in text.split_whitespace() {
        match word.split_once('=')? {
            ("packets", v) => packets = v.parse().ok(),
            ("bytes", v) => bytes = v.parse().ok(),
            _ => {}
        }
    }
    Some(GuestCounts { packets: packets?, bytes: bytes? })
}

fn parse(bytes: &[u8]) -> Frame {
    let Ok(eth) = EthernetFrame::new_checked(bytes) else { return Frame::Other };
    match eth.ethertype() {
        EthernetProtocol::Arp => match ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p)) {
            Ok(ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr: mac,
                source_protocol_addr: ip,
                target_protocol_addr,
                ..
            }) => match operation {
                ArpOperation::Request if target_protocol_addr == HOST_IP => Frame::ArpRequest { mac, ip },
                ArpOperation::Reply => Frame::ArpReply { mac, ip },
                _ => Frame::Other,
            },
            _ => Frame::Other,
        },
        EthernetProtocol::Ipv4 => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return Frame::Other };
            if !matches!(ip.next_header(), IpProtocol::Udp | IpProtocol::Tcp) || ip.dst_addr() != HOST_IP {
                return Frame::Other;
            }
            if ip.next_header() == IpProtocol::Tcp {
                let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return Frame::Other };
                return Frame::Tcp(TcpSegment {
                    src_port: tcp.src_port(),
                    dst_port: tcp.dst_port(),
                    seq: tcp.seq_number().0 as u32,
                    ack: tcp.ack().then(|| tcp.ack_number().0 as u32),
                    syn: tcp.syn(),
                    fin: tcp.fin(),
                    rst: tcp.rst(),
                    payload: tcp.payload().to_vec(),
                });
            }
            let Ok(udp) = UdpPacket::new_checked(ip.payload()) else { return Frame::Other };
            let start = 14 + ip.header_len() as usize + 8;
            let len = udp.payload().len();
            Frame::Udp { src_port: udp.src_port(), payload: start..start + len }
        }
        _ => Frame::Other,
    }
}

fn arp_frame(dst: EthernetAddress, arp: ArpRepr) -> Vec<u8> {
    let eth = EthernetRepr { src_addr: HOST_MAC, dst_addr: dst, ethertype: EthernetProtocol::Arp };
    let mut bytes = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    bytes
}

/// An Ethernet/IPv4/UDP frame with valid checksums.
pub fn udp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv4Address,
    dst_ip: Ipv4Address,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut bytes = vec![0u8; HEADERS + payload.len()];
    let eth = EthernetRepr { src_addr: src_mac, dst_addr: dst_mac, ethertype: EthernetProtocol::Ipv4 };
    let ip = Ipv4Repr {
        src_addr: src_ip,
        dst_addr: dst_ip,
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        hop_limit: 64,
    };
    let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &ChecksumCapabilities::default());
    let mut udp = UdpPacket::new_unchecked(packet.payload_mut());
    udp.set_src_port(src_port);
    udp.set_dst_port(dst_port);
    udp.set_len((8 + payload.len()) as u16);
    udp.payload_mut().copy_from_slice(payload);
    udp.fill_checksum(&src_ip.into(), &dst_ip.into());
    bytes
}

/// An Ethernet/IPv4/TCP frame of the segment `repr` says, with valid
/// checksums.
pub fn tcp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv4Address,
    dst_ip: Ipv4Address,
    repr: &TcpRepr,
) -> Vec<u8> {
    let eth = EthernetRepr { src_addr: src_mac, dst_addr: dst_mac, ethertype: EthernetProtocol::Ipv4 };
    let ip = Ipv4Repr {
        src_addr: src_ip,
        dst_addr: dst_ip,
        next_header: IpProtocol::Tcp,
        payload_len: repr.buffer_len(),
        hop_limit: 64,
    };
    let mut bytes = vec![0u8; eth.buffer_len() + ip.buffer_len() + repr.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    let checksums = ChecksumCapabilities::default();
    ip.emit(&mut packet, &checksums);
    repr.emit(&mut TcpPacket::new_unchecked(packet.payload_mut()), &src_ip.into(), &dst_ip.into(), &checksums);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_parser() {
        let frame = udp_frame(
            EthernetAddress([2, 0, 0, 0, 0, 2]),
            HOST_MAC,
            GUEST_IP,
            HOST_IP,
            9001,
            HOST_PORT,
            b"DONE packets=5 bytes=110",
        );
        let Frame::Udp { src_port, payload } = parse(&frame) else { panic!("not parsed as UDP") };
        assert_eq!(src_port, 9001);
        assert_eq!(parse_done(&frame[payload]), Some(GuestCounts { packets: 5, bytes: 110 }));
        assert!(matches!(parse(&frame[..20]), Frame::Other));
    }

    #[test]
    fn done_answers_are_checked() {
        assert_eq!(parse_done(b"DONE packets=1 bytes=2"), Some(GuestCounts { packets: 1, bytes: 2 }));
        assert_eq!(parse_done(b"DONE packets=1"), None);
        assert_eq!(parse_done(b"DONE packets=x bytes=2"), None);
        assert_eq!(parse_done(b"GO size=1"), None);
    }
}
