//! Errors the core returns, each saying what the caller should do.

use crate::membership::MembershipError;
use crate::types::{Index, NodeId};

/// Why a proposal, read or transfer was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Retry on the leader: `leader_hint` when this node knows it, else rediscover.
    NotLeader { leader_hint: Option<NodeId> },
    /// Leadership is being handed over; retry shortly (on the new leader).
    LeadershipTransferInProgress,
    /// Too many bytes are proposed but not committed; retry after earlier proposals commit.
    Backpressure {
        uncommitted_bytes: usize,
        max_uncommitted_bytes: usize,
    },
    /// The target of a leadership transfer is not a voter.
    UnknownNode { node: NodeId },
    /// A configuration change waits for the leader to commit an entry of its term (just
    /// elected); retry shortly.
    NoCommitInTerm,
    /// The previous configuration change, at `index`, is not committed yet; retry once it is.
    MembershipChangePending { index: Index },
    /// The configuration asked for is not one valid step from the current one; nothing was
    /// appended. Not retryable as is.
    InvalidMembership(MembershipError),
}

impl ProposeError {
    /// Whether trying again (possibly elsewhere) can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            ProposeError::UnknownNode { .. } | ProposeError::InvalidMembership(_)
        )
    }
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::NotLeader {
                leader_hint: Some(l),
            } => {
                write!(f, "not the leader; node {l} is")
            }
            ProposeError::NotLeader { leader_hint: None } => {
                write!(
                    f,
                    "not the leader and no leader is known yet; retry shortly"
                )
            }
            ProposeError::LeadershipTransferInProgress => {
                write!(
                    f,
                    "leadership is being transferred; retry on the new leader"
                )
            }
            ProposeError::Backpressure {
                uncommitted_bytes,
                max_uncommitted_bytes,
            } => write!(
                f,
                "{uncommitted_bytes} bytes proposed but not committed (max \
                 {max_uncommitted_bytes}); retry once earlier proposals commit"
            ),
            ProposeError::UnknownNode { node } => write!(f, "node {node} is not a voter"),
            ProposeError::NoCommitInTerm => write!(
                f,
                "the leader was just elected and has not committed an entry of its term; retry \
                 shortly"
            ),
            ProposeError::MembershipChangePending { index } => write!(
                f,
                "the previous membership change (index {index}) is not committed yet; retry \
                 once it is"
            ),
            ProposeError::InvalidMembership(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ProposeError {}
