//! [`Producer`]: batched, bounded, retried appends to partition logs.
//!
//! # How a record travels
//! [`Producer::send`] picks the partition (explicit, else the [`Partitioner`](crate::Partitioner)), waits until the
//! record fits in the memory budget ([`ProducerConfig::buffer_max_bytes`]; this is the
//! backpressure), and queues it on its partition. It returns a [`DeliveryFuture`] that
//! resolves once the record's batch is acknowledged (with the record's offset) or has failed
//! for good. One task per partition cuts the queue into batches (by size and linger, see
//! `accumulator.rs`) and sends each to the partition leader.
//!
//! # Retries and ordering
//! A batch refused with NOT_LEADER (the hint is followed at once), no leader, UNAVAILABLE,
//! NOT_ENOUGH_REPLICAS or BROKER_OVERLOADED — nothing was appended — is sent again, the same
//! batch, after a pause and a metadata refresh, up to [`RetryPolicy::retries`](crate::RetryPolicy)
//! times. A batch whose attempt had an unknown outcome (an after-append reason such as
//! NOT_ENOUGH_REPLICAS_AFTER_APPEND or LEADER_CHANGED_AFTER_APPEND, a timeout, a lost
//! connection) is sent again only with [`ProducerConfig::retry_unknown_outcomes`] (the
//! default); when it finally fails, its error is [`ClientError::OutcomeUnknown`] even if the
//! last attempt was a plain refusal, because an earlier one may have appended it.
//! Other failures (unknown topic, record too large, …) fail its records at once. With
//! [`ProducerConfig::max_in_flight_per_partition`] 1 (the default) a partition has one batch
//! outstanding, so records are appended in `send` order (per partition, as sent by one task).
//! A batch that failed for good does not stop the next one: its records' futures carry the
//! error and the caller decides.
//!
//! # Delivery guarantee
//! At least once. A refused attempt (every broker refusal says so by its reason: broker.proto)
//! is never duplicated by its retry; an attempt whose outcome is unknown may have been
//! appended, and its retry may then append the batch a second time. The wire has no producer
//! ids or sequence numbers to deduplicate that yet; set
//! [`ProducerConfig::retry_unknown_outcomes`] to false to get the error instead.

mod accumulator;
mod config;
mod partition_task;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::accumulator::{Msg, Pending, RECORD_OVERHEAD_BYTES};
use self::partition_task::PartitionCtx;
use crate::partitioner::Chooser;
use crate::{ClientError, MetadataView, Record, RecordMetadata};

pub use self::config::{Acks, ProducerConfig};

/// Sends records to topics. Cheap to clone; clones share queues, memory budget and tasks.
/// Must be used inside a tokio runtime.
///
/// Dropping the last clone without [`close`](Self::close) lets the partition tasks finish
/// the queued records in the background (their futures still resolve).
#[derive(Clone, Debug)]
pub struct Producer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    metadata: MetadataView,
    config: Arc<ProducerConfig>,
    chooser: Chooser,
    memory: Arc<Semaphore>,
    queues: Mutex<Queues>,
}

#[derive(Debug, Default)]
struct Queues {
    closed: bool,
    by_topic: HashMap<String, HashMap<u32, mpsc::UnboundedSender<Msg>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Record(_) => "Record",
            Msg::Flush(_) => "Flush",
        })
    }
}

/// Resolves when the record's batch is acknowledged (its offset) or failed for good.
#[must_use = "a record's outcome is only known by awaiting its DeliveryFuture"]
#[derive(Debug)]
pub struct DeliveryFuture {
    partition: u32,
    rx: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl DeliveryFuture {
    /// The partition the record was queued on.
    pub fn partition(&self) -> u32 {
        self.partition
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(ClientError::Closed)))
    }
}

impl Producer {
    /// A producer using `metadata` (or an [`Admin`](crate::Admin), wrapped in a default
    /// [`MetadataView`]) for partition leaders. Fails on an inconsistent `config`.
    pub fn new(
        metadata: impl Into<MetadataView>,
        config: ProducerConfig,
    ) -> Result<Producer, ClientError> {
        config.validate()?;
        Ok(Producer {
            inner: Arc::new(Inner {
                metadata: metadata.into(),
                chooser: Chooser::new(config.partitioner),
                memory: Arc::new(Semaphore::new(config.buffer_max_bytes)),
                config: Arc::new(config),
                queues: Mutex::default(),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// The metadata view in use.
    pub fn metadata(&self) -> &MetadataView {
        &self.inner.metadata
    }

    /// Bytes of records queued or in flight (at most `buffer_max_bytes`).
    pub fn buffered_bytes(&self) -> usize {
        self.inner.config.buffer_max_bytes - self.inner.memory.available_permits()
    }

    /// Queues `record` for `topic`, on `partition` or the one the partitioner picks, and
    /// returns its [`DeliveryFuture`]. Waits while the memory budget is full. The record's
    /// place in its partition's order is fixed when this returns.
    ///
    /// Fails at once with `NotFound` (unknown topic or partition), `TooLarge` (over
    /// `max_record_bytes`), `Closed`, or a metadata error when the topic's partitions cannot
    /// be learned.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<u32>,
        record: Record,
    ) -> Result<DeliveryFuture, ClientError> {
        let inner = &self.inner;
        if inner.lock_queues().closed {
            return Err(ClientError::Closed);
        }
        let partitions = inner.metadata.partition_count(topic).await?;
        let partition = match partition {
            Some(p) if p < partitions => p,
            Some(p) => {
                return Err(ClientError::NotFound {
                    what: format!(
                        "partition {p} of topic {topic:?} (it has {partitions} partitions)"
                    ),
                });
            }
            None => inner.chooser.choose(record.key_bytes(), partitions),
        };
        let record = record.into_wire();
        let size_bytes = record.encoded_len() + RECORD_OVERHEAD_BYTES;
        if size_bytes > inner.config.max_record_bytes {
            return Err(ClientError::TooLarge {
                message: format!(
                    "a record of {size_bytes} bytes exceeds max_record_bytes {}",
                    inner.config.max_record_bytes
                ),
            });
        }
        let memory = inner
            .memory
            .clone()
            .acquire_many_owned(size_bytes as u32)
            .await
            .map_err(|_| ClientError::Closed)?;
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            record,
            size_bytes,
            enqueued_at: Instant::now(),
            reply,
            memory: Some(memory),
        };
        self.enqueue(topic, partition, Msg::Record(pending))?;
        Ok(DeliveryFuture { partition, rx })
    }

    /// [`send`](Self::send) and wait for the delivery: one record at a time, for callers that
    /// do not pipeline.
    pub async fn send_and_wait(
        &self,
        topic: &str,
        partition: Option<u32>,
        record: Record,
    ) -> Result<RecordMetadata, ClientError> {
        self.send(topic, partition, record).await?.await
    }

    /// Sends every queued record now (no linger) and returns once each record queued before
    /// this call is delivered or failed (see their futures for which).
    pub async fn flush(&self) {
        let markers: Vec<oneshot::Receiver<()>> = {
            let queues = self.inner.lock_queues();
            queues
                .by_topic
                .values()
                .flat_map(HashMap::values)
                .filter_map(|queue| {
                    let (marker, done) = oneshot::channel();
                    queue.send(Msg::Flush(marker)).ok().map(|_| done)
                })
                .collect()
        };
        for done in markers {
            let _ = done.await;
        }
    }

    /// Stops accepting records (`send` fails with `Closed`, also a `send` waiting for
    /// memory), sends everything queued and returns once every record is delivered or failed.
    /// Idempotent; affects every clone.
    pub async fn close(&self) {
        self.inner.memory.close();
        let tasks = {
            let mut queues = self.inner.lock_queues();
            queues.closed = true;
            queues.by_topic.clear();
            std::mem::take(&mut queues.tasks)
        };
        for task in tasks {
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!("a producer partition task panicked: {e}");
            }
        }
    }

    /// Puts `msg` on the queue of `topic`-`partition`, starting its task on first use.
    fn enqueue(&self, topic: &str, partition: u32, msg: Msg) -> Result<(), ClientError> {
        let inner = &self.inner;
        let mut queues = inner.lock_queues();
        if queues.closed {
            return Err(ClientError::Closed);
        }
        let existing = queues
            .by_topic
            .get(topic)
            .and_then(|partitions| partitions.get(&partition));
        let msg = match existing {
            Some(queue) => match queue.send(msg) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(msg)) => msg,
            },
            None => msg,
        };
        // No queue yet (or its task is gone): start one.
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(PartitionCtx {
            topic: topic.to_string(),
            partition,
            metadata: inner.metadata.clone(),
            config: inner.config.clone(),
        });
        queues.tasks.retain(|task| !task.is_finished());
        queues
            .tasks
            .push(tokio::spawn(partition_task::run(ctx, rx)));
        tx.send(msg).map_err(|_| ClientError::Closed)?;
        queues
            .by_topic
            .entry(topic.to_string())
            .or_default()
            .insert(partition, tx);
        Ok(())
    }
}

impl Inner {
    fn lock_queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
