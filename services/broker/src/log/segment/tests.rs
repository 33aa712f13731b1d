use bytes::Bytes;

use super::*;
use crate::log::batch_v2::{NewRecord, ProducerFields, encode, records};

/// A batch of `n` records of `value_bytes` each at `base`.
fn batch(base: i64, n: usize, value_bytes: usize) -> Vec<u8> {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord {
            timestamp_ms: 1_000 + base + i as i64,
            key: None,
            value: Some(Bytes::from(vec![b'a' + (base % 26) as u8; value_bytes])),
            headers: vec![],
        })
        .collect();
    encode(base, 1, ProducerFields::NONE, &records).unwrap()
}

/// Appends 50 batches of 4 records (offsets base..base+200), returning each batch's end
/// position.
fn fill(segment: &mut LogSegment) -> Vec<u64> {
    let mut ends = Vec::new();
    for b in 0..50 {
        segment
            .append(&batch(segment.base_offset() + b * 4, 4, 300))
            .unwrap();
        ends.push(segment.len_bytes());
    }
    ends
}

fn offsets(bytes: &Bytes) -> Vec<i64> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = batch_v2::peek_header(&bytes[at..]).unwrap();
        let one = bytes.slice(at..at + h.total_len());
        out.extend(records(&one).unwrap().iter().map(|r| r.offset));
        at += h.total_len();
    }
    out
}

#[test]
fn reads_return_whole_batches_from_the_one_holding_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogSegment::create(dir.path(), 100, 4096).unwrap();
    assert_eq!(s.read(100, 1 << 20).unwrap(), None);
    fill(&mut s);
    assert_eq!(s.next_offset(), 300);
    assert!(s.index_entries() > 5, "{} index entries", s.index_entries());
    // From the middle of a batch: that whole batch first.
    let got = s.read(142, 1).unwrap().unwrap();
    assert_eq!(
        offsets(&got),
        (140..144).collect::<Vec<_>>(),
        "at least one batch"
    );
    let got = s.read(142, 4_000).unwrap().unwrap();
    let o = offsets(&got);
    assert_eq!((o[0], o.len() % 4), (140, 0));
    assert!(
        got.len() <= 4_000 && o.len() > 4,
        "{} bytes, {} records",
        got.len(),
        o.len()
    );
    // Everything, and nothing past the end.
    assert_eq!(
        offsets(&s.read(0, 1 << 20).unwrap().unwrap()),
        (100..300).collect::<Vec<_>>()
    );
    assert_eq!(s.read(300, 1 << 20).unwrap(), None);
}

#[test]
fn appends_of_bad_batches_or_earlier_offsets_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogSegment::create(dir.path(), 0, 4096).unwrap();
    s.append(&batch(0, 4, 10)).unwrap();
    let len = s.len_bytes();
    assert!(matches!(
        s.append(&batch(3, 1, 10)),
        Err(SegmentError::OffsetBehind { given: 3, next: 4 })
    ));
    let mut bad = batch(4, 1, 10);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(s.append(&bad), Err(SegmentError::Batch(_))));
    assert_eq!((s.len_bytes(), s.next_offset()), (len, 4));
    // A segment is created once.
    assert!(matches!(
        LogSegment::create(dir.path(), 0, 4096),
        Err(SegmentError::Io { .. })
    ));
}

#[test]
fn reopening_at_the_checkpoint_checks_nothing_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogSegment::create(dir.path(), 0, 4096).unwrap();
    fill(&mut s);
    s.sync().unwrap();
    let len = s.len_bytes();
    drop(s);
    let (mut s, r) = LogSegment::open(dir.path(), 0, len, 4096).unwrap();
    assert_eq!(
        r,
        Recovered {
            valid_bytes: len,
            truncated_bytes: 0,
            batches_checked: 0,
            epoch_starts: vec![],
        }
    );
    assert_eq!(s.next_offset(), 200);
    s.append(&batch(200, 2, 10)).unwrap();
    assert_eq!(
        offsets(&s.read(199, 1 << 20).unwrap().unwrap()),
        [196, 197, 198, 199, 200, 201]
    );
}

#[test]
fn a_torn_tail_past_the_checkpoint_is_cut_at_the_last_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogSegment::create(dir.path(), 0, 4096).unwrap();
    let ends = fill(&mut s);
    drop(s);
    // Synced up to batch 20; power went while batch 40 was half written.
    let path = dir.path().join(file_name(0, "log"));
    let torn_at = ends[39] + 100;
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(torn_at)
        .unwrap();
    let (mut s, r) = LogSegment::open(dir.path(), 0, ends[19], 4096).unwrap();
    assert_eq!(r.valid_bytes, ends[39]);
    assert_eq!(r.truncated_bytes, 100);
    assert_eq!(r.batches_checked, 20);
    assert_eq!(s.next_offset(), 160);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        ends[39],
        "the cut is on disk"
    );
    s.append(&batch(160, 4, 300)).unwrap();
    assert_eq!(
        offsets(&s.read(0, 1 << 20).unwrap().unwrap()),
        (0..164).collect::<Vec<_>>()
    );
}

#[test]
fn a_corrupt_batch_past_the_checkpoint_goes_with_everything_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogSegment::create(dir.path(), 0, 4096).unwrap();
    let ends = fill(&mut s);
    drop(s);
    let path = dir.path().join(file_name(0, "log"));
    let mut raw = std::fs::read(&path).unwrap();
    raw[ends[30] as usize + 200] ^= 0xff; // inside batch 31's records
    std::fs::write(&path, &raw).unwrap();
    let (s, r) = LogSegment::open(dir.path(), 0, ends[9], 4096).unwrap();
    assert_eq!(r.valid_bytes, ends[30]);
    assert_eq!(r.truncated_bytes, ends[49] - ends[30]);
    assert_eq!(s.next_offset(), 124);
    // A broken promise below the checkpoint, met while scanning headers (the index is lost,
    // so the scan starts at 0), is an error, not a silent cut.
    drop(s);
    let mut raw = std::fs::read(&path).unwrap();
    raw[ends[2] as usize + 16] = 9; // batch 3's magic
    std::fs::write(&path, &raw).unwrap();
    std::fs::remove_file(dir.path().join(file_name(0, "index"))).unwrap();
    assert!(matches!(
        LogSegment::open(dir.path(), 0, ends[20], 4096),
        Err(SegmentError::Corrupt { .. })
    ));
}

#[test]
fn truncation_removes_whole_batches_from_the_one_holding_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogSegment::create(dir.path(), 0, 4096).unwrap();
    let ends = fill(&mut s);
    assert_eq!(
        s.truncate_to(200).unwrap(),
        200,
        "nothing at or past the end"
    );
    assert_eq!(s.truncate_to(130).unwrap(), 128);
    assert_eq!(s.len_bytes(), ends[31]);
    assert_eq!(s.read(128, 1 << 20).unwrap(), None);
    s.append(&batch(128, 4, 300)).unwrap();
    assert_eq!(
        offsets(&s.read(120, 1 << 20).unwrap().unwrap()),
        (120..132).collect::<Vec<_>>()
    );
    // What was cut stays cut after a restart, and the index agrees.
    s.sync().unwrap();
    let len = s.len_bytes();
    drop(s);
    let (mut s, r) = LogSegment::open(dir.path(), 0, len, 4096).unwrap();
    assert_eq!((r.truncated_bytes, s.next_offset()), (0, 132));
    assert_eq!(s.truncate_to(0).unwrap(), 0);
    assert_eq!(s.len_bytes(), 0);
}

#[test]
fn a_lost_index_is_rebuilt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogSegment::create(dir.path(), 0, 4096).unwrap();
    fill(&mut s);
    s.sync().unwrap();
    let (len, entries) = (s.len_bytes(), s.index_entries());
    drop(s);
    std::fs::remove_file(dir.path().join(file_name(0, "index"))).unwrap();
    let (s, r) = LogSegment::open(dir.path(), 0, len, 4096).unwrap();
    assert_eq!((r.truncated_bytes, s.next_offset()), (0, 200));
    assert_eq!(s.index_entries(), entries);
    assert_eq!(
        offsets(&s.read(77, 1).unwrap().unwrap()),
        (76..80).collect::<Vec<_>>()
    );
}

#[test]
fn offsets_past_what_the_index_can_hold_need_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogSegment::create(dir.path(), 0, 4096).unwrap();
    s.append(&batch(0, 1, 10)).unwrap();
    assert!(matches!(
        s.append(&batch(1 << 32, 1, 10)),
        Err(SegmentError::Full { .. })
    ));
    assert_eq!(s.next_offset(), 1);
}
