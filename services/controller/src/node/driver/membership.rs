//! The controller set as the Raft configuration says it (thesis chapter 4): who the transport
//! sends to and at which addresses, the bootstrap configuration recorded in the log, and
//! membership changes proposed through the ControllerService.
//!
//! # To ensure correctness
//! - Peers follow the configuration in effect (the latest in the log, committed or not):
//!   a sender is started for every member other than this node as soon as the configuration
//!   that adds it is appended, and dropped when one that removes it is. Addresses come from
//!   the configuration's member contexts; a member without one (a bootstrap configuration that
//!   was never recorded) keeps the address `--peers` gave.
//! - The first leader of a cluster whose log and snapshot hold no configuration with
//!   addresses records the bootstrap one, with every member's addresses, so that from then on
//!   members and addresses come from the log and snapshots, never from flags.

use std::collections::BTreeMap;
use std::sync::Arc;

use dmq_raft::{Membership, NodeId, Role};

use super::{Driver, ProposalWaiter};
use crate::node::{NodeError, PeerAddrs};
use crate::transport::peer;

impl Driver {
    /// Brings the peer senders and the address book in line with the configuration in
    /// effect, if it changed since the last call.
    pub(super) fn sync_peers(&mut self) {
        let membership = self.raft.membership();
        if *self.synced_membership == *membership {
            return;
        }
        let membership = membership.clone();
        let mut addrs: BTreeMap<NodeId, PeerAddrs> = BTreeMap::new();
        for id in membership.members() {
            let known = membership
                .context
                .get(&id)
                .and_then(|c| PeerAddrs::from_context(c))
                .or_else(|| self.addrs.get(&id).cloned());
            if let Some(a) = known {
                addrs.insert(id, a);
            } else {
                tracing::warn!(
                    node_id = self.cfg.id,
                    member = id,
                    "no address known for a member of the configuration; it cannot be reached"
                );
            }
        }
        // This node's own addresses are its flags' while the configuration does not name it
        // (it joins, or was removed): leader hints still point at it.
        if let Some(own) = self.cfg.peers.get(&self.cfg.id) {
            addrs.entry(self.cfg.id).or_insert_with(|| own.clone());
        }
        self.peers.retain(|id, _| {
            membership.contains(*id)
                && addrs.get(id).map(|a| &a.raft) == self.addrs.get(id).map(|a| &a.raft)
        });
        for (&id, a) in &addrs {
            if id == self.cfg.id || self.peers.contains_key(&id) || !membership.contains(id) {
                continue;
            }
            tracing::info!(node_id = self.cfg.id, peer = id, addr = %a.raft, "peer added");
            let tx = peer::spawn(
                &self.runtime,
                &self.cfg,
                id,
                a.raft.clone(),
                self.peer_inbox.clone(),
                self.cluster_id.clone(),
            );
            self.peers.insert(id, tx);
        }
        tracing::info!(
            node_id = self.cfg.id,
            voters = ?membership.voters,
            learners = ?membership.learners,
            index = ?self.raft.membership_index(),
            "configuration in effect"
        );
        self.addrs = addrs.clone();
        *self.shared_addrs.write().expect("not poisoned") = addrs;
        self.synced_membership = Arc::new(membership);
    }

    /// On a leader whose applied state includes every earlier term: records the bootstrap
    /// configuration, with addresses, if neither the log nor the snapshot holds one yet.
    pub(super) fn maybe_record_membership(&mut self) {
        if self.raft.role() != Role::Leader
            || self.raft.applied_index() < self.term_start_index
            || self.membership_record_term == Some(self.raft.term())
        {
            return;
        }
        let current = self.raft.membership();
        let recorded = self.raft.membership_index().is_some()
            || current
                .members()
                .all(|id| current.context.contains_key(&id));
        if recorded {
            return;
        }
        self.membership_record_term = Some(self.raft.term());
        let mut m = current.clone();
        for id in m.members().collect::<Vec<_>>() {
            if let Some(a) = self.addrs.get(&id) {
                m.context.insert(id, a.to_context());
            }
        }
        match self.raft.propose_membership(m) {
            Ok((index, _)) => tracing::info!(
                node_id = self.cfg.id,
                index,
                "recording the bootstrap configuration and its addresses in the log"
            ),
            Err(e) => tracing::warn!(
                node_id = self.cfg.id,
                error = %e,
                "could not record the bootstrap configuration yet"
            ),
        }
    }

    /// Proposes `to` as the next configuration if the one in effect is still `from` (a
    /// compare-and-set: a change computed from a configuration that another change replaced
    /// meanwhile could undo that change and still be one valid step); the reply comes when it
    /// is applied.
    pub(super) fn propose_membership(
        &mut self,
        from: Membership,
        to: Membership,
        reply: crate::node::handle::Reply<crate::metadata::ApplyOutcome>,
    ) {
        if self.raft.membership() != &from {
            let _ = reply.send(Err(NodeError::MembershipChangeBusy(
                "the configuration changed since this change was computed".into(),
            )));
            return;
        }
        if self.proposals.len() >= self.cfg.pending_proposals_max {
            let _ = reply.send(Err(NodeError::Overloaded(format!(
                "{} proposals are waiting for their commit",
                self.proposals.len()
            ))));
            return;
        }
        match self.raft.propose_membership(to) {
            Ok((index, term)) => {
                let deadline = std::time::Instant::now() + self.cfg.replication_timeout;
                self.proposals.insert(index, ProposalWaiter { term, reply });
                self.proposal_deadlines.push_back((deadline, index));
            }
            Err(e) => {
                let _ = reply.send(Err(self.propose_error(e)));
            }
        }
    }
}
