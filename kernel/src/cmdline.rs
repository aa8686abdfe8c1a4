//! The kernel command line, parsed into typed options.
//!
//! Syntax: whitespace-separated `key=value` kernel options, then optionally
//! `--` followed by the application's own arguments, which the kernel passes
//! through untouched:
//!
//! ```text
//! log=debug ip=10.0.2.15/24 gw=10.0.2.2 -- --port 80 verbose
//! ```
//!
//! Monitors that announce virtio-mmio devices on the command line (QEMU's
//! `microvm`, Firecracker) add words `virtio_mmio.device=SIZE@ADDR:IRQ`,
//! QEMU at the very end, after the application's arguments: they are
//! parsed wherever they are ([`KernelOptions::mmio_devices`]) and are never
//! application arguments ([`app_words`]).
//!
//! Problems never stop the boot: an unknown option or a malformed value is
//! reported through a callback (the kernel logs a warning) and the default is
//! kept.

use log::LevelFilter;

use core::net::Ipv4Addr;

/// Options the kernel itself understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOptions {
    /// `log=off|error|warn|info|debug|trace`: console log level.
    pub log_level: LevelFilter,
    /// `ip=A.B.C.D/PREFIX`: a static address (default: DHCP).
    pub ip: Option<(Ipv4Addr, u8)>,
    /// `gw=A.B.C.D`: the default gateway with a static address.
    pub gateway: Option<Ipv4Addr>,
    /// `netcpu=N`: the cpu that runs the network stack and takes the
    /// NIC's interrupts (default: the last cpu).
    pub net_cpu: Option<usize>,
    /// `netcpus=0,2-3`: the cpus that each run a network stack over a
    /// queue pair of a multi-queue NIC (default: every cpu, as many as the
    /// NIC has queues). A single-queue NIC uses the first.
    pub net_cpus: Option<CpuList>,
    /// `netpoll=on|off`: poll the NIC instead of taking its interrupt.
    pub net_poll: bool,
    /// `msix=on|off`: let a multi-queue NIC use MSI-X (one vector per
    /// queue); `off` runs it with one queue on its legacy interrupt.
    pub msix: bool,
    /// `net=stack|raw`: `raw` starts no network stack and leaves the NIC
    /// to the application ([`crate::net::RawNic`]); default `stack`.
    pub net_raw: bool,
    /// `virtio_mmio.device=SIZE@ADDR:IRQ` (any number of times, anywhere
    /// on the line): virtio-mmio devices the monitor announces.
    pub mmio_devices: MmioDevices,
}

impl Default for KernelOptions {
    fn default() -> Self {
        Self {
            log_level: LevelFilter::Info,
            ip: None,
            gateway: None,
            net_cpu: None,
            net_cpus: None,
            net_poll: false,
            msix: true,
            net_raw: false,
            mmio_devices: MmioDevices::new(),
        }
    }
}

/// A list of distinct cpu numbers, in the order given, at most
/// [`CpuList::CAPACITY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuList {
    cpus: [u16; CpuList::CAPACITY],
    len: usize,
}

impl CpuList {
    /// As many as a NIC's queue pairs the kernel uses.
    pub const CAPACITY: usize = 16;

    /// Parses `0,2-3`: numbers and inclusive ranges, comma-separated;
    /// `None` when malformed, empty, repeated, or longer than the capacity.
    pub fn parse(value: &str) -> Option<CpuList> {
        let mut list = CpuList { cpus: [0; Self::CAPACITY], len: 0 };
        for part in value.split(',') {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?),
                None => {
                    let cpu = part.parse::<u16>().ok()?;
                    (cpu, cpu)
                }
            };
            if first > last || usize::from(last - first) >= Self::CAPACITY {
                return None;
            }
            for cpu in first..=last {
                if list.len == Self::CAPACITY || list.as_slice().contains(&cpu) {
                    return None;
                }
                list.cpus[list.len] = cpu;
                list.len += 1;
            }
        }
        Some(list)
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.cpus[..self.len]
    }

    /// The cpus, as indices.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.as_slice().iter().map(|&c| usize::from(c))
    }
}

/// A virtio-mmio device's register window and interrupt line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MmioDevice {
    /// Physical address of the registers.
    pub address: u64,
    /// Size of the window in bytes.
    pub size: u64,
    /// The interrupt line (a global system interrupt on the I/O APICs).
    pub irq: u32,
}

/// The virtio-mmio devices on the command line, at most [`MmioDevices::CAPACITY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevices {
    devices: [MmioDevice; MmioDevices::CAPACITY],
    len: usize,
}

impl MmioDevices {
    /// QEMU's microvm has at most 24 transports.
    pub const CAPACITY: usize = 32;

    const fn new() -> Self {
        MmioDevices { devices: [MmioDevice { address: 0, size: 0, irq: 0 }; Self::CAPACITY], len: 0 }
    }

    fn push(&mut self, device: MmioDevice) -> bool {
        if self.len == Self::CAPACITY {
            return false;
        }
        self.devices[self.len] = device;
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[MmioDevice] {
        &self.devices[..self.len]
    }
}

/// The key of a virtio-mmio device word.
const MMIO_DEVICE_KEY: &str = "virtio_mmio.device";

fn is_mmio_device_word(word: &str) -> bool {
    word.split_once('=').is_some_and(|(key, _)| key == MMIO_DEVICE_KEY)
}

/// Parses `SIZE@ADDR:IRQ[:ID]` as Linux's virtio_mmio module does: SIZE
/// and ADDR decimal or `0x` hex, SIZE with an optional K, M or G suffix;
/// IRQ decimal; a trailing platform device id is ignored.
fn parse_mmio_device(value: &str) -> Option<MmioDevice> {
    let (size, rest) = value.split_once('@')?;
    let (address, rest) = rest.split_once(':')?;
    let irq = rest.split(':').next()?;
    let (digits, shift) = match size.as_bytes().last()? {
        b'k' | b'K' => (&size[..size.len() - 1], 10),
        b'm' | b'M' => (&size[..size.len() - 1], 20),
        b'g' | b'G' => (&size[..size.len() - 1], 30),
        _ => (size, 0),
    };
    let size = parse_number(digits)?.checked_mul(1 << shift)?;
    let address = parse_number(address)?;
    let irq = irq.parse().ok()?;
    (size > 0 && address.checked_add(size).is_some()).then_some(MmioDevice { address, size, irq })
}

/// A decimal or `0x`-prefixed hexadecimal number.
fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The application's arguments: the words of `app_args` that are not
/// virtio-mmio device words (which a monitor may append after them).
pub fn app_words(app_args: &str) -> impl Iterator<Item = &str> {
    app_args.split_whitespace().filter(|word| !is_mmio_device_word(word))
}

fn parse_cidr(value: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = value.split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|&p| p <= 32)?;
    Some((addr.parse().ok()?, prefix))
}

/// Something wrong with one token of the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem<'a> {
    /// A key the kernel does not know.
    UnknownOption(&'a str),
    /// A token without `=`.
    MissingValue(&'a str),
    /// A known key with a value it cannot take.
    BadValue { key: &'a str, value: &'a str, expected: &'static str },
}

impl core::fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Problem::UnknownOption(token) => {
                write!(f, "unknown kernel option `{token}` ignored (application arguments go after `--`)")
            }
            Problem::MissingValue(token) => write!(f, "kernel option `{token}` has no `=value`; ignored"),
            Problem::BadValue { key, value, expected } => {
                write!(f, "kernel option `{key}={value}`: expected {expected}; using the default")
            }
        }
    }
}

/// The command line split into kernel options and application arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandLine<'a> {
    pub options: KernelOptions,
    /// Everything after `--`, as written.
    pub app_args: &'a str,
}

impl<'a> CommandLine<'a> {
    /// Parses `line`, calling `report` once per problem.
    pub fn parse(line: &'a str, mut report: impl FnMut(Problem<'a>)) -> Self {
        let (kernel_part, app_args) = split_app_args(line);
        let mut options = KernelOptions::default();
        for token in app_args.split_whitespace().filter(|w| is_mmio_device_word(w)) {
            options.add_mmio_device(token, &mut report);
        }
        for token in kernel_part.split_whitespace() {
            let Some((key, value)) = token.split_once('=') else {
                report(Problem::MissingValue(token));
                continue;
            };
            match key {
                "log" => match parse_level(value) {
                    Some(level) => options.log_level = level,
                    None => {
                        report(Problem::BadValue { key, value, expected: "off, error, warn, info, debug or trace" })
                    }
                },
                "ip" => match parse_cidr(value) {
                    Some(cidr) => options.ip = Some(cidr),
                    None => report(Problem::BadValue {
                        key,
                        value,
                        expected: "an IPv4 address with a prefix, e.g. 10.0.2.15/24",
                    }),
                },
                "gw" => match value.parse() {
                    Ok(addr) => options.gateway = Some(addr),
                    Err(_) => report(Problem::BadValue { key, value, expected: "an IPv4 address, e.g. 10.0.2.2" }),
                },
                "netpoll" => match value {
                    "on" => options.net_poll = true,
                    "off" => options.net_poll = false,
                    _ => report(Problem::BadValue { key, value, expected: "on or off" }),
                },
                "msix" => match value {
                    "on" => options.msix = true,
                    "off" => options.msix = false,
                    _ => report(Problem::BadValue { key, value, expected: "on or off" }),
                },
                "net" => match value {
                    "stack" => options.net_raw = false,
                    "raw" => options.net_raw = true,
                    _ => report(Problem::BadValue { key, value, expected: "stack or raw" }),
                },
                "netcpu" => match value.parse() {
                    Ok(cpu) => options.net_cpu = Some(cpu),
                    Err(_) => report(Problem::BadValue { key, value, expected: "a cpu number" }),
                },
                "netcpus" => match CpuList::parse(value) {
                    Some(cpus) => options.net_cpus = Some(cpus),
                    None => report(Problem::BadValue {
                        key,
                        value,
                        expected: "distinct cpu numbers and ranges, e.g. 0,2-3 (at most 16)",
                    }),
                },
                MMIO_DEVICE_KEY => options.add_mmio_device(token, &mut report),
                _ => report(Problem::UnknownOption(token)),
            }
        }
        Self { options, app_args }
    }
}

impl KernelOptions {
    /// Adds the device of a `virtio_mmio.device=` word.
    fn add_mmio_device<'a>(&mut self, token: &'a str, report: &mut impl FnMut(Problem<'a>)) {
        let (key, value) = token.split_once('=').unwrap_or((token, ""));
        match parse_mmio_device(value) {
            Some(device) if self.mmio_devices.push(device) => {}
            Some(_) => report(Problem::BadValue { key, value, expected: "at most 32 virtio-mmio devices" }),
            None => report(Problem::BadValue { key, value, expected: "SIZE@ADDRESS:IRQ, e.g. 512@0xfeb00e00:12" }),
        }
    }
}

/// Splits at the first standalone `--` token.
fn split_app_args(line: &str) -> (&str, &str) {
    let mut rest = line;
    let mut consumed = 0;
    while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
        let token_len = rest[start..].find(char::is_whitespace).unwrap_or(rest.len() - start);
        if &rest[start..start + token_len] == "--" {
            let split = consumed + start;
            return (&line[..split], line[split + 2..].trim());
        }
        consumed += start + token_len;
        rest = &rest[start + token_len..];
    }
    (line, "")
}

fn parse_level(value: &str) -> Option<LevelFilter> {
    Some(match value {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_options_are_typed_and_checked() {
        let (c, problems) = parse("ip=10.0.2.15/24 gw=10.0.2.2 netcpu=1 netpoll=on net=raw");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(c.options.net_poll);
        assert!(c.options.net_raw);
        assert_eq!(c.options.ip, Some((Ipv4Addr::new(10, 0, 2, 15), 24)));
        assert_eq!(c.options.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(c.options.net_cpu, Some(1));
        let (c, problems) = parse("ip=10.0.2.15 gw=300.1.1.1 ip=1.2.3.4/33 netcpu=x netpoll=maybe net=cooked");
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert_eq!((c.options.ip, c.options.gateway, c.options.net_cpu), (None, None, None));
    }

    #[test]
    fn network_cpus_are_numbers_and_ranges() {
        let (c, problems) = parse("netcpus=0,2-3");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.options.net_cpus.map(|l| l.iter().collect::<Vec<_>>()), Some(vec![0, 2, 3]));
        let (c, problems) = parse("netcpus=1");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.options.net_cpus.map(|l| l.iter().collect::<Vec<_>>()), Some(vec![1]));
        for bad in
            ["netcpus=", "netcpus=a", "netcpus=1,1", "netcpus=3-1", "netcpus=0-16", "netcpus=0-99999", "netcpus=1,"]
        {
            let (c, problems) = parse(bad);
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(c.options.net_cpus, None, "{bad}");
        }
    }

    #[test]
    fn msix_is_on_unless_turned_off() {
        assert!(KernelOptions::default().msix);
        let (c, problems) = parse("msix=off");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!c.options.msix);
        let (c, problems) = parse("msix=off msix=on");
        assert!(problems.is_empty() && c.options.msix);
        let (c, problems) = parse("msix=maybe");
        assert_eq!(problems, vec![Problem::BadValue { key: "msix", value: "maybe", expected: "on or off" }]);
        assert!(c.options.msix);
    }

    fn parse(line: &str) -> (CommandLine<'_>, Vec<Problem<'_>>) {
        let mut problems = Vec::new();
        let cmdline = CommandLine::parse(line, |p| problems.push(p));
        (cmdline, problems)
    }

    #[test]
    fn empty_line_gives_defaults() {
        let (cmdline, problems) = parse("");
        assert_eq!(cmdline.options, KernelOptions::default());
        assert_eq!(cmdline.app_args, "");
        assert!(problems.is_empty());
    }

    #[test]
    fn log_level_is_parsed() {
        let (cmdline, problems) = parse("log=debug");
        assert_eq!(cmdline.options.log_level, LevelFilter::Debug);
        assert!(problems.is_empty());
    }

    #[test]
    fn app_args_follow_double_dash() {
        let (cmdline, problems) = parse("log=warn -- hello --world  x=1 ");
        assert_eq!(cmdline.options.log_level, LevelFilter::Warn);
        assert_eq!(cmdline.app_args, "hello --world  x=1");
        assert!(problems.is_empty());
    }

    #[test]
    fn double_dash_inside_a_token_does_not_split() {
        let (cmdline, problems) = parse("a--b=1");
        assert_eq!(cmdline.app_args, "");
        assert_eq!(problems, vec![Problem::UnknownOption("a--b=1")]);
    }

    #[test]
    fn unknown_and_malformed_options_keep_defaults() {
        let (cmdline, problems) = parse("frobnicate=yes log=loud verbose");
        assert_eq!(cmdline.options, KernelOptions::default());
        assert_eq!(
            problems,
            vec![
                Problem::UnknownOption("frobnicate=yes"),
                Problem::BadValue { key: "log", value: "loud", expected: "off, error, warn, info, debug or trace" },
                Problem::MissingValue("verbose"),
            ]
        );
    }

    #[test]
    fn a_bad_option_does_not_hide_a_good_one() {
        let (cmdline, problems) = parse("log= log=error =x");
        assert_eq!(cmdline.options.log_level, LevelFilter::Error);
        assert_eq!(problems.len(), 2);
    }

    fn mmio(address: u64, size: u64, irq: u32) -> MmioDevice {
        MmioDevice { address, size, irq }
    }

    #[test]
    fn virtio_mmio_devices_are_found_before_and_after_the_double_dash() {
        // QEMU's microvm appends its words at the end of the line, after
        // the application's arguments.
        let line = "log=debug virtio_mmio.device=4K@0xd0000000:5 -- --port 80 virtio_mmio.device=512@0xfeb00e00:31 virtio_mmio.device=512@0xfeb00000:24";
        let (c, problems) = parse(line);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.options.log_level, LevelFilter::Debug);
        assert_eq!(
            c.options.mmio_devices.as_slice(),
            [mmio(0xfeb00e00, 512, 31), mmio(0xfeb00000, 512, 24), mmio(0xd000_0000, 4096, 5)]
        );
        assert_eq!(app_words(c.app_args).collect::<Vec<_>>(), ["--port", "80"]);
    }

    #[test]
    fn virtio_mmio_device_values_follow_linux_syntax() {
        assert_eq!(parse_mmio_device("512@0xfeb00e00:12"), Some(mmio(0xfeb00e00, 512, 12)));
        assert_eq!(parse_mmio_device("1M@4096:7:3"), Some(mmio(4096, 1 << 20, 7)), "a device id is ignored");
        assert_eq!(parse_mmio_device("0x200@0XFEB00000:24"), Some(mmio(0xfeb00000, 0x200, 24)));
        for bad in [
            "",
            "512",
            "512@0xfeb00000",
            "@0x1:1",
            "0@0x1000:1",
            "4K@0xzz:1",
            "4K@0x1000:x",
            "4Q@0x1000:1",
            "2G@0xffffffffffffffff:1",
            "99999999999G@0:1",
        ] {
            assert_eq!(parse_mmio_device(bad), None, "{bad}");
        }
        let (c, problems) = parse("virtio_mmio.device=4K@nowhere:5 -- app");
        assert_eq!(c.options.mmio_devices.as_slice(), []);
        assert!(
            matches!(problems[..], [Problem::BadValue { key: "virtio_mmio.device", value: "4K@nowhere:5", .. }]),
            "{problems:?}"
        );
    }

    #[test]
    fn at_most_capacity_virtio_mmio_devices_are_kept() {
        let words: Vec<String> =
            (0..MmioDevices::CAPACITY + 2).map(|i| format!("virtio_mmio.device=512@{:#x}:{}", 0x1000 * i, i)).collect();
        let line = words.join(" ");
        let (c, problems) = parse(&line);
        assert_eq!(c.options.mmio_devices.as_slice().len(), MmioDevices::CAPACITY);
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn application_words_that_only_look_like_devices_stay() {
        let (c, _) = parse("-- virtio_mmio.devicex=1 virtio_mmio.device");
        assert_eq!(app_words(c.app_args).collect::<Vec<_>>(), ["virtio_mmio.devicex=1", "virtio_mmio.device"]);
    }

    #[test]
    fn problems_read_clearly() {
        let text = Problem::UnknownOption("x=1").to_string();
        assert!(text.contains("unknown kernel option `x=1`"), "{text}");
    }
}
