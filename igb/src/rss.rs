//! Receive-side scaling: the Toeplitz hash the device computes over a
//! received frame's addresses and ports, and the redirection table that
//! turns the hash into a queue. The kernel uses [`Rss::queue_of_tcp4`] to
//! know which queue (hence which cpu) a TCP flow's frames arrive on, and to
//! choose source ports for outgoing connections.

/// The key used unless the caller gives one: the key of Microsoft's RSS
/// verification suite, which spreads real addresses well.
pub const DEFAULT_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b,
    0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac,
    0x01, 0xfa,
];

/// Entries of the redirection table (indexed by the hash's low 7 bits).
pub const RETA_ENTRIES: usize = 128;

/// The device's RSS state: the hash key and the redirection table (queue
/// of each entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rss {
    /// The Toeplitz hash key.
    pub key: [u8; 40],
    /// The queue of each redirection-table entry.
    pub reta: [u8; RETA_ENTRIES],
}

/// The Toeplitz hash of `input` under `key`: for every set bit of the
/// input (most significant first), the 32 key bits starting at that bit's
/// position are XORed into the result. Inputs longer than the key allows
/// (36 bytes: the key must reach 32 bits past the last input bit) hash
/// only their first 36 bytes.
pub fn toeplitz(key: &[u8; 40], input: &[u8]) -> u32 {
    let mut hash = 0u32;
    // The 32-bit window of the key that lines up with the current bit, and
    // the next key byte to shift in.
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    for (i, &byte) in input.iter().take(key.len() - 4).enumerate() {
        let next = key[i + 4];
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = window << 1 | u32::from(next >> (7 - bit) & 1);
        }
    }
    hash
}

impl Rss {
    /// `key`, with the redirection table spreading its entries evenly over
    /// `queues` queues (entry i to queue i mod queues). `queues` is taken
    /// as at least 1.
    pub fn spread(key: [u8; 40], queues: usize) -> Rss {
        let queues = queues.max(1);
        Rss { key, reta: core::array::from_fn(|i| (i % queues) as u8) }
    }

    /// The hash of a TCP/IPv4 frame from `src` to `dst` (as the NIC
    /// receives it: `src` is its sender).
    pub fn hash_tcp4(&self, src: [u8; 4], dst: [u8; 4], src_port: u16, dst_port: u16) -> u32 {
        let mut input = [0u8; 12];
        input[..4].copy_from_slice(&src);
        input[4..8].copy_from_slice(&dst);
        input[8..10].copy_from_slice(&src_port.to_be_bytes());
        input[10..].copy_from_slice(&dst_port.to_be_bytes());
        toeplitz(&self.key, &input)
    }

    /// The queue of a hash (the device uses its low 7 bits to pick a table
    /// entry and that entry's low 4 bits as the queue).
    pub fn queue_of_hash(&self, hash: u32) -> usize {
        usize::from(self.reta[hash as usize % RETA_ENTRIES] & 0x0f)
    }

    /// The queue the device puts a TCP/IPv4 frame from `src` to `dst` on.
    pub fn queue_of_tcp4(&self, src: [u8; 4], dst: [u8; 4], src_port: u16, dst_port: u16) -> usize {
        self.queue_of_hash(self.hash_tcp4(src, dst, src_port, dst_port))
    }

    /// The RSSRK register values (key byte 0 in bits 7:0 of the first).
    pub fn key_registers(&self) -> [u32; 10] {
        core::array::from_fn(|i| {
            u32::from_le_bytes([self.key[4 * i], self.key[4 * i + 1], self.key[4 * i + 2], self.key[4 * i + 3]])
        })
    }

    /// The RETA register values (entry 0 in bits 7:0 of the first).
    pub fn reta_registers(&self) -> [u32; RETA_ENTRIES / 4] {
        core::array::from_fn(|i| {
            u32::from_le_bytes([self.reta[4 * i], self.reta[4 * i + 1], self.reta[4 * i + 2], self.reta[4 * i + 3]])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Destination address and port, source address and port, IPv4 hash,
    /// TCP/IPv4 hash.
    type Vector = ([u8; 4], u16, [u8; 4], u16, u32, u32);

    /// Microsoft's "Verifying the RSS Hash Calculation" table: destination
    /// and source address and port, the IPv4-only hash and the TCP/IPv4
    /// hash, under [`DEFAULT_KEY`]. The input is source address,
    /// destination address, source port, destination port.
    const VECTORS: [Vector; 5] = [
        ([161, 142, 100, 80], 1766, [66, 9, 149, 187], 2794, 0x323e8fc2, 0x51ccc178),
        ([65, 69, 140, 83], 4739, [199, 92, 111, 2], 14230, 0xd718262a, 0xc626b0ea),
        ([12, 22, 207, 184], 38024, [24, 19, 198, 95], 12898, 0xd2d0a5de, 0x5c2b394a),
        ([209, 142, 163, 6], 2217, [38, 27, 205, 30], 48228, 0x82989176, 0xafc7327f),
        ([202, 188, 127, 2], 1303, [153, 39, 163, 191], 44251, 0x5d1809c5, 0x10e828a2),
    ];

    #[test]
    fn toeplitz_matches_microsofts_ipv4_vectors() {
        for (dst, _, src, _, ipv4, _) in VECTORS {
            let input = [src, dst].concat();
            assert_eq!(toeplitz(&DEFAULT_KEY, &input), ipv4, "{src:?} -> {dst:?}");
        }
    }

    #[test]
    fn toeplitz_matches_microsofts_tcp_ipv4_vectors() {
        let rss = Rss::spread(DEFAULT_KEY, 1);
        for (dst, dst_port, src, src_port, _, tcp) in VECTORS {
            assert_eq!(rss.hash_tcp4(src, dst, src_port, dst_port), tcp, "{src:?}:{src_port} -> {dst:?}:{dst_port}");
        }
    }

    #[test]
    fn the_redirection_table_spreads_evenly_and_flows_spread_over_every_queue() {
        for queues in 1..=16 {
            let rss = Rss::spread(DEFAULT_KEY, queues);
            let mut per_queue = [0usize; 16];
            for &q in &rss.reta {
                per_queue[q as usize] += 1;
            }
            let (min, max) = (per_queue[..queues].iter().min().unwrap(), per_queue[..queues].iter().max().unwrap());
            assert!(max - min <= 1, "{queues} queues: {per_queue:?}");
            assert!(per_queue[queues..].iter().all(|&n| n == 0));
            // 4096 client ports to one server port land on every queue,
            // none with more than twice its share.
            let mut flows = [0usize; 16];
            for port in 0..4096u16 {
                flows[rss.queue_of_tcp4([10, 0, 2, 2], [10, 0, 2, 15], 30000 + port, 80)] += 1;
            }
            let share = 4096 / queues;
            assert!(flows[..queues].iter().all(|&n| n > share / 2 && n < share * 2), "{queues} queues: {flows:?}");
        }
    }

    #[test]
    fn registers_hold_the_key_and_table_in_byte_order() {
        let rss = Rss::spread(DEFAULT_KEY, 3);
        assert_eq!(rss.key_registers()[0], 0xda56_5a6d);
        assert_eq!(rss.reta_registers()[0], 0x00_02_01_00);
        assert_eq!(rss.reta_registers()[1], 0x01_00_02_01);
    }

    #[test]
    fn long_inputs_hash_only_what_the_key_covers() {
        let long = [0xffu8; 64];
        assert_eq!(toeplitz(&DEFAULT_KEY, &long), toeplitz(&DEFAULT_KEY, &long[..36]));
    }
}
