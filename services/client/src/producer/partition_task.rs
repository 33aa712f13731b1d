//! One partition's sender: batches its queue and sends the batches to the partition leader,
//! at most `max_in_flight_per_partition` at a time, each retried as a whole.

use std::sync::Arc;

use dmq_proto::v1 as pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::Request;

use super::accumulator::{Accumulator, Msg, Pending};
use crate::leader_call::{Target, call_partition_leader};
use crate::{Acks, MetadataView, ProducerConfig, RecordMetadata};

/// What every batch of one partition shares.
pub(crate) struct PartitionCtx {
    pub topic: String,
    pub partition: u32,
    pub metadata: MetadataView,
    pub config: Arc<ProducerConfig>,
}

/// Runs until the queue is closed and every batch taken from it is delivered or failed.
///
/// Ordering: a batch takes an in-flight slot before it is sent and gives it back only when
/// its outcome is reported, and slots are taken in queue order. With one slot (the default),
/// batch N+1 is therefore not sent before batch N is acknowledged or has failed for good, and
/// a retry resends the same batch: records of a partition are appended in `send` order.
pub(crate) async fn run(ctx: Arc<PartitionCtx>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let slots_max = ctx.config.max_in_flight_per_partition.max(1);
    let slots = Arc::new(Semaphore::new(slots_max));
    let mut accumulator = Accumulator::new(ctx.config.linger, ctx.config.batch_max_bytes);
    while let Some(mut batch) = accumulator.next_batch(&mut rx).await {
        if !batch.records.is_empty() {
            let slot = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the slots are never closed");
            accumulator.top_up(&mut rx, &mut batch);
            tokio::spawn(deliver(ctx.clone(), batch.records, slot));
        }
        if !batch.flush.is_empty() {
            // Every batch before the markers holds or held a slot: all slots free = all done.
            let all = slots.acquire_many(slots_max as u32).await;
            drop(all);
            for marker in batch.flush {
                let _ = marker.send(());
            }
        }
    }
    let _ = slots.acquire_many(slots_max as u32).await;
}

/// Sends one batch (retrying it whole by the rules of `leader_call`) and reports the outcome
/// to each of its records; then frees their memory and the in-flight slot.
async fn deliver(ctx: Arc<PartitionCtx>, batch: Vec<Pending>, _slot: OwnedSemaphorePermit) {
    let config = &ctx.config;
    let mut replies = Vec::with_capacity(batch.len());
    let mut records = Vec::with_capacity(batch.len());
    for pending in batch {
        records.push(pending.record);
        replies.push((pending.reply, pending.memory));
    }
    let count = records.len() as u64;
    let request = pb::ProduceRequest {
        topic: ctx.topic.clone(),
        partition: ctx.partition,
        acks: config.acks.wire() as i32,
        records,
        timeout_ms: config.broker_timeout_ms(),
    };
    let target = Target {
        topic: &ctx.topic,
        partition: ctx.partition,
        offset: 0,
        produce: Some(config.retry_unknown_outcomes),
    };
    let result = call_partition_leader(
        &ctx.metadata,
        target,
        &config.retry,
        config.request_timeout,
        |mut client, timeout| {
            let mut request = Request::new(request.clone());
            request.set_timeout(timeout);
            async move { client.produce(request).await }
        },
    )
    .await;
    match result {
        Ok(response) => {
            let with_offsets = config.acks != Acks::None;
            if with_offsets && response.last_offset + 1 != response.base_offset + count {
                tracing::warn!(
                    topic = %ctx.topic,
                    partition = ctx.partition,
                    base = response.base_offset,
                    last = response.last_offset,
                    count,
                    "Produce answered an offset range that does not match the batch"
                );
            }
            for (i, (reply, _memory)) in replies.into_iter().enumerate() {
                let _ = reply.send(Ok(RecordMetadata {
                    partition: ctx.partition,
                    offset: with_offsets.then_some(response.base_offset + i as u64),
                }));
            }
        }
        Err(error) => {
            tracing::debug!(topic = %ctx.topic, partition = ctx.partition, %error, records = count, "batch failed");
            for (reply, _memory) in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
