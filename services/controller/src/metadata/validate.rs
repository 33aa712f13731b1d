//! Validation of metadata requests before they are proposed, so nothing malformed reaches the
//! Raft log.
//!
//! These are policy checks (name rules, limits, config ranges): they may change between versions,
//! so apply never repeats them: a replayed log must be applied the same way by every version.
//! Apply only checks what the state's own invariants need (see `apply.rs`).

use dmq_proto::v1::{
    AlterPartitionRequest, CreateTopicRequest, RegisterBrokerRequest, TopicConfig,
};

use super::error::MetadataError;

/// The longest topic name, in characters (Kafka's limit, so names carry over).
pub const MAX_TOPIC_NAME_CHARS: usize = 249;

/// The default upper bound on partitions per topic. A topic is one stored value; at 1000
/// partitions and replication factor 5 it is about 40 KiB, well below the ~128 KiB where sled
/// starts writing unsynced blob files (see DESIGN.md, "Storage facts").
pub const DEFAULT_MAX_PARTITIONS: u32 = 1000;

/// The largest `max_message_bytes` a topic may set: tonic's default limit on a decoded gRPC
/// message (4 MiB), so a bigger message could never be produced anyway.
pub const MAX_MESSAGE_BYTES_LIMIT: u32 = 4 * 1024 * 1024;

/// The longest broker host name (DNS's limit on a full name).
const MAX_HOST_CHARS: usize = 253;

/// Checks a topic name: 1 to [`MAX_TOPIC_NAME_CHARS`] characters from `[A-Za-z0-9._-]`, and not
/// `.` or `..` (they would read as paths in tools and directory layouts).
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let invalid = |reason: String| MetadataError::InvalidTopicName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty".to_string()));
    }
    let chars = name.chars().count();
    if chars > MAX_TOPIC_NAME_CHARS {
        return Err(invalid(format!(
            "it is {chars} characters long, over {MAX_TOPIC_NAME_CHARS}"
        )));
    }
    if name == "." || name == ".." {
        return Err(invalid("\".\" and \"..\" are reserved".to_string()));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(format!("the character {bad:?} is not allowed")));
    }
    Ok(())
}

/// Checks per-topic settings against the topic's replication factor. Zero means "the cluster
/// default" for every field; `-1` means "unlimited" for the retentions.
pub fn validate_topic_config(
    config: &TopicConfig,
    replication_factor: u32,
) -> Result<(), MetadataError> {
    if config.min_insync_replicas > replication_factor {
        return Err(MetadataError::InvalidTopicConfig {
            field: "min_insync_replicas",
            value: i64::from(config.min_insync_replicas),
            reason: format!(
                "it exceeds the replication factor {replication_factor}, so acks=all could \
                 never succeed; lower it or raise the replication factor"
            ),
        });
    }
    for (field, value) in [
        ("retention_ms", config.retention_ms),
        ("retention_bytes", config.retention_bytes),
    ] {
        if value < -1 {
            return Err(MetadataError::InvalidTopicConfig {
                field,
                value,
                reason: "use -1 for unlimited, 0 for the cluster default, or a positive limit"
                    .to_string(),
            });
        }
    }
    if config.max_message_bytes > MAX_MESSAGE_BYTES_LIMIT {
        return Err(MetadataError::InvalidTopicConfig {
            field: "max_message_bytes",
            value: i64::from(config.max_message_bytes),
            reason: format!(
                "the most a gRPC request can carry is {MAX_MESSAGE_BYTES_LIMIT} bytes; use at \
                 most that, or 0 for the cluster default"
            ),
        });
    }
    Ok(())
}

/// Checks a topic creation against the limits and the brokers that are ONLINE now.
///
/// `partitions` and `replication_factor` must already have their defaults filled in: zero is
/// refused here. `online_brokers` is the number of ONLINE brokers in the applied state.
pub fn validate_create_topic(
    request: &CreateTopicRequest,
    online_brokers: usize,
    max_partitions: u32,
) -> Result<(), MetadataError> {
    validate_topic_name(&request.name)?;
    if request.partitions == 0 || request.partitions > max_partitions {
        return Err(MetadataError::InvalidPartitionCount {
            partitions: request.partitions,
            max: max_partitions,
        });
    }
    let replication_factor = request.replication_factor;
    if replication_factor == 0 {
        return Err(MetadataError::ZeroReplicationFactor);
    }
    if replication_factor as usize > online_brokers {
        return Err(MetadataError::NotEnoughBrokers {
            replication_factor,
            online: online_brokers,
        });
    }
    if let Some(config) = &request.config {
        validate_topic_config(config, replication_factor)?;
    }
    Ok(())
}

/// Checks a broker registration: a non-zero id and an address other nodes can dial.
pub fn validate_register_broker(request: &RegisterBrokerRequest) -> Result<(), MetadataError> {
    if request.broker_id == 0 {
        return Err(MetadataError::InvalidBrokerId);
    }
    let invalid = |reason: &str| MetadataError::InvalidBrokerAddress {
        host: request.host.clone(),
        port: request.port,
        reason: reason.to_string(),
    };
    if request.host.is_empty() {
        return Err(invalid(
            "the host is empty; advertise a host name or IP address",
        ));
    }
    if request.host.chars().count() > MAX_HOST_CHARS {
        return Err(invalid("the host is longer than 253 characters"));
    }
    if request
        .host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "the host contains whitespace or control characters",
        ));
    }
    if request.port == 0 || request.port > u32::from(u16::MAX) {
        return Err(invalid("the port must be 1 to 65535"));
    }
    Ok(())
}

/// Checks the stateless part of an ISR change: a valid broker and topic, and a non-empty ISR
/// without duplicates. Whether the sender leads the partition at that epoch, and whether the ISR
/// fits the replicas, depends on the state and is checked when the command is applied.
pub fn validate_alter_partition(request: &AlterPartitionRequest) -> Result<(), MetadataError> {
    if request.broker_id == 0 {
        return Err(MetadataError::InvalidBrokerId);
    }
    validate_topic_name(&request.topic)?;
    let invalid = |reason: &str| MetadataError::InvalidIsr {
        topic: request.topic.clone(),
        partition: request.partition,
        isr: request.new_isr.clone(),
        reason: reason.to_string(),
    };
    if request.new_isr.is_empty() {
        return Err(invalid("it is empty; it must hold at least the leader"));
    }
    if has_duplicates(&request.new_isr) {
        return Err(invalid("it lists a broker twice"));
    }
    Ok(())
}

/// Whether `ids` holds some id twice. Lists are replica lists (a handful of ids), so the
/// quadratic scan beats allocating a set.
pub(super) fn has_duplicates(ids: &[u64]) -> bool {
    ids.iter().enumerate().any(|(i, id)| ids[..i].contains(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, partitions: u32, replication_factor: u32) -> CreateTopicRequest {
        CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            config: None,
        }
    }

    #[test]
    fn topic_names_follow_the_rules() {
        for good in ["a", "orders", "A.b_c-9", "..x", &"x".repeat(249)] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "é", "t\n", &"x".repeat(250)] {
            let error = validate_topic_name(bad).unwrap_err();
            assert!(
                matches!(error, MetadataError::InvalidTopicName { .. }),
                "{bad}"
            );
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
        }
        assert_eq!(
            validate_topic_name("a/b").unwrap_err().to_string(),
            "invalid topic name \"a/b\": the character '/' is not allowed; use 1 to 249 \
             characters from [A-Za-z0-9._-], not \".\" or \"..\""
        );
    }

    #[test]
    fn partition_count_is_bounded() {
        assert_eq!(
            validate_create_topic(&create("t", 1000, 1), 1, 1000),
            Ok(())
        );
        for partitions in [0, 1001] {
            let error = validate_create_topic(&create("t", partitions, 1), 1, 1000).unwrap_err();
            assert_eq!(
                error,
                MetadataError::InvalidPartitionCount {
                    partitions,
                    max: 1000
                }
            );
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
        }
        assert_eq!(
            validate_create_topic(&create("t", 8, 1), 1, 4)
                .unwrap_err()
                .to_string(),
            "invalid partition count 8: choose 1 to 4 partitions"
        );
    }

    #[test]
    fn replication_factor_is_bounded_by_online_brokers() {
        assert_eq!(validate_create_topic(&create("t", 3, 2), 2, 1000), Ok(()));
        let error = validate_create_topic(&create("t", 3, 3), 2, 1000).unwrap_err();
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            error.to_string(),
            "replication factor 3 exceeds the 2 ONLINE brokers; start more brokers or lower \
             --replication-factor"
        );
        let error = validate_create_topic(&create("t", 3, 0), 2, 1000).unwrap_err();
        assert_eq!(error, MetadataError::ZeroReplicationFactor);
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn topic_config_is_sane() {
        let ok = TopicConfig {
            min_insync_replicas: 2,
            retention_ms: -1,
            retention_bytes: 0,
            max_message_bytes: MAX_MESSAGE_BYTES_LIMIT,
        };
        assert_eq!(validate_topic_config(&ok, 2), Ok(()));
        let cases = [
            (
                TopicConfig {
                    min_insync_replicas: 3,
                    ..ok
                },
                "min_insync_replicas",
            ),
            (
                TopicConfig {
                    retention_ms: -2,
                    ..ok
                },
                "retention_ms",
            ),
            (
                TopicConfig {
                    retention_bytes: i64::MIN,
                    ..ok
                },
                "retention_bytes",
            ),
            (
                TopicConfig {
                    max_message_bytes: MAX_MESSAGE_BYTES_LIMIT + 1,
                    ..ok
                },
                "max_message_bytes",
            ),
        ];
        for (config, expected) in cases {
            let error = validate_topic_config(&config, 2).unwrap_err();
            assert!(
                matches!(error, MetadataError::InvalidTopicConfig { field, .. } if field == expected),
                "{error}"
            );
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
        }
        let request = CreateTopicRequest {
            config: Some(TopicConfig {
                min_insync_replicas: 3,
                ..ok
            }),
            ..create("t", 1, 2)
        };
        assert_eq!(
            validate_create_topic(&request, 3, 1000)
                .unwrap_err()
                .to_string(),
            "invalid topic config min_insync_replicas = 3: it exceeds the replication factor 2, \
             so acks=all could never succeed; lower it or raise the replication factor"
        );
    }

    #[test]
    fn broker_registrations_need_an_id_and_address() {
        let ok = RegisterBrokerRequest {
            broker_id: 1,
            host: "broker-1.dmq".into(),
            port: 9092,
            rack: String::new(),
            ..Default::default()
        };
        assert_eq!(validate_register_broker(&ok), Ok(()));
        let error = validate_register_broker(&RegisterBrokerRequest {
            broker_id: 0,
            ..ok.clone()
        })
        .unwrap_err();
        assert_eq!(error, MetadataError::InvalidBrokerId);
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        for bad in [
            RegisterBrokerRequest {
                host: String::new(),
                ..ok.clone()
            },
            RegisterBrokerRequest {
                host: "a b".into(),
                ..ok.clone()
            },
            RegisterBrokerRequest {
                port: 0,
                ..ok.clone()
            },
            RegisterBrokerRequest {
                port: 65536,
                ..ok.clone()
            },
        ] {
            let error = validate_register_broker(&bad).unwrap_err();
            assert!(matches!(error, MetadataError::InvalidBrokerAddress { .. }));
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn isr_changes_need_a_non_empty_isr_without_duplicates() {
        let ok = AlterPartitionRequest {
            broker_id: 1,
            broker_epoch: 5,
            topic: "t".into(),
            partition: 0,
            leader_epoch: 0,
            new_isr: vec![1, 2],
            ..Default::default()
        };
        assert_eq!(validate_alter_partition(&ok), Ok(()));
        for new_isr in [vec![], vec![1, 2, 1]] {
            let error = validate_alter_partition(&AlterPartitionRequest {
                new_isr,
                ..ok.clone()
            })
            .unwrap_err();
            assert!(matches!(error, MetadataError::InvalidIsr { .. }));
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
        }
        assert_eq!(
            validate_alter_partition(&AlterPartitionRequest { broker_id: 0, ..ok }),
            Err(MetadataError::InvalidBrokerId)
        );
    }
}
