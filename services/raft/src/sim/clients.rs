//! The simulated clients: proposals and ReadIndex reads, and what their answers must show
//! (no acknowledgment before a majority holds the entry durably, reads that see every
//! acknowledged write).

use rand::Rng;

use super::checker;
use super::world::*;
use crate::raft::Raft;
use crate::storage::MemStorage;
use crate::types::*;

pub(super) struct Pending {
    pub(super) term: Term,
}

impl World {
    pub(super) fn serve_reads(&mut self, i: usize) -> Step {
        let n = &mut self.nodes[i];
        let applied = n.sm_applied;
        let ready: Vec<ReadState> = n
            .reads
            .iter()
            .copied()
            .filter(|r| r.index <= applied)
            .collect();
        n.reads.retain(|r| r.index > applied);
        for r in ready {
            if let Some((_, acked_at_issue)) = self.reads.remove(&r.ctx) {
                if r.index < acked_at_issue {
                    return Err(self.checker.violation(
                        checker::LINEARIZABLE_READ,
                        format!(
                            "node {} served read {} at index {} but index {acked_at_issue} was \
                             acknowledged before the read began",
                            i + 1,
                            r.ctx,
                            r.index
                        ),
                    ));
                }
                self.counts.reads_served += 1;
            }
        }
        Ok(())
    }

    /// Node `i` lost the reads it had under way (it crashed, or installed a snapshot): they
    /// will never be served, so they no longer count toward the reads outstanding, which
    /// would otherwise fill up and stop new reads (and the linearizable-read check) for the
    /// rest of the seed.
    pub(super) fn forget_reads_of(&mut self, i: usize) {
        self.reads.retain(|_, (node, _)| *node != i);
    }

    pub(super) fn resolve(&mut self, index: Index, term: Term) -> Step {
        let Some(list) = self.proposals.remove(&index) else {
            return Ok(());
        };
        self.proposals_pending -= list.len();
        for p in list {
            if p.term != term {
                continue; // lost: overwritten by another leader's entry, the client retries
            }
            // A node counts if its disk holds the entry, or held it before the disk was lost:
            // a leader cannot tell a lost disk from a slow one until the node answers again,
            // and one lost disk at a time is safe because the node cannot vote until it holds
            // what its leader committed (state machine safety and leader completeness check
            // that).
            let holds = |s: &MemStorage| {
                s.snapshot_index() >= index || s.entry(index).is_some_and(|e| e.term == term)
            };
            let durable = self
                .nodes
                .iter()
                .filter(|n| holds(n.disk.storage()) || n.before_wipe.as_ref().is_some_and(holds))
                .count();
            if durable < self.ack_majority {
                return Err(self.checker.violation(
                    checker::ACK_DURABLE,
                    format!("entry {index} (term {term}) acknowledged while durable on {durable} node(s)"),
                ));
            }
            self.counts.proposals_acked += 1;
            if !self.faults_on {
                self.acked_after_heal += 1;
            }
            self.acked_max_index = self.acked_max_index.max(index);
        }
        Ok(())
    }

    // ----- clients -----

    /// The node a client sends to: mostly a leader (if any), else any node.
    pub(super) fn pick_leader(&mut self) -> usize {
        let leaders = self.leaders();
        if !leaders.is_empty() && self.rng.random_bool(0.9) {
            leaders[self.rng.random_range(0..leaders.len())]
        } else {
            self.rng.random_range(0..self.nodes.len())
        }
    }

    pub(super) fn on_propose(&mut self) -> Step {
        // After the faults stop the client keeps proposing regardless, so that proposals lost
        // beyond a new leader's log are resolved once the log grows past them.
        if self.faults_on && self.proposals_pending >= PENDING_PROPOSALS_MAX {
            return Ok(());
        }
        let i = self.pick_leader();
        let n = &mut self.nodes[i];
        if n.busy() {
            return Ok(());
        }
        let Some(raft) = n.raft.as_mut() else {
            return Ok(());
        };
        let id = self.next_proposal;
        if let Ok((index, term)) = raft.propose(id.to_le_bytes().to_vec()) {
            self.next_proposal += 1;
            self.proposals
                .entry(index)
                .or_default()
                .push(Pending { term });
            self.proposals_pending += 1;
            self.log(|| {
                format!(
                    "node {} accepts proposal {id} at {index} term {term}",
                    i + 1
                )
            });
        }
        self.pump(i)
    }

    pub(super) fn on_read(&mut self) -> Step {
        let i = self.pick_leader();
        let n = &mut self.nodes[i];
        if n.busy() || self.reads.len() > 64 {
            return Ok(());
        }
        let Some(raft) = n.raft.as_mut() else {
            return Ok(());
        };
        let ctx = self.next_read_ctx;
        if raft.read_index(ctx).is_ok() {
            self.next_read_ctx += 1;
            self.reads.insert(ctx, (i, self.acked_max_index));
        }
        self.pump(i)
    }

    /// The highest term any live member is in (a node removed while it was cut off may
    /// campaign on in terms of its own: that disrupts nothing, see `membership.rs`).
    pub(super) fn max_term(&self) -> Term {
        self.member_rafts()
            .into_iter()
            .map(Raft::term)
            .max()
            .unwrap_or(0)
    }
}
