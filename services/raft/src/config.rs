//! Configuration of one Raft node, validated before a node is built.

use crate::types::NodeId;

/// A bug the simulator plants on purpose to prove it can catch it. Test-only: a production
/// configuration always leaves [`Config::planted_bug`] at `None`, and `dmq` never sets it.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// The vote is changed in memory but never handed out in `Ready::hard_state`.
    VoteNotPersisted,
    /// Votes are granted without the §5.4.1 "at least as up to date" check.
    VoteForStaleLog,
    /// An entry of an earlier term is committed by counting replicas (the Figure 8 case, §5.4.2).
    CommitPreviousTerm,
    /// The node's messages are sent before its Ready is persisted (acknowledgment before flush).
    /// The core cannot do I/O, so this bug lives in the caller's [`crate::ReadyPlan`], which
    /// puts every message before the write.
    AckBeforeFlush,
    /// A node that sees a higher term takes it but does not step down (§5.1).
    NoStepDownOnHigherTerm,
    /// A node whose storage was wiped comes back voting at once instead of through
    /// [`Raft::rejoin`](crate::Raft::rejoin): it forgot its votes and its log, so it can help
    /// elect a leader that lacks committed entries. Like `AckBeforeFlush` this is the caller's
    /// bug; the simulator plants it.
    WipedNodeVotesAtOnce,
    /// The [`crate::ReadyPlan`] applies committed entries before the write on the storage's
    /// synced index alone, without the core's stable index: after a truncation the storage
    /// still counts the replaced entries as synced, so entries this Ready has yet to write
    /// are applied.
    ApplyBeforeDurable,
    /// A leader appends a configuration change while the previous one is not committed: two
    /// changes of one voter each can make configurations with disjoint majorities (thesis
    /// §4.1).
    TwoMembershipChangesInFlight,
    /// A leader counts learners' acknowledgments toward a commit.
    LearnerCountsTowardCommit,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 9] = [
        PlantedBug::VoteNotPersisted,
        PlantedBug::VoteForStaleLog,
        PlantedBug::CommitPreviousTerm,
        PlantedBug::AckBeforeFlush,
        PlantedBug::NoStepDownOnHigherTerm,
        PlantedBug::WipedNodeVotesAtOnce,
        PlantedBug::ApplyBeforeDurable,
        PlantedBug::TwoMembershipChangesInFlight,
        PlantedBug::LearnerCountsTowardCommit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::VoteNotPersisted => "vote-not-persisted",
            PlantedBug::VoteForStaleLog => "vote-for-stale-log",
            PlantedBug::CommitPreviousTerm => "commit-previous-term",
            PlantedBug::AckBeforeFlush => "ack-before-flush",
            PlantedBug::NoStepDownOnHigherTerm => "no-step-down-on-higher-term",
            PlantedBug::WipedNodeVotesAtOnce => "wiped-node-votes-at-once",
            PlantedBug::ApplyBeforeDurable => "apply-before-durable",
            PlantedBug::TwoMembershipChangesInFlight => "two-membership-changes-in-flight",
            PlantedBug::LearnerCountsTowardCommit => "learner-counts-toward-commit",
        }
    }

    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// How one node behaves. Times are in ticks: the caller decides how long a tick is (the
/// controllers use 100 ms by default, so the defaults give heartbeats every 100 ms and election
/// timeouts drawn from 1000..2000 ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; must be one of `voters` unless `voters` is empty.
    pub id: NodeId,
    /// The bootstrap configuration: every voting member of a new cluster, this node included.
    /// It is in effect only until the log or a snapshot holds a configuration, so it matters
    /// only to a cluster that never changed its membership. Empty for a node that joins an
    /// existing cluster: it learns the configuration from the leader (as a learner it neither
    /// votes nor campaigns until a configuration makes it a voter).
    pub voters: Vec<NodeId>,
    /// A leader sends heartbeats this often.
    pub heartbeat_interval_ticks: u32,
    /// Election timeouts are drawn uniformly from `min..max` (§5.2). `min` is also the window in
    /// which a node that heard from a live leader ignores votes, and the check-quorum period.
    pub election_timeout_min_ticks: u32,
    pub election_timeout_max_ticks: u32,
    /// Run a pre-vote round before bumping the term (thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within `election_timeout_min_ticks` steps
    /// down, and followers ignore votes while they hear from a live leader (thesis §6.2, §9.6).
    pub check_quorum: bool,
    /// Appends in flight to one follower at most (pipelining window).
    pub max_inflight_appends: usize,
    /// Bytes of entries in one AppendEntries at most (at least one entry is always sent).
    pub max_append_bytes: usize,
    /// Proposals not yet committed a leader accepts at most, in bytes; beyond it `propose`
    /// fails with [`crate::ProposeError::Backpressure`].
    pub max_uncommitted_bytes: usize,
    /// Seed of the RNG that draws election timeouts, so a run can be replayed.
    pub seed: u64,
    #[doc(hidden)]
    pub planted_bug: Option<PlantedBug>,
}

impl Config {
    /// The defaults for `id` among `voters`.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            heartbeat_interval_ticks: 1,
            election_timeout_min_ticks: 10,
            election_timeout_max_ticks: 20,
            pre_vote: true,
            check_quorum: true,
            max_inflight_appends: 64,
            max_append_bytes: 1024 * 1024,
            max_uncommitted_bytes: 64 * 1024 * 1024,
            seed: id,
            planted_bug: None,
        }
    }

    /// Checks that the configuration can work, with an error that says what to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if !self.voters.is_empty() && !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter {
                id: self.id,
                voters: self.voters.clone(),
            });
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) || sorted.contains(&0) {
            return Err(ConfigError::BadVoters {
                voters: self.voters.clone(),
            });
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if self.election_timeout_min_ticks <= self.heartbeat_interval_ticks {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election_timeout_min_ticks: self.election_timeout_min_ticks,
                heartbeat_interval_ticks: self.heartbeat_interval_ticks,
            });
        }
        if self.election_timeout_max_ticks <= self.election_timeout_min_ticks {
            return Err(ConfigError::EmptyElectionRange {
                min: self.election_timeout_min_ticks,
                max: self.election_timeout_max_ticks,
            });
        }
        if self.max_inflight_appends == 0 {
            return Err(ConfigError::Zero {
                what: "max_inflight_appends",
            });
        }
        if self.max_append_bytes == 0 {
            return Err(ConfigError::Zero {
                what: "max_append_bytes",
            });
        }
        if self.max_uncommitted_bytes == 0 {
            return Err(ConfigError::Zero {
                what: "max_uncommitted_bytes",
            });
        }
        Ok(())
    }
}

/// A configuration that cannot work; each variant says what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    ZeroId,
    NotAVoter {
        id: NodeId,
        voters: Vec<NodeId>,
    },
    BadVoters {
        voters: Vec<NodeId>,
    },
    ZeroHeartbeat,
    ElectionNotAboveHeartbeat {
        election_timeout_min_ticks: u32,
        heartbeat_interval_ticks: u32,
    },
    EmptyElectionRange {
        min: u32,
        max: u32,
    },
    Zero {
        what: &'static str,
    },
    /// A recovered configuration entry does not decode: the storage is corrupt or was written
    /// by another version.
    BadMembershipEntry {
        index: u64,
        reason: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::ZeroId => write!(f, "node id must be at least 1 (0 means \"no node\")"),
            ConfigError::NotAVoter { id, voters } => {
                write!(
                    f,
                    "node id {id} is not among the voters {voters:?}: add it to the peers"
                )
            }
            ConfigError::BadVoters { voters } => write!(
                f,
                "voters {voters:?} must be distinct non-zero ids: fix the peers list"
            ),
            ConfigError::ZeroHeartbeat => write!(f, "heartbeat interval must be at least 1 tick"),
            ConfigError::ElectionNotAboveHeartbeat {
                election_timeout_min_ticks,
                heartbeat_interval_ticks,
            } => write!(
                f,
                "election timeout ({election_timeout_min_ticks} ticks) must exceed the heartbeat \
                 interval ({heartbeat_interval_ticks} ticks); use at least 5x the heartbeat"
            ),
            ConfigError::EmptyElectionRange { min, max } => write!(
                f,
                "election timeout max ({max} ticks) must exceed min ({min} ticks) so timeouts \
                 are randomized; 2x min is usual"
            ),
            ConfigError::Zero { what } => write!(f, "{what} must be at least 1"),
            ConfigError::BadMembershipEntry { index, reason } => write!(
                f,
                "the configuration entry at index {index} in the stored log cannot be read \
                 ({reason}): restore this node from a backup or replace it with an empty one \
                 that joins"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::new(1, vec![1, 2, 3]).validate().unwrap();
    }

    #[test]
    fn election_must_exceed_heartbeat_with_an_actionable_message() {
        let mut c = Config::new(1, vec![1, 2, 3]);
        c.heartbeat_interval_ticks = 10;
        let err = c.validate().unwrap_err();
        assert!(matches!(err, ConfigError::ElectionNotAboveHeartbeat { .. }));
        assert!(err.to_string().contains("must exceed the heartbeat"));
    }

    #[test]
    fn rejects_unknown_self_duplicates_and_empty_range() {
        assert!(matches!(
            Config::new(4, vec![1, 2, 3]).validate(),
            Err(ConfigError::NotAVoter { .. })
        ));
        assert!(matches!(
            Config::new(1, vec![1, 1, 3]).validate(),
            Err(ConfigError::BadVoters { .. })
        ));
        let mut c = Config::new(1, vec![1]);
        c.election_timeout_max_ticks = c.election_timeout_min_ticks;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::EmptyElectionRange { .. })
        ));
        assert!(matches!(
            Config::new(0, vec![0]).validate(),
            Err(ConfigError::ZeroId)
        ));
    }
}
