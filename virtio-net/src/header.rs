//! The virtio-net header before every frame (`struct virtio_net_hdr`, 12
//! bytes with VERSION_1, num_buffers included; virtio 1.1, 5.1.6) and the
//! checksum work it carries: a partial TCP/UDP checksum the device is to
//! complete on transmit (NEEDS_CSUM), and completing one the device left
//! partial on receive.
//!
//! A partial checksum holds the pseudo-header sum; summing from
//! `csum_start` to the end of the frame and storing the complement at
//! `csum_start + csum_offset` makes it whole.

use smoltcp::wire::{checksum, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet};

/// Bytes of the header.
pub const HEADER_LEN: usize = 12;
/// The frame's TCP/UDP checksum is partial (see the module doc). The
/// other flag, DATA_VALID (2, the device checked the checksums), needs
/// nothing: smoltcp verifies every checksum it receives.
pub const NEEDS_CSUM: u8 = 1;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetHeader {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

impl NetHeader {
    pub fn read(bytes: &[u8; HEADER_LEN]) -> Self {
        let word = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        Self {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: word(2),
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
            num_buffers: word(10),
        }
    }

    pub fn write(&self, bytes: &mut [u8; HEADER_LEN]) {
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        for (i, word) in
            [self.hdr_len, self.gso_size, self.csum_start, self.csum_offset, self.num_buffers].into_iter().enumerate()
        {
            bytes[2 + 2 * i..4 + 2 * i].copy_from_slice(&word.to_le_bytes());
        }
    }
}

/// For a whole, unfragmented IPv4 TCP or UDP frame: stores the
/// pseudo-header sum in its checksum field and returns the header that asks
/// the device to complete it. `None` (frame untouched) for anything else.
pub fn partial_checksum(frame: &mut [u8]) -> Option<NetHeader> {
    let ethernet = EthernetFrame::new_checked(&*frame).ok()?;
    if ethernet.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip_start = EthernetFrame::<&[u8]>::header_len();
    let ip = Ipv4Packet::new_checked(ethernet.payload()).ok()?;
    let field = match ip.next_header() {
        IpProtocol::Tcp => 16,
        IpProtocol::Udp => 6,
        _ => return None,
    };
    let header_len = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    // The device sums to the end of the frame: the IP packet must end it.
    if ip.more_frags() || ip.frag_offset() != 0 || ip_start + total != frame.len() || total < header_len + field + 2 {
        return None;
    }
    let pseudo =
        checksum::pseudo_header_v4(&ip.src_addr(), &ip.dst_addr(), ip.next_header(), (total - header_len) as u32);
    let start = ip_start + header_len;
    frame[start + field..start + field + 2].copy_from_slice(&pseudo.to_be_bytes());
    Some(NetHeader { flags: NEEDS_CSUM, csum_start: start as u16, csum_offset: field as u16, ..NetHeader::default() })
}

/// Completes the partial checksum `header` describes; false (frame
/// untouched) when the place it names lies outside the frame.
pub fn complete_checksum(frame: &mut [u8], header: &NetHeader) -> bool {
    let start = usize::from(header.csum_start);
    let field = start + usize::from(header.csum_offset);
    if start >= frame.len() || field + 2 > frame.len() {
        return false;
    }
    let sum = !checksum::data(&frame[start..]);
    // 0 means "no checksum" to UDP; 0xffff is the same sum.
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    true
}
