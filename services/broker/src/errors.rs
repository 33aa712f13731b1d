//! Data-plane errors and the one place that turns them into gRPC statuses (the conventions at
//! the top of the "Data plane" section of broker.proto, which `dmq_client::ClientError` reads).
//!
//! | error | code | `ErrorInfo` reason (domain `dmq.v1`) and metadata |
//! |---|---|---|
//! | [`DataError::UnknownTopic`], [`DataError::UnknownPartition`], [`DataError::TopicIdMismatch`] | NOT_FOUND | `UNKNOWN_TOPIC_OR_PARTITION` |
//! | [`DataError::NotLeader`] | FAILED_PRECONDITION | `NOT_LEADER_FOR_PARTITION`: `leader_id` (0: none), `leader_address`, `leader_epoch`; plus the `x-partition-leader` header |
//! | [`DataError::NotEnoughReplicas`] | UNAVAILABLE | `NOT_ENOUGH_REPLICAS`: `isr_size`, `min_insync_replicas` (nothing appended) |
//! | [`DataError::NotEnoughReplicasAfterAppend`] | UNAVAILABLE | `NOT_ENOUGH_REPLICAS_AFTER_APPEND`: `isr_size`, `min_insync_replicas`, `base_offset`, `last_offset` (outcome unknown) |
//! | [`DataError::LeaderChangedAfterAppend`] | UNAVAILABLE | `LEADER_CHANGED_AFTER_APPEND`: as NOT_LEADER, plus `base_offset`, `last_offset` (outcome unknown) |
//! | [`DataError::OffsetOutOfRange`] | OUT_OF_RANGE | `OFFSET_OUT_OF_RANGE`: `log_start_offset`, `high_watermark`, `log_end_offset` |
//! | [`DataError::RecordTooLarge`], [`DataError::InvalidRequest`] | INVALID_ARGUMENT | `RECORD_TOO_LARGE` / `INVALID_REQUEST` |
//! | [`DataError::RequestTooLarge`] | RESOURCE_EXHAUSTED | `REQUEST_TOO_LARGE` |
//! | [`DataError::ReplicationTimeout`] | DEADLINE_EXCEEDED | `REPLICATION_TIMEOUT` (outcome unknown) |
//! | [`DataError::Overloaded`] | RESOURCE_EXHAUSTED | `BROKER_OVERLOADED`: `memory_budget_bytes` (nothing appended) |
//! | [`DataError::StaleBrokerEpoch`] | FAILED_PRECONDITION | `STALE_BROKER_EPOCH`: `broker_epoch` (the one the metadata lists) |
//! | [`DataError::FencedLeaderEpoch`] | FAILED_PRECONDITION | `FENCED_LEADER_EPOCH`: `leader_epoch` (the leader's) |
//! | [`DataError::UnknownLeaderEpoch`], [`DataError::NotReady`] | UNAVAILABLE | `UNKNOWN_LEADER_EPOCH` / `NOT_READY` |
//! | [`DataError::Log`] | by the log error: corrupt data DATA_LOSS, a deleted partition NOT_FOUND, a stale epoch UNAVAILABLE, store failures INTERNAL | `LOG_ERROR` |
//! | [`DataError::Storage`] | UNAVAILABLE | `STORAGE_FAILED` (nothing appended) |
//! | [`DataError::StorageAfterAppend`] | UNAVAILABLE | `STORAGE_FAILED_AFTER_APPEND` (outcome unknown) |
//!
//! Every Produce error says by its reason alone whether the records were certainly not
//! appended (safe to retry) or the outcome is unknown ([`DataError::outcome_unknown`]).

use std::collections::HashMap;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::log::{BatchError, LogError};

/// The `ErrorInfo` domain of every DistributedMQ error.
pub const ERROR_DOMAIN: &str = "dmq.v1";
/// The ASCII metadata key naming the partition leader's address (as `dmq_client` reads it).
pub const PARTITION_LEADER_METADATA_KEY: &str = "x-partition-leader";
pub const REASON_NOT_LEADER_FOR_PARTITION: &str = "NOT_LEADER_FOR_PARTITION";
pub const REASON_NOT_ENOUGH_REPLICAS: &str = "NOT_ENOUGH_REPLICAS";
pub const REASON_OFFSET_OUT_OF_RANGE: &str = "OFFSET_OUT_OF_RANGE";
pub const REASON_FENCED_LEADER_EPOCH: &str = "FENCED_LEADER_EPOCH";
pub const REASON_UNKNOWN_LEADER_EPOCH: &str = "UNKNOWN_LEADER_EPOCH";
pub const REASON_NOT_ENOUGH_REPLICAS_AFTER_APPEND: &str = "NOT_ENOUGH_REPLICAS_AFTER_APPEND";
pub const REASON_LEADER_CHANGED_AFTER_APPEND: &str = "LEADER_CHANGED_AFTER_APPEND";
pub const REASON_REPLICATION_TIMEOUT: &str = "REPLICATION_TIMEOUT";
pub const REASON_STORAGE_FAILED: &str = "STORAGE_FAILED";
pub const REASON_STORAGE_FAILED_AFTER_APPEND: &str = "STORAGE_FAILED_AFTER_APPEND";
pub const REASON_BROKER_OVERLOADED: &str = "BROKER_OVERLOADED";
pub const REASON_STALE_BROKER_EPOCH: &str = "STALE_BROKER_EPOCH";

/// Who leads a partition, as this broker's metadata says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderHint {
    /// 0: no leader.
    pub id: u64,
    /// `host:port`; empty when unknown.
    pub address: String,
    pub epoch: u64,
}

/// Why a data-plane request failed. `Display` is the status message.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("unknown topic {topic:?}")]
    UnknownTopic { topic: String },
    #[error("topic {topic:?} has {partitions} partitions; there is no partition {partition}")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: usize,
    },
    #[error(
        "partition {topic}-{partition} is topic id {held} here, not {asked} (the topic was \
         re-created)"
    )]
    TopicIdMismatch {
        topic: String,
        partition: u32,
        held: u64,
        asked: u64,
    },
    #[error("{}", not_leader_message(.topic, *.partition, .leader))]
    NotLeader {
        topic: String,
        partition: u32,
        leader: LeaderHint,
    },
    /// acks=ALL refused before anything was appended: the ISR is below `min_insync_replicas`.
    #[error("{}", not_enough_message(.topic, *.partition, *.isr_size, *.min_insync_replicas))]
    NotEnoughReplicas {
        topic: String,
        partition: u32,
        isr_size: usize,
        min_insync_replicas: usize,
    },
    /// The ISR shrank below `min_insync_replicas` while acks=ALL waited (Kafka's
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND): the records were appended; outcome unknown.
    #[error(
        "the ISR of {topic}-{partition} shrank to {isr_size}, below min_insync_replicas \
         {min_insync_replicas}, while acks=ALL waited: offsets {base_offset}..={last_offset} \
         were appended and may still become visible (retrying may duplicate them)"
    )]
    NotEnoughReplicasAfterAppend {
        topic: String,
        partition: u32,
        isr_size: usize,
        min_insync_replicas: usize,
        base_offset: u64,
        last_offset: u64,
    },
    /// The leadership that appended ended before the records were committed: they may be
    /// committed by the next leader, or dropped; outcome unknown.
    #[error(
        "this broker stopped leading {topic}-{partition} before offsets \
         {base_offset}..={last_offset} were committed: they may or may not become visible \
         (retrying may duplicate them); {}",
        leader_hint_text(.leader)
    )]
    LeaderChangedAfterAppend {
        topic: String,
        partition: u32,
        base_offset: u64,
        last_offset: u64,
        leader: LeaderHint,
    },
    #[error(
        "offset {offset} is out of range for {topic}-{partition}: valid offsets are \
         {log_start_offset} to {high_watermark} (log end {log_end_offset})"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        log_start_offset: u64,
        high_watermark: u64,
        log_end_offset: u64,
    },
    #[error(
        "a record of {size} bytes (encoded) is larger than the limit of {max} bytes \
         (max record bytes, or the topic's max_message_bytes)"
    )]
    RecordTooLarge { size: usize, max: usize },
    #[error(
        "the request carries {size} bytes of records, more than the limit of {max} bytes \
         (max request bytes): send fewer records per request"
    )]
    RequestTooLarge { size: usize, max: usize },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(
        "offsets {base_offset}..={last_offset} of {topic}-{partition} were appended but not \
         replicated to every in-sync replica within {timeout_ms} ms; they may still become \
         visible (retrying may duplicate them)"
    )]
    ReplicationTimeout {
        topic: String,
        partition: u32,
        base_offset: u64,
        last_offset: u64,
        timeout_ms: u64,
    },
    #[error(
        "leader epoch {given} of {topic}-{partition} is stale: the current one is {current}; \
         refresh the metadata"
    )]
    FencedLeaderEpoch {
        topic: String,
        partition: u32,
        given: u64,
        current: u64,
    },
    #[error(
        "leader epoch {given} of {topic}-{partition} is newer than this leader's {current} \
         (its metadata lags); retry shortly"
    )]
    UnknownLeaderEpoch {
        topic: String,
        partition: u32,
        given: u64,
        current: u64,
    },
    /// The partition is changing role (e.g. becoming leader) or the broker is starting.
    #[error("{0}; retry shortly")]
    NotReady(String),
    /// The broker's memory budget for requests in flight is spent: nothing was done.
    #[error(
        "the broker is overloaded: this request needs {needed} bytes of its {budget} byte \
         memory budget for requests in flight, and the budget is spent; nothing was \
         appended: retry with backoff, or send smaller requests"
    )]
    Overloaded { needed: usize, budget: usize },
    /// A ReplicaFetch by an incarnation of a broker that is not the one the metadata lists.
    #[error(
        "broker {broker_id} fetched with broker epoch {given}, but the metadata here lists \
         epoch {current}: this incarnation's progress is not counted (register again, or wait \
         for this leader's metadata to catch up)"
    )]
    StaleBrokerEpoch {
        broker_id: u64,
        given: u64,
        current: u64,
    },
    #[error(transparent)]
    Log(#[from] LogError),
    /// The log store failed earlier and refuses writes: nothing was appended. The broker gives
    /// up its leaderships and stops.
    #[error(
        "the log store of this broker failed: {0}; nothing was appended (the broker is stopping)"
    )]
    Storage(String),
    /// Writing or syncing the log failed after the append began: what is on disk is unknown,
    /// so the records may or may not become visible. The broker gives up its leaderships.
    #[error(
        "the log store failed while writing or syncing appended records: {0}; they may or may \
         not become visible (retrying may duplicate them)"
    )]
    StorageAfterAppend(String),
}

fn not_leader_message(topic: &str, partition: u32, leader: &LeaderHint) -> String {
    if leader.id == 0 {
        format!("this broker does not lead {topic}-{partition}, which has no leader right now")
    } else {
        format!(
            "this broker does not lead {topic}-{partition}; its leader is broker {} at {} \
             (leader epoch {})",
            leader.id, leader.address, leader.epoch
        )
    }
}

fn leader_hint_text(leader: &LeaderHint) -> String {
    if leader.id == 0 {
        "no leader is known right now".to_string()
    } else {
        format!(
            "the leader is broker {} at {} (leader epoch {})",
            leader.id, leader.address, leader.epoch
        )
    }
}

fn not_enough_message(topic: &str, partition: u32, isr_size: usize, min: usize) -> String {
    format!(
        "the ISR of {topic}-{partition} has {isr_size} replicas, fewer than \
         min_insync_replicas {min}: nothing was appended; retry once replicas catch up"
    )
}

impl DataError {
    /// Whether a Produce that failed with this error may have appended its records (they may
    /// still become visible): the client must not take it for a refusal.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            DataError::NotEnoughReplicasAfterAppend { .. }
                | DataError::LeaderChangedAfterAppend { .. }
                | DataError::ReplicationTimeout { .. }
                | DataError::StorageAfterAppend(_)
        )
    }

    /// A short label for metrics (`outcome`).
    pub fn label(&self) -> &'static str {
        match self {
            DataError::UnknownTopic { .. }
            | DataError::UnknownPartition { .. }
            | DataError::TopicIdMismatch { .. } => "not_found",
            DataError::NotLeader { .. } => "not_leader",
            DataError::NotEnoughReplicas { .. } => "not_enough_replicas",
            DataError::NotEnoughReplicasAfterAppend { .. } => "not_enough_replicas_after_append",
            DataError::LeaderChangedAfterAppend { .. } => "leader_changed_after_append",
            DataError::Overloaded { .. } => "overloaded",
            DataError::StaleBrokerEpoch { .. } => "stale_broker_epoch",
            DataError::StorageAfterAppend(_) => "storage_failed_after_append",
            DataError::OffsetOutOfRange { .. } => "out_of_range",
            DataError::RecordTooLarge { .. }
            | DataError::RequestTooLarge { .. }
            | DataError::InvalidRequest(_) => "invalid",
            DataError::ReplicationTimeout { .. } => "timeout",
            DataError::FencedLeaderEpoch { .. } | DataError::UnknownLeaderEpoch { .. } => "epoch",
            DataError::NotReady(_) => "not_ready",
            DataError::Log(_) | DataError::Storage(_) => "error",
        }
    }

    /// The gRPC code, as in the module table.
    pub fn code(&self) -> Code {
        match self {
            DataError::UnknownTopic { .. }
            | DataError::UnknownPartition { .. }
            | DataError::TopicIdMismatch { .. } => Code::NotFound,
            DataError::NotLeader { .. }
            | DataError::FencedLeaderEpoch { .. }
            | DataError::StaleBrokerEpoch { .. } => Code::FailedPrecondition,
            DataError::NotEnoughReplicas { .. }
            | DataError::NotEnoughReplicasAfterAppend { .. }
            | DataError::LeaderChangedAfterAppend { .. }
            | DataError::UnknownLeaderEpoch { .. }
            | DataError::NotReady(_)
            | DataError::Storage(_)
            | DataError::StorageAfterAppend(_) => Code::Unavailable,
            DataError::Overloaded { .. } => Code::ResourceExhausted,
            DataError::OffsetOutOfRange { .. } => Code::OutOfRange,
            DataError::RecordTooLarge { .. } | DataError::InvalidRequest(_) => {
                Code::InvalidArgument
            }
            DataError::RequestTooLarge { .. } => Code::ResourceExhausted,
            DataError::ReplicationTimeout { .. } => Code::DeadlineExceeded,
            DataError::Log(e) => match e {
                LogError::Corrupt { .. } => Code::DataLoss,
                LogError::Deleted { .. } => Code::NotFound,
                LogError::OffsetOutOfRange { .. } => Code::OutOfRange,
                LogError::InvalidBatch(BatchError::RecordTooLarge { .. }) => Code::InvalidArgument,
                LogError::InvalidBatch(BatchError::TooLarge(_)) => Code::ResourceExhausted,
                LogError::InvalidBatch(_) => Code::InvalidArgument,
                LogError::StaleLeaderEpoch { .. } => Code::Unavailable,
                _ => Code::Internal,
            },
        }
    }
}

fn info(reason: &str, metadata: &[(&str, String)]) -> ErrorDetails {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata)
}

impl From<DataError> for Status {
    fn from(error: DataError) -> Status {
        let code = error.code();
        let message = error.to_string();
        let leader_headers = |leader: &LeaderHint| {
            let mut headers = MetadataMap::new();
            if !leader.address.is_empty()
                && leader.address.is_ascii()
                && let Ok(value) = MetadataValue::try_from(leader.address.as_str())
            {
                headers.insert(PARTITION_LEADER_METADATA_KEY, value);
            }
            headers
        };
        let leader_info = |leader: &LeaderHint| {
            vec![
                ("leader_id", leader.id.to_string()),
                ("leader_address", leader.address.clone()),
                ("leader_epoch", leader.epoch.to_string()),
            ]
        };
        let details = match &error {
            DataError::NotLeader { leader, .. } => {
                let details = info(REASON_NOT_LEADER_FOR_PARTITION, &leader_info(leader));
                return Status::with_error_details_and_metadata(
                    code,
                    message,
                    details,
                    leader_headers(leader),
                );
            }
            DataError::LeaderChangedAfterAppend {
                leader,
                base_offset,
                last_offset,
                ..
            } => {
                let mut metadata = leader_info(leader);
                metadata.push(("base_offset", base_offset.to_string()));
                metadata.push(("last_offset", last_offset.to_string()));
                let details = info(REASON_LEADER_CHANGED_AFTER_APPEND, &metadata);
                return Status::with_error_details_and_metadata(
                    code,
                    message,
                    details,
                    leader_headers(leader),
                );
            }
            DataError::NotEnoughReplicas {
                isr_size,
                min_insync_replicas,
                ..
            } => info(
                REASON_NOT_ENOUGH_REPLICAS,
                &[
                    ("isr_size", isr_size.to_string()),
                    ("min_insync_replicas", min_insync_replicas.to_string()),
                ],
            ),
            DataError::NotEnoughReplicasAfterAppend {
                isr_size,
                min_insync_replicas,
                base_offset,
                last_offset,
                ..
            } => info(
                REASON_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                &[
                    ("isr_size", isr_size.to_string()),
                    ("min_insync_replicas", min_insync_replicas.to_string()),
                    ("base_offset", base_offset.to_string()),
                    ("last_offset", last_offset.to_string()),
                ],
            ),
            DataError::Overloaded { budget, .. } => info(
                REASON_BROKER_OVERLOADED,
                &[("memory_budget_bytes", budget.to_string())],
            ),
            DataError::StaleBrokerEpoch { current, .. } => info(
                REASON_STALE_BROKER_EPOCH,
                &[("broker_epoch", current.to_string())],
            ),
            DataError::StorageAfterAppend(_) => info(REASON_STORAGE_FAILED_AFTER_APPEND, &[]),
            DataError::OffsetOutOfRange {
                log_start_offset,
                high_watermark,
                log_end_offset,
                ..
            } => info(
                REASON_OFFSET_OUT_OF_RANGE,
                &[
                    ("log_start_offset", log_start_offset.to_string()),
                    ("high_watermark", high_watermark.to_string()),
                    ("log_end_offset", log_end_offset.to_string()),
                ],
            ),
            DataError::FencedLeaderEpoch { current, .. } => info(
                REASON_FENCED_LEADER_EPOCH,
                &[("leader_epoch", current.to_string())],
            ),
            DataError::UnknownLeaderEpoch { current, .. } => info(
                REASON_UNKNOWN_LEADER_EPOCH,
                &[("leader_epoch", current.to_string())],
            ),
            DataError::UnknownTopic { .. }
            | DataError::UnknownPartition { .. }
            | DataError::TopicIdMismatch { .. } => info("UNKNOWN_TOPIC_OR_PARTITION", &[]),
            DataError::RecordTooLarge { max, .. } => {
                info("RECORD_TOO_LARGE", &[("max_record_bytes", max.to_string())])
            }
            DataError::RequestTooLarge { max, .. } => info(
                "REQUEST_TOO_LARGE",
                &[("max_request_bytes", max.to_string())],
            ),
            DataError::InvalidRequest(_) => info("INVALID_REQUEST", &[]),
            DataError::ReplicationTimeout {
                base_offset,
                last_offset,
                ..
            } => info(
                REASON_REPLICATION_TIMEOUT,
                &[
                    ("base_offset", base_offset.to_string()),
                    ("last_offset", last_offset.to_string()),
                ],
            ),
            DataError::NotReady(_) => info("NOT_READY", &[]),
            DataError::Log(_) => info("LOG_ERROR", &[]),
            DataError::Storage(_) => info(REASON_STORAGE_FAILED, &[]),
        };
        Status::with_error_details(code, message, details)
    }
}

/// The reason and metadata of a data-plane status (what a follower reads back).
pub fn error_info(status: &Status) -> Option<(String, HashMap<String, String>)> {
    status
        .get_details_error_info()
        .map(|i| (i.reason, i.metadata))
}

/// A number from a status's `ErrorInfo` metadata.
pub fn info_number(status: &Status, key: &str) -> Option<u64> {
    error_info(status)?.1.get(key)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use dmq_client::{ClientError, partition_leader_hint};

    use super::*;

    fn client(error: DataError) -> ClientError {
        ClientError::from_broker_status(Status::from(error), "b1:9092", "t", 2, 50)
    }

    #[test]
    fn the_client_reads_what_the_broker_says() {
        let status = Status::from(DataError::NotLeader {
            topic: "t".into(),
            partition: 2,
            leader: LeaderHint {
                id: 3,
                address: "b3:9092".into(),
                epoch: 7,
            },
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status
                .metadata()
                .get(PARTITION_LEADER_METADATA_KEY)
                .unwrap(),
            "b3:9092"
        );
        let hint = partition_leader_hint(&status).unwrap();
        assert_eq!(
            (
                hint.leader_id,
                hint.leader_address.as_deref(),
                hint.leader_epoch
            ),
            (3, Some("b3:9092"), 7)
        );
        let none = Status::from(DataError::NotLeader {
            topic: "t".into(),
            partition: 2,
            leader: LeaderHint::default(),
        });
        assert!(none.metadata().get(PARTITION_LEADER_METADATA_KEY).is_none());
        assert_eq!(partition_leader_hint(&none).unwrap().leader_id, 0);
        assert!(matches!(
            ClientError::from_broker_status(none, "b1:9092", "t", 2, 0),
            ClientError::NotLeader { .. }
        ));

        let range = client(DataError::OffsetOutOfRange {
            topic: "t".into(),
            partition: 2,
            offset: 50,
            log_start_offset: 10,
            high_watermark: 40,
            log_end_offset: 45,
        });
        assert!(
            matches!(
                range,
                ClientError::OffsetOutOfRange {
                    offset: 50,
                    log_start: 10,
                    high_watermark: 40,
                    ..
                }
            ),
            "{range:?}"
        );
        let isr = client(DataError::NotEnoughReplicas {
            topic: "t".into(),
            partition: 2,
            isr_size: 1,
            min_insync_replicas: 2,
        });
        assert!(
            matches!(isr, ClientError::NotEnoughReplicas { .. }),
            "{isr:?}"
        );
        assert!(isr.is_retryable() && !isr.outcome_unknown());
        assert!(matches!(
            client(DataError::RecordTooLarge { size: 9, max: 8 }),
            ClientError::InvalidArgument { .. }
        ));
        assert!(matches!(
            client(DataError::RequestTooLarge { size: 9, max: 8 }),
            ClientError::TooLarge { .. }
        ));
        assert!(matches!(
            client(DataError::UnknownTopic { topic: "t".into() }),
            ClientError::NotFound { .. }
        ));
        let timeout = client(DataError::ReplicationTimeout {
            topic: "t".into(),
            partition: 2,
            base_offset: 1,
            last_offset: 2,
            timeout_ms: 10,
        });
        assert!(timeout.outcome_unknown(), "{timeout:?}");
        assert!(client(DataError::NotReady("becoming leader".into())).is_retryable());
        // A fenced follower is told, and the client would not take it for a redirect.
        let fenced = Status::from(DataError::FencedLeaderEpoch {
            topic: "t".into(),
            partition: 2,
            given: 1,
            current: 4,
        });
        assert!(partition_leader_hint(&fenced).is_none());
        assert_eq!(info_number(&fenced, "leader_epoch"), Some(4));
        assert_eq!(
            error_info(&fenced).unwrap().0,
            REASON_FENCED_LEADER_EPOCH.to_string()
        );
    }

    /// Issue 10, path 12: by the reason alone a client tells "certainly not appended" from
    /// "unknown outcome", for every Produce error the broker can give.
    #[test]
    fn every_produce_error_says_whether_it_may_have_appended() {
        let hint = LeaderHint {
            id: 3,
            address: "b3:9092".into(),
            epoch: 7,
        };
        let t = || "t".to_string();
        let refused = [
            DataError::NotLeader {
                topic: t(),
                partition: 0,
                leader: hint.clone(),
            },
            DataError::NotEnoughReplicas {
                topic: t(),
                partition: 0,
                isr_size: 1,
                min_insync_replicas: 2,
            },
            DataError::NotReady("becoming leader".into()),
            DataError::UnknownTopic { topic: t() },
            DataError::RecordTooLarge { size: 2, max: 1 },
            DataError::RequestTooLarge { size: 2, max: 1 },
            DataError::InvalidRequest("x".into()),
            DataError::Overloaded {
                needed: 2,
                budget: 1,
            },
            DataError::Storage("failed earlier".into()),
        ];
        let unknown = [
            DataError::NotEnoughReplicasAfterAppend {
                topic: t(),
                partition: 0,
                isr_size: 1,
                min_insync_replicas: 2,
                base_offset: 5,
                last_offset: 6,
            },
            DataError::LeaderChangedAfterAppend {
                topic: t(),
                partition: 0,
                base_offset: 5,
                last_offset: 6,
                leader: hint.clone(),
            },
            DataError::ReplicationTimeout {
                topic: t(),
                partition: 0,
                base_offset: 5,
                last_offset: 6,
                timeout_ms: 10,
            },
            DataError::StorageAfterAppend("fsync: EIO".into()),
        ];
        let read = |e: DataError| {
            let status = Status::from(e);
            let reason = error_info(&status).unwrap().0;
            let c = ClientError::from_broker_status(status, "b1:9092", "t", 0, 0);
            (reason, c)
        };
        let mut seen = std::collections::HashSet::new();
        for e in refused {
            assert!(!e.outcome_unknown(), "{e:?}");
            let (reason, c) = read(e);
            assert!(!c.outcome_unknown(), "{reason} read as {c:?}");
            assert!(seen.insert(reason), "reasons are distinct");
        }
        for e in unknown {
            assert!(e.outcome_unknown(), "{e:?}");
            let (reason, c) = read(e);
            assert!(
                matches!(c, ClientError::OutcomeUnknown { .. }) && c.outcome_unknown(),
                "{reason} read as {c:?}"
            );
            assert!(seen.insert(reason), "reasons are distinct");
        }
        // The leader hint travels with a leader change after the append.
        let status = Status::from(DataError::LeaderChangedAfterAppend {
            topic: t(),
            partition: 0,
            base_offset: 5,
            last_offset: 6,
            leader: hint,
        });
        assert_eq!(status.code(), Code::Unavailable);
        let read = partition_leader_hint(&status).unwrap();
        assert_eq!((read.leader_id, read.leader_epoch), (3, 7));
    }

    #[test]
    fn log_errors_keep_their_meaning() {
        let corrupt = DataError::Log(LogError::Corrupt {
            topic: "t".into(),
            topic_id: 1,
            partition: 0,
            offset: Some(5),
            detail: "crc".into(),
        });
        assert_eq!(Status::from(corrupt).code(), Code::DataLoss);
        let large = DataError::Log(LogError::InvalidBatch(BatchError::RecordTooLarge {
            size: 2,
            max: 1,
        }));
        assert_eq!(Status::from(large).code(), Code::InvalidArgument);
        assert_eq!(
            Status::from(DataError::Storage("eio".into())).code(),
            Code::Unavailable
        );
    }
}
