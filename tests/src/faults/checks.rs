//! The named checks of a run's [`History`]. Each violation names its check, the partition and
//! a concrete example; the self-tests below plant one anomaly of each kind in a clean
//! synthetic history and show that exactly that check fires.
//!
//! | check | fails when |
//! |---|---|
//! | `LOST` | an acked value is absent from a full read, or at another offset than acked |
//! | `DIVERGED` | an acked or once-read offset holds something else in a full read; or two full reads of one partition differ at an offset both have below their high watermarks |
//! | `PHANTOM` | a value in a full read, or read by a consumer, was never attempted on that partition, or every attempt of it was refused, or it sits at more offsets than it had attempts that were not refused (a refused one landed) |
//! | `NONDENSE` | a full read has a gap (or a repeat) between its log start and its high watermark |
//! | `ORDER` | A was acked before B was first sent (same partition), yet B sits at a lower offset than A |
//! | `UNCOMMITTED_READ` | a consumer read a record at or above the high watermark of its own answer, or one that a full read does not hold at that offset |
//! | `DUPLICATE` | a value sits at two offsets and no client retry explains it |
//!
//! A duplicate is *explained* when the value has an Unknown attempt followed by another attempt
//! and sits at most at as many offsets as it had attempts that were not refused.
//!
//! # To ensure correctness
//! - Every full read is checked on its own (each is a replica's view after the faults), so a
//!   loss that only shows after the leadership moved is reported against that read.
//! - Violations are counted in full; only the first [`EXAMPLES_KEPT`] of each check keep their
//!   text, so a run with a million of them still reports in bounded memory.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::history::{Attempt, FullRead, History, Outcome, secs};

/// Examples kept per check.
pub const EXAMPLES_KEPT: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Check {
    #[serde(rename = "LOST")]
    Lost,
    #[serde(rename = "DIVERGED")]
    Diverged,
    #[serde(rename = "PHANTOM")]
    Phantom,
    #[serde(rename = "NONDENSE")]
    Nondense,
    #[serde(rename = "ORDER")]
    Order,
    #[serde(rename = "UNCOMMITTED_READ")]
    UncommittedRead,
    #[serde(rename = "DUPLICATE")]
    Duplicate,
}

impl Check {
    pub const ALL: [Check; 7] = [
        Check::Lost,
        Check::Diverged,
        Check::Phantom,
        Check::Nondense,
        Check::Order,
        Check::UncommittedRead,
        Check::Duplicate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Check::Lost => "LOST",
            Check::Diverged => "DIVERGED",
            Check::Phantom => "PHANTOM",
            Check::Nondense => "NONDENSE",
            Check::Order => "ORDER",
            Check::UncommittedRead => "UNCOMMITTED_READ",
            Check::Duplicate => "DUPLICATE",
        }
    }
}

/// One failed check, with its example.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub check: Check,
    pub partition: u32,
    pub detail: String,
}

/// What the checks found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Violations per check (all of them counted).
    pub counts: BTreeMap<Check, usize>,
    /// The first [`EXAMPLES_KEPT`] of each check.
    pub examples: Vec<Violation>,
    /// Distinct (partition, value) duplicates that a client retry explains.
    pub duplicates_explained: usize,
    /// Distinct (partition, value) duplicates nothing explains (each also a `DUPLICATE`).
    pub duplicates_unexplained: usize,
    /// Records in every full read, summed.
    pub records_checked: usize,
}

impl CheckReport {
    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }

    pub fn passed(&self) -> bool {
        self.total() == 0
    }

    pub fn count(&self, check: Check) -> usize {
        self.counts.get(&check).copied().unwrap_or(0)
    }

    fn add(&mut self, check: Check, partition: u32, detail: String) {
        let n = self.counts.entry(check).or_default();
        *n += 1;
        if *n <= EXAMPLES_KEPT {
            self.examples.push(Violation {
                check,
                partition,
                detail,
            });
        }
    }
}

/// A full read, indexed.
struct Log<'a> {
    read: &'a FullRead,
    at: HashMap<u64, &'a str>,
    positions: HashMap<&'a str, Vec<u64>>,
}

impl<'a> Log<'a> {
    fn new(read: &'a FullRead) -> Log<'a> {
        let mut at = HashMap::with_capacity(read.records.len());
        let mut positions: HashMap<&str, Vec<u64>> = HashMap::new();
        for (offset, value) in &read.records {
            at.entry(*offset).or_insert(value.as_str());
            positions.entry(value.as_str()).or_default().push(*offset);
        }
        Log {
            read,
            at,
            positions,
        }
    }

    /// "read 1 (broker 2): ..." prefix of every example.
    fn who(&self) -> String {
        format!("{} (broker {})", self.read.label, self.read.broker)
    }

    fn describe_offset(&self, offset: u64) -> String {
        match self.at.get(&offset) {
            Some(v) => format!("holds {v:?}"),
            None => format!(
                "has nothing (it covers {}..{})",
                self.read.log_start_offset, self.read.high_watermark
            ),
        }
    }
}

/// Every attempt of each value, in the order they were sent.
fn by_value(attempts: &[Attempt]) -> HashMap<&str, Vec<&Attempt>> {
    let mut map: HashMap<&str, Vec<&Attempt>> = HashMap::new();
    for a in attempts {
        map.entry(a.value.as_str()).or_default().push(a);
    }
    for v in map.values_mut() {
        v.sort_by_key(|a| (a.sent_at, a.attempt));
    }
    map
}

fn outcomes(attempts: &[&Attempt]) -> String {
    attempts
        .iter()
        .map(|a| {
            let what = match &a.outcome {
                Outcome::Acked { offset, .. } => format!("acked at {offset}"),
                Outcome::Refused { reason } => format!("refused {reason}"),
                Outcome::Unknown { what } => format!("unknown ({what})"),
            };
            format!(
                "#{} to broker {} sent {:.3}s answered {:.3}s: {what}",
                a.attempt,
                a.broker,
                secs(a.sent_at),
                secs(a.done_at)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Attempts that may have landed: all but the refused ones.
fn may_have_landed(attempts: &[&Attempt]) -> usize {
    attempts
        .iter()
        .filter(|a| !matches!(a.outcome, Outcome::Refused { .. }))
        .count()
}

/// Why `value`, found on `partition`, should not be there; `None` if an attempt explains it.
fn phantom_reason(
    index: &HashMap<&str, Vec<&Attempt>>,
    value: &str,
    partition: u32,
) -> Option<String> {
    let Some(attempts) = index.get(value) else {
        return Some(format!("{value:?} was never attempted"));
    };
    let here: Vec<&Attempt> = attempts
        .iter()
        .copied()
        .filter(|a| a.partition == partition)
        .collect();
    if here.is_empty() {
        return Some(format!(
            "{value:?} was attempted on partition {} only",
            attempts[0].partition
        ));
    }
    if here
        .iter()
        .all(|a| matches!(a.outcome, Outcome::Refused { .. }))
    {
        return Some(format!(
            "{value:?} was refused on every attempt ({})",
            outcomes(&here)
        ));
    }
    None
}

/// Whether a client retry explains `value` at `occurrences` offsets.
fn retry_explains(attempts: &[&Attempt], occurrences: usize) -> bool {
    let retried_unknown = attempts
        .iter()
        .take(attempts.len().saturating_sub(1))
        .any(|a| matches!(a.outcome, Outcome::Unknown { .. }));
    retried_unknown && occurrences <= may_have_landed(attempts)
}

/// Runs every check on `history`.
pub fn check(history: &History) -> CheckReport {
    let mut report = CheckReport::default();
    let index = by_value(&history.attempts);
    let mut explained: HashSet<(u32, &str)> = HashSet::new();
    let mut unexplained: HashSet<(u32, &str)> = HashSet::new();

    // Consumer reads on their own: committed by their own answer, and attempted.
    let mut phantom_reads: HashSet<(u32, &str)> = HashSet::new();
    for r in &history.reads {
        if r.offset >= r.high_watermark {
            report.add(
                Check::UncommittedRead,
                r.partition,
                format!(
                    "a consumer read {:?} at offset {} from broker {} at {:.3}s in an answer \
                     whose high watermark was {}",
                    r.value,
                    r.offset,
                    r.broker,
                    secs(r.read_at),
                    r.high_watermark
                ),
            );
        }
        if let Some(why) = phantom_reason(&index, &r.value, r.partition)
            && phantom_reads.insert((r.partition, r.value.as_str()))
        {
            report.add(
                Check::Phantom,
                r.partition,
                format!(
                    "a consumer read {:?} at offset {} from broker {} at {:.3}s: {why}",
                    r.value,
                    r.offset,
                    r.broker,
                    secs(r.read_at)
                ),
            );
        }
    }

    for read in &history.full_reads {
        let log = Log::new(read);
        let p = read.partition;
        report.records_checked += read.records.len();
        check_dense(&mut report, &log);
        check_acked(&mut report, &log, &history.attempts);
        check_values(&mut report, &log, &index, &mut explained, &mut unexplained);
        check_order(&mut report, &log, &history.attempts, &index);
        for r in history.reads.iter().filter(|r| r.partition == p) {
            if log.at.get(&r.offset) == Some(&r.value.as_str()) {
                continue;
            }
            let now = log.describe_offset(r.offset);
            let what = format!(
                "a consumer read {:?} at offset {} from broker {} at {:.3}s; {} {now}",
                r.value,
                r.offset,
                r.broker,
                secs(r.read_at),
                log.who()
            );
            if log.at.contains_key(&r.offset) {
                report.add(Check::Diverged, p, what.clone());
            }
            report.add(Check::UncommittedRead, p, what);
        }
    }

    // Two reads of one partition agree below both high watermarks.
    let mut by_partition: BTreeMap<u32, Vec<&FullRead>> = BTreeMap::new();
    for r in &history.full_reads {
        by_partition.entry(r.partition).or_default().push(r);
    }
    for (p, reads) in by_partition {
        for (i, a) in reads.iter().enumerate() {
            for b in &reads[i + 1..] {
                compare_reads(&mut report, p, a, b);
            }
        }
    }
    report.duplicates_explained = explained.len();
    report.duplicates_unexplained = unexplained.len();
    report
}

fn check_dense(report: &mut CheckReport, log: &Log) {
    let read = log.read;
    let mut expected = read.log_start_offset;
    for (offset, _) in &read.records {
        if *offset != expected {
            report.add(
                Check::Nondense,
                read.partition,
                format!(
                    "{}: offset {offset} follows {} (expected {expected}; log start {}, high \
                     watermark {})",
                    log.who(),
                    expected as i64 - 1,
                    read.log_start_offset,
                    read.high_watermark
                ),
            );
            return;
        }
        expected += 1;
    }
    if expected != read.high_watermark {
        report.add(
            Check::Nondense,
            read.partition,
            format!(
                "{}: records end at offset {} but the high watermark is {}",
                log.who(),
                expected as i64 - 1,
                read.high_watermark
            ),
        );
    }
}

fn check_acked(report: &mut CheckReport, log: &Log, attempts: &[Attempt]) {
    let p = log.read.partition;
    for a in attempts.iter().filter(|a| a.partition == p) {
        let Outcome::Acked { offset, acked_at } = a.outcome else {
            continue;
        };
        let holds = log.at.get(&offset).copied();
        if holds == Some(a.value.as_str()) {
            continue;
        }
        let elsewhere = match log.positions.get(a.value.as_str()) {
            Some(offsets) => format!("it is at {offsets:?} instead"),
            None => "it is nowhere in the log".to_string(),
        };
        let base = format!(
            "{:?} was acked at offset {offset} by broker {} at {:.3}s (sent {:.3}s, attempt \
             {}); {} {}",
            a.value,
            a.broker,
            secs(acked_at),
            secs(a.sent_at),
            a.attempt,
            log.who(),
            log.describe_offset(offset)
        );
        report.add(Check::Lost, p, format!("{base}; {elsewhere}"));
        if holds.is_some() {
            report.add(Check::Diverged, p, base);
        }
    }
}

fn check_values<'a>(
    report: &mut CheckReport,
    log: &Log<'a>,
    index: &HashMap<&str, Vec<&Attempt>>,
    explained: &mut HashSet<(u32, &'a str)>,
    unexplained: &mut HashSet<(u32, &'a str)>,
) {
    let p = log.read.partition;
    let mut values: Vec<(&&str, &Vec<u64>)> = log.positions.iter().collect();
    values.sort_by_key(|(_, offsets)| offsets[0]);
    for (value, offsets) in values {
        if let Some(why) = phantom_reason(index, value, p) {
            report.add(
                Check::Phantom,
                p,
                format!("{} holds {value:?} at {offsets:?}: {why}", log.who()),
            );
            continue;
        }
        if offsets.len() < 2 {
            continue;
        }
        let attempts: Vec<&Attempt> = index[*value]
            .iter()
            .copied()
            .filter(|a| a.partition == p)
            .collect();
        let landed_max = may_have_landed(&attempts);
        if offsets.len() > landed_max && landed_max < attempts.len() {
            // More copies than attempts that were not refused: a refusal was wrong.
            report.add(
                Check::Phantom,
                p,
                format!(
                    "{} holds {value:?} at offsets {offsets:?}, more copies than its {landed_max} \
                     attempts that were not refused: a refused attempt was appended; its \
                     attempts: {}",
                    log.who(),
                    outcomes(&attempts)
                ),
            );
        }
        if retry_explains(&attempts, offsets.len()) {
            explained.insert((p, value));
        } else {
            if unexplained.insert((p, value)) {
                report.add(
                    Check::Duplicate,
                    p,
                    format!(
                        "{} holds {value:?} at offsets {offsets:?}; its attempts: {}",
                        log.who(),
                        outcomes(&attempts)
                    ),
                );
            }
        }
    }
}

fn check_order(
    report: &mut CheckReport,
    log: &Log,
    attempts: &[Attempt],
    index: &HashMap<&str, Vec<&Attempt>>,
) {
    let p = log.read.partition;
    // Acked values the log holds where they were acked, by acknowledgment time, with the
    // highest offset acked so far.
    let mut acked: Vec<(u64, u64, &str)> = attempts
        .iter()
        .filter(|a| a.partition == p)
        .filter_map(|a| match a.outcome {
            Outcome::Acked { offset, acked_at }
                if log.at.get(&offset) == Some(&a.value.as_str()) =>
            {
                Some((acked_at, offset, a.value.as_str()))
            }
            _ => None,
        })
        .collect();
    acked.sort_unstable();
    let mut prefix_max: Vec<(u64, &str, u64)> = Vec::with_capacity(acked.len());
    for &(acked_at, offset, value) in &acked {
        let best = match prefix_max.last() {
            Some(&(o, v, t)) if o >= offset => (o, v, t),
            _ => (offset, value, acked_at),
        };
        prefix_max.push(best);
    }
    for (value, offsets) in &log.positions {
        let Some(tried) = index.get(value) else {
            continue;
        };
        let Some(first_sent) = tried
            .iter()
            .filter(|a| a.partition == p)
            .map(|a| a.sent_at)
            .min()
        else {
            continue;
        };
        let before = acked.partition_point(|&(t, _, _)| t < first_sent);
        if before == 0 {
            continue;
        }
        let (max_offset, max_value, acked_at) = prefix_max[before - 1];
        let b_offset = offsets[0];
        if b_offset < max_offset {
            report.add(
                Check::Order,
                p,
                format!(
                    "{max_value:?} was acked at offset {max_offset} at {:.3}s, before \
                     {value:?} was first sent at {:.3}s, yet {} holds {value:?} at the lower \
                     offset {b_offset}",
                    secs(acked_at),
                    secs(first_sent),
                    log.who()
                ),
            );
        }
    }
}

fn compare_reads(report: &mut CheckReport, p: u32, a: &FullRead, b: &FullRead) {
    let la = Log::new(a);
    let lb = Log::new(b);
    let from = a.log_start_offset.max(b.log_start_offset);
    let to = a.high_watermark.min(b.high_watermark);
    for offset in from..to {
        if let (Some(va), Some(vb)) = (la.at.get(&offset), lb.at.get(&offset))
            && va != vb
        {
            report.add(
                Check::Diverged,
                p,
                format!(
                    "offset {offset}: {} holds {va:?}, {} holds {vb:?} (both below their \
                     high watermarks {} and {})",
                    la.who(),
                    lb.who(),
                    a.high_watermark,
                    b.high_watermark
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::history::ConsumedRead;

    fn attempt(value: &str, p: u32, n: u32, sent: u64, outcome: Outcome) -> Attempt {
        Attempt {
            value: value.into(),
            partition: p,
            producer: 0,
            attempt: n,
            broker: 1,
            sent_at: sent,
            done_at: sent + 5,
            outcome,
        }
    }

    fn acked(offset: u64, at: u64) -> Outcome {
        Outcome::Acked {
            offset,
            acked_at: at,
        }
    }

    fn unknown() -> Outcome {
        Outcome::Unknown {
            what: "client deadline".into(),
        }
    }

    fn refused() -> Outcome {
        Outcome::Refused {
            reason: "NOT_LEADER_FOR_PARTITION".into(),
        }
    }

    fn full(label: &str, broker: u64, values: &[&str]) -> FullRead {
        FullRead {
            label: label.into(),
            partition: 0,
            broker,
            log_start_offset: 0,
            high_watermark: values.len() as u64,
            records: values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64, v.to_string()))
                .collect(),
        }
    }

    fn read(offset: u64, value: &str, hw: u64) -> ConsumedRead {
        ConsumedRead {
            partition: 0,
            offset,
            value: value.into(),
            high_watermark: hw,
            broker: 1,
            read_at: 100,
        }
    }

    /// a, b, c acked in order at 0..3; d unknown then acked (and landed twice); e refused then
    /// never seen; a consumer read the first three; two identical full reads.
    fn clean() -> History {
        History {
            attempts: vec![
                attempt("a", 0, 1, 10, acked(0, 20)),
                attempt("b", 0, 1, 30, acked(1, 40)),
                attempt("c", 0, 1, 50, acked(2, 60)),
                attempt("d", 0, 1, 70, unknown()),
                attempt("d", 0, 2, 90, acked(4, 100)),
                attempt("e", 0, 1, 110, refused()),
            ],
            reads: vec![read(0, "a", 3), read(1, "b", 3), read(2, "c", 3)],
            full_reads: vec![
                full("read 1", 1, &["a", "b", "c", "d", "d"]),
                full("read 2", 2, &["a", "b", "c", "d", "d"]),
            ],
        }
    }

    fn only(report: &CheckReport, check: Check) {
        assert!(
            report.count(check) > 0,
            "{check:?} did not fire: {report:#?}"
        );
        for c in Check::ALL {
            if c != check {
                assert_eq!(report.count(c), 0, "{c:?} fired too: {report:#?}");
            }
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let r = check(&clean());
        assert!(r.passed(), "{r:#?}");
        assert_eq!(r.duplicates_explained, 1);
        assert_eq!(r.duplicates_unexplained, 0);
        assert_eq!(r.records_checked, 10);
    }

    #[test]
    fn lost_an_acked_value_missing() {
        let mut h = clean();
        // The last acked record (d at 4) vanished from both reads; d still sits at 3, so this
        // is LOST alone.
        for f in &mut h.full_reads {
            f.records.pop();
            f.high_watermark -= 1;
        }
        only(&check(&h), Check::Lost);
    }

    #[test]
    fn diverged_an_acked_offset_holds_another_value() {
        let mut h = clean();
        // a and b swapped in both reads: both acked offsets now hold something else.
        for f in &mut h.full_reads {
            f.records.swap(0, 1);
            f.records[0].0 = 0;
            f.records[1].0 = 1;
        }
        h.reads.clear();
        let r = check(&h);
        assert!(r.count(Check::Diverged) >= 2, "{r:#?}");
        assert!(r.count(Check::Lost) >= 2, "{r:#?}");
        assert!(
            r.examples.iter().any(|v| v.detail.contains("holds \"b\"")),
            "{r:#?}"
        );
    }

    #[test]
    fn diverged_two_replicas_disagree() {
        let mut h = clean();
        // Read 2 holds "c" where read 1 holds the second "d": an offset both hold below their
        // high watermarks differs (read 2 also lost the acked "d", which LOST reports).
        h.full_reads[1].records[4].1 = "c".into();
        let r = check(&h);
        assert!(r.count(Check::Diverged) >= 1, "{r:#?}");
        assert!(
            r.examples
                .iter()
                .any(|v| v.check == Check::Diverged && v.detail.starts_with("offset 4")),
            "{r:#?}"
        );
    }

    #[test]
    fn phantom_never_attempted() {
        let mut h = clean();
        for f in &mut h.full_reads {
            f.records.push((5, "zzz".into()));
            f.high_watermark += 1;
        }
        only(&check(&h), Check::Phantom);
    }

    #[test]
    fn phantom_a_refused_value_appears() {
        let mut h = clean();
        for f in &mut h.full_reads {
            f.records.push((5, "e".into()));
            f.high_watermark += 1;
        }
        let r = check(&h);
        only(&r, Check::Phantom);
        assert!(r.examples[0].detail.contains("refused"), "{r:#?}");
    }

    #[test]
    fn phantom_read_by_a_consumer_only() {
        let mut h = clean();
        h.reads.push(ConsumedRead {
            partition: 1,
            ..read(0, "a", 5)
        });
        only(&check(&h), Check::Phantom);
    }

    #[test]
    fn nondense_a_gap() {
        let mut h = clean();
        for f in &mut h.full_reads {
            f.records[3].0 = 7;
            f.records[4].0 = 8;
            f.high_watermark = 9;
        }
        // d now sits at 7 and 8, not at its acked 4: LOST too; the gap is what this test
        // plants, so check NONDENSE fires and names it.
        let r = check(&h);
        assert!(r.count(Check::Nondense) >= 1, "{r:#?}");
        assert!(
            r.examples
                .iter()
                .any(|v| v.check == Check::Nondense && v.detail.contains("offset 7 follows 2")),
            "{r:#?}"
        );
    }

    #[test]
    fn nondense_records_short_of_the_watermark() {
        let mut h = clean();
        h.full_reads[0].high_watermark = 6;
        only(&check(&h), Check::Nondense);
    }

    #[test]
    fn order_a_later_write_at_a_lower_offset() {
        // x was sent after a was acked but sits below it; x itself was never acked (unknown),
        // so only ORDER speaks.
        let h = History {
            attempts: vec![
                attempt("a", 0, 1, 10, acked(1, 20)),
                attempt("x", 0, 1, 30, unknown()),
            ],
            reads: vec![],
            full_reads: vec![full("read 1", 1, &["x", "a"])],
        };
        only(&check(&h), Check::Order);
    }

    #[test]
    fn uncommitted_read_at_the_watermark() {
        let mut h = clean();
        h.reads.push(read(3, "d", 3));
        only(&check(&h), Check::UncommittedRead);
    }

    #[test]
    fn uncommitted_read_that_vanished() {
        let mut h = clean();
        // A consumer read d at 5, which no full read holds.
        h.reads.push(read(5, "d", 6));
        only(&check(&h), Check::UncommittedRead);
    }

    #[test]
    fn diverged_a_read_offset_changed() {
        let mut h = clean();
        h.reads.push(read(4, "c", 5));
        let r = check(&h);
        assert!(r.count(Check::Diverged) >= 1, "{r:#?}");
        assert!(r.count(Check::UncommittedRead) >= 1, "{r:#?}");
        assert_eq!(r.count(Check::Lost), 0, "{r:#?}");
    }

    #[test]
    fn duplicate_without_a_retry() {
        let mut h = clean();
        // c was acked on its first and only attempt, yet sits twice.
        for f in &mut h.full_reads {
            f.records.push((5, "c".into()));
            f.high_watermark += 1;
        }
        let r = check(&h);
        only(&r, Check::Duplicate);
        assert_eq!(r.duplicates_unexplained, 1);
        assert_eq!(r.duplicates_explained, 1);
    }

    #[test]
    fn phantom_a_refused_retry_landed() {
        // What seed 11 found: the first attempt timed out after the append, the retry was
        // refused NOT_LEADER_FOR_PARTITION, and both copies are in the log.
        let mut h = clean();
        h.attempts.push(attempt("f", 0, 1, 120, unknown()));
        h.attempts.push(attempt("f", 0, 2, 130, refused()));
        for f in &mut h.full_reads {
            f.records.push((5, "f".into()));
            f.records.push((6, "f".into()));
            f.high_watermark += 2;
        }
        let r = check(&h);
        assert_eq!(r.count(Check::Phantom), 2, "{r:#?}");
        assert_eq!(r.count(Check::Duplicate), 1, "{r:#?}");
        assert!(
            r.examples.iter().any(|v| v.check == Check::Phantom
                && v.detail.contains("a refused attempt was appended")),
            "{r:#?}"
        );
        for c in [
            Check::Lost,
            Check::Diverged,
            Check::Nondense,
            Check::Order,
            Check::UncommittedRead,
        ] {
            assert_eq!(r.count(c), 0, "{c:?}: {r:#?}");
        }
    }

    #[test]
    fn duplicate_more_copies_than_attempts() {
        let mut h = clean();
        // d had two attempts that may have landed, but sits three times.
        for f in &mut h.full_reads {
            f.records.push((5, "d".into()));
            f.high_watermark += 1;
        }
        only(&check(&h), Check::Duplicate);
    }

    #[test]
    fn examples_are_bounded_and_counts_are_not() {
        let mut h = clean();
        h.reads = (0..1000).map(|i| read(100 + i, "a", 1)).collect();
        let r = check(&h);
        assert!(r.count(Check::UncommittedRead) >= 1000);
        assert!(
            r.examples
                .iter()
                .filter(|v| v.check == Check::UncommittedRead)
                .count()
                <= EXAMPLES_KEPT
        );
    }
}
