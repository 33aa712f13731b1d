//! The one place that turns the node's and the metadata's errors into gRPC statuses, and the
//! way a client reads a leader hint back.
//!
//! Every answer tells the truth about the outcome: the `ErrorInfo` reason alone says whether a
//! mutation was certainly not applied (safe to retry) or may have been.
//!
//! | error | code | reason (`ErrorInfo`, domain `dmq.v1`) | applied? |
//! |---|---|---|---|
//! | `NodeError::NotLeader` | FAILED_PRECONDITION, "not the leader; retry on node N at ADDR" | `NOT_LEADER` (metadata `leader_id`, `leader_address`; also the `x-controller-leader: ADDR` metadata) | no |
//! | `NoLeader`, `Unconfirmed` | UNAVAILABLE + `RetryInfo` | `NO_LEADER` | no |
//! | `Overloaded` | RESOURCE_EXHAUSTED + `RetryInfo` | `CONTROLLER_OVERLOADED` | no |
//! | `ShuttingDown` | UNAVAILABLE + `RetryInfo` | `SHUTTING_DOWN` | no |
//! | `CommandTooLarge` | INVALID_ARGUMENT | `COMMAND_TOO_LARGE` | no |
//! | `OutcomeUnknown` | UNAVAILABLE + `RetryInfo` | `OUTCOME_UNKNOWN` (metadata `cause`: `timeout`, `leadership_lost`, `stopped`, `storage_failure`, `cannot_apply`) | maybe |
//! | `MetadataError` | its [`MetadataError::code`] | the variant, e.g. `TOPIC_NOT_FOUND` | no |

use std::collections::HashMap;
use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::metadata::{ApplyOutcome, MetadataError};
use crate::node::NodeError;

/// The ASCII metadata key carrying the leader's client address (`host:port`).
pub const LEADER_METADATA_KEY: &str = "x-controller-leader";
/// The `ErrorInfo` domain of every DistributedMQ error.
pub const ERROR_DOMAIN: &str = "dmq.v1";
/// `ErrorInfo` reason of a mutation sent to a follower; its metadata holds `leader_id` and
/// `leader_address`.
pub const REASON_NOT_LEADER: &str = "NOT_LEADER";
/// `ErrorInfo` reason when no controller leader is known (an election is under way) or this
/// node could not confirm its leadership. Not applied.
pub const REASON_NO_LEADER: &str = "NO_LEADER";
/// `ErrorInfo` reason of a controller too busy to take the request. Not applied.
pub const REASON_CONTROLLER_OVERLOADED: &str = "CONTROLLER_OVERLOADED";
/// `ErrorInfo` reason of a controller that is stopping. Not applied.
pub const REASON_SHUTTING_DOWN: &str = "SHUTTING_DOWN";
/// `ErrorInfo` reason of a command larger than a log entry may be. Not applied.
pub const REASON_COMMAND_TOO_LARGE: &str = "COMMAND_TOO_LARGE";
/// `ErrorInfo` reason of a mutation that was proposed but is not known to be committed
/// (timeout, leader change, the controller stopped or its storage failed): it may or may not
/// be applied. Metadata `cause` says which.
pub const REASON_OUTCOME_UNKNOWN: &str = "OUTCOME_UNKNOWN";
/// `ErrorInfo` reason of a membership change refused because another one is not committed yet
/// (or the leader was just elected). Not applied; retry shortly.
pub const REASON_MEMBERSHIP_CHANGE_BUSY: &str = "MEMBERSHIP_CHANGE_BUSY";
/// `ErrorInfo` reason of a membership change that is not one valid step (voters change one at
/// a time; voters and learners are disjoint). Not applied.
pub const REASON_INVALID_MEMBERSHIP: &str = "INVALID_MEMBERSHIP";

/// Where a FAILED_PRECONDITION NOT_LEADER answer says the leader is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderHint {
    pub leader_id: u64,
    /// The leader's ControllerService address, `host:port`.
    pub leader_address: String,
}

/// The status a request that failed in the node gets.
pub fn node_error_status(error: &NodeError) -> Status {
    let retry = |code: Code, reason: &str, metadata: HashMap<String, String>, delay_ms: u64| {
        let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
        details.set_retry_info(Some(Duration::from_millis(delay_ms)));
        Status::with_error_details(code, error.to_string(), details)
    };
    match error {
        NodeError::NotLeader {
            leader_id,
            leader_addr,
        } => {
            let mut metadata = MetadataMap::new();
            // ASCII metadata carries printable ASCII only; the details carry any address.
            if leader_addr.is_ascii()
                && let Ok(value) = MetadataValue::try_from(leader_addr.as_str())
            {
                metadata.insert(LEADER_METADATA_KEY, value);
            }
            let details = ErrorDetails::with_error_info(
                REASON_NOT_LEADER,
                ERROR_DOMAIN,
                HashMap::from([
                    ("leader_id".to_string(), leader_id.to_string()),
                    ("leader_address".to_string(), leader_addr.clone()),
                ]),
            );
            Status::with_error_details_and_metadata(
                Code::FailedPrecondition,
                format!("not the leader; retry on node {leader_id} at {leader_addr}"),
                details,
                metadata,
            )
        }
        NodeError::NoLeader | NodeError::Unconfirmed(_) => {
            retry(Code::Unavailable, REASON_NO_LEADER, HashMap::new(), 250)
        }
        NodeError::Overloaded(_) => retry(
            Code::ResourceExhausted,
            REASON_CONTROLLER_OVERLOADED,
            HashMap::new(),
            100,
        ),
        NodeError::ShuttingDown => {
            retry(Code::Unavailable, REASON_SHUTTING_DOWN, HashMap::new(), 100)
        }
        NodeError::CommandTooLarge { .. } => Status::with_error_details(
            Code::InvalidArgument,
            error.to_string(),
            ErrorDetails::with_error_info(REASON_COMMAND_TOO_LARGE, ERROR_DOMAIN, HashMap::new()),
        ),
        NodeError::MembershipChangeBusy(_) => retry(
            Code::Aborted,
            REASON_MEMBERSHIP_CHANGE_BUSY,
            HashMap::new(),
            200,
        ),
        NodeError::InvalidMembership(_) => Status::with_error_details(
            Code::FailedPrecondition,
            error.to_string(),
            ErrorDetails::with_error_info(REASON_INVALID_MEMBERSHIP, ERROR_DOMAIN, HashMap::new()),
        ),
        NodeError::OutcomeUnknown(why) => retry(
            Code::Unavailable,
            REASON_OUTCOME_UNKNOWN,
            HashMap::from([("cause".to_string(), why.cause().to_string())]),
            100,
        ),
    }
}

/// The status a refused metadata request or command gets: its code, its message, and an
/// `ErrorInfo` whose reason names the refusal.
pub fn metadata_error_status(error: MetadataError) -> Status {
    let reason = metadata_reason(&error);
    let mut metadata = HashMap::new();
    if let MetadataError::StalePartitionEpoch { current, .. } = &error {
        metadata.insert("partition_epoch".to_string(), current.to_string());
    }
    Status::with_error_details(
        error.code(),
        error.to_string(),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// The status of a proposal whose outcome is not the one its command can produce: a bug.
pub(crate) fn unexpected_outcome(what: &str, outcome: &ApplyOutcome) -> Status {
    Status::internal(format!(
        "{what}: unexpected outcome {outcome:?}; this is a controller bug, please report it"
    ))
}

/// The leader named by a NOT_LEADER answer: from its `ErrorInfo`, else from the
/// `x-controller-leader` metadata (leader id 0 then).
pub fn leader_hint(status: &Status) -> Option<LeaderHint> {
    if let Some(info) = status.get_details_error_info()
        && info.reason == REASON_NOT_LEADER
        && info.domain == ERROR_DOMAIN
        && let Some(address) = info.metadata.get("leader_address")
        && !address.is_empty()
    {
        let leader_id = info
            .metadata
            .get("leader_id")
            .and_then(|id| id.parse().ok())
            .unwrap_or(0);
        return Some(LeaderHint {
            leader_id,
            leader_address: address.clone(),
        });
    }
    let address = status.metadata().get(LEADER_METADATA_KEY)?.to_str().ok()?;
    (!address.is_empty()).then(|| LeaderHint {
        leader_id: 0,
        leader_address: address.to_string(),
    })
}

fn metadata_reason(error: &MetadataError) -> &'static str {
    use MetadataError::*;
    match error {
        InvalidTopicName { .. } => "INVALID_TOPIC_NAME",
        InvalidPartitionCount { .. } => "INVALID_PARTITION_COUNT",
        ZeroReplicationFactor => "INVALID_REPLICATION_FACTOR",
        NotEnoughBrokers { .. } => "NOT_ENOUGH_BROKERS",
        InvalidTopicConfig { .. } => "INVALID_TOPIC_CONFIG",
        InvalidBrokerId => "INVALID_BROKER_ID",
        InvalidBrokerAddress { .. } => "INVALID_BROKER_ADDRESS",
        EmptyCommand => "EMPTY_COMMAND",
        TopicAlreadyExists { .. } => "TOPIC_ALREADY_EXISTS",
        TopicNotFound { .. } => "TOPIC_NOT_FOUND",
        PartitionNotFound { .. } => "PARTITION_NOT_FOUND",
        BrokerNotRegistered { .. } => "BROKER_NOT_REGISTERED",
        StaleBrokerEpoch { .. } => "STALE_BROKER_EPOCH",
        NotPartitionLeader { .. } => "NOT_PARTITION_LEADER",
        StaleLeaderEpoch { .. } => "STALE_LEADER_EPOCH",
        StalePartitionEpoch { .. } => "STALE_PARTITION_EPOCH",
        InvalidIsr { .. } => "INVALID_ISR",
        IneligibleReplica { .. } => "INELIGIBLE_REPLICA",
        InvalidAssignment { .. } => "INVALID_ASSIGNMENT",
        AssignedBrokerUnavailable { .. } => "ASSIGNED_BROKER_UNAVAILABLE",
        InvalidPageToken { .. } => "INVALID_PAGE_TOKEN",
        FeatureLevelDowngrade { .. } => "FEATURE_LEVEL_DOWNGRADE",
        FeatureLevelTooLow { .. } => "FEATURE_LEVEL_TOO_LOW",
    }
}

#[cfg(test)]
mod tests {
    use tonic::codegen::http::HeaderMap;

    use super::*;
    use crate::node::Unknown;

    /// What a client receives: the status sent through gRPC headers and parsed back.
    fn over_the_wire(status: &Status) -> Status {
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        Status::from_header_map(&headers).unwrap()
    }

    #[test]
    fn not_leader_names_the_leader_three_ways() {
        let status = over_the_wire(&node_error_status(&NodeError::NotLeader {
            leader_id: 2,
            leader_addr: "127.0.0.1:9002".into(),
        }));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "not the leader; retry on node 2 at 127.0.0.1:9002"
        );
        assert_eq!(
            status.metadata().get(LEADER_METADATA_KEY).unwrap(),
            "127.0.0.1:9002"
        );
        let info = status.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("NOT_LEADER", "dmq.v1")
        );
        assert_eq!(info.metadata["leader_id"], "2");
        assert_eq!(info.metadata["leader_address"], "127.0.0.1:9002");
        assert_eq!(
            leader_hint(&status),
            Some(LeaderHint {
                leader_id: 2,
                leader_address: "127.0.0.1:9002".into()
            })
        );
    }

    #[test]
    fn a_hint_in_metadata_alone_is_read_too() {
        let mut metadata = MetadataMap::new();
        metadata.insert(LEADER_METADATA_KEY, "10.0.0.3:9000".parse().unwrap());
        let status = Status::with_metadata(Code::FailedPrecondition, "elsewhere", metadata);
        assert_eq!(
            leader_hint(&status).unwrap().leader_address,
            "10.0.0.3:9000"
        );
        assert_eq!(leader_hint(&Status::unavailable("x")), None);
    }

    #[test]
    fn a_non_ascii_address_still_gives_the_error_details() {
        let status = node_error_status(&NodeError::NotLeader {
            leader_id: 3,
            leader_addr: "hôte:1".into(),
        });
        assert!(status.metadata().get(LEADER_METADATA_KEY).is_none());
        assert_eq!(leader_hint(&status).unwrap().leader_id, 3);
    }

    #[test]
    fn node_errors_say_by_their_reason_whether_anything_was_applied() {
        let cases = [
            (NodeError::NoLeader, Code::Unavailable, REASON_NO_LEADER),
            (
                NodeError::Unconfirmed("lease expired".into()),
                Code::Unavailable,
                REASON_NO_LEADER,
            ),
            (
                NodeError::Overloaded("full".into()),
                Code::ResourceExhausted,
                REASON_CONTROLLER_OVERLOADED,
            ),
            (
                NodeError::ShuttingDown,
                Code::Unavailable,
                REASON_SHUTTING_DOWN,
            ),
            (
                NodeError::CommandTooLarge {
                    bytes: 10,
                    max_bytes: 5,
                },
                Code::InvalidArgument,
                REASON_COMMAND_TOO_LARGE,
            ),
            (
                NodeError::OutcomeUnknown(Unknown::Timeout(Duration::from_secs(5))),
                Code::Unavailable,
                REASON_OUTCOME_UNKNOWN,
            ),
            (
                NodeError::MembershipChangeBusy("a change is pending".into()),
                Code::Aborted,
                REASON_MEMBERSHIP_CHANGE_BUSY,
            ),
            (
                NodeError::InvalidMembership("two voters".into()),
                Code::FailedPrecondition,
                REASON_INVALID_MEMBERSHIP,
            ),
            (
                NodeError::OutcomeUnknown(Unknown::LeadershipLost),
                Code::Unavailable,
                REASON_OUTCOME_UNKNOWN,
            ),
            (
                NodeError::OutcomeUnknown(Unknown::Stopped),
                Code::Unavailable,
                REASON_OUTCOME_UNKNOWN,
            ),
            (
                NodeError::OutcomeUnknown(Unknown::StorageFailed("EIO".into())),
                Code::Unavailable,
                REASON_OUTCOME_UNKNOWN,
            ),
        ];
        for (error, code, reason) in cases {
            let status = over_the_wire(&node_error_status(&error));
            assert_eq!(status.code(), code, "{error}");
            assert_eq!(status.message(), error.to_string());
            let info = status.get_details_error_info().unwrap();
            assert_eq!(info.reason, reason);
            assert_eq!(reason == REASON_OUTCOME_UNKNOWN, error.outcome_unknown());
            if let NodeError::OutcomeUnknown(why) = &error {
                assert_eq!(info.metadata["cause"], why.cause());
                assert!(status.message().contains("may or may not"), "{error}");
            } else {
                assert!(
                    status.message().contains("nothing was applied")
                        || matches!(
                            error,
                            NodeError::NoLeader | NodeError::CommandTooLarge { .. }
                        ),
                    "{error}"
                );
            }
            assert_eq!(
                status.get_details_retry_info().is_some(),
                error.is_retryable(),
                "{error}"
            );
            assert_eq!(leader_hint(&status), None);
        }
    }

    #[test]
    fn metadata_errors_keep_their_code_and_message() {
        let error = MetadataError::TopicAlreadyExists { name: "t".into() };
        let status = over_the_wire(&metadata_error_status(error.clone()));
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(status.message(), error.to_string());
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "TOPIC_ALREADY_EXISTS"
        );
        let stale = metadata_error_status(MetadataError::StaleLeaderEpoch {
            topic: "t".into(),
            partition: 0,
            given: 1,
            current: 2,
        });
        assert_eq!(stale.code(), Code::FailedPrecondition);
        assert_eq!(leader_hint(&stale), None, "not a redirect");
    }
}
