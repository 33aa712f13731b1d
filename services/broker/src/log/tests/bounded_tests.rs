//! Issue 10, path 8: opening a log reads only the tail past its recovery point, and retention
//! never holds the partition's lock for a whole scan and deletion.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::config::UNLIMITED;
use super::super::{LogStore, ReadBound};
use super::{open, recs, values};

const T0: i64 = 1_700_000_000_000;

#[test]
fn opening_reads_only_the_batches_past_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let log = store.partition("t", 1, 0).unwrap();
        for i in 0..2000 {
            log.append_as_leader(recs(&format!("c{i}"), 2, T0), 1, T0)
                .unwrap();
        }
        // Committed (and so durable here): the next open trusts it.
        log.set_high_watermark(4000).unwrap();
        for i in 0..5 {
            log.append_as_leader(recs(&format!("u{i}"), 1, T0), 1, T0)
                .unwrap();
        }
        log.sync().unwrap();
    }
    let store = LogStore::open(dir.path()).unwrap();
    let log = store.partition("t", 1, 0).unwrap();
    assert_eq!(
        log.batches_read_at_open.load(Ordering::Relaxed),
        5,
        "only the uncommitted tail is read (plus the batch ending at the point, checked)"
    );
    let offsets = log.offsets();
    assert_eq!(
        (offsets.log_end_offset, offsets.high_watermark),
        (4005, 4000)
    );
    let full_size = offsets.size_bytes;
    // The size is right without reading the log: retention by size deletes exactly the
    // oldest batches over the limit.
    let kept = full_size - 10 * (full_size / 2005);
    let out = log.apply_retention(T0, UNLIMITED, kept as i64).unwrap();
    assert!(out.deleted_batches >= 10, "{out:?}");
    assert!(log.size_bytes() <= kept);
    assert_eq!(
        values(&log.read(3999, 64, ReadBound::LogEnd).unwrap(), 3999)[0].0,
        3999
    );
}

#[test]
fn retention_lets_appends_and_reads_in_between_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = store.partition("t", 1, 0).unwrap();
    let chunk = super::super::retention::RETENTION_CHUNK_BATCHES;
    let batches = 3 * chunk + 10;
    for i in 0..batches {
        log.append_as_leader(recs(&format!("b{i}"), 1, T0), 1, T0)
            .unwrap();
    }
    log.set_high_watermark(batches as u64).unwrap();
    let appended_during = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let weak = Arc::downgrade(&log);
        let appended_during = appended_during.clone();
        *log.between_retention_chunks.lock().unwrap() = Some(Box::new(move || {
            let log = weak.upgrade().unwrap();
            // Would deadlock (retention holds the state lock) if it did not let go.
            let info = log
                .append_as_leader(recs("during", 1, T0 + 1), 1, T0)
                .unwrap();
            let start = log.log_start_offset();
            log.read(start, 64, ReadBound::LogEnd).unwrap();
            appended_during.lock().unwrap().push(info.base_offset);
        }));
    }
    let out = log.apply_retention(T0 + 10_000, 1000, UNLIMITED).unwrap();
    assert_eq!(out.deleted_batches, batches);
    assert_eq!(
        appended_during.lock().unwrap().len(),
        3,
        "the lock was free between every two chunks"
    );
    assert_eq!(log.log_start_offset(), batches as u64);
}
