//! The DistributedMQ Rust client.
//!
//! - [`discovery`]: finding the controller leader among the configured controllers, keeping
//!   it cached, and the rules for forgetting it (brokers use it too).
//! - [`Admin`]: topics and cluster state from the controller leader, with NOT_LEADER
//!   redirects, rediscovery, bounded retries and a deadline per call.
//! - [`MetadataView`]: the cached cluster metadata the data plane routes by (partition
//!   leaders, broker addresses), refreshed on demand and corrected by NOT_LEADER hints.
//! - [`Producer`]: batched (size, linger), memory-bounded, retried produce that keeps each
//!   partition's record order.
//! - [`Consumer`]: long-poll fetches of assigned partitions from their leaders, following
//!   leader changes.
//! - [`ClientError`]: one error type saying what the caller should do
//!   ([`ClientError::is_retryable`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), dmq_client::ClientError> {
//! use dmq_client::*;
//! let admin = Admin::connect(vec!["127.0.0.1:9000".into()], AdminOptions::default()).await?;
//! admin.create_topic("events", 3, 3, Default::default()).await?;
//! let metadata = MetadataView::from(admin);
//! let producer = Producer::new(metadata.clone(), ProducerConfig::default())?;
//! let delivery = producer.send("events", None, Record::new("hello").with_key("k")).await?;
//! let landed = delivery.await?;
//! producer.close().await;
//! let mut consumer = Consumer::new(metadata, ConsumerConfig::default())?;
//! consumer.assign("events", landed.partition, Start::Beginning).await?;
//! for record in consumer.poll().await? {
//!     println!("{} {:?}", record.offset, record.value);
//! }
//! # Ok(()) }
//! ```

pub mod discovery;

mod admin;
mod consumer;
mod error;
mod leader_call;
mod metadata;
mod partition_hint;
mod partitioner;
mod producer;
mod record;
mod retry;

#[cfg(test)]
mod testing;

/// The generated `dmq.v1` messages (topic metadata, configs, cluster descriptions).
pub use dmq_proto::v1 as pb;

pub use admin::{Admin, AdminOptions};
pub use consumer::decode_batches as decode_raw_fetch;
pub use consumer::{
    Consumer, ConsumerConfig, OffsetReset, PartitionOffsets, Start, TopicPartition,
};
pub use error::{
    ClientError, REASON_CONTROLLER_OVERLOADED, REASON_NO_LEADER, REASON_NOT_ENOUGH_REPLICAS,
    REASON_OFFSET_OUT_OF_RANGE, REASON_OUTCOME_UNKNOWN,
};
pub use metadata::{
    BrokerInfo, ClusterMetadata, MetadataOptions, MetadataView, PartitionInfo, PartitionLeader,
    TopicInfo, broker_address,
};
pub use partition_hint::{
    PARTITION_LEADER_METADATA_KEY, PartitionLeaderHint, REASON_NOT_LEADER_FOR_PARTITION,
    partition_leader_hint,
};
pub use partitioner::{Partitioner, key_partition, murmur2};
pub use producer::{Acks, DeliveryFuture, Producer, ProducerConfig};
pub use record::{ConsumedRecord, Header, Record, RecordMetadata};
pub use retry::RetryPolicy;
