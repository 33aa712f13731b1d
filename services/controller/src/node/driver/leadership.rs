//! The leader's own work on the Raft thread besides replication: its lease (`lease.rs`) and
//! raising the metadata feature level (`metadata/features.rs`).

use dmq_proto::v1::metadata_command::Command;
use dmq_proto::v1::{MetadataCommand, SetFeatureLevelCommand};
use dmq_raft::Role;
use prost::Message as _;
use std::time::Instant;

use super::Driver;
use crate::metadata::features;
use crate::node::lease::lease_length;

impl Driver {
    /// On the leader, once its applied state includes every earlier term: raises the agreed
    /// metadata feature level to the highest every voter supports (each says so in its append
    /// answers; one that has not, or an older version, counts as 0), and names the cluster with
    /// the first raise. One such proposal in flight at most.
    pub(super) fn maybe_raise_feature_level(&mut self) {
        if self.raft.role() != Role::Leader {
            return;
        }
        let term = self.raft.term();
        let applied = self.raft.applied_index();
        if applied < self.term_start_index
            || self
                .level_proposal
                .is_some_and(|(index, t)| t == term && applied < index)
        {
            return;
        }
        let mut target = features::supported_max(&self.cfg.faults);
        // Every member applies the log, learners too.
        let members: Vec<_> = self.raft.membership().members().collect();
        for &id in members.iter().filter(|&&id| id != self.cfg.id) {
            target = target.min(self.peer_levels.get(&id).copied().unwrap_or(0));
        }
        let level = self.metadata.feature_level();
        let unnamed = self.metadata.cluster_id().is_empty();
        if target == 0 || (target <= level && !unnamed) {
            return;
        }
        let command = MetadataCommand {
            command: Some(Command::SetFeatureLevel(SetFeatureLevelCommand {
                feature_level: target.max(level),
                cluster_id: if unnamed {
                    features::new_cluster_id()
                } else {
                    String::new()
                },
            })),
        };
        if let Ok((index, t)) = self.raft.propose(command.encode_to_vec()) {
            tracing::info!(
                node_id = self.cfg.id,
                from = level,
                to = target.max(level),
                index,
                "every controller supports a higher metadata feature level: raising it"
            );
            self.level_proposal = Some((index, t));
        }
    }

    /// The leader lease from the acknowledgments of this term (see `lease.rs`); none while not
    /// leading or while handing leadership over.
    pub(super) fn publish_lease(&mut self) {
        let term = self.raft.term();
        let leading = self.raft.role() == Role::Leader;
        if !leading || self.lease_tracker.term() != term {
            self.lease_tracker.reset(term);
        }
        let until = (leading && self.raft.transferring_to().is_none())
            .then(|| {
                let length = lease_length(self.cfg.tick, self.cfg.election_timeout_min_ticks);
                self.lease_tracker
                    .until(self.raft.quorum(), length, Instant::now())
            })
            .flatten();
        self.lease.set(term, until);
    }
}
