//! Benchmark reports: a terminal table, and CSV + Markdown + SVG files.
//!
//! A [`Report`] holds [`Row`]s, one per measure. Each row has repeated
//! samples for Bravo, and optionally for a Linux guest and for a "ceiling"
//! (the most the device model can do). [`Report::table`] renders medians
//! with their min–max range and the ratios; [`Report::write`] writes
//! `<name>.csv` (every sample), `<name>.md` (the table) and `<name>.svg`
//! (a grouped bar chart, each row scaled to its own largest median).
//!
//! ```
//! use bravo_tests::report::{Better, Report, Row, Samples};
//! let mut report = Report::new("pps", "Packet rates");
//! report.rows.push(Row {
//!     group: "RX 64 B frames".into(),
//!     label: "packets/s received by the guest".into(),
//!     unit: "pkt/s".into(),
//!     better: Better::Higher,
//!     bravo: Samples(vec![81_234.0, 80_100.0, 82_000.0]),
//!     linux: Some(Samples(vec![35_000.0, 36_000.0])),
//!     ceiling: None,
//! });
//! println!("{}", report.table());
//! ```
//!
//! The SVG is written by hand (rect/line/text elements with a generic
//! `sans-serif` font), so it needs no font files to produce.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

/// Where benchmark results go: `$BENCH_DIR`, else `<workspace>/target/bench`.
pub fn bench_dir() -> PathBuf {
    match std::env::var_os("BENCH_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => crate::workspace_root().join("target/bench"),
    }
}

/// Repeated samples of one measure for one system.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// The values, NaNs dropped, in ascending order.
    fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.0.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The middle value; for an even count, the mean of the two middle
    /// values. `None` when there are no samples.
    pub fn median(&self) -> Option<f64> {
        let v = self.sorted();
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    pub fn min(&self) -> Option<f64> {
        self.sorted().first().copied()
    }

    pub fn max(&self) -> Option<f64> {
        self.sorted().last().copied()
    }

    /// Number of samples (NaNs included).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<f64>> for Samples {
    fn from(v: Vec<f64>) -> Self {
        Samples(v)
    }
}

/// Which direction is better for a measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Throughput, rates.
    Higher,
    /// Latency, time.
    Lower,
}

impl Better {
    fn phrase(self) -> &'static str {
        match self {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        }
    }
}

/// One measure: Bravo's samples and, where available, Linux's and the
/// ceiling's.
#[derive(Clone, Debug)]
pub struct Row {
    /// E.g. "RX 64 B frames" / "1 connection".
    pub group: String,
    /// E.g. "packets/s received by the guest".
    pub label: String,
    /// E.g. "pkt/s", "req/s", "ms", "µs".
    pub unit: String,
    pub better: Better,
    pub bravo: Samples,
    /// `None`: Linux peer not run / not applicable.
    pub linux: Option<Samples>,
    /// `None`: no ceiling for this row.
    pub ceiling: Option<Samples>,
}

impl Row {
    /// "group — label" (or whichever of the two is non-empty).
    pub fn measure(&self) -> String {
        match (self.group.is_empty(), self.label.is_empty()) {
            (false, false) => format!("{} — {}", self.group, self.label),
            (false, true) => self.group.clone(),
            _ => self.label.clone(),
        }
    }

    /// The systems present in this row, in chart order.
    fn systems(&self) -> Vec<(System, &Samples)> {
        let mut out = vec![(System::Bravo, &self.bravo)];
        if let Some(l) = &self.linux {
            out.push((System::Linux, l));
        }
        if let Some(c) = &self.ceiling {
            out.push((System::Ceiling, c));
        }
        out
    }

    /// The table cells, in the order of [`HEADERS`].
    fn cells(&self) -> [String; 7] {
        let bravo = self.bravo.median();
        let linux = self.linux.as_ref().and_then(Samples::median);
        let ceiling = self.ceiling.as_ref().and_then(Samples::median);
        [
            self.measure(),
            self.unit.clone(),
            samples_cell(Some(&self.bravo)),
            samples_cell(self.linux.as_ref()),
            match (bravo, linux) {
                (Some(b), Some(l)) => ratio_cell(b, l, self.better),
                _ => "-".into(),
            },
            ceiling.map(fmt_num).unwrap_or_else(|| "-".into()),
            // Against the ceiling only rates compare (a share of the most
            // the device moves); losses and times do not.
            match (bravo, ceiling, self.better) {
                (Some(b), Some(c), Better::Higher) => plain_ratio(b, c),
                _ => "-".into(),
            },
        ]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Bravo,
    Linux,
    Ceiling,
}

impl System {
    const ALL: [System; 3] = [System::Bravo, System::Linux, System::Ceiling];

    /// As written in the CSV.
    fn key(self) -> &'static str {
        match self {
            System::Bravo => "bravo",
            System::Linux => "linux",
            System::Ceiling => "ceiling",
        }
    }

    fn name(self) -> &'static str {
        match self {
            System::Bravo => "Bravo",
            System::Linux => "Linux",
            System::Ceiling => "ceiling",
        }
    }

    fn color(self) -> &'static str {
        match self {
            System::Bravo => "#e8590c",
            System::Linux => "#1971c2",
            System::Ceiling => "#adb5bd",
        }
    }
}

/// Table column headers.
const HEADERS: [&str; 7] = [
    "measure",
    "unit",
    "Bravo median (min–max)",
    "Linux median (min–max)",
    "Bravo/Linux",
    "ceiling median",
    "Bravo/ceiling",
];

/// Columns right-aligned in the tables (the numbers).
const RIGHT: [bool; 7] = [false, false, true, true, true, true, true];

/// What the ratio markers mean.
const MARKER_LEGEND: &str =
    "Bravo/Linux = Bravo median / Linux median; ▲ Bravo better, ▼ Bravo worse (rates: higher is better; times: lower is better).";

/// A benchmark report: a titled table of rows, with notes.
#[derive(Clone, Debug)]
pub struct Report {
    /// File stem: "pps", "http", "boot".
    pub name: String,
    /// One line.
    pub title: String,
    /// Free lines printed under the table / in the markdown (setup, accel,
    /// cpus, how measured).
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn new(name: &str, title: &str) -> Self {
        Report { name: name.into(), title: title.into(), notes: Vec::new(), rows: Vec::new() }
    }

    /// The table for the terminal: columns measure | unit | Bravo median
    /// (min–max) | Linux median (min–max) | Bravo/Linux | ceiling median |
    /// Bravo/ceiling; "-" for missing cells. Ends with a newline. See
    /// [`Report::text`] for the table with title and notes.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 7]> = self.rows.iter().map(Row::cells).collect();
        let mut widths = HEADERS.map(width);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(width(c));
            }
        }
        let line = |cells: &[String; 7]| -> String {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i > 0 {
                    s.push_str(" | ");
                }
                let pad = " ".repeat(widths[i] - width(c));
                if RIGHT[i] {
                    s.push_str(&pad);
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&pad);
                }
            }
            s.truncate(s.trim_end().len());
            s.push('\n');
            s
        };
        let mut out = line(&HEADERS.map(String::from));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&rule.join("-+-"));
        out.push('\n');
        for r in &rows {
            out.push_str(&line(r));
        }
        out
    }

    /// Title, table, marker legend and notes: what the terminal shows.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n{}\n{}\n", self.title, self.table(), MARKER_LEGEND);
        for n in &self.notes {
            out.push_str(n);
            out.push('\n');
        }
        out
    }

    /// Every sample as CSV: a header line `group,label,unit,system,run,value`,
    /// then one line per sample (system in {bravo, linux, ceiling}, run
    /// counted from 1).
    pub fn csv(&self) -> String {
        let mut out = String::from("group,label,unit,system,run,value\n");
        for row in &self.rows {
            for (system, samples) in row.systems() {
                for (i, v) in samples.0.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{},{},{},{},{},{}",
                        csv_field(&row.group),
                        csv_field(&row.label),
                        csv_field(&row.unit),
                        system.key(),
                        i + 1,
                        v
                    );
                }
            }
        }
        out
    }

    /// The Markdown page: title, notes, the table, the marker legend and a
    /// link to `<name>.svg`.
    pub fn markdown(&self) -> String {
        let mut out = format!("# {}\n\n", md_text(&self.title));
        for n in &self.notes {
            let _ = writeln!(out, "- {}", md_text(n));
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        let md_row = |cells: &[String]| -> String {
            let cells: Vec<String> = cells.iter().map(|c| md_cell(c)).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        out.push_str(&md_row(&HEADERS.map(String::from)));
        let align: Vec<&str> = RIGHT.iter().map(|r| if *r { "--:" } else { "---" }).collect();
        let _ = writeln!(out, "|{}|", align.join("|"));
        for row in &self.rows {
            out.push_str(&md_row(&row.cells()));
        }
        let _ = write!(out, "\n{}\n\n![{}]({}.svg)\n", MARKER_LEGEND, md_text(&self.title), self.name);
        out
    }

    /// The chart: horizontal grouped bars, one group per row, each row
    /// scaled to its own largest median; min–max whiskers; real values as
    /// text.
    pub fn svg(&self) -> String {
        const W: f64 = 980.0;
        const LEFT: f64 = 16.0;
        const X0: f64 = 90.0; // bars start here
        const BAR_W: f64 = 560.0; // the row's largest median spans this
        const WHISKER_MAX: f64 = BAR_W * 1.15; // whiskers clipped here
        const BAR_H: f64 = 16.0;
        const BAR_GAP: f64 = 4.0;
        const HEAD_H: f64 = 22.0; // row heading above its bars
        const ROW_GAP: f64 = 14.0;
        const TOP: f64 = 80.0;

        let present: Vec<System> = System::ALL
            .into_iter()
            .filter(|s| self.rows.iter().any(|r| r.systems().iter().any(|(rs, _)| rs == s)))
            .collect();
        let height: f64 = TOP
            + self.rows.iter().map(|r| HEAD_H + r.systems().len() as f64 * (BAR_H + BAR_GAP) + ROW_GAP).sum::<f64>()
            + 10.0;

        let mut s = String::new();
        let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#,
            h = height
        );
        let _ = writeln!(s, r#"<rect x="0" y="0" width="{W}" height="{height}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="26" font-size="16" font-weight="bold">{}</text>"#,
            xml_escape(&self.title)
        );
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="44" fill="#555">Bars: median; whiskers: min–max; each measure scaled to its own largest median.</text>"##
        );
        // Legend.
        let mut lx = LEFT;
        for sys in &present {
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="54" width="12" height="12" fill="{}"/><text x="{}" y="64">{}</text>"#,
                sys.color(),
                lx + 16.0,
                sys.name()
            );
            lx += 90.0;
        }

        let mut y = TOP;
        for row in &self.rows {
            let _ = writeln!(
                s,
                r##"<text x="{LEFT}" y="{}" font-weight="bold">{} <tspan font-weight="normal" fill="#555">({}, {})</tspan></text>"##,
                y + 14.0,
                xml_escape(&row.measure()),
                xml_escape(&row.unit),
                row.better.phrase()
            );
            y += HEAD_H;
            let systems = row.systems();
            let row_max = systems.iter().filter_map(|(_, smp)| smp.median()).fold(0.0_f64, f64::max);
            let scale = |v: f64| -> f64 {
                if row_max > 0.0 && v.is_finite() {
                    (v.max(0.0) / row_max * BAR_W).min(WHISKER_MAX)
                } else {
                    0.0
                }
            };
            for (sys, smp) in systems {
                let cy = y + BAR_H / 2.0;
                let _ =
                    writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, X0 - 8.0, cy + 4.0, sys.name());
                let mut end = X0;
                match smp.median() {
                    Some(m) => {
                        let len = scale(m);
                        let _ = writeln!(
                            s,
                            r#"<rect x="{X0}" y="{y}" width="{:.1}" height="{BAR_H}" fill="{}"><title>{} {}: {} {}</title></rect>"#,
                            len,
                            sys.color(),
                            sys.name(),
                            xml_escape(&row.measure()),
                            fmt_num(m),
                            xml_escape(&row.unit)
                        );
                        end = X0 + len;
                        if let (Some(lo), Some(hi)) = (smp.min(), smp.max()) {
                            if hi > lo {
                                let (x1, x2) = (X0 + scale(lo), X0 + scale(hi));
                                let _ = writeln!(
                                    s,
                                    r##"<g stroke="#222" stroke-width="1"><line x1="{x1:.1}" y1="{cy}" x2="{x2:.1}" y2="{cy}"/><line x1="{x1:.1}" y1="{}" x2="{x1:.1}" y2="{}"/><line x1="{x2:.1}" y1="{}" x2="{x2:.1}" y2="{}"/></g>"##,
                                    cy - 4.0,
                                    cy + 4.0,
                                    cy - 4.0,
                                    cy + 4.0
                                );
                                end = end.max(x2);
                            }
                        }
                        let _ = writeln!(
                            s,
                            r#"<text x="{:.1}" y="{}">{} {}</text>"#,
                            end + 6.0,
                            cy + 4.0,
                            fmt_num(m),
                            xml_escape(&row.unit)
                        );
                    }
                    None => {
                        let _ = writeln!(s, r##"<text x="{}" y="{}" fill="#888">no data</text>"##, end + 6.0, cy + 4.0);
                    }
                }
                y += BAR_H + BAR_GAP;
            }
            y += ROW_GAP;
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes `<dir>/<name>.csv`, `<dir>/<name>.md` and `<dir>/<name>.svg`,
    /// creating `dir`. Returns the paths written.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let files = [("csv", self.csv()), ("md", self.markdown()), ("svg", self.svg())];
        let mut paths = Vec::new();
        for (ext, body) in files {
            let path = dir.join(format!("{}.{ext}", self.name));
            std::fs::write(&path, body)?;
            paths.push(path);
        }
        Ok(paths)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// A number for people: thousands separators from 10,000 up, one decimal
/// below 100, integers otherwise.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if (v * 10.0).round().abs() < 1000.0 {
        return format!("{v:.1}");
    }
    let r = v.round();
    if r.abs() < 10_000.0 {
        return format!("{r:.0}");
    }
    let digits = format!("{:.0}", r.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if r < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// A ratio: two significant digits below 0.1, two decimals below 10, else
/// like [`fmt_num`]; with "×".
fn fmt_ratio(r: f64) -> String {
    if r != 0.0 && r.abs() < 0.095 {
        let decimals = (-r.abs().log10()).ceil() as usize + 1;
        format!("{r:.decimals$}×")
    } else if r.abs() < 10.0 {
        format!("{r:.2}×")
    } else {
        format!("{}×", fmt_num(r))
    }
}

/// `bravo / other`, with "▲" when Bravo is better, "▼" when worse, "="
/// when equal at the printed precision.
pub fn ratio_cell(bravo: f64, other: f64, better: Better) -> String {
    let r = bravo / other;
    if other == 0.0 || !r.is_finite() {
        return "-".into();
    }
    let text = fmt_ratio(r);
    let marker = if text == "1.00×" {
        "="
    } else {
        let bravo_better = match better {
            Better::Higher => r > 1.0,
            Better::Lower => r < 1.0,
        };
        if bravo_better {
            "▲"
        } else {
            "▼"
        }
    };
    format!("{text} {marker}")
}

/// `a / b` without a marker ("-" when undefined).
fn plain_ratio(a: f64, b: f64) -> String {
    let r = a / b;
    if b == 0.0 || !r.is_finite() {
        "-".into()
    } else {
        fmt_ratio(r)
    }
}

/// "median (min–max)", just "median" when all samples are equal, "-" when
/// there are none.
fn samples_cell(s: Option<&Samples>) -> String {
    let Some(s) = s else { return "-".into() };
    match (s.median(), s.min(), s.max()) {
        (Some(m), Some(lo), Some(hi)) if hi > lo => format!("{} ({}–{})", fmt_num(m), fmt_num(lo), fmt_num(hi)),
        (Some(m), _, _) => fmt_num(m),
        _ => "-".into(),
    }
}

/// Display width in terminal columns (every char counted as one).
fn width(s: &str) -> usize {
    s.chars().count()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn md_text(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn md_cell(s: &str) -> String {
    md_text(s).replace('|', "\\|")
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        let mut r = Report::new("sample", "Packet rates & <latency> \"test\"");
        r.notes.push("accel: tcg, 2 cpus".into());
        r.notes.push("each measure: 5 runs".into());
        r.rows.push(Row {
            group: "RX 64 B frames".into(),
            label: "packets/s received by the guest".into(),
            unit: "pkt/s".into(),
            better: Better::Higher,
            bravo: Samples(vec![81_234.0, 80_100.0, 82_000.0]),
            linux: Some(Samples(vec![35_000.0, 36_500.0, 34_000.0])),
            ceiling: Some(Samples(vec![90_000.0, 91_000.0])),
        });
        r.rows.push(Row {
            group: "1 connection".into(),
            label: "requests/s, a|b".into(),
            unit: "req/s".into(),
            better: Better::Higher,
            bravo: Samples(vec![4_000.0, 4_200.0]),
            linux: None,
            ceiling: None,
        });
        r.rows.push(Row {
            group: "boot".into(),
            label: "time to first line".into(),
            unit: "ms".into(),
            better: Better::Lower,
            bravo: Samples(vec![12.5, 13.0, 12.0]),
            linux: Some(Samples(vec![250.0, 260.0, 240.0])),
            ceiling: None,
        });
        r.rows.push(Row {
            group: "empty".into(),
            label: "no samples".into(),
            unit: "µs".into(),
            better: Better::Lower,
            bravo: Samples(vec![]),
            linux: Some(Samples(vec![0.0])),
            ceiling: None,
        });
        r
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bravo-report-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(Samples(vec![3.0, 1.0, 2.0]).median(), Some(2.0));
        assert_eq!(Samples(vec![4.0, 1.0, 3.0, 2.0]).median(), Some(2.5));
        assert_eq!(Samples(vec![7.0]).median(), Some(7.0));
        assert_eq!(Samples(vec![]).median(), None);
        let s = Samples(vec![5.0, -1.0, 9.0, 2.0]);
        assert_eq!(s.min(), Some(-1.0));
        assert_eq!(s.max(), Some(9.0));
        assert_eq!(Samples(vec![]).min(), None);
    }

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_num(81_234.4), "81,234");
        assert_eq!(fmt_num(1_234_567.0), "1,234,567");
        assert_eq!(fmt_num(10_000.0), "10,000");
        assert_eq!(fmt_num(9_999.4), "9999");
        assert_eq!(fmt_num(9_999.6), "10,000");
        assert_eq!(fmt_num(100.0), "100");
        assert_eq!(fmt_num(250.6), "251");
        assert_eq!(fmt_num(99.94), "99.9");
        assert_eq!(fmt_num(99.96), "100");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(0.0), "0.0");
        assert_eq!(fmt_num(-12_345.0), "-12,345");
    }

    #[test]
    fn ratio_markers() {
        assert_eq!(ratio_cell(231.0, 100.0, Better::Higher), "2.31× ▲");
        assert_eq!(ratio_cell(80.0, 100.0, Better::Higher), "0.80× ▼");
        assert_eq!(ratio_cell(80.0, 100.0, Better::Lower), "0.80× ▲");
        assert_eq!(ratio_cell(231.0, 100.0, Better::Lower), "2.31× ▼");
        assert_eq!(ratio_cell(100.0, 100.0, Better::Lower), "1.00× =");
        assert_eq!(ratio_cell(2_000.0, 100.0, Better::Higher), "20.0× ▲");
        assert_eq!(ratio_cell(1.0, 0.0, Better::Higher), "-");
        assert_eq!(ratio_cell(12.5, 870.0, Better::Lower), "0.014× ▲");
        assert_eq!(ratio_cell(0.5, 10.0, Better::Higher), "0.050× ▼");
    }

    #[test]
    fn table_cells() {
        let r = sample_report();
        let t = r.table();
        assert_eq!(t.lines().count(), 2 + r.rows.len());
        assert!(t.contains("81,234 (80,100–82,000)"), "{t}");
        assert!(t.contains("2.32× ▲"), "{t}"); // 81,234 / 35,000
        assert!(t.contains("0.050× ▲"), "{t}"); // 12.5 ms / 250 ms
        assert!(t.contains("0.90×"), "{t}"); // 81,234 / 90,500
        let req = t.lines().find(|l| l.contains("1 connection")).unwrap();
        assert!(req.contains("4100 (4000–4200)"), "{req}");
        assert_eq!(req.matches(" - ").count() + req.ends_with(" -") as usize, 4, "{req}");
        assert!(r.text().contains("accel: tcg, 2 cpus"));
    }

    #[test]
    fn csv_has_a_line_per_sample() {
        let r = sample_report();
        let samples: usize = r.rows.iter().map(|row| row.systems().iter().map(|(_, s)| s.len()).sum::<usize>()).sum();
        let dir = temp_dir("csv");
        let paths = r.write(&dir).unwrap();
        let csv = std::fs::read_to_string(&paths[0]).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("group,label,unit,system,run,value"));
        let data: Vec<&str> = lines.collect();
        assert_eq!(data.len(), samples);
        assert!(data.contains(&"RX 64 B frames,packets/s received by the guest,pkt/s,ceiling,2,91000"));
        assert!(data.contains(&"1 connection,\"requests/s, a|b\",req/s,bravo,1,4000"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn svg_is_xml() {
        let r = sample_report();
        let dir = temp_dir("svg");
        let paths = r.write(&dir).unwrap();
        assert_eq!(
            paths.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect::<Vec<_>>(),
            ["sample.csv", "sample.md", "sample.svg"]
        );
        let svg = &paths[2];
        let parsed = std::process::Command::new("python3")
            .args(["-c", "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])"])
            .arg(svg)
            .status();
        match parsed {
            Ok(status) => assert!(status.success(), "{} is not valid XML", svg.display()),
            Err(e) => eprintln!("python3 not runnable ({e}); checking tag balance only"),
        }
        let text = std::fs::read_to_string(svg).unwrap();
        assert!(text.contains("Packet rates &amp; &lt;latency&gt; &quot;test&quot;"));
        assert_eq!(text.matches("<text").count(), text.matches("</text>").count());
        assert!(text.contains("no data"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn markdown_has_a_row_per_row() {
        let r = sample_report();
        let md = r.markdown();
        let table_rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(table_rows.len(), 1 + r.rows.len()); // header + rows
        for row in &r.rows {
            let measure = md_cell(&row.measure());
            assert!(table_rows.iter().any(|l| l.starts_with(&format!("| {measure} |"))), "{measure}\n{md}");
        }
        assert!(md.contains("requests/s, a\\|b"));
        assert!(md.starts_with("# Packet rates"));
        assert!(md.contains("- accel: tcg, 2 cpus"));
        assert!(md.contains("](sample.svg)"));
    }
}
