//! Hostile traffic for a guest on QEMU user networking, and the link it
//! travels on.
//!
//! [`Lan`] splices the harness into the link between the guest's e1000
//! and QEMU's user network (slirp) with QEMU net filters (see
//! [`crate::Machine::user_net_spliced`]): frames the harness writes reach
//! the guest as if they came from the wire, and every frame the guest sends
//! comes to the harness first, which passes on only what is for the user
//! network's own hosts (the gateway 10.0.2.2, which carries the forwarded
//! connections of a legitimate client on 127.0.0.1, and 10.0.2.3) and
//! swallows the rest, counting it. So spoofed sources are truly
//! unreachable: nobody answers the guest's ARP for an on-link one, and
//! nothing it routes to an off-link one arrives anywhere (slirp would
//! otherwise reset the guest's SYN-ACKs, and nothing ever leaves the host).
//!
//! [`Flood`] is one bounded flood (an [`Attack`], a rate and a duration);
//! [`Lan::flood`] sends it, its frames built with smoltcp's `wire` module
//! from a seeded generator so that a run can be repeated.

use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Message,
    Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber, TcpTimestampRepr,
};

/// The guest's address on the user network (given on its command line:
/// [`GUEST_CMDLINE`]).
pub const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// QEMU's e1000 address.
pub const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
/// The user network's gateway (slirp; the source of forwarded connections).
pub const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// Slirp's DNS address.
const DNS_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 3);
/// Slirp's hosts' MAC address (52:55 and the gateway's IP).
pub const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 10, 0, 2, 2]);
/// An off-link host (TEST-NET-1) that pings the guest through the gateway;
/// the guest's replies come back to the harness.
pub const PROBE_IP: Ipv4Address = Ipv4Address::new(192, 0, 2, 1);
/// The guest's static address and gateway: restricted user networking
/// offers no router by DHCP.
pub const GUEST_CMDLINE: &str = "ip=10.0.2.15/24 gw=10.0.2.2";
/// The fastest flood [`Flood::new`] accepts, in frames per second.
pub const MAX_RATE: u32 = 50_000;
/// The longest flood [`Flood::new`] accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(10);
/// Frames queued for the user network before the harness drops them (a
/// switch port's buffer).
const USER_NET_QUEUE: usize = 4096;
const PROBE_IDENT: u16 = 0xb0b0;

/// The unix sockets QEMU's net filters connect to (QEMU is the client).
#[derive(Clone, Debug)]
pub struct LanPaths {
    /// Frames to the guest (`filter-redirector` indev on the user netdev's
    /// transmit queue).
    pub inject: PathBuf,
    /// Everything the guest sends (`filter-redirector` outdev on the user
    /// netdev's receive queue).
    pub guest_out: PathBuf,
    /// Frames passed on to the user network (the same filter's indev).
    pub to_user_net: PathBuf,
}

/// What the guest sent, by kind, as the harness saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestSent {
    /// Frames in all.
    pub frames: u64,
    /// Passed on to the user network (the legitimate traffic).
    pub to_user_net: u64,
    /// Dropped because the user network's queue was full.
    pub dropped: u64,
    /// Swallowed, by kind: ARP requests (for spoofed on-link sources),
    /// ARP replies (to spoofed requests), SYN-ACKs, RSTs, other TCP segments, ICMP echo replies, ICMP errors,
    /// anything else.
    pub arp_requests: u64,
    pub arp_replies: u64,
    pub syn_acks: u64,
    pub resets: u64,
    pub other_tcp: u64,
    pub echo_replies: u64,
    pub icmp_errors: u64,
    pub other: u64,
}

impl GuestSent {
    /// What was sent between `earlier` and `self`.
    pub fn since(&self, earlier: &GuestSent) -> GuestSent {
        GuestSent {
            frames: self.frames - earlier.frames,
            to_user_net: self.to_user_net - earlier.to_user_net,
            dropped: self.dropped - earlier.dropped,
            arp_requests: self.arp_requests - earlier.arp_requests,
            arp_replies: self.arp_replies - earlier.arp_replies,
            syn_acks: self.syn_acks - earlier.syn_acks,
            resets: self.resets - earlier.resets,
            other_tcp: self.other_tcp - earlier.other_tcp,
            echo_replies: self.echo_replies - earlier.echo_replies,
            icmp_errors: self.icmp_errors - earlier.icmp_errors,
            other: self.other - earlier.other,
        }
    }
}

impl std::fmt::Display for GuestSent {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} frames: {} to the user network ({} dropped), {} ARP requests, {} ARP replies, {} SYN-ACKs, {} RSTs, {} other TCP, \
             {} echo replies, {} ICMP errors, {} other",
            self.frames,
            self.to_user_net,
            self.dropped,
            self.arp_requests,
            self.arp_replies,
            self.syn_acks,
            self.resets,
            self.other_tcp,
            self.echo_replies,
            self.icmp_errors,
            self.other
        )
    }
}

/// The counters behind [`GuestSent`], shared with the forwarding thread.
#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    to_user_net: AtomicU64,
    dropped: AtomicU64,
    arp_requests: AtomicU64,
    arp_replies: AtomicU64,
    syn_acks: AtomicU64,
    resets: AtomicU64,
    other_tcp: AtomicU64,
    echo_replies: AtomicU64,
    icmp_errors: AtomicU64,
    other: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> GuestSent {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GuestSent {
            frames: get(&self.frames),
            to_user_net: get(&self.to_user_net),
            dropped: get(&self.dropped),
            arp_requests: get(&self.arp_requests),
            arp_replies: get(&self.arp_replies),
            syn_acks: get(&self.syn_acks),
            resets: get(&self.resets),
            other_tcp: get(&self.other_tcp),
            echo_replies: get(&self.echo_replies),
            icmp_errors: get(&self.icmp_errors),
            other: get(&self.other),
        }
    }
}

/// Where a frame from the guest goes.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// To the user network: ARP for, or IPv4 to, slirp's hosts (or IPv4
    /// broadcast).
    UserNet,
    /// An echo reply to [`PROBE_IP`] (ident, sequence number).
    ProbeReply(u16, u16),
    ArpRequest,
    ArpReply,
    SynAck,
    Reset,
    OtherTcp,
    EchoReply,
    IcmpError,
    Other,
}

fn judge(frame: &[u8]) -> Verdict {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return Verdict::Other };
    let for_user_net = |ip: Ipv4Address| ip == GATEWAY_IP || ip == DNS_IP;
    match eth.ethertype() {
        EthernetProtocol::Arp => match ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p)) {
            Ok(ArpRepr::EthernetIpv4 { target_protocol_addr, .. }) if for_user_net(target_protocol_addr) => {
                Verdict::UserNet
            }
            Ok(ArpRepr::EthernetIpv4 { operation: ArpOperation::Request, .. }) => Verdict::ArpRequest,
            Ok(ArpRepr::EthernetIpv4 { operation: ArpOperation::Reply, .. }) => Verdict::ArpReply,
            _ => Verdict::Other,
        },
        EthernetProtocol::Ipv4 => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return Verdict::Other };
            if for_user_net(ip.dst_addr()) || ip.dst_addr() == Ipv4Address::BROADCAST {
                return Verdict::UserNet;
            }
            match ip.next_header() {
                IpProtocol::Tcp => match TcpPacket::new_checked(ip.payload()) {
                    Ok(tcp) if tcp.rst() => Verdict::Reset,
                    Ok(tcp) if tcp.syn() && tcp.ack() => Verdict::SynAck,
                    Ok(_) => Verdict::OtherTcp,
                    Err(_) => Verdict::Other,
                },
                IpProtocol::Icmp => match Icmpv4Packet::new_checked(ip.payload()) {
                    Ok(icmp) if icmp.msg_type() == Icmpv4Message::EchoReply => {
                        if ip.dst_addr() == PROBE_IP {
                            Verdict::ProbeReply(icmp.echo_ident(), icmp.echo_seq_no())
                        } else {
                            Verdict::EchoReply
                        }
                    }
                    Ok(_) => Verdict::IcmpError,
                    Err(_) => Verdict::Other,
                },
                _ => Verdict::Other,
            }
        }
        _ => Verdict::Other,
    }
}

/// The guest's link with the harness spliced in (see the module's doc).
///
/// ```no_run
/// use bravo_tests::attack::{Attack, Flood, Lan, GUEST_CMDLINE};
/// use bravo_tests::Machine;
/// use std::time::Duration;
/// let mut lan = Lan::bind(&std::env::temp_dir().join("lan")).unwrap();
/// let _vm = Machine::new("http").cmdline(GUEST_CMDLINE).user_net_spliced(&[(8080, 80)], lan.paths()).start();
/// lan.accept(Duration::from_secs(10)).unwrap();
/// let flood = Flood::new(Attack::SpoofedSyn, 1000, Duration::from_secs(2)).unwrap();
/// lan.flood(&flood).unwrap();
/// lan.ping(Duration::from_secs(1)).unwrap();
/// ```
pub struct Lan {
    paths: LanPaths,
    listeners: Option<[UnixListener; 3]>,
    inject: Mutex<Option<UnixStream>>,
    counters: Arc<Counters>,
    probe_replies: Mutex<Option<Receiver<(u16, u16)>>>,
    next_probe: AtomicU64,
}

impl Lan {
    /// Binds the three sockets in `dir` (before QEMU starts: QEMU connects
    /// to them as it starts, and fails if they are not there).
    pub fn bind(dir: &Path) -> std::io::Result<Lan> {
        std::fs::create_dir_all(dir)?;
        let paths = LanPaths {
            inject: dir.join("inject.sock"),
            guest_out: dir.join("guest-out.sock"),
            to_user_net: dir.join("to-user-net.sock"),
        };
        let bind = |path: &Path| {
            let _ = std::fs::remove_file(path);
            UnixListener::bind(path)
        };
        let listeners = [bind(&paths.inject)?, bind(&paths.guest_out)?, bind(&paths.to_user_net)?];
        Ok(Lan {
            paths,
            listeners: Some(listeners),
            inject: Mutex::new(None),
            counters: Arc::new(Counters::default()),
            probe_replies: Mutex::new(None),
            next_probe: AtomicU64::new(0),
        })
    }

    pub fn paths(&self) -> &LanPaths {
        &self.paths
    }

    /// Takes QEMU's three connections (once QEMU runs) and starts passing
    /// the guest's frames on.
    pub fn accept(&mut self, timeout: Duration) -> Result<(), String> {
        let listeners = self.listeners.take().ok_or("the LAN is already connected")?;
        let deadline = Instant::now() + timeout;
        let mut streams = Vec::new();
        for listener in &listeners {
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            let stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => return Err(format!("QEMU did not connect its net filters within {timeout:?}: {e}")),
                }
            };
            stream.set_nonblocking(false).map_err(|e| e.to_string())?;
            streams.push(stream);
        }
        let [inject, guest_out, to_user_net]: [UnixStream; 3] = streams.try_into().expect("three streams");
        inject.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        *self.inject.lock().unwrap() = Some(inject);

        // Two threads, so that reading the guest's frames never waits for
        // QEMU to take frames for the user network (QEMU may be blocked
        // writing the guest's next frame to us at that moment).
        let (to_slirp, queued) = mpsc::sync_channel::<Vec<u8>>(USER_NET_QUEUE);
        let (replies_in, replies) = mpsc::channel();
        *self.probe_replies.lock().unwrap() = Some(replies);
        let counters = self.counters.clone();
        std::thread::spawn(move || sort_guest_frames(guest_out, counters, to_slirp, replies_in));
        std::thread::spawn(move || pass_to_user_net(to_user_net, queued));
        Ok(())
    }

    /// What the guest has sent so far.
    pub fn guest_sent(&self) -> GuestSent {
        self.counters.snapshot()
    }

    /// Writes frames (each with QEMU's 4-byte length prefix) to the guest.
    fn send(&self, frames: &[u8]) -> Result<(), String> {
        let mut inject = self.inject.lock().unwrap();
        let stream = inject.as_mut().ok_or("the LAN is not connected (call accept)")?;
        stream.write_all(frames).map_err(|e| format!("cannot write to QEMU's injection socket: {e}"))
    }

    /// One frame to the guest.
    pub fn send_frame(&self, frame: &[u8]) -> Result<(), String> {
        let mut framed = Vec::with_capacity(4 + frame.len());
        push_framed(&mut framed, frame);
        self.send(&framed)
    }

    /// Sends `flood` at its rate for its duration (in batches of a
    /// millisecond's worth); returns when the last frame was handed to QEMU.
    /// When QEMU takes frames more slowly than the rate (it reads the
    /// socket only as fast as its main loop turns), fewer frames go out:
    /// the duration is kept.
    pub fn flood(&self, flood: &Flood) -> Result<FloodReport, String> {
        let mut forge = Forge::new(flood.attack, flood.seed);
        let total = flood.frames();
        let started = Instant::now();
        let (mut sent, mut batch) = (0u64, Vec::new());
        while sent < total && started.elapsed() < flood.duration {
            let due = ((flood.rate as f64 * started.elapsed().as_secs_f64()) as u64 + 1).min(total);
            if sent >= due {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            batch.clear();
            while sent < due && batch.len() < 256 * 1024 {
                push_framed(&mut batch, &forge.next_frame());
                sent += 1;
            }
            self.send(&batch)?;
        }
        Ok(FloodReport { attack: flood.attack, frames: sent, started, ended: Instant::now() })
    }

    /// Pings the guest from [`PROBE_IP`] (through the gateway) until a
    /// reply comes back, sending a new request every 200 ms; returns the
    /// time to the first reply.
    pub fn ping(&self, timeout: Duration) -> Result<Duration, String> {
        let replies = self.probe_replies.lock().unwrap();
        let replies = replies.as_ref().ok_or("the LAN is not connected (call accept)")?;
        while replies.try_recv().is_ok() {} // answers to earlier pings
        let started = Instant::now();
        let deadline = started + timeout;
        let mut asked = Vec::new();
        while Instant::now() < deadline {
            let seq = self.next_probe.fetch_add(1, Ordering::Relaxed) as u16;
            asked.push(seq);
            let source = Source { mac: GATEWAY_MAC, ip: PROBE_IP };
            self.send_frame(&icmp_echo_frame(source, PROBE_IDENT, seq, b"are you there?"))?;
            let next = (Instant::now() + Duration::from_millis(200)).min(deadline);
            while let Some(wait) = next.checked_duration_since(Instant::now()) {
                match replies.recv_timeout(wait) {
                    Ok((PROBE_IDENT, seq)) if asked.contains(&seq) => return Ok(started.elapsed()),
                    Ok(_) => {}
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Err("QEMU closed the guest's link".into()),
                }
            }
        }
        Err(format!("no echo reply from the guest within {timeout:?} ({} requests sent)", asked.len()))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for path in [&self.paths.inject, &self.paths.guest_out, &self.paths.to_user_net] {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn push_framed(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
}

/// Reads one length-prefixed frame; `None` at the end of the stream.
fn read_framed(reader: &mut impl Read, buf: &mut Vec<u8>) -> Option<()> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).ok()?;
    buf.resize(u32::from_be_bytes(len) as usize, 0);
    reader.read_exact(buf).ok()
}

/// The forwarding thread: reads the guest's frames until QEMU goes away,
/// queues those for the user network, counts the rest.
fn sort_guest_frames(
    guest_out: UnixStream,
    counters: Arc<Counters>,
    to_slirp: SyncSender<Vec<u8>>,
    replies: mpsc::Sender<(u16, u16)>,
) {
    let mut reader = BufReader::with_capacity(256 * 1024, guest_out);
    let mut frame = Vec::new();
    while read_framed(&mut reader, &mut frame).is_some() {
        counters.frames.fetch_add(1, Ordering::Relaxed);
        let counter = match judge(&frame) {
            Verdict::UserNet => match to_slirp.try_send(frame.clone()) {
                Ok(()) => &counters.to_user_net,
                Err(TrySendError::Full(_)) => &counters.dropped,
                Err(TrySendError::Disconnected(_)) => return,
            },
            Verdict::ProbeReply(ident, seq) => {
                let _ = replies.send((ident, seq));
                &counters.echo_replies
            }
            Verdict::ArpRequest => &counters.arp_requests,
            Verdict::ArpReply => &counters.arp_replies,
            Verdict::SynAck => &counters.syn_acks,
            Verdict::Reset => &counters.resets,
            Verdict::OtherTcp => &counters.other_tcp,
            Verdict::EchoReply => &counters.echo_replies,
            Verdict::IcmpError => &counters.icmp_errors,
            Verdict::Other => &counters.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The thread that hands the guest's frames for the user network to QEMU.
fn pass_to_user_net(mut to_user_net: UnixStream, queued: Receiver<Vec<u8>>) {
    let mut framed = Vec::new();
    while let Ok(frame) = queued.recv() {
        framed.clear();
        push_framed(&mut framed, &frame);
        while let Ok(more) = queued.try_recv() {
            push_framed(&mut framed, &more);
        }
        if to_user_net.write_all(&framed).is_err() {
            return;
        }
    }
}

/// What a flood sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// SYNs to port 80 from random spoofed sources (half on-link 10.0.2.x
    /// with random MACs, half off-link via the gateway), each a new
    /// (address, port) pair, with the options a real client sends.
    SpoofedSyn,
    /// RST, ACK (some with data) and RST+ACK segments for connections that
    /// do not exist, mostly to port 80.
    UnknownRstAck,
    /// FIN and FIN+ACK segments for connections that do not exist.
    UnknownFin,
    /// ICMP echo requests from spoofed sources, 0 to 1,472 bytes.
    IcmpEcho,
    /// ARP requests for the guest from thousands of (MAC, address) pairs,
    /// on-link ones (which fill the guest's neighbour cache) and others,
    /// and requests for other hosts.
    ArpChurn,
    /// IPv4 fragments: first fragments never completed, overlapping pairs,
    /// 8-byte pieces with the last missing, lone last fragments, fragments
    /// reaching past 64 KiB, duplicates.
    Fragments,
    /// UDP datagrams to closed ports (the guest answers port unreachable).
    UdpClosedPorts,
    /// TCP segments (SYNs to port 80, ACKs, data) and IPv4 headers with
    /// wrong checksums.
    BadChecksums,
    /// TCP segments with valid checksums and garbage: options of length 0
    /// or 1, options past the header, MSS 0, window scale 255, unknown
    /// kinds, header lengths below 5 or past the segment, truncated
    /// headers, random option bytes.
    BadTcpOptions,
}

/// One bounded flood.
#[derive(Clone, Copy, Debug)]
pub struct Flood {
    pub attack: Attack,
    /// Frames per second.
    pub rate: u32,
    pub duration: Duration,
    /// The generator's seed (frames are the same for the same seed).
    pub seed: u64,
}

impl Flood {
    /// A flood of `rate` frames per second for `duration`, at most
    /// [`MAX_RATE`] and [`MAX_DURATION`].
    pub fn new(attack: Attack, rate: u32, duration: Duration) -> Result<Flood, String> {
        if rate == 0 || rate > MAX_RATE {
            return Err(format!("a flood's rate must be 1 to {MAX_RATE} frames/s, not {rate}"));
        }
        if duration.is_zero() || duration > MAX_DURATION {
            return Err(format!("a flood lasts more than 0 and at most {MAX_DURATION:?}, not {duration:?}"));
        }
        Ok(Flood { attack, rate, duration, seed: 0x5eed_f100d ^ attack as u64 })
    }

    /// The number of frames it sends.
    pub fn frames(&self) -> u64 {
        ((self.rate as f64 * self.duration.as_secs_f64()) as u64).max(1)
    }
}

/// What [`Lan::flood`] did.
#[derive(Clone, Copy, Debug)]
pub struct FloodReport {
    pub attack: Attack,
    pub frames: u64,
    pub started: Instant,
    /// When the last frame was handed to QEMU.
    pub ended: Instant,
}

impl std::fmt::Display for FloodReport {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let secs = self.ended.duration_since(self.started).as_secs_f64();
        write!(
            f,
            "{:?}: {} frames in {secs:.2} s ({:.0}/s)",
            self.attack,
            self.frames,
            self.frames as f64 / secs.max(1e-9)
        )
    }
}

/// A small, seeded xorshift64* generator (frames must be repeatable, and
/// need no cryptographic quality).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    /// Seeded from the clock (a different sequence each run).
    pub fn seeded() -> Rng {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Rng::new(nanos)
    }
    /// The next number of the xorshift64* sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n > 0; the bias is negligible for small n).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
    /// `min..=max` random bytes.
    fn bytes_between(&mut self, min: usize, max: usize) -> Vec<u8> {
        let len = min + self.below((max - min + 1) as u64) as usize;
        self.bytes(len)
    }
}

/// A sender on the wire: its MAC (for an off-link host, the gateway's)
/// and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Source {
    mac: EthernetAddress,
    ip: Ipv4Address,
}

impl Source {
    /// A random on-link address the guest has to ARP for (never slirp's
    /// hosts or the guest), with a random locally administered MAC.
    fn on_link(rng: &mut Rng) -> Source {
        let host = 16 + rng.below(239) as u8; // 16..=254
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&rng.bytes(6));
        mac[0] = (mac[0] & 0xfc) | 0x02;
        Source { mac: EthernetAddress(mac), ip: Ipv4Address::new(10, 0, 2, host) }
    }

    /// A random off-link address (198.18.0.0/15, the benchmarking range)
    /// arriving through the gateway.
    fn off_link(rng: &mut Rng) -> Source {
        let r = rng.next_u64();
        let ip = Ipv4Address::new(198, 18 + (r & 1) as u8, (r >> 8) as u8, 1 + ((r >> 16) % 254) as u8);
        Source { mac: GATEWAY_MAC, ip }
    }

    fn random(rng: &mut Rng) -> Source {
        if rng.chance(50) {
            Source::on_link(rng)
        } else {
            Source::off_link(rng)
        }
    }
}

fn ethernet(src: EthernetAddress, ethertype: EthernetProtocol, payload_len: usize) -> (Vec<u8>, usize) {
    let repr = EthernetRepr { src_addr: src, dst_addr: GUEST_MAC, ethertype };
    let mut bytes = vec![0u8; repr.buffer_len() + payload_len];
    repr.emit(&mut EthernetFrame::new_unchecked(&mut bytes[..]));
    (bytes, repr.buffer_len())
}

/// An IPv4 packet from `src` to the guest carrying `payload`.
fn ipv4_frame(src: Source, protocol: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: src.ip,
        dst_addr: GUEST_IP,
        next_header: protocol,
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let (mut bytes, at) = ethernet(src.mac, EthernetProtocol::Ipv4, ip.buffer_len() + payload.len());
    let mut packet = Ipv4Packet::new_unchecked(&mut bytes[at..]);
    ip.emit(&mut packet, &ChecksumCapabilities::default());
    packet.payload_mut().copy_from_slice(payload);
    bytes
}

/// A fragment of datagram `ident`: `data` at byte `offset`, `more` set
/// unless it is the last.
fn ipv4_fragment(src: Source, protocol: IpProtocol, ident: u16, offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
    let mut bytes = ipv4_frame(src, protocol, data);
    let mut packet = Ipv4Packet::new_unchecked(&mut bytes[14..]);
    packet.set_ident(ident);
    packet.set_dont_frag(false);
    packet.set_more_frags(more);
    packet.set_frag_offset(offset);
    packet.fill_checksum();
    bytes
}

fn ip_checksum(src: Ipv4Address, protocol: IpProtocol, segment: &[u8]) -> u16 {
    use smoltcp::wire::checksum;
    !checksum::combine(&[
        checksum::pseudo_header_v4(&src, &GUEST_IP, protocol, segment.len() as u32),
        checksum::data(segment),
    ])
}

/// A TCP segment to the guest as a [`TcpRepr`] says (valid checksums).
fn tcp_frame(src: Source, repr: &TcpRepr) -> Vec<u8> {
    crate::traffic::tcp_frame(src.mac, GUEST_MAC, src.ip, GUEST_IP, repr)
}

/// The flags of a hand-made TCP header.
#[derive(Clone, Copy, Default)]
struct Flags {
    syn: bool,
    ack: bool,
    rst: bool,
    fin: bool,
}

/// A TCP segment built byte by byte: `options` as given (the header length
/// field says `header_words` 32-bit words, whatever the options' length),
/// checksum valid over whatever the segment holds.
fn raw_tcp_frame(
    src: Source,
    dst_port: u16,
    flags: Flags,
    header_words: u8,
    options: &[u8],
    payload: &[u8],
    rng: &mut Rng,
) -> Vec<u8> {
    let mut segment = vec![0u8; 20 + options.len() + payload.len()];
    let mut tcp = TcpPacket::new_unchecked(&mut segment[..]);
    tcp.set_src_port(1024 + rng.below(64512) as u16);
    tcp.set_dst_port(dst_port);
    tcp.set_seq_number(TcpSeqNumber(rng.next_u64() as i32));
    tcp.set_ack_number(TcpSeqNumber(if flags.ack { rng.next_u64() as i32 } else { 0 }));
    tcp.set_syn(flags.syn);
    tcp.set_ack(flags.ack);
    tcp.set_rst(flags.rst);
    tcp.set_fin(flags.fin);
    tcp.set_window_len(65535);
    // The header length is the top 4 bits of byte 12 (`set_header_len`
    // insists on a sane value; a lie is the point here).
    segment[12] = (segment[12] & 0x0f) | ((header_words & 0xf) << 4);
    segment[20..20 + options.len()].copy_from_slice(options);
    segment[20 + options.len()..].copy_from_slice(payload);
    let sum = ip_checksum(src.ip, IpProtocol::Tcp, &segment);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
    ipv4_frame(src, IpProtocol::Tcp, &segment)
}

fn icmp_echo_frame(src: Source, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let repr = Icmpv4Repr::EchoRequest { ident, seq_no, data };
    let mut icmp = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Icmpv4Packet::new_unchecked(&mut icmp[..]), &ChecksumCapabilities::default());
    ipv4_frame(src, IpProtocol::Icmp, &icmp)
}

fn arp_request_frame(src: Source, target: Ipv4Address) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: src.mac,
        source_protocol_addr: src.ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let repr =
        EthernetRepr { src_addr: src.mac, dst_addr: EthernetAddress::BROADCAST, ethertype: EthernetProtocol::Arp };
    let mut bytes = vec![0u8; repr.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
    repr.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    bytes
}

fn udp_frame(src: Source, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    crate::traffic::udp_frame(src.mac, GUEST_MAC, src.ip, GUEST_IP, src_port, dst_port, payload)
}

/// The TCP options a real client's SYN carries: MSS, SACK permitted,
/// timestamps, window scale.
fn client_syn(src_port: u16, seq: u32, tsval: u32) -> TcpRepr<'static> {
    TcpRepr {
        src_port,
        dst_port: 80,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: None,
        window_len: 64240,
        window_scale: Some(7),
        max_seg_size: Some(1460),
        sack_permitted: true,
        sack_ranges: [None; 3],
        timestamp: Some(TcpTimestampRepr { tsval, tsecr: 0 }),
        payload: &[],
    }
}

/// Option blocks that are wrong in every way a parser can trip on (the
/// header length is fixed up to cover them, rounded up).
const GARBAGE_OPTIONS: &[&[u8]] = &[
    &[2, 0, 0, 0],                          // MSS of length 0 (a loop that never advances)
    &[2, 1, 0, 0],                          // length 1
    &[2, 4, 0, 0],                          // MSS 0
    &[2, 3, 5, 0],                          // MSS of length 3
    &[3, 3, 255, 0],                        // window scale 255
    &[3, 2, 1, 1],                          // window scale without its value
    &[4, 3, 0, 0],                          // SACK permitted of length 3
    &[5, 3, 1, 1],                          // SACK block of length 3
    &[5, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1], // SACK block ending before it starts
    &[8, 4, 0, 0],                          // timestamps of length 4
    &[30, 40, 0, 0],                        // an option longer than the header
    &[254, 255, 1, 2],                      // unknown kind, length 255
    &[0, 2, 4, 5, 180, 3, 3, 14],           // end of options, then garbage
    &[
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1,
    ],
];

/// Builds a flood's frames, one at a time (a few attacks come in groups of
/// frames, kept in `pending`).
struct Forge {
    attack: Attack,
    rng: Rng,
    pending: VecDeque<Vec<u8>>,
    count: u64,
}

impl Forge {
    fn new(attack: Attack, seed: u64) -> Forge {
        Forge { attack, rng: Rng::new(seed), pending: VecDeque::new(), count: 0 }
    }

    fn next_frame(&mut self) -> Vec<u8> {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        self.count += 1;
        let rng = &mut self.rng;
        match self.attack {
            Attack::SpoofedSyn => {
                let src = Source::random(rng);
                let (port, seq, ts) = (1024 + rng.below(64512) as u16, rng.next_u64() as u32, rng.next_u64() as u32);
                tcp_frame(src, &client_syn(port, seq, ts))
            }
            Attack::UnknownRstAck | Attack::UnknownFin => {
                let src = Source::random(rng);
                let dst_port = if rng.chance(90) { 80 } else { 1 + rng.below(65535) as u16 };
                let flags = match (self.attack, rng.below(3)) {
                    (Attack::UnknownRstAck, 0) => Flags { rst: true, ..Flags::default() },
                    (Attack::UnknownRstAck, 1) => Flags { ack: true, ..Flags::default() },
                    (Attack::UnknownRstAck, _) => Flags { rst: true, ack: true, ..Flags::default() },
                    (_, 0) => Flags { fin: true, ..Flags::default() },
                    _ => Flags { fin: true, ack: true, ..Flags::default() },
                };
                let payload =
                    if flags.ack && !flags.rst && rng.chance(30) { rng.bytes_between(1, 512) } else { Vec::new() };
                raw_tcp_frame(src, dst_port, flags, 5, &[], &payload, rng)
            }
            Attack::IcmpEcho => {
                let src = Source::random(rng);
                let len = if rng.chance(20) { 1472 } else { rng.below(1473) as usize };
                let data = rng.bytes(len);
                icmp_echo_frame(src, rng.next_u64() as u16, rng.next_u64() as u16, &data)
            }
            Attack::ArpChurn => {
                let src = match rng.below(10) {
                    0..=5 => Source::on_link(rng),
                    _ => {
                        // Anywhere in 10.0.0.0/8 but the guest's /24: not
                        // the guest's network, ignored by a careful stack.
                        let r = rng.next_u64();
                        let second = (r >> 8) as u8;
                        let ip = Ipv4Address::new(
                            10,
                            if second == 0 { 1 } else { second },
                            (r >> 16) as u8,
                            1 + (r >> 24) as u8 % 254,
                        );
                        Source { ip, ..Source::on_link(rng) }
                    }
                };
                let target = if rng.chance(80) { GUEST_IP } else { Source::on_link(rng).ip };
                arp_request_frame(src, target)
            }
            Attack::Fragments => {
                self.fragments();
                self.pending.pop_front().expect("at least one fragment")
            }
            Attack::UdpClosedPorts => {
                let src = Source::random(rng);
                let port = loop {
                    let port = 1 + rng.below(65535) as u16;
                    if port != 80 {
                        break port;
                    }
                };
                let data = rng.bytes_between(0, 512);
                udp_frame(src, 1024 + rng.below(64512) as u16, port, &data)
            }
            Attack::BadChecksums => {
                let src = Source::random(rng);
                let mut frame = match rng.below(3) {
                    0 => tcp_frame(src, &client_syn(1024 + rng.below(64512) as u16, rng.next_u64() as u32, 1)),
                    1 => raw_tcp_frame(src, 80, Flags { ack: true, ..Flags::default() }, 5, &[], &rng.bytes(100), rng),
                    _ => udp_frame(src, 4000, 80, &rng.bytes(64)),
                };
                if rng.chance(70) {
                    // The transport checksum (TCP at 14+20+16, UDP at 14+20+6).
                    let at = if frame[23] == 6 { 50 } else { 40 };
                    frame[at] ^= 1 + rng.below(255) as u8;
                } else {
                    frame[24] ^= 1 + rng.below(255) as u8; // the IPv4 header checksum
                }
                frame
            }
            Attack::BadTcpOptions => self.bad_options(),
        }
    }

    /// One group of fragments, in `pending`.
    fn fragments(&mut self) {
        let rng = &mut self.rng;
        let src = Source::random(rng);
        let ident = rng.next_u64() as u16;
        // The datagram fragments would carry: UDP to port 80, or an echo
        // request (whose header the first fragment holds).
        let udp = udp_frame(src, 4000, 80, &rng.bytes(1400));
        let datagram = &udp[34..];
        let protocol = IpProtocol::Udp;
        let frag = |offset: usize, len: usize, more: bool| {
            let end = (offset + len).min(datagram.len());
            ipv4_fragment(src, protocol, ident, offset as u16, more, &datagram[offset.min(end)..end])
        };
        match self.count % 6 {
            0 => self.pending.push_back(frag(0, 512, true)), // the rest never comes
            1 => {
                self.pending.push_back(frag(0, 64, true));
                self.pending.push_back(frag(32, 64, false)); // overlaps the first
            }
            2 => {
                for offset in (0..128).step_by(8) {
                    self.pending.push_back(frag(offset, 8, true)); // 8-byte pieces, no last one
                }
            }
            3 => self.pending.push_back(frag(1000, 400, false)), // a last fragment alone
            4 => {
                let data = rng.bytes(64);
                // Offset 65528 + 64 bytes reaches past the largest datagram.
                self.pending.push_back(ipv4_fragment(src, protocol, ident, 65528, false, &data));
            }
            _ => {
                let first = frag(0, 256, true);
                self.pending.push_back(first.clone());
                self.pending.push_back(first); // a duplicate
                self.pending.push_back(frag(256, 256, true));
            }
        }
    }

    fn bad_options(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        let src = Source::random(rng);
        let flags = if rng.chance(50) {
            Flags { syn: true, ..Flags::default() }
        } else {
            Flags { ack: true, ..Flags::default() }
        };
        let payload = if flags.ack { rng.bytes_between(0, 63) } else { Vec::new() };
        match self.count % 20 {
            // The header length lies: past the segment, below the minimum.
            0 => raw_tcp_frame(src, 80, flags, 15, &[2, 4, 5, 180], &[], rng),
            1 => raw_tcp_frame(src, 80, flags, 4, &[], &payload, rng),
            2 => {
                // A TCP header cut short (12 of its 20 bytes, so without
                // its checksum).
                let whole = raw_tcp_frame(src, 80, flags, 5, &[], &[], rng);
                ipv4_frame(src, IpProtocol::Tcp, &whole[34..46])
            }
            3 => {
                let words = 1 + rng.below(10) as usize;
                let options = rng.bytes(4 * words);
                raw_tcp_frame(src, 80, flags, 5 + options.len() as u8 / 4, &options, &payload, rng)
            }
            n => {
                let options = GARBAGE_OPTIONS[n as usize % GARBAGE_OPTIONS.len()];
                let mut padded = options.to_vec();
                padded.resize(options.len().div_ceil(4) * 4, 0);
                raw_tcp_frame(src, 80, flags, 5 + padded.len() as u8 / 4, &padded, &payload, rng)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Attack; 9] = [
        Attack::SpoofedSyn,
        Attack::UnknownRstAck,
        Attack::UnknownFin,
        Attack::IcmpEcho,
        Attack::ArpChurn,
        Attack::Fragments,
        Attack::UdpClosedPorts,
        Attack::BadChecksums,
        Attack::BadTcpOptions,
    ];

    fn frames(attack: Attack, n: usize) -> Vec<Vec<u8>> {
        let mut forge = Forge::new(attack, 42);
        (0..n).map(|_| forge.next_frame()).collect()
    }

    fn ipv4(frame: &[u8]) -> Ipv4Packet<&[u8]> {
        let eth = EthernetFrame::new_checked(frame).expect("an Ethernet frame");
        assert_eq!(eth.dst_addr(), GUEST_MAC);
        Ipv4Packet::new_checked(&frame[14..]).expect("an IPv4 packet")
    }

    #[test]
    fn every_attack_addresses_the_guest_and_fits_a_frame() {
        for attack in ALL {
            for frame in frames(attack, 500) {
                assert!(frame.len() >= 14 + 20 && frame.len() <= 1514, "{attack:?}: a {}-byte frame", frame.len());
                let to = EthernetAddress::from_bytes(&frame[..6]);
                let expected = if attack == Attack::ArpChurn { EthernetAddress::BROADCAST } else { GUEST_MAC };
                assert_eq!(to, expected, "{attack:?}");
            }
        }
    }

    #[test]
    fn spoofed_syns_are_valid_syns_from_distinct_sources() {
        let mut sources = std::collections::HashSet::new();
        for frame in frames(Attack::SpoofedSyn, 2000) {
            let ip = ipv4(&frame);
            assert!(ip.verify_checksum());
            assert_eq!(ip.dst_addr(), GUEST_IP);
            let on_link = ip.src_addr().octets()[..3] == [10, 0, 2];
            let src_mac = EthernetFrame::new_checked(&frame[..]).unwrap().src_addr();
            assert_eq!(on_link, src_mac != GATEWAY_MAC, "off-link sources come through the gateway");
            assert!(![GATEWAY_IP, DNS_IP, GUEST_IP].contains(&ip.src_addr()));
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(tcp.verify_checksum(&ip.src_addr().into(), &GUEST_IP.into()));
            let repr = TcpRepr::parse(&tcp, &ip.src_addr().into(), &GUEST_IP.into(), &ChecksumCapabilities::default())
                .unwrap();
            assert_eq!((repr.control, repr.dst_port, repr.max_seg_size), (TcpControl::Syn, 80, Some(1460)));
            sources.insert((ip.src_addr(), repr.src_port));
        }
        assert!(sources.len() >= 1990, "only {} distinct sources in 2000 SYNs", sources.len());
    }

    #[test]
    fn bad_checksums_are_bad_and_garbage_options_are_not() {
        for frame in frames(Attack::BadChecksums, 300) {
            let ip = Ipv4Packet::new_unchecked(&frame[14..]);
            let transport_ok = match ip.next_header() {
                IpProtocol::Tcp => {
                    TcpPacket::new_unchecked(ip.payload()).verify_checksum(&ip.src_addr().into(), &GUEST_IP.into())
                }
                _ => smoltcp::wire::UdpPacket::new_unchecked(ip.payload())
                    .verify_checksum(&ip.src_addr().into(), &GUEST_IP.into()),
            };
            assert!(!(ip.verify_checksum() && transport_ok), "a frame with every checksum right");
        }
        for frame in frames(Attack::BadTcpOptions, 300) {
            let ip = ipv4(&frame);
            assert!(ip.verify_checksum());
            let segment = ip.payload();
            if segment.len() < 20 {
                continue; // the truncated header, which has no checksum field
            }
            let sum = !smoltcp::wire::checksum::combine(&[
                smoltcp::wire::checksum::pseudo_header_v4(
                    &ip.src_addr(),
                    &GUEST_IP,
                    IpProtocol::Tcp,
                    segment.len() as u32,
                ),
                smoltcp::wire::checksum::data(segment),
            ]);
            assert_eq!(sum, 0, "garbage must get past the checksum to reach the option parser");
        }
    }

    #[test]
    fn fragments_are_fragments() {
        for frame in frames(Attack::Fragments, 300) {
            let ip = ipv4(&frame);
            assert!(ip.verify_checksum());
            assert!(ip.more_frags() || ip.frag_offset() > 0, "a whole datagram among the fragments");
        }
    }

    #[test]
    fn floods_are_bounded() {
        assert!(Flood::new(Attack::IcmpEcho, 0, Duration::from_secs(1)).is_err());
        assert!(Flood::new(Attack::IcmpEcho, MAX_RATE + 1, Duration::from_secs(1)).is_err());
        assert!(Flood::new(Attack::IcmpEcho, 100, MAX_DURATION + Duration::from_millis(1)).is_err());
        assert_eq!(Flood::new(Attack::IcmpEcho, 1000, Duration::from_millis(2500)).unwrap().frames(), 2500);
    }

    #[test]
    fn the_guests_frames_are_sorted() {
        let reply = |dst: Ipv4Address| {
            let repr = Icmpv4Repr::EchoReply { ident: 7, seq_no: 9, data: b"x" };
            let mut icmp = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Icmpv4Packet::new_unchecked(&mut icmp[..]), &ChecksumCapabilities::default());
            let ip = Ipv4Repr {
                src_addr: GUEST_IP,
                dst_addr: dst,
                next_header: IpProtocol::Icmp,
                payload_len: icmp.len(),
                hop_limit: 64,
            };
            let mut bytes = vec![0u8; 14 + 20 + icmp.len()];
            EthernetRepr { src_addr: GUEST_MAC, dst_addr: GATEWAY_MAC, ethertype: EthernetProtocol::Ipv4 }
                .emit(&mut EthernetFrame::new_unchecked(&mut bytes[..]));
            let mut packet = Ipv4Packet::new_unchecked(&mut bytes[14..]);
            ip.emit(&mut packet, &ChecksumCapabilities::default());
            packet.payload_mut().copy_from_slice(&icmp);
            bytes
        };
        assert_eq!(judge(&reply(PROBE_IP)), Verdict::ProbeReply(7, 9));
        assert_eq!(judge(&reply(Ipv4Address::new(198, 18, 0, 1))), Verdict::EchoReply);
        assert_eq!(judge(&reply(GATEWAY_IP)), Verdict::UserNet);
        let to_gateway = arp_request_frame(Source { mac: GUEST_MAC, ip: GUEST_IP }, GATEWAY_IP);
        assert_eq!(judge(&to_gateway), Verdict::UserNet);
        let to_spoofed = arp_request_frame(Source { mac: GUEST_MAC, ip: GUEST_IP }, Ipv4Address::new(10, 0, 2, 77));
        assert_eq!(judge(&to_spoofed), Verdict::ArpRequest);
        assert_eq!(judge(&[0u8; 10]), Verdict::Other);
    }
}
