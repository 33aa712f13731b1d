//! The partition log: pure storage of record batches per partition, no networking.
//!
//! - [`batch`]: [`Record`], [`RecordBatch`] in Kafka's RecordBatch v2 layout ([`batch_v2`]);
//!   [`split_into_batches`] for the produce path.
//! - [`segment`]: segment files with their offset indexes, and [`segment::segmented`], a
//!   partition's directory of them (roll, read, truncate, retention, recovery).
//! - [`LogStore`] ([`store`]): every partition's segments, their small state in one sled
//!   database, one group-committed durable sync ([`LogStore::sync`]: `fdatasync` of each
//!   segment file written since the last round).
//! - [`PartitionLog`] ([`partition`]): appends as leader or replica, reads bounded by the high
//!   watermark or the log end, leader-epoch history; truncation and resets (`truncation`);
//!   [`recovery`] at open;
//!   [`retention`]; ListOffsets ([`offsets`]).
//!
//! Every call blocks on files or sled. Syncs, opens, retention and reads of data that may not
//! be cached belong on blocking threads (`spawn_blocking`, the syncer); an append is a short
//! write into the page cache, which the broker's produce path runs inline on purpose (see
//! `data_service`).

pub mod batch;
/// Kafka's RecordBatch v2 codec (the `dmq-recordbatch` crate, shared with the client).
pub use dmq_recordbatch as batch_v2;
pub mod config;
mod durable;
pub mod epochs;
pub mod error;
mod meta;
pub mod offsets;
pub mod partition;
mod recovery;
pub mod retention;
pub mod segment;
pub mod store;
mod truncation;

#[cfg(test)]
mod tests;

pub use batch::{
    BATCH_HEADER_LEN, BatchError, BatchHeader, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_RECORD_BYTES,
    Header, NO_TIMESTAMP, Record, RecordBatch, split_into_batches,
};
pub use config::{
    DEFAULT_CACHE_CAPACITY_BYTES, DEFAULT_RETENTION_BYTES, DEFAULT_RETENTION_MS,
    DEFAULT_SEGMENT_BYTES, DEFAULT_SEGMENT_MS, LogConfig, LogStoreConfig, MAX_RECORD_BYTES_LIMIT,
    UNLIMITED,
};
pub use epochs::EpochEntry;
pub use error::LogError;
pub use offsets::{ListedOffset, OffsetSpec};
pub use partition::{AppendInfo, EncodedBatch, LogOffsets, PartitionLog, ReadBound};
pub use retention::RetentionOutcome;
pub use store::{LogStore, PartitionId};
