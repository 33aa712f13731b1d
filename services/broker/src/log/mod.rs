//! The partition log: pure storage of record batches per partition, no networking.
//!
//! - [`batch`]: [`Record`], [`RecordBatch`] and their CRC32C-checked binary format;
//!   [`split_into_batches`] for the produce path.
//! - [`LogStore`] ([`store`]): all partitions in one sled database, one group-committed durable
//!   sync ([`LogStore::sync`]: flush + blob files + `sync_data` on `<dir>/db`).
//! - [`PartitionLog`] ([`partition`]): appends as leader or replica, reads bounded by the high
//!   watermark or the log end, truncation, leader-epoch history; [`retention`]; ListOffsets
//!   ([`offsets`]).
//!
//! Every call blocks (sled, fsync): use `spawn_blocking` from async code.

mod accounting;
pub mod batch;
pub mod batch_v2;
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
mod varint;

#[cfg(test)]
mod tests;

pub use batch::{
    BATCH_HEADER_LEN, BatchError, BatchHeader, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_RECORD_BYTES,
    Header, NO_TIMESTAMP, Record, RecordBatch, split_into_batches,
};
pub use config::{
    DEFAULT_CACHE_CAPACITY_BYTES, DEFAULT_RETENTION_BYTES, DEFAULT_RETENTION_MS, LogConfig,
    LogStoreConfig, MAX_RECORD_BYTES_LIMIT, UNLIMITED,
};
pub use epochs::EpochEntry;
pub use error::LogError;
pub use offsets::{ListedOffset, OffsetSpec};
pub use partition::{AppendInfo, EncodedBatch, LogOffsets, PartitionLog, ReadBound};
pub use retention::RetentionOutcome;
pub use store::{LogStore, PartitionId};
