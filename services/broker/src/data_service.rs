//! The data-plane handlers of BrokerService: Produce, Fetch, ListOffsets, Consume and
//! ReplicaFetch (broker.proto, "Data plane"). Errors are [`DataError`]s, turned into statuses in
//! one place ([`crate::errors`]).
//!
//! - Produce: the leader checks the limits and appends (split into stored batches by the log).
//!   acks=NONE answers at once and appends in the background; acks=LEADER answers once the
//!   append is durable (group commit, [`Syncer`](crate::partitions::syncer::Syncer));
//!   acks=ALL (and UNSPECIFIED) first requires the ISR to have at least
//!   `min_insync_replicas` members (else NOT_ENOUGH_REPLICAS, nothing appended), then appends,
//!   syncs and waits until the high watermark passes the batch (bounded by `timeout_ms`).
//! - Fetch / Consume / ListOffsets: leaders only, committed records only (below the high
//!   watermark). An offset between the high watermark and the log end is valid and waits (a new
//!   leader's high watermark may briefly lag the old one's); below the log start or past the log
//!   end is OUT_OF_RANGE.
//! - ReplicaFetch: the leader checks the follower's epoch and log (KIP-320), records its
//!   durable log end (its acknowledgement), moves the high watermark, and returns raw batches
//!   from `fetch_offset` up to its own log end. A parked replica fetch is answered when new
//!   records arrive, or [`HW_NOTICE_DELAY`] after the high watermark moved with none: a
//!   producer that sends again within it gets records and watermark to the followers in one
//!   answer instead of two.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dmq_proto::v1 as pb;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::budget::Reservation;
use crate::config::DEFAULT_FETCH_BYTES;
use crate::errors::{DataError, LeaderHint};
use crate::log::{AppendInfo, LogError, OffsetSpec, ReadBound, Record};
use crate::metadata_cache::MetadataSnapshot;
use crate::partitions::follower::broker_address;
use crate::partitions::leader::{Leader, divergence};
use crate::partitions::manager::{now_ms, spawn_isr_change};
use crate::partitions::{Partition, Role};
use crate::state::Broker;
use crate::wire;

/// acks=ALL wait when the request says 0, and the most it may ask (broker.proto).
const PRODUCE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
const PRODUCE_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// Consume: responses queued ahead of a slow client, and bytes of records per response.
const CONSUME_QUEUE: usize = 4;
const CONSUME_MESSAGE_BYTES: usize = 1024 * 1024;

/// A queued Consume response and the share of the memory budget it holds.
type ConsumeItem = (Result<pb::ConsumeResponse, Status>, Option<Reservation>);

/// The stream Consume answers with.
pub(crate) type ConsumeStream =
    Pin<Box<dyn Stream<Item = Result<pb::ConsumeResponse, Status>> + Send>>;

/// A replica fetch at most this many records behind the log end reads on the handler's
/// thread: a few batches just written, in sled's cache (see `replica_fetch`).
const REPLICA_TAIL_INLINE_RECORDS: u64 = 32;

/// How long a parked replica fetch holds back an answer that would carry only a new high
/// watermark, waiting for records to send with it.
pub(crate) const HW_NOTICE_DELAY: Duration = Duration::from_millis(5);

/// How long a request for an unknown topic waits for fresher metadata before NOT_FOUND.
const METADATA_WAIT_MAX: Duration = Duration::from_secs(2);

/// The data plane of one broker.
#[derive(Clone)]
pub(crate) struct DataService {
    broker: Arc<Broker>,
}

fn partition_meta<'a>(
    snapshot: &'a MetadataSnapshot,
    topic: &str,
    partition: u32,
) -> Result<(&'a pb::TopicMetadata, &'a pb::PartitionMetadata), DataError> {
    let t = snapshot
        .topic(topic)
        .ok_or_else(|| DataError::UnknownTopic {
            topic: topic.to_string(),
        })?;
    let p = t
        .partitions
        .get(partition as usize)
        .ok_or_else(|| DataError::UnknownPartition {
            topic: topic.to_string(),
            partition,
            partitions: t.partitions.len(),
        })?;
    Ok((t, p))
}

fn blocking_error(e: tokio::task::JoinError) -> DataError {
    DataError::Storage(format!("a log task failed: {e}"))
}

impl DataService {
    pub(crate) fn new(broker: Arc<Broker>) -> DataService {
        DataService { broker }
    }

    /// Why this broker does not serve `topic`-`partition` as leader, from the current metadata.
    fn not_leading(&self, topic: &str, partition: u32) -> DataError {
        let snapshot = self.broker.metadata.get();
        let p = match partition_meta(&snapshot, topic, partition) {
            Ok((_, p)) => p,
            Err(e) => return e,
        };
        if p.leader == self.broker.id() && !self.broker.takes_appends() {
            // The lease ran out (the controllers may have fenced this broker), or the broker
            // is handing its leaderships over: the controllers elect the next ISR member
            // (their rule, in replica order). Name that one, one epoch on.
            let next = p
                .replicas
                .iter()
                .copied()
                .find(|&r| r != self.broker.id() && p.isr.contains(&r))
                .unwrap_or(0);
            let address = snapshot
                .broker(next)
                .map(broker_address)
                .unwrap_or_default();
            return DataError::NotLeader {
                topic: topic.to_string(),
                partition,
                leader: LeaderHint {
                    id: next,
                    address,
                    epoch: p.leader_epoch + 1,
                },
            };
        }
        if p.leader == self.broker.id() {
            return DataError::NotReady(format!(
                "this broker is becoming the leader of {topic}-{partition}"
            ));
        }
        let address = snapshot
            .broker(p.leader)
            .map(broker_address)
            .unwrap_or_default();
        DataError::NotLeader {
            topic: topic.to_string(),
            partition,
            leader: LeaderHint {
                id: p.leader,
                address,
                epoch: p.leader_epoch,
            },
        }
    }

    /// The replica of `topic`-`partition` held here, if the metadata's topic id matches.
    fn replica(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, DataError> {
        let snapshot = self.broker.metadata.get();
        let (t, _) = partition_meta(&snapshot, topic, partition)?;
        match self.broker.data.get(topic, partition) {
            Some(p) if p.id.topic_id == t.topic_id => Ok(p),
            _ => Err(self.not_leading(topic, partition)),
        }
    }

    /// The partition and its leadership, if this broker leads it.
    async fn leading(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Arc<Partition>, Arc<Leader>), DataError> {
        match self.leading_now(topic, partition).await {
            // The metadata names this broker, but it has not taken the role yet (e.g. right
            // after CreateTopic): wait for that, once, rather than fail the client.
            Err(DataError::NotReady(_)) => {
                self.await_reconciled(METADATA_WAIT_MAX).await;
                self.leading_now(topic, partition).await
            }
            other => other,
        }
    }

    async fn leading_now(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Arc<Partition>, Arc<Leader>), DataError> {
        let part = self.replica_fresh(topic, partition).await?;
        match part.leader().await {
            Some(leader) => Ok((part, leader)),
            None => Err(self.not_leading(topic, partition)),
        }
    }

    /// Waits until the partitions reflect the metadata held now, or `max` passes.
    async fn await_reconciled(&self, max: Duration) {
        let target = self.broker.metadata.version();
        let mut reconciled = self.broker.data.reconciled.subscribe();
        let _ = tokio::time::timeout(max, reconciled.wait_for(|v| *v >= target)).await;
    }

    /// [`DataService::replica`], but a topic or partition this broker does not know yet
    /// (perhaps just created: brokers learn new topics with their next heartbeat) makes it
    /// ask for fresh metadata and look again once, instead of failing a client that asked
    /// right after CreateTopic.
    async fn replica_fresh(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<Partition>, DataError> {
        match self.replica(topic, partition) {
            Err(DataError::UnknownTopic { .. } | DataError::UnknownPartition { .. }) => {
                self.await_newer_metadata(METADATA_WAIT_MAX).await;
                self.replica(topic, partition)
            }
            other => other,
        }
    }

    /// Wakes the heartbeat loop (whose answer carries the current metadata version, pulled at
    /// once when newer) and waits until the cache changes or `max` passes.
    async fn await_newer_metadata(&self, max: Duration) {
        let mut changes = self.broker.metadata.subscribe();
        changes.borrow_and_update();
        self.broker.wakeup.notify_one();
        let _ = tokio::time::timeout(max, changes.changed()).await;
    }

    fn out_of_range(part: &Partition, offset: u64) -> DataError {
        let offsets = part.log.offsets();
        DataError::OffsetOutOfRange {
            topic: part.id.topic.clone(),
            partition: part.id.partition,
            offset,
            log_start_offset: offsets.log_start_offset,
            high_watermark: part.high_watermark(),
            log_end_offset: offsets.log_end_offset,
        }
    }

    /// OUT_OF_RANGE unless a consumer may read (or wait) at `offset`.
    fn check_consumer_offset(part: &Partition, offset: u64) -> Result<(), DataError> {
        let offsets = part.log.offsets();
        if offset < offsets.log_start_offset || offset > offsets.log_end_offset {
            return Err(Self::out_of_range(part, offset));
        }
        Ok(())
    }

    // ---- Produce ----

    /// Produce (see the module doc).
    pub(crate) async fn produce(
        &self,
        request: pb::ProduceRequest,
    ) -> Result<pb::ProduceResponse, DataError> {
        let acks = pb::Acks::try_from(request.acks)
            .map_err(|_| DataError::InvalidRequest(format!("unknown acks {}", request.acks)))?;
        if request.records.is_empty() {
            return Err(DataError::InvalidRequest("a Produce needs records".into()));
        }
        let (part, _) = self.leading(&request.topic, request.partition).await?;
        let settings = part.settings();
        let records: Vec<Record> = request
            .records
            .into_iter()
            .map(wire::to_log_record)
            .collect();
        let mut total = 0usize;
        for r in &records {
            let size = r.encoded_len();
            if size > settings.max_record_bytes {
                return Err(DataError::RecordTooLarge {
                    size,
                    max: settings.max_record_bytes,
                });
            }
            total += size;
        }
        if total > self.broker.cfg.max_request_bytes {
            return Err(DataError::RequestTooLarge {
                size: total,
                max: self.broker.cfg.max_request_bytes,
            });
        }
        // Held until the answer (acks=NONE: until the background append is done).
        let reservation = self.broker.data.budget.try_reserve(total)?;
        let count = records.len();
        match acks {
            pb::Acks::None => {
                let leader = part
                    .leader()
                    .await
                    .ok_or_else(|| self.not_leading(&part.id.topic, part.id.partition))?;
                let this = self.clone();
                tokio::spawn(async move {
                    let _reservation = reservation;
                    let done = async {
                        let (leader, info) = this.append(&part, records, None).await?;
                        this.make_durable(&leader, &info).await
                    };
                    match done.await {
                        Ok(()) => crate::metrics::produced(count, total),
                        Err(e) => tracing::debug!(topic = %part.id.topic,
                            partition = part.id.partition, error = %e, "acks=NONE append failed"),
                    }
                });
                Ok(pb::ProduceResponse {
                    base_offset: 0,
                    last_offset: 0,
                    leader_epoch: leader.epoch,
                })
            }
            pb::Acks::Leader => {
                let (leader, info) = self.append(&part, records, None).await?;
                self.make_durable(&leader, &info).await?;
                if leader.is_closed() {
                    // Durable here, but the next leader may not have it.
                    return Err(self.leader_changed_after_append(&part, &info));
                }
                crate::metrics::produced(count, total);
                Ok(response(&leader, &info))
            }
            pb::Acks::All | pb::Acks::Unspecified => {
                let min = settings.min_insync_replicas;
                let (leader, info) = self.append(&part, records, Some(min)).await?;
                self.make_durable(&leader, &info).await?;
                let timeout = match request.timeout_ms {
                    0 => PRODUCE_TIMEOUT_DEFAULT,
                    ms => Duration::from_millis(u64::from(ms)).min(PRODUCE_TIMEOUT_MAX),
                };
                self.wait_committed(&part, &leader, &info, min, timeout)
                    .await?;
                crate::metrics::produced(count, total);
                Ok(response(&leader, &info))
            }
        }
    }

    /// Appends as the current leader, holding the role so no role change interleaves. With
    /// `min_isr`, refuses first (NOT_ENOUGH_REPLICAS, nothing appended) when the ISR is
    /// smaller. Errors before the write are refusals; a failed write is an unknown outcome
    /// ([`DataError::StorageAfterAppend`]).
    async fn append(
        &self,
        part: &Arc<Partition>,
        records: Vec<Record>,
        min_isr: Option<usize>,
    ) -> Result<(Arc<Leader>, AppendInfo), DataError> {
        let role = part.role.read().await;
        let leader = match &*role {
            Role::Leader(l) if !l.is_closed() && self.broker.takes_appends() => l.clone(),
            _ => return Err(self.not_leading(&part.id.topic, part.id.partition)),
        };
        if let Some(min) = min_isr {
            let isr_size = leader.commitment().isr_size;
            if isr_size < min {
                return Err(DataError::NotEnoughReplicas {
                    topic: part.id.topic.clone(),
                    partition: part.id.partition,
                    isr_size,
                    min_insync_replicas: min,
                });
            }
        }
        // Inline, not on the blocking pool: an append encodes and `pwrite`s into the page cache
        // (microseconds; the fsync is the syncer thread's). Measured with 256 one-record
        // produces in flight, `spawn_blocking` grew the pool to hundreds of threads contending
        // for the partition's lock, and a third of the leader's CPU went to switching threads.
        let appended = part.log.append_as_leader(records, leader.epoch, now_ms());
        let info = appended.map_err(|e| match e {
            // The write itself failed: the segment may hold part of it.
            e @ (LogError::Sled { .. } | LogError::Io { .. }) => {
                DataError::StorageAfterAppend(e.to_string())
            }
            LogError::Failed { .. } => DataError::Storage(e.to_string()),
            e => DataError::Log(e),
        })?;
        part.note_appended(info.last_offset + 1);
        drop(role);
        Ok((leader, info))
    }

    /// Waits for the group commit covering an append and reports it to `leader`.
    async fn make_durable(&self, leader: &Leader, info: &AppendInfo) -> Result<(), DataError> {
        crate::fault_point!(self.broker.cfg.faults, "produce.after_append");
        self.broker.data.syncer.sync().await.map_err(|e| match e {
            DataError::Storage(why) => DataError::StorageAfterAppend(why),
            e => e,
        })?;
        leader.on_synced(info.last_offset + 1);
        Ok(())
    }

    /// The answer to records appended by a leadership that ended before they committed.
    fn leader_changed_after_append(&self, part: &Partition, info: &AppendInfo) -> DataError {
        let leader = match self.not_leading(&part.id.topic, part.id.partition) {
            DataError::NotLeader { leader, .. } => leader,
            _ => LeaderHint::default(),
        };
        DataError::LeaderChangedAfterAppend {
            topic: part.id.topic.clone(),
            partition: part.id.partition,
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            leader,
        }
    }

    /// acks=ALL: waits until this leadership's high watermark passes the batch while the ISR
    /// keeps at least `min` members. Only the leadership that appended can commit its records:
    /// once it is closed, whatever the partition's shared watermark says, the outcome is
    /// unknown ([`DataError::LeaderChangedAfterAppend`]).
    async fn wait_committed(
        &self,
        part: &Arc<Partition>,
        leader: &Leader,
        info: &AppendInfo,
        min: usize,
        timeout: Duration,
    ) -> Result<(), DataError> {
        let target = info.last_offset + 1;
        let deadline = Instant::now() + timeout;
        let mut commitment = leader.subscribe();
        loop {
            let now = *commitment.borrow_and_update();
            let too_few = || DataError::NotEnoughReplicasAfterAppend {
                topic: part.id.topic.clone(),
                partition: part.id.partition,
                isr_size: now.isr_size,
                min_insync_replicas: min,
                base_offset: info.base_offset,
                last_offset: info.last_offset,
            };
            if now.high_watermark >= target {
                return if now.isr_size >= min {
                    Ok(())
                } else {
                    Err(too_few())
                };
            }
            if now.closed {
                return Err(self.leader_changed_after_append(part, info));
            }
            if now.isr_size < min {
                return Err(too_few());
            }
            tokio::select! {
                changed = commitment.changed() => {
                    if changed.is_err() {
                        return Err(self.leader_changed_after_append(part, info));
                    }
                }
                _ = sleep_until(deadline) => {
                    return Err(DataError::ReplicationTimeout {
                        topic: part.id.topic.clone(),
                        partition: part.id.partition,
                        base_offset: info.base_offset,
                        last_offset: info.last_offset,
                        timeout_ms: timeout.as_millis() as u64,
                    });
                }
            }
        }
    }

    // ---- Consumers ----

    /// Committed records of `part` from `from` (below `hw`), about `max_bytes` of them.
    async fn read_committed(
        part: &Arc<Partition>,
        from: u64,
        hw: u64,
        max_bytes: usize,
    ) -> Result<(Vec<pb::FetchedRecord>, u64, usize), DataError> {
        let log = part.log.clone();
        let read = tokio::task::spawn_blocking(move || {
            log.read(from, max_bytes, crate::log::ReadBound::LogEnd)
        })
        .await
        .map_err(blocking_error)?;
        match read {
            Ok(batches) => Ok(wire::committed_records(&batches, from, hw, max_bytes)),
            Err(LogError::OffsetOutOfRange { .. }) => Err(Self::out_of_range(part, from)),
            Err(e) => Err(e.into()),
        }
    }

    /// Whole stored batches from the one holding `from`, ending at or below `hw`, at most about
    /// `max_bytes` (at least one batch): the raw-batches Fetch answer, sent as read (slices of
    /// one buffer). Returns the batches, their record count, the next offset and the bytes.
    async fn read_committed_batches(
        part: &Arc<Partition>,
        from: u64,
        hw: u64,
        max_bytes: usize,
    ) -> Result<(Vec<bytes::Bytes>, usize, u64, usize), DataError> {
        let log = part.log.clone();
        let read = tokio::task::spawn_blocking(move || {
            log.read_encoded(from, max_bytes, crate::log::ReadBound::LogEnd)
        })
        .await
        .map_err(blocking_error)?;
        match read {
            Ok(batches) => {
                let mut out = Vec::with_capacity(batches.len());
                let (mut count, mut next, mut bytes) = (0, from, 0);
                for b in batches {
                    // The log's own high watermark is a checkpoint; the partition's is current.
                    if b.header.next_offset() > hw {
                        break;
                    }
                    count += b
                        .header
                        .next_offset()
                        .saturating_sub(from.max(b.header.base_offset))
                        as usize;
                    next = b.header.next_offset();
                    bytes += b.bytes.len();
                    out.push(b.bytes);
                }
                Ok((out, count, next, bytes))
            }
            Err(LogError::OffsetOutOfRange { .. }) => Err(Self::out_of_range(part, from)),
            Err(e) => Err(e.into()),
        }
    }

    /// Fetch (see the module doc).
    pub(crate) async fn fetch(
        &self,
        request: pb::FetchRequest,
    ) -> Result<pb::FetchResponse, DataError> {
        let (part, _) = self.leading(&request.topic, request.partition).await?;
        let cfg = &self.broker.cfg;
        let max_bytes = match request.max_bytes {
            0 => DEFAULT_FETCH_BYTES,
            n => n.min(cfg.fetch_max_bytes),
        } as usize;
        let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(cfg.fetch_max_wait);
        let deadline = Instant::now() + wait;
        let offset = request.offset;
        let mut hw_rx = part.hw.subscribe();
        let mut changes = part.changes.subscribe();
        loop {
            let hw = *hw_rx.borrow_and_update();
            changes.borrow_and_update();
            Self::check_consumer_offset(&part, offset)?;
            if offset < hw {
                // The answer is built in memory: at most `max_bytes` (plus one batch). A long
                // poll holds nothing while it waits.
                let _reservation = self.broker.data.budget.try_reserve(max_bytes)?;
                if request.raw_batches {
                    let (batches, count, next_offset, bytes) =
                        Self::read_committed_batches(&part, offset, hw, max_bytes).await?;
                    if !batches.is_empty() {
                        crate::metrics::fetched("fetch", count, bytes);
                        return Ok(pb::FetchResponse {
                            records: Vec::new(),
                            high_watermark: hw,
                            log_start_offset: part.log.log_start_offset(),
                            next_offset,
                            batches,
                        });
                    }
                } else {
                    let (records, next_offset, bytes) =
                        Self::read_committed(&part, offset, hw, max_bytes).await?;
                    if !records.is_empty() {
                        crate::metrics::fetched("fetch", records.len(), bytes);
                        return Ok(pb::FetchResponse {
                            records,
                            high_watermark: hw,
                            log_start_offset: part.log.log_start_offset(),
                            next_offset,
                            batches: Vec::new(),
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                return Ok(pb::FetchResponse {
                    records: Vec::new(),
                    high_watermark: hw,
                    log_start_offset: part.log.log_start_offset(),
                    next_offset: offset,
                    batches: Vec::new(),
                });
            }
            tokio::select! {
                _ = hw_rx.changed() => {}
                _ = changes.changed() => {
                    if part.leader().await.is_none() {
                        return Err(self.not_leading(&part.id.topic, part.id.partition));
                    }
                }
                _ = sleep_until(deadline) => {}
            }
        }
    }

    /// ListOffsets: earliest (log start), latest (high watermark) or the first committed
    /// offset at or after a timestamp (the high watermark when none is).
    pub(crate) async fn list_offsets(
        &self,
        request: pb::ListOffsetsRequest,
    ) -> Result<pb::ListOffsetsResponse, DataError> {
        let (part, _) = self.leading(&request.topic, request.partition).await?;
        let spec = pb::OffsetSpec::try_from(request.spec).map_err(|_| {
            DataError::InvalidRequest(format!("unknown offset spec {}", request.spec))
        })?;
        let hw = part.high_watermark();
        let log_start = part.log.log_start_offset();
        let offset = match spec {
            pb::OffsetSpec::Unspecified | pb::OffsetSpec::Earliest => log_start,
            pb::OffsetSpec::Latest => hw,
            pb::OffsetSpec::Timestamp => {
                let p = part.clone();
                let ts = request.timestamp_ms;
                let found = tokio::task::spawn_blocking(move || {
                    // The search reads up to the log's copy of the high watermark: bring it
                    // up to date first.
                    p.checkpoint_hw()?;
                    p.log.list_offset(OffsetSpec::Timestamp(ts))
                })
                .await
                .map_err(blocking_error)??;
                found.map_or(hw, |f| f.offset.min(hw))
            }
        };
        Ok(pb::ListOffsetsResponse {
            offset,
            log_start_offset: log_start,
            high_watermark: hw,
        })
    }

    /// Consume: streams committed records from the offset until the client goes away (or the
    /// high watermark is reached, with `stop_at_end`). At most [`CONSUME_QUEUE`] responses of
    /// about [`CONSUME_MESSAGE_BYTES`] wait for a slow client. Ends with NOT_LEADER when this
    /// broker stops leading.
    pub(crate) async fn consume(
        &self,
        request: pb::ConsumeRequest,
    ) -> Result<ConsumeStream, DataError> {
        let (part, _) = self.leading(&request.topic, request.partition).await?;
        let start = if request.from_beginning {
            part.log.log_start_offset()
        } else {
            request.offset
        };
        Self::check_consumer_offset(&part, start)?;
        // Refused at once when the broker cannot hold even one response for this stream.
        drop(self.broker.data.budget.try_reserve(CONSUME_MESSAGE_BYTES)?);
        let (tx, rx) = mpsc::channel(CONSUME_QUEUE);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.stream(&part, start, request.stop_at_end, &tx).await {
                let _ = tx.send((Err(Status::from(e)), None)).await;
            }
        });
        // A response gives its share of the budget back once tonic takes it.
        Ok(Box::pin(
            ReceiverStream::new(rx).map(|(response, _reservation)| response),
        ))
    }

    async fn stream(
        &self,
        part: &Arc<Partition>,
        start: u64,
        stop_at_end: bool,
        tx: &mpsc::Sender<ConsumeItem>,
    ) -> Result<(), DataError> {
        let mut position = start;
        let mut hw_rx = part.hw.subscribe();
        let mut changes = part.changes.subscribe();
        loop {
            let hw = *hw_rx.borrow_and_update();
            changes.borrow_and_update();
            if part.leader().await.is_none() {
                return Err(self.not_leading(&part.id.topic, part.id.partition));
            }
            Self::check_consumer_offset(part, position)?;
            if position < hw {
                // Taken for each response, held while it is queued: an idle stream holds nothing.
                let held = tokio::select! {
                    held = self.broker.data.budget.reserve(CONSUME_MESSAGE_BYTES) => held,
                    _ = tx.closed() => return Ok(()),
                };
                let (records, next, bytes) =
                    Self::read_committed(part, position, hw, CONSUME_MESSAGE_BYTES).await?;
                if !records.is_empty() {
                    crate::metrics::fetched("consume", records.len(), bytes);
                    position = next;
                    let response = pb::ConsumeResponse {
                        records,
                        high_watermark: hw,
                    };
                    if tx.send((Ok(response), Some(held))).await.is_err() {
                        return Ok(()); // the client went away
                    }
                    continue;
                }
            }
            if stop_at_end {
                return Ok(());
            }
            tokio::select! {
                _ = hw_rx.changed() => {}
                _ = changes.changed() => {}
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    // ---- Replication ----

    /// ReplicaFetch on the leader (see the module doc).
    ///
    /// # To ensure correctness
    /// The answer must come from this leadership's log: after a role change the follower role
    /// truncates and rewrites the same log, and records it copies there would reach this
    /// fetcher labelled with the old leader epoch (a permanent divergence). So the leadership
    /// is checked after every read, and its closing wakes a parked fetch.
    pub(crate) async fn replica_fetch(
        &self,
        request: pb::ReplicaFetchRequest,
    ) -> Result<pb::ReplicaFetchResponse, DataError> {
        let topic = request.topic.as_str();
        let part = self.replica(topic, request.partition)?;
        if part.id.topic_id != request.topic_id {
            return Err(DataError::TopicIdMismatch {
                topic: topic.to_string(),
                partition: request.partition,
                held: part.id.topic_id,
                asked: request.topic_id,
            });
        }
        let leader = part
            .leader()
            .await
            .ok_or_else(|| self.not_leading(topic, request.partition))?;
        // Subscribed before anything can change: a close from now on is seen.
        let mut commitment = leader.subscribe();
        let not_leading = || self.not_leading(topic, request.partition);
        if request.leader_epoch < leader.epoch {
            return Err(DataError::FencedLeaderEpoch {
                topic: topic.to_string(),
                partition: request.partition,
                given: request.leader_epoch,
                current: leader.epoch,
            });
        }
        if request.leader_epoch > leader.epoch {
            return Err(DataError::UnknownLeaderEpoch {
                topic: topic.to_string(),
                partition: request.partition,
                given: request.leader_epoch,
                current: leader.epoch,
            });
        }
        if request.replica_id == self.broker.id()
            || !leader.replicas().contains(&request.replica_id)
        {
            return Err(DataError::InvalidRequest(format!(
                "broker {} is not a follower of {topic}-{}",
                request.replica_id, request.partition
            )));
        }
        // Only the incarnation the metadata lists speaks for the replica: an older process (a
        // zombie) or a newer one this leader has not heard of yet must not move the watermark.
        let listed = self
            .broker
            .metadata
            .get()
            .broker(request.replica_id)
            .cloned();
        let eligible = match listed {
            Some(b) if b.broker_epoch == request.broker_epoch => {
                b.status == pb::BrokerStatus::Online as i32
            }
            other => {
                return Err(DataError::StaleBrokerEpoch {
                    broker_id: request.replica_id,
                    given: request.broker_epoch,
                    current: other.map_or(0, |b| b.broker_epoch),
                });
            }
        };
        let log = part.log.clone();
        let offsets = log.offsets();
        let fetch_offset = request.fetch_offset;
        if fetch_offset < offsets.log_start_offset || fetch_offset > offsets.log_end_offset {
            return Err(Self::out_of_range(&part, fetch_offset));
        }
        let answer = |batches: Vec<bytes::Bytes>, diverging: Option<pb::EpochEndOffset>| {
            pb::ReplicaFetchResponse {
                batches,
                high_watermark: leader.commitment().high_watermark,
                log_start_offset: part.log.log_start_offset(),
                leader_epoch: leader.epoch,
                diverging_epoch: diverging,
            }
        };
        if fetch_offset > offsets.log_start_offset
            && let Some((epoch, end_offset)) = divergence(
                log.end_offset_for_epoch(request.last_fetched_epoch),
                request.last_fetched_epoch,
                fetch_offset,
                log.latest_leader_epoch(),
                offsets.log_end_offset,
            )
        {
            if leader.is_closed() {
                return Err(not_leading());
            }
            return Ok(answer(
                Vec::new(),
                Some(pb::EpochEndOffset { epoch, end_offset }),
            ));
        }

        // The fetch offset is the follower's durable log end: its acknowledgement. The
        // watermark before it counts: a move it causes is news for this follower too.
        let hw_seen = commitment.borrow_and_update().high_watermark;
        let effects = leader.on_replica_fetch(
            request.replica_id,
            request.broker_epoch,
            fetch_offset,
            offsets.log_end_offset,
            eligible,
            Instant::now(),
        );
        if let Some(change) = effects.expand {
            spawn_isr_change(self.broker.clone(), part.clone(), leader.clone(), change);
        }

        let cfg = &self.broker.cfg;
        let max_bytes = match request.max_bytes {
            0 => cfg.replica_fetch_max_bytes,
            n => n.min(cfg.fetch_max_bytes),
        } as usize;
        let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(cfg.fetch_max_wait);
        let deadline = Instant::now() + wait;
        let mut leo = part.leo.subscribe();
        let mut hw_moved_at: Option<Instant> = None;
        crate::fault_point!(self.broker.cfg.faults, "replica_fetch.before_read");
        loop {
            leo.borrow_and_update();
            let now_commitment = *commitment.borrow_and_update();
            if now_commitment.closed {
                return Err(not_leading());
            }
            if now_commitment.high_watermark > hw_seen {
                hw_moved_at.get_or_insert_with(Instant::now);
            }
            let log = part.log.clone();
            let read = move || log.read_encoded(fetch_offset, max_bytes, ReadBound::LogEnd);
            let behind = part.log.log_end_offset().saturating_sub(fetch_offset);
            let batches = if behind <= REPLICA_TAIL_INLINE_RECORDS {
                // A caught-up follower asks for what was just appended: sled holds those pages
                // in memory, so reading them here costs less than the hop to the blocking pool.
                read()
            } else {
                tokio::task::spawn_blocking(read)
                    .await
                    .map_err(blocking_error)?
            }
            .map_err(|e| match e {
                LogError::OffsetOutOfRange { .. } => Self::out_of_range(&part, fetch_offset),
                e => e.into(),
            })?;
            // What was read is this leadership's only if it was still open after the read (the
            // follower role writes only once it is closed).
            if leader.is_closed() {
                return Err(not_leading());
            }
            let now = Instant::now();
            let hw_due = hw_moved_at.map(|at| (at + HW_NOTICE_DELAY).min(deadline));
            if !batches.is_empty() || hw_due.is_some_and(|due| now >= due) || now >= deadline {
                let bytes: Vec<bytes::Bytes> = batches.into_iter().map(|b| b.bytes).collect();
                let size = bytes.iter().map(bytes::Bytes::len).sum();
                crate::metrics::fetched("replica", bytes.len(), size);
                return Ok(answer(bytes, None));
            }
            tokio::select! {
                _ = leo.changed() => {}
                _ = commitment.changed() => {}
                _ = sleep_until(hw_due.unwrap_or(deadline)) => {}
            }
        }
    }
}

fn response(leader: &Leader, info: &AppendInfo) -> pb::ProduceResponse {
    pb::ProduceResponse {
        base_offset: info.base_offset,
        last_offset: info.last_offset,
        leader_epoch: leader.epoch,
    }
}
