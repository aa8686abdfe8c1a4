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
    /// `netpoll=on|off`: poll the NIC instead of taking its interrupt.
    pub net_poll: bool,
    /// `net=stack|raw`: `raw` starts no network stack and leaves the NIC
    /// to the application ([`crate::net::RawNic`]); default `stack`.
    pub net_raw: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        Self { log_level: LevelFilter::Info, ip: None, gateway: None, net_cpu: None, net_poll: false, net_raw: false }
    }
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
        for token in kernel_part.split_whitespace() {
            let Some((key, value)) = token.split_once('=') else {
                report(Problem::MissingValue(token));
                continue;
            };
            match key {
                "log" => match parse_level(value) {
                    Some(level) => options.log_level = level,
                    None => report(Problem::BadValue { key, value, expected: "off, error, warn, info, debug or trace" }),
                },
                "ip" => match parse_cidr(value) {
                    Some(cidr) => options.ip = Some(cidr),
                    None => report(Problem::BadValue { key, value, expected: "an IPv4 address with a prefix, e.g. 10.0.2.15/24" }),
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
                "net" => match value {
                    "stack" => options.net_raw = false,
                    "raw" => options.net_raw = true,
                    _ => report(Problem::BadValue { key, value, expected: "stack or raw" }),
                },
                "netcpu" => match value.parse() {
                    Ok(cpu) => options.net_cpu = Some(cpu),
                    Err(_) => report(Problem::BadValue { key, value, expected: "a cpu number" }),
                },
                _ => report(Problem::UnknownOption(token)),
            }
        }
        Self { options, app_args }
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

    #[test]
    fn problems_read_clearly() {
        let text = Problem::UnknownOption("x=1").to_string();
        assert!(text.contains("unknown kernel option `x=1`"), "{text}");
    }
}
