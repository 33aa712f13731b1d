//! [`MetadataError`]: why a metadata request or command was refused, and what the caller should
//! do about it.
//!
//! One type serves both places a request can be refused: validation before proposing (nothing
//! malformed reaches the Raft log) and the deterministic rejection of a logged command that is no
//! longer valid when it is applied (the proposer gets the rejection as its answer). Each variant
//! maps to one gRPC code through [`MetadataError::code`]; the `Display` text is the message for a
//! human and names the way out.

/// A refused metadata request or command. Values are compared in tests and cloned into replies,
/// so every variant carries plain data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The topic name breaks the naming rules.
    #[error(
        "invalid topic name {name:?}: {reason}; use 1 to 249 characters from [A-Za-z0-9._-], \
         not \".\" or \"..\""
    )]
    InvalidTopicName { name: String, reason: String },

    /// The partition count is outside `1..=max`.
    #[error("invalid partition count {partitions}: choose 1 to {max} partitions")]
    InvalidPartitionCount { partitions: u32, max: u32 },

    /// A replication factor of zero.
    #[error("invalid replication factor 0: choose at least 1 (and at most the ONLINE brokers)")]
    ZeroReplicationFactor,

    /// More replicas asked for than there are ONLINE brokers to hold them.
    #[error(
        "replication factor {replication_factor} exceeds the {online} ONLINE brokers; start more \
         brokers or lower --replication-factor"
    )]
    NotEnoughBrokers {
        replication_factor: u32,
        online: usize,
    },

    /// A per-topic setting out of range.
    #[error("invalid topic config {field} = {value}: {reason}")]
    InvalidTopicConfig {
        field: &'static str,
        value: i64,
        reason: String,
    },

    /// Broker id 0 is reserved: it means "no leader".
    #[error("invalid broker id 0: broker ids start at 1 (0 means \"no broker\"); set --broker-id")]
    InvalidBrokerId,

    /// A broker registration without a reachable address.
    #[error("invalid broker address {host:?} port {port}: {reason}")]
    InvalidBrokerAddress {
        host: String,
        port: u32,
        reason: String,
    },

    /// The log entry holds no command (written by a newer or broken proposer).
    #[error("the metadata command is empty: nothing to apply")]
    EmptyCommand,

    /// A topic with this name exists.
    #[error("topic {name:?} already exists; pick another name or delete it first")]
    TopicAlreadyExists { name: String },

    /// No topic with this name.
    #[error("topic {name:?} does not exist; list the topics or create it first")]
    TopicNotFound { name: String },

    /// The topic has fewer partitions.
    #[error(
        "topic {topic:?} has no partition {partition} (it has {partitions}); refresh the metadata"
    )]
    PartitionNotFound {
        topic: String,
        partition: u32,
        partitions: u32,
    },

    /// No broker with this id is registered.
    #[error("broker {broker_id} is not registered; the broker must register (again)")]
    BrokerNotRegistered { broker_id: u64 },

    /// The caller holds an older (or a made-up) broker epoch: a newer registration replaced it.
    #[error(
        "broker {broker_id} sent epoch {given} but its current epoch is {current}: this \
         incarnation is fenced and must register again"
    )]
    StaleBrokerEpoch {
        broker_id: u64,
        given: u64,
        current: u64,
    },

    /// Only a partition's current leader may change its ISR.
    #[error(
        "broker {broker_id} is not the leader of {topic}-{partition} (the leader is {leader}, 0 \
         = none); refresh the metadata"
    )]
    NotPartitionLeader {
        broker_id: u64,
        topic: String,
        partition: u32,
        leader: u64,
    },

    /// The leader acted on an older leader epoch: leadership changed hands since.
    #[error(
        "leader epoch {given} of {topic}-{partition} is not the current epoch {current}; refresh \
         the metadata and retry with the current epoch"
    )]
    StaleLeaderEpoch {
        topic: String,
        partition: u32,
        given: u64,
        current: u64,
    },

    /// The ISR change was computed from another partition epoch: the leader or the ISR changed
    /// since (or the same change was already applied, e.g. by an earlier attempt).
    #[error(
        "partition epoch {given} of {topic}-{partition} is not the current epoch {current}: the \
         leader or ISR changed since; nothing was changed, refresh the metadata and decide again"
    )]
    StalePartitionEpoch {
        topic: String,
        partition: u32,
        given: u64,
        current: u64,
    },

    /// A proposed ISR that is not a non-empty, duplicate-free subset of the replicas holding the
    /// leader.
    #[error("invalid ISR {isr:?} for {topic}-{partition}: {reason}")]
    InvalidIsr {
        topic: String,
        partition: u32,
        isr: Vec<u64>,
        reason: String,
    },

    /// Only ONLINE brokers may join an ISR: an OFFLINE one could not be caught up.
    #[error(
        "broker {broker_id} cannot join the ISR of {topic}-{partition}: it is not ONLINE; retry \
         once it is"
    )]
    IneligibleReplica {
        broker_id: u64,
        topic: String,
        partition: u32,
    },

    /// A replica assignment that cannot describe a topic (the proposer's bug, or a hand-made one).
    #[error("invalid replica assignment for topic {topic:?}: {reason}")]
    InvalidAssignment { topic: String, reason: String },

    /// A broker chosen for the topic went OFFLINE or away between proposing and applying.
    #[error(
        "broker {broker_id} assigned to topic {topic:?} is no longer ONLINE; retry: a new \
         assignment will avoid it"
    )]
    AssignedBrokerUnavailable { topic: String, broker_id: u64 },

    /// A SetFeatureLevel below the agreed level: levels never go down.
    #[error(
        "feature level {requested} is below the agreed level {current}: the metadata feature \
         level never goes down"
    )]
    FeatureLevelDowngrade { current: u32, requested: u32 },

    /// The command needs a feature level the cluster has not agreed on yet (some controller
    /// runs an older version).
    #[error(
        "this request needs metadata feature level {required} but the controllers agreed on \
         {agreed} only: upgrade every controller, the level rises once all of them support it"
    )]
    FeatureLevelTooLow { required: u32, agreed: u32 },

    /// A page token this controller did not hand out.
    #[error(
        "invalid page token {token:?}: pass the next_page_token of the previous page, or an \
         empty token for the first page"
    )]
    InvalidPageToken { token: String },
}

impl MetadataError {
    /// The gRPC code of this refusal: InvalidArgument when the request itself is wrong,
    /// NotFound / AlreadyExists for names, FailedPrecondition when the cluster's state must
    /// change first (or the caller must refresh or re-register), Unavailable when a plain retry
    /// may succeed.
    pub fn code(&self) -> tonic::Code {
        use MetadataError::*;
        match self {
            InvalidTopicName { .. }
            | InvalidPartitionCount { .. }
            | ZeroReplicationFactor
            | InvalidTopicConfig { .. }
            | InvalidBrokerId
            | InvalidBrokerAddress { .. }
            | EmptyCommand
            | InvalidIsr { .. }
            | InvalidAssignment { .. }
            | InvalidPageToken { .. } => tonic::Code::InvalidArgument,
            TopicNotFound { .. } | PartitionNotFound { .. } | BrokerNotRegistered { .. } => {
                tonic::Code::NotFound
            }
            TopicAlreadyExists { .. } => tonic::Code::AlreadyExists,
            NotEnoughBrokers { .. }
            | StaleBrokerEpoch { .. }
            | NotPartitionLeader { .. }
            | StaleLeaderEpoch { .. }
            | StalePartitionEpoch { .. }
            | IneligibleReplica { .. }
            | FeatureLevelDowngrade { .. }
            | FeatureLevelTooLow { .. } => tonic::Code::FailedPrecondition,
            AssignedBrokerUnavailable { .. } => tonic::Code::Unavailable,
        }
    }
}

impl From<MetadataError> for tonic::Status {
    fn from(error: MetadataError) -> tonic::Status {
        tonic::Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_a_status_with_its_code_and_message() {
        let error = MetadataError::TopicNotFound { name: "t".into() };
        let status = tonic::Status::from(error.clone());
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), error.to_string());
        assert_eq!(
            status.message(),
            "topic \"t\" does not exist; list the topics or create it first"
        );
    }
}
