//! The machine as ACPI describes it: cpus (MADT), NUMA nodes of cpus and
//! memory (SRAT) and distances between nodes (SLIT).
//!
//! Fixed-capacity tables, because the topology is read before the heap
//! exists. Proximity domains are renumbered densely as nodes 0, 1, ... in
//! increasing domain order. Missing or malformed tables give a logged
//! fallback: no MADT means only the boot cpu, no SRAT means one node.

use spin::Once;

pub use crate::arch::{MAX_CPUS, MAX_IO_APICS};
/// The most NUMA nodes the kernel keeps apart.
pub const MAX_NODES: usize = 8;
pub const MAX_RANGES: usize = 32;

/// An I/O APIC: where its registers are and the first global system
/// interrupt (GSI) its pins carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    pub address: u64,
    pub gsi_base: u32,
}

/// One cpu: its APIC id and NUMA node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub apic_id: u32,
    pub node: usize,
}

/// A physical memory range owned by a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    pub start: u64,
    pub end: u64,
    pub node: usize,
}

/// The machine's cpus, NUMA nodes, memory ranges and I/O APICs.
#[derive(Clone, Debug)]
pub struct Topology {
    cpus: [Cpu; MAX_CPUS],
    cpu_count: usize,
    node_count: usize,
    ranges: [MemoryRange; MAX_RANGES],
    range_count: usize,
    /// SLIT distances (10 = local), when the firmware gives them.
    distance: Option<[[u8; MAX_NODES]; MAX_NODES]>,
    /// The I/O APICs in the MADT (QEMU's microvm has two: GSIs 0-23 and
    /// 24-47), at most [`MAX_IO_APICS`].
    io_apics: [Option<IoApic>; MAX_IO_APICS],
    /// Local APIC physical address from the MADT.
    pub local_apic: u64,
}

impl Topology {
    /// One node, one cpu (the boot cpu with `apic_id`), all memory on node 0.
    pub fn single(apic_id: u32) -> Self {
        let mut t = Self::empty();
        t.add_cpu(apic_id);
        t.node_count = 1;
        t
    }

    fn empty() -> Self {
        Self {
            cpus: [Cpu { apic_id: 0, node: 0 }; MAX_CPUS],
            cpu_count: 0,
            node_count: 1,
            ranges: [MemoryRange { start: 0, end: 0, node: 0 }; MAX_RANGES],
            range_count: 0,
            distance: None,
            io_apics: [None; MAX_IO_APICS],
            local_apic: 0xfee0_0000,
        }
    }

    fn add_cpu(&mut self, apic_id: u32) -> bool {
        if self.cpu_count == MAX_CPUS || self.cpus().iter().any(|c| c.apic_id == apic_id) {
            return false;
        }
        self.cpus[self.cpu_count] = Cpu { apic_id, node: 0 };
        self.cpu_count += 1;
        true
    }

    /// The I/O APICs the firmware describes.
    pub fn io_apics(&self) -> impl Iterator<Item = IoApic> + '_ {
        self.io_apics.iter().flatten().copied()
    }

    /// Records an I/O APIC; false when there are already [`MAX_IO_APICS`].
    pub fn add_io_apic(&mut self, io_apic: IoApic) -> bool {
        match self.io_apics.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some(io_apic);
                true
            }
            None => false,
        }
    }

    /// The cpus, by index.
    pub fn cpus(&self) -> &[Cpu] {
        &self.cpus[..self.cpu_count]
    }

    /// The number of cpus.
    pub fn cpu_count(&self) -> usize {
        self.cpu_count
    }

    /// The number of NUMA nodes.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// The node of cpu `cpu` (0 for an unknown cpu).
    pub fn node_of_cpu(&self, cpu: usize) -> usize {
        self.cpus().get(cpu).map_or(0, |c| c.node)
    }

    /// The node owning physical address `addr` (0 when no range names it).
    pub fn node_of_addr(&self, addr: u64) -> usize {
        self.ranges().iter().find(|r| r.start <= addr && addr < r.end).map_or(0, |r| r.node)
    }

    /// The memory ranges of every node, from the SRAT.
    pub fn ranges(&self) -> &[MemoryRange] {
        &self.ranges[..self.range_count]
    }

    /// Distance from node `a` to node `b`: SLIT when present, else 10
    /// locally and 20 remotely.
    pub fn distance(&self, a: usize, b: usize) -> u8 {
        match &self.distance {
            Some(matrix) if a < MAX_NODES && b < MAX_NODES => matrix[a][b],
            _ if a == b => 10,
            _ => 20,
        }
    }

    /// The other nodes in order of distance from `from`, nearest first.
    pub fn fallback_order(&self, from: usize) -> impl Iterator<Item = usize> + '_ {
        let mut order = [0usize; MAX_NODES];
        let n = self.node_count;
        for (i, slot) in order.iter_mut().enumerate().take(n) {
            *slot = i;
        }
        order[..n].sort_by_key(|&node| (self.distance(from, node), node));
        (0..n).map(move |i| order[i]).filter(move |&node| node != from)
    }
}

static TOPOLOGY: Once<Topology> = Once::new();

/// Records the machine's topology (once; later calls keep the first).
pub fn set(topology: Topology) -> &'static Topology {
    TOPOLOGY.call_once(|| topology)
}

/// The machine's topology, once known.
pub fn get() -> Option<&'static Topology> {
    TOPOLOGY.get()
}

/// Builds a topology from table entries; the ACPI reader feeds it and host
/// unit tests drive it directly.
#[derive(Default)]
pub struct Builder {
    domains: [Option<u32>; MAX_NODES],
    warnings: usize,
}

impl Builder {
    /// The dense node number of proximity domain `domain`.
    fn node_of_domain(&mut self, domain: u32) -> Option<usize> {
        if let Some(i) = self.domains.iter().position(|d| *d == Some(domain)) {
            return Some(i);
        }
        let free = self.domains.iter().position(|d| d.is_none())?;
        self.domains[free] = Some(domain);
        Some(free)
    }

    /// Renumbers nodes so that node numbers follow domain order.
    fn finish(&self, t: &mut Topology) {
        let mut order: [(u32, usize); MAX_NODES] = [(u32::MAX, 0); MAX_NODES];
        let mut n = 0;
        for (i, d) in self.domains.iter().enumerate() {
            if let Some(d) = d {
                order[n] = (*d, i);
                n += 1;
            }
        }
        order[..n].sort();
        let mut renumber = [0usize; MAX_NODES];
        for (new, &(_, old)) in order[..n].iter().enumerate() {
            renumber[old] = new;
        }
        for cpu in &mut t.cpus[..t.cpu_count] {
            cpu.node = renumber[cpu.node];
        }
        for range in &mut t.ranges[..t.range_count] {
            range.node = renumber[range.node];
        }
        t.node_count = n.max(1);
        t.ranges[..t.range_count].sort_by_key(|r| r.start);
    }
}

/// The result of reading the tables: the topology and what was wrong.
pub struct Discovered {
    pub topology: Topology,
    /// How many entries were ignored (zero-length, beyond capacity, for
    /// unknown cpus, ...).
    pub ignored: usize,
}

/// Table entries as the ACPI reader sees them.
#[derive(Clone, Copy, Debug)]
pub enum Entry {
    /// An enabled processor from the MADT.
    Cpu { apic_id: u32 },
    /// SRAT: the node of a processor.
    CpuAffinity { apic_id: u32, domain: u32 },
    /// SRAT: the node of a memory range.
    MemoryAffinity { start: u64, len: u64, domain: u32 },
}

/// Applies MADT and SRAT entries in any order (MADT cpus first keeps cpu
/// numbers in MADT order). `boot_apic_id` is listed first whatever the MADT
/// order, so that cpu 0 is always the boot cpu.
pub fn build(boot_apic_id: u32, entries: impl Iterator<Item = Entry> + Clone) -> Discovered {
    let mut t = Topology::empty();
    let mut b = Builder::default();
    t.add_cpu(boot_apic_id);
    for entry in entries.clone() {
        if let Entry::Cpu { apic_id } = entry {
            if !t.add_cpu(apic_id) && apic_id != boot_apic_id {
                b.warnings += 1;
            }
        }
    }
    for entry in entries {
        match entry {
            Entry::Cpu { .. } => {}
            Entry::CpuAffinity { apic_id, domain } => {
                let Some(node) = b.node_of_domain(domain) else {
                    b.warnings += 1;
                    continue;
                };
                match t.cpus[..t.cpu_count].iter_mut().find(|c| c.apic_id == apic_id) {
                    Some(cpu) => cpu.node = node,
                    None => b.warnings += 1,
                }
            }
            Entry::MemoryAffinity { start, len, domain } => {
                // QEMU lists a zero-length entry with no flags: skip it.
                if len == 0 {
                    continue;
                }
                match (b.node_of_domain(domain), t.range_count < MAX_RANGES) {
                    (Some(node), true) => {
                        t.ranges[t.range_count] = MemoryRange { start, end: start.saturating_add(len), node };
                        t.range_count += 1;
                    }
                    _ => b.warnings += 1,
                }
            }
        }
    }
    b.finish(&mut t);
    Discovered { ignored: b.warnings, topology: t }
}

/// Length of the standard ACPI table header.
pub const SDT_HEADER_LEN: usize = 36;

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads the entries of a whole SRAT (`table`, header included), bounds
/// checked: a truncated or inconsistent entry ends the walk and counts as
/// one problem. Returns the number of problems.
///
/// (The `acpi` crate's SRAT reader takes the one-byte entry length for a
/// two-byte one, which breaks on the second node, so Bravo reads it here.)
pub fn parse_srat(table: &[u8], mut f: impl FnMut(Entry)) -> usize {
    const ENABLED: u32 = 1;
    let mut at = SDT_HEADER_LEN + 12; // header, reserved u32, reserved u64
    while at + 2 <= table.len() {
        let (kind, len) = (table[at], table[at + 1] as usize);
        let Some(e) = table.get(at..at + len).filter(|_| len >= 2) else {
            return 1;
        };
        match (kind, len) {
            (0, 16) => {
                let domain = u32::from_le_bytes([e[2], e[9], e[10], e[11]]);
                if le_u32(e, 4).is_some_and(|flags| flags & ENABLED != 0) {
                    f(Entry::CpuAffinity { apic_id: e[3] as u32, domain });
                }
            }
            (1, 40) => {
                let (Some(domain), Some(start), Some(size), Some(flags)) =
                    (le_u32(e, 2), le_u64(e, 8), le_u64(e, 16), le_u32(e, 28))
                else {
                    return 1;
                };
                if flags & ENABLED != 0 {
                    f(Entry::MemoryAffinity { start, len: size, domain });
                }
            }
            (2, 24) => {
                let (Some(domain), Some(apic_id), Some(flags)) = (le_u32(e, 4), le_u32(e, 8), le_u32(e, 12)) else {
                    return 1;
                };
                if flags & ENABLED != 0 {
                    f(Entry::CpuAffinity { apic_id, domain });
                }
            }
            (0..=2, _) => return 1, // a known entry of the wrong size
            _ => {}                 // other architectures' and newer entries
        }
        at += len;
    }
    0
}

/// Reads a whole SLIT (`table`, header included): the number of domains
/// and the row-major distance matrix, or `None` when it does not fit.
pub fn parse_slit(table: &[u8]) -> Option<(usize, &[u8])> {
    let n = usize::try_from(le_u64(table, SDT_HEADER_LEN)?).ok()?;
    let cells = n.checked_mul(n)?;
    let start = SDT_HEADER_LEN + 8;
    Some((n, table.get(start..start.checked_add(cells)?)?))
}

/// Sets SLIT distances (row-major, `n` x `n` over proximity domains in
/// increasing order, which is also the node order).
pub fn set_distances(t: &mut Topology, n: usize, matrix: &[u8]) -> bool {
    if n != t.node_count || matrix.len() < n * n || n > MAX_NODES {
        return false;
    }
    let mut d = [[0u8; MAX_NODES]; MAX_NODES];
    for a in 0..n {
        for b in 0..n {
            d[a][b] = matrix[a * n + b];
        }
    }
    t.distance = Some(d);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_nodes() -> Topology {
        let entries = [
            Entry::Cpu { apic_id: 0 },
            Entry::Cpu { apic_id: 1 },
            Entry::Cpu { apic_id: 2 },
            Entry::Cpu { apic_id: 3 },
            Entry::CpuAffinity { apic_id: 0, domain: 0 },
            Entry::CpuAffinity { apic_id: 1, domain: 0 },
            Entry::CpuAffinity { apic_id: 2, domain: 1 },
            Entry::CpuAffinity { apic_id: 3, domain: 1 },
            Entry::MemoryAffinity { start: 0, len: 0xa0000, domain: 0 },
            Entry::MemoryAffinity { start: 0x100000, len: 0x1ff00000, domain: 0 },
            Entry::MemoryAffinity { start: 0x20000000, len: 0x20000000, domain: 1 },
            Entry::MemoryAffinity { start: 0x40000000, len: 0, domain: 0 },
        ];
        let d = build(0, entries.into_iter());
        assert_eq!(d.ignored, 0);
        d.topology
    }

    #[test]
    fn cpus_and_memory_land_on_their_nodes() {
        let t = two_nodes();
        assert_eq!(t.cpu_count(), 4);
        assert_eq!(t.node_count(), 2);
        assert_eq!((0..4).map(|c| t.node_of_cpu(c)).collect::<Vec<_>>(), [0, 0, 1, 1]);
        assert_eq!(t.node_of_addr(0x1000), 0);
        assert_eq!(t.node_of_addr(0x1fffffff), 0);
        assert_eq!(t.node_of_addr(0x20000000), 1);
        assert_eq!(t.node_of_addr(0x3fffffff), 1);
        // Zero-length entries are skipped.
        assert_eq!(t.ranges().len(), 3);
    }

    #[test]
    fn boot_cpu_is_cpu_zero_whatever_the_madt_order() {
        let entries = vec![Entry::Cpu { apic_id: 0 }, Entry::Cpu { apic_id: 1 }, Entry::Cpu { apic_id: 2 }];
        let t = build(2, entries.into_iter()).topology;
        assert_eq!(t.cpus().iter().map(|c| c.apic_id).collect::<Vec<_>>(), [2, 0, 1]);
    }

    #[test]
    fn sparse_domains_are_numbered_densely_in_domain_order() {
        let entries = vec![
            Entry::Cpu { apic_id: 0 },
            Entry::Cpu { apic_id: 1 },
            Entry::CpuAffinity { apic_id: 0, domain: 7 },
            Entry::CpuAffinity { apic_id: 1, domain: 3 },
            Entry::MemoryAffinity { start: 0, len: 4096, domain: 7 },
        ];
        let t = build(0, entries.into_iter()).topology;
        assert_eq!(t.node_count(), 2);
        assert_eq!(t.node_of_cpu(0), 1);
        assert_eq!(t.node_of_cpu(1), 0);
        assert_eq!(t.node_of_addr(0), 1);
    }

    #[test]
    fn no_srat_means_one_node() {
        let t = build(0, vec![Entry::Cpu { apic_id: 0 }, Entry::Cpu { apic_id: 1 }].into_iter()).topology;
        assert_eq!(t.node_count(), 1);
        assert_eq!(t.node_of_addr(0x1234_5678), 0);
    }

    #[test]
    fn affinity_for_an_unknown_cpu_is_counted_not_fatal() {
        let entries = vec![Entry::Cpu { apic_id: 0 }, Entry::CpuAffinity { apic_id: 9, domain: 0 }];
        let d = build(0, entries.into_iter());
        assert_eq!(d.ignored, 1);
        assert_eq!(d.topology.cpu_count(), 1);
    }

    fn sdt(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = signature.to_vec();
        t.extend_from_slice(&((SDT_HEADER_LEN + body.len()) as u32).to_le_bytes());
        t.resize(SDT_HEADER_LEN, 0);
        t.extend_from_slice(body);
        t
    }

    fn srat_cpu(apic_id: u8, domain: u32) -> Vec<u8> {
        let d = domain.to_le_bytes();
        vec![0, 16, d[0], apic_id, 1, 0, 0, 0, 0, d[1], d[2], d[3], 0, 0, 0, 0]
    }

    fn srat_memory(start: u64, len: u64, domain: u32) -> Vec<u8> {
        let mut e = vec![1, 40];
        e.extend_from_slice(&domain.to_le_bytes());
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(&start.to_le_bytes());
        e.extend_from_slice(&len.to_le_bytes());
        e.extend_from_slice(&[0; 4]);
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&[0; 8]);
        e
    }

    #[test]
    fn srat_entries_of_every_node_are_read() {
        let mut body = vec![0u8; 12];
        body.extend(srat_cpu(0, 0));
        body.extend(srat_cpu(1, 1)); // domain 1: its low byte sits next to the length
        body.extend(srat_memory(0x2000_0000, 0x2000_0000, 1));
        let mut x2 = vec![2, 24, 0, 0];
        x2.extend_from_slice(&1u32.to_le_bytes());
        x2.extend_from_slice(&300u32.to_le_bytes());
        x2.extend_from_slice(&1u32.to_le_bytes());
        x2.extend_from_slice(&[0; 8]);
        body.extend(x2);
        let table = sdt(b"SRAT", &body);
        let mut seen = Vec::new();
        assert_eq!(parse_srat(&table, |e| seen.push(format!("{e:?}"))), 0);
        assert_eq!(
            seen,
            [
                "CpuAffinity { apic_id: 0, domain: 0 }",
                "CpuAffinity { apic_id: 1, domain: 1 }",
                "MemoryAffinity { start: 536870912, len: 536870912, domain: 1 }",
                "CpuAffinity { apic_id: 300, domain: 1 }",
            ]
        );
    }

    #[test]
    fn truncated_srat_is_a_problem_not_a_crash() {
        let mut body = vec![0u8; 12];
        body.extend(srat_cpu(0, 0));
        body.extend(&srat_memory(0, 4096, 0)[..20]);
        let table = sdt(b"SRAT", &body);
        let mut count = 0;
        assert_eq!(parse_srat(&table, |_| count += 1), 1);
        assert_eq!(count, 1);
        // An entry claiming length 0 cannot loop forever.
        let mut body = vec![0u8; 12];
        body.extend([7, 0, 0, 0]);
        assert_eq!(parse_srat(&sdt(b"SRAT", &body), |_| {}), 1);
    }

    #[test]
    fn slit_matrix_is_read_and_bounds_checked() {
        let mut body = 2u64.to_le_bytes().to_vec();
        body.extend([10, 30, 30, 10]);
        let table = sdt(b"SLIT", &body);
        assert_eq!(parse_slit(&table), Some((2, &[10u8, 30, 30, 10][..])));
        assert_eq!(parse_slit(&table[..table.len() - 1]), None);
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend([10]);
        assert_eq!(parse_slit(&sdt(b"SLIT", &huge)), None);
    }

    #[test]
    fn fallback_follows_slit_distance() {
        let mut t = build(
            0,
            (0..4u32)
                .flat_map(|i| [Entry::Cpu { apic_id: i }, Entry::CpuAffinity { apic_id: i, domain: i }])
                .collect::<Vec<_>>()
                .into_iter(),
        )
        .topology;
        assert_eq!(t.node_count(), 4);
        // Without a SLIT: all remote nodes at 20, lowest number first.
        assert_eq!(t.fallback_order(2).collect::<Vec<_>>(), [0, 1, 3]);
        #[rustfmt::skip]
        let slit = [
            10, 40, 20, 30,
            40, 10, 30, 20,
            20, 30, 10, 40,
            30, 20, 40, 10,
        ];
        assert!(set_distances(&mut t, 4, &slit));
        assert_eq!(t.fallback_order(0).collect::<Vec<_>>(), [2, 3, 1]);
        assert_eq!(t.fallback_order(1).collect::<Vec<_>>(), [3, 2, 0]);
        assert!(!set_distances(&mut t, 3, &slit[..9]), "a SLIT of the wrong size is refused");
    }
}
