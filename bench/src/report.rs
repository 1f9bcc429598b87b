//! One scenario's result, printed as a table and written as JSON; the machine it ran on; and the
//! merge of several results into one file (JSON + Markdown) for `make bench`.

use std::{fs, path::Path};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stats::Summary;

/// One number of a result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// The result of one scenario run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub started_at: String,
    pub duration_secs: f64,
    /// The 1-minute load average when the scenario started: shows whether other work shared the
    /// cores.
    pub load_average_at_start: f64,
    pub params: Value,
    pub metrics: Vec<Metric>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, params: Value) -> Self {
        Self {
            scenario: scenario.to_owned(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            duration_secs: 0.0,
            load_average_at_start: load_average(),
            params,
            metrics: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn metric(&mut self, name: &str, value: f64, unit: &str) {
        self.metrics.push(Metric {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
        });
    }

    /// Adds `<prefix> p50/p90/p99/max` (ms) and the sample count.
    pub fn latency(&mut self, prefix: &str, s: &Summary) {
        self.metric(&format!("{prefix} p50"), s.p50_ms, "ms");
        self.metric(&format!("{prefix} p90"), s.p90_ms, "ms");
        self.metric(&format!("{prefix} p99"), s.p99_ms, "ms");
        self.metric(&format!("{prefix} max"), s.max_ms, "ms");
        self.metric(&format!("{prefix} samples"), s.count as f64, "");
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// The readable table.
    pub fn table(&self) -> String {
        let width = self.metrics.iter().map(|m| m.name.len()).max().unwrap_or(0);
        let mut out = format!(
            "== {} ({}, {:.1} s, load {:.2}) ==\n",
            self.scenario, self.started_at, self.duration_secs, self.load_average_at_start
        );
        out.push_str(&format!("   params: {}\n", self.params));
        for m in &self.metrics {
            out.push_str(&format!(
                "   {:<width$}  {:>14}  {}\n",
                m.name,
                format_value(m.value),
                m.unit
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("   note: {n}\n"));
        }
        out
    }

    /// Prints the table and writes the JSON when `json_out` is given.
    pub fn emit(&self, json_out: Option<&Path>) -> Result<()> {
        println!("{}", self.table());
        if let Some(path) = json_out {
            write_json(path, self)?;
        }
        Ok(())
    }
}

/// Numbers as a person reads them: integers plainly, small values with 3 decimals.
pub fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// The machine a run happened on (from /proc).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub open_files_limit: String,
}

impl Machine {
    pub fn current() -> Self {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        let mem_kib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        let open_files_limit = read("/proc/self/limits")
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .map(|l| {
                l.split_whitespace()
                    .skip(3)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            open_files_limit,
        }
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Several reports of one run, with the machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunFile {
    pub tool: String,
    pub label: String,
    pub generated_at: String,
    pub machine: Machine,
    pub reports: Vec<Report>,
}

impl RunFile {
    pub fn new(label: &str, reports: Vec<Report>) -> Self {
        Self {
            tool: format!("retich-bench {}", env!("CARGO_PKG_VERSION")),
            label: label.to_owned(),
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            machine: Machine::current(),
            reports,
        }
    }

    /// One Markdown table per report.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "Run `{}` at {} — {} CPUs ({}), {} GiB, Linux {}, open files {}\n\n",
            self.label,
            self.generated_at,
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            m.open_files_limit
        );
        for r in &self.reports {
            out.push_str(&format!(
                "### {}\n\n{:.1} s, load average at start {:.2}; params `{}`\n\n| metric | value | unit |\n|---|---:|---|\n",
                r.scenario, r.duration_secs, r.load_average_at_start, r.params
            ));
            for metric in &r.metrics {
                out.push_str(&format!(
                    "| {} | {} | {} |\n",
                    metric.name,
                    format_value(metric.value),
                    metric.unit
                ));
            }
            for n in &r.notes {
                out.push_str(&format!("\n- {n}"));
            }
            out.push_str("\n\n");
        }
        out
    }
}

/// Reads report files (each a [`Report`]) in the order given.
pub fn read_reports(paths: &[impl AsRef<Path>]) -> Result<Vec<Report>> {
    paths
        .iter()
        .map(|p| {
            let p = p.as_ref();
            let bytes = fs::read(p).with_context(|| format!("read {}", p.display()))?;
            serde_json::from_slice(&bytes).with_context(|| format!("parse {}", p.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_integers_or_with_decimals() {
        assert_eq!(format_value(15000.0), "15000");
        assert_eq!(format_value(1.23456), "1.235");
        assert_eq!(format_value(1234.56), "1234.6");
    }

    #[test]
    fn a_report_round_trips_through_json_and_renders_its_metrics() {
        let mut r = Report::new("send", serde_json::json!({"clients": 32}));
        r.metric("messages/s", 1234.5, "1/s");
        r.latency("http", &Summary::default());
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.get("messages/s"), Some(1234.5));
        assert_eq!(back.get("http p99"), Some(0.0));
        let md = RunFile::new("short", vec![back]).markdown();
        assert!(md.contains("| messages/s | 1234.5 | 1/s |"), "{md}");
    }
}
