//! The end of a run: counts, every failed check with the seed and concrete examples, the
//! availability table, and the same as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::availability::{KindAvailability, render};
use super::checks::{Check, CheckReport};
use super::history::{History, Outcome, secs};
use super::nemesis::{CrashEvent, FaultRecord, at};
use super::schedule::Fault;
use super::workload::ConsumerNotes;

/// A full read, without its records.
#[derive(Clone, Debug, Serialize)]
pub struct ReadSummary {
    pub label: String,
    pub partition: u32,
    pub broker: u64,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub records: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub verdict: &'static str,
    pub seed: u64,
    pub replay: String,
    pub settings: String,
    pub planned_fault_s: u64,
    /// From the first injection to the last heal.
    pub fault_s: f64,
    pub plan: Vec<Fault>,
    pub faults: Vec<FaultRecord>,
    pub crashes: Vec<CrashEvent>,
    pub attempts: usize,
    pub acked: usize,
    pub refused: BTreeMap<String, usize>,
    pub unknown: BTreeMap<String, usize>,
    pub consumed: usize,
    pub consumers: Vec<ConsumerNotes>,
    pub full_reads: Vec<ReadSummary>,
    pub checks: CheckReport,
    pub availability: Vec<KindAvailability>,
    /// Failures that are not check violations: a fault step that failed, a crash, a cluster
    /// that did not heal, an interruption.
    pub failures: Vec<String>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        seed: u64,
        replay: String,
        settings: String,
        planned_fault_s: u64,
        plan: Vec<Fault>,
        faults: Vec<FaultRecord>,
        crashes: Vec<CrashEvent>,
        history: &History,
        consumers: Vec<ConsumerNotes>,
        checks: CheckReport,
        availability: Vec<KindAvailability>,
        mut failures: Vec<String>,
    ) -> Report {
        let mut refused = BTreeMap::new();
        let mut unknown = BTreeMap::new();
        let mut acked = 0;
        for a in &history.attempts {
            match &a.outcome {
                Outcome::Acked { .. } => acked += 1,
                Outcome::Refused { reason } => *refused.entry(reason.clone()).or_default() += 1,
                Outcome::Unknown { what } => *unknown.entry(what.clone()).or_default() += 1,
            }
        }
        for f in &faults {
            if let Some(e) = &f.error {
                failures.push(format!("fault #{} ({}): {e}", f.index, f.kind));
            }
        }
        for c in &crashes {
            failures.push(format!(
                "CRASH: {} exited by itself at {:.3}s ({}); last log lines:\n{}",
                c.node,
                secs(c.at),
                c.status,
                c.log_tail
            ));
        }
        let first = faults.iter().filter_map(|f| f.injected_at).min();
        let last = faults.iter().filter_map(|f| f.healed_at).max();
        let fault_s = match (first, last) {
            (Some(a), Some(b)) if b > a => secs(b - a),
            _ => 0.0,
        };
        let verdict = if checks.passed() && failures.is_empty() && acked > 0 {
            "PASS"
        } else {
            "FAIL"
        };
        if acked == 0 {
            failures.push("no write was acknowledged in the whole run".into());
        }
        Report {
            verdict,
            seed,
            replay,
            settings,
            planned_fault_s,
            fault_s,
            plan,
            faults,
            crashes,
            attempts: history.attempts.len(),
            acked,
            refused,
            unknown,
            consumed: history.reads.len(),
            consumers,
            full_reads: history
                .full_reads
                .iter()
                .map(|r| ReadSummary {
                    label: r.label.clone(),
                    partition: r.partition,
                    broker: r.broker,
                    log_start_offset: r.log_start_offset,
                    high_watermark: r.high_watermark,
                    records: r.records.len(),
                })
                .collect(),
            checks,
            availability,
            failures,
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict == "PASS"
    }

    /// The report for people, `examples` per failed check.
    pub fn render(&self, examples: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n== faults");
        for f in &self.faults {
            let _ = writeln!(
                s,
                "  {} -> [{}] injected {} healed {}{}",
                f.planned,
                f.nodes.join(","),
                at(f.injected_at),
                at(f.healed_at),
                f.skipped
                    .as_ref()
                    .or(f.error.as_ref())
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            );
            if f.steps.len() > 1 {
                for step in &f.steps {
                    let _ = writeln!(s, "      {step}");
                }
            }
        }
        let _ = writeln!(
            s,
            "== workload: {} attempts, {} acked, refused {:?}, unknown {:?}; {} records consumed",
            self.attempts, self.acked, self.refused, self.unknown, self.consumed
        );
        for (p, c) in self.consumers.iter().enumerate() {
            if c.out_of_range > 0 {
                let _ = writeln!(
                    s,
                    "   consumer of partition {p}: {} OUT_OF_RANGE answers, first: {}",
                    c.out_of_range,
                    c.first_out_of_range.as_deref().unwrap_or("-")
                );
            }
        }
        for r in &self.full_reads {
            let _ = writeln!(
                s,
                "== {} partition {} from broker {}: offsets {}..{} ({} records)",
                r.label, r.partition, r.broker, r.log_start_offset, r.high_watermark, r.records
            );
        }
        let _ = writeln!(
            s,
            "== duplicates: {} explained by a client retry, {} not explained",
            self.checks.duplicates_explained, self.checks.duplicates_unexplained
        );
        let _ = writeln!(
            s,
            "== checks ({} records checked)",
            self.checks.records_checked
        );
        for c in Check::ALL {
            let n = self.checks.count(c);
            let _ = writeln!(
                s,
                "  {:<17} {}",
                c.name(),
                if n == 0 {
                    "ok".to_string()
                } else {
                    format!("FAILED: {n} violations")
                }
            );
        }
        for c in Check::ALL {
            let n = self.checks.count(c);
            if n == 0 {
                continue;
            }
            let _ = writeln!(
                s,
                "\n{} (seed {}): {n} violations, for example:",
                c.name(),
                self.seed
            );
            for v in self
                .checks
                .examples
                .iter()
                .filter(|v| v.check == c)
                .take(examples)
            {
                let _ = writeln!(
                    s,
                    "  [{} seed {} partition {}] {}",
                    c.name(),
                    self.seed,
                    v.partition,
                    v.detail
                );
            }
        }
        for f in &self.failures {
            let _ = writeln!(s, "\nFAILURE (seed {}): {f}", self.seed);
        }
        let _ = writeln!(
            s,
            "\n== availability (writes acknowledged on any partition)"
        );
        s.push_str(&render(&self.availability));
        let _ = writeln!(
            s,
            "\n== {} seed {} ({:.0}s of faults); replay: {}",
            self.verdict, self.seed, self.fault_s, self.replay
        );
        s
    }
}
