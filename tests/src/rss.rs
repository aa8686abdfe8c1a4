//! Receive-side scaling as the host predicts it: the Toeplitz hash
//! (Microsoft's RSS specification, which Intel's 82576 and QEMU's `igb`
//! follow) over a TCP/IPv4 flow, and the redirection table that maps the
//! hash to a queue (here straight to the cpu owning that queue). Written
//! for the tests, independently of the kernel's and the driver's own, so
//! that each checks the other.

/// The Toeplitz hash of `input` under `key`: for every set bit of the
/// input (most significant first), the 32 key bits starting at that bit's
/// position are XORed into the result. `key` must be at least 4 bytes
/// longer than `input`.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    assert!(
        key.len() >= input.len() + 4,
        "a Toeplitz key of {} bytes is too short for {} bytes of input",
        key.len(),
        input.len()
    );
    let mut hash = 0u32;
    // The 32 key bits at the current input bit, and the key bits after.
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    for (i, byte) in input.iter().enumerate() {
        let next = key[i + 4];
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = (window << 1) | u32::from((next >> (7 - bit)) & 1);
        }
    }
    hash
}

/// The hash of a TCP/IPv4 segment from `src` to `dst` as the NIC receiving
/// it computes it: source address, destination address, source port,
/// destination port, in network order.
pub fn tcp4_hash(key: &[u8], src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4) -> u32 {
    let mut input = [0u8; 12];
    input[0..4].copy_from_slice(&src.ip().octets());
    input[4..8].copy_from_slice(&dst.ip().octets());
    input[8..10].copy_from_slice(&src.port().to_be_bytes());
    input[10..12].copy_from_slice(&dst.port().to_be_bytes());
    toeplitz(key, &input)
}

/// The NIC's receive-side scaling: the key and, per redirection-table
/// entry, the cpu whose queue the entry names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rss {
    pub key: Vec<u8>,
    pub entry_cpus: Vec<usize>,
}

impl Rss {
    /// Reads `key=HEX cpus=C0,C1,...` (what the `rss-probe` image prints).
    pub fn parse(text: &str) -> Result<Rss, String> {
        let field = |name: &str| {
            text.split_whitespace().find_map(|w| w.strip_prefix(name)).ok_or_else(|| format!("no {name} in {text:?}"))
        };
        let hex = field("key=")?;
        if hex.len() % 2 != 0 {
            return Err(format!("odd-length key {hex:?}"));
        }
        let key = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| format!("key {hex:?}: {e}")))
            .collect::<Result<Vec<u8>, String>>()?;
        let entry_cpus = field("cpus=")?
            .split(',')
            .map(|c| c.parse().map_err(|e| format!("cpus: {c:?}: {e}")))
            .collect::<Result<Vec<usize>, String>>()?;
        if key.len() < 16 || entry_cpus.is_empty() {
            return Err(format!("a {}-byte key and {} table entries: not an RSS setup", key.len(), entry_cpus.len()));
        }
        Ok(Rss { key, entry_cpus })
    }

    /// The cpu whose queue receives the frames of the TCP flow from `src`
    /// to `dst`: the table entry at the hash's low bits (the table's
    /// length is a power of two: 128 entries on the 82576).
    pub fn cpu_of_tcp4(&self, src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4) -> usize {
        let hash = tcp4_hash(&self.key, src, dst) as usize;
        self.entry_cpus[hash % self.entry_cpus.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;

    /// Microsoft's verification key ("Verifying the RSS Hash Calculation").
    const KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca,
        0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b,
        0xbe, 0xac, 0x01, 0xfa,
    ];

    #[test]
    fn microsoft_verification_vectors() {
        // (source, destination, IPv4-only hash, IPv4/TCP hash)
        let vectors = [
            ("66.9.149.187:2794", "161.142.100.80:1766", 0x323e8fc2, 0x51ccc178),
            ("199.92.111.2:14230", "65.69.140.83:4739", 0xd718262a, 0xc626b0ea),
            ("24.19.198.95:12898", "12.22.207.184:38024", 0xd2d0a5de, 0x5c2b394a),
            ("38.27.205.30:48228", "209.142.163.6:2217", 0x82989176, 0xafc7327f),
            ("153.39.163.191:44251", "202.188.127.2:1303", 0x5d1809c5, 0x10e828a2),
        ];
        for (src, dst, ipv4, tcp) in vectors {
            let (src, dst): (SocketAddrV4, SocketAddrV4) = (src.parse().unwrap(), dst.parse().unwrap());
            let addresses = [src.ip().octets(), dst.ip().octets()].concat();
            assert_eq!(toeplitz(&KEY, &addresses), ipv4, "IPv4 {src} -> {dst}");
            assert_eq!(tcp4_hash(&KEY, src, dst), tcp, "TCP/IPv4 {src} -> {dst}");
        }
    }

    #[test]
    fn the_table_maps_the_hash_to_a_cpu() {
        let rss = Rss::parse(&format!(
            "rss-probe: rss key={} cpus={}",
            KEY.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            ["0", "1"].repeat(64).join(",")
        ))
        .unwrap();
        assert_eq!((rss.key.as_slice(), rss.entry_cpus.len()), (&KEY[..], 128));
        let (src, dst) = ("66.9.149.187:2794".parse().unwrap(), "161.142.100.80:1766".parse().unwrap());
        // 0x51ccc178 % 128 = 0x78 = 120: an even entry, cpu 0.
        assert_eq!(rss.cpu_of_tcp4(src, dst), 0);
        assert!(Rss::parse("rss-probe: rss none").is_err());
        assert!(Rss::parse("key=zz cpus=0").is_err());
    }
}
