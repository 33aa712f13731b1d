//! Issue 10, path 8 and issue 11: opening a log reads only the tail past its recovery
//! checkpoint, whatever the size of the log, and retention deletes whole segment files.

use std::sync::atomic::Ordering;

use super::super::config::{LogConfig, LogStoreConfig, UNLIMITED};
use super::super::{LogStore, ReadBound};
use super::{open, recs, values};

const T0: i64 = 1_700_000_000_000;

#[test]
fn opening_reads_only_the_batches_past_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let log = store.partition("t", 1, 0).unwrap();
        for i in 0..2000 {
            log.append_as_leader(recs(&format!("c{i}"), 2, T0), 1, T0)
                .unwrap();
        }
        log.sync().unwrap();
        // Committed (and so durable here): the next open trusts it.
        log.set_high_watermark(4000).unwrap();
        for i in 0..5 {
            log.append_as_leader(recs(&format!("u{i}"), 1, T0), 1, T0)
                .unwrap();
        }
        log.sync().unwrap();
        store.sync_meta_if_due().unwrap();
    }
    let store = LogStore::open(dir.path()).unwrap();
    let log = store.partition("t", 1, 0).unwrap();
    assert_eq!(
        log.batches_read_at_open.load(Ordering::Relaxed),
        5,
        "only the batches past the checkpoint are checked"
    );
    let offsets = log.offsets();
    assert_eq!(
        (offsets.log_end_offset, offsets.high_watermark),
        (4005, 4000)
    );
    assert_eq!(
        values(&log.read(3999, 64, ReadBound::LogEnd).unwrap(), 3999)[0].0,
        3999
    );
}

#[test]
fn retention_by_size_deletes_the_oldest_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig {
        log: LogConfig {
            segment_bytes_max: 64 * 1024,
            ..LogConfig::default()
        },
        ..LogStoreConfig::default()
    };
    let store = LogStore::open_with(dir.path(), cfg).unwrap();
    let log = store.partition("t", 1, 0).unwrap();
    for i in 0..2000 {
        log.append_as_leader(recs(&format!("b{i}"), 4, T0), 1, T0)
            .unwrap();
    }
    log.sync().unwrap();
    let before = log.segments();
    assert!(before.len() > 4, "{before:?}");
    // Nothing above the high watermark goes.
    log.set_high_watermark(100).unwrap();
    let out = log.apply_retention(T0, UNLIMITED, 0).unwrap();
    assert!(log.segments()[0].0 <= 100);
    assert_eq!(out.log_start_offset, log.segments()[0].0);
    log.set_high_watermark(8000).unwrap();
    let total: u64 = before.iter().map(|&(_, b)| b).sum();
    let keep = total / 2;
    let out = log.apply_retention(T0, UNLIMITED, keep as i64).unwrap();
    let after = log.segments();
    assert!(out.deleted_segments > 0, "{out:?}");
    assert!(
        log.size_bytes() >= keep,
        "Kafka's rule: the rest still holds the limit"
    );
    assert_eq!(
        out.log_start_offset, after[0].0,
        "the log starts at a segment"
    );
    assert_eq!(&before[before.len() - after.len()..], &after[..]);
    let start = log.log_start_offset();
    assert_eq!(
        values(&log.read(start, 64, ReadBound::LogEnd).unwrap(), start)[0].0,
        start
    );
}
