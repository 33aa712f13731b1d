//! The controller's Prometheus metrics, named here once. A recorder is installed by the
//! binary (`dmq`, `--admin-listen`); without one these calls cost next to nothing.

use std::time::Duration;

use dmq_raft::Role;
use metrics::{counter, gauge, histogram};

use crate::node::NodeStatus;

fn role_value(role: Role) -> f64 {
    match role {
        Role::Follower => 0.0,
        Role::PreCandidate => 1.0,
        Role::Candidate => 2.0,
        Role::Leader => 3.0,
    }
}

/// Publishes a new node status: term, role (0 follower, 1 pre-candidate, 2 candidate,
/// 3 leader), commit and applied index; counts leader changes.
pub(crate) fn raft_status(old: &NodeStatus, new: &NodeStatus) {
    gauge!("raft_current_term").set(new.term as f64);
    gauge!("raft_state").set(role_value(new.role));
    gauge!("raft_commit_index").set(new.commit_index as f64);
    gauge!("raft_applied_index").set(new.applied_index as f64);
    gauge!("raft_is_leader").set(if new.role == Role::Leader { 1.0 } else { 0.0 });
    if new.leader_id.is_some() && new.leader_id != old.leader_id {
        counter!("raft_leader_changes_total").increment(1);
    }
}

/// One Ready persisted: its entries and how long the sync took.
pub(crate) fn raft_persisted(entries: usize, took: Duration) {
    counter!("raft_entries_replicated_total").increment(entries as u64);
    counter!("raft_readies_total").increment(1);
    histogram!("raft_persist_seconds").record(took.as_secs_f64());
}

/// One Ready's committed entries applied to the metadata.
pub(crate) fn raft_applied(entries: usize, took: Duration) {
    counter!("raft_entries_applied_total").increment(entries as u64);
    if entries > 0 {
        histogram!("raft_apply_seconds").record(took.as_secs_f64());
    }
}

/// A broker's heartbeat arrived (unix seconds).
pub(crate) fn broker_heartbeat(broker_id: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!("broker_heartbeat_last_seen_seconds", "broker_id" => broker_id.to_string()).set(now);
}

/// How many registered brokers are in each status.
pub(crate) fn broker_status_counts(online: usize, offline: usize) {
    gauge!("brokers", "status" => "online").set(online as f64);
    gauge!("brokers", "status" => "offline").set(offline as f64);
}
