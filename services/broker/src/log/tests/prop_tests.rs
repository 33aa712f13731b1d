//! Property test: random interleavings of leader and replica appends, truncations above the high
//! watermark, high watermark moves, retention (whole segments) and restarts keep the log equal to a simple model:
//! offsets dense from the log start, committed records never change or reappear under another
//! offset, and consumers never see anything at or above the high watermark.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::super::batch::{Record, RecordBatch};
use super::super::config::{LogConfig, LogStoreConfig, UNLIMITED};
use super::super::{LogError, LogStore, PartitionLog, ReadBound};

#[derive(Debug, Clone)]
enum Op {
    /// Append `n` records as leader, in a new epoch if `bump`.
    Leader { n: usize, len: usize, bump: bool },
    /// Append one batch of `n` records as a replica, in a new epoch if `bump`.
    Replica { n: usize, bump: bool },
    /// Truncate to a point between the high watermark and the log end (per mille).
    Truncate { at: u16 },
    /// Move the high watermark to a point between it and the log end (per mille).
    SetHw { at: u16 },
    /// Try an illegal high watermark or truncation.
    Illegal,
    /// Retention by size down to `keep` bytes.
    Retain { keep: u16 },
    /// Close and reopen the store.
    Reopen,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..12, 0usize..400, proptest::bool::weighted(0.2))
            .prop_map(|(n, len, bump)| Op::Leader { n, len, bump }),
        2 => (1usize..6, proptest::bool::weighted(0.2)).prop_map(|(n, bump)| Op::Replica { n, bump }),
        2 => (0u16..=1000).prop_map(|at| Op::Truncate { at }),
        3 => (0u16..=1000).prop_map(|at| Op::SetHw { at }),
        1 => Just(Op::Illegal),
        1 => (0u16..3000).prop_map(|keep| Op::Retain { keep }),
        1 => Just(Op::Reopen),
    ]
}

struct Model {
    log_start: u64,
    /// The values at log_start.. in order.
    values: Vec<String>,
    high_watermark: u64,
    epoch: u64,
    /// Every value that was ever below the high watermark, by offset: never changes.
    committed: BTreeMap<u64, String>,
    next_value: u64,
}

impl Model {
    fn log_end(&self) -> u64 {
        self.log_start + self.values.len() as u64
    }

    fn fresh(&mut self, len: usize) -> String {
        self.next_value += 1;
        format!("v{}-{}", self.next_value, "x".repeat(len))
    }

    fn commit(&mut self, hw: u64) {
        for o in self.high_watermark.max(self.log_start)..hw {
            let v = self.values[(o - self.log_start) as usize].clone();
            assert!(self.committed.insert(o, v).is_none());
        }
        self.high_watermark = hw;
    }
}

fn open_store(dir: &Path) -> LogStore {
    // Small batches so that appends split and truncations fall inside batches; small
    // segments so that they roll and retention and truncation cross them.
    let cfg = LogStoreConfig {
        log: LogConfig {
            max_batch_bytes: 1200,
            max_record_bytes: 1000,
            segment_bytes_max: 3000,
            ..LogConfig::default()
        },
        ..LogStoreConfig::default()
    };
    LogStore::open_with(dir, cfg).unwrap()
}

fn read_values(log: &PartitionLog, from: u64, bound: ReadBound) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let batches = log.read(at, 2000, bound).unwrap();
        if batches.is_empty() {
            return out;
        }
        for b in &batches {
            for (o, r) in b.iter().filter(|(o, _)| *o >= at) {
                out.push((o, String::from_utf8(r.value.to_vec()).unwrap()));
            }
            at = b.next_offset();
        }
    }
}

fn check(log: &PartitionLog, m: &Model) {
    let o = log.offsets();
    assert_eq!(
        (o.log_start_offset, o.log_end_offset, o.high_watermark),
        (m.log_start, m.log_end(), m.high_watermark)
    );
    // Replicas: everything, dense.
    let all = read_values(log, m.log_start, ReadBound::LogEnd);
    let expected: Vec<(u64, String)> = (m.log_start..).zip(m.values.iter().cloned()).collect();
    assert_eq!(all, expected);
    // Consumers: nothing at or above the high watermark, and only committed values.
    let seen = read_values(log, m.log_start, ReadBound::HighWatermark);
    for (offset, value) in &seen {
        assert!(
            *offset < m.high_watermark,
            "offset {offset} served above the HW"
        );
        assert_eq!(m.committed.get(offset), Some(value));
    }
    for (offset, value) in m.committed.range(m.log_start..) {
        assert_eq!(&all[(offset - m.log_start) as usize].1, value);
    }
    let epochs = log.leader_epochs();
    assert!(epochs.iter().all(|e| e.start_offset <= m.log_end()));
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path());
    let mut log: Arc<PartitionLog> = store.partition("p", 1, 0).unwrap();
    let mut m = Model {
        log_start: 0,
        values: Vec::new(),
        high_watermark: 0,
        epoch: 1,
        committed: BTreeMap::new(),
        next_value: 0,
    };
    for op in ops {
        match op {
            Op::Leader { n, len, bump } => {
                m.epoch += u64::from(bump);
                let values: Vec<String> = (0..n).map(|_| m.fresh(len)).collect();
                let records = values
                    .iter()
                    .map(|v| Record::new(Bytes::from(v.clone())))
                    .collect();
                let info = log.append_as_leader(records, m.epoch, 1000).unwrap();
                assert_eq!(info.base_offset, m.log_end());
                assert_eq!(info.last_offset, m.log_end() + n as u64 - 1);
                m.values.extend(values);
            }
            Op::Replica { n, bump } => {
                m.epoch += u64::from(bump);
                let values: Vec<String> = (0..n).map(|_| m.fresh(3)).collect();
                let batch = RecordBatch {
                    base_offset: m.log_end(),
                    leader_epoch: m.epoch,
                    records: values
                        .iter()
                        .map(|v| Record {
                            timestamp_ms: 1000,
                            ..Record::new(Bytes::from(v.clone()))
                        })
                        .collect(),
                };
                if n % 2 == 0 {
                    log.append_replica(&batch).unwrap();
                } else {
                    log.append_replica_encoded(&batch.encode().unwrap())
                        .unwrap();
                }
                m.values.extend(values);
            }
            Op::Truncate { at } => {
                let span = m.log_end() - m.high_watermark;
                let to = m.high_watermark + span * u64::from(at) / 1000;
                log.truncate_to(to).unwrap();
                m.values.truncate((to - m.log_start) as usize);
            }
            Op::SetHw { at } => {
                let span = m.log_end() - m.high_watermark;
                let hw = m.high_watermark + span * u64::from(at) / 1000;
                assert_eq!(log.set_high_watermark(hw).unwrap(), hw);
                m.commit(hw);
            }
            Op::Illegal => {
                assert!(matches!(
                    log.set_high_watermark(m.log_end() + 1),
                    Err(LogError::HighWatermarkAboveLogEnd { .. })
                ));
                if m.high_watermark > m.log_start {
                    assert_eq!(
                        log.set_high_watermark(m.high_watermark - 1).unwrap(),
                        m.high_watermark
                    );
                    assert!(matches!(
                        log.truncate_to(m.high_watermark - 1),
                        Err(LogError::TruncateBelowHighWatermark { .. })
                    ));
                }
                assert!(matches!(
                    log.read(m.log_end() + 1, 100, ReadBound::LogEnd),
                    Err(LogError::OffsetOutOfRange { .. })
                ));
            }
            Op::Retain { keep } => {
                let out = log.apply_retention(0, UNLIMITED, i64::from(keep)).unwrap();
                assert!(out.log_start_offset <= m.high_watermark);
                let removed = (out.log_start_offset - m.log_start) as usize;
                m.values.drain(..removed);
                m.log_start = out.log_start_offset;
                // Kafka's rule: the first segment left is needed, for the size or because it
                // reaches the high watermark.
                let segments = log.segments();
                let (_, first_bytes) = segments[0];
                let first_next = segments.get(1).map_or(m.log_end(), |s| s.0);
                assert!(
                    log.size_bytes() - first_bytes < u64::from(keep)
                        || first_next > m.high_watermark
                        || first_bytes == 0,
                    "{segments:?} keep {keep} hw {}",
                    m.high_watermark
                );
            }
            Op::Reopen => {
                log.sync().unwrap();
                drop(log);
                drop(store);
                store = open_store(dir.path());
                log = store.partition("p", 1, 0).unwrap();
            }
        }
        check(&log, &m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_the_log_dense_and_committed_data_hidden_above_hw(
        ops in proptest::collection::vec(arb_op(), 1..60)
    ) {
        run(ops);
    }
}
