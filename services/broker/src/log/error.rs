//! Why a partition log operation failed.

use std::io;
use std::path::PathBuf;

use super::batch::BatchError;

/// A partition log failure. The variants up to [`LogError::Failed`] concern the store (stop
/// writing, restart the broker); the others are about one request or one partition.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// sled failed: what is on disk after a failed write is unknown; restart the broker.
    #[error("sled failed on the log store in {}: {source}", path.display())]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// A file system call failed (a failed sync leaves what is on disk unknown: restart).
    #[error("I/O error on the log store in {} while trying to {op}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The data directory was written by an earlier build that kept record data in sled.
    #[error(
        "the log store in {} has the old layout ({detail}); this broker keeps record data in \
         segment files and does not migrate: move or delete that directory (its partitions \
         re-replicate from the other brokers) and start again",
        path.display()
    )]
    OldLayout { path: PathBuf, detail: String },
    /// An earlier write or sync failed; the store refuses writes until the broker restarts.
    #[error(
        "an earlier write or sync of the log store in {} failed, so what is on disk is \
         unknown: restart the broker",
        path.display()
    )]
    Failed { path: PathBuf },
    /// Stored data failed its checksum or the layout's rules; it was not served. The partition
    /// must be re-replicated from another replica (delete its data on this broker).
    #[error(
        "corrupt data in partition {topic}-{partition} (topic id {topic_id}){}: {detail}",
        offset.map(|o| format!(" at offset {o}")).unwrap_or_default()
    )]
    Corrupt {
        topic: String,
        topic_id: u64,
        partition: u32,
        /// The base offset of the corrupt batch, when a batch is concerned.
        offset: Option<u64>,
        detail: String,
    },
    /// The partition was deleted (its topic was removed).
    #[error("partition {topic}-{partition} (topic id {topic_id}) was deleted")]
    Deleted {
        topic: String,
        topic_id: u64,
        partition: u32,
    },
    /// A read or a truncation named an offset outside `[log_start_offset, log_end_offset]`.
    #[error(
        "offset {offset} is out of range for partition {topic}-{partition}: the valid range is \
         {log_start_offset}..={log_end_offset}"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        log_start_offset: u64,
        log_end_offset: u64,
    },
    /// Records or a batch that cannot be appended (too large, empty, malformed).
    #[error("invalid records: {0}")]
    InvalidBatch(#[from] BatchError),
    /// A leader appended with an epoch older than one already in the log: it was fenced.
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    StaleLeaderEpoch { epoch: u64, latest: u64 },
    /// A replicated batch does not start at the log end offset.
    #[error("a replicated batch starts at offset {base_offset}, the log ends at {log_end_offset}")]
    NotContiguous {
        base_offset: u64,
        log_end_offset: u64,
    },
    /// The high watermark cannot pass the log end offset.
    #[error("high watermark {high_watermark} is above the log end offset {log_end_offset}")]
    HighWatermarkAboveLogEnd {
        high_watermark: u64,
        log_end_offset: u64,
    },
    /// Committed data (below the high watermark) is never truncated: a caller bug.
    #[error("refusing to truncate to {offset}, below the high watermark {high_watermark}")]
    TruncateBelowHighWatermark { offset: u64, high_watermark: u64 },
    /// A setting is out of range.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
}
