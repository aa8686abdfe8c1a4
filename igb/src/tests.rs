//! The driver's behaviour against the simulated device, as a specification.

use smoltcp::phy::{ChecksumCapabilities, Device, RxToken, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::*;

use super::Error;
use super::*;
use crate::regs::*;
use crate::sim::{Sim, MAC};

fn device(queues: usize, msix: bool) -> (Igb<Sim>, Sim) {
    let sim = Sim::new();
    (Igb::new(sim.clone(), queues, msix).expect("the simulated device sets up"), sim)
}

fn one_queue() -> (Queue<Sim>, Sim) {
    let (igb, sim) = device(1, true);
    (igb.queue(0).expect("queue 0 starts"), sim)
}

const CLIENT: [u8; 4] = [10, 0, 2, 2];
const SERVER: [u8; 4] = [10, 0, 2, 15];

/// An Ethernet + IPv4 frame from CLIENT to SERVER carrying `protocol`'s
/// `l4` bytes, checksums right unless mangled afterwards.
fn ipv4(protocol: IpProtocol, l4_len: usize, emit: impl FnOnce(&mut [u8], IpAddress, IpAddress)) -> Vec<u8> {
    let mut bytes = vec![0u8; 14 + 20 + l4_len];
    let mut eth = EthernetFrame::new_unchecked(&mut bytes[..]);
    EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
        dst_addr: EthernetAddress(MAC),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut eth);
    let (src, dst) = (Ipv4Address::from(CLIENT), Ipv4Address::from(SERVER));
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    Ipv4Repr { src_addr: src, dst_addr: dst, next_header: protocol, payload_len: l4_len, hop_limit: 64 }
        .emit(&mut ip, &ChecksumCapabilities::default());
    emit(ip.payload_mut(), src.into(), dst.into());
    bytes
}

fn tcp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    tcp_with(&ChecksumCapabilities::default(), src_port, dst_port, payload)
}

/// A TCP frame whose TCP checksum is computed as `caps` says (left zero
/// when the device computes it).
fn tcp_with(caps: &ChecksumCapabilities, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let repr = TcpRepr {
        src_port,
        dst_port,
        control: TcpControl::Psh,
        seq_number: TcpSeqNumber(1),
        ack_number: Some(TcpSeqNumber(2)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    ipv4(IpProtocol::Tcp, repr.buffer_len(), |b, s, d| repr.emit(&mut TcpPacket::new_unchecked(b), &s, &d, caps))
}

fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    udp_with(&ChecksumCapabilities::default(), src_port, dst_port, payload)
}

fn udp_with(caps: &ChecksumCapabilities, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let repr = UdpRepr { src_port, dst_port };
    ipv4(IpProtocol::Udp, 8 + payload.len(), |b, s, d| {
        repr.emit(&mut UdpPacket::new_unchecked(b), &s, &d, payload.len(), |p| p.copy_from_slice(payload), caps)
    })
}

fn arp() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].fill(0xff);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f
}

/// A TCP segment's first fragment (more-fragments set).
fn tcp_fragment(src_port: u16) -> Vec<u8> {
    let mut f = tcp(src_port, 80, b"fragmented");
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_more_frags(true);
    ip.fill_checksum();
    f
}

#[test]
fn setup_resets_brings_the_link_up_and_programs_rss_and_msix() {
    let (igb, sim) = device(4, true);
    assert_eq!(igb.mac(), MAC);
    assert!(igb.link_up(), "auto-negotiation was restarted");
    assert_eq!(igb.queues(), 4);
    let writes = sim.0.borrow().writes.clone();
    let reset = writes.iter().position(|&(r, v)| r == CTRL && v & CTRL_RST != 0).expect("a reset");
    assert!(writes[..reset].iter().all(|&(r, _)| r == IMC || r == EIMC), "only interrupt masks before the reset");
    assert_ne!(sim.reg(CTRL) & CTRL_SLU, 0);
    assert_ne!(sim.reg(RAH0) & RAH_AV, 0);
    assert_eq!(sim.reg(MRQC), MRQC_RSS | MRQC_RSS_FIELD_IPV4_TCP, "RSS over TCP/IPv4 only");
    assert_eq!(sim.reg(RXCSUM), RXCSUM_IPOFLD | RXCSUM_TUOFLD | RXCSUM_PCSD);
    assert_eq!(sim.reg(GPIE) & GPIE_MSIX_MODE, GPIE_MSIX_MODE);
    for q in 0..4 {
        assert_eq!(sim.reg(IVAR0 + 4 * q) & 0xff, q | IVAR_VALID, "queue {q}'s receive cause goes to vector {q}");
        assert_eq!(sim.reg(IVAR0 + 4 * q) & 0xff00, 0, "transmit causes stay unmapped");
    }
    assert_eq!((sim.reg(EIAC), sim.reg(IVAR_MISC)), (0, 0));
    assert_eq!(sim.reg(rxdctl(0)) & QUEUE_ENABLE, 0, "no queue runs before its rings exist");
    assert_eq!(sim.writes_to(RCTL), 1);
    assert_ne!(sim.reg(RCTL) & RCTL_EN, 0);
    assert_ne!(sim.reg(TCTL) & TCTL_EN, 0);
    assert_eq!(igb.rss(), &rss::Rss::spread(rss::DEFAULT_KEY, 4));
}

#[test]
fn a_queue_gets_advanced_rings_of_its_own() {
    let (igb, sim) = device(3, true);
    let queue = igb.queue(2).unwrap();
    assert_eq!(queue.index(), 2);
    assert_eq!(sim.reg(rdlen(2)), (RING_LEN * 16) as u32);
    assert_eq!(sim.reg(srrctl(2)), 2 | SRRCTL_DESCTYPE_ADV_ONEBUF);
    assert_eq!(sim.reg(rdt(2)), RING_LEN as u32 - 1, "all but one buffer go to the device");
    assert_ne!(sim.reg(rxdctl(2)) & QUEUE_ENABLE, 0);
    assert_ne!(sim.reg(txdctl(2)) & QUEUE_ENABLE, 0);
    assert_eq!(sim.reg(rdlen(1)), 0, "other queues are left alone");
    assert_eq!(igb.queue(2).err(), Some(Error::QueueTaken(2)));
    assert_eq!(igb.queue(3).err(), Some(Error::NoSuchQueue(3)));
}

#[test]
fn queue_counts_are_checked_and_no_msix_means_one_queue() {
    assert_eq!(Igb::new(Sim::new(), 0, true).err(), Some(Error::BadQueueCount(0)));
    assert_eq!(Igb::new(Sim::new(), MAX_QUEUES + 1, true).err(), Some(Error::BadQueueCount(17)));
    let (igb, sim) = device(4, false);
    assert_eq!((igb.queues(), igb.msix()), (1, false));
    assert_eq!(sim.reg(GPIE), 0);
    assert_eq!(igb.queue(1).err(), Some(Error::NoSuchQueue(1)));
}

#[test]
fn the_receive_ring_wraps_around_many_times_with_one_doorbell_per_batch() {
    let (mut q, sim) = one_queue();
    let before = sim.writes_to(rdt(0));
    let reads = sim.0.borrow().reads.len();
    for batch in 0..50 {
        for i in 0..100 {
            let f = tcp(1000 + i, 80, &[batch as u8; 40]);
            assert_eq!(sim.deliver(&f), Some(0), "batch {batch} frame {i} found no buffer");
        }
        for i in 0..100 {
            assert_eq!(q.receive_with(|f| f.unwrap().to_vec()), Some(tcp(1000 + i, 80, &[batch as u8; 40])));
        }
        assert_eq!(q.receive_with(|_| ()), None);
        q.flush();
    }
    assert_eq!(sim.writes_to(rdt(0)) - before, 50, "one doorbell per batch");
    assert_eq!(sim.0.borrow().reads.len(), reads, "no register read on the receive path");
    let stats = q.stats();
    assert_eq!((stats.rx_packets, stats.rx_missed, stats.rx_errors, stats.doorbells), (5000, 0, 0, 50));
}

#[test]
fn a_full_receive_ring_drops_at_the_device_and_recovers() {
    let (mut q, sim) = one_queue();
    let accepted = (0..300).filter(|&i| sim.deliver(&tcp(i, 80, b"x")).is_some()).count();
    assert_eq!(accepted, RING_LEN - 1);
    assert_eq!(q.stats().rx_missed, (300 - accepted) as u64, "read from the queue's own drop counter");
    while q.receive_with(|_| ()).is_some() {}
    q.flush();
    assert_eq!(sim.deliver(&tcp(7, 80, b"again")), Some(0));
    assert_eq!(q.receive_with(|f| f.unwrap().to_vec()), Some(tcp(7, 80, b"again")));
}

#[test]
fn frames_with_bad_checksums_are_dropped_and_counted() {
    let (mut q, sim) = one_queue();
    let mut bad_tcp = tcp(5, 80, b"payload");
    *bad_tcp.last_mut().unwrap() ^= 0xff;
    let mut bad_ip = udp(5, 53, b"query");
    bad_ip[14 + 8] ^= 0x01; // TTL, under the header checksum
    for f in [&bad_tcp, &bad_ip] {
        assert_eq!(sim.deliver(f), Some(0));
    }
    assert_eq!(sim.deliver(&udp(5, 53, b"fine")), Some(0));
    assert_eq!(q.peek_frame(), None, "a bad frame is not shown");
    assert!(q.rx_ready(), "but it waits to be taken");
    assert_eq!(q.receive_with(|f| f.is_none()), Some(true));
    assert_eq!(q.receive_with(|f| f.is_none()), Some(true));
    assert_eq!(q.receive_with(|f| f.unwrap().to_vec()), Some(udp(5, 53, b"fine")));
    assert_eq!(q.stats().rx_errors, 2);
    // smoltcp is told the device checks TCP and UDP (and computes them,
    // see the transmit tests); IPv4 headers stay with smoltcp.
    let caps = q.capabilities().checksum;
    assert!(!caps.tcp.rx() && !caps.tcp.tx() && !caps.udp.rx() && !caps.udp.tx() && caps.ipv4.rx() && caps.ipv4.tx());
}

#[test]
fn frames_to_send_wait_for_one_tail_write_and_wrap_around() {
    let (mut q, sim) = one_queue();
    let before = sim.writes_to(tdt(0));
    for batch in 0..30 {
        for i in 0..200u16 {
            let f = tcp(i, 80, &[batch; 20]);
            assert!(q.transmit_with(f.len(), |b| b.copy_from_slice(&f)).is_some(), "batch {batch} frame {i}");
        }
        assert_eq!(sim.0.borrow().sent.len(), batch as usize * 200, "nothing is sent before the flush");
        q.flush();
    }
    assert_eq!(sim.writes_to(tdt(0)) - before, 30);
    let sent = &sim.0.borrow().sent;
    assert_eq!(sent.len(), 6000);
    assert_eq!(sent[5999], (0, tcp(199, 80, &[29; 20])));
    q.flush();
    assert_eq!(sim.writes_to(tdt(0)) - before, 30, "no doorbell without new frames");
}

/// With the transmit ring full and the device stalled: a frame arrives and
/// is received; the transmit token handed with it drops its frame (the
/// ring is full). Then the device sends what was queued.
fn receive_past_the_full_ring_then_send(q: &mut Queue<Sim>, sim: &Sim) {
    sim.deliver(&tcp(9, 80, b"in"));
    let (rx, tx) = q.receive(Instant::from_millis(0)).expect("a frame waits");
    assert_eq!(rx.consume(|f| f.to_vec()), tcp(9, 80, b"in"));
    tx.consume(60, |b| b.fill(1));
    q.flush();
    sim.0.borrow_mut().tx_stalled = false;
    sim.run_tx(0);
}

#[test]
fn a_full_transmit_ring_counts_drops_and_never_stalls_reception() {
    let (mut q, sim) = one_queue();
    let now = Instant::from_millis(0);
    sim.0.borrow_mut().tx_stalled = true;
    let queued = (0..RING_LEN).filter(|&i| q.transmit_with(60, |b| b.fill(i as u8)).is_some()).count();
    assert_eq!(queued, RING_LEN - 1);
    assert!(q.transmit(now).is_none(), "no transmit token with a full ring");
    receive_past_the_full_ring_then_send(&mut q, &sim);
    assert_eq!(q.stats().tx_dropped, 2);
    assert_eq!(sim.0.borrow().sent.len(), RING_LEN - 1);
    assert!(q.transmit_with(60, |b| b.fill(0xee)).is_some(), "reclaimed descriptors are reused");
    q.flush();
    assert_eq!(sim.0.borrow().sent.last().unwrap().1, vec![0xee; 60]);
}

#[test]
fn rss_spreads_tcp_flows_as_queue_of_tcp4_predicts_and_the_rest_lands_on_queue_0() {
    let (igb, sim) = device(4, true);
    let mut queues: Vec<Queue<Sim>> = (0..4).map(|i| igb.queue(i).unwrap()).collect();
    let mut expected = vec![Vec::new(); 4];
    for port in 0..400u16 {
        let f = tcp(20000 + port * 7, 80, &port.to_be_bytes());
        let q = igb.rss().queue_of_tcp4(CLIENT, SERVER, 20000 + port * 7, 80);
        assert_eq!(sim.deliver(&f), Some(q), "port {port}");
        expected[q].push(f);
    }
    for f in [arp(), udp(5000, 53, b"dns"), tcp_fragment(40000), ipv4(IpProtocol::Icmp, 8, |b, _, _| b.fill(0))] {
        assert_eq!(sim.deliver(&f), Some(0), "{f:02x?}");
        expected[0].push(f);
    }
    for (q, expected) in queues.iter_mut().zip(&expected) {
        assert!(expected.len() > 50, "queue {} carries its share: {}", q.index(), expected.len());
        let mut got = Vec::new();
        while let Some(f) = q.receive_with(|f| f.map(<[u8]>::to_vec)) {
            got.push(f.expect("good frame"));
        }
        assert_eq!(&got, expected, "queue {}", q.index());
    }
}

#[test]
fn each_queue_rings_its_own_doorbells_and_sends_from_its_own_ring() {
    let (igb, sim) = device(3, true);
    let (mut q0, mut q2) = (igb.queue(0).unwrap(), igb.queue(2).unwrap());
    let writes = sim.0.borrow().writes.len();
    q2.transmit_with(60, |b| b.fill(2));
    q2.transmit_with(60, |b| b.fill(2));
    q0.transmit_with(60, |b| b.fill(0));
    q2.flush();
    let new: Vec<u32> = sim.0.borrow().writes[writes..].iter().map(|w| w.0).collect();
    assert_eq!(new, vec![tdt(2)], "queue 2 writes only its own tail");
    q0.flush();
    let sent: Vec<usize> = sim.0.borrow().sent.iter().map(|s| s.0).collect();
    assert_eq!(sent, vec![2, 2, 0]);
}

#[test]
fn each_queue_re_arms_only_its_own_vector_without_reading_a_shared_register() {
    let (igb, sim) = device(2, true);
    let (mut q0, mut q1) = (igb.queue(0).unwrap(), igb.queue(1).unwrap());
    q0.enable_interrupts();
    q1.enable_interrupts();
    let flow_on = |queue: usize| {
        (1..).map(|p| 30000 + p).find(|&p| igb.rss().queue_of_tcp4(CLIENT, SERVER, p, 80) == queue).unwrap()
    };
    let (p0, p1) = (flow_on(0), flow_on(1));
    let reads = sim.0.borrow().reads.len();
    sim.deliver(&tcp(p0, 80, b"a"));
    sim.deliver(&tcp(p0, 80, b"b"));
    assert_eq!(sim.0.borrow().msix_sent[..2], [1, 0], "one message until the queue re-arms");
    sim.deliver(&tcp(p1, 80, b"c"));
    assert_eq!(sim.0.borrow().msix_sent[..2], [1, 1]);
    assert_eq!(q0.acknowledge_interrupt(), 1);
    assert_eq!(sim.reg(EICR), 0b10, "queue 0 cleared its bit only");
    sim.deliver(&tcp(p0, 80, b"d"));
    sim.deliver(&tcp(p1, 80, b"e"));
    assert_eq!(sim.0.borrow().msix_sent[..2], [2, 1], "queue 1 has not re-armed yet");
    assert_eq!(q1.acknowledge_interrupt(), 2);
    sim.deliver(&tcp(p1, 80, b"f"));
    assert_eq!(sim.0.borrow().msix_sent[..2], [2, 2]);
    assert_eq!(sim.0.borrow().reads.len(), reads, "no register read to take or re-arm an interrupt");
    assert_eq!((q0.stats().interrupts, q1.stats().interrupts), (1, 1));
}

#[test]
fn a_legacy_interrupt_is_acknowledged_by_reading_its_cause() {
    let (igb, sim) = device(1, false);
    let mut q = igb.queue(0).unwrap();
    q.enable_interrupts();
    assert_eq!(q.acknowledge_interrupt(), 0);
    sim.deliver(&arp());
    assert_eq!(sim.0.borrow().legacy_raised, 1);
    assert_ne!(q.acknowledge_interrupt() & INT_RXDW, 0);
    assert_eq!(q.acknowledge_interrupt(), 0, "reading the cause clears it");
    q.raise_test_interrupt();
    assert_eq!(sim.0.borrow().legacy_raised, 2);
    assert_ne!(q.acknowledge_interrupt() & INT_LSC, 0);
    assert_eq!(q.stats().interrupts, 2);
}

/// Sends `frame` as smoltcp does, through a transmit token; false when
/// the queue gives no token (ring full).
fn send_through_smoltcp(q: &mut Queue<Sim>, frame: &[u8]) -> bool {
    match q.transmit(Instant::from_millis(0)) {
        Some(token) => {
            token.consume(frame.len(), |b| b.copy_from_slice(frame));
            true
        }
        None => false,
    }
}

/// Whether a sent frame's TCP/UDP checksum is right (smoltcp's parsers).
fn l4_checksum_ok(frame: &[u8]) -> bool {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    let (src, dst) = (IpAddress::from(ip.src_addr()), IpAddress::from(ip.dst_addr()));
    match ip.next_header() {
        IpProtocol::Tcp => TcpPacket::new_checked(ip.payload()).unwrap().verify_checksum(&src, &dst),
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            udp.checksum() != 0 && udp.verify_checksum(&src, &dst)
        }
        other => panic!("not TCP or UDP: {other}"),
    }
}

/// `frame` with 4 bytes of IPv4 options (NOPs): a 24-byte IP header,
/// needing its own checksum context.
fn with_ip_options(frame: &[u8]) -> Vec<u8> {
    let mut f = [&frame[..34], &[1, 1, 1, 1], &frame[34..]].concat();
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_header_len(24);
    ip.set_total_len(ip.total_len() + 4);
    ip.fill_checksum();
    f
}

/// The frame with its TCP/UDP checksum field zeroed, as smoltcp hands it
/// over when the device computes it; `right` is the same frame with the
/// checksum right.
fn zero_l4_checksum(right: &[u8]) -> Vec<u8> {
    let mut f = right.to_vec();
    let header = usize::from(f[14] & 0x0f) * 4;
    let field = 14 + header + if f[14 + 9] == 6 { 16 } else { 6 };
    f[field..field + 2].fill(0);
    f
}

#[test]
fn the_device_completes_tcp_and_udp_checksums_loading_each_context_once() {
    let (mut q, sim) = one_queue();
    let caps = q.capabilities().checksum;
    for i in 0..100u16 {
        let (udp_frame, tcp_frame) =
            (udp_with(&caps, 5000 + i, 53, &[i as u8; 300]), tcp_with(&caps, 6000 + i, 80, &[!i as u8; 1400]));
        assert_eq!(
            udp_frame,
            zero_l4_checksum(&udp(5000 + i, 53, &[i as u8; 300])),
            "smoltcp leaves the checksum to the device"
        );
        assert!(send_through_smoltcp(&mut q, &udp_frame) && send_through_smoltcp(&mut q, &tcp_frame));
        q.flush();
    }
    let sent = sim.0.borrow().sent.clone();
    assert_eq!(sent.len(), 200);
    for (i, (queue, frame)) in sent.iter().enumerate() {
        let n = (i / 2) as u16;
        let right = if i % 2 == 0 { udp(5000 + n, 53, &[n as u8; 300]) } else { tcp(6000 + n, 80, &[!n as u8; 1400]) };
        assert!(l4_checksum_ok(frame), "frame {i}: {frame:02x?}");
        assert_eq!((*queue, frame), (0, &right), "frame {i} leaves as if smoltcp had summed it");
    }
    assert_eq!(sim.0.borrow().contexts_loaded, 2, "one context for UDP, one for TCP, kept");
    assert_eq!(sim.reg(tdt(0)), 202, "one descriptor per frame and two context descriptors");
    // A header of another length loads its kind's context again, and the
    // other kind's context stays.
    let optioned = with_ip_options(&tcp(7, 80, b"options"));
    assert!(send_through_smoltcp(&mut q, &zero_l4_checksum(&optioned)));
    assert!(send_through_smoltcp(&mut q, &zero_l4_checksum(&udp(8, 53, b"plain"))));
    assert!(send_through_smoltcp(&mut q, &zero_l4_checksum(&tcp(9, 80, b"plain"))));
    q.flush();
    let s = sim.0.borrow();
    assert_eq!(
        &s.sent[200..].iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(),
        &[optioned, udp(8, 53, b"plain"), tcp(9, 80, b"plain")]
    );
    assert_eq!(s.contexts_loaded, 4, "TCP with options, then TCP without: UDP's context was still right");
}

#[test]
fn frames_other_than_whole_tcp_or_udp_over_ipv4_are_sent_untouched() {
    let (mut q, sim) = one_queue();
    let icmp = ipv4(IpProtocol::Icmp, 8, |b, _, _| b.copy_from_slice(&[8, 0, 0xf7, 0xff, 0, 0, 0, 0]));
    let mut padded_udp = udp(5, 53, b"pad");
    padded_udp.extend_from_slice(&[0xab; 4]); // bytes after the IP packet
    let fragment = tcp_fragment(40000);
    let runt = vec![0x08, 0x00, 0x45];
    for f in [&arp(), &icmp, &padded_udp, &fragment, &runt] {
        assert!(send_through_smoltcp(&mut q, f));
    }
    q.flush();
    let sent: Vec<Vec<u8>> = sim.0.borrow().sent.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(sent, vec![arp(), icmp, padded_udp, fragment, runt]);
    assert_eq!(sim.0.borrow().contexts_loaded, 0, "no context for frames the device does not complete");
}

#[test]
fn context_descriptors_mixed_in_keep_the_ring_right_over_thousands_of_frames() {
    let (mut q, sim) = one_queue();
    let mut expected = Vec::new();
    let (mut n, mut full_rings) = (0u32, 0);
    for batch in 0..90u32 {
        // A stalled device in every third batch: the ring fills up and the
        // queue refuses frames instead of overwriting pending ones.
        let full_before = full_rings;
        sim.0.borrow_mut().tx_stalled = batch % 3 == 2;
        // Up to 139 frames, which with 5 context descriptors every 7
        // frames fit the ring (255 slots); as many as fit when stalled.
        let stalled = batch % 3 == 2;
        let frames = if stalled { usize::MAX } else { 20 + batch as usize * 13 % 120 };
        for _ in 0..frames {
            n += 1;
            let port = (n % 60000) as u16;
            // Every kind of frame, and header lengths changing often, so
            // that context descriptors land everywhere in the ring,
            // including its last slot.
            let right = match n % 7 {
                0 => arp(),
                1 | 4 => udp(port, 53, &n.to_be_bytes()),
                2 => with_ip_options(&udp(port, 53, &[n as u8; 100])),
                3 | 5 => tcp(port, 80, &vec![n as u8; 20 + (n % 5) as usize]),
                _ => with_ip_options(&tcp(port, 80, &n.to_le_bytes())),
            };
            let handed = if right[12..14] == [0x08, 0x00] { zero_l4_checksum(&right) } else { right.clone() };
            if !send_through_smoltcp(&mut q, &handed) {
                assert!(sim.0.borrow().tx_stalled, "frame {n} refused with the device sending");
                full_rings += 1;
                break;
            }
            expected.push(right);
        }
        q.flush();
        if stalled {
            assert_eq!(full_rings, full_before + 1, "batch {batch} filled the ring");
            sim.0.borrow_mut().tx_stalled = false;
            sim.run_tx(0);
        }
    }
    let s = sim.0.borrow();
    assert!(expected.len() > 5000, "{} frames", expected.len());
    assert!(s.contexts_loaded > 1000, "{} contexts", s.contexts_loaded);
    assert_eq!(s.sent.len(), expected.len());
    for (i, ((_, sent), right)) in s.sent.iter().zip(&expected).enumerate() {
        assert_eq!(sent, right, "frame {i}");
    }
    drop(s);
    assert_eq!(q.stats().tx_dropped, 0, "a refused token drops nothing");
}

#[test]
fn a_ring_full_of_offloaded_frames_drops_and_counts_without_stalling_reception() {
    let (mut q, sim) = one_queue();
    let caps = q.capabilities().checksum;
    sim.0.borrow_mut().tx_stalled = true;
    let frame = |i: usize| udp_with(&caps, i as u16, 53, &[i as u8; 64]);
    let queued = (0..RING_LEN).take_while(|&i| send_through_smoltcp(&mut q, &frame(i))).count();
    // 255 usable slots: a context and a frame, then one slot per frame
    // while two are free (room for a context is always kept).
    assert_eq!(queued, RING_LEN - 3);
    assert!(!q.can_transmit());
    receive_past_the_full_ring_then_send(&mut q, &sim);
    assert_eq!(q.stats().tx_dropped, 1);
    assert_eq!(sim.0.borrow().sent.len(), queued);
    assert!(sim.0.borrow().sent.iter().all(|(_, f)| l4_checksum_ok(f)));
    // The context slot was reclaimed with its frame: the whole ring is
    // free again, and the context is still loaded.
    let again = (0..RING_LEN).take_while(|&i| send_through_smoltcp(&mut q, &frame(i))).count();
    assert_eq!(again, RING_LEN - 2);
    q.flush();
    assert_eq!(sim.0.borrow().contexts_loaded, 1);
    assert_eq!(sim.0.borrow().sent.len(), queued + again);
}
