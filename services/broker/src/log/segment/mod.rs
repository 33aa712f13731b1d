//! One segment of a partition log (Kafka's `LogSegment`): an append-only file of whole
//! RecordBatch v2 batches (`<base offset, 20 digits>.log`, see [`super::batch_v2`]) and its
//! sparse offset and time indexes ([`index`], [`time_index`]). Issue 11's second piece: a segment appends, syncs, reads
//! contiguous batch bytes, truncates, and recovers its tail at open. Rolling, retention and
//! the group commit over many segments and partitions sit above it (not yet written); the
//! broker does not use segments yet.
//!
//! # To ensure correctness
//! - Only whole batches that pass [`batch_v2::check`] are appended, with base offsets that
//!   never go back, so the file is always a sequence of intact batches up to its last write.
//! - [`LogSegment::sync`] (`fdatasync` of the file, then of its index) is what makes appends
//!   durable; nothing may be acknowledged before it returns. A new segment's file and its
//!   directory entry are synced by [`LogSegment::create`] before it takes an append.
//! - [`LogSegment::open`] trusts the bytes below `checkpoint_bytes` (a length this process
//!   or an earlier one synced and recorded) and CRC-checks every batch after it; the first
//!   torn, corrupt or out-of-order batch and everything after it is cut off (and the cut is
//!   synced), so recovery costs the unsynced tail, not the log.
//! - Truncation and recovery cut whole batches, by shortening the file; data is never
//!   rewritten.

pub mod index;
pub mod segmented;
pub mod time_index;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::batch_v2::{self, BatchHeaderV2, BatchV2Error, HEADER_LEN};
use index::{IndexEntry, OffsetIndex};
use time_index::TimeIndex;

/// Kafka's default `index.interval.bytes`.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u64 = 4096;
/// Positions in the index are u32: a segment holds at most this many bytes.
pub const SEGMENT_BYTES_LIMIT: u64 = u32::MAX as u64;

/// Why a segment operation failed. `Io` and `Corrupt` mean the disk or its contents cannot be
/// trusted (the caller stops using the log); the others are the caller's mistakes.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("not a valid record batch: {0}")]
    Batch(#[from] BatchV2Error),
    #[error("a batch at base offset {given} cannot follow offset {next} (offsets never go back)")]
    OffsetBehind { given: i64, next: i64 },
    #[error(
        "segment {path} would pass {SEGMENT_BYTES_LIMIT} bytes or 2^32 offsets past its base; \
         roll a new segment first"
    )]
    Full { path: PathBuf },
    #[error(
        "segment {path} holds a batch at position {position} that is not intact below its checkpoint: {why}"
    )]
    Corrupt {
        path: PathBuf,
        position: u64,
        why: String,
    },
}

/// What [`LogSegment::open`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Bytes kept.
    pub valid_bytes: u64,
    /// Bytes cut off the tail (torn or corrupt).
    pub truncated_bytes: u64,
    /// Batches CRC-checked past the checkpoint.
    pub batches_checked: u64,
    /// Among those batches, where the partition leader epoch changes: (epoch, base offset),
    /// the first batch's included. The partition's epoch history may lack them after a crash.
    pub epoch_starts: Vec<(i32, i64)>,
}

/// See the module docs.
#[derive(Debug)]
pub struct LogSegment {
    base_offset: i64,
    path: PathBuf,
    /// Shared with the group commit, which syncs it without the partition's lock.
    file: Arc<File>,
    len_bytes: u64,
    /// The offset after the last record (the base offset while empty).
    next_offset: i64,
    index: OffsetIndex,
    time_index: TimeIndex,
    index_interval_bytes: u64,
    bytes_since_index_entry: u64,
    /// The largest batch max timestamp, once a scan found it (cleared by appends and cuts).
    max_timestamp_ms: OnceLock<i64>,
}

/// A read of a segment decided under the partition's lock and done after it (see
/// [`LogSegment::plan_read`]): the file stays readable even if the segment is deleted
/// meanwhile (an open handle keeps the data), and nothing past `end` is read.
#[derive(Debug)]
pub struct ReadPlan {
    file: Arc<File>,
    path: PathBuf,
    /// Where the batch holding the offset starts.
    start: u64,
    /// The segment's length when the plan was made.
    end: u64,
}

impl ReadPlan {
    /// Whole batches from the planned one on: one `pread` of about `max_bytes` (a second one
    /// only when the first batch alone is larger), trimmed to whole batches by their headers.
    pub fn read(&self, max_bytes: usize) -> Result<Bytes, SegmentError> {
        let available = self.end - self.start;
        let want = (max_bytes.max(HEADER_LEN) as u64).min(available) as usize;
        let mut buf = self.read_at(self.start, want)?;
        if buf.len() < want {
            // The file was cut after the plan (a follower truncating): nothing to serve here.
            return Ok(Bytes::new());
        }
        let first = batch_v2::peek_header(&buf).map_err(|e| self.corrupt(self.start, e))?;
        if first.total_len() as u64 > available {
            return Err(self.corrupt(
                self.start,
                format!(
                    "a batch of {} bytes runs past the segment's end",
                    first.total_len()
                ),
            ));
        }
        if first.total_len() > buf.len() {
            buf = self.read_at(self.start, first.total_len())?;
            if buf.len() < first.total_len() {
                return Ok(Bytes::new());
            }
        }
        let mut keep = 0;
        while keep < buf.len() {
            match batch_v2::peek_header(&buf[keep..]) {
                Ok(h) if keep + h.total_len() <= buf.len() => keep += h.total_len(),
                _ => break,
            }
        }
        buf.truncate(keep);
        Ok(Bytes::from(buf))
    }

    fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>, SegmentError> {
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match self.file.read_at(&mut buf[done..], position + done as u64) {
                // Cut shorter meanwhile (a follower truncating): what is there is what there is.
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(SegmentError::Io {
                        what: "cannot read segment",
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    fn corrupt(&self, position: u64, why: impl ToString) -> SegmentError {
        SegmentError::Corrupt {
            path: self.path.clone(),
            position,
            why: why.to_string(),
        }
    }
}

/// The file name of segment `base_offset` with `extension` ("log", "index").
pub fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SegmentError + 'a {
    move |source| SegmentError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Syncs `dir`, so that files created, renamed or removed in it stay so after a crash.
pub fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync directory", dir))
}

impl LogSegment {
    /// Creates an empty segment at `base_offset` in `dir`: the files, then a sync of both and
    /// of `dir`, so the segment exists after a crash before anything in it is acknowledged.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
    ) -> Result<LogSegment, SegmentError> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("cannot create segment", &path))?;
        let index_path = dir.join(file_name(base_offset, "index"));
        let index = OffsetIndex::open(&index_path, 0)
            .map_err(io_err("cannot create index", &index_path))?;
        let time_path = dir.join(file_name(base_offset, "timeindex"));
        let time_index =
            TimeIndex::create(&time_path).map_err(io_err("cannot create index", &time_path))?;
        file.sync_all().map_err(io_err("cannot sync", &path))?;
        index.sync().map_err(io_err("cannot sync", &index_path))?;
        time_index
            .sync()
            .map_err(io_err("cannot sync", &time_path))?;
        sync_dir(dir)?;
        Ok(LogSegment::assemble(
            base_offset,
            path,
            file,
            0,
            (index, time_index),
            index_interval_bytes,
        ))
    }

    /// A segment over its opened files, its next offset still to be learned (the base).
    fn assemble(
        base_offset: i64,
        path: PathBuf,
        file: File,
        len_bytes: u64,
        (index, time_index): (OffsetIndex, TimeIndex),
        index_interval_bytes: u64,
    ) -> LogSegment {
        LogSegment {
            base_offset,
            path,
            file: Arc::new(file),
            len_bytes,
            next_offset: base_offset,
            index,
            time_index,
            index_interval_bytes,
            bytes_since_index_entry: 0,
            max_timestamp_ms: OnceLock::new(),
        }
    }

    /// Opens segment `base_offset` in `dir`, trusting its first `checkpoint_bytes` and
    /// recovering the rest (see the module docs).
    pub fn open(
        dir: &Path,
        base_offset: i64,
        checkpoint_bytes: u64,
        index_interval_bytes: u64,
    ) -> Result<(LogSegment, Recovered), SegmentError> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open segment", &path))?;
        let file_len = file
            .metadata()
            .map_err(io_err("cannot stat segment", &path))?
            .len();
        let trusted = checkpoint_bytes.min(file_len);
        let index_path = dir.join(file_name(base_offset, "index"));
        let index = OffsetIndex::open(&index_path, trusted)
            .map_err(io_err("cannot open index", &index_path))?;
        let time_path = dir.join(file_name(base_offset, "timeindex"));
        let time_index = TimeIndex::open(&time_path, u64::MAX)
            .map_err(io_err("cannot open index", &time_path))?;
        let mut segment = LogSegment::assemble(
            base_offset,
            path,
            file,
            file_len,
            (index, time_index),
            index_interval_bytes,
        );
        // Below the checkpoint: headers only, from the last index entry, to learn the next
        // offset (and index what a lost or short index missed).
        let mut position = segment.index.last().map_or(0, |e| u64::from(e.position));
        while position < trusted {
            let header = segment
                .header_at(position)?
                .ok_or_else(|| SegmentError::Corrupt {
                    path: segment.path.clone(),
                    position,
                    why: "the file ends inside a batch header".into(),
                })?;
            if header.base_offset < segment.next_offset {
                return Err(SegmentError::Corrupt {
                    path: segment.path.clone(),
                    position,
                    why: format!(
                        "base offset {} after offset {} below the checkpoint",
                        header.base_offset, segment.next_offset
                    ),
                });
            }
            if position + header.total_len() as u64 > trusted {
                return Err(SegmentError::Corrupt {
                    path: segment.path.clone(),
                    position,
                    why: format!(
                        "a batch of {} bytes crosses the checkpoint {trusted}",
                        header.total_len()
                    ),
                });
            }
            segment.maybe_index(&header, position)?;
            segment.next_offset = header.last_offset() + 1;
            position += header.total_len() as u64;
        }
        // Past it: every batch whole and checked, or the tail goes.
        let mut checked = 0;
        let mut epoch_starts: Vec<(i32, i64)> = Vec::new();
        loop {
            match segment.checked_batch_at(position, file_len) {
                Ok(Some(header)) => {
                    if epoch_starts
                        .last()
                        .is_none_or(|&(e, _)| e != header.partition_leader_epoch)
                    {
                        epoch_starts.push((header.partition_leader_epoch, header.base_offset));
                    }
                    segment.maybe_index(&header, position)?;
                    segment.next_offset = header.last_offset() + 1;
                    position += header.total_len() as u64;
                    checked += 1;
                }
                Ok(None) => break,
                Err(why) => {
                    tracing::warn!(segment = %segment.path.display(), position, file_len,
                        "cutting a torn or corrupt tail off a segment: {why}");
                    break;
                }
            }
        }
        let truncated_bytes = file_len - position;
        if truncated_bytes > 0 {
            segment.cut_at(position)?;
        }
        // Entries at or past the end go, durably, before anything is appended there.
        let relative_end = (segment.next_offset - segment.base_offset) as u64;
        let before = segment.time_index.len();
        segment
            .time_index
            .truncate_to(relative_end)
            .map_err(io_err("cannot truncate index", &segment.path))?;
        if segment.time_index.len() != before {
            segment
                .time_index
                .sync()
                .map_err(io_err("cannot sync index", &segment.path))?;
        }
        Ok((
            segment,
            Recovered {
                valid_bytes: position,
                truncated_bytes,
                batches_checked: checked,
                epoch_starts,
            },
        ))
    }

    /// Appends one whole batch (checked; its base offset at or past [`next_offset`]). Not
    /// durable until [`sync`](Self::sync).
    ///
    /// [`next_offset`]: Self::next_offset
    pub fn append(&mut self, batch: &[u8]) -> Result<(), SegmentError> {
        let header = batch_v2::check(batch)?;
        if header.base_offset < self.next_offset {
            return Err(SegmentError::OffsetBehind {
                given: header.base_offset,
                next: self.next_offset,
            });
        }
        let relative_last = header.last_offset() - self.base_offset;
        if self.len_bytes + batch.len() as u64 > SEGMENT_BYTES_LIMIT
            || relative_last > i64::from(u32::MAX)
        {
            return Err(SegmentError::Full {
                path: self.path.clone(),
            });
        }
        let position = self.len_bytes;
        self.file
            .write_all_at(batch, position)
            .map_err(io_err("cannot write segment", &self.path))?;
        self.maybe_index(&header, position)?;
        self.len_bytes += batch.len() as u64;
        self.next_offset = header.last_offset() + 1;
        self.max_timestamp_ms = OnceLock::new();
        Ok(())
    }

    /// Whether a batch of `len_bytes` ending at `last_offset` still fits (bytes and the
    /// index's 32-bit relative offsets).
    pub fn fits(&self, len_bytes: u64, last_offset: i64) -> bool {
        self.len_bytes + len_bytes <= SEGMENT_BYTES_LIMIT
            && last_offset - self.base_offset <= i64::from(u32::MAX)
    }

    /// The file, for a group commit to `fdatasync` without holding the log (the index is
    /// derived data: open rebuilds what a lost index misses, see [`index`]).
    pub fn file_handle(&self) -> Arc<File> {
        self.file.clone()
    }

    /// The batch boundary at or below `offset`: (the base offset of the batch holding
    /// `offset`, its byte position), or (next offset, length) at or past the end.
    pub fn boundary_at_or_below(&self, offset: i64) -> Result<(i64, u64), SegmentError> {
        if offset >= self.next_offset {
            return Ok((self.next_offset, self.len_bytes));
        }
        let relative = (offset.max(self.base_offset) - self.base_offset) as u32;
        let (mut base, mut position) =
            self.index
                .floor(relative)
                .map_or((self.base_offset, 0), |e| {
                    (
                        self.base_offset + i64::from(e.relative_offset),
                        u64::from(e.position),
                    )
                });
        while position < self.len_bytes {
            let header = self
                .header_at(position)?
                .ok_or_else(|| self.corrupt(position))?;
            if header.last_offset() >= offset {
                return Ok((header.base_offset, position));
            }
            base = header.last_offset() + 1;
            position += header.total_len() as u64;
        }
        Ok((base, position))
    }

    /// The largest max timestamp of its batches (`i64::MIN` when empty): one scan of the
    /// headers, remembered until the segment changes (retention asks only of sealed segments).
    pub fn max_timestamp_ms(&self) -> Result<i64, SegmentError> {
        if let Some(&t) = self.max_timestamp_ms.get() {
            return Ok(t);
        }
        let mut max = i64::MIN;
        let mut position = 0;
        while position < self.len_bytes {
            let header = self
                .header_at(position)?
                .ok_or_else(|| self.corrupt(position))?;
            max = max.max(header.max_timestamp);
            position += header.total_len() as u64;
        }
        Ok(*self.max_timestamp_ms.get_or_init(|| max))
    }

    /// Removes the segment's files (it was already detached from its log).
    pub fn delete_files(self) -> Result<(), SegmentError> {
        let index = self.path.with_extension("index");
        let time_index = self.path.with_extension("timeindex");
        for path in [self.path, index, time_index] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SegmentError::Io {
                        what: "cannot delete",
                        path,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Adds an index entry for the batch at `position` once enough bytes went by without one.
    fn maybe_index(&mut self, header: &BatchHeaderV2, position: u64) -> Result<(), SegmentError> {
        let due = self.bytes_since_index_entry >= self.index_interval_bytes;
        self.time_index
            .on_append(
                (header.base_offset - self.base_offset) as u32,
                header.max_timestamp,
                due,
            )
            .map_err(io_err("cannot write index", &self.path))?;
        if due {
            let entry = IndexEntry {
                relative_offset: (header.base_offset - self.base_offset) as u32,
                position: position as u32,
            };
            self.index
                .append(entry)
                .map_err(io_err("cannot write index", &self.path))?;
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_len() as u64;
        Ok(())
    }

    /// `fdatasync` of the segment, then of its index: every append before it is durable.
    pub fn sync(&self) -> Result<(), SegmentError> {
        self.file
            .sync_data()
            .map_err(io_err("cannot sync segment", &self.path))?;
        self.index
            .sync()
            .map_err(io_err("cannot sync index", &self.path))?;
        self.time_index
            .sync()
            .map_err(io_err("cannot sync index", &self.path))
    }

    /// Where a search for the first record at or after `target_ms` may start: nothing before
    /// this offset has a timestamp that recent (see [`time_index`]).
    pub fn time_search_start(&self, target_ms: i64) -> i64 {
        self.base_offset + i64::from(self.time_index.search_start(target_ms))
    }

    /// Whole batches from the one holding `offset` on, as stored: at most `max_bytes`, but at
    /// least that one batch. `None` if `offset` is at or past [`next_offset`](Self::next_offset).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, SegmentError> {
        self.plan_read(offset)?
            .map(|plan| plan.read(max_bytes))
            .transpose()
    }

    /// Where a read of `offset` starts (the batch holding it, found from the index and a few
    /// header reads) and ends (the segment's length now). The plan reads without the segment:
    /// callers make it under the partition's lock and read after releasing it.
    pub fn plan_read(&self, offset: i64) -> Result<Option<ReadPlan>, SegmentError> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = (offset.max(self.base_offset) - self.base_offset) as u32;
        let mut position = self
            .index
            .floor(relative)
            .map_or(0, |e| u64::from(e.position));
        // The batch holding `offset`.
        let start = loop {
            let header = self
                .header_at(position)?
                .ok_or_else(|| self.corrupt(position))?;
            if header.last_offset() >= offset {
                break position;
            }
            position += header.total_len() as u64;
        };
        Ok(Some(ReadPlan {
            file: self.file.clone(),
            path: self.path.clone(),
            start,
            end: self.len_bytes,
        }))
    }

    /// Removes every batch whose last offset is at or past `offset` (whole batches: the
    /// batch holding `offset` goes entirely) and syncs the cut. Returns the new next offset.
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64, SegmentError> {
        if offset >= self.next_offset {
            return Ok(self.next_offset);
        }
        let relative = (offset.max(self.base_offset) - self.base_offset) as u32;
        let mut position = self
            .index
            .floor(relative)
            .map_or(0, |e| u64::from(e.position));
        let mut next = self.index.floor(relative).map_or(self.base_offset, |e| {
            self.base_offset + i64::from(e.relative_offset)
        });
        while position < self.len_bytes {
            let header = self
                .header_at(position)?
                .ok_or_else(|| self.corrupt(position))?;
            if header.last_offset() >= offset {
                break;
            }
            next = header.last_offset() + 1;
            position += header.total_len() as u64;
        }
        // The time index first: an entry past the cut that outlived a crash could vouch for
        // records written there later (cut_at syncs it with the rest).
        self.time_index
            .truncate_to((next - self.base_offset) as u64)
            .map_err(io_err("cannot truncate index", &self.path))?;
        self.cut_at(position)?;
        self.next_offset = next;
        Ok(next)
    }

    /// Shortens the file (and the index) to `position`, durably.
    fn cut_at(&mut self, position: u64) -> Result<(), SegmentError> {
        self.file
            .set_len(position)
            .map_err(io_err("cannot truncate segment", &self.path))?;
        self.index
            .truncate_to_position(position)
            .map_err(io_err("cannot truncate index", &self.path))?;
        self.len_bytes = position;
        self.bytes_since_index_entry = self.index_interval_bytes;
        self.max_timestamp_ms = OnceLock::new();
        self.sync()
    }

    /// The header of the batch at `position`, or `None` if fewer than a header's bytes remain.
    fn header_at(&self, position: u64) -> Result<Option<BatchHeaderV2>, SegmentError> {
        if position + HEADER_LEN as u64 > self.len_bytes {
            return Ok(None);
        }
        let mut raw = [0u8; HEADER_LEN];
        self.file
            .read_exact_at(&mut raw, position)
            .map_err(io_err("cannot read segment", &self.path))?;
        batch_v2::peek_header(&raw)
            .map(Some)
            .map_err(|e| SegmentError::Corrupt {
                path: self.path.clone(),
                position,
                why: e.to_string(),
            })
    }

    /// The whole, checked batch at `position` within `file_len`: `Ok(None)` at the end,
    /// `Err(why)` for a torn or corrupt batch or an offset that goes back.
    fn checked_batch_at(
        &self,
        position: u64,
        file_len: u64,
    ) -> Result<Option<BatchHeaderV2>, String> {
        if position == file_len {
            return Ok(None);
        }
        if position + HEADER_LEN as u64 > file_len {
            return Err(format!("{} bytes: a torn header", file_len - position));
        }
        let mut raw = [0u8; HEADER_LEN];
        self.file
            .read_exact_at(&mut raw, position)
            .map_err(|e| e.to_string())?;
        let header = batch_v2::peek_header(&raw).map_err(|e| e.to_string())?;
        if position + header.total_len() as u64 > file_len {
            return Err(format!(
                "a batch of {} bytes with {} left: torn",
                header.total_len(),
                file_len - position
            ));
        }
        let mut batch = vec![0u8; header.total_len()];
        self.file
            .read_exact_at(&mut batch, position)
            .map_err(|e| e.to_string())?;
        batch_v2::check(&batch).map_err(|e| e.to_string())?;
        if header.base_offset < self.next_offset {
            return Err(format!(
                "base offset {} after offset {}",
                header.base_offset, self.next_offset
            ));
        }
        Ok(Some(header))
    }

    fn corrupt(&self, position: u64) -> SegmentError {
        SegmentError::Corrupt {
            path: self.path.clone(),
            position,
            why: "the file ends inside a batch header".into(),
        }
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The offset after the last record appended (the base offset while empty).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Bytes in the file.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Entries in the offset index.
    pub fn index_entries(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests;
