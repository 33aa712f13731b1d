//! Reading a controller's error answers: NOT_LEADER redirects and what to do about the rest.

use tonic::{Code, Status};

/// The ASCII metadata key in which a follower controller names the leader's client address
/// (`host:port`) when it refuses a mutation with FAILED_PRECONDITION.
pub const LEADER_METADATA_KEY: &str = "x-controller-leader";

/// The leader address a NOT_LEADER answer carries in its `x-controller-leader` metadata, if
/// any (an empty or non-ASCII value counts as none).
pub fn leader_hint(status: &Status) -> Option<String> {
    let value = status.metadata().get(LEADER_METADATA_KEY)?;
    let address = value.to_str().ok()?.trim();
    (!address.is_empty()).then(|| address.to_string())
}

/// What a caller of a controller mutation should do after an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerFailure {
    /// A follower answered: tell the locator ([`on_not_leader`]) and retry at once, at the hint
    /// if there is one.
    ///
    /// [`on_not_leader`]: super::LeaderLocator::on_not_leader
    NotLeader { hint: Option<String> },
    /// The controller could not be reached, timed out, knows no leader or is overloaded: count
    /// a failure ([`on_heartbeat_failure`]) and retry after a pause. Whether a mutation may
    /// have been applied is [`outcome_unknown`]: only an OUTCOME_UNKNOWN answer or one that
    /// says nothing (a timeout, a lost connection, an UNAVAILABLE without a reason) leaves it
    /// open; NO_LEADER and CONTROLLER_OVERLOADED mean nothing was applied.
    ///
    /// [`on_heartbeat_failure`]: super::LeaderLocator::on_heartbeat_failure
    Unavailable,
    /// The controller refused the request itself (bad argument, unknown broker, …): retrying
    /// the same request will fail the same way until something else changes.
    Refused,
}

/// Whether a controller mutation that failed with `status` may still have been applied (see
/// [`crate::ClientError::outcome_unknown`]).
pub fn outcome_unknown(status: &Status) -> bool {
    crate::ClientError::from_controller_status(status.clone(), "").outcome_unknown()
}

/// Sorts a controller's error answer by what the caller should do about it.
///
/// FAILED_PRECONDITION is a redirect only when it names a leader; without a hint it is some
/// other precondition of the request and counts as [`ControllerFailure::Refused`].
pub fn classify(status: &Status) -> ControllerFailure {
    match status.code() {
        Code::FailedPrecondition => match leader_hint(status) {
            Some(hint) => ControllerFailure::NotLeader { hint: Some(hint) },
            None => ControllerFailure::Refused,
        },
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::Unknown => ControllerFailure::Unavailable,
        _ => ControllerFailure::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{MetadataMap, MetadataValue};

    fn not_leader(address: &str) -> Status {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            LEADER_METADATA_KEY,
            MetadataValue::try_from(address).unwrap(),
        );
        Status::with_metadata(Code::FailedPrecondition, "not the leader", metadata)
    }

    #[test]
    fn reads_the_hint_from_metadata() {
        assert_eq!(
            leader_hint(&not_leader("10.0.0.2:9000")).as_deref(),
            Some("10.0.0.2:9000")
        );
        assert_eq!(leader_hint(&not_leader("")), None);
        assert_eq!(leader_hint(&Status::failed_precondition("x")), None);
    }

    #[test]
    fn classifies_by_what_to_do() {
        assert_eq!(
            classify(&not_leader("c2:9000")),
            ControllerFailure::NotLeader {
                hint: Some("c2:9000".into())
            }
        );
        assert_eq!(
            classify(&Status::failed_precondition("stale leader epoch")),
            ControllerFailure::Refused
        );
        assert_eq!(
            classify(&Status::unavailable("no leader")),
            ControllerFailure::Unavailable
        );
        assert_eq!(
            classify(&Status::deadline_exceeded("slow")),
            ControllerFailure::Unavailable
        );
        assert_eq!(
            classify(&Status::invalid_argument("bad")),
            ControllerFailure::Refused
        );
    }

    #[test]
    fn tells_not_applied_from_unknown_by_the_reason() {
        use tonic_types::StatusExt;
        let with = |code, reason: &str| {
            Status::with_error_details(
                code,
                "x",
                tonic_types::ErrorDetails::with_error_info(
                    reason,
                    "dmq.v1",
                    std::collections::HashMap::new(),
                ),
            )
        };
        assert!(!outcome_unknown(&with(Code::Unavailable, "NO_LEADER")));
        assert!(!outcome_unknown(&with(
            Code::ResourceExhausted,
            "CONTROLLER_OVERLOADED"
        )));
        assert!(outcome_unknown(&with(Code::Unavailable, "OUTCOME_UNKNOWN")));
        assert!(outcome_unknown(&Status::unavailable("no reason given")));
        assert!(!outcome_unknown(&not_leader("c2:9000")));
        for s in [
            with(Code::ResourceExhausted, "CONTROLLER_OVERLOADED"),
            with(Code::Unavailable, "OUTCOME_UNKNOWN"),
        ] {
            assert_eq!(classify(&s), ControllerFailure::Unavailable, "{s:?}");
        }
    }
}
