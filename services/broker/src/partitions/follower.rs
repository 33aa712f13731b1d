//! The follower: one task per followed partition that copies the leader's log.
//!
//! ```text
//!  ReplicaFetch(fetch_offset = LEO, last_fetched_epoch, leader_epoch, broker_epoch) ──► leader
//!    ◄── batches:  append_replica each, sync (durable), HW = min(leader HW, LEO), fetch again
//!    ◄── diverging_epoch {E, O}: truncate to min(O, own end of E), never below the HW; again
//!    ◄── OUT_OF_RANGE: below the leader's log start -> restart the log there;
//!                      past its log end -> truncate to it (never below the HW)
//!    ◄── stale epoch / not leader / leader's metadata lags / unreachable: back off, retry
//! ```
//!
//! The next fetch's `fetch_offset` is the follower's acknowledgement: it is sent only after the
//! batches it covers were synced (and after a sync of whatever else the log wrote: an earlier
//! role's appends, a truncation's rewrite), so the leader never counts a record the follower
//! could lose.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dmq_client::discovery::Backoff;
use dmq_proto::v1 as pb;
use dmq_proto::v1::broker_service_client::BrokerServiceClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::{Code, Request, Status};

use super::Partition;
use crate::errors::{
    DataError, REASON_FENCED_LEADER_EPOCH, REASON_UNKNOWN_LEADER_EPOCH, error_info, info_number,
};
use crate::log::{BATCH_HEADER_LEN, BatchHeader, EpochEntry, LogError, PartitionLog, RecordBatch};
use crate::state::Broker;

/// The epoch a follower reports as `last_fetched_epoch`: that of its last batch (an epoch that
/// starts at the log end holds no batch yet), or, with an empty log, its latest known epoch
/// (0 when none).
pub(crate) fn last_fetched_epoch(entries: &[EpochEntry], log_start: u64, log_end: u64) -> u64 {
    if log_end > log_start {
        entries
            .iter()
            .rev()
            .find(|e| e.start_offset < log_end)
            .map_or(0, |e| e.epoch)
    } else {
        entries.last().map_or(0, |e| e.epoch)
    }
}

/// Where a follower truncates when the leader answers `diverging = (epoch, end_offset)`:
/// `end_offset`, or less where its own `epoch` (or the last epoch it has below it) already
/// ended (`own_end_for_epoch` is its `end_offset_for_epoch(epoch)`), never below its high
/// watermark nor past its log end.
pub(crate) fn truncation_offset(
    diverging: (u64, u64),
    own_end_for_epoch: Option<(u64, u64)>,
    high_watermark: u64,
    log_end: u64,
) -> u64 {
    let (_, end) = diverging;
    let target = match own_end_for_epoch {
        Some((_, own_end)) => end.min(own_end),
        None => end,
    };
    target.max(high_watermark).min(log_end)
}

/// A running follower task; [`stop`](Self::stop) it before the partition changes role.
///
/// # To ensure correctness
/// - Only one role writes a partition's log: the manager starts a follower only on an idle
///   partition and [`stop`](Self::stop)s (joins) it before any other role starts.
/// - A fetch reports as `fetch_offset` only a log end that a sync covered (the leader counts it
///   toward the high watermark): replicated batches are synced with their write, any other
///   unsynced write of the log (an earlier role's appends, a truncation's rewrite) is synced
///   before the fetch ([`PartitionLog::is_durable`]), and a failed sync stops the task.
/// - The log is truncated only on the leader's word (a diverging epoch, or an offset past its
///   log end) and never below the high watermark: committed records are never removed.
/// - The high watermark only rises, to at most the leader's and at most the durable log end.
pub(crate) struct FollowerHandle {
    pub leader: u64,
    pub epoch: u64,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl FollowerHandle {
    /// Starts following broker `leader` at `epoch`.
    pub(crate) fn start(
        broker: Arc<Broker>,
        partition: Arc<Partition>,
        leader: u64,
        epoch: u64,
    ) -> FollowerHandle {
        let (stop, stopped) = watch::channel(false);
        let fetcher = Fetcher {
            backoff: Backoff::new(
                Duration::from_millis(50),
                broker.cfg.replica_fetch_backoff_max,
                0.2,
                None,
            ),
            broker,
            partition,
            leader,
            epoch,
            stop: stopped,
            failures: 0,
        };
        FollowerHandle {
            leader,
            epoch,
            stop,
            task: tokio::spawn(fetcher.run()),
        }
    }

    /// Stops the task and waits until it ended: once this returns it writes nothing more. An
    /// RPC in flight is dropped; a log write in progress finishes first.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "follower task failed");
        }
    }
}

/// What one round did.
enum Step {
    /// Go on at once.
    Continue,
    /// Pause (backoff) before the next round.
    Pause(String),
    Stopped,
}

struct Fetcher {
    broker: Arc<Broker>,
    partition: Arc<Partition>,
    leader: u64,
    epoch: u64,
    stop: watch::Receiver<bool>,
    backoff: Backoff,
    /// Consecutive failed rounds (logged on the first and every 20th).
    failures: u64,
}

impl Fetcher {
    async fn run(mut self) {
        let id = self.partition.id.clone();
        tracing::info!(topic = %id.topic, partition = id.partition, leader = self.leader,
            epoch = self.epoch, "following the partition leader");
        loop {
            if *self.stop.borrow() {
                break;
            }
            match self.round().await {
                Step::Continue => {
                    if self.failures > 0 {
                        tracing::info!(topic = %id.topic, partition = id.partition,
                            failures = self.failures, "replica fetches succeed again");
                    }
                    self.failures = 0;
                    self.backoff.reset();
                }
                Step::Pause(why) => {
                    self.failures += 1;
                    // Right after a leader change, a few failures are normal (the leader or
                    // this broker has not seen the new metadata yet).
                    if self.failures == 1 {
                        tracing::info!(topic = %id.topic, partition = id.partition,
                            leader = self.leader, epoch = self.epoch,
                            "replica fetch failed: {why}; retrying");
                    } else if self.failures == 5 || self.failures.is_multiple_of(50) {
                        tracing::warn!(topic = %id.topic, partition = id.partition,
                            leader = self.leader, epoch = self.epoch, failures = self.failures,
                            "replica fetches keep failing: {why}; retrying");
                    } else {
                        tracing::debug!(topic = %id.topic, partition = id.partition, "replica fetch failed: {why}");
                    }
                    let pause = self.backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.stop.wait_for(|s| *s) => break,
                    }
                }
                Step::Stopped => break,
            }
        }
        tracing::debug!(topic = %id.topic, partition = id.partition, "follower stopped");
    }

    async fn round(&mut self) -> Step {
        let broker = self.broker.clone();
        let cfg = &broker.cfg;
        let log = self.partition.log.clone();
        // The fetch reports the log end as durable. Replicated batches were synced with their
        // write, but an earlier role's appends (a deposed leader's, their group commit still
        // queued) or a truncation's rewrite may not be: sync first. A failed sync fails the
        // store, and the broker stops.
        if !log.is_durable()
            && let Err(e) = broker.data.syncer.sync().await
        {
            tracing::error!(topic = %self.partition.id.topic,
                partition = self.partition.id.partition, error = %e,
                "cannot make the log durable before reporting its end; this replica stops fetching");
            return Step::Stopped;
        }
        let offsets = log.offsets();
        let fetch_offset = offsets.log_end_offset;
        let last_epoch = last_fetched_epoch(
            &log.leader_epochs(),
            offsets.log_start_offset,
            offsets.log_end_offset,
        );
        let Some(address) = broker
            .metadata
            .get()
            .broker(self.leader)
            .map(broker_address)
        else {
            return Step::Pause(format!("leader {} is not in the metadata", self.leader));
        };
        let channel = match broker.data.peers.get(&address) {
            Ok(c) => c,
            Err(e) => return Step::Pause(e.to_string()),
        };
        let request = pb::ReplicaFetchRequest {
            topic: self.partition.id.topic.clone(),
            partition: self.partition.id.partition,
            replica_id: broker.id(),
            broker_epoch: broker.session().epoch,
            fetch_offset,
            leader_epoch: self.epoch,
            last_fetched_epoch: last_epoch,
            max_bytes: cfg.replica_fetch_max_bytes,
            max_wait_ms: cfg.replica_fetch_max_wait.as_millis() as u32,
            topic_id: self.partition.id.topic_id,
        };
        #[cfg(any(test, feature = "fault-injection"))]
        tokio::select! {
            _ = broker.cfg.faults.hit("follower.before_fetch") => {}
            _ = self.stop.wait_for(|s| *s) => return Step::Stopped,
        }
        let bound = cfg.replica_fetch_max_wait + cfg.rpc_timeout;
        // At least one batch comes back, however large: room for the largest.
        let largest_batch = cfg
            .max_batch_bytes
            .max(cfg.max_record_bytes + BATCH_HEADER_LEN);
        let limit = cfg.replica_fetch_max_bytes as usize + largest_batch + 64 * 1024;
        let mut client = BrokerServiceClient::new(channel).max_decoding_message_size(limit);
        let mut request = Request::new(request);
        request.set_timeout(bound);
        let answer = tokio::select! {
            answer = tokio::time::timeout(bound, client.replica_fetch(request)) => answer,
            _ = self.stop.wait_for(|s| *s) => return Step::Stopped,
        };
        match answer {
            Ok(Ok(response)) => self.absorb(response.into_inner()).await,
            Ok(Err(status)) => self.refused(status, fetch_offset).await,
            Err(_) => Step::Pause(format!("no answer from {address} within {bound:?}")),
        }
    }

    async fn absorb(&mut self, response: pb::ReplicaFetchResponse) -> Step {
        let partition = self.partition.clone();
        let log = partition.log.clone();
        if let Some(diverging) = response.diverging_epoch {
            let hw = partition.high_watermark();
            let truncated = blocking(move || {
                let leo = log.log_end_offset();
                let own = log.end_offset_for_epoch(diverging.epoch);
                let target =
                    truncation_offset((diverging.epoch, diverging.end_offset), own, hw, leo);
                if target < leo {
                    log.truncate_to(target)?;
                }
                Ok((target, leo))
            })
            .await;
            return match truncated {
                Ok((target, leo)) if target < leo => {
                    tracing::info!(topic = %partition.id.topic, partition = partition.id.partition,
                        from = leo, to = target, leader_epoch = diverging.epoch,
                        leader_end_offset = diverging.end_offset,
                        "truncated the diverging end of the log (KIP-320)");
                    Step::Continue
                }
                Ok((_, leo)) => {
                    tracing::error!(topic = %partition.id.topic, partition = partition.id.partition,
                        log_end = leo, high_watermark = hw, leader_epoch = diverging.epoch,
                        leader_end_offset = diverging.end_offset,
                        "the leader says the log diverges below the high watermark; not truncating committed data");
                    Step::Pause("diverging below the high watermark".into())
                }
                Err(e) => Step::Pause(format!("truncation failed: {e}")),
            };
        }
        if !response.batches.is_empty() {
            let batches = response.batches;
            let count = batches.len();
            let bytes: usize = batches.iter().map(bytes::Bytes::len).sum();
            // Written and synced in one trip to the syncer thread: whatever was appended (even
            // before a failure) is durable before the next fetch reports the new log end. A
            // failed sync leaves the store unusable: stop.
            let appended = match self
                .broker
                .data
                .syncer
                .write_then_sync(move || append_batches(&log, batches))
                .await
            {
                Ok(appended) => appended,
                Err(e) => {
                    tracing::error!(topic = %partition.id.topic, partition = partition.id.partition,
                        error = %e, "cannot make replicated records durable; this replica stops fetching");
                    return Step::Stopped;
                }
            };
            if let Err(e) = appended {
                return Step::Pause(format!("appending replicated batches failed: {e}"));
            }
            crate::metrics::fetched("replica_in", count, bytes);
        }
        // Nothing new means the leader already waited: either way, go on at once.
        partition.raise_hw(response.high_watermark.min(partition.log.log_end_offset()));
        Step::Continue
    }

    async fn refused(&mut self, status: Status, fetch_offset: u64) -> Step {
        let reason = error_info(&status).map(|(r, _)| r).unwrap_or_default();
        let why = format!("{}: {}", status.code(), status.message());
        match status.code() {
            Code::OutOfRange => {
                let (Some(leader_start), Some(leader_end)) = (
                    info_number(&status, "log_start_offset"),
                    info_number(&status, "log_end_offset"),
                ) else {
                    return Step::Pause(why);
                };
                let partition = self.partition.clone();
                let log = partition.log.clone();
                let hw = partition.high_watermark();
                let done = blocking(move || {
                    if fetch_offset < leader_start {
                        // The leader deleted what this replica still needs: start over there.
                        log.truncate_fully_and_start_at(leader_start.max(hw))?;
                    } else if fetch_offset > leader_end {
                        log.truncate_to(leader_end.max(hw))?;
                    }
                    Ok(log.log_end_offset())
                })
                .await;
                match done {
                    Ok(end) if end != fetch_offset => {
                        partition.raise_hw(partition.log.high_watermark());
                        tracing::info!(topic = %partition.id.topic, partition = partition.id.partition,
                            from = fetch_offset, to = end, leader_start, leader_end,
                            "moved the log end into the leader's range");
                        Step::Continue
                    }
                    Ok(_) => Step::Pause(why),
                    Err(e) => Step::Pause(format!("{why}; resetting the log failed: {e}")),
                }
            }
            Code::FailedPrecondition if reason == REASON_FENCED_LEADER_EPOCH => Step::Pause(
                format!("{why} (waiting for the metadata to name the new leader)"),
            ),
            Code::Unavailable if reason == REASON_UNKNOWN_LEADER_EPOCH => Step::Pause(why),
            _ => Step::Pause(why),
        }
    }
}

/// Appends replicated batches at the log end: batches the log already has are skipped, one
/// that straddles the log end is cut there.
fn append_batches(log: &PartitionLog, batches: Vec<Bytes>) -> Result<(), DataError> {
    for encoded in batches {
        let header = BatchHeader::read(&encoded).map_err(LogError::from)?;
        let leo = log.log_end_offset();
        if header.next_offset() <= leo {
            continue;
        }
        if header.base_offset < leo {
            let mut batch = RecordBatch::decode(encoded).map_err(LogError::from)?;
            batch.records.drain(..(leo - batch.base_offset) as usize);
            batch.base_offset = leo;
            log.append_replica(&batch)?;
        } else {
            log.append_replica_encoded(&encoded)?;
        }
    }
    Ok(())
}

/// Runs a log operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DataError> + Send + 'static,
) -> Result<T, DataError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(DataError::Storage(format!("a log task failed: {e}"))))
}

/// A broker's BrokerService address, `host:port`.
pub(crate) fn broker_address(b: &pb::BrokerMetadata) -> String {
    format!("{}:{}", b.host, b.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogStore, Record};

    fn entries(pairs: &[(u64, u64)]) -> Vec<EpochEntry> {
        pairs
            .iter()
            .map(|&(epoch, start_offset)| EpochEntry {
                epoch,
                start_offset,
            })
            .collect()
    }

    #[test]
    fn the_last_fetched_epoch_is_the_last_batch_s() {
        // Epoch 5 was assigned at the log end (this broker led it) but wrote nothing.
        let e = entries(&[(1, 0), (3, 10), (5, 20)]);
        assert_eq!(last_fetched_epoch(&e, 0, 20), 3);
        assert_eq!(last_fetched_epoch(&e, 0, 21), 5);
        assert_eq!(last_fetched_epoch(&e, 0, 10), 1);
        assert_eq!(last_fetched_epoch(&e, 20, 20), 5, "empty: the latest known");
        assert_eq!(last_fetched_epoch(&[], 0, 0), 0);
    }

    #[test]
    fn truncation_never_drops_committed_records() {
        // Leader: epoch 2 ended at 10 there; this follower has epoch 2 up to 14.
        assert_eq!(truncation_offset((2, 10), Some((2, 14)), 5, 14), 10);
        // The follower's epoch 2 ended earlier (at 8) than the leader's.
        assert_eq!(truncation_offset((2, 10), Some((2, 8)), 5, 14), 8);
        // The follower does not know epoch 2: its last epoch below ended at 7.
        assert_eq!(truncation_offset((2, 10), Some((1, 7)), 5, 14), 7);
        // Never below the high watermark, never past the end.
        assert_eq!(truncation_offset((2, 10), Some((2, 8)), 9, 14), 9);
        assert_eq!(truncation_offset((2, 30), None, 0, 14), 14);
    }

    #[test]
    fn a_diverged_log_truncates_to_the_epoch_boundary_and_copies_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let leader = store.partition("t", 1, 0).unwrap();
        let follower = store.partition("t", 1, 1).unwrap();
        let recs = |n: usize, tag: &str| -> Vec<Record> {
            (0..n).map(|i| Record::new(format!("{tag}{i}"))).collect()
        };
        // Both have offsets 0..5 of epoch 0; the follower (an ex-leader) got 5..9 of epoch 1
        // that nobody else has; the leader wrote 5..8 in epoch 2.
        leader.append_as_leader(recs(5, "a"), 0, 1).unwrap();
        for b in leader
            .read_encoded(0, usize::MAX, crate::log::ReadBound::LogEnd)
            .unwrap()
        {
            follower.append_replica_encoded(&b.bytes).unwrap();
        }
        follower.append_as_leader(recs(4, "x"), 1, 1).unwrap();
        leader.assign_leader_epoch(2).unwrap();
        leader.append_as_leader(recs(3, "b"), 2, 1).unwrap();

        let offsets = follower.offsets();
        let last = last_fetched_epoch(&follower.leader_epochs(), 0, offsets.log_end_offset);
        assert_eq!((last, offsets.log_end_offset), (1, 9));
        let div = divergence_on(&leader, last, 9).expect("diverges");
        assert_eq!(div, (0, 5));
        let target = truncation_offset(div, follower.end_offset_for_epoch(div.0), 5, 9);
        assert_eq!(target, 5);
        follower.truncate_to(target).unwrap();
        let last = last_fetched_epoch(&follower.leader_epochs(), 0, 5);
        assert_eq!(divergence_on(&leader, last, 5), None);
        let batches: Vec<Bytes> = leader
            .read_encoded(5, usize::MAX, crate::log::ReadBound::LogEnd)
            .unwrap()
            .into_iter()
            .map(|b| b.bytes)
            .collect();
        append_batches(&follower, batches.clone()).unwrap();
        // Appending the same batches again is a no-op.
        append_batches(&follower, batches).unwrap();
        assert_eq!(follower.log_end_offset(), 8);
        let values: Vec<String> = follower
            .read(0, usize::MAX, crate::log::ReadBound::LogEnd)
            .unwrap()
            .iter()
            .flat_map(|b| {
                b.records
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            })
            .collect();
        assert_eq!(values, ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]);
        assert_eq!(follower.latest_leader_epoch(), Some(2));
    }

    fn divergence_on(
        leader: &PartitionLog,
        last_epoch: u64,
        fetch_offset: u64,
    ) -> Option<(u64, u64)> {
        super::super::leader::divergence(
            leader.end_offset_for_epoch(last_epoch),
            last_epoch,
            fetch_offset,
            leader.latest_leader_epoch(),
            leader.log_end_offset(),
        )
    }
}
