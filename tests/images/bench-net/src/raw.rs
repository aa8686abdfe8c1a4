//! The three services straight on the e1000 rings (`raw`): one polling
//! loop takes every frame, answers ARP for our address, counts sink
//! frames, turns echo frames around (swapping addresses and ports leaves
//! every checksum valid) and, during a flood, keeps the transmit ring
//! full of one prebuilt frame. Nothing else: no stack, no copies beyond
//! the echo's.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use bravo::net::{NetError, RawNic};
use bravo::time::Instant;
use bravo::{println, thread};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol,
    Ipv4Address, Ipv4Packet, Ipv4Repr, UdpPacket,
};

use crate::{done_message, parse_go};

const ETH: usize = 14;
const IP: usize = 20;
const UDP: usize = 8;
const HEADERS: usize = ETH + IP + UDP;

/// Where a datagram came from: enough to answer it.
#[derive(Clone, Copy)]
struct Peer {
    mac: EthernetAddress,
    ip: Ipv4Address,
    port: u16,
}

/// What one received frame asks for.
enum Work {
    Nothing,
    Counted(u64),
    ArpReply(ArpRepr),
    Stop { service: u16, peer: Peer },
    Go { peer: Peer, size: usize, secs: core::time::Duration },
    Echo(usize),
}

struct Flood {
    frame: Vec<u8>,
    until: Instant,
}

pub fn serve(ip: Ipv4Addr, port: u16) -> Result<(), NetError> {
    let mut nic = RawNic::open()?;
    let mac = EthernetAddress(nic.mac());
    println!(
        "bench-net: ready on {ip}: sink {port}, source {}, echo {} (raw e1000, no stack), cpus={}",
        port + 1,
        port + 2,
        bravo::thread::cpu_count()
    );
    let (mut sink, mut source) = ((0u64, 0u64), (0u64, 0u64));
    let mut flood: Option<Flood> = None;
    let mut echo = [0u8; 2048];
    let mut idle = 0u32;
    loop {
        let mut busy = false;
        for _ in 0..256 {
            let Some(work) =
                nic.receive_with(|frame| frame.map_or(Work::Nothing, |f| classify(f, mac, ip, port, &mut echo)))
            else {
                break;
            };
            busy = true;
            match work {
                Work::Nothing => {}
                Work::Counted(bytes) => {
                    sink.0 += 1;
                    sink.1 += bytes;
                }
                Work::ArpReply(reply) => send_arp(&mut nic, mac, reply),
                Work::Echo(len) => {
                    let _ = nic.transmit_with(len, |buf| buf.copy_from_slice(&echo[..len]));
                }
                Work::Stop { service, peer } => {
                    let counts = if service == port { &mut sink } else { &mut source };
                    let done = done_message(counts.0, counts.1);
                    println!("bench-net: {} {done}", if service == port { "sink" } else { "source" });
                    send_udp(&mut nic, mac, ip, service, peer, done.as_bytes());
                    *counts = (0, 0);
                }
                Work::Go { peer, size, secs } => {
                    let mut frame = alloc::vec![0u8; HEADERS + size];
                    write_udp(&mut frame, mac, ip, port + 1, peer, size);
                    flood = Some(Flood { frame, until: Instant::now() + secs });
                }
            }
        }
        if let Some(f) = &flood {
            if Instant::now() >= f.until {
                flood = None;
            } else {
                while nic.can_transmit() {
                    nic.transmit_with(f.frame.len(), |buf| buf.copy_from_slice(&f.frame));
                    source.0 += 1;
                    source.1 += (f.frame.len() - HEADERS) as u64;
                }
                busy = true;
            }
        }
        nic.flush();
        // Nothing else runs on this cpu, but let the scheduler see its
        // mailbox now and then.
        idle = if busy { 0 } else { idle + 1 };
        if idle % 1024 == 1023 {
            thread::yield_now();
        }
    }
}

/// Decides what `frame` asks for; copies an echo frame, turned around,
/// into `echo`.
fn classify(frame: &[u8], mac: EthernetAddress, ip: Ipv4Address, port: u16, echo: &mut [u8; 2048]) -> Work {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return Work::Nothing };
    match eth.ethertype() {
        EthernetProtocol::Arp => match ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p)) {
            Ok(ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr,
                source_protocol_addr,
                target_protocol_addr,
                ..
            }) if target_protocol_addr == ip => Work::ArpReply(ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: mac,
                source_protocol_addr: ip,
                target_hardware_addr: source_hardware_addr,
                target_protocol_addr: source_protocol_addr,
            }),
            _ => Work::Nothing,
        },
        EthernetProtocol::Ipv4 => {
            let Ok(packet) = Ipv4Packet::new_checked(eth.payload()) else { return Work::Nothing };
            if packet.dst_addr() != ip || packet.next_header() != IpProtocol::Udp || packet.header_len() as usize != IP
            {
                return Work::Nothing;
            }
            let Ok(udp) = UdpPacket::new_checked(packet.payload()) else { return Work::Nothing };
            let payload = udp.payload();
            let peer = Peer { mac: eth.src_addr(), ip: packet.src_addr(), port: udp.src_port() };
            match udp.dst_port() {
                p if p == port && payload.starts_with(b"STOP") => Work::Stop { service: p, peer },
                p if p == port => Work::Counted(payload.len() as u64),
                p if p == port + 1 && payload.starts_with(b"STOP") => Work::Stop { service: p, peer },
                p if p == port + 1 => match parse_go(payload) {
                    Some((size, secs)) => Work::Go { peer, size, secs },
                    None => Work::Nothing,
                },
                p if p == port + 2 && frame.len() <= echo.len() => {
                    let echo = &mut echo[..frame.len()];
                    echo.copy_from_slice(frame);
                    echo.copy_within(6..12, 0);
                    echo[6..12].copy_from_slice(&frame[0..6]);
                    echo.copy_within(ETH + 16..ETH + 20, ETH + 12);
                    echo[ETH + 16..ETH + 20].copy_from_slice(&frame[ETH + 12..ETH + 16]);
                    echo.copy_within(ETH + IP + 2..ETH + IP + 4, ETH + IP);
                    echo[ETH + IP + 2..ETH + IP + 4].copy_from_slice(&frame[ETH + IP..ETH + IP + 2]);
                    Work::Echo(frame.len())
                }
                _ => Work::Nothing,
            }
        }
        _ => Work::Nothing,
    }
}

fn send_arp(nic: &mut RawNic, mac: EthernetAddress, reply: ArpRepr) {
    let ArpRepr::EthernetIpv4 { target_hardware_addr, .. } = reply else { return };
    let eth = EthernetRepr { src_addr: mac, dst_addr: target_hardware_addr, ethertype: EthernetProtocol::Arp };
    let len = eth.buffer_len() + reply.buffer_len();
    let _ = nic.transmit_with(len, |buf| {
        let mut frame = EthernetFrame::new_unchecked(buf);
        eth.emit(&mut frame);
        reply.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    });
}

fn send_udp(nic: &mut RawNic, mac: EthernetAddress, ip: Ipv4Address, port: u16, peer: Peer, payload: &[u8]) {
    let _ = nic.transmit_with(HEADERS + payload.len(), |buf| {
        write_udp(buf, mac, ip, port, peer, payload.len());
        buf[HEADERS..].copy_from_slice(payload);
    });
}

/// Writes Ethernet, IPv4 and UDP headers for a `size`-byte payload into
/// `buf` (UDP checksum 0: none, as IPv4 allows).
fn write_udp(buf: &mut [u8], mac: EthernetAddress, ip: Ipv4Address, port: u16, peer: Peer, size: usize) {
    let eth = EthernetRepr { src_addr: mac, dst_addr: peer.mac, ethertype: EthernetProtocol::Ipv4 };
    let ipv4 = Ipv4Repr {
        src_addr: ip,
        dst_addr: peer.ip,
        next_header: IpProtocol::Udp,
        payload_len: UDP + size,
        hop_limit: 64,
    };
    let mut frame = EthernetFrame::new_unchecked(buf);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ipv4.emit(&mut packet, &ChecksumCapabilities::default());
    let mut udp = UdpPacket::new_unchecked(packet.payload_mut());
    udp.set_src_port(port);
    udp.set_dst_port(peer.port);
    udp.set_len((UDP + size) as u16);
    udp.set_checksum(0);
}
