//! Reading a broker's NOT_LEADER_FOR_PARTITION answer: who leads the partition now.
//!
//! A broker that does not lead a partition answers FAILED_PRECONDITION with a
//! `google.rpc.ErrorInfo` (reason `NOT_LEADER_FOR_PARTITION`, metadata `leader_id`,
//! `leader_address`, `leader_epoch`; `leader_id` 0 when there is none) and the leader's address
//! in the `x-partition-leader` metadata (broker.proto, "Data plane"). The client tries the hint
//! before asking the controllers, which saves a metadata round trip on every leader change.

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The ASCII metadata key in which a broker names the partition leader's address.
pub const PARTITION_LEADER_METADATA_KEY: &str = "x-partition-leader";
/// `ErrorInfo` reason of a broker that does not lead the partition.
pub const REASON_NOT_LEADER_FOR_PARTITION: &str = "NOT_LEADER_FOR_PARTITION";
/// `ErrorInfo` reason of a leader that stopped leading after appending (outcome unknown).
pub const REASON_LEADER_CHANGED_AFTER_APPEND: &str = "LEADER_CHANGED_AFTER_APPEND";

/// Who leads a partition, as a refusing broker believes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLeaderHint {
    /// 0 when the broker knows no leader (or the answer carried the address alone).
    pub leader_id: u64,
    /// The leader's BrokerService address, `host:port`; `None` when unknown.
    pub leader_address: Option<String>,
    /// The leader epoch the broker knows; 0 when not given. A hint older than what the client
    /// holds is ignored.
    pub leader_epoch: u64,
}

/// The hint a NOT_LEADER_FOR_PARTITION answer (or a LEADER_CHANGED_AFTER_APPEND one, which
/// names the new leader the same way) carries: from its `ErrorInfo`, else from the
/// `x-partition-leader` metadata alone. `None` when `status` is not such an answer.
pub fn partition_leader_hint(status: &Status) -> Option<PartitionLeaderHint> {
    let reason = status.get_details_error_info().map(|i| i.reason);
    let leader_changed = status.code() == Code::Unavailable
        && reason.as_deref() == Some(REASON_LEADER_CHANGED_AFTER_APPEND);
    if status.code() != Code::FailedPrecondition && !leader_changed {
        return None;
    }
    let from_metadata = status
        .metadata()
        .get(PARTITION_LEADER_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    if let Some(info) = status.get_details_error_info()
        && (info.reason == REASON_NOT_LEADER_FOR_PARTITION
            || info.reason == REASON_LEADER_CHANGED_AFTER_APPEND)
    {
        let number = |key: &str| {
            info.metadata
                .get(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let address = info
            .metadata
            .get("leader_address")
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .or(from_metadata);
        return Some(PartitionLeaderHint {
            leader_id: number("leader_id"),
            leader_address: address,
            leader_epoch: number("leader_epoch"),
        });
    }
    from_metadata.map(|address| PartitionLeaderHint {
        leader_id: 0,
        leader_address: Some(address),
        leader_epoch: 0,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic::metadata::MetadataMap;
    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn reads_error_info_then_metadata() {
        let mut metadata = MetadataMap::new();
        metadata.insert(PARTITION_LEADER_METADATA_KEY, "b2:9092".parse().unwrap());
        let details = ErrorDetails::with_error_info(
            REASON_NOT_LEADER_FOR_PARTITION,
            "dmq.v1",
            HashMap::from([
                ("leader_id".to_string(), "2".to_string()),
                ("leader_address".to_string(), "b2:9092".to_string()),
                ("leader_epoch".to_string(), "5".to_string()),
            ]),
        );
        let full = Status::with_error_details_and_metadata(
            Code::FailedPrecondition,
            "not the leader",
            details,
            metadata.clone(),
        );
        assert_eq!(
            partition_leader_hint(&full),
            Some(PartitionLeaderHint {
                leader_id: 2,
                leader_address: Some("b2:9092".into()),
                leader_epoch: 5
            })
        );
        let bare = Status::with_metadata(Code::FailedPrecondition, "elsewhere", metadata);
        assert_eq!(
            partition_leader_hint(&bare)
                .unwrap()
                .leader_address
                .as_deref(),
            Some("b2:9092")
        );
        assert_eq!(
            partition_leader_hint(&Status::failed_precondition("x")),
            None
        );
        assert_eq!(partition_leader_hint(&Status::unavailable("x")), None);
    }
}
