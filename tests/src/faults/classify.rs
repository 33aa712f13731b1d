//! What a Produce answer says about the record: acknowledged, certainly not appended, or
//! unknown. This one function is the contract between the suite and the broker; adjust the
//! tables here (and their test) when the broker's error taxonomy changes.
//!
//! | answer | class |
//! |---|---|
//! | OK | [`Class::Acked`] at `base_offset` |
//! | `ErrorInfo` (domain `dmq.v1`) reason in [`REFUSED_REASONS`] | [`Class::Refused`]: nothing was appended, a new value may be sent |
//! | reason in [`APPENDED_REASONS`] | [`Class::Unknown`]: appended, may still become visible |
//! | `NOT_ENOUGH_REPLICAS` with metadata `appended=true` | [`Class::Unknown`] (today's broker says "after append" this way) |
//! | code INTERNAL with `STORAGE_FAILED` | [`Class::Unknown`]: today's broker answers it when a sync failed after the append |
//! | no `ErrorInfo`, another domain, another reason; a transport error, CANCELLED, the client deadline | [`Class::Unknown`] |
//!
//! # To ensure correctness
//! Refused is a promise the suite holds the broker to: a refused value is never sent again,
//! so if it ever shows up in a log the check PHANTOM fails. Anything the table does not name
//! is Unknown, which can only make the checks more lenient, never wrong.

use dmq_client::partition_leader_hint;
use dmq_proto::v1::ProduceResponse;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The `ErrorInfo` domain of DistributedMQ errors.
pub const DOMAIN: &str = "dmq.v1";

/// Reasons that mean "certainly not appended".
pub const REFUSED_REASONS: &[&str] = &[
    "NOT_LEADER_FOR_PARTITION",
    "NOT_ENOUGH_REPLICAS",
    "NOT_READY",
    "UNKNOWN_TOPIC_OR_PARTITION",
    "INVALID_REQUEST",
    "RECORD_TOO_LARGE",
    "REQUEST_TOO_LARGE",
    "BROKER_OVERLOADED",
    "STORAGE_FAILED",
];

/// Reasons that mean "appended, outcome unknown".
pub const APPENDED_REASONS: &[&str] = &[
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "LEADER_CHANGED_AFTER_APPEND",
    "REPLICATION_TIMEOUT",
    "STORAGE_FAILED_AFTER_APPEND",
];

/// The class of one answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    Acked { offset: u64 },
    Refused { reason: String },
    Unknown { what: String },
}

/// Classifies one Produce answer. `Err(None)` is the client's own deadline.
pub fn classify(answer: &Result<ProduceResponse, Option<Status>>) -> Class {
    let status = match answer {
        Ok(r) => {
            return Class::Acked {
                offset: r.base_offset,
            };
        }
        Err(None) => {
            return Class::Unknown {
                what: "client deadline".into(),
            };
        }
        Err(Some(status)) => status,
    };
    let unknown = |what: String| Class::Unknown { what };
    let Some(info) = status.get_details_error_info() else {
        return unknown(format!("{:?} without ErrorInfo", status.code()));
    };
    if info.domain != DOMAIN {
        return unknown(format!("{:?} domain {}", status.code(), info.domain));
    }
    let reason = info.reason.as_str();
    let appended_flag = info.metadata.get("appended").map(|v| v.trim() == "true");
    let name = format!("{:?}/{reason}", status.code());
    if APPENDED_REASONS.contains(&reason) {
        return unknown(name);
    }
    if reason == "NOT_ENOUGH_REPLICAS" && appended_flag == Some(true) {
        return unknown(format!("{name} appended=true"));
    }
    if reason == "STORAGE_FAILED" && status.code() == Code::Internal {
        return unknown(name);
    }
    if REFUSED_REASONS.contains(&reason) {
        return Class::Refused {
            reason: reason.to_string(),
        };
    }
    unknown(name)
}

/// Where a NOT_LEADER_FOR_PARTITION answer says the leader is: `(broker id, address, leader
/// epoch)`; id 0 when it knows none.
pub fn leader_hint(status: &Status) -> Option<(u64, Option<String>, u64)> {
    partition_leader_hint(status).map(|h| (h.leader_id, h.leader_address, h.leader_epoch))
}

/// A number in a status's `ErrorInfo` metadata.
pub fn info_number(status: &Status, key: &str) -> Option<u64> {
    status
        .get_details_error_info()?
        .metadata
        .get(key)?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic::metadata::MetadataMap;
    use tonic_types::ErrorDetails;

    use super::*;

    fn status(code: Code, domain: &str, reason: &str, meta: &[(&str, &str)]) -> Status {
        let metadata: HashMap<String, String> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Status::with_error_details(
            code,
            "test",
            ErrorDetails::with_error_info(reason, domain, metadata),
        )
    }

    #[derive(Debug, PartialEq)]
    enum K {
        Acked,
        Refused,
        Unknown,
    }

    fn kind(c: &Class) -> K {
        match c {
            Class::Acked { .. } => K::Acked,
            Class::Refused { .. } => K::Refused,
            Class::Unknown { .. } => K::Unknown,
        }
    }

    #[test]
    fn the_taxonomy_table() {
        let d = DOMAIN;
        let cases: Vec<(Result<ProduceResponse, Option<Status>>, K)> = vec![
            (Ok(ProduceResponse::default()), K::Acked),
            (Err(None), K::Unknown),
            (Err(Some(Status::unavailable("transport"))), K::Unknown),
            (Err(Some(Status::cancelled("gone"))), K::Unknown),
            (Err(Some(Status::deadline_exceeded("late"))), K::Unknown),
            // A bare FAILED_PRECONDITION with only the header is not the taxonomy's answer.
            (
                Err(Some(Status::with_metadata(
                    Code::FailedPrecondition,
                    "elsewhere",
                    MetadataMap::new(),
                ))),
                K::Unknown,
            ),
            (
                Err(Some(status(
                    Code::FailedPrecondition,
                    d,
                    "NOT_LEADER_FOR_PARTITION",
                    &[],
                ))),
                K::Refused,
            ),
            (
                Err(Some(status(
                    Code::Unavailable,
                    d,
                    "NOT_ENOUGH_REPLICAS",
                    &[("appended", "false")],
                ))),
                K::Refused,
            ),
            (
                Err(Some(status(
                    Code::Unavailable,
                    d,
                    "NOT_ENOUGH_REPLICAS",
                    &[],
                ))),
                K::Refused,
            ),
            (
                Err(Some(status(
                    Code::Unavailable,
                    d,
                    "NOT_ENOUGH_REPLICAS",
                    &[("appended", "true")],
                ))),
                K::Unknown,
            ),
            (
                Err(Some(status(Code::Unavailable, d, "NOT_READY", &[]))),
                K::Refused,
            ),
            (
                Err(Some(status(
                    Code::NotFound,
                    d,
                    "UNKNOWN_TOPIC_OR_PARTITION",
                    &[],
                ))),
                K::Refused,
            ),
            (
                Err(Some(status(
                    Code::InvalidArgument,
                    d,
                    "INVALID_REQUEST",
                    &[],
                ))),
                K::Refused,
            ),
            (
                Err(Some(status(
                    Code::InvalidArgument,
                    d,
                    "RECORD_TOO_LARGE",
                    &[],
                ))),
                K::Refused,
            ),
            (
                Err(Some(status(
                    Code::ResourceExhausted,
                    d,
                    "REQUEST_TOO_LARGE",
                    &[],
                ))),
                K::Refused,
            ),
            (
                Err(Some(status(
                    Code::ResourceExhausted,
                    d,
                    "BROKER_OVERLOADED",
                    &[],
                ))),
                K::Refused,
            ),
            (
                Err(Some(status(Code::Unavailable, d, "STORAGE_FAILED", &[]))),
                K::Refused,
            ),
            // Today's broker: a sync that failed after the append.
            (
                Err(Some(status(Code::Internal, d, "STORAGE_FAILED", &[]))),
                K::Unknown,
            ),
            (
                Err(Some(status(
                    Code::Unavailable,
                    d,
                    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
                    &[],
                ))),
                K::Unknown,
            ),
            (
                Err(Some(status(
                    Code::Unavailable,
                    d,
                    "LEADER_CHANGED_AFTER_APPEND",
                    &[],
                ))),
                K::Unknown,
            ),
            (
                Err(Some(status(
                    Code::DeadlineExceeded,
                    d,
                    "REPLICATION_TIMEOUT",
                    &[],
                ))),
                K::Unknown,
            ),
            (
                Err(Some(status(
                    Code::Internal,
                    d,
                    "STORAGE_FAILED_AFTER_APPEND",
                    &[],
                ))),
                K::Unknown,
            ),
            (
                Err(Some(status(Code::Internal, d, "LOG_ERROR", &[]))),
                K::Unknown,
            ),
            (
                Err(Some(status(Code::Unavailable, d, "SOMETHING_NEW", &[]))),
                K::Unknown,
            ),
            (
                Err(Some(status(
                    Code::FailedPrecondition,
                    "other.domain",
                    "NOT_LEADER_FOR_PARTITION",
                    &[],
                ))),
                K::Unknown,
            ),
        ];
        for (answer, want) in cases {
            let got = classify(&answer);
            assert_eq!(kind(&got), want, "{answer:?} -> {got:?}");
        }
    }

    #[test]
    fn acked_offset_and_refused_reason() {
        let ok = Ok(ProduceResponse {
            base_offset: 41,
            last_offset: 41,
            leader_epoch: 3,
        });
        assert_eq!(classify(&ok), Class::Acked { offset: 41 });
        let refused = Err(Some(status(
            Code::FailedPrecondition,
            DOMAIN,
            "NOT_LEADER_FOR_PARTITION",
            &[
                ("leader_id", "2"),
                ("leader_address", "10.0.0.2:9092"),
                ("leader_epoch", "4"),
            ],
        )));
        assert_eq!(
            classify(&refused),
            Class::Refused {
                reason: "NOT_LEADER_FOR_PARTITION".into()
            }
        );
        let Err(Some(s)) = &refused else {
            unreachable!()
        };
        assert_eq!(
            leader_hint(s),
            Some((2, Some("10.0.0.2:9092".to_string()), 4))
        );
    }
}
