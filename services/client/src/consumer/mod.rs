//! [`Consumer`]: reads assigned partitions from their leaders, by offset.
//!
//! There are no consumer groups: the caller assigns partitions and owns the positions. Each
//! assigned partition has at most one Fetch (a long poll of up to
//! [`ConsumerConfig::max_wait`]) outstanding at its leader, at most
//! [`ConsumerConfig::fetch_concurrency`] over all partitions. A fetch follows leader changes
//! like the producer does (NOT_LEADER hint first, else a metadata refresh; bounded retries),
//! and since it asks by offset, a new leader continues exactly where the old one stopped:
//! records come in offset order, each once, and only up to the high watermark (committed).
//!
//! Fetches outstanding when [`poll`](Consumer::poll) returns stay outstanding: the next
//! `poll` picks their answers up, so nothing is fetched twice and nothing is lost.

mod config;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use dmq_proto::v1 as pb;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tonic::Request;

use crate::leader_call::{Target, call_partition_leader};
use crate::{ClientError, ConsumedRecord, MetadataView};

pub use self::config::{ConsumerConfig, OffsetReset, Start};

/// A topic and one of its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

/// A partition's offsets as its leader reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The oldest offset still in the log.
    pub log_start: u64,
    /// The offset the next committed record will get; records below it are readable.
    pub high_watermark: u64,
}

/// Reads records from assigned partitions. Not shared: one task owns it (`&mut self`).
pub struct Consumer {
    metadata: MetadataView,
    config: Arc<ConsumerConfig>,
    assigned: HashMap<TopicPartition, Assigned>,
    /// Assigned partitions in the order they take turns to fetch.
    turns: VecDeque<TopicPartition>,
    fetches: FuturesUnordered<BoxFuture<'static, Fetched>>,
    /// Errors not returned yet (a `poll` returns records first).
    errors: VecDeque<ClientError>,
    generations: u64,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("assigned", &self.assigned)
            .field("fetches", &self.fetches.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Assigned {
    /// The offset of the next record `poll` returns.
    position: u64,
    /// Changes with every assign or seek, so that an answer to an older fetch is dropped.
    generation: u64,
    fetching: bool,
    /// After a non-retryable error: no fetches until a seek or a new assign.
    paused: bool,
    high_watermark: Option<u64>,
}

/// One fetch's outcome.
struct Fetched {
    tp: TopicPartition,
    generation: u64,
    offset: u64,
    result: Result<pb::FetchResponse, ClientError>,
}

impl Consumer {
    /// A consumer reading through `metadata` (or an [`Admin`](crate::Admin), wrapped in a
    /// default [`MetadataView`]). Fails on an invalid `config`.
    pub fn new(
        metadata: impl Into<MetadataView>,
        config: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        config.validate()?;
        Ok(Consumer {
            metadata: metadata.into(),
            config: Arc::new(config),
            assigned: HashMap::new(),
            turns: VecDeque::new(),
            fetches: FuturesUnordered::new(),
            errors: VecDeque::new(),
            generations: 0,
        })
    }

    /// Starts reading `topic`-`partition` at `start` (replacing an earlier assignment of it)
    /// and returns the resolved position. Asks the leader for `Beginning`, `End` and
    /// `Timestamp`; `NotFound` for an unknown topic or partition.
    pub async fn assign(
        &mut self,
        topic: &str,
        partition: u32,
        start: Start,
    ) -> Result<u64, ClientError> {
        let position = match start {
            Start::Offset(offset) => {
                match self.metadata.leader(topic, partition).await {
                    // A partition without a leader right now can still be assigned.
                    Err(error) if !error.is_retryable() => return Err(error),
                    _ => offset,
                }
            }
            Start::Beginning => {
                self.list_offsets(topic, partition, pb::OffsetSpec::Earliest, 0)
                    .await?
                    .offset
            }
            Start::End => {
                self.list_offsets(topic, partition, pb::OffsetSpec::Latest, 0)
                    .await?
                    .offset
            }
            Start::Timestamp(ms) => {
                self.list_offsets(topic, partition, pb::OffsetSpec::Timestamp, ms)
                    .await?
                    .offset
            }
        };
        let tp = TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        self.generations += 1;
        let generation = self.generations;
        if !self.assigned.contains_key(&tp) {
            self.turns.push_back(tp.clone());
        }
        self.assigned.insert(
            tp,
            Assigned {
                position,
                generation,
                fetching: false,
                paused: false,
                high_watermark: None,
            },
        );
        Ok(position)
    }

    /// Continues `topic`-`partition` at `offset` (also un-pauses it after an error).
    /// `NotFound` when it is not assigned.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<(), ClientError> {
        let tp = TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        self.generations += 1;
        let generation = self.generations;
        let assigned = self
            .assigned
            .get_mut(&tp)
            .ok_or_else(|| ClientError::NotFound {
                what: format!("assignment of {topic}-{partition} (assign it first)"),
            })?;
        assigned.position = offset;
        assigned.generation = generation;
        assigned.fetching = false;
        assigned.paused = false;
        Ok(())
    }

    /// Stops reading `topic`-`partition`; returns whether it was assigned.
    pub fn unassign(&mut self, topic: &str, partition: u32) -> bool {
        let tp = TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        self.turns.retain(|t| t != &tp);
        self.assigned.remove(&tp).is_some()
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        let mut all: Vec<_> = self.assigned.keys().cloned().collect();
        all.sort();
        all
    }

    /// The offset of the next record `poll` returns for `topic`-`partition`; `None` when it is
    /// not assigned.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.get(topic, partition).map(|a| a.position)
    }

    /// The high watermark the last fetch of `topic`-`partition` saw (`None` before one
    /// answered): `position >= high_watermark` means the consumer has read everything
    /// committed so far ("exit at end").
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        self.get(topic, partition).and_then(|a| a.high_watermark)
    }

    /// Asks the leader of `topic`-`partition` for its log start offset and high watermark.
    pub async fn offsets(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionOffsets, ClientError> {
        let answer = self
            .list_offsets(topic, partition, pb::OffsetSpec::Earliest, 0)
            .await?;
        Ok(PartitionOffsets {
            log_start: answer.log_start_offset,
            high_watermark: answer.high_watermark,
        })
    }

    /// The next records, in offset order per partition: returns as soon as some partition
    /// has any, or with an empty batch after [`ConsumerConfig::max_wait`] (or at once with
    /// nothing assigned).
    ///
    /// Errors: a fetch that failed for good is reported once, after the records already
    /// fetched: `OffsetOutOfRange` (with the valid range; see [`OffsetReset`]) and other
    /// non-retryable errors pause that partition until [`seek`](Self::seek); a retryable one
    /// (the leader stayed unreachable through every retry) does not, the next `poll` tries
    /// again.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, ClientError> {
        if let Some(error) = self.errors.pop_front() {
            return Err(error);
        }
        let deadline = Instant::now() + self.config.max_wait;
        let mut records = Vec::new();
        while !self.assigned.is_empty() {
            self.launch_fetches();
            tokio::select! {
                Some(fetched) = self.fetches.next() => self.absorb(fetched, &mut records),
                _ = tokio::time::sleep_until(deadline) => break,
            }
            while let Some(Some(fetched)) = self.fetches.next().now_or_never() {
                self.absorb(fetched, &mut records);
            }
            if !records.is_empty() || !self.errors.is_empty() {
                break;
            }
        }
        if records.is_empty()
            && let Some(error) = self.errors.pop_front()
        {
            return Err(error);
        }
        Ok(records)
    }

    fn get(&self, topic: &str, partition: u32) -> Option<&Assigned> {
        // Avoids allocating a key on lookups: assignments are few, a scan is cheap.
        self.assigned
            .iter()
            .find(|(tp, _)| tp.partition == partition && tp.topic == topic)
            .map(|(_, a)| a)
    }

    /// Starts a fetch for each partition that has none, taking turns, within the bound.
    fn launch_fetches(&mut self) {
        for _ in 0..self.turns.len() {
            if self.fetches.len() >= self.config.fetch_concurrency {
                return;
            }
            let Some(tp) = self.turns.pop_front() else {
                return;
            };
            self.turns.push_back(tp.clone());
            let Some(assigned) = self.assigned.get_mut(&tp) else {
                continue;
            };
            if assigned.fetching || assigned.paused {
                continue;
            }
            assigned.fetching = true;
            let (generation, offset) = (assigned.generation, assigned.position);
            let metadata = self.metadata.clone();
            let config = self.config.clone();
            self.fetches.push(
                async move {
                    let result = fetch(&metadata, &config, &tp, offset).await;
                    Fetched {
                        tp,
                        generation,
                        offset,
                        result,
                    }
                }
                .boxed(),
            );
        }
    }

    /// Takes one fetch's outcome: records and a new position, a reset, or an error to report.
    fn absorb(&mut self, fetched: Fetched, records: &mut Vec<ConsumedRecord>) {
        let Fetched {
            tp,
            generation,
            offset,
            result,
        } = fetched;
        let Some(assigned) = self.assigned.get_mut(&tp) else {
            return;
        };
        if assigned.generation != generation {
            // A seek or re-assign happened meanwhile; its own fetch is (or will be) launched.
            return;
        }
        assigned.fetching = false;
        match result {
            Ok(response) => {
                assigned.high_watermark = Some(response.high_watermark);
                let mut next = offset;
                for record in response.records {
                    if record.offset < next {
                        continue; // before the position (a whole batch came back)
                    }
                    next = record.offset + 1;
                    records.push(ConsumedRecord::from_wire(&tp.topic, tp.partition, record));
                }
                if next == offset
                    && response.next_offset > offset
                    && response.next_offset <= response.high_watermark
                {
                    next = response.next_offset;
                }
                assigned.position = next;
            }
            Err(ClientError::OffsetOutOfRange {
                log_start,
                high_watermark,
                ..
            }) if self.config.offset_reset != OffsetReset::Error => {
                let to = match self.config.offset_reset {
                    OffsetReset::Latest => high_watermark,
                    _ => log_start,
                };
                tracing::info!(topic = %tp.topic, partition = tp.partition, offset, log_start, high_watermark, reset_to = to, "offset out of range; resetting");
                assigned.position = to;
            }
            Err(error) => {
                if !error.is_retryable() {
                    assigned.paused = true;
                }
                self.errors.push_back(error);
            }
        }
    }

    async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: pb::OffsetSpec,
        timestamp_ms: i64,
    ) -> Result<pb::ListOffsetsResponse, ClientError> {
        let request = pb::ListOffsetsRequest {
            topic: topic.to_string(),
            partition,
            spec: spec as i32,
            timestamp_ms,
        };
        let target = Target {
            topic,
            partition,
            offset: 0,
            produce: None,
        };
        call_partition_leader(
            &self.metadata,
            target,
            &self.config.retry,
            self.config.request_timeout,
            |mut client, timeout| {
                let mut request = Request::new(request.clone());
                request.set_timeout(timeout);
                async move { client.list_offsets(request).await }
            },
        )
        .await
    }
}

/// One long-poll Fetch of `tp` at `offset`, retried across leader changes. It asks for raw
/// record batches (the broker sends them as stored) and decodes them here into `records`.
async fn fetch(
    metadata: &MetadataView,
    config: &ConsumerConfig,
    tp: &TopicPartition,
    offset: u64,
) -> Result<pb::FetchResponse, ClientError> {
    let request = pb::FetchRequest {
        topic: tp.topic.clone(),
        partition: tp.partition,
        offset,
        max_bytes: config.max_bytes,
        max_wait_ms: config.max_wait.as_millis() as u32,
        raw_batches: true,
    };
    let target = Target {
        topic: &tp.topic,
        partition: tp.partition,
        offset,
        produce: None,
    };
    call_partition_leader(
        metadata,
        target,
        &config.retry,
        config.max_wait + config.request_timeout,
        |mut client, timeout| {
            let mut request = Request::new(request.clone());
            request.set_timeout(timeout);
            async move { client.fetch(request).await }
        },
    )
    .await
    .and_then(decode_batches)
}

/// Moves the records of a raw-batches Fetch answer (`raw_batches: true`) into `records` (an
/// answer with records is left as it is). The first batch may hold records below the offset
/// asked for: the caller skips them. A batch that fails its CRC or does not decode is reported
/// as `DATA_LOSS`: it was damaged on the way (the broker checks what it reads).
pub fn decode_batches(mut response: pb::FetchResponse) -> Result<pb::FetchResponse, ClientError> {
    for batch in std::mem::take(&mut response.batches) {
        let records = dmq_recordbatch::records(&batch).map_err(|e| {
            ClientError::Other(tonic::Status::data_loss(format!(
                "a fetched record batch is damaged: {e}"
            )))
        })?;
        response.records.extend(records.into_iter().map(|r| {
            pb::FetchedRecord {
                offset: r.offset.max(0) as u64,
                timestamp_ms: r.timestamp_ms,
                key: r.key.map(|k| k.to_vec()).unwrap_or_default(),
                value: r.value.map(|v| v.to_vec()).unwrap_or_default(),
                headers: r
                    .headers
                    .into_iter()
                    .map(|h| pb::Header {
                        key: h.key,
                        value: h.value.map(|v| v.to_vec()).unwrap_or_default(),
                    })
                    .collect(),
            }
        }));
    }
    Ok(response)
}

#[cfg(test)]
mod tests;
