//! [`PartitionLog`]: one partition's log of record batches in segment files
//! ([`super::segment::segmented::SegmentedLog`]), with its offsets, high watermark, recovery
//! checkpoint and leader-epoch history (kept in sled, see [`super::meta`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::batch::{
    BatchError, BatchHeader, NO_TIMESTAMP, Record, RecordBatch, split_into_batches,
};
use super::batch_v2;
use super::epochs::{EpochEntry, EpochHistory};
use super::error::LogError;
use super::meta::PartitionMeta;
use super::segment::SegmentError;
use super::segment::segmented::{SegmentedConfig, SegmentedLog};
use super::store::{PartitionId, StoreShared};

/// Where a read stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Consumers: only committed data, below the high watermark.
    HighWatermark,
    /// Replicas: everything, up to the log end offset.
    LogEnd,
}

/// What an append as leader wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// The offset of the first record appended.
    pub base_offset: u64,
    /// The offset of the last record appended.
    pub last_offset: u64,
    /// How many batches (stored values) the records were split into.
    pub batches: usize,
}

/// A stored batch as read, its CRC already verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub header: BatchHeader,
    /// The whole encoded batch ([`super::batch`] format), ready to send or append to a replica.
    pub bytes: Bytes,
}

impl EncodedBatch {
    pub fn decode(&self) -> Result<RecordBatch, BatchError> {
        RecordBatch::decode(self.bytes.clone())
    }
}

/// The offsets of a partition at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub high_watermark: u64,
    /// Encoded bytes of the stored batches.
    pub size_bytes: u64,
}

pub(super) struct State {
    /// The segments; `None` once the partition is deleted.
    pub log: Option<SegmentedLog>,
    pub log_start: u64,
    pub log_end: u64,
    pub high_watermark: u64,
    /// The recovery checkpoint last recorded: every batch below it is durable here.
    pub checkpoint: Checkpointed,
    pub epochs: EpochHistory,
    pub deleted: bool,
    /// When the active segment took its first append in this process (time-based roll).
    pub active_since_ms: Option<i64>,
    /// The store's ticket of the last batch written (0: none in this process).
    pub last_write: u64,
}

/// A recovery checkpoint as recorded in the metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Checkpointed {
    pub segment: u64,
    pub bytes: u64,
    pub offset: u64,
}

impl State {
    pub fn meta(&self) -> PartitionMeta {
        PartitionMeta {
            log_start_offset: self.log_start,
            high_watermark: self.high_watermark,
            checkpoint_segment: self.checkpoint.segment,
            checkpoint_bytes: self.checkpoint.bytes,
            checkpoint_offset: self.checkpoint.offset,
            epochs: self.epochs.clone(),
        }
    }

    /// The segments (callers checked `deleted` first, see [`PartitionLog::lock_live`]).
    pub fn segments(&self) -> &SegmentedLog {
        self.log.as_ref().expect("a live partition has segments")
    }

    pub fn segments_mut(&mut self) -> &mut SegmentedLog {
        self.log.as_mut().expect("a live partition has segments")
    }
}

/// One partition's log. Obtain it from [`super::LogStore::partition`]; share the `Arc`.
///
/// # To ensure correctness
/// - Offsets are dense: the log holds exactly `log_start_offset..log_end_offset`, batch after
///   batch with no gap; a leader append takes the next offsets, a replica append must start at
///   the log end offset. Offsets below the high watermark never change (only retention removes
///   them, whole segments from the start).
/// - `log_start_offset <= high_watermark <= log_end_offset`. The high watermark never moves
///   back; truncation only removes offsets at or above it.
/// - Reads bounded by [`ReadBound::HighWatermark`] return only whole batches ending at or below
///   the high watermark: a batch that straddles it is held back until the high watermark passes
///   its end (in Kafka the high watermark always falls on a batch boundary anyway).
/// - Every batch is CRC-checked when read; a bad one is reported as [`LogError::Corrupt`] with
///   the partition and its offset, never served.
/// - Writes are durable only after [`PartitionLog::sync`] (the store's group commit).
/// - The recovery checkpoint is recorded only at the high watermark (durable here) or lower,
///   and truncation never goes below the high watermark, so the bytes a later open trusts
///   without reading them are never rewritten.
/// - Persisted: the segments (which define the log end offset) and the metadata (log start,
///   high watermark, checkpoint, epoch history). Multi-step changes are ordered so that
///   [`PartitionLog::open`] can finish or repair any crash in between: retention moves the log
///   start before deleting files (open takes the larger of the two starts); a reset creates
///   its new segment before deleting the old ones (open finishes a reset it finds by the gap);
///   a new epoch is recorded before its first batch (open drops epochs starting past the log
///   end and re-derives epochs of batches written past the checkpoint).
pub struct PartitionLog {
    pub(super) id: PartitionId,
    /// The key of the partition's metadata.
    pub(super) name: String,
    pub(super) store: Arc<StoreShared>,
    pub(super) state: Mutex<State>,
    /// How many batches the last open read (tests: start-up must not grow with the log).
    #[cfg(test)]
    pub(super) batches_read_at_open: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("id", &self.id)
            .field("offsets", &self.offsets())
            .finish_non_exhaustive()
    }
}

impl PartitionLog {
    /// Opens the partition's segments and metadata (creating them empty), recovers the tail
    /// past the checkpoint (see [`super::recovery`]), and syncs what it found.
    pub(super) fn open(store: Arc<StoreShared>, id: PartitionId) -> Result<PartitionLog, LogError> {
        store.check_usable()?;
        let log = PartitionLog {
            name: id.meta_key(),
            id,
            store,
            state: Mutex::new(State {
                log: None,
                log_start: 0,
                log_end: 0,
                high_watermark: 0,
                checkpoint: Checkpointed::default(),
                epochs: EpochHistory::default(),
                deleted: false,
                active_since_ms: None,
                last_write: 0,
            }),
            #[cfg(test)]
            batches_read_at_open: Default::default(),
        };
        log.recover()?;
        Ok(log)
    }

    pub fn id(&self) -> &PartitionId {
        &self.id
    }

    pub(super) fn segmented_config(&self) -> SegmentedConfig {
        SegmentedConfig {
            segment_bytes_max: self.store.cfg.segment_bytes_max,
            index_interval_bytes: self.store.cfg.index_interval_bytes,
        }
    }

    /// Appends `records` as the leader in `leader_epoch`: they get the next offsets, in order,
    /// split into batches ([`split_into_batches`] with the store's [`super::LogConfig`]), each
    /// encoded once as a RecordBatch v2 and written to the active segment.
    /// Records without a timestamp ([`NO_TIMESTAMP`]) get `now_ms`. Durable after
    /// [`PartitionLog::sync`].
    ///
    /// Errors: [`LogError::InvalidBatch`] (no records, or one larger than `max_record_bytes`:
    /// nothing is written), [`LogError::StaleLeaderEpoch`] if the log already has a newer epoch.
    pub fn append_as_leader(
        &self,
        mut records: Vec<Record>,
        leader_epoch: u64,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        if records.is_empty() {
            return Err(BatchError::Empty.into());
        }
        let cfg = self.store.cfg;
        for r in &mut records {
            if r.timestamp_ms == NO_TIMESTAMP {
                r.timestamp_ms = now_ms;
            }
        }
        let count = records.len() as u64;
        let groups = split_into_batches(records, cfg.max_batch_bytes, cfg.max_record_bytes)?;

        let mut state = self.lock_writable()?;
        if let Some(latest) = state.epochs.latest_epoch()
            && leader_epoch < latest
        {
            return Err(LogError::StaleLeaderEpoch {
                epoch: leader_epoch,
                latest,
            });
        }
        let base_offset = state.log_end;
        if base_offset.checked_add(count).is_none() || base_offset + count > i64::MAX as u64 {
            return Err(BatchError::TooLarge("the offsets would overflow".into()).into());
        }
        // Encode everything before writing anything: an encoding error writes nothing.
        let mut encoded = Vec::with_capacity(groups.len());
        let mut offset = base_offset;
        for records in groups {
            let batch = RecordBatch {
                base_offset: offset,
                leader_epoch,
                records,
            };
            offset = batch.next_offset();
            encoded.push(batch.encode()?);
        }
        let batches = encoded.len();
        self.record_epoch(&mut state, leader_epoch, base_offset)?;
        self.maybe_roll_by_time(&mut state, now_ms)?;
        for batch in &encoded {
            self.write_batch(&mut state, batch)?;
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: offset - 1,
            batches,
        })
    }

    /// Rolls the active segment when it took its first append `segment_ms` ago or more
    /// (Kafka's `segment.ms`), so that time retention can delete it.
    fn maybe_roll_by_time(&self, state: &mut State, now_ms: i64) -> Result<(), LogError> {
        let segment_ms = self.store.cfg.segment_ms;
        match state.active_since_ms {
            Some(since) if segment_ms >= 0 && now_ms.saturating_sub(since) >= segment_ms => {
                state
                    .segments_mut()
                    .roll()
                    .map_err(self.store.segment_failed(&self.id))?;
                state.active_since_ms = Some(now_ms);
            }
            Some(_) => {}
            None => state.active_since_ms = Some(now_ms),
        }
        Ok(())
    }

    /// Writes one checked batch that starts at the log end to the active segment and counts
    /// it for the group commit.
    pub(super) fn write_batch(&self, state: &mut State, batch: &[u8]) -> Result<(), LogError> {
        let log = state.segments_mut();
        log.append(batch)
            .map_err(self.store.segment_failed(&self.id))?;
        let (file, _) = log.active_file();
        state.log_end = log.next_offset() as u64;
        state.last_write = self.store.note_write(&file);
        Ok(())
    }

    /// Appends a batch copied from the leader (it keeps its offsets and epoch). It must start at
    /// the log end offset ([`LogError::NotContiguous`]). The epoch history follows the batch's
    /// epoch as Kafka's does.
    pub fn append_replica(&self, batch: &RecordBatch) -> Result<(), LogError> {
        let encoded = batch.encode()?;
        self.append_replica_checked(BatchHeader::read(&encoded)?, &encoded)
    }

    /// [`PartitionLog::append_replica`] of an encoded batch (as [`PartitionLog::read_encoded`]
    /// returns), stored as is after its CRC and header are checked ([`LogError::InvalidBatch`]
    /// if they fail). The records are not decoded: the CRC covers them.
    pub fn append_replica_encoded(&self, encoded: &[u8]) -> Result<(), LogError> {
        let header = BatchHeader::read_verified(encoded)?;
        self.append_replica_checked(header, encoded)
    }

    fn append_replica_checked(&self, header: BatchHeader, encoded: &[u8]) -> Result<(), LogError> {
        let mut state = self.lock_writable()?;
        if header.base_offset != state.log_end {
            return Err(LogError::NotContiguous {
                base_offset: header.base_offset,
                log_end_offset: state.log_end,
            });
        }
        self.record_epoch(&mut state, header.leader_epoch, header.base_offset)?;
        let now_ms = now_ms();
        self.maybe_roll_by_time(&mut state, now_ms)?;
        self.write_batch(&mut state, encoded)
    }

    /// Records, before the batch that starts it is written, that `epoch` writes from `start`.
    fn record_epoch(&self, state: &mut State, epoch: u64, start: u64) -> Result<(), LogError> {
        if let Some(last) = state.epochs.entries().last()
            && last.epoch == epoch
            && last.start_offset <= start
        {
            return Ok(()); // The common case: same epoch, nothing to record.
        }
        let mut epochs = state.epochs.clone();
        if epochs.assign(epoch, start) {
            if let Some(latest) = state.epochs.latest_epoch()
                && epoch < latest
            {
                tracing::warn!(topic = %self.id.topic, partition = self.id.partition, epoch, latest,
                    start, "a replicated batch has an older epoch than the history; dropping newer epochs");
            }
            let meta = PartitionMeta {
                epochs: epochs.clone(),
                ..state.meta()
            };
            self.write_meta(&meta)?;
            state.epochs = epochs;
        }
        Ok(())
    }

    /// A new leader records that `epoch` starts at the log end offset, so that followers asking
    /// where the previous epoch ends get an answer before the first append. Refuses an epoch
    /// older than the latest ([`LogError::StaleLeaderEpoch`]); the latest epoch is a no-op.
    pub fn assign_leader_epoch(&self, epoch: u64) -> Result<(), LogError> {
        let mut state = self.lock_writable()?;
        if let Some(latest) = state.epochs.latest_epoch()
            && epoch < latest
        {
            return Err(LogError::StaleLeaderEpoch { epoch, latest });
        }
        let log_end = state.log_end;
        self.record_epoch(&mut state, epoch, log_end)
    }

    /// Reads whole batches from the one holding `from_offset` (which the caller skips into),
    /// up to `bound`, stopping before `max_bytes` would be exceeded but returning at least one
    /// batch when any is available. Empty when `from_offset` is at or past the bound (but not
    /// past the log end). CRCs are checked; keys and values are decoded. A corrupt batch ends a
    /// read before it; a read starting in it fails.
    ///
    /// Errors: [`LogError::OffsetOutOfRange`] below the log start or above the log end offset;
    /// [`LogError::Corrupt`] for a bad batch.
    pub fn read(
        &self,
        from_offset: u64,
        max_bytes: usize,
        bound: ReadBound,
    ) -> Result<Vec<RecordBatch>, LogError> {
        self.read_encoded(from_offset, max_bytes, bound)?
            .into_iter()
            .map(|b| {
                b.decode()
                    .map_err(|e| self.corrupt(Some(b.header.base_offset), e.to_string()))
            })
            .collect()
    }

    /// [`PartitionLog::read`] without decoding: the stored bytes of each batch, CRC-checked,
    /// sharing one buffer read from one segment (a read never crosses into the next segment;
    /// the caller's next read continues there). Only finding where to read holds the
    /// partition's lock; the `pread` itself happens after it is released.
    pub fn read_encoded(
        &self,
        from_offset: u64,
        max_bytes: usize,
        bound: ReadBound,
    ) -> Result<Vec<EncodedBatch>, LogError> {
        let state = self.lock_live()?;
        let upper = match bound {
            ReadBound::HighWatermark => state.high_watermark,
            ReadBound::LogEnd => state.log_end,
        };
        if from_offset < state.log_start || from_offset > state.log_end {
            return Err(self.out_of_range(from_offset, state.log_start, state.log_end));
        }
        if from_offset >= upper {
            return Ok(Vec::new());
        }
        let Some(plan) = state
            .segments()
            .plan_read(from_offset as i64)
            .map_err(|e| super::store::segment_error(&self.id, e))?
        else {
            return Err(self.corrupt(
                Some(from_offset),
                format!(
                    "no segment holds offset {from_offset}, below the log end {}",
                    state.log_end
                ),
            ));
        };
        // The data is read without the lock: appends and other reads do not wait for it.
        drop(state);
        let bytes = plan
            .read(max_bytes)
            .map_err(|e| super::store::segment_error(&self.id, e))?;
        let mut out = Vec::new();
        let mut at = 0;
        let mut expected: Option<u64> = None;
        while at < bytes.len() {
            let v2 = batch_v2::peek_header(&bytes[at..])
                .map_err(|e| self.corrupt(expected, e.to_string()))?;
            let end = at + v2.total_len();
            if end > bytes.len() {
                return Err(self.corrupt(
                    Some(v2.base_offset.max(0) as u64),
                    "a batch runs past what its segment holds".into(),
                ));
            }
            let slice = bytes.slice(at..end);
            let header = match BatchHeader::read_verified(&slice) {
                Ok(h) => h,
                // Serve the good batches before a bad one; a read from it reports it.
                Err(_) if !out.is_empty() => break,
                Err(e) => {
                    return Err(self.corrupt(Some(v2.base_offset.max(0) as u64), e.to_string()));
                }
            };
            if expected.is_some_and(|e| e != header.base_offset) {
                return Err(self.corrupt(
                    Some(header.base_offset),
                    format!(
                        "the batch at {} follows one ending at {}: a gap",
                        header.base_offset,
                        expected.unwrap_or_default()
                    ),
                ));
            }
            if header.next_offset() > upper {
                break;
            }
            expected = Some(header.next_offset());
            out.push(EncodedBatch {
                header,
                bytes: slice,
            });
            at = end;
        }
        if let Some(first) = out.first()
            && !first.header.contains(from_offset)
        {
            return Err(self.corrupt(
                Some(first.header.base_offset),
                format!(
                    "a read at {from_offset} found the batch at {}",
                    first.header.base_offset
                ),
            ));
        }
        Ok(out)
    }

    /// Moves the high watermark up to `high_watermark` (a lower value is ignored: it never
    /// moves back) and the recovery checkpoint with it: everything below the high watermark is
    /// durable here, so a later open trusts it without reading it. Returns the high watermark
    /// now. Cheap: an index lookup and a header read or two.
    /// Errors: [`LogError::HighWatermarkAboveLogEnd`] past the log end offset.
    pub fn set_high_watermark(&self, high_watermark: u64) -> Result<u64, LogError> {
        let mut state = self.lock_writable()?;
        if high_watermark > state.log_end {
            return Err(LogError::HighWatermarkAboveLogEnd {
                high_watermark,
                log_end_offset: state.log_end,
            });
        }
        if high_watermark > state.high_watermark {
            let checkpoint = self.checkpoint_at(&state, high_watermark)?;
            let meta = PartitionMeta {
                high_watermark,
                checkpoint_segment: checkpoint.segment,
                checkpoint_bytes: checkpoint.bytes,
                checkpoint_offset: checkpoint.offset,
                ..state.meta()
            };
            self.write_meta(&meta)?;
            state.high_watermark = high_watermark;
            state.checkpoint = checkpoint;
        }
        Ok(state.high_watermark)
    }

    /// The checkpoint at the batch boundary at or below `offset`.
    pub(super) fn checkpoint_at(
        &self,
        state: &State,
        offset: u64,
    ) -> Result<Checkpointed, LogError> {
        let (cp, boundary) = state
            .segments()
            .checkpoint_at(offset as i64)
            .map_err(|e| super::store::segment_error(&self.id, e))?;
        Ok(Checkpointed {
            segment: cp.segment_base as u64,
            bytes: cp.bytes,
            offset: boundary as u64,
        })
    }

    /// The first offset written in `epoch`, if the history has it.
    pub fn leader_epoch_start_offset(&self, epoch: u64) -> Option<u64> {
        self.lock().epochs.start_offset_of(epoch)
    }

    /// OffsetsForLeaderEpoch: `(epoch, end offset)` for `requested` (see
    /// [`EpochHistory::end_offset_for`]); `None` when unknown (empty history or a newer epoch).
    pub fn end_offset_for_epoch(&self, requested: u64) -> Option<(u64, u64)> {
        let state = self.lock();
        state.epochs.end_offset_for(requested, state.log_end)
    }

    /// The newest leader epoch in the log's history.
    pub fn latest_leader_epoch(&self) -> Option<u64> {
        self.lock().epochs.latest_epoch()
    }

    /// The leader-epoch history, oldest first.
    pub fn leader_epochs(&self) -> Vec<EpochEntry> {
        self.lock().epochs.entries().to_vec()
    }

    /// Makes every write so far durable (the store's group commit, shared with all partitions).
    pub fn sync(&self) -> Result<(), LogError> {
        self.store.sync()
    }

    /// Whether everything this log wrote is durable (a sync covered its last write), so its
    /// log end may be reported as durable. Segment cuts and new segments are synced where
    /// they happen; batches written wait for the group commit.
    pub fn is_durable(&self) -> bool {
        let last_write = self.lock().last_write;
        self.store.is_synced(last_write)
    }

    pub fn log_start_offset(&self) -> u64 {
        self.lock().log_start
    }

    pub fn log_end_offset(&self) -> u64 {
        self.lock().log_end
    }

    pub fn high_watermark(&self) -> u64 {
        self.lock().high_watermark
    }

    /// Bytes of the segment files.
    pub fn size_bytes(&self) -> u64 {
        self.lock().log.as_ref().map_or(0, SegmentedLog::size_bytes)
    }

    /// The segments, oldest first, as (base offset, bytes).
    pub fn segments(&self) -> Vec<(u64, u64)> {
        self.lock().log.as_ref().map_or(Vec::new(), |l| {
            l.segments()
                .into_iter()
                .map(|(b, n)| (b as u64, n))
                .collect()
        })
    }

    /// All offsets at one instant.
    pub fn offsets(&self) -> LogOffsets {
        let state = self.lock();
        LogOffsets {
            log_start_offset: state.log_start,
            log_end_offset: state.log_end,
            high_watermark: state.high_watermark,
            size_bytes: state.log.as_ref().map_or(0, SegmentedLog::size_bytes),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.lock().deleted
    }

    /// Removes the partition's data and metadata (topic deletion); every later call fails with
    /// [`LogError::Deleted`]. Durable when it returns.
    pub fn delete(&self) -> Result<(), LogError> {
        let mut state = self.lock();
        if state.deleted {
            return Ok(());
        }
        self.store.check_usable()?;
        state.deleted = true;
        state.log = None;
        Self::delete_stored(&self.store, &self.id)
    }

    /// Removes a partition's metadata, then its directory (a crash in between leaves a
    /// directory that [`super::LogStore::stored_partitions`] still lists).
    pub(super) fn delete_stored(store: &StoreShared, id: &PartitionId) -> Result<(), LogError> {
        store
            .meta
            .remove(id.meta_key().as_bytes())
            .map_err(store.write_failed())?;
        store.note_meta_write();
        store.sync_meta()?;
        let dir = store.partition_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(store.segment_failed(id)(SegmentError::Io {
                    what: "cannot delete",
                    path: dir,
                    source: e,
                }));
            }
        }
        if let Some(parent) = dir.parent() {
            super::segment::sync_dir(parent).map_err(store.segment_failed(id))?;
        }
        tracing::info!(topic = %id.topic, topic_id = id.topic_id, partition = id.partition,
            "deleted partition log");
        Ok(())
    }

    pub(super) fn write_meta(&self, meta: &PartitionMeta) -> Result<(), LogError> {
        let value = meta.encode(self.name.as_bytes());
        self.store
            .meta
            .insert(self.name.as_bytes(), value)
            .map_err(self.store.write_failed())?;
        self.store.note_meta_write();
        Ok(())
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, if the partition was not deleted.
    pub(super) fn lock_live(&self) -> Result<MutexGuard<'_, State>, LogError> {
        let state = self.lock();
        if state.deleted {
            return Err(LogError::Deleted {
                topic: self.id.topic.clone(),
                topic_id: self.id.topic_id,
                partition: self.id.partition,
            });
        }
        Ok(state)
    }

    /// The state, if the partition was not deleted and the store takes writes.
    pub(super) fn lock_writable(&self) -> Result<MutexGuard<'_, State>, LogError> {
        let state = self.lock_live()?;
        self.store.check_usable()?;
        Ok(state)
    }

    pub(super) fn corrupt(&self, offset: Option<u64>, detail: String) -> LogError {
        LogError::Corrupt {
            topic: self.id.topic.clone(),
            topic_id: self.id.topic_id,
            partition: self.id.partition,
            offset,
            detail,
        }
    }

    fn out_of_range(&self, offset: u64, log_start: u64, log_end: u64) -> LogError {
        LogError::OffsetOutOfRange {
            topic: self.id.topic.clone(),
            partition: self.id.partition,
            offset,
            log_start_offset: log_start,
            log_end_offset: log_end,
        }
    }

    pub(super) fn sled_error(&self) -> impl FnOnce(sled::Error) -> LogError + '_ {
        move |source| LogError::Sled {
            path: self.store.dir.clone(),
            source,
        }
    }
}

/// Milliseconds since the Unix epoch (the broker's one wall clock: record timestamps, segment
/// rolls by time).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
