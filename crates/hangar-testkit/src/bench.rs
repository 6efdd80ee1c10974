//! The benchmarks' figures: per-bench tables of samples, and the measures every bench
//! reports for the one table `scripts/bench` prints (each measure beside its baseline,
//! measured in the same run, with its target and whether it is met).
//!
//! A bench calls [`report`] for each measure: it prints the measure, and when
//! `HANGAR_BENCH_REPORT` names a file, appends it there as a JSON line, so one command
//! can run every bench and render their measures as one table ([`render`], the
//! `bench-table` binary).

use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where [`report`] appends measures, one JSON object per line.
pub const REPORT_VAR: &str = "HANGAR_BENCH_REPORT";

/// One line of a benchmark's table.
pub struct Row {
    pub name: String,
    pub p50: Duration,
    pub p95: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints a table: a header, then each row's name (in `width` columns) with its p50
/// and p95 in milliseconds.
pub fn print_table(title: &str, width: usize, rows: &[Row]) {
    println!("\n{title}");
    println!("{:<width$} {:>9} {:>9}", "", "p50 ms", "p95 ms");
    for r in rows {
        println!(
            "{:<width$} {:>9.2} {:>9.2}",
            r.name,
            r.p50.as_secs_f64() * 1000.0,
            r.p95.as_secs_f64() * 1000.0
        );
    }
}

/// p50 and p95 of `samples` (at least one).
pub fn summarize(name: &str, mut samples: Vec<Duration>) -> Row {
    samples.sort();
    Row {
        name: name.into(),
        p50: percentile(&samples, 0.5),
        p95: percentile(&samples, 0.95),
    }
}

/// What a measure counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Ms,
    MiB,
    /// Throughput: the one unit where more is better.
    MBps,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::MiB => "MiB",
            Unit::MBps => "MB/s",
        }
    }
}

/// A distribution's summary, in the measure's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    /// The summary of durations, in milliseconds.
    pub fn of_durations(samples: &[Duration]) -> Stat {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        Stat::of(&ms)
    }

    /// The summary of `samples` (at least one).
    pub fn of(samples: &[f64]) -> Stat {
        assert!(!samples.is_empty(), "a measure needs a sample");
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |p: f64| s[((s.len() as f64 - 1.0) * p).round() as usize];
        Stat {
            p50: at(0.5),
            p95: at(0.95),
            max: s[s.len() - 1],
            n: s.len(),
        }
    }

    /// A single figure (a total divided by a count, say).
    pub fn one(value: f64) -> Stat {
        Stat::of(&[value])
    }
}

/// What a measure must reach.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Ours over the baseline's, at p50 and (when given) at p95.
    RatioAtMost { p50: f64, p95: Option<f64> },
    /// Ours over the baseline's p50, at least (throughput).
    RatioAtLeast { p50: f64 },
    /// Ours minus the baseline's p50, at most, in the unit.
    OverAtMost { p50: f64 },
    /// Absolute figures, in the unit.
    AtMost {
        p50: f64,
        p95: Option<f64>,
        max: Option<f64>,
    },
}

impl Target {
    /// Whether `ours` (beside `base`) reaches it; `None` when it needs a baseline that
    /// was not measured.
    pub fn met(&self, ours: &Stat, base: Option<&Stat>) -> Option<bool> {
        let within = |v: f64, limit: Option<f64>| limit.is_none_or(|l| v <= l);
        match *self {
            Target::RatioAtMost { p50, p95 } => {
                let b = base?;
                Some(ours.p50 / b.p50 <= p50 && within(ours.p95 / b.p95, p95))
            }
            Target::RatioAtLeast { p50 } => Some(ours.p50 / base?.p50 >= p50),
            Target::OverAtMost { p50 } => Some(ours.p50 - base?.p50 <= p50),
            Target::AtMost { p50, p95, max } => {
                Some(ours.p50 <= p50 && within(ours.p95, p95) && within(ours.max, max))
            }
        }
    }

    fn describe(&self, unit: Unit) -> String {
        let u = unit.label();
        match *self {
            Target::RatioAtMost { p50, p95: None } => format!("<= {p50}x p50"),
            Target::RatioAtMost {
                p50,
                p95: Some(p95),
            } if p95 == p50 => {
                format!("<= {p50}x p50 and p95")
            }
            Target::RatioAtMost {
                p50,
                p95: Some(p95),
            } => {
                format!("<= {p50}x p50, <= {p95}x p95")
            }
            Target::RatioAtLeast { p50 } => format!(">= {p50}x p50"),
            Target::OverAtMost { p50 } => format!("<= +{p50} {u} p50"),
            Target::AtMost { p50, p95, max } => {
                let mut s = format!("p50 <= {p50} {u}");
                if let Some(p95) = p95 {
                    s.push_str(&format!(", p95 <= {p95} {u}"));
                }
                if let Some(max) = max {
                    s.push_str(&format!(", max <= {max} {u}"));
                }
                s
            }
        }
    }
}

/// One row of the benchmark table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// What is measured, as the table names it.
    pub measure: String,
    /// What it is compared with, measured in the same run; `None` for an absolute
    /// target.
    pub baseline: Option<String>,
    pub unit: Unit,
    pub ours: Stat,
    pub base: Option<Stat>,
    pub target: Target,
    /// Anything the figures need to be read right (what failed, what was skipped).
    #[serde(default)]
    pub note: Option<String>,
}

impl Measure {
    pub fn met(&self) -> Option<bool> {
        self.target.met(&self.ours, self.base.as_ref())
    }
}

/// Prints `m` and appends it to [`REPORT_VAR`]'s file when that is set.
pub fn report(m: &Measure) {
    let base = m
        .base
        .map(|b| format!(" | {}: p50 {:.2} p95 {:.2}", baseline_name(m), b.p50, b.p95))
        .unwrap_or_default();
    println!(
        "measure: {}: p50 {:.2} p95 {:.2} {}{base} | target {}: {}",
        m.measure,
        m.ours.p50,
        m.ours.p95,
        m.unit.label(),
        m.target.describe(m.unit),
        verdict(m.met()),
    );
    if let Some(path) = std::env::var_os(REPORT_VAR) {
        let line = serde_json::to_string(m).expect("a measure serializes");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.to_string_lossy()));
        writeln!(f, "{line}").unwrap_or_else(|e| panic!("write {}: {e}", path.to_string_lossy()));
    }
}

fn baseline_name(m: &Measure) -> &str {
    m.baseline.as_deref().unwrap_or("baseline")
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "not met",
        None => "no baseline",
    }
}

/// The machine a table was measured on.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let bytes = proc_bytes(&meminfo, "MemTotal").unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        Machine {
            cores,
            memory_gib: bytes as f64 / (1u64 << 30) as f64,
            kernel,
        }
    }
}

/// The `KEY:   N kB` line of a /proc file (meminfo, smaps_rollup, status), in bytes.
pub fn proc_bytes(text: &str, key: &str) -> Option<u64> {
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

/// The measures as one Markdown table, under a line naming the machine and `date`.
pub fn render(measures: &[Measure], machine: &Machine, date: &str) -> String {
    let mut out = format!(
        "Measured {date} on {} cores, {:.1} GiB, kernel {}.\n\n",
        machine.cores, machine.memory_gib, machine.kernel
    );
    out.push_str(
        "| measure | baseline | p50 | p95 | baseline p50 | baseline p95 | ratio p50 | target | met |\n\
         |---|---|---:|---:|---:|---:|---:|---|---|\n",
    );
    for m in measures {
        let u = m.unit.label();
        let (bp50, bp95, ratio) = match m.base {
            Some(b) => (
                format!("{:.2} {u}", b.p50),
                format!("{:.2} {u}", b.p95),
                format!("{:.2}x", m.ours.p50 / b.p50),
            ),
            None => ("".into(), "".into(), "".into()),
        };
        let note = m
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "| {}{note} | {} | {:.2} {u} | {:.2} {u} | {bp50} | {bp95} | {ratio} | {} | {} |\n",
            m.measure,
            m.baseline.as_deref().unwrap_or(""),
            m.ours.p50,
            m.ours.p95,
            m.target.describe(m.unit),
            verdict(m.met()),
        ));
    }
    out
}

/// The measures of a report file, in the order they were reported.
pub fn read_report(text: &str) -> Result<Vec<Measure>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(target: Target, ours: Stat, base: Option<Stat>, expected: Option<bool>) {
        assert_eq!(target.met(&ours, base.as_ref()), expected, "{target:?}");
    }

    fn stat(p50: f64, p95: f64) -> Stat {
        Stat {
            p50,
            p95,
            max: p95,
            n: 10,
        }
    }

    #[test]
    fn targets() {
        let ratio = Target::RatioAtMost {
            p50: 1.1,
            p95: Some(1.1),
        };
        check(ratio, stat(10.9, 11.0), Some(stat(10.0, 10.0)), Some(true));
        check(ratio, stat(10.9, 11.5), Some(stat(10.0, 10.0)), Some(false));
        check(ratio, stat(10.9, 11.0), None, None);
        let over = Target::OverAtMost { p50: 0.5 };
        check(over, stat(1.4, 9.0), Some(stat(1.0, 1.0)), Some(true));
        check(over, stat(1.6, 1.6), Some(stat(1.0, 1.0)), Some(false));
        let tput = Target::RatioAtLeast { p50: 0.9 };
        check(tput, stat(95.0, 95.0), Some(stat(100.0, 100.0)), Some(true));
        check(
            tput,
            stat(85.0, 95.0),
            Some(stat(100.0, 100.0)),
            Some(false),
        );
        let burst = Target::AtMost {
            p50: 1000.0,
            p95: None,
            max: Some(2000.0),
        };
        check(burst, Stat::of(&[500.0, 1900.0, 600.0]), None, Some(true));
        check(burst, Stat::of(&[500.0, 2100.0, 600.0]), None, Some(false));
    }

    #[test]
    fn a_report_line_round_trips_and_renders() {
        let m = Measure {
            measure: "sandbox lifecycle".into(),
            baseline: Some("crun run".into()),
            unit: Unit::Ms,
            ours: stat(11.0, 12.0),
            base: Some(stat(10.0, 10.0)),
            target: Target::RatioAtMost {
                p50: 1.1,
                p95: Some(1.1),
            },
            note: None,
        };
        let line = serde_json::to_string(&m).unwrap();
        let back = read_report(&format!("{line}\n\n")).unwrap();
        assert_eq!(back, vec![m]);
        let machine = Machine {
            cores: 2,
            memory_gib: 24.0,
            kernel: "6.1".into(),
        };
        let table = render(&back, &machine, "2026-12-03");
        assert!(table.contains("| sandbox lifecycle | crun run | 11.00 ms | 12.00 ms | 10.00 ms | 10.00 ms | 1.10x | <= 1.1x p50 and p95 | not met |"), "{table}");
        assert_eq!(
            read_report("{").unwrap_err().split(':').next(),
            Some("line 1")
        );
    }
}
