//! The safety invariants the simulator checks after every step. Each check names the invariant
//! (Raft paper Figure 3 and the durability rules in DESIGN.md) so a failure says what broke.

use std::collections::{BTreeMap, HashMap};

use crate::types::{Entry, Index, NodeId, Term};

/// An invariant that did not hold, with what showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
    pub step: u64,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invariant \"{}\" broken at step {}: {}",
            self.invariant, self.step, self.detail
        )
    }
}

pub(crate) const ELECTION_SAFETY: &str = "election safety (at most one leader per term)";
pub(crate) const LOG_MATCHING: &str = "log matching";
pub(crate) const LEADER_COMPLETENESS: &str = "leader completeness";
pub(crate) const STATE_MACHINE_SAFETY: &str = "state machine safety";
pub(crate) const TERM_MONOTONIC: &str = "term never decreases";
pub(crate) const VOTE_STABLE: &str = "a vote never changes within a term";
pub(crate) const COMMIT_MONOTONIC: &str = "commit index never decreases";
pub(crate) const COMMIT_OWN_TERM: &str =
    "a leader's commit index moves only to an entry of its term (5.4.2)";
pub(crate) const APPLY_ORDER: &str = "entries applied in order, each exactly once";
pub(crate) const APPLIED_LE_COMMITTED: &str = "applied <= committed";
pub const COMMIT_ON_VOTERS: &str = "a leader commits only what a majority of its configuration's voters hold (learners count for nothing)";
pub(crate) const ELECTED_BY_VOTERS: &str =
    "a leader is elected by a majority of its configuration's voters (learners count for nothing)";
pub(crate) const ACK_DURABLE: &str = "no proposal acknowledged before it is durable on a majority";
pub(crate) const LINEARIZABLE_READ: &str =
    "linearizable reads (ReadIndex) see every acknowledged write";
pub(crate) const LIVENESS_LEADER: &str =
    "liveness: a leader within 10 election timeouts after faults stop";
pub(crate) const LIVENESS_COMMIT: &str =
    "liveness: every pending proposal resolved after faults stop";
pub(crate) const LIVENESS_STABLE: &str = "liveness: after the faults stop, one leader holds for a while, within a bounded number of new terms";

/// A cheap, deterministic hash of an entry's identity and content.
pub(crate) fn entry_digest(e: &Entry) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |b: u64| {
        h ^= b;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    mix(e.index);
    mix(e.term);
    mix(matches!(e.kind, crate::types::EntryKind::Noop) as u64);
    for chunk in e.data.chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        mix(u64::from_le_bytes(b));
    }
    h
}

/// What the cluster as a whole has shown so far.
#[derive(Default)]
pub(crate) struct Checker {
    pub(crate) step: u64,
    leaders_by_term: HashMap<Term, NodeId>,
    /// (index, term) -> digest of every entry any node ever held: same index and term, same entry.
    entries_seen: HashMap<(Index, Term), u64>,
    /// index -> (term, digest, state-machine hash after applying it, term of the node that
    /// applied it first): the committed history. The entry was committed in a term no higher
    /// than that last one, so every leader of a later term must hold it (§5.4.3).
    applied: BTreeMap<Index, (Term, u64, u64, Term)>,
    /// (voter, term) -> candidate it granted its vote to.
    votes: HashMap<(NodeId, Term), NodeId>,
}

impl Checker {
    fn fail(&self, invariant: &'static str, detail: String) -> Result<(), Violation> {
        Err(Violation {
            invariant,
            detail,
            step: self.step,
        })
    }

    pub(crate) fn leader(&mut self, node: NodeId, term: Term) -> Result<(), Violation> {
        match self.leaders_by_term.insert(term, node) {
            Some(other) if other != node => self.fail(
                ELECTION_SAFETY,
                format!("nodes {other} and {node} both lead term {term}"),
            ),
            _ => Ok(()),
        }
    }

    /// A node newly became leader: its log must hold every committed entry (§5.4.3).
    pub(crate) fn leader_completeness(
        &self,
        node: NodeId,
        term: Term,
        snapshot_index: Index,
        term_at: impl Fn(Index) -> Option<Term>,
    ) -> Result<(), Violation> {
        for (&index, &(t, _, _, committed_by)) in self.applied.range(snapshot_index + 1..) {
            if committed_by < term && term_at(index) != Some(t) {
                return self.fail(
                    LEADER_COMPLETENESS,
                    format!(
                        "node {node} leads term {term} but holds {:?} at committed index {index} \
                         (committed term {t})",
                        term_at(index)
                    ),
                );
            }
        }
        Ok(())
    }

    pub(crate) fn entry_held(&mut self, node: NodeId, e: &Entry) -> Result<(), Violation> {
        let d = entry_digest(e);
        match self.entries_seen.insert((e.index, e.term), d) {
            Some(old) if old != d => self.fail(
                LOG_MATCHING,
                format!(
                    "node {node} holds a different entry at index {} term {}",
                    e.index, e.term
                ),
            ),
            _ => Ok(()),
        }
    }

    /// A node applied `e`, reaching state hash `sm_hash`.
    pub(crate) fn applied(
        &mut self,
        node: NodeId,
        e: &Entry,
        sm_hash: u64,
        node_term: Term,
    ) -> Result<(), Violation> {
        let d = entry_digest(e);
        match self.applied.get(&e.index) {
            Some(&(t, od, oh, _)) if t != e.term || od != d || oh != sm_hash => self.fail(
                STATE_MACHINE_SAFETY,
                format!(
                    "node {node} applied term {} at index {}, but term {t} was applied there \
                     before (state hashes {sm_hash:x} vs {oh:x})",
                    e.term, e.index
                ),
            ),
            Some(_) => Ok(()),
            None => {
                self.applied
                    .insert(e.index, (e.term, d, sm_hash, node_term));
                Ok(())
            }
        }
    }

    /// A node installed a snapshot claiming state hash `sm_hash` at `index`.
    pub(crate) fn snapshot_installed(
        &self,
        node: NodeId,
        index: Index,
        sm_hash: u64,
    ) -> Result<(), Violation> {
        match self.applied.get(&index) {
            Some(&(_, _, h, _)) if h != sm_hash => self.fail(
                STATE_MACHINE_SAFETY,
                format!("node {node} installed a snapshot at {index} that differs from the applied history"),
            ),
            _ => Ok(()),
        }
    }

    pub(crate) fn vote_granted(
        &mut self,
        voter: NodeId,
        term: Term,
        candidate: NodeId,
    ) -> Result<(), Violation> {
        match self.votes.insert((voter, term), candidate) {
            Some(old) if old != candidate => self.fail(
                VOTE_STABLE,
                format!("node {voter} voted for {old} and then for {candidate} in term {term}"),
            ),
            _ => Ok(()),
        }
    }

    /// `node` became leader of `term`: the votes it was granted (and its own) must include
    /// a majority of `voters`.
    pub(crate) fn elected_by_voters(
        &self,
        node: NodeId,
        term: Term,
        voters: &std::collections::BTreeSet<NodeId>,
    ) -> Result<(), Violation> {
        let granted = voters
            .iter()
            .filter(|&&v| v == node || self.votes.get(&(v, term)) == Some(&node))
            .count();
        if granted < voters.len() / 2 + 1 {
            return self.fail(
                ELECTED_BY_VOTERS,
                format!(
                    "node {node} leads term {term} with votes from {granted} of voters {voters:?}"
                ),
            );
        }
        Ok(())
    }

    pub(crate) fn highest_applied(&self) -> Index {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }

    pub(crate) fn violation(&self, invariant: &'static str, detail: String) -> Violation {
        Violation {
            invariant,
            detail,
            step: self.step,
        }
    }
}
