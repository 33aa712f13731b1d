//! Availability per fault kind, from the ledger's acknowledgments and the fault records: for
//! each fault, the time from its injection to the first ack of a request sent after it (any
//! partition), the same from its heal, and the longest window without any ack while it was
//! the latest fault (from its injection to the next fault's, or to the end of the faults), on
//! all partitions together and on the worst single partition.

use std::collections::BTreeMap;

use serde::Serialize;

use super::history::{Attempt, Micros, Outcome};
use super::nemesis::FaultRecord;
use super::schedule::FaultKind;

/// One acknowledged write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub partition: u32,
    pub sent_at: Micros,
    pub acked_at: Micros,
}

/// The acks of a ledger.
pub fn acks(attempts: &[Attempt]) -> Vec<Ack> {
    attempts
        .iter()
        .filter_map(|a| match a.outcome {
            Outcome::Acked { acked_at, .. } => Some(Ack {
                partition: a.partition,
                sent_at: a.sent_at,
                acked_at,
            }),
            _ => None,
        })
        .collect()
}

/// One row of the table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KindAvailability {
    pub kind: String,
    /// Faults of this kind that were injected.
    pub faults: usize,
    /// The longest window without an ack on any partition, over this kind's windows.
    pub longest_no_ack_ms: u64,
    /// The same on the worst single partition.
    pub longest_no_ack_one_partition_ms: u64,
    pub fault_to_ack_mean_ms: Option<u64>,
    pub fault_to_ack_max_ms: Option<u64>,
    pub heal_to_ack_mean_ms: Option<u64>,
    pub heal_to_ack_max_ms: Option<u64>,
    /// Faults after which no request sent was ever acked.
    pub never_acked: usize,
}

/// Ack times sorted, and "the first ack of a request sent at or after t".
struct Index {
    acked: Vec<Micros>,
    per_partition: BTreeMap<u32, Vec<Micros>>,
    /// By `sent_at`, with the earliest `acked_at` from there on.
    by_sent: Vec<(Micros, Micros)>,
}

impl Index {
    fn new(acks: &[Ack]) -> Index {
        let mut acked: Vec<Micros> = acks.iter().map(|a| a.acked_at).collect();
        acked.sort_unstable();
        let mut per_partition: BTreeMap<u32, Vec<Micros>> = BTreeMap::new();
        for a in acks {
            per_partition
                .entry(a.partition)
                .or_default()
                .push(a.acked_at);
        }
        for v in per_partition.values_mut() {
            v.sort_unstable();
        }
        let mut by_sent: Vec<(Micros, Micros)> =
            acks.iter().map(|a| (a.sent_at, a.acked_at)).collect();
        by_sent.sort_unstable();
        let mut min = Micros::MAX;
        for e in by_sent.iter_mut().rev() {
            min = min.min(e.1);
            e.1 = min;
        }
        Index {
            acked,
            per_partition,
            by_sent,
        }
    }

    /// When the first request sent at or after `t` was acked.
    fn first_ack_sent_after(&self, t: Micros) -> Option<Micros> {
        let i = self.by_sent.partition_point(|&(s, _)| s < t);
        self.by_sent.get(i).map(|&(_, a)| a)
    }
}

/// The longest span of `[from, to)` holding no ack of `acks` (sorted).
fn longest_gap(acks: &[Micros], from: Micros, to: Micros) -> Micros {
    if to <= from {
        return 0;
    }
    let lo = acks.partition_point(|&a| a <= from);
    let hi = acks.partition_point(|&a| a < to);
    let mut prev = from;
    let mut longest = 0;
    for &a in &acks[lo..hi] {
        longest = longest.max(a - prev);
        prev = a;
    }
    longest.max(to - prev)
}

fn ms(us: Micros) -> u64 {
    us / 1000
}

/// The table: one row per kind that was injected, then `all`. `faults_end` is when the last
/// fault's window closes; acks go on after it until the producers stop.
pub fn table(faults: &[FaultRecord], acks: &[Ack], faults_end: Micros) -> Vec<KindAvailability> {
    let index = Index::new(acks);
    let injected: Vec<&FaultRecord> = faults.iter().filter(|f| f.injected_at.is_some()).collect();
    #[derive(Default)]
    struct Acc {
        n: usize,
        longest: Micros,
        longest_one: Micros,
        to_ack: Vec<Micros>,
        heal_to_ack: Vec<Micros>,
        never: usize,
    }
    let mut by_kind: BTreeMap<FaultKind, Acc> = BTreeMap::new();
    let mut all = Acc::default();
    for (i, f) in injected.iter().enumerate() {
        let start = f.injected_at.expect("injected");
        let end = injected
            .get(i + 1)
            .and_then(|n| n.injected_at)
            .unwrap_or(faults_end)
            .max(start);
        let gap = longest_gap(&index.acked, start, end);
        let gap_one = index
            .per_partition
            .values()
            .map(|v| longest_gap(v, start, end))
            .max()
            .unwrap_or(end - start);
        let to_ack = index.first_ack_sent_after(start).map(|a| a - start);
        let healed = f.healed_at.unwrap_or(start);
        let heal_to_ack = index
            .first_ack_sent_after(healed)
            .map(|a| a.saturating_sub(healed));
        for acc in [by_kind.entry(f.kind).or_default(), &mut all] {
            acc.n += 1;
            acc.longest = acc.longest.max(gap);
            acc.longest_one = acc.longest_one.max(gap_one);
            match to_ack {
                Some(d) => acc.to_ack.push(d),
                None => acc.never += 1,
            }
            acc.heal_to_ack.extend(heal_to_ack);
        }
    }
    let row = |kind: String, a: &Acc| {
        let mean =
            |v: &[Micros]| (!v.is_empty()).then(|| ms(v.iter().sum::<u64>() / v.len() as u64));
        let max = |v: &[Micros]| v.iter().max().map(|&m| ms(m));
        KindAvailability {
            kind,
            faults: a.n,
            longest_no_ack_ms: ms(a.longest),
            longest_no_ack_one_partition_ms: ms(a.longest_one),
            fault_to_ack_mean_ms: mean(&a.to_ack),
            fault_to_ack_max_ms: max(&a.to_ack),
            heal_to_ack_mean_ms: mean(&a.heal_to_ack),
            heal_to_ack_max_ms: max(&a.heal_to_ack),
            never_acked: a.never,
        }
    };
    let mut rows: Vec<KindAvailability> = by_kind
        .iter()
        .map(|(k, a)| row(k.name().to_string(), a))
        .collect();
    rows.push(row("all".into(), &all));
    rows
}

/// The table as text.
pub fn render(rows: &[KindAvailability]) -> String {
    let secs = |ms: u64| format!("{:.2}", ms as f64 / 1000.0);
    let opt = |v: Option<u64>| v.map_or("-".to_string(), secs);
    let mut out = format!(
        "{:<35} {:>3} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>5}\n",
        "fault kind (seconds)",
        "n",
        "no-ack max",
        "1-part max",
        "to-ack avg",
        "to-ack max",
        "heal->ack",
        "heal max",
        "never"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<35} {:>3} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>5}\n",
            r.kind,
            r.faults,
            secs(r.longest_no_ack_ms),
            secs(r.longest_no_ack_one_partition_ms),
            opt(r.fault_to_ack_mean_ms),
            opt(r.fault_to_ack_max_ms),
            opt(r.heal_to_ack_mean_ms),
            opt(r.heal_to_ack_max_ms),
            r.never_acked
        ));
    }
    out.push_str(
        "no-ack max: longest time without an ack on any partition while the fault was the \
         latest; 1-part max: the same on the worst partition; to-ack: from the fault to the \
         first ack of a request sent after it; heal->ack: the same from the heal\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(index: usize, kind: FaultKind, injected: u64, healed: u64) -> FaultRecord {
        FaultRecord {
            index,
            kind,
            planned: String::new(),
            nodes: vec![],
            steps: vec![],
            injected_at: Some(injected),
            healed_at: Some(healed),
            skipped: None,
            error: None,
        }
    }

    /// An ack sent 10 ms before it came.
    fn ack(partition: u32, at: Micros) -> Ack {
        Ack {
            partition,
            sent_at: at - 10_000,
            acked_at: at,
        }
    }

    #[test]
    fn windows_and_next_acks() {
        // Partition 0 acks every second except between 10 s and 14.5 s; partition 1 stops
        // from 20 s to 24 s. A kill at 10 s healed at 12 s, a pause at 20 s healed at 21 s,
        // faults end at 30 s.
        let s = 1_000_000;
        let mut acks: Vec<Ack> = (1..=30)
            .filter(|i| !(11..=14).contains(i))
            .map(|i| ack(0, i * s))
            .collect();
        acks.push(ack(0, 14 * s + s / 2));
        acks.extend(
            (1..=30)
                .filter(|i| !(21..=23).contains(i))
                .map(|i| ack(1, i * s + 1)),
        );
        // An answer that arrived just after the kill for a request sent before it does not
        // count as the first ack after the fault.
        acks.push(Ack {
            partition: 1,
            sent_at: 9 * s,
            acked_at: 10 * s + 5,
        });
        let faults = vec![
            fault(1, FaultKind::KillPartitionLeader, 10 * s, 12 * s),
            fault(2, FaultKind::PauseShort, 20 * s, 21 * s),
            FaultRecord {
                injected_at: None,
                skipped: Some("no target".into()),
                ..fault(3, FaultKind::PauseLong, 0, 0)
            },
        ];
        let rows = table(&faults, &acks, 30 * s);
        assert_eq!(rows.len(), 3, "{rows:?}");
        let kill = &rows[0];
        assert_eq!(kill.kind, "kill-partition-leader");
        assert_eq!(kill.longest_no_ack_ms, 1_000);
        assert_eq!(kill.longest_no_ack_one_partition_ms, 4_500);
        assert_eq!(kill.fault_to_ack_max_ms, Some(1_000));
        assert_eq!(kill.heal_to_ack_max_ms, Some(1_000));
        let pause = &rows[1];
        assert_eq!(pause.longest_no_ack_ms, 1_000);
        assert_eq!(pause.longest_no_ack_one_partition_ms, 4_000);
        let all = &rows[2];
        assert_eq!(all.faults, 2);
        assert_eq!(all.longest_no_ack_one_partition_ms, 4_500);
        assert!(render(&rows).contains("kill-partition-leader"));
    }

    #[test]
    fn no_ack_after_a_fault() {
        let acks = [ack(0, 20_000), ack(0, 30_000)];
        let rows = table(
            &[fault(1, FaultKind::KillAllBrokers, 40_000, 50_000)],
            &acks,
            100_000,
        );
        assert_eq!(rows[0].never_acked, 1);
        assert_eq!(rows[0].longest_no_ack_ms, 60);
        assert_eq!(rows[0].fault_to_ack_mean_ms, None);
    }
}
