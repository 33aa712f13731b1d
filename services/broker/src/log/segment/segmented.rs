//! A partition's log as a directory of segments (the storage half of Kafka's `UnifiedLog`):
//! appends go to the active (last) segment, which rolls at `segment_bytes_max`; reads cross
//! segments; truncation and retention remove whole files or a file's tail. The storage under
//! [`crate::log::PartitionLog`], which keeps the offsets, epochs and checkpoints in sled.
//!
//! # To ensure correctness
//! - [`SegmentedLog::sync`] makes every append before it durable: the active segment's file
//!   and index. A roll syncs the segment it seals first, and [`LogSegment::create`] syncs the
//!   new file and the directory, so no acknowledged byte can sit in a segment that a sync
//!   did not cover.
//! - At open, segments before the checkpoint's segment are trusted whole, the checkpoint's
//!   segment up to the checkpoint, and every later segment is CRC-checked in full; see
//!   [`LogSegment::open`].
//! - Segments are deleted oldest first and the active segment never; a deleted file is gone
//!   before the log start moves past it, and the directory is synced after.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{LogSegment, Recovered, SegmentError};

/// Where an earlier process last synced: the active segment's base and its length then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub segment_base: i64,
    pub bytes: u64,
}

/// Sizes a log keeps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentedConfig {
    /// A segment rolls before an append would take it past this (Kafka's `segment.bytes`).
    pub segment_bytes_max: u64,
    pub index_interval_bytes: u64,
}

impl Default for SegmentedConfig {
    /// 1 GiB segments and an index entry every 4 KiB, as Kafka's defaults.
    fn default() -> SegmentedConfig {
        SegmentedConfig {
            segment_bytes_max: 1 << 30,
            index_interval_bytes: super::DEFAULT_INDEX_INTERVAL_BYTES,
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct SegmentedLog {
    dir: PathBuf,
    cfg: SegmentedConfig,
    /// By base offset; never empty.
    segments: BTreeMap<i64, LogSegment>,
}

impl SegmentedLog {
    /// Opens the log in `dir` (created with one empty segment at `start_offset` if it holds
    /// none), recovering what lies past `checkpoint`. Returns what recovery found per segment
    /// it checked.
    pub fn open(
        dir: &Path,
        start_offset: i64,
        checkpoint: Checkpoint,
        cfg: SegmentedConfig,
    ) -> Result<(SegmentedLog, Vec<(i64, Recovered)>), SegmentError> {
        fs::create_dir_all(dir).map_err(|source| SegmentError::Io {
            what: "cannot create log directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let mut bases: Vec<i64> = fs::read_dir(dir)
            .map_err(|source| SegmentError::Io {
                what: "cannot list log directory",
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<i64>().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut recovered = Vec::new();
        for base in bases {
            let trusted = if base < checkpoint.segment_base {
                u64::MAX
            } else if base == checkpoint.segment_base {
                checkpoint.bytes
            } else {
                0
            };
            let (segment, r) = LogSegment::open(dir, base, trusted, cfg.index_interval_bytes)?;
            if trusted != u64::MAX {
                recovered.push((base, r));
            }
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            let segment = LogSegment::create(dir, start_offset, cfg.index_interval_bytes)?;
            segments.insert(start_offset, segment);
        }
        Ok((
            SegmentedLog {
                dir: dir.to_path_buf(),
                cfg,
                segments,
            },
            recovered,
        ))
    }

    fn active(&self) -> &LogSegment {
        self.segments.values().next_back().expect("never empty")
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments.values_mut().next_back().expect("never empty")
    }

    /// Appends one whole batch, rolling first if the active segment would pass its size (or
    /// the index's 32-bit relative offsets). Not durable until [`sync`](Self::sync).
    pub fn append(&mut self, batch: &[u8]) -> Result<(), SegmentError> {
        let header = super::batch_v2::peek_header(batch)?;
        let active = self.active();
        if active.len_bytes() > 0
            && (active.len_bytes() + batch.len() as u64 > self.cfg.segment_bytes_max
                || !active.fits(batch.len() as u64, header.last_offset()))
        {
            self.roll()?;
        }
        self.active_mut().append(batch)
    }

    /// Seals the active segment (synced) and starts a new one at the next offset; a no-op
    /// while the active segment is empty.
    pub fn roll(&mut self) -> Result<(), SegmentError> {
        let active = self.active();
        if active.len_bytes() == 0 {
            return Ok(());
        }
        let base = active.next_offset();
        active.sync()?;
        let segment = LogSegment::create(&self.dir, base, self.cfg.index_interval_bytes)?;
        self.segments.insert(base, segment);
        Ok(())
    }

    /// The active segment's file (for the group commit) and the checkpoint a sync of it now
    /// would make true.
    pub fn active_file(&self) -> (std::sync::Arc<fs::File>, Checkpoint) {
        let active = self.active();
        (
            active.file_handle(),
            Checkpoint {
                segment_base: active.base_offset(),
                bytes: active.len_bytes(),
            },
        )
    }

    /// The checkpoint at the batch boundary at or below `offset` (every batch before it is
    /// durable when the caller records it), and that boundary's offset.
    pub fn checkpoint_at(&self, offset: i64) -> Result<(Checkpoint, i64), SegmentError> {
        let segment = match self.segments.range(..=offset).next_back() {
            Some((_, s)) => s,
            None => self.segments.values().next().expect("never empty"),
        };
        let (boundary, bytes) = segment.boundary_at_or_below(offset)?;
        Ok((
            Checkpoint {
                segment_base: segment.base_offset(),
                bytes,
            },
            boundary,
        ))
    }

    /// The sealed segments (never the active one) as (base offset, next offset, bytes), oldest
    /// first, for retention to choose from.
    pub fn sealed(&self) -> Vec<(i64, i64, u64)> {
        let mut out = self.list();
        out.pop();
        out
    }

    /// Every segment, the active one last, as (base offset, next offset, bytes).
    pub fn list(&self) -> Vec<(i64, i64, u64)> {
        self.segments
            .values()
            .map(|s| (s.base_offset(), s.next_offset(), s.len_bytes()))
            .collect()
    }

    /// Where a search for the first record at or after `target_ms`, from `from` on, may start:
    /// the segment holding `from`'s time index rules out what lies before (see
    /// [`super::time_index`]).
    pub fn time_search_start(&self, from: i64, target_ms: i64) -> i64 {
        match self.segments.range(..=from).next_back() {
            Some((_, s)) => s.time_search_start(target_ms).max(from),
            None => from,
        }
    }

    /// The largest timestamp in segment `base` (see [`LogSegment::max_timestamp_ms`]).
    pub fn max_timestamp_ms(&self, base: i64) -> Result<Option<i64>, SegmentError> {
        self.segments
            .get(&base)
            .map(LogSegment::max_timestamp_ms)
            .transpose()
    }

    /// Takes the sealed segments that end at or below `offset` out of the log, oldest first;
    /// the caller deletes their files ([`LogSegment::delete_files`]) without holding the log,
    /// then [`sync_dir`](Self::sync_dir). Never the active segment.
    pub fn detach_before(&mut self, offset: i64) -> Vec<LogSegment> {
        let active = self.active().base_offset();
        let doomed: Vec<i64> = self
            .segments
            .values()
            .filter(|s| s.base_offset() != active && s.next_offset() <= offset)
            .map(LogSegment::base_offset)
            .collect();
        doomed
            .into_iter()
            .filter_map(|b| self.segments.remove(&b))
            .collect()
    }

    /// Empties the log and restarts it at `offset`: a new, synced segment there first (unless
    /// the active one is empty and already there), then every other segment is detached for
    /// the caller to delete. A crash in between leaves a gap before the new segment, which
    /// [`gap_start`](Self::gap_start) shows the next open.
    pub fn reset_to(&mut self, offset: i64) -> Result<Vec<LogSegment>, SegmentError> {
        let active = self.active();
        if !(active.base_offset() == offset && active.len_bytes() == 0) {
            if self.segments.contains_key(&offset) {
                // A segment file with that name exists (it holds data from `offset` on, which
                // the reset drops): cut it empty instead of creating a second one.
                let mut keep = self.segments.remove(&offset).expect("present");
                keep.truncate_to(offset)?;
                let mut detached: Vec<LogSegment> =
                    std::mem::take(&mut self.segments).into_values().collect();
                self.segments.insert(offset, keep);
                detached.retain(|s| s.base_offset() != offset);
                return Ok(detached);
            }
            let segment = LogSegment::create(&self.dir, offset, self.cfg.index_interval_bytes)?;
            self.segments.insert(offset, segment);
        }
        let doomed: Vec<i64> = self
            .segments
            .keys()
            .copied()
            .filter(|&b| b != offset)
            .collect();
        Ok(doomed
            .into_iter()
            .filter_map(|b| self.segments.remove(&b))
            .collect())
    }

    /// Where the last gap between two segments ends (the base of the segment after it), if
    /// there is one: a reset ([`reset_to`](Self::reset_to)) a crash interrupted; everything
    /// before that base is obsolete.
    pub fn gap_start(&self) -> Option<i64> {
        let mut gap = None;
        let mut prev_next: Option<i64> = None;
        for s in self.segments.values() {
            if let Some(next) = prev_next
                && s.base_offset() > next
            {
                gap = Some(s.base_offset());
            }
            prev_next = Some(s.next_offset());
        }
        gap
    }

    /// Syncs the directory (after segment files were deleted).
    pub fn sync_dir(&self) -> Result<(), SegmentError> {
        super::sync_dir(&self.dir)
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes every earlier append durable; returns the checkpoint to record for the next open.
    pub fn sync(&self) -> Result<Checkpoint, SegmentError> {
        let active = self.active();
        active.sync()?;
        Ok(Checkpoint {
            segment_base: active.base_offset(),
            bytes: active.len_bytes(),
        })
    }

    /// Whole stored batches from the one holding `offset`, within one segment, at most
    /// `max_bytes` (at least one batch); `None` at or past the end or below the log start.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, SegmentError> {
        self.plan_read(offset)?
            .map(|plan| plan.read(max_bytes))
            .transpose()
    }

    /// [`read`](Self::read)'s first half: which segment and where, without reading the data
    /// (see [`LogSegment::plan_read`]).
    pub fn plan_read(&self, offset: i64) -> Result<Option<super::ReadPlan>, SegmentError> {
        if offset < self.log_start_offset() {
            return Ok(None);
        }
        if let Some((_, segment)) = self.segments.range(..=offset).next_back()
            && offset < segment.next_offset()
        {
            return segment.plan_read(offset);
        }
        // `offset` falls in a gap before a later segment (or past the end).
        match self.segments.range(offset + 1..).next() {
            Some((_, next)) => next.plan_read(next.base_offset()),
            None => Ok(None),
        }
    }

    /// Removes every batch at or past `offset` (whole batches; whole segments where they all
    /// go, keeping at least one) and returns the new next offset. `offset` is at or above the
    /// log start (a follower truncates to what it and its leader agree on).
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64, SegmentError> {
        // Every segment starting past `offset` goes, but the first (one is always kept).
        let keep_from = offset.max(self.log_start_offset()) + 1;
        let doomed: Vec<i64> = self.segments.range(keep_from..).map(|(&b, _)| b).collect();
        for base in doomed.into_iter().rev() {
            self.delete_segment(base)?;
        }
        self.active_mut().truncate_to(offset)
    }

    /// Deletes whole segments that end at or below `offset` (retention, or a log start moved
    /// by a delete-records), never the active one. Returns the new log start offset.
    pub fn delete_segments_before(&mut self, offset: i64) -> Result<i64, SegmentError> {
        let detached = self.detach_before(offset);
        if !detached.is_empty() {
            for segment in detached {
                segment.delete_files()?;
            }
            self.sync_dir()?;
        }
        Ok(self.log_start_offset())
    }

    fn delete_segment(&mut self, base: i64) -> Result<(), SegmentError> {
        if let Some(segment) = self.segments.remove(&base) {
            segment.delete_files()?;
        }
        self.sync_dir()
    }

    /// The first offset the log may hold.
    pub fn log_start_offset(&self) -> i64 {
        *self.segments.keys().next().expect("never empty")
    }

    /// The offset after the last record.
    pub fn next_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Segments, oldest first, as (base offset, bytes).
    pub fn segments(&self) -> Vec<(i64, u64)> {
        self.segments
            .values()
            .map(|s| (s.base_offset(), s.len_bytes()))
            .collect()
    }

    /// Bytes over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(LogSegment::len_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::file_name;
    use super::*;
    use crate::log::batch_v2::{NewRecord, ProducerFields, encode};

    fn batch(base: i64, n: usize) -> Vec<u8> {
        let records: Vec<NewRecord> = (0..n)
            .map(|i| NewRecord {
                timestamp_ms: base + i as i64,
                key: None,
                value: Some(Bytes::from(vec![b'v'; 500])),
                headers: vec![],
            })
            .collect();
        encode(base, 0, ProducerFields::NONE, &records).unwrap()
    }

    fn cfg() -> SegmentedConfig {
        SegmentedConfig {
            segment_bytes_max: 16 * 1024,
            index_interval_bytes: 4096,
        }
    }

    /// 100 batches of 5 records: offsets 0..500 over several 16 KiB segments.
    fn filled(dir: &Path) -> SegmentedLog {
        let (mut log, _) = SegmentedLog::open(dir, 0, Checkpoint::default(), cfg()).unwrap();
        for b in 0..100 {
            log.append(&batch(b * 5, 5)).unwrap();
        }
        log
    }

    fn first_offset(bytes: &Bytes) -> i64 {
        crate::log::batch_v2::peek_header(bytes)
            .unwrap()
            .base_offset
    }

    #[test]
    fn appends_roll_at_the_size_and_reads_cross_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path());
        let segments = log.segments();
        assert!(segments.len() >= 10, "{segments:?}");
        assert!(segments.iter().all(|&(_, b)| b <= 16 * 1024));
        assert_eq!(log.next_offset(), 500);
        for offset in [0, 7, 123, 250, 499] {
            let got = log.read(offset, 1).unwrap().unwrap();
            assert_eq!(first_offset(&got), offset / 5 * 5, "read at {offset}");
        }
        assert_eq!(log.read(500, 1 << 20).unwrap(), None);
        // A read stays within one segment.
        let (second, _) = segments[1];
        let got = log.read(second - 1, 1 << 20).unwrap().unwrap();
        assert!((got.len() as u64) <= segments[0].1);
    }

    /// A read is planned under the partition's lock and done after it: the planned segment may
    /// be deleted or cut meanwhile, and the read still returns whole, real batches.
    #[test]
    fn a_planned_read_survives_deletion_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = filled(dir.path());
        let deleted = log.plan_read(3).unwrap().unwrap();
        let cut = log.plan_read(497).unwrap().unwrap();
        let second = log.segments()[1].0;
        log.delete_segments_before(second).unwrap();
        assert!(log.read(3, 1).unwrap().is_none(), "gone from the log");
        let got = deleted.read(1 << 20).unwrap();
        assert_eq!(first_offset(&got), 0, "the open file still holds it");
        log.truncate_to(490).unwrap();
        let got = cut.read(1 << 20).unwrap();
        assert!(got.is_empty(), "nothing past the cut: {} bytes", got.len());
        // Bytes read are whole batches, however small max_bytes is.
        let got = log.plan_read(second + 2).unwrap().unwrap().read(1).unwrap();
        crate::log::batch_v2::check(&got).unwrap();
    }

    #[test]
    fn recovery_checks_only_what_lies_past_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = filled(dir.path());
        let checkpoint = log.sync().unwrap();
        for b in 100..104 {
            log.append(&batch(b * 5, 5)).unwrap();
        }
        let (active, len) = *log.segments().last().unwrap();
        drop(log);
        // Power loss: the last append was half written.
        let path = dir.path().join(file_name(active, "log"));
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 300)
            .unwrap();
        let (log, recovered) = SegmentedLog::open(dir.path(), 0, checkpoint, cfg()).unwrap();
        let checked: u64 = recovered.iter().map(|(_, r)| r.batches_checked).sum();
        let cut: u64 = recovered.iter().map(|(_, r)| r.truncated_bytes).sum();
        assert!(checked <= 5, "{recovered:?}: only the tail is checked");
        assert!(cut > 0, "{recovered:?}");
        assert_eq!(log.next_offset(), 515, "the torn batch 515..520 is gone");
    }

    #[test]
    fn truncation_and_retention_remove_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = filled(dir.path());
        let before = log.segments();
        assert_eq!(log.truncate_to(252).unwrap(), 250);
        assert_eq!(log.next_offset(), 250);
        assert!(log.segments().len() < before.len());
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(
            files,
            3 * log.segments().len(),
            "a .log, an .index and a .timeindex per segment"
        );
        log.append(&batch(250, 5)).unwrap();
        let start = log.delete_segments_before(200).unwrap();
        assert!(start > 0 && start <= 200, "log start {start}");
        assert_eq!(log.read(start - 1, 1).unwrap(), None);
        assert_eq!(first_offset(&log.read(start, 1).unwrap().unwrap()), start);
        // Never the active segment.
        let active = log.segments().last().unwrap().0;
        assert_eq!(log.delete_segments_before(10_000).unwrap(), active);
        assert_eq!(log.next_offset(), 255);
        let reopened_start = {
            let checkpoint = log.sync().unwrap();
            drop(log);
            SegmentedLog::open(dir.path(), 0, checkpoint, cfg())
                .unwrap()
                .0
                .log_start_offset()
        };
        assert_eq!(reopened_start, active);
    }
}
