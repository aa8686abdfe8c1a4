//! A simulated 82576 for the unit tests: registers in a map, DMA memory
//! from the host heap (physical address = host address), and what QEMU's
//! model does that the driver relies on — reset, auto-negotiation
//! bringing the link up, RSS steering (Toeplitz over TCP/IPv4 with the key
//! and table read from the registers, everything else to queue 0), receive
//! into enabled queues with checksum status, transmit of advanced
//! descriptors on a tail write, per-queue drop counters, and MSI-X vectors
//! raised through IVAR/EICR/EIMS/EIAC as `igb_raise_interrupts` does.
//!
//! Transmit checksum offload is done as the datasheet describes the
//! 82576 (stricter than QEMU, which parses the frame itself): a context
//! descriptor loads context IDX of its queue; a data descriptor with TXSM
//! uses the context at its IDX, which must have been loaded, to find the
//! L4 header (MACLEN + IPLEN) and the checksum field (L4T), and completes
//! the checksum from the L4 header to the end of the frame, starting from
//! the seed the driver left in the field. Done bits are written back for
//! every descriptor with RS, context descriptors included, as QEMU does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use crate::regs::*;
use crate::ring::*;
use crate::{rss, Dma, Hardware};

#[derive(Default)]
pub struct State {
    pub regs: HashMap<u32, u32>,
    /// Every register write, in order.
    pub writes: Vec<(u32, u32)>,
    /// Register reads, in order.
    pub reads: Vec<u32>,
    /// Frames sent, with the queue that sent them.
    pub sent: Vec<(usize, Vec<u8>)>,
    /// While set, tail writes do not make the device send.
    pub tx_stalled: bool,
    /// MSI-X messages sent, per vector.
    pub msix_sent: [usize; 10],
    /// Legacy interrupts raised.
    pub legacy_raised: usize,
    /// Each queue's two checksum contexts, as loaded by context
    /// descriptors: (vlan_macip_lens, type_tucmd_mlhl).
    pub tx_contexts: [[Option<(u32, u32)>; 2]; 16],
    /// Context descriptors processed.
    pub contexts_loaded: usize,
}

#[derive(Clone, Default)]
pub struct Sim(pub Rc<RefCell<State>>);

pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

impl Sim {
    pub fn new() -> Self {
        let sim = Sim::default();
        {
            let mut s = sim.0.borrow_mut();
            s.regs.insert(RAL0, u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]]));
            s.regs.insert(RAH0, u32::from_le_bytes([MAC[4], MAC[5], 0, 0]));
            // As after QEMU's reset: queue 0 enabled, link down until
            // auto-negotiation completes.
            s.regs.insert(rxdctl(0), QUEUE_ENABLE);
            s.regs.insert(txdctl(0), QUEUE_ENABLE);
        }
        sim
    }

    pub fn reg(&self, register: u32) -> u32 {
        self.0.borrow().regs.get(&register).copied().unwrap_or(0)
    }

    /// How many times `register` was written.
    pub fn writes_to(&self, register: u32) -> usize {
        self.0.borrow().writes.iter().filter(|(r, _)| *r == register).count()
    }

    /// The queue RSS puts `frame` on (QEMU's `igb_rss_parse_packet`).
    pub fn steer(&self, frame: &[u8]) -> usize {
        let (mrqc, rxcsum) = (self.reg(MRQC), self.reg(RXCSUM));
        assert_eq!(mrqc & !(MRQC_RSS | MRQC_RSS_FIELD_IPV4_TCP), 0, "the simulation hashes TCP/IPv4 only");
        if mrqc & 3 != MRQC_RSS || rxcsum & RXCSUM_PCSD == 0 || mrqc & MRQC_RSS_FIELD_IPV4_TCP == 0 {
            return 0;
        }
        let Some(Parsed { tcp: Some((src_port, dst_port)), src, dst, .. }) = parse(frame) else { return 0 };
        let key: Vec<u8> = (0..10).flat_map(|i| self.reg(RSSRK + 4 * i).to_le_bytes()).collect();
        let input = [&src[..], &dst[..], &src_port.to_be_bytes()[..], &dst_port.to_be_bytes()[..]].concat();
        let hash = rss::toeplitz(key.as_slice().try_into().unwrap(), &input);
        let entry = hash & 0x7f;
        (self.reg(RETA + entry / 4 * 4) >> (8 * (entry % 4)) & 0x0f) as usize
    }

    /// The device receives `frame` from the wire: steered to a queue, into
    /// the buffer of the descriptor at that queue's head. Returns the queue,
    /// or `None` when the queue is disabled or has no buffer (counted in
    /// its RQDPC).
    pub fn deliver(&self, frame: &[u8]) -> Option<usize> {
        let q = self.steer(frame);
        if self.reg(rxdctl(q)) & QUEUE_ENABLE == 0 {
            return None;
        }
        let (head, tail, len) = (self.reg(rdh(q)), self.reg(rdt(q)), self.reg(rdlen(q)) / 16);
        if head == tail || tail >= len {
            *self.0.borrow_mut().regs.entry(rqdpc(q)).or_default() += 1;
            return None;
        }
        assert_eq!(self.reg(srrctl(q)) & (7 << 25), SRRCTL_DESCTYPE_ADV_ONEBUF, "advanced one-buffer descriptors");
        assert_eq!(self.reg(srrctl(q)) & 0x7f, 2, "2 KiB buffers");
        let base = (self.reg(rdbal(q)) as u64 | (self.reg(rdbah(q)) as u64) << 32) as *mut RxDescriptor;
        let mut written =
            RxDescriptor { status_error: RX_DD | RX_EOP, length: frame.len() as u16, ..Default::default() };
        if let Some(parsed) = parse(frame) {
            written.info = PKT_IPV4;
            written.status_error |= RX_IPCS | if parsed.ip_ok { 0 } else { RX_IPE };
            if let Some(l4_ok) = parsed.l4_ok {
                written.info |= if parsed.tcp.is_some() { PKT_TCP } else { PKT_UDP };
                written.status_error |= RX_L4CS | if l4_ok { 0 } else { RX_TCPE };
            }
        }
        // SAFETY: the driver gave the device this ring (phys = host address).
        unsafe {
            let d = base.add(head as usize);
            let buffer = d.read_volatile().info as *mut u8;
            std::ptr::copy_nonoverlapping(frame.as_ptr(), buffer, frame.len());
            d.write_volatile(written);
        }
        self.0.borrow_mut().regs.insert(rdh(q), (head + 1) % len);
        self.raise(q);
        Some(q)
    }

    /// What a written-back receive descriptor of queue `q` raises.
    fn raise(&self, q: usize) {
        let ivar = self.reg(IVAR0 + 4 * (q as u32 % 8)) >> if q < 8 { 0 } else { 16 } & 0xff;
        let mut s = self.0.borrow_mut();
        if s.regs.get(&GPIE).copied().unwrap_or(0) & GPIE_MSIX_MODE != 0 {
            if ivar & IVAR_VALID == 0 {
                return;
            }
            let bit = 1 << (ivar & 0x1f);
            let (eicr, eims) = (s.regs.get(&EICR).copied().unwrap_or(0), s.regs.get(&EIMS).copied().unwrap_or(0));
            s.regs.insert(EICR, eicr | bit);
            if eims & bit != 0 && eicr & bit == 0 {
                s.msix_sent[(ivar & 0x1f) as usize] += 1;
                let eiac = s.regs.get(&EIAC).copied().unwrap_or(0);
                *s.regs.get_mut(&EICR).unwrap() &= !(eiac & bit);
            }
        } else {
            let (icr, ims) = (s.regs.get(&ICR).copied().unwrap_or(0), s.regs.get(&IMS).copied().unwrap_or(0));
            s.regs.insert(ICR, icr | INT_RXDW);
            if ims & INT_RXDW != 0 && icr & ims == 0 {
                s.legacy_raised += 1;
            }
        }
    }

    /// Queue `q` sends everything between its head and tail.
    pub fn run_tx(&self, q: usize) {
        let (mut head, tail, len) = (self.reg(tdh(q)), self.reg(tdt(q)), self.reg(tdlen(q)) / 16);
        if self.reg(TCTL) & TCTL_EN == 0 || self.reg(txdctl(q)) & QUEUE_ENABLE == 0 {
            return;
        }
        let base = (self.reg(tdbal(q)) as u64 | (self.reg(tdbah(q)) as u64) << 32) as *mut TxDescriptor;
        while head != tail && tail < len {
            // SAFETY: as in deliver, for the transmit ring.
            let d = unsafe { base.add(head as usize).read_volatile() };
            assert_ne!(d.cmd_type_len & TX_DEXT, 0, "legacy descriptors are not implemented");
            match d.cmd_type_len & TX_DTYP_MASK {
                TX_DTYP_CONTEXT => {
                    let index = (d.olinfo_status >> TX_IDX_SHIFT & 1) as usize;
                    let mut s = self.0.borrow_mut();
                    s.tx_contexts[q][index] = Some((d.addr as u32, d.cmd_type_len));
                    s.contexts_loaded += 1;
                }
                TX_DTYP_DATA => {
                    assert_ne!(d.cmd_type_len & TX_EOP, 0, "one data descriptor per frame");
                    let length = (d.cmd_type_len & 0xffff) as usize;
                    assert_eq!((d.olinfo_status >> TX_PAYLEN_SHIFT) as usize, length);
                    // SAFETY: the driver's buffer (phys = host address).
                    let mut frame = unsafe { std::slice::from_raw_parts(d.addr as *const u8, length).to_vec() };
                    if d.olinfo_status & TX_POPTS_TXSM != 0 {
                        let index = (d.olinfo_status >> TX_IDX_SHIFT & 1) as usize;
                        let context = self.0.borrow().tx_contexts[q][index].expect("TXSM with a context never loaded");
                        insert_l4_checksum(&mut frame, context);
                    }
                    self.0.borrow_mut().sent.push((q, frame));
                }
                other => panic!("unknown descriptor type {other:#x}"),
            }
            if d.cmd_type_len & TX_RS != 0 {
                // SAFETY: as above.
                unsafe {
                    base.add(head as usize).write_volatile(TxDescriptor { olinfo_status: d.olinfo_status | TX_DD, ..d })
                };
            }
            head = (head + 1) % len;
        }
        self.0.borrow_mut().regs.insert(tdh(q), head);
    }
}

/// The device's TCP/UDP checksum insertion with a context of
/// (vlan_macip_lens, type_tucmd_mlhl): the one's complement of the sum
/// from MACLEN + IPLEN to the end of the frame, the checksum field
/// holding the driver's seed; a UDP result of 0 is sent as 0xffff.
fn insert_l4_checksum(frame: &mut [u8], (lens, tucmd): (u32, u32)) {
    assert_ne!(tucmd & TUCMD_IPV4, 0, "the context says IPv4");
    let start = (lens >> CONTEXT_MACLEN_SHIFT & 0x7f) as usize + (lens & CONTEXT_IPLEN_MASK) as usize;
    let tcp = tucmd & TUCMD_L4T_TCP != 0;
    let field = start + if tcp { 16 } else { 6 };
    assert!(field + 2 <= frame.len(), "checksum field beyond the frame");
    let sum = !smoltcp::wire::checksum::data(&frame[start..]);
    let sum = if !tcp && sum == 0 { 0xffff } else { sum };
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
}

struct Parsed {
    src: [u8; 4],
    dst: [u8; 4],
    ip_ok: bool,
    /// TCP ports, for a TCP segment that is not a fragment.
    tcp: Option<(u16, u16)>,
    /// Whether the TCP/UDP checksum is right, for a TCP or UDP packet that
    /// is not a fragment.
    l4_ok: Option<bool>,
}

fn parse(frame: &[u8]) -> Option<Parsed> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let mut parsed =
        Parsed { src: src.octets(), dst: dst.octets(), ip_ok: ip.verify_checksum(), tcp: None, l4_ok: None };
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Some(parsed);
    }
    match ip.next_header() {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
            parsed.tcp = Some((tcp.src_port(), tcp.dst_port()));
            parsed.l4_ok = Some(tcp.verify_checksum(&src.into(), &dst.into()));
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(ip.payload()).ok()?;
            parsed.l4_ok = Some(udp.verify_checksum(&src.into(), &dst.into()));
        }
        _ => {}
    }
    Some(parsed)
}

impl Hardware for Sim {
    fn read(&self, register: u32) -> u32 {
        let mut s = self.0.borrow_mut();
        s.reads.push(register);
        let clear_on_read = [ICR, EICR].contains(&register) || (0..16).any(|q| register == rqdpc(q));
        if clear_on_read {
            s.regs.remove(&register).unwrap_or(0)
        } else {
            s.regs.get(&register).copied().unwrap_or(0)
        }
    }

    fn write(&self, register: u32, value: u32) {
        let mut s = self.0.borrow_mut();
        s.writes.push((register, value));
        let reg = |s: &State, r: u32| s.regs.get(&r).copied().unwrap_or(0);
        match register {
            CTRL => {
                if value & CTRL_RST != 0 {
                    // Reset: registers back to their defaults, link down.
                    let (ral, rah) = (reg(&s, RAL0), reg(&s, RAH0) & 0xffff);
                    s.regs.clear();
                    s.regs.extend([(RAL0, ral), (RAH0, rah), (rxdctl(0), QUEUE_ENABLE), (txdctl(0), QUEUE_ENABLE)]);
                }
                s.regs.insert(CTRL, value & !CTRL_RST);
            }
            MDIC => {
                let phy_register = value >> MDIC_REG_SHIFT & 0x1f;
                if value & MDIC_OP_WRITE != 0
                    && phy_register == PHY_BMCR
                    && value & BMCR_ANRESTART != 0
                    && value & BMCR_AUTOEN != 0
                {
                    // Auto-negotiation completes (QEMU: 500 ms later).
                    let status = reg(&s, STATUS);
                    s.regs.insert(STATUS, status | STATUS_LU);
                }
                s.regs.insert(MDIC, value | MDIC_READY);
            }
            EICR => {
                let eicr = reg(&s, EICR);
                s.regs.insert(EICR, eicr & !value);
            }
            EIMS => {
                let (eims, eicr) = (reg(&s, EIMS), reg(&s, EICR));
                s.regs.insert(EIMS, eims | value);
                for v in 0..10 {
                    if eicr & !eims & value & (1 << v) != 0 {
                        s.msix_sent[v] += 1;
                    }
                }
            }
            EIMC => {
                let eims = reg(&s, EIMS);
                s.regs.insert(EIMS, eims & !value);
            }
            IMS => {
                let ims = reg(&s, IMS);
                s.regs.insert(IMS, ims | value);
            }
            IMC => {
                let ims = reg(&s, IMS);
                s.regs.insert(IMS, ims & !value);
            }
            ICS => {
                let (icr, ims) = (reg(&s, ICR), reg(&s, IMS));
                s.regs.insert(ICR, icr | value);
                if ims & value != 0 {
                    s.legacy_raised += 1;
                }
            }
            _ => {
                s.regs.insert(register, value);
            }
        }
        let stalled = s.tx_stalled;
        drop(s);
        if let Some(q) = (0..16).find(|&q| register == tdt(q)) {
            if !stalled {
                self.run_tx(q);
            }
        }
    }

    fn alloc_dma(&self, size: usize) -> Option<Dma> {
        let layout = std::alloc::Layout::from_size_align(size, 4096).ok()?;
        // SAFETY: non-zero size; leaked on purpose (the driver keeps its DMA
        // memory for good).
        let virt = std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        Some(Dma { virt, phys: virt.as_ptr() as u64, size })
    }

    fn delay_us(&self, _micros: u64) {}
}
