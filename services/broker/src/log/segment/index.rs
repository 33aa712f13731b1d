//! The sparse offset index of one segment (Kafka's `OffsetIndex`): every
//! `index_interval_bytes` or so of batches, an entry (offset relative to the segment's base,
//! byte position of the batch that holds it). A lookup finds the last entry at or below an
//! offset, and a read scans batch headers forward from there.
//!
//! Kept in memory and appended to `<base>.index` (8 bytes an entry: u32 relative offset, u32
//! position, big-endian). The file is derived data: it is synced with the segment, and at open
//! entries past the recovered length, out of order or torn are dropped (the recovery scan
//! adds them again), so a stale or damaged index can cost a longer scan, never a wrong read.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of one entry in the file.
pub const ENTRY_BYTES: u64 = 8;

/// One entry: the first offset of a batch (relative to the segment base) and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// See the module docs.
#[derive(Debug)]
pub struct OffsetIndex {
    file: File,
    entries: Vec<IndexEntry>,
}

impl OffsetIndex {
    /// Opens (or creates) the index at `path`, keeping the entries that are in order and point
    /// below `valid_bytes` of the segment; the file is cut to what is kept.
    pub fn open(path: &Path, valid_bytes: u64) -> io::Result<OffsetIndex> {
        let (file, entries) = open_entries(
            path,
            |raw: &[u8; ENTRY_BYTES as usize]| IndexEntry {
                relative_offset: u32::from_be_bytes(raw[..4].try_into().expect("4 bytes")),
                position: u32::from_be_bytes(raw[4..].try_into().expect("4 bytes")),
            },
            |last: Option<&IndexEntry>, e: &IndexEntry| {
                last.is_none_or(|l| {
                    e.relative_offset > l.relative_offset && e.position > l.position
                }) && u64::from(e.position) < valid_bytes
            },
        )?;
        Ok(OffsetIndex { file, entries })
    }

    /// Adds an entry (it must come after the last one).
    pub fn append(&mut self, entry: IndexEntry) -> io::Result<()> {
        if let Some(last) = self.entries.last() {
            assert!(
                entry.relative_offset > last.relative_offset && entry.position > last.position,
                "index entries must grow: {entry:?} after {last:?}"
            );
        }
        let mut raw = [0u8; ENTRY_BYTES as usize];
        raw[..4].copy_from_slice(&entry.relative_offset.to_be_bytes());
        raw[4..].copy_from_slice(&entry.position.to_be_bytes());
        self.file
            .write_all_at(&raw, self.entries.len() as u64 * ENTRY_BYTES)?;
        self.entries.push(entry);
        Ok(())
    }

    /// The last entry whose offset is at or below `relative_offset` (none: scan from 0).
    pub fn floor(&self, relative_offset: u32) -> Option<IndexEntry> {
        let at = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        at.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<IndexEntry> {
        self.entries.last().copied()
    }

    /// Drops every entry at or past `position` (the segment is being cut there).
    pub fn truncate_to_position(&mut self, position: u64) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|e| u64::from(e.position) < position);
        self.entries.truncate(keep);
        self.file.set_len(keep as u64 * ENTRY_BYTES)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `fdatasync` of the index file.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Opens (or creates) an index file of `N`-byte entries and keeps the longest prefix of them
/// that `keep` accepts (given the previous entry kept), cutting the file to it: the loading
/// both segment indexes share (torn, out-of-order or stale entries end the prefix).
pub(super) fn open_entries<const N: usize, T>(
    path: &Path,
    parse: impl Fn(&[u8; N]) -> T,
    mut keep: impl FnMut(Option<&T>, &T) -> bool,
) -> io::Result<(File, Vec<T>)> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let len = file.metadata()?.len();
    let mut raw = vec![0u8; (len - len % N as u64) as usize];
    file.read_exact_at(&mut raw, 0)?;
    let mut entries: Vec<T> = Vec::with_capacity(raw.len() / N);
    for chunk in raw.chunks_exact(N) {
        let e = parse(chunk.try_into().expect("N bytes"));
        if !keep(entries.last(), &e) {
            break;
        }
        entries.push(e);
    }
    let kept = (entries.len() * N) as u64;
    if kept != len {
        file.set_len(kept)?;
    }
    Ok((file, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(relative_offset: u32, position: u32) -> IndexEntry {
        IndexEntry {
            relative_offset,
            position,
        }
    }

    #[test]
    fn floor_finds_the_last_entry_at_or_below() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = OffsetIndex::open(&dir.path().join("0.index"), u64::MAX).unwrap();
        assert_eq!(index.floor(5), None);
        for (o, p) in [(10, 100), (20, 200), (30, 300)] {
            index.append(entry(o, p)).unwrap();
        }
        assert_eq!(index.floor(9), None);
        assert_eq!(index.floor(10), Some(entry(10, 100)));
        assert_eq!(index.floor(29), Some(entry(20, 200)));
        assert_eq!(index.floor(u32::MAX), Some(entry(30, 300)));
    }

    #[test]
    fn reopening_keeps_only_sound_entries_below_the_valid_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = OffsetIndex::open(&path, u64::MAX).unwrap();
        for (o, p) in [(10, 100), (20, 200), (30, 300)] {
            index.append(entry(o, p)).unwrap();
        }
        drop(index);
        // The segment was cut at 250: the entry at 300 goes.
        let index = OffsetIndex::open(&path, 250).unwrap();
        assert_eq!(index.last(), Some(entry(20, 200)));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * ENTRY_BYTES);
        drop(index);
        // A torn last entry (half written) and an out-of-order one are dropped.
        let mut raw = std::fs::read(&path).unwrap();
        raw.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 50]); // offset 5 after 20: out of order
        raw.extend_from_slice(&[0, 0, 0]);
        std::fs::write(&path, &raw).unwrap();
        let index = OffsetIndex::open(&path, u64::MAX).unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * ENTRY_BYTES);
    }

    #[test]
    fn truncation_drops_entries_at_or_past_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = OffsetIndex::open(&dir.path().join("0.index"), u64::MAX).unwrap();
        for (o, p) in [(10, 100), (20, 200), (30, 300)] {
            index.append(entry(o, p)).unwrap();
        }
        index.truncate_to_position(200).unwrap();
        assert_eq!(index.last(), Some(entry(10, 100)));
        index.append(entry(15, 150)).unwrap();
        assert_eq!(index.floor(100), Some(entry(15, 150)));
    }
}
