//! [`ClientError`]: why a client call failed, sorted by what the caller should do about it.
//!
//! Every public call of the admin, producer and consumer returns this one type. A variant names
//! the situation (not the gRPC code), [`ClientError::is_retryable`] says whether the same call
//! may succeed later, and `Display` is one line a CLI can print as is.
//!
//! Two readers turn gRPC statuses into it, because the same code means different things on the
//! two planes: [`ClientError::from_controller_status`] (RESOURCE_EXHAUSTED = overloaded, retry)
//! and [`ClientError::from_broker_status`] (RESOURCE_EXHAUSTED = too large, do not retry).

use std::error::Error as _;

use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::discovery::DiscoveryError;

/// `ErrorInfo` reason of a broker refusing acks=ALL because the ISR is below
/// `min_insync_replicas` (nothing was appended).
pub const REASON_NOT_ENOUGH_REPLICAS: &str = "NOT_ENOUGH_REPLICAS";
/// `ErrorInfo` reasons of a Produce whose records were appended but may or may not become
/// visible (broker.proto): the outcome is unknown.
pub const REASONS_AFTER_APPEND: [&str; 4] = [
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "LEADER_CHANGED_AFTER_APPEND",
    "REPLICATION_TIMEOUT",
    "STORAGE_FAILED_AFTER_APPEND",
];
/// `ErrorInfo` reason of a broker whose memory budget for requests in flight is spent
/// (nothing was done; retry with backoff).
pub const REASON_BROKER_OVERLOADED: &str = "BROKER_OVERLOADED";
/// `ErrorInfo` reason of a fetch outside the log; metadata `log_start_offset`, `high_watermark`.
pub const REASON_OFFSET_OUT_OF_RANGE: &str = "OFFSET_OUT_OF_RANGE";
/// `ErrorInfo` reason of a controller that knows no leader (an election is under way) or could
/// not confirm its leadership: nothing was applied.
pub const REASON_NO_LEADER: &str = "NO_LEADER";
/// `ErrorInfo` reason of a controller too busy to take a request: nothing was applied.
pub const REASON_CONTROLLER_OVERLOADED: &str = "CONTROLLER_OVERLOADED";
/// `ErrorInfo` reason of a controller mutation that was proposed but is not known to be
/// committed (timeout, leader change, the controller stopped or its disk failed): it may or
/// may not be applied.
pub const REASON_OUTCOME_UNKNOWN: &str = "OUTCOME_UNKNOWN";

/// A failed client call. Cheap to clone: one batch failure is handed to every record in it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The topic, partition or broker does not exist: check the name, or create it first.
    #[error("not found: {what}")]
    NotFound { what: String },

    /// A topic with this name exists already.
    #[error("already exists: {what}")]
    AlreadyExists { what: String },

    /// The request (or the client configuration) is wrong: fix it, retrying cannot help.
    #[error("invalid argument: {message}")]
    InvalidArgument { message: String },

    /// The request is valid but the cluster's state refuses it (e.g. fewer ONLINE brokers than
    /// the replication factor): change that state first.
    #[error("refused: {message}")]
    FailedPrecondition { message: String },

    /// A record or request exceeds a size limit: make it smaller.
    #[error("too large: {message}")]
    TooLarge { message: String },

    /// No leader right now (a controller election, or a partition whose ISR has no live
    /// replica). Retryable: one is usually elected within seconds.
    #[error("no leader for {what}; retry once one is elected")]
    NoLeader { what: String },

    /// The node asked does not lead (any more) and the redirects ran out. Retryable.
    #[error("not the leader: {message}; retry (the client follows the new leader)")]
    NotLeader { message: String },

    /// The node is up but cannot serve now (starting, shutting down, a commit that did not
    /// finish). Retryable; for a mutation the outcome may be unknown.
    #[error("unavailable: {message}; retry later")]
    Unavailable { message: String },

    /// The controller is too busy to take the request; nothing was applied. Retryable after
    /// a pause.
    #[error("overloaded: {message}; retry later")]
    Overloaded { message: String },

    /// A mutation may or may not have been applied: a controller change proposed but not
    /// known to be committed, or a Produce whose records the broker appended but could not
    /// confirm (the ISR shrank below `min_insync_replicas`, the leader changed, the replication
    /// timed out, its disk failed) — or an earlier attempt of the same batch ended that way, so
    /// the records may become visible later. Retryable, but a retry may apply it twice: check
    /// (or make the retry harmless) first.
    #[error("outcome unknown: {message}")]
    OutcomeUnknown { message: String },

    /// acks=ALL with the ISR below `min_insync_replicas`: nothing was appended. Retryable
    /// once enough replicas are back in sync.
    #[error(
        "not enough in-sync replicas: {message}; retry once replicas catch up, or use fewer acks"
    )]
    NotEnoughReplicas { message: String },

    /// `offset` is outside `[log_start, high_watermark]` of the partition: seek into the range
    /// (earliest `log_start`, latest `high_watermark`).
    #[error(
        "offset {offset} of {topic}-{partition} is out of range: valid offsets are {log_start} \
         to {high_watermark}; seek into that range"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        log_start: u64,
        high_watermark: u64,
    },

    /// The call did not finish in time. Retryable; for a mutation the outcome is unknown (it
    /// may have been applied).
    #[error("timed out: {what}")]
    Timeout { what: String },

    /// The node could not be reached (connection refused or reset, DNS, TLS). Retryable.
    #[error("cannot reach {address}: {message}")]
    Transport { address: String, message: String },

    /// The producer or consumer was closed before the call finished.
    #[error("the client is closed")]
    Closed,

    /// Any other answer (INTERNAL, DATA_LOSS, UNIMPLEMENTED, …), kept whole.
    #[error("{}: {}", .0.code(), .0.message())]
    Other(Status),
}

impl ClientError {
    /// Whether the same call may succeed if tried again later, unchanged. For a Produce see
    /// also [`outcome_unknown`](Self::outcome_unknown): a retry after an unknown outcome may
    /// duplicate records.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::NoLeader { .. }
                | ClientError::NotLeader { .. }
                | ClientError::Unavailable { .. }
                | ClientError::Overloaded { .. }
                | ClientError::OutcomeUnknown { .. }
                | ClientError::NotEnoughReplicas { .. }
                | ClientError::Timeout { .. }
                | ClientError::Transport { .. }
        )
    }

    /// Whether a mutation that failed this way may still have taken effect: an answer that
    /// says so (OUTCOME_UNKNOWN), or one that says nothing about it (an unexplained
    /// UNAVAILABLE, a timeout, a lost connection). Refusals (NOT_LEADER, NO_LEADER,
    /// CONTROLLER_OVERLOADED, INVALID_ARGUMENT, …) were certainly not applied.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::OutcomeUnknown { .. }
                | ClientError::Unavailable { .. }
                | ClientError::Timeout { .. }
                | ClientError::Transport { .. }
        )
    }

    /// Reads a controller's answer. A NOT_LEADER redirect maps to [`ClientError::NotLeader`]
    /// (the admin follows it before ever returning it); `address` is the controller asked.
    pub fn from_controller_status(status: Status, address: &str) -> ClientError {
        let message = status.message().to_string();
        match status.code() {
            Code::NotFound => ClientError::NotFound { what: message },
            Code::AlreadyExists => ClientError::AlreadyExists { what: message },
            Code::InvalidArgument | Code::OutOfRange => ClientError::InvalidArgument { message },
            Code::FailedPrecondition
                if crate::discovery::leader_hint(&status).is_some()
                    || reason(&status).as_deref() == Some("NOT_LEADER") =>
            {
                ClientError::NotLeader { message }
            }
            Code::FailedPrecondition => ClientError::FailedPrecondition { message },
            Code::Unavailable if is_transport(&status) => ClientError::Transport {
                address: address.to_string(),
                message: transport_message(&status),
            },
            Code::Unavailable if reason(&status).as_deref() == Some(REASON_NO_LEADER) => {
                ClientError::NoLeader {
                    what: "the controllers (an election is under way)".into(),
                }
            }
            Code::Unavailable if reason(&status).as_deref() == Some(REASON_OUTCOME_UNKNOWN) => {
                ClientError::OutcomeUnknown { message }
            }
            // A controller refuses what it cannot take before proposing it.
            Code::ResourceExhausted => ClientError::Overloaded { message },
            Code::Unavailable | Code::Aborted | Code::Cancelled | Code::Unknown => {
                ClientError::Unavailable { message }
            }
            Code::DeadlineExceeded => ClientError::Timeout {
                what: format!("controller {address}: {message}"),
            },
            _ => ClientError::Other(status),
        }
    }

    /// Reads a broker's data-plane answer for `topic`-`partition` (the conventions at the top of
    /// the "Data plane" section of broker.proto); `address` is the broker asked and `offset`
    /// the offset a fetch asked for (for [`ClientError::OffsetOutOfRange`]).
    pub fn from_broker_status(
        status: Status,
        address: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> ClientError {
        let message = status.message().to_string();
        let reason = reason(&status);
        if reason
            .as_deref()
            .is_some_and(|r| REASONS_AFTER_APPEND.contains(&r))
        {
            return ClientError::OutcomeUnknown { message };
        }
        match status.code() {
            Code::NotFound => ClientError::NotFound { what: message },
            Code::InvalidArgument => ClientError::InvalidArgument { message },
            Code::ResourceExhausted if reason.as_deref() == Some(REASON_BROKER_OVERLOADED) => {
                ClientError::Overloaded { message }
            }
            Code::ResourceExhausted => ClientError::TooLarge { message },
            Code::FailedPrecondition
                if crate::partition_hint::partition_leader_hint(&status).is_some() =>
            {
                ClientError::NotLeader { message }
            }
            Code::FailedPrecondition => ClientError::FailedPrecondition { message },
            Code::OutOfRange => {
                let (log_start, high_watermark) = offset_range(&status).unwrap_or((0, 0));
                ClientError::OffsetOutOfRange {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    log_start,
                    high_watermark,
                }
            }
            Code::Unavailable if is_transport(&status) => ClientError::Transport {
                address: address.to_string(),
                message: transport_message(&status),
            },
            // Refusals while leadership moves: nothing was appended; retry (after a refresh).
            Code::Unavailable
                if matches!(reason.as_deref(), Some("NOT_READY" | "STORAGE_FAILED")) =>
            {
                ClientError::NotLeader { message }
            }
            Code::Unavailable if reason.as_deref() == Some(REASON_NOT_ENOUGH_REPLICAS) => {
                ClientError::NotEnoughReplicas { message }
            }
            Code::Unavailable | Code::Aborted | Code::Cancelled | Code::Unknown => {
                ClientError::Unavailable { message }
            }
            Code::DeadlineExceeded => ClientError::Timeout {
                what: format!("broker {address} for {topic}-{partition}: {message}"),
            },
            _ => ClientError::Other(status),
        }
    }
}

impl From<DiscoveryError> for ClientError {
    fn from(error: DiscoveryError) -> ClientError {
        ClientError::InvalidArgument {
            message: error.to_string(),
        }
    }
}

/// Whether a Produce answered `status` may have appended its records: an after-append reason;
/// or, without a dmq.v1 `ErrorInfo`, a code that does not prove the request was refused
/// before it ran (a transport error, a deadline, a cancellation, INTERNAL: it may have reached
/// the broker and been appended). Every refusal a broker decides carries a reason; codes such
/// as INVALID_ARGUMENT or RESOURCE_EXHAUSTED from the gRPC layer itself refuse the request
/// whole before any handler ran.
pub(crate) fn produce_outcome_unknown(status: &Status) -> bool {
    match status.get_details_error_info() {
        Some(info) if info.domain == "dmq.v1" => {
            REASONS_AFTER_APPEND.contains(&info.reason.as_str())
        }
        _ => matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Unknown
                | Code::Internal
                | Code::Aborted
                | Code::DataLoss
        ),
    }
}

/// The `ErrorInfo` reason of `status`, if it carries one.
pub(crate) fn reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// `(log_start_offset, high_watermark)` from an OFFSET_OUT_OF_RANGE `ErrorInfo`.
fn offset_range(status: &Status) -> Option<(u64, u64)> {
    let info = status.get_details_error_info()?;
    let get = |key: &str| info.metadata.get(key)?.parse::<u64>().ok();
    Some((get("log_start_offset")?, get("high_watermark")?))
}

/// Whether tonic made this status up locally from a connection failure (a server's answer
/// never carries a source error).
fn is_transport(status: &Status) -> bool {
    status.source().is_some()
}

/// The innermost cause of a transport failure ("Connection refused"), which says more than
/// tonic's "transport error".
fn transport_message(status: &Status) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = status.source();
    let mut message = status.message().to_string();
    while let Some(error) = cause {
        message = error.to_string();
        cause = error.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    fn with_info(code: Code, reason: &str, metadata: &[(&str, &str)]) -> Status {
        let metadata: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Status::with_error_details(
            code,
            "refused",
            ErrorDetails::with_error_info(reason, "dmq.v1", metadata),
        )
    }

    fn broker(status: Status) -> ClientError {
        ClientError::from_broker_status(status, "b1:9092", "t", 3, 7)
    }

    #[test]
    fn broker_answers_map_to_what_to_do() {
        let range = broker(with_info(
            Code::OutOfRange,
            REASON_OFFSET_OUT_OF_RANGE,
            &[("log_start_offset", "10"), ("high_watermark", "20")],
        ));
        assert!(matches!(
            range,
            ClientError::OffsetOutOfRange {
                offset: 7,
                log_start: 10,
                high_watermark: 20,
                partition: 3,
                ..
            }
        ));
        assert!(!range.is_retryable());
        assert_eq!(
            range.to_string(),
            "offset 7 of t-3 is out of range: valid offsets are 10 to 20; seek into that range"
        );

        let isr = broker(with_info(
            Code::Unavailable,
            REASON_NOT_ENOUGH_REPLICAS,
            &[],
        ));
        assert!(matches!(isr, ClientError::NotEnoughReplicas { .. }));
        assert!(isr.is_retryable() && !isr.outcome_unknown());
        // Every after-append failure is an unknown outcome, whatever its code.
        for (code, reason) in [
            (Code::Unavailable, "NOT_ENOUGH_REPLICAS_AFTER_APPEND"),
            (Code::Unavailable, "LEADER_CHANGED_AFTER_APPEND"),
            (Code::DeadlineExceeded, "REPLICATION_TIMEOUT"),
            (Code::Unavailable, "STORAGE_FAILED_AFTER_APPEND"),
        ] {
            let e = broker(with_info(code, reason, &[]));
            assert!(
                matches!(e, ClientError::OutcomeUnknown { .. }),
                "{reason}: {e:?}"
            );
            assert!(e.outcome_unknown(), "{reason}");
        }
        let busy = broker(with_info(
            Code::ResourceExhausted,
            REASON_BROKER_OVERLOADED,
            &[],
        ));
        assert!(busy.is_retryable(), "{busy:?}");

        let large = broker(Status::resource_exhausted("batch too large"));
        assert!(matches!(large, ClientError::TooLarge { .. }) && !large.is_retryable());
        assert!(matches!(
            broker(Status::not_found("no topic")),
            ClientError::NotFound { .. }
        ));
        assert!(broker(Status::unavailable("starting")).is_retryable());
        assert!(broker(Status::deadline_exceeded("slow")).is_retryable());
        assert!(!broker(Status::internal("crc")).is_retryable());
    }

    #[test]
    fn controller_overload_is_retryable_but_bad_requests_are_not() {
        let c = |s| ClientError::from_controller_status(s, "c1:9000");
        assert!(c(Status::resource_exhausted("busy")).is_retryable());
        assert!(matches!(
            c(with_info(Code::Unavailable, REASON_NO_LEADER, &[])),
            ClientError::NoLeader { .. }
        ));
        let exists = c(Status::already_exists("topic \"t\" already exists"));
        assert!(!exists.is_retryable());
        assert_eq!(
            exists.to_string(),
            "already exists: topic \"t\" already exists"
        );
        assert!(matches!(
            c(Status::failed_precondition("replication factor 3 exceeds")),
            ClientError::FailedPrecondition { .. }
        ));
        assert!(matches!(
            c(with_info(Code::FailedPrecondition, "NOT_LEADER", &[])),
            ClientError::NotLeader { .. }
        ));
    }
}
