//! [`FollowerView`]: what a follower's transport may answer a leader's heartbeat with while
//! the Raft thread is busy (a slow sync), so a slow disk does not look like a dead node.
//!
//! A heartbeat normally waits for the Raft thread, which answers once the Ready it is in is
//! durable; during a long sync every heartbeat waits for it, the leader hears nothing from
//! the node, and with a majority of slow disks check-quorum ends the term. When the thread has
//! not answered within a short bound, the transport answers from this view instead:
//! "success, up to `prev_log_index`", for a heartbeat of the leader this node follows in the
//! term it is in, anchored at an index this node already acknowledged to that leader in that
//! term (so its log matches the leader's there; a follower never truncates what it
//! acknowledged to the leader of its term). The heartbeat still goes to the Raft thread, which
//! handles it in turn (its own answer is then dropped).
//!
//! # To ensure correctness
//! - Such an answer echoes no heartbeat round (`read_round` 0) and is marked `liveness_only`:
//!   it keeps the leader's check-quorum satisfied but never confirms a ReadIndex read or
//!   extends a leader lease, because the Raft thread may meanwhile have moved to a higher term
//!   (granted a vote) without this view knowing yet.
//! - `match_index` is at most what this node acknowledged, so the leader learns nothing false.

use std::sync::Mutex;

use dmq_proto::v1 as pb;
use dmq_raft::{Index, NodeId, Role, Term};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Following {
    term: Term,
    leader: NodeId,
    /// The highest index this node acknowledged (durably) to `leader` in `term`.
    acked: Index,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct FollowerView(Mutex<Option<Following>>);

impl FollowerView {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Following>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The Raft thread's role now (called after every iteration).
    pub(crate) fn set(&self, term: Term, role: Role, leader: Option<NodeId>) {
        let mut view = self.lock();
        *view = match (role, leader) {
            (Role::Follower, Some(leader)) => match *view {
                Some(f) if f.term == term && f.leader == leader => Some(f),
                _ => Some(Following {
                    term,
                    leader,
                    acked: 0,
                }),
            },
            _ => None,
        };
    }

    /// This node acknowledged `index` to `leader` in `term` (sent once durable).
    pub(crate) fn acked(&self, term: Term, leader: NodeId, index: Index) {
        if let Some(f) = self.lock().as_mut()
            && f.term == term
            && f.leader == leader
        {
            f.acked = f.acked.max(index);
        }
    }

    /// The answer to `request` (a heartbeat to node `me`) this view allows, if any.
    pub(crate) fn heartbeat_answer(
        &self,
        me: NodeId,
        request: &pb::AppendEntriesRequest,
    ) -> Option<pb::AppendEntriesResponse> {
        let f = (*self.lock())?;
        let allowed = request.entries.is_empty()
            && request.term == f.term
            && request.leader_id == f.leader
            && request.prev_log_index <= f.acked;
        allowed.then(|| pb::AppendEntriesResponse {
            term: f.term,
            from: me,
            success: true,
            match_index: request.prev_log_index,
            liveness_only: true,
            ..pb::AppendEntriesResponse::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(term: Term, leader: NodeId, prev: Index) -> pb::AppendEntriesRequest {
        pb::AppendEntriesRequest {
            term,
            leader_id: leader,
            prev_log_index: prev,
            prev_log_term: term,
            read_round: 7,
            to: 1,
            ..Default::default()
        }
    }

    #[test]
    fn answers_only_the_followed_leader_in_its_term_up_to_what_was_acknowledged() {
        let v = FollowerView::default();
        assert_eq!(
            v.heartbeat_answer(1, &heartbeat(3, 2, 0)),
            None,
            "no leader yet"
        );
        v.set(3, Role::Follower, Some(2));
        let a = v.heartbeat_answer(1, &heartbeat(3, 2, 0)).unwrap();
        assert!(a.success && a.liveness_only && a.read_round == 0 && a.match_index == 0);
        assert_eq!(
            v.heartbeat_answer(1, &heartbeat(3, 2, 5)),
            None,
            "nothing acked"
        );
        v.acked(3, 2, 9);
        assert_eq!(
            v.heartbeat_answer(1, &heartbeat(3, 2, 5))
                .unwrap()
                .match_index,
            5
        );
        assert_eq!(v.heartbeat_answer(1, &heartbeat(3, 2, 10)), None);
        assert_eq!(
            v.heartbeat_answer(1, &heartbeat(4, 2, 5)),
            None,
            "another term"
        );
        assert_eq!(
            v.heartbeat_answer(1, &heartbeat(3, 3, 5)),
            None,
            "another leader"
        );
        let mut append = heartbeat(3, 2, 5);
        append.entries.push(pb::LogEntry::default());
        assert_eq!(
            v.heartbeat_answer(1, &append),
            None,
            "entries need the Raft thread"
        );
        // Same term and leader: what was acknowledged stays.
        v.set(3, Role::Follower, Some(2));
        assert!(v.heartbeat_answer(1, &heartbeat(3, 2, 9)).is_some());
        // A new term forgets it; a candidate answers nothing.
        v.set(4, Role::Follower, Some(2));
        assert_eq!(v.heartbeat_answer(1, &heartbeat(4, 2, 9)), None);
        v.acked(3, 2, 20);
        assert_eq!(v.heartbeat_answer(1, &heartbeat(4, 2, 1)), None);
        v.set(5, Role::Candidate, None);
        assert_eq!(v.heartbeat_answer(1, &heartbeat(5, 2, 0)), None);
    }
}
