//! Cluster membership (thesis chapter 4): who votes, who only learns, and how a change is
//! written into a log entry.
//!
//! Changes go one voter at a time (thesis §4.1): any two majorities of configurations that
//! differ by one voter overlap, so a configuration takes effect on a node as soon as the node
//! appends it, committed or not, and a leader appends the next change only once the previous
//! one committed. Learners (§4.2.1) receive the log but never vote and never count toward a
//! commit, a read or check-quorum, so adding or removing any number of them is always safe.
//!
//! # To ensure correctness
//! - A node's configuration is the latest one in its log (or its snapshot's, or the bootstrap
//!   one when neither holds any): [`MembershipLog`] tracks it across appends, truncations,
//!   compactions and installed snapshots, so a truncated change is undone with it.
//! - [`Membership::check_change_from`] admits a new configuration only if its voters differ from
//!   the old ones by at most one and voters and learners are disjoint.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Index, NodeId};

/// The members of the Raft group. `context` holds opaque bytes per member that the core never
/// reads (the controllers keep each member's addresses there, so every node learns them from
/// the log and the snapshot, not from flags).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub context: BTreeMap<NodeId, Vec<u8>>,
}

/// The format byte an encoded membership starts with.
const ENCODING_V1: u8 = 1;
/// Members one encoded configuration holds at most: a bound on what a corrupt entry can make
/// a node allocate.
pub const MEMBERS_MAX: usize = 1024;
/// Context bytes per member at most.
pub const CONTEXT_BYTES_MAX: usize = 4096;

/// Why a configuration was refused or could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// The bytes of a configuration entry are not one this version writes: a bug or a
    /// corruption that a checksum did not catch. Nothing of it was applied.
    Malformed { reason: String },
    /// A configuration needs at least one voter.
    NoVoters,
    /// Node id 0 means "no node".
    ZeroId,
    /// A node cannot be both a voter and a learner.
    VoterAndLearner { node: NodeId },
    /// Too many members or context bytes (see [`MEMBERS_MAX`], [`CONTEXT_BYTES_MAX`]).
    TooLarge { what: &'static str, max: usize },
    /// Voters may change by one at a time (add one or remove one); make the change in steps.
    MoreThanOneVoterChanged {
        added: Vec<NodeId>,
        removed: Vec<NodeId>,
    },
    /// A context was given for a node that is not a member.
    ContextForNonMember { node: NodeId },
}

impl std::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembershipError::Malformed { reason } => {
                write!(f, "malformed membership entry: {reason}")
            }
            MembershipError::NoVoters => write!(f, "a configuration needs at least one voter"),
            MembershipError::ZeroId => write!(f, "node id 0 is not a valid member"),
            MembershipError::VoterAndLearner { node } => {
                write!(f, "node {node} cannot be both a voter and a learner")
            }
            MembershipError::TooLarge { what, max } => write!(f, "{what} exceed {max}"),
            MembershipError::MoreThanOneVoterChanged { added, removed } => write!(
                f,
                "voters may change one at a time (this adds {added:?} and removes {removed:?}); \
                 make the change in steps"
            ),
            MembershipError::ContextForNonMember { node } => {
                write!(
                    f,
                    "a context is given for node {node}, which is not a member"
                )
            }
        }
    }
}

impl std::error::Error for MembershipError {}

impl Membership {
    /// Only voters, without context (a bootstrap configuration).
    pub fn from_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.voters.is_empty() && self.learners.is_empty()
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Voters then learners, each in id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// Votes or acknowledgments that make a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Checks the configuration on its own (not as a change).
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if self.members().any(|id| id == 0) {
            return Err(MembershipError::ZeroId);
        }
        if let Some(&node) = self.voters.intersection(&self.learners).next() {
            return Err(MembershipError::VoterAndLearner { node });
        }
        if self.voters.len() + self.learners.len() > MEMBERS_MAX {
            return Err(MembershipError::TooLarge {
                what: "members",
                max: MEMBERS_MAX,
            });
        }
        for (&node, ctx) in &self.context {
            if !self.contains(node) {
                return Err(MembershipError::ContextForNonMember { node });
            }
            if ctx.len() > CONTEXT_BYTES_MAX {
                return Err(MembershipError::TooLarge {
                    what: "context bytes of one member",
                    max: CONTEXT_BYTES_MAX,
                });
            }
        }
        Ok(())
    }

    /// Whether `self` may follow `old` in the log: valid, and voters changed by at most one.
    pub fn check_change_from(&self, old: &Membership) -> Result<(), MembershipError> {
        self.validate()?;
        let added: Vec<NodeId> = self.voters.difference(&old.voters).copied().collect();
        let removed: Vec<NodeId> = old.voters.difference(&self.voters).copied().collect();
        if added.len() + removed.len() > 1 {
            return Err(MembershipError::MoreThanOneVoterChanged { added, removed });
        }
        Ok(())
    }

    /// The bytes of a configuration entry: `format (1) · voter count (u32 BE) · voters · learner
    /// count · learners`, each member `id (u64 BE) · context length (u32 BE) · context`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENCODING_V1];
        for set in [&self.voters, &self.learners] {
            out.extend_from_slice(&(set.len() as u32).to_be_bytes());
            for &id in set {
                let ctx = self.context.get(&id).map_or(&[][..], Vec::as_slice);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&(ctx.len() as u32).to_be_bytes());
                out.extend_from_slice(ctx);
            }
        }
        out
    }

    /// Decodes [`Membership::encode`]'s bytes, refusing anything else (trailing bytes included).
    pub fn decode(bytes: &[u8]) -> Result<Membership, MembershipError> {
        let malformed = |reason: &str| MembershipError::Malformed {
            reason: reason.to_string(),
        };
        let mut r = bytes;
        let mut take = |n: usize| -> Result<&[u8], MembershipError> {
            if r.len() < n {
                return Err(malformed("truncated"));
            }
            let (head, rest) = r.split_at(n);
            r = rest;
            Ok(head)
        };
        if take(1)? != [ENCODING_V1] {
            return Err(malformed("unknown format byte"));
        }
        let mut m = Membership::default();
        for learners in [false, true] {
            let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            if count > MEMBERS_MAX {
                return Err(malformed("too many members"));
            }
            for _ in 0..count {
                let id = u64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
                let len = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
                if len > CONTEXT_BYTES_MAX {
                    return Err(malformed("context too long"));
                }
                let ctx = take(len)?.to_vec();
                let set = if learners {
                    &mut m.learners
                } else {
                    &mut m.voters
                };
                if !set.insert(id) {
                    return Err(malformed("a member is listed twice"));
                }
                if !ctx.is_empty() {
                    m.context.insert(id, ctx);
                }
            }
        }
        if !r.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        m.validate()
            .map_err(|e| malformed(&format!("invalid: {e}")))?;
        Ok(m)
    }
}

/// A node's configurations along its log: the one its snapshot holds (or the bootstrap one)
/// and each configuration entry after it.
#[derive(Clone, Debug, Default)]
pub(crate) struct MembershipLog {
    /// In effect at the snapshot's last index.
    pub(crate) base: Membership,
    /// Configuration entries after the snapshot, in index order.
    pub(crate) changes: Vec<(Index, Membership)>,
}

impl MembershipLog {
    /// The latest configuration: the one in effect on this node.
    pub(crate) fn latest(&self) -> &Membership {
        self.changes.last().map_or(&self.base, |(_, m)| m)
    }

    /// The index of the latest configuration entry, or `None` if the base is in effect.
    pub(crate) fn latest_index(&self) -> Option<Index> {
        self.changes.last().map(|&(i, _)| i)
    }

    /// The configuration in effect at `index` (at or after the snapshot).
    pub(crate) fn at(&self, index: Index) -> &Membership {
        self.changes
            .iter()
            .rev()
            .find(|&&(i, _)| i <= index)
            .map_or(&self.base, |(_, m)| m)
    }

    pub(crate) fn appended(&mut self, index: Index, m: Membership) {
        debug_assert!(self.latest_index().is_none_or(|i| i < index));
        self.changes.push((index, m));
    }

    /// Entries from `index` on were dropped: so are their configurations.
    pub(crate) fn truncated_from(&mut self, index: Index) {
        self.changes.retain(|&(i, _)| i < index);
    }

    /// The log now starts after `index`: the configuration there becomes the base.
    pub(crate) fn compacted_to(&mut self, index: Index) {
        self.base = self.at(index).clone();
        self.changes.retain(|&(i, _)| i > index);
    }

    /// An installed snapshot replaced the whole log.
    pub(crate) fn restored(&mut self, base: Membership) {
        self.base = base;
        self.changes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        Membership {
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            context: BTreeMap::new(),
        }
    }

    #[test]
    fn encoding_round_trips_with_context_and_refuses_garbage() {
        let mut a = m(&[1, 2, 3], &[4]);
        a.context.insert(4, b"10.0.0.4:9093".to_vec());
        let bytes = a.encode();
        assert_eq!(Membership::decode(&bytes).unwrap(), a);
        for cut in 0..bytes.len() {
            assert!(Membership::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Membership::decode(&trailing).is_err());
        let overlap = m(&[1, 2], &[2]).encode();
        assert!(matches!(
            Membership::decode(&overlap),
            Err(MembershipError::Malformed { .. })
        ));
    }

    #[test]
    fn one_voter_at_a_time_and_any_number_of_learners() {
        let old = m(&[1, 2, 3], &[]);
        assert!(m(&[1, 2, 3, 4], &[]).check_change_from(&old).is_ok());
        assert!(m(&[1, 2], &[3]).check_change_from(&old).is_ok());
        assert!(m(&[1, 2, 3], &[4, 5, 6]).check_change_from(&old).is_ok());
        assert!(matches!(
            m(&[1, 2, 3, 4, 5], &[]).check_change_from(&old),
            Err(MembershipError::MoreThanOneVoterChanged { .. })
        ));
        assert!(matches!(
            m(&[1, 2, 4], &[]).check_change_from(&old),
            Err(MembershipError::MoreThanOneVoterChanged { .. })
        ));
        assert_eq!(
            m(&[], &[1]).check_change_from(&m(&[1], &[])),
            Err(MembershipError::NoVoters)
        );
    }

    #[test]
    fn the_latest_configuration_follows_truncation_and_compaction() {
        let mut log = MembershipLog {
            base: m(&[1, 2, 3], &[]),
            changes: Vec::new(),
        };
        log.appended(5, m(&[1, 2, 3], &[4]));
        log.appended(9, m(&[1, 2, 3, 4], &[]));
        assert_eq!(log.latest(), &m(&[1, 2, 3, 4], &[]));
        assert_eq!(log.at(7), &m(&[1, 2, 3], &[4]));
        assert_eq!(log.at(4), &m(&[1, 2, 3], &[]));
        log.truncated_from(9);
        assert_eq!(log.latest(), &m(&[1, 2, 3], &[4]));
        log.compacted_to(6);
        assert_eq!(log.base, m(&[1, 2, 3], &[4]));
        assert!(log.changes.is_empty());
    }
}
