//! # prometheus-text
//!
//! Metrics in the Prometheus text exposition format, version 0.0.4, for
//! Bravo services, with no kernel dependency (so it is unit-tested on the
//! host): an [`Encoder`] that writes metric families (`# HELP`, `# TYPE`,
//! then samples with escaped label values) to any `core::fmt::Write`, and
//! a [`Histogram`] of atomic buckets that any number of threads observe
//! into without a lock. (The Rust Prometheus clients on crates.io need
//! `std`: hash maps, locks, `std::io::Write`.)
//!
//! ```
//! use prometheus_text::{Encoder, Kind};
//! let mut text = String::new();
//! let mut encoder = Encoder::new(&mut text);
//! encoder.family("jobs_total", "Jobs done.", Kind::Counter).unwrap();
//! encoder.sample(&[("queue", &"fast")], 3u64).unwrap();
//! assert_eq!(text, "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total{queue=\"fast\"} 3\n");
//! ```

#![cfg_attr(not(test), no_std)]

use core::fmt::{self, Display, Write};
use core::sync::atomic::{AtomicU64, Ordering};

/// The `Content-Type` of a response carrying this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (from the start of the process).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted in buckets, with their sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Why a family or a sample was not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A metric name is not `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    InvalidMetricName,
    /// A label name is not `[a-zA-Z_][a-zA-Z0-9_]*`, or starts with `__`
    /// (reserved), or is `le` on a histogram (the encoder writes it).
    InvalidLabelName,
    /// A sample with no family before it, or of another kind than its
    /// family (a histogram through [`Encoder::sample`], a counter through
    /// [`Encoder::histogram`]).
    WrongFamily,
    /// Histograms with different bucket bounds cannot be merged.
    BoundsDiffer,
    /// The writer refused the text (out of room or memory).
    Write,
}

impl From<fmt::Error> for Error {
    fn from(_: fmt::Error) -> Self {
        Error::Write
    }
}

impl Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Error::InvalidMetricName => "invalid metric name",
            Error::InvalidLabelName => "invalid label name",
            Error::WrongFamily => "sample outside a family of its kind",
            Error::BoundsDiffer => "histograms with different bucket bounds",
            Error::Write => "the writer refused the text",
        })
    }
}

/// A sample's value: integers are written exactly (a `u64` counter past
/// 2^53 would lose digits as a float).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// Written in decimal, every digit.
    Integer(u64),
    /// Written in the shortest exact decimal; `NaN`, `+Inf`, `-Inf`.
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Integer(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Integer(v as u64)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            Value::Integer(v) => write!(f, "{v}"),
            Value::Float(v) if v.is_nan() => f.write_str("NaN"),
            Value::Float(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Value::Float(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            // Rust writes the shortest decimal that reads back as the same
            // float, never with an exponent: what Prometheus parses.
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

fn valid_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    chars.next().is_some_and(first_ok) && chars.all(|c| first_ok(c) || c.is_ascii_digit())
}

/// Writes through to `out`, escaping `\` and newlines, and `"` when
/// `quotes` (label values escape quotes, help text does not).
struct Escaping<'w, W: Write> {
    out: &'w mut W,
    quotes: bool,
}

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, c) in text.char_indices() {
            let escaped = match c {
                '\\' => "\\\\",
                '\n' => "\\n",
                '"' if self.quotes => "\\\"",
                _ => continue,
            };
            self.out.write_str(&text[plain..at])?;
            self.out.write_str(escaped)?;
            plain = at + c.len_utf8();
        }
        self.out.write_str(&text[plain..])
    }
}

/// A sample's labels: name and value (any `Display`, escaped as written).
pub type Labels<'l> = [(&'l str, &'l dyn Display)];

/// Writes metric families to `out`: [`family`](Encoder::family), then its
/// samples. The output is exactly the 0.0.4 text format: one `# HELP` and
/// one `# TYPE` line per family, help text and label values escaped,
/// names checked.
pub struct Encoder<'n, W: Write> {
    out: W,
    family: Option<(&'n str, Kind)>,
}

impl<'n, W: Write> Encoder<'n, W> {
    /// An encoder writing to `out`, before its first family.
    pub fn new(out: W) -> Self {
        Encoder { out, family: None }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. (A counter's name
    /// ends in `_total` by convention, a unit's name like `_bytes` or
    /// `_seconds` before it.)
    pub fn family(&mut self, name: &'n str, help: &str, kind: Kind) -> Result<(), Error> {
        if !valid_name(name, true) {
            return Err(Error::InvalidMetricName);
        }
        self.family = None;
        write!(self.out, "# HELP {name} ")?;
        write!(Escaping { out: &mut self.out, quotes: false }, "{help}")?;
        write!(self.out, "\n# TYPE {name} {}\n", kind.as_str())?;
        self.family = Some((name, kind));
        Ok(())
    }

    /// A sample of the current counter or gauge family.
    pub fn sample(&mut self, labels: &Labels, value: impl Into<Value>) -> Result<(), Error> {
        let name = match self.family {
            Some((name, Kind::Counter | Kind::Gauge)) => name,
            _ => return Err(Error::WrongFamily),
        };
        check_labels(labels, false)?;
        self.line(name, "", labels, None, value.into())
    }

    /// The samples of one histogram of the current histogram family:
    /// cumulative `_bucket{le=...}` lines (the last `+Inf`), `_sum` and
    /// `_count`. Observations and bounds are divided by `scale` (1e6 for
    /// microseconds observed, seconds written).
    pub fn histogram<const N: usize>(
        &mut self,
        labels: &Labels,
        histogram: &HistogramSnapshot<N>,
        scale: f64,
    ) -> Result<(), Error> {
        let name = match self.family {
            Some((name, Kind::Histogram)) => name,
            _ => return Err(Error::WrongFamily),
        };
        check_labels(labels, true)?;
        let mut cumulative = 0;
        for (bound, count) in histogram.bounds.iter().zip(histogram.counts) {
            cumulative += count;
            let le = Value::Float(*bound as f64 / scale);
            self.line(name, "_bucket", labels, Some(le), Value::Integer(cumulative))?;
        }
        cumulative += histogram.above;
        self.line(name, "_bucket", labels, Some(Value::Float(f64::INFINITY)), Value::Integer(cumulative))?;
        self.line(name, "_sum", labels, None, Value::Float(histogram.sum as f64 / scale))?;
        self.line(name, "_count", labels, None, Value::Integer(cumulative))
    }

    fn line(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &Labels,
        le: Option<Value>,
        value: Value,
    ) -> Result<(), Error> {
        write!(self.out, "{name}{suffix}")?;
        if !labels.is_empty() || le.is_some() {
            self.out.write_char('{')?;
            for (i, (label, value)) in labels.iter().enumerate() {
                write!(self.out, "{}{label}=\"", if i == 0 { "" } else { "," })?;
                write!(Escaping { out: &mut self.out, quotes: true }, "{value}")?;
                self.out.write_char('"')?;
            }
            if let Some(le) = le {
                write!(self.out, "{}le=\"{le}\"", if labels.is_empty() { "" } else { "," })?;
            }
            self.out.write_char('}')?;
        }
        writeln!(self.out, " {value}")?;
        Ok(())
    }
}

fn check_labels(labels: &Labels, histogram: bool) -> Result<(), Error> {
    for (i, (label, _)) in labels.iter().enumerate() {
        let reserved = label.starts_with("__") || (histogram && *label == "le");
        if !valid_name(label, false) || reserved || labels[..i].iter().any(|(other, _)| other == label) {
            return Err(Error::InvalidLabelName);
        }
    }
    Ok(())
}

/// A histogram of `u64` observations (durations in microseconds, sizes in
/// bytes) in `N` buckets with inclusive upper bounds, plus one for what
/// lies above the last bound. Observing is two relaxed atomic additions:
/// any number of threads at once, no lock; keep one per cpu to keep the
/// cache lines apart, and [`merge`](HistogramSnapshot::merge) them when
/// writing.
pub struct Histogram<const N: usize> {
    bounds: [u64; N],
    counts: [AtomicU64; N],
    above: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    /// A histogram with these upper bounds, strictly increasing (checked:
    /// at compile time in a `static`).
    pub const fn new(bounds: [u64; N]) -> Self {
        let mut i = 1;
        while i < N {
            assert!(bounds[i - 1] < bounds[i], "histogram bounds must increase strictly");
            i += 1;
        }
        Histogram { bounds, counts: [const { AtomicU64::new(0) }; N], above: AtomicU64::new(0), sum: AtomicU64::new(0) }
    }

    /// Counts `value` in the first bucket whose bound is at least `value`
    /// (or above the last bound) and adds it to the sum.
    pub fn observe(&self, value: u64) {
        match self.bounds.iter().position(|&bound| value <= bound) {
            Some(bucket) => self.counts[bucket].fetch_add(1, Ordering::Relaxed),
            None => self.above.fetch_add(1, Ordering::Relaxed),
        };
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The counts now. (Taken while others observe, the sum may include
    /// an observation the buckets do not yet, or the reverse; the count
    /// is the buckets' total, so `_count` always equals the `+Inf` bucket.)
    pub fn snapshot(&self) -> HistogramSnapshot<N> {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: core::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            above: self.above.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment (per bucket, not cumulative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot<const N: usize> {
    /// The buckets' upper bounds, strictly increasing.
    pub bounds: [u64; N],
    /// Observations per bucket: `counts[i]` in `(bounds[i - 1], bounds[i]]`.
    pub counts: [u64; N],
    /// Observations above the last bound.
    pub above: u64,
    /// The sum of every value observed.
    pub sum: u64,
}

impl<const N: usize> HistogramSnapshot<N> {
    /// All observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.above
    }

    /// Adds `other`'s observations (another cpu's, say) to these.
    pub fn merge(&mut self, other: &HistogramSnapshot<N>) -> Result<(), Error> {
        if self.bounds != other.bounds {
            return Err(Error::BoundsDiffer);
        }
        for (count, more) in self.counts.iter_mut().zip(other.counts) {
            *count += more;
        }
        self.above += other.above;
        self.sum += other.sum;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(f: impl FnOnce(&mut Encoder<&mut String>) -> Result<(), Error>) -> Result<String, Error> {
        let mut text = String::new();
        f(&mut Encoder::new(&mut text))?;
        Ok(text)
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline_only() {
        let text = encode(|e| {
            e.family("m", "h", Kind::Gauge)?;
            e.sample(&[("path", &"a\\b\"c\nd é{},=")], 1u64)
        })
        .unwrap();
        assert_eq!(text.lines().nth(2), Some(r#"m{path="a\\b\"c\nd é{},="} 1"#));
    }

    #[test]
    fn help_escapes_backslash_and_newline_but_not_quotes() {
        let text = encode(|e| e.family("m", "a \"b\" c\\d\ne", Kind::Counter)).unwrap();
        assert_eq!(text, "# HELP m a \"b\" c\\\\d\\ne\n# TYPE m counter\n");
    }

    #[test]
    fn samples_without_labels_have_no_braces_and_several_labels_are_comma_separated() {
        let text = encode(|e| {
            e.family("requests_total", "Requests.", Kind::Counter)?;
            e.sample(&[], 7u64)?;
            e.sample(&[("route", &"/"), ("code", &"2xx"), ("cpu", &3)], 5usize)
        })
        .unwrap();
        assert_eq!(
            text,
            "# HELP requests_total Requests.\n# TYPE requests_total counter\nrequests_total 7\nrequests_total{route=\"/\",code=\"2xx\",cpu=\"3\"} 5\n"
        );
    }

    #[test]
    fn floats_are_written_as_prometheus_reads_them() {
        let cases: [(f64, &str); 9] = [
            (0.5, "0.5"),
            (1.0, "1"),
            (0.00025, "0.00025"),
            (1e-7, "0.0000001"),
            (12345678.9, "12345678.9"),
            (-2.5, "-2.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (value, text) in cases {
            assert_eq!(Value::from(value).to_string(), text);
            if value.is_finite() {
                assert_eq!(text.parse::<f64>().unwrap(), value, "{text} reads back");
            }
        }
        // Integers exactly, past the 2^53 a float holds.
        assert_eq!(Value::from(u64::MAX).to_string(), "18446744073709551615");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf_sum_and_count() {
        static LATENCY: Histogram<3> = Histogram::new([100, 1000, 10_000]);
        for micros in [50, 100, 101, 999, 5000, 20_000, 30_000] {
            LATENCY.observe(micros);
        }
        let text = encode(|e| {
            e.family("latency_seconds", "Latency.", Kind::Histogram)?;
            e.histogram(&[("route", &"/")], &LATENCY.snapshot(), 1e6)
        })
        .unwrap();
        let expected = "# HELP latency_seconds Latency.\n# TYPE latency_seconds histogram\n\
            latency_seconds_bucket{route=\"/\",le=\"0.0001\"} 2\n\
            latency_seconds_bucket{route=\"/\",le=\"0.001\"} 4\n\
            latency_seconds_bucket{route=\"/\",le=\"0.01\"} 5\n\
            latency_seconds_bucket{route=\"/\",le=\"+Inf\"} 7\n\
            latency_seconds_sum{route=\"/\"} 0.05625\n\
            latency_seconds_count{route=\"/\"} 7\n";
        assert_eq!(text, expected);
        let unlabelled = encode(|e| {
            e.family("latency_seconds", "Latency.", Kind::Histogram)?;
            e.histogram(&[], &Histogram::new([1]).snapshot(), 1.0)
        })
        .unwrap();
        assert!(unlabelled.ends_with("latency_seconds_bucket{le=\"1\"} 0\nlatency_seconds_bucket{le=\"+Inf\"} 0\nlatency_seconds_sum 0\nlatency_seconds_count 0\n"), "{unlabelled}");
    }

    #[test]
    fn snapshots_merge_only_with_the_same_bounds() {
        let (a, b) = (Histogram::new([10, 20]), Histogram::new([10, 20]));
        a.observe(5);
        b.observe(15);
        b.observe(25);
        let mut total = a.snapshot();
        total.merge(&b.snapshot()).unwrap();
        assert_eq!((total.counts, total.above, total.sum, total.count()), ([1, 1], 1, 45, 3));
        assert_eq!(total.merge(&Histogram::new([10, 30]).snapshot()), Err(Error::BoundsDiffer));
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let histogram = Histogram::new([10, 100, 1000]);
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let histogram = &histogram;
                s.spawn(move || (0..10_000u64).for_each(|i| histogram.observe((i * 7 + t) % 2000)));
            }
        });
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 80_000);
        let expected_sum: u64 = (0..8u64).flat_map(|t| (0..10_000u64).map(move |i| (i * 7 + t) % 2000)).sum();
        assert_eq!(snapshot.sum, expected_sum);
    }

    #[test]
    fn bad_names_and_misplaced_samples_are_errors() {
        assert_eq!(encode(|e| e.family("1abc", "h", Kind::Gauge)), Err(Error::InvalidMetricName));
        assert_eq!(encode(|e| e.family("a-b", "h", Kind::Gauge)), Err(Error::InvalidMetricName));
        assert_eq!(encode(|e| e.family("", "h", Kind::Gauge)), Err(Error::InvalidMetricName));
        assert!(encode(|e| e.family("ns:sub_name_1", "h", Kind::Gauge)).is_ok());
        assert_eq!(encode(|e| e.sample(&[], 1u64)), Err(Error::WrongFamily));
        let gauge_then = |f: fn(&mut Encoder<&mut String>) -> Result<(), Error>| {
            encode(|e| {
                e.family("g", "h", Kind::Gauge)?;
                f(e)
            })
        };
        assert_eq!(gauge_then(|e| e.sample(&[("a:b", &1)], 1u64)), Err(Error::InvalidLabelName));
        assert_eq!(gauge_then(|e| e.sample(&[("__name", &1)], 1u64)), Err(Error::InvalidLabelName));
        assert_eq!(gauge_then(|e| e.sample(&[("x", &1), ("x", &2)], 1u64)), Err(Error::InvalidLabelName));
        assert_eq!(gauge_then(|e| e.histogram(&[], &Histogram::new([1]).snapshot(), 1.0)), Err(Error::WrongFamily));
        let in_histogram = encode(|e| {
            e.family("h", "h", Kind::Histogram)?;
            e.histogram(&[("le", &1)], &Histogram::new([1]).snapshot(), 1.0)
        });
        assert_eq!(in_histogram, Err(Error::InvalidLabelName));
        // A refused write is an error, not a panic.
        struct Full;
        impl Write for Full {
            fn write_str(&mut self, _: &str) -> fmt::Result {
                Err(fmt::Error)
            }
        }
        assert_eq!(Encoder::new(Full).family("m", "h", Kind::Gauge), Err(Error::Write));
    }
}
