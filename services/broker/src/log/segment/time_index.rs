//! The sparse time index of one segment (the role of Kafka's `TimeIndex`), for ListOffsets by
//! timestamp: an entry (T, O) says that **every record before offset O in the segment has a
//! timestamp of at most T**. A search for the first record at or after `target` starts at the
//! O of the last entry with T < `target` (nothing before it qualifies) and scans forward.
//!
//! Kept in memory and appended to `<base>.timeindex` (12 bytes an entry: i64 timestamp, u32
//! offset relative to the segment base, big-endian), an entry when the offset index takes one
//! and the largest timestamp so far grew. T may only ever be too large (a search then starts
//! earlier, still right), never too small, so:
//! - the file is derived data: at open, entries out of order, torn, or at or past the
//!   segment's end are dropped, like the offset index's;
//! - after open or a truncation the largest timestamp so far is unknown (the batches between
//!   the last entry and the end were not all read), and the segment takes no further entries
//!   (searches in that part of the segment scan from the last entry). Sealed segments keep a
//!   full index: a roll starts the next segment fresh.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of one entry in the file.
pub const ENTRY_BYTES: u64 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

/// See the module docs.
#[derive(Debug)]
pub struct TimeIndex {
    file: File,
    entries: Vec<TimeEntry>,
    /// The largest timestamp of the segment's batches so far, when known (see the module docs).
    max_so_far: Option<i64>,
}

impl TimeIndex {
    /// A new, empty index for a new segment: every batch will be seen, so entries are taken.
    pub fn create(path: &Path) -> io::Result<TimeIndex> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(TimeIndex {
            file,
            entries: Vec::new(),
            max_so_far: Some(i64::MIN),
        })
    }

    /// Opens (or creates) the index of an existing segment, keeping the entries in order whose
    /// offset is below `relative_end`; it takes no further entries.
    pub fn open(path: &Path, relative_end: u64) -> io::Result<TimeIndex> {
        let (file, entries) = super::index::open_entries(
            path,
            |raw: &[u8; ENTRY_BYTES as usize]| TimeEntry {
                timestamp_ms: i64::from_be_bytes(raw[..8].try_into().expect("8 bytes")),
                relative_offset: u32::from_be_bytes(raw[8..].try_into().expect("4 bytes")),
            },
            |last: Option<&TimeEntry>, e: &TimeEntry| {
                last.is_none_or(|l| {
                    e.timestamp_ms > l.timestamp_ms && e.relative_offset > l.relative_offset
                }) && u64::from(e.relative_offset) < relative_end
            },
        )?;
        Ok(TimeIndex {
            file,
            entries,
            max_so_far: None,
        })
    }

    /// Notes a batch appended at `relative_offset` with largest timestamp `max_timestamp_ms`;
    /// `entry_due` says the offset index took an entry for it (the same spacing).
    pub fn on_append(
        &mut self,
        relative_offset: u32,
        max_timestamp_ms: i64,
        entry_due: bool,
    ) -> io::Result<()> {
        let Some(before) = self.max_so_far else {
            return Ok(());
        };
        // The entry describes the records before this batch, so it is written first.
        if entry_due
            && before != i64::MIN
            && self
                .entries
                .last()
                .is_none_or(|l| before > l.timestamp_ms && relative_offset > l.relative_offset)
        {
            let e = TimeEntry {
                timestamp_ms: before,
                relative_offset,
            };
            let mut raw = [0u8; ENTRY_BYTES as usize];
            raw[..8].copy_from_slice(&e.timestamp_ms.to_be_bytes());
            raw[8..].copy_from_slice(&e.relative_offset.to_be_bytes());
            self.file
                .write_all_at(&raw, self.entries.len() as u64 * ENTRY_BYTES)?;
            self.entries.push(e);
        }
        self.max_so_far = Some(before.max(max_timestamp_ms));
        Ok(())
    }

    /// Where a search for the first record at or after `target_ms` starts (relative offset;
    /// 0 when no entry rules anything out).
    pub fn search_start(&self, target_ms: i64) -> u32 {
        let at = self.entries.partition_point(|e| e.timestamp_ms < target_ms);
        at.checked_sub(1)
            .map_or(0, |i| self.entries[i].relative_offset)
    }

    /// Drops the entries at or past `relative_offset` (the segment is cut there); the largest
    /// timestamp of what is left is unknown from then on.
    pub fn truncate_to(&mut self, relative_offset: u64) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|e| u64::from(e.relative_offset) < relative_offset);
        self.entries.truncate(keep);
        self.max_so_far = None;
        self.file.set_len(keep as u64 * ENTRY_BYTES)
    }

    /// `fdatasync` of the file.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_bound_what_lies_before_them_and_searches_start_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let mut index = TimeIndex::create(&path).unwrap();
        // Batches at 0, 10, 20, 30 with max timestamps 100, 50, 300, 200; an entry is due at
        // each: before 10 the max is 100, before 20 still 100 (no entry), before 30 it is 300.
        for (o, t) in [(0, 100), (10, 50), (20, 300), (30, 200)] {
            index.on_append(o, t, true).unwrap();
        }
        assert_eq!(index.len(), 2);
        assert_eq!(index.search_start(50), 0);
        assert_eq!(
            index.search_start(100),
            0,
            "a record at 100 may lie before 10"
        );
        assert_eq!(index.search_start(101), 10);
        assert_eq!(index.search_start(300), 10);
        assert_eq!(index.search_start(301), 30);
        drop(index);
        // Reopened: the entries stay, no new ones are taken (the max so far is unknown).
        let mut index = TimeIndex::open(&path, 40).unwrap();
        assert_eq!(index.search_start(301), 30);
        index.on_append(40, 1000, true).unwrap();
        assert_eq!(index.len(), 2);
        // Cut at 30: the entry at 30 goes.
        index.truncate_to(30).unwrap();
        assert_eq!(index.search_start(301), 10);
        drop(index);
        assert_eq!(TimeIndex::open(&path, 5).unwrap().len(), 0);
    }
}
