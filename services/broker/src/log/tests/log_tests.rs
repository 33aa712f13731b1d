//! PartitionLog and LogStore: append, read, high watermark, truncation, epochs, retention,
//! ListOffsets, reopen, corruption, deletion.

use std::sync::Arc;

use bytes::Bytes;

use super::super::batch::{BatchError, Record, RecordBatch};
use super::super::config::{LogConfig, LogStoreConfig, UNLIMITED};
use super::super::meta::PartitionMeta;
use super::super::{
    EpochEntry, ListedOffset, LogError, LogOffsets, LogStore, OffsetSpec, PartitionId,
    PartitionLog, ReadBound,
};
use super::{open, rec, recs, values};

const T0: i64 = 1_700_000_000_000;
const ALL: usize = usize::MAX;

fn epochs(log: &PartitionLog) -> Vec<(u64, u64)> {
    log.leader_epochs()
        .iter()
        .map(|e: &EpochEntry| (e.epoch, e.start_offset))
        .collect()
}

fn read_all(log: &PartitionLog, from: u64, bound: ReadBound) -> Vec<(u64, String)> {
    values(&log.read(from, ALL, bound).unwrap(), from)
}

#[test]
fn handles_are_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<LogStore>();
    send_sync::<PartitionLog>();
    send_sync::<LogError>();
}

#[test]
fn appends_get_dense_offsets_and_reads_return_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = store.partition("orders", 1, 0).unwrap();
    assert_eq!(
        log.offsets(),
        LogOffsets {
            log_start_offset: 0,
            log_end_offset: 0,
            high_watermark: 0,
            size_bytes: 0
        }
    );
    let a = log.append_as_leader(recs("a", 3, T0), 1, T0).unwrap();
    assert_eq!((a.base_offset, a.last_offset, a.batches), (0, 2, 1));
    let b = log.append_as_leader(recs("b", 2, T0), 1, T0).unwrap();
    assert_eq!((b.base_offset, b.last_offset), (3, 4));
    log.sync().unwrap();
    assert_eq!(log.log_end_offset(), 5);
    assert!(log.size_bytes() > 0);
    // Same Arc on the second lookup.
    assert!(Arc::ptr_eq(&log, &store.partition("orders", 1, 0).unwrap()));

    // Replicas read everything; consumers nothing until the high watermark moves.
    let all = read_all(&log, 0, ReadBound::LogEnd);
    assert_eq!(
        all.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(all[3].1, "b-0");
    assert!(
        log.read(0, ALL, ReadBound::HighWatermark)
            .unwrap()
            .is_empty()
    );

    // From inside a batch: the whole batch comes back, the caller skips.
    let batches = log.read(1, ALL, ReadBound::LogEnd).unwrap();
    assert_eq!(batches[0].base_offset, 0);
    assert_eq!(values(&batches, 1)[0], (1, "a-1".to_owned()));

    // max_bytes: at least one batch, and no more once over.
    assert_eq!(log.read(0, 1, ReadBound::LogEnd).unwrap().len(), 1);
    let first_len = log.read_encoded(0, 1, ReadBound::LogEnd).unwrap()[0]
        .bytes
        .len();
    assert_eq!(
        log.read(0, first_len + 1, ReadBound::LogEnd).unwrap().len(),
        1
    );
    assert_eq!(log.read(0, ALL, ReadBound::LogEnd).unwrap().len(), 2);

    // At the end: empty; past it: out of range with the valid range.
    assert!(log.read(5, ALL, ReadBound::LogEnd).unwrap().is_empty());
    match log.read(6, ALL, ReadBound::LogEnd) {
        Err(LogError::OffsetOutOfRange {
            offset: 6,
            log_start_offset: 0,
            log_end_offset: 5,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn records_without_timestamp_get_the_append_time_and_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig {
        log: LogConfig {
            max_batch_bytes: 1024,
            max_record_bytes: 500,
            ..LogConfig::default()
        },
        ..LogStoreConfig::default()
    };
    let store = LogStore::open_with(dir.path(), cfg).unwrap();
    let log = store.partition("t", 1, 0).unwrap();
    let info = log
        .append_as_leader(vec![Record::new(Bytes::from_static(b"x"))], 1, T0)
        .unwrap();
    assert_eq!(info.base_offset, 0);
    let batch = &log.read(0, ALL, ReadBound::LogEnd).unwrap()[0];
    assert_eq!(batch.records[0].timestamp_ms, T0);

    let big = Record::new(Bytes::from(vec![0; 600]));
    match log.append_as_leader(vec![Record::new(Bytes::new()), big], 1, T0) {
        Err(LogError::InvalidBatch(BatchError::RecordTooLarge { max: 500, .. })) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        log.append_as_leader(vec![], 1, T0),
        Err(LogError::InvalidBatch(BatchError::Empty))
    ));
    // Nothing of the refused appends was written.
    assert_eq!(log.log_end_offset(), 1);

    // A record over the batch target (but within the record limit) is stored alone.
    let info = log
        .append_as_leader(
            vec![
                Record::new(Bytes::from(vec![1; 400])),
                Record::new(Bytes::from(vec![2; 400])),
                Record::new(Bytes::from(vec![3; 400])),
            ],
            1,
            T0,
        )
        .unwrap();
    assert_eq!((info.base_offset, info.batches), (1, 2));
    let cfg = LogStoreConfig {
        log: LogConfig {
            max_batch_bytes: 300,
            max_record_bytes: 500,
            ..LogConfig::default()
        },
        ..LogStoreConfig::default()
    };
    drop(log);
    drop(store);
    let store = LogStore::open_with(dir.path(), cfg).unwrap();
    let log = store.partition("t", 1, 0).unwrap();
    let info = log
        .append_as_leader(
            vec![
                Record::new(Bytes::from(vec![1; 100])),
                Record::new(Bytes::from(vec![2; 450])),
                Record::new(Bytes::from(vec![3; 100])),
            ],
            1,
            T0,
        )
        .unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.batches),
        (4, 6, 3)
    );
    let sizes: Vec<usize> = log
        .read_encoded(4, ALL, ReadBound::LogEnd)
        .unwrap()
        .iter()
        .map(|b| b.bytes.len())
        .collect();
    assert!(
        sizes[1] > 300 && sizes[0] <= 300 && sizes[2] <= 300,
        "{sizes:?}"
    );

    // Many records: split into batches under the target, stored all at once.
    let many: Vec<Record> = (0..20)
        .map(|_| Record::new(Bytes::from(vec![7; 200])))
        .collect();
    let info = log.append_as_leader(many, 1, T0).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (7, 26));
    assert_eq!(info.batches, 20);
    let info = log
        .append_as_leader(
            (0..20)
                .map(|_| Record::new(Bytes::from(vec![7; 50])))
                .collect(),
            1,
            T0,
        )
        .unwrap();
    assert!(info.batches >= 4);
    for b in log.read_encoded(27, ALL, ReadBound::LogEnd).unwrap() {
        assert!(b.bytes.len() <= 300);
    }
    assert!(
        LogStore::open_with(
            tempfile::tempdir().unwrap().path(),
            LogStoreConfig {
                log: LogConfig {
                    max_batch_bytes: 1024,
                    max_record_bytes: 0,
                    ..LogConfig::default()
                },
                ..LogStoreConfig::default()
            }
        )
        .is_err()
    );
}

#[test]
fn high_watermark_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    log.append_as_leader(recs("a", 3, T0), 1, T0).unwrap(); // 0..3
    log.append_as_leader(recs("b", 3, T0), 1, T0).unwrap(); // 3..6

    assert!(matches!(
        log.set_high_watermark(7),
        Err(LogError::HighWatermarkAboveLogEnd {
            high_watermark: 7,
            log_end_offset: 6
        })
    ));
    assert_eq!(log.set_high_watermark(3).unwrap(), 3);
    // Never backwards: a lower value is ignored.
    assert_eq!(log.set_high_watermark(1).unwrap(), 3);
    assert_eq!(log.high_watermark(), 3);

    // Consumers see exactly the batch below the high watermark.
    let seen = read_all(&log, 0, ReadBound::HighWatermark);
    assert_eq!(seen.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(
        log.read(3, ALL, ReadBound::HighWatermark)
            .unwrap()
            .is_empty()
    );

    // A high watermark inside a batch holds that whole batch back.
    log.set_high_watermark(4).unwrap();
    let seen = read_all(&log, 0, ReadBound::HighWatermark);
    assert!(seen.iter().all(|(o, _)| *o < 3), "{seen:?}");
    assert!(
        log.read(3, ALL, ReadBound::HighWatermark)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        log.list_offset(OffsetSpec::Latest).unwrap(),
        Some(ListedOffset {
            offset: 4,
            timestamp_ms: None
        })
    );
    log.set_high_watermark(6).unwrap();
    assert_eq!(read_all(&log, 4, ReadBound::HighWatermark).len(), 2);
}

#[test]
fn truncation_above_the_high_watermark_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    log.append_as_leader(recs("a", 4, T0), 1, T0).unwrap(); // 0..4
    log.append_as_leader(recs("b", 4, T0), 1, T0).unwrap(); // 4..8
    log.append_as_leader(recs("c", 4, T0), 1, T0).unwrap(); // 8..12
    log.set_high_watermark(4).unwrap();
    let size = log.size_bytes();

    // Mid-batch: the batch keeps its records before the offset.
    log.truncate_to(6).unwrap();
    assert_eq!(log.log_end_offset(), 6);
    assert!(log.size_bytes() < size);
    let all = read_all(&log, 0, ReadBound::LogEnd);
    assert_eq!(all.last().unwrap(), &(5, "b-1".to_owned()));
    assert_eq!(all.len(), 6);

    // At or past the end: nothing happens.
    log.truncate_to(6).unwrap();
    log.truncate_to(100).unwrap();
    assert_eq!(log.log_end_offset(), 6);

    // Below the high watermark: refused.
    assert!(matches!(
        log.truncate_to(3),
        Err(LogError::TruncateBelowHighWatermark {
            offset: 3,
            high_watermark: 4
        })
    ));
    log.truncate_to(4).unwrap();
    assert_eq!(log.log_end_offset(), 4);

    // Appends continue densely from the truncation point.
    let info = log.append_as_leader(recs("d", 2, T0), 1, T0).unwrap();
    assert_eq!(info.base_offset, 4);
    let all = read_all(&log, 0, ReadBound::LogEnd);
    assert_eq!(
        all.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    assert_eq!(all[4].1, "d-0");
}

/// A follower reports its log end as durable at its next fetch, so the log must tell whether
/// a sync covered everything it wrote: appends wait for the group commit, and so does a batch
/// a truncation cuts in the middle and rewrites (the cut itself is synced at once).
#[test]
fn the_log_tells_whether_its_writes_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    assert!(log.is_durable(), "nothing written yet");
    log.append_as_leader(recs("a", 4, T0), 1, T0).unwrap(); // 0..4
    log.append_as_leader(recs("b", 4, T0), 1, T0).unwrap(); // 4..8
    assert!(!log.is_durable(), "appended, not synced");
    store.sync().unwrap();
    assert!(log.is_durable());
    log.truncate_to(6).unwrap();
    assert!(
        !log.is_durable(),
        "the batch cut mid-way was rewritten, not synced"
    );
    store.sync().unwrap();
    assert!(log.is_durable());
    log.truncate_to(4).unwrap();
    assert!(
        log.is_durable(),
        "a cut at a batch boundary is synced at once"
    );
}

#[test]
fn leader_epoch_history_follows_appends_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    assert_eq!(log.end_offset_for_epoch(0), None);
    log.append_as_leader(recs("a", 3, T0), 1, T0).unwrap(); // epoch 1: 0..3
    log.append_as_leader(recs("b", 2, T0), 1, T0).unwrap(); // epoch 1: 3..5
    log.append_as_leader(recs("c", 2, T0), 3, T0).unwrap(); // epoch 3: 5..7
    // A follower-style append in a newer epoch.
    let batch = RecordBatch {
        base_offset: 7,
        leader_epoch: 4,
        records: recs("d", 3, T0),
    };
    log.append_replica(&batch).unwrap(); // epoch 4: 7..10
    assert_eq!(epochs(&log), [(1, 0), (3, 5), (4, 7)]);
    assert_eq!(log.latest_leader_epoch(), Some(4));
    assert_eq!(log.leader_epoch_start_offset(3), Some(5));
    assert_eq!(log.leader_epoch_start_offset(2), None);
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 5)));
    assert_eq!(log.end_offset_for_epoch(2), Some((1, 5)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 7)));
    assert_eq!(log.end_offset_for_epoch(4), Some((4, 10)));
    assert_eq!(log.end_offset_for_epoch(5), None);
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 0)));

    // An old leader is fenced.
    assert!(matches!(
        log.append_as_leader(recs("x", 1, T0), 3, T0),
        Err(LogError::StaleLeaderEpoch {
            epoch: 3,
            latest: 4
        })
    ));
    assert!(matches!(
        log.assign_leader_epoch(2),
        Err(LogError::StaleLeaderEpoch { .. })
    ));

    // Truncation drops the epochs that started at or after the new end.
    log.truncate_to(6).unwrap();
    assert_eq!(epochs(&log), [(1, 0), (3, 5)]);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 6)));
    log.truncate_to(5).unwrap();
    assert_eq!(epochs(&log), [(1, 0)]);

    // A new leader records its epoch at the log end before appending.
    log.assign_leader_epoch(6).unwrap();
    assert_eq!(epochs(&log), [(1, 0), (6, 5)]);
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 5)));
    log.append_as_leader(recs("e", 1, T0), 6, T0).unwrap();
    assert_eq!(epochs(&log), [(1, 0), (6, 5)]);

    // Replica appends: must start at the log end.
    let gap = RecordBatch {
        base_offset: 9,
        leader_epoch: 6,
        records: recs("f", 1, T0),
    };
    assert!(matches!(
        log.append_replica(&gap),
        Err(LogError::NotContiguous {
            base_offset: 9,
            log_end_offset: 6
        })
    ));
    assert!(matches!(
        log.append_replica_encoded(b"garbage"),
        Err(LogError::InvalidBatch(_))
    ));
}

#[test]
fn replicas_store_the_leaders_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let leader = store.partition("t", 1, 0).unwrap();
    let follower = store.partition("t", 1, 1).unwrap();
    leader.append_as_leader(recs("a", 5, T0), 2, T0).unwrap();
    leader.append_as_leader(recs("b", 5, T0), 2, T0).unwrap();
    let mut from = 0;
    while from < leader.log_end_offset() {
        for b in leader.read_encoded(from, 100, ReadBound::LogEnd).unwrap() {
            follower.append_replica_encoded(&b.bytes).unwrap();
            from = b.header.next_offset();
        }
    }
    assert_eq!(
        leader.read_encoded(0, ALL, ReadBound::LogEnd).unwrap(),
        follower.read_encoded(0, ALL, ReadBound::LogEnd).unwrap()
    );
    assert_eq!(epochs(&follower), [(2, 0)]);
    assert_eq!(follower.end_offset_for_epoch(2), Some((2, 10)));
}

/// Issue 11's time index: ListOffsets by timestamp gives the brute-force answer over
/// timestamps that go up and down, across rolls, a reopen (after which the active segment takes
/// no new entries) and a truncation; and the index actually has entries to skip with.
#[test]
fn list_offsets_by_timestamp_agrees_with_a_full_scan() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig {
        log: LogConfig {
            segment_bytes_max: 16 * 1024,
            index_interval_bytes: 256,
            ..LogConfig::default()
        },
        ..LogStoreConfig::default()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261203);
    let mut stamps: Vec<i64> = Vec::new();
    let append = |log: &PartitionLog, rng: &mut rand::rngs::StdRng, stamps: &mut Vec<i64>| {
        let base = T0 + stamps.len() as i64 * 10;
        let records: Vec<Record> = (0..3)
            .map(|i| {
                let t = base + rng.random_range(-400..400);
                stamps.push(t);
                rec(&format!("r{i}"), t)
            })
            .collect();
        log.append_as_leader(records, 1, T0).unwrap();
    };
    let check = |log: &PartitionLog, stamps: &[i64], rng: &mut rand::rngs::StdRng| {
        let hw = log.high_watermark() as usize;
        for _ in 0..300 {
            let target = T0 + rng.random_range(-600..(stamps.len() as i64 * 10 + 600));
            let expected = (log.log_start_offset() as usize..hw)
                .find(|&o| stamps[o] >= target)
                .map(|o| (o as u64, stamps[o]));
            let got = log
                .list_offset(OffsetSpec::Timestamp(target))
                .unwrap()
                .map(|l| (l.offset, l.timestamp_ms.unwrap()));
            assert_eq!(got, expected, "target {target}");
        }
    };
    {
        let store = LogStore::open_with(dir.path(), cfg).unwrap();
        let log = store.partition("t", 1, 0).unwrap();
        for _ in 0..600 {
            append(&log, &mut rng, &mut stamps);
        }
        log.set_high_watermark(log.log_end_offset()).unwrap();
        assert!(log.segments().len() > 3, "{:?}", log.segments());
        let entries: u64 = super::super::segment::time_index::ENTRY_BYTES;
        let time_index_bytes: u64 = walk(&dir.path().join("partitions"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "timeindex"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(
            time_index_bytes / entries > 20,
            "{time_index_bytes} bytes of time index"
        );
        check(&log, &stamps, &mut rng);
        log.sync().unwrap();
    }
    let store = LogStore::open_with(dir.path(), cfg).unwrap();
    let log = store.partition("t", 1, 0).unwrap();
    for _ in 0..100 {
        append(&log, &mut rng, &mut stamps);
    }
    log.set_high_watermark(log.log_end_offset() - 30).unwrap();
    log.truncate_to(log.log_end_offset() - 20).unwrap();
    stamps.truncate(log.log_end_offset() as usize);
    for _ in 0..50 {
        append(&log, &mut rng, &mut stamps);
    }
    log.set_high_watermark(log.log_end_offset()).unwrap();
    check(&log, &stamps, &mut rng);
}

#[test]
fn reopen_returns_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let (before, data, meta) = {
        let store = open_one_batch_per_segment(dir.path());
        let log = store.partition("orders", 9, 2).unwrap();
        log.append_as_leader(recs("a", 3, T0), 1, T0).unwrap();
        log.append_as_leader(recs("b", 3, T0 + 10), 2, T0).unwrap();
        log.append_as_leader(recs("c", 3, T0 + 20), 2, T0).unwrap();
        log.set_high_watermark(6).unwrap();
        log.apply_retention(T0 + 1000, 993, UNLIMITED).unwrap();
        log.sync().unwrap();
        (
            log.offsets(),
            read_all(&log, log.log_start_offset(), ReadBound::LogEnd),
            epochs(&log),
        )
    };
    assert_eq!(before.log_start_offset, 3);
    let store = open_one_batch_per_segment(dir.path());
    assert_eq!(
        store.stored_partitions().unwrap(),
        [PartitionId::new("orders", 9, 2)]
    );
    let log = store.partition("orders", 9, 2).unwrap();
    assert_eq!(log.offsets(), before);
    assert_eq!(read_all(&log, 3, ReadBound::LogEnd), data);
    assert_eq!(epochs(&log), meta);
    assert_eq!(meta, [(2, 3)]);
    let info = log.append_as_leader(recs("d", 1, T0), 2, T0).unwrap();
    assert_eq!(info.base_offset, 9);
}

/// A store whose segments roll at every batch.
fn open_one_batch_per_segment(dir: &std::path::Path) -> LogStore {
    let cfg = LogStoreConfig {
        log: LogConfig {
            segment_bytes_max: 1,
            ..LogConfig::default()
        },
        ..LogStoreConfig::default()
    };
    LogStore::open_with(dir, cfg).unwrap()
}

/// How many segment files (`.log`) the store under `dir` holds.
fn segment_files(dir: &std::path::Path) -> usize {
    walk(&dir.join("partitions"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .count()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn retention_by_time_and_size_never_passes_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    // One batch per segment: retention deletes whole segments.
    let store = open_one_batch_per_segment(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    for i in 0..5 {
        // Batch i: offsets 2i..2i+2, max timestamp T0 + 100 i + 1.
        log.append_as_leader(recs(&format!("b{i}"), 2, T0 + 100 * i), 1 + i as u64, T0)
            .unwrap();
    }
    let batch_len = log.size_bytes() / 5;

    // Unlimited: nothing.
    let out = log
        .apply_retention(T0 + 10_000, UNLIMITED, UNLIMITED)
        .unwrap();
    assert_eq!(out.deleted_segments, 0);
    assert_eq!(log.segments().len(), 5);

    // Everything expired, but only what is below the high watermark may go.
    log.set_high_watermark(5).unwrap();
    let out = log.apply_retention(T0 + 10_000, 1000, UNLIMITED).unwrap();
    assert_eq!((out.deleted_segments, out.log_start_offset), (2, 4));
    assert_eq!(log.log_start_offset(), 4);
    assert_eq!(segment_files(dir.path()), 3, "whole files went");
    assert!(matches!(
        log.read(3, ALL, ReadBound::LogEnd),
        Err(LogError::OffsetOutOfRange {
            log_start_offset: 4,
            ..
        })
    ));
    assert_eq!(
        read_all(&log, 4, ReadBound::LogEnd)[0],
        (4, "b2-0".to_owned())
    );
    // The epoch history keeps the epoch covering the new start, moved to it.
    assert_eq!(epochs(&log), [(3, 4), (4, 6), (5, 8)]);
    assert_eq!(
        log.list_offset(OffsetSpec::Earliest)
            .unwrap()
            .unwrap()
            .offset,
        4
    );

    // By time: only batches older than the retention.
    log.set_high_watermark(10).unwrap();
    let out = log.apply_retention(T0 + 1201, 1000, UNLIMITED).unwrap();
    assert_eq!((out.deleted_segments, out.log_start_offset), (0, 4));
    let out = log.apply_retention(T0 + 1202, 1000, UNLIMITED).unwrap();
    assert_eq!((out.deleted_segments, out.log_start_offset), (1, 6));

    // By size (Kafka's rule): a segment goes while the rest still holds the limit.
    let out = log
        .apply_retention(T0, UNLIMITED, (batch_len + 1) as i64)
        .unwrap();
    assert_eq!((out.deleted_segments, out.log_start_offset), (0, 6));
    let out = log
        .apply_retention(T0, UNLIMITED, batch_len as i64)
        .unwrap();
    assert_eq!((out.deleted_segments, out.log_start_offset), (1, 8));
    assert_eq!(log.size_bytes(), batch_len);
    // Everything, the active segment included: the log rolls an empty one first.
    let out = log.apply_retention(T0, UNLIMITED, 0).unwrap();
    assert_eq!(out.log_start_offset, 10);
    assert_eq!(log.segments(), [(10, 0)]);
    assert_eq!(log.offsets().size_bytes, 0);
    assert_eq!(log.log_end_offset(), 10);
    assert!(log.read(10, ALL, ReadBound::LogEnd).unwrap().is_empty());

    // An empty log keeps its end offset across a reopen, and appends go on from it.
    drop(log);
    drop(store);
    let store = open_one_batch_per_segment(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark()
        ),
        (10, 10, 10)
    );
    assert_eq!(
        log.append_as_leader(recs("z", 1, T0), 9, T0)
            .unwrap()
            .base_offset,
        10
    );
}

#[test]
fn list_offsets_by_timestamp_searches_committed_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    log.append_as_leader(
        vec![rec("a", T0), rec("b", T0 + 50), rec("c", T0 + 20)],
        1,
        T0,
    )
    .unwrap(); // 0..3, max T0 + 50
    log.append_as_leader(vec![rec("d", T0 + 100), rec("e", T0 + 200)], 1, T0)
        .unwrap(); // 3..5
    log.set_high_watermark(3).unwrap();
    let at = |t| {
        log.list_offset(OffsetSpec::Timestamp(t))
            .unwrap()
            .map(|l| (l.offset, l.timestamp_ms.unwrap()))
    };
    assert_eq!(at(T0 - 5), Some((0, T0)));
    assert_eq!(at(T0 + 10), Some((1, T0 + 50)));
    assert_eq!(at(T0 + 50), Some((1, T0 + 50)));
    // Not yet committed.
    assert_eq!(at(T0 + 60), None);
    log.set_high_watermark(5).unwrap();
    assert_eq!(at(T0 + 60), Some((3, T0 + 100)));
    assert_eq!(at(T0 + 150), Some((4, T0 + 200)));
    assert_eq!(at(T0 + 201), None);
    assert_eq!(
        log.list_offset(OffsetSpec::Earliest)
            .unwrap()
            .unwrap()
            .offset,
        0
    );
    assert_eq!(
        log.list_offset(OffsetSpec::Latest).unwrap().unwrap().offset,
        5
    );
}

/// Flips one byte in the middle of the stored batch at `offset` (in its segment file).
fn corrupt_stored_batch(dir: &std::path::Path, id: &PartitionId, offset: u64) {
    let pdir = dir.join("partitions").join(id.dir_name());
    let mut logs: Vec<_> = walk(&pdir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    for path in logs {
        let mut data = std::fs::read(&path).unwrap();
        let mut pos = 0;
        while pos < data.len() {
            let h = super::super::batch_v2::peek_header(&data[pos..]).unwrap();
            if h.base_offset as u64 == offset {
                let mid = pos + h.total_len() / 2 + 10;
                data[mid] ^= 0x40;
                std::fs::write(&path, &data).unwrap();
                return;
            }
            pos += h.total_len();
        }
    }
    panic!("no batch at {offset}");
}

#[test]
fn a_corrupt_batch_is_reported_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let id = PartitionId::new("orders", 3, 1);
    {
        let store = open(dir.path());
        let log = store.partition("orders", 3, 1).unwrap();
        log.append_as_leader(recs("a", 3, T0), 1, T0).unwrap(); // 0..3
        log.append_as_leader(recs("b", 3, T0), 1, T0).unwrap(); // 3..6
        log.append_as_leader(recs("c", 3, T0), 1, T0).unwrap(); // 6..9
        log.sync().unwrap();
        log.set_high_watermark(9).unwrap();
        corrupt_stored_batch(dir.path(), &id, 3);

        // Reading from before it: the good batch only; from it, the error.
        assert_eq!(
            read_all(&log, 0, ReadBound::HighWatermark).len(),
            3,
            "served up to the corrupt batch"
        );
        let err = log.read(3, ALL, ReadBound::HighWatermark).unwrap_err();
        match &err {
            LogError::Corrupt {
                topic,
                topic_id: 3,
                partition: 1,
                offset: Some(3),
                ..
            } if topic == "orders" => {}
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("orders-1"), "{err}");
        assert!(err.to_string().contains("offset 3"), "{err}");
        assert!(matches!(
            log.read_encoded(4, ALL, ReadBound::LogEnd),
            Err(LogError::Corrupt {
                offset: Some(3),
                ..
            })
        ));
        // Before and after it, reads still work.
        assert_eq!(log.read(0, 1, ReadBound::HighWatermark).unwrap().len(), 1);
        assert_eq!(read_all(&log, 6, ReadBound::HighWatermark).len(), 3);
        assert!(matches!(
            log.list_offset(OffsetSpec::Timestamp(T0 + 1)),
            Ok(Some(_))
        ));
        assert!(matches!(
            log.list_offset(OffsetSpec::Timestamp(T0 + 2)),
            Ok(Some(_))
        ));
        assert!(matches!(
            log.list_offset(OffsetSpec::Timestamp(T0 + 3)),
            Err(LogError::Corrupt { .. })
        ));
        store.sync_meta_if_due().unwrap();
    }
    // Reopening: a corrupt batch below the checkpoint opens (its bytes were durable and
    // checked; reads still report it)...
    {
        let store = open(dir.path());
        let log = store.partition("orders", 3, 1).unwrap();
        assert_eq!(log.log_end_offset(), 9);
        assert!(matches!(
            log.read(3, ALL, ReadBound::HighWatermark),
            Err(LogError::Corrupt {
                offset: Some(3),
                ..
            })
        ));
        // ...and one past it, where only unsynced writes can be torn, is cut with what follows.
        log.append_as_leader(recs("d", 3, T0), 1, T0).unwrap(); // 9..12
        log.append_as_leader(recs("e", 3, T0), 1, T0).unwrap(); // 12..15
        log.sync().unwrap();
        corrupt_stored_batch(dir.path(), &id, 9);
    }
    let store = open(dir.path());
    let log = store.partition("orders", 3, 1).unwrap();
    assert_eq!((log.log_end_offset(), log.high_watermark()), (9, 9));
    drop(log);
    drop(store);
    // Corrupt metadata is refused.
    {
        let db = super::super::durable::open_sled(dir.path(), 1 << 20).unwrap();
        db.open_tree("log_meta")
            .unwrap()
            .insert(id.meta_key(), b"junk".to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    assert!(matches!(
        store.partition("orders", 3, 1),
        Err(LogError::Corrupt { offset: None, .. })
    ));
}

#[test]
fn open_finishes_interrupted_changes() {
    let dir = tempfile::tempdir().unwrap();
    let id = PartitionId::new("t", 1, 0);
    {
        let store = open_one_batch_per_segment(dir.path());
        let log = store.partition("t", 1, 0).unwrap();
        log.append_as_leader(recs("a", 2, T0), 1, T0).unwrap(); // 0..2
        log.append_as_leader(recs("b", 2, T0), 1, T0).unwrap(); // 2..4
        log.append_as_leader(recs("c", 2, T0), 2, T0).unwrap(); // 4..6
        log.sync().unwrap();
        log.set_high_watermark(4).unwrap();
        // As if retention wrote the new log start and crashed before deleting the segment,
        // the epoch change before offset 4 never reached the metadata, and a high watermark
        // past the end had survived.
        let mut meta = PartitionMeta {
            log_start_offset: 2,
            high_watermark: 7,
            ..PartitionMeta::default()
        };
        meta.epochs.assign(1, 0);
        meta.epochs.assign(9, 7);
        store
            .db()
            .open_tree("log_meta")
            .unwrap()
            .insert(id.meta_key(), meta.encode(id.meta_key().as_bytes()))
            .unwrap();
        store.db().flush().unwrap();
    }
    let store = open_one_batch_per_segment(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    assert_eq!(
        log.offsets(),
        LogOffsets {
            log_start_offset: 2,
            log_end_offset: 6,
            high_watermark: 6,
            size_bytes: log.size_bytes()
        }
    );
    assert_eq!(
        segment_files(dir.path()),
        2,
        "the segment below the log start went"
    );
    // Epoch 9 (recorded, no batch) is past the end and dropped; epoch 2 re-derived; the
    // first epoch starts at the log start.
    assert_eq!(epochs(&log), [(1, 2), (2, 4)]);
    drop(log);
    drop(store);

    // A reset that crashed after creating its new segment, before the metadata and the
    // deletion of the old ones: open finishes it.
    {
        let pdir = dir.path().join("partitions").join(id.dir_name());
        let name = super::super::segment::file_name(50, "log");
        std::fs::File::create(pdir.join(name)).unwrap();
    }
    let store = open_one_batch_per_segment(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark()
        ),
        (50, 50, 50)
    );
    assert_eq!(segment_files(dir.path()), 1);
    assert!(epochs(&log).is_empty());
}

#[test]
fn truncate_fully_restarts_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    log.append_as_leader(recs("a", 5, T0), 1, T0).unwrap();
    log.set_high_watermark(2).unwrap();
    assert!(matches!(
        log.truncate_fully_and_start_at(1),
        Err(LogError::TruncateBelowHighWatermark { .. })
    ));
    log.truncate_fully_and_start_at(100).unwrap();
    assert_eq!(
        log.offsets(),
        LogOffsets {
            log_start_offset: 100,
            log_end_offset: 100,
            high_watermark: 100,
            size_bytes: 0
        }
    );
    assert!(epochs(&log).is_empty());
    let batch = RecordBatch {
        base_offset: 100,
        leader_epoch: 3,
        records: recs("b", 2, T0),
    };
    log.append_replica(&batch).unwrap();
    drop(log);
    drop(store);
    let store = open(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 102));
    assert_eq!(epochs(&log), [(3, 100)]);
}

#[test]
fn deleting_a_topic_removes_its_partitions_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let old = store.partition("t", 1, 0).unwrap();
    old.append_as_leader(recs("a", 2, T0), 1, T0).unwrap();
    store
        .partition("t", 1, 1)
        .unwrap()
        .append_as_leader(recs("a", 2, T0), 1, T0)
        .unwrap();
    let other = store.partition("u", 2, 0).unwrap();
    other.append_as_leader(recs("a", 2, T0), 1, T0).unwrap();

    assert_eq!(store.remove_topic("t", 1).unwrap(), 2);
    assert!(old.is_deleted());
    assert!(matches!(
        old.append_as_leader(recs("x", 1, T0), 1, T0),
        Err(LogError::Deleted { .. })
    ));
    assert!(matches!(
        old.read(0, ALL, ReadBound::LogEnd),
        Err(LogError::Deleted { .. })
    ));
    assert_eq!(
        store.stored_partitions().unwrap(),
        [PartitionId::new("u", 2, 0)]
    );
    assert_eq!(other.log_end_offset(), 2);

    // The topic re-created (new id) starts empty.
    let new = store.partition("t", 5, 0).unwrap();
    assert_eq!(new.log_end_offset(), 0);
    store.sync().unwrap();
    drop((old, new, other));
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.stored_partitions().unwrap(),
        [PartitionId::new("t", 5, 0), PartitionId::new("u", 2, 0)]
    );
    // Partitions never opened in this process are removed too.
    assert_eq!(store.remove_topic("u", 2).unwrap(), 1);
}

#[test]
fn large_batches_survive_sync_and_reopen() {
    // Batches of ~3.8 MiB in 8 MiB segments: reads return them whole, segments roll.
    let dir = tempfile::tempdir().unwrap();
    let value = Bytes::from(vec![0x5a; 60 * 1024]);
    let cfg = LogStoreConfig {
        log: LogConfig {
            max_batch_bytes: 4 * 1024 * 1024,
            segment_bytes_max: 8 * 1024 * 1024,
            ..LogConfig::default()
        },
        ..LogStoreConfig::default()
    };
    {
        let store = LogStore::open_with(dir.path(), cfg).unwrap();
        let a = store.partition("t", 1, 0).unwrap();
        let b = store.partition("t", 1, 1).unwrap();
        let rounds = store.durable_sync_count();
        for _ in 0..3 {
            let records: Vec<Record> = (0..64).map(|_| Record::new(value.clone())).collect();
            a.append_as_leader(records.clone(), 1, T0).unwrap();
            b.append_as_leader(records, 1, T0).unwrap();
            // One sync for both partitions.
            store.sync().unwrap();
        }
        assert_eq!(store.durable_sync_count() - rounds, 3);
        assert_eq!(a.log_end_offset(), 3 * 64);
        assert!(a.segments().len() >= 2, "{:?}", a.segments());
    }
    let store = LogStore::open_with(dir.path(), cfg).unwrap();
    for p in 0..2 {
        let log = store.partition("t", 1, p).unwrap();
        assert_eq!(log.log_end_offset(), 3 * 64);
        let mut from = 0;
        let mut n = 0;
        while from < log.log_end_offset() {
            for b in log.read(from, 8 * 1024 * 1024, ReadBound::LogEnd).unwrap() {
                assert!(b.records.iter().all(|r| r.value == value));
                n += b.records.len();
                from = b.next_offset();
            }
        }
        assert_eq!(n, 3 * 64);
    }
}

#[test]
fn concurrent_appends_and_group_commit_keep_offsets_dense() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                // Two threads per partition, each append followed by a shared sync.
                let log = store.partition("t", 1, t % 2).unwrap();
                let mut bases = Vec::new();
                for i in 0..50 {
                    let info = log
                        .append_as_leader(recs(&format!("{t}-{i}"), 3, T0), 1, T0)
                        .unwrap();
                    log.sync().unwrap();
                    bases.push(info.base_offset);
                }
                bases
            })
        })
        .collect();
    let bases: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for p in 0..2u32 {
        let log = store.partition("t", 1, p).unwrap();
        assert_eq!(log.log_end_offset(), 2 * 50 * 3);
        let mut all: Vec<u64> = bases
            .iter()
            .enumerate()
            .filter(|(t, _)| *t as u32 % 2 == p)
            .flat_map(|(_, b)| b.iter().copied())
            .collect();
        all.sort();
        assert_eq!(all, (0..100).map(|i| i * 3).collect::<Vec<_>>());
        let offsets: Vec<u64> = read_all(&log, 0, ReadBound::LogEnd)
            .iter()
            .map(|(o, _)| *o)
            .collect();
        assert_eq!(offsets, (0..300).collect::<Vec<_>>());
    }
}
