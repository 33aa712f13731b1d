//! Membership changes in the simulation: an operator asks the leader, now and then, to add a
//! learner, promote one, demote or remove a voter (the leader itself included) or drop a
//! learner, one step at a time as `dmq cluster add-controller`/`remove-controller` do, mixed
//! with every fault the run has. The checks this needs: a commit is held by a majority of the
//! voters of the leader's configuration, a leader was elected by a majority of its voters
//! (learners count for neither), and after the faults stop the members settle on a leader
//! however the removed nodes behave (liveness is judged over the members).

use std::collections::BTreeSet;

use rand::Rng;

use super::checker;
use super::world::*;
use crate::membership::Membership;
use crate::raft::Raft;
use crate::storage::MemStorage;
use crate::types::*;

/// Voters a configuration keeps at least (and the smallest majority an acknowledgment needs).
pub(super) const MEMBERSHIP_VOTERS_MIN: usize = 3;

impl World {
    pub(super) fn on_membership(&mut self) -> Step {
        let Some(i) = (0..self.nodes.len()).find(|&i| self.nodes[i].is_leader()) else {
            return Ok(());
        };
        if self.nodes[i].busy() {
            return Ok(());
        }
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let raft = self.nodes[i].raft.as_ref().expect("leading");
        let leader = raft.id();
        let current = raft.membership().clone();
        let Some(next) = self.next_membership(&current, &all) else {
            return Ok(());
        };
        let removes_leader = current.is_voter(leader) && !next.is_voter(leader);
        let raft = self.nodes[i].raft.as_mut().expect("leading");
        match raft.propose_membership(next.clone()) {
            Ok((index, term)) => {
                self.counts.membership_changes += 1;
                if removes_leader {
                    self.counts.leader_removals += 1;
                }
                self.log(|| {
                    format!(
                        "node {leader} proposes voters {:?} learners {:?} at {index} term {term}",
                        next.voters, next.learners
                    )
                });
            }
            Err(e) => self.log(|| format!("node {leader} refuses a membership change: {e}")),
        }
        self.pump(i)
    }

    /// One step from `current`, drawn among those that keep the voters within bounds.
    fn next_membership(&mut self, current: &Membership, all: &[NodeId]) -> Option<Membership> {
        let outsiders: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|&n| !current.contains(n))
            .collect();
        let learners: Vec<NodeId> = current.learners.iter().copied().collect();
        let voters: Vec<NodeId> = current.voters.iter().copied().collect();
        let can_shrink = voters.len() > MEMBERSHIP_VOTERS_MIN;
        let mut next = current.clone();
        match self.rng.random_range(0..5) {
            0 if !outsiders.is_empty() => {
                let n = outsiders[self.rng.random_range(0..outsiders.len())];
                next.learners.insert(n);
            }
            1 if !learners.is_empty() => {
                let n = learners[self.rng.random_range(0..learners.len())];
                next.learners.remove(&n);
                next.voters.insert(n);
            }
            2 if can_shrink => {
                let n = voters[self.rng.random_range(0..voters.len())];
                next.voters.remove(&n);
                next.learners.insert(n);
            }
            3 if can_shrink => {
                let n = voters[self.rng.random_range(0..voters.len())];
                next.voters.remove(&n);
            }
            4 if !learners.is_empty() => {
                let n = learners[self.rng.random_range(0..learners.len())];
                next.learners.remove(&n);
            }
            _ => return None,
        }
        next.context
            .retain(|n, _| next.voters.contains(n) || next.learners.contains(n));
        Some(next)
    }

    /// The configuration of the live node that has committed the most (among those that know
    /// one: a node that joins knows none until it hears from a leader): the members whose
    /// leader liveness is judged by.
    pub(super) fn cluster_membership(&self) -> Option<Membership> {
        self.nodes
            .iter()
            .filter_map(|n| n.raft.as_ref())
            .filter(|r| !r.membership().is_empty())
            .max_by_key(|r| (r.commit_index(), r.last_index()))
            .map(|r| r.membership().clone())
    }

    /// The live rafts that are members of [`World::cluster_membership`] (all of them when no
    /// node is live).
    pub(super) fn member_rafts(&self) -> Vec<&Raft> {
        let members: Option<BTreeSet<NodeId>> =
            self.cluster_membership().map(|m| m.members().collect());
        self.nodes
            .iter()
            .filter_map(|n| n.raft.as_ref())
            .filter(|r| members.as_ref().is_none_or(|m| m.contains(&r.id())))
            .collect()
    }

    /// A leader moved its commit to `commit`: a majority of the voters of its configuration
    /// must hold that entry on disk (or held it before their disk was lost, see `resolve`).
    pub(super) fn check_commit_on_voters(&self, i: usize, commit: Index) -> Step {
        let raft = self.nodes[i].raft.as_ref().expect("live");
        let membership = raft.membership();
        let Some(term) = raft.term_at(commit) else {
            return Ok(());
        };
        let holds = |s: &MemStorage| {
            s.snapshot_index() >= commit || s.entry(commit).is_some_and(|e| e.term == term)
        };
        let durable = self
            .nodes
            .iter()
            .filter(|n| membership.is_voter(n.id))
            .filter(|n| holds(n.disk.storage()) || n.before_wipe.as_ref().is_some_and(holds))
            .count();
        if durable < membership.quorum() {
            return Err(self.checker.violation(
                checker::COMMIT_ON_VOTERS,
                format!(
                    "node {} committed {commit} (term {term}) held by {durable} of voters {:?}",
                    raft.id(),
                    membership.voters
                ),
            ));
        }
        Ok(())
    }
}
