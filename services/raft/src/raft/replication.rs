//! Log replication (§5.3), commitment (§5.4.2), snapshots (§7) and ReadIndex (thesis §6.4).

use super::Raft;
use crate::config::PlantedBug;
use crate::membership::Membership;
use crate::progress::ProgressState;
use crate::types::*;

impl Raft {
    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.cfg.id,
            to,
            term: self.term,
            body,
        });
    }

    pub(super) fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_append(to);
        }
    }

    /// Sends what the window allows to `to`. Returns whether anything was sent.
    pub(super) fn send_append(&mut self, to: NodeId) -> bool {
        let last = self.log.last_index();
        let Some(p) = self.progress.get(&to) else {
            return false;
        };
        if p.is_paused(self.cfg.max_inflight_appends) {
            return false;
        }
        let next = p.next_index;
        let replicate = p.state == ProgressState::Replicate;
        let prev = next - 1;
        let Some(prev_term) = self.log.term(prev) else {
            // The entries it needs are compacted: send the snapshot instead (§7), unless the
            // last transfer failed a moment ago.
            if p.snapshot_retry_ticks > 0 {
                return false;
            }
            // Its data is shared, not copied.
            let snapshot = self.log.snapshot.clone();
            let pending = snapshot.meta.last_index;
            self.progress
                .get_mut(&to)
                .expect("checked")
                .become_snapshot(pending);
            self.send(to, MessageBody::InstallSnapshot { snapshot });
            return true;
        };
        if replicate && next > last {
            return false;
        }
        let entries = if next <= last {
            self.log.entries_from(next, self.cfg.max_append_bytes)
        } else {
            Vec::new()
        };
        let sent_last = entries.last().map_or(prev, |e| e.index);
        self.progress
            .get_mut(&to)
            .expect("checked")
            .sent_append(sent_last);
        let p = self.progress.get_mut(&to).expect("checked");
        p.commit_sent = p.commit_sent.max(self.log.committed.min(sent_last));
        let body = MessageBody::AppendEntries {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.log.committed,
            read_round: self.read_round,
        };
        self.send(to, body);
        true
    }

    /// Tells every follower a new commit index without waiting for the next heartbeat: an
    /// append where there is something to send, else an empty one anchored at its match index.
    pub(super) fn broadcast_commit(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_commit(to);
        }
    }

    /// Makes sure `to` can learn our commit index: an append if there is one to send, else an
    /// empty one if it has not been told the commit its matched log allows. An empty one is
    /// anchored at its match index; where that entry is compacted it can carry no commit (the
    /// follower needs the snapshot first), and none is sent: it would be answered, and the
    /// answer would draw another, without end.
    pub(super) fn send_commit(&mut self, to: NodeId) {
        if self.send_append(to) {
            return;
        }
        let Some(p) = self.progress.get(&to) else {
            return;
        };
        let anchor = self.heartbeat_anchor(p.match_index).0;
        if self.log.committed.min(anchor) > p.commit_sent {
            self.send_heartbeat(to);
        }
    }

    /// Where a heartbeat to a follower that matches up to `match_index` is anchored: there,
    /// or at index 0 (term 0, which matches every log) if that entry is compacted.
    pub(super) fn heartbeat_anchor(&self, match_index: Index) -> (Index, Term) {
        match self.log.term(match_index) {
            Some(t) => (match_index, t),
            None => (0, 0),
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_heartbeat(to);
        }
    }

    pub(super) fn send_heartbeat(&mut self, to: NodeId) {
        let Some(match_index) = self.progress.get(&to).map(|p| p.match_index) else {
            return;
        };
        // Anchor the heartbeat at the follower's match index so it carries a safe commit.
        let (prev, prev_term) = self.heartbeat_anchor(match_index);
        let leader_commit = self.log.committed.min(prev);
        if let Some(p) = self.progress.get_mut(&to) {
            p.commit_sent = p.commit_sent.max(leader_commit);
        }
        let body = MessageBody::AppendEntries {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries: Vec::new(),
            leader_commit,
            read_round: self.read_round,
        };
        self.send(to, body);
    }

    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        read_round: u64,
    ) {
        if self.catching_up {
            self.catch_up_target = self.catch_up_target.max(leader_commit);
        }
        let committed = self.log.committed;
        if prev < committed {
            // Everything up to our commit matches the leader (Leader Completeness).
            self.send(
                from,
                MessageBody::AppendEntriesResponse {
                    success: true,
                    match_index: committed,
                    rejected_index: 0,
                    conflict: None,
                    read_round,
                    catching_up: self.catching_up,
                },
            );
            return;
        }
        if entries
            .iter()
            .any(|e| e.kind == EntryKind::Membership && Membership::decode(&e.data).is_err())
        {
            // A configuration this node cannot read: take nothing of the append rather than a
            // log whose configuration it cannot know. The leader keeps probing; an operator
            // sees the node lag.
            self.send(
                from,
                MessageBody::AppendEntriesResponse {
                    success: false,
                    match_index: 0,
                    rejected_index: prev,
                    conflict: None,
                    read_round,
                    catching_up: self.catching_up,
                },
            );
            return;
        }
        match self.log.term(prev) {
            Some(t) if t == prev_term => {
                let last_new = prev + entries.len() as u64;
                for e in entries {
                    match self.log.term(e.index) {
                        Some(t) if t == e.term => {}
                        Some(_) => {
                            self.log.truncate_from(e.index);
                            self.log.append(e);
                        }
                        None => self.log.append(e),
                    }
                }
                self.log.commit_to(leader_commit.min(last_new));
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        success: true,
                        match_index: last_new,
                        rejected_index: 0,
                        conflict: None,
                        read_round,
                        catching_up: self.catching_up,
                    },
                );
            }
            found => {
                let conflict = match found {
                    None => ConflictHint {
                        term: 0,
                        first_index: self.log.last_index() + 1,
                    },
                    Some(t) => ConflictHint {
                        term: t,
                        first_index: self.log.first_index_of_term_at(prev),
                    },
                };
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        success: false,
                        match_index: 0,
                        rejected_index: prev,
                        conflict: Some(conflict),
                        read_round,
                        catching_up: self.catching_up,
                    },
                );
            }
        }
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: Index,
        rejected: Index,
        conflict: Option<ConflictHint>,
        read_round: u64,
    ) {
        let last = self.log.last_index();
        let max_inflight = self.cfg.max_inflight_appends;
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        if !p.catching_up {
            // A node catching up counts for nothing: not as live, not as confirming a read.
            p.recent_active = true;
            p.acked_read_round = p.acked_read_round.max(read_round);
        }
        if success {
            let updated = p.maybe_update(match_index.min(last));
            match p.state {
                ProgressState::Probe => {
                    if updated {
                        p.become_replicate();
                    } else {
                        p.probe_sent = false;
                    }
                }
                ProgressState::Snapshot { pending } if p.match_index >= pending => {
                    p.become_replicate()
                }
                ProgressState::Replicate if !updated && p.inflight.len() >= max_inflight => {
                    // A full window with no progress: an append was lost; free a slot so the
                    // next one exposes the gap (it will be rejected and we probe).
                    p.inflight.pop_front();
                }
                _ => {}
            }
            if updated {
                if self.maybe_commit() {
                    self.broadcast_commit();
                }
                if self.transferee == Some(from)
                    && self.progress[&from].match_index == self.log.last_index()
                {
                    self.send(from, MessageBody::TimeoutNow);
                }
            }
            while self.send_append(from) {
                if self.progress[&from].state != ProgressState::Replicate {
                    break;
                }
            }
            // It may now hold entries it has not been told are committed.
            self.send_commit(from);
        } else if let Some(hint) = conflict {
            let next = if hint.term != 0 {
                match self.log.last_index_of_term(hint.term, rejected) {
                    Some(i) if i < rejected => i + 1,
                    _ => hint.first_index,
                }
            } else {
                hint.first_index
            };
            if self
                .progress
                .get_mut(&from)
                .expect("checked")
                .maybe_decrease_to(rejected, next)
            {
                self.send_append(from);
            }
        }
        self.check_pending_reads();
    }

    pub(super) fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let index = snapshot.meta.last_index;
        let match_index = if index <= self.log.committed {
            self.log.committed
        } else if self.log.term(index) == Some(snapshot.meta.last_term) {
            // We already hold it: no need to throw the log away.
            self.log.commit_to(index);
            index
        } else {
            self.log.restore(snapshot.clone());
            self.pending_snapshot = Some(snapshot);
            index
        };
        self.send(
            from,
            MessageBody::InstallSnapshotResponse {
                match_index,
                catching_up: self.catching_up,
            },
        );
    }

    pub(super) fn handle_snapshot_response(&mut self, from: NodeId, match_index: Index) {
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.recent_active |= !p.catching_up;
        let updated = p.maybe_update(match_index);
        if let ProgressState::Snapshot { pending } = p.state {
            if p.match_index >= pending {
                p.become_replicate();
            } else {
                p.become_probe();
            }
        }
        if updated && self.maybe_commit() {
            self.broadcast_commit();
        }
        self.send_commit(from);
    }

    /// §5.3, §5.4.2: commits the highest index durable on a majority, if its entry is of the
    /// current term. Returns whether the commit index moved.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        // Followers catching up hold what they acknowledged, but they forgot their votes and
        // may have taken entries from a stale leader: they count as holding nothing.
        // Learners count for nothing either (thesis §4.2.1), nor does a leader that is being
        // removed (§4.2.2: it manages the cluster until the change commits, but is not part
        // of its majorities).
        let membership = self.log.memberships.latest();
        let learners_count = self.bug(PlantedBug::LearnerCountsTowardCommit);
        let mut matches: Vec<Index> = self
            .progress
            .iter()
            .filter(|(id, _)| membership.is_voter(**id) || learners_count)
            .map(|(_, p)| if p.catching_up { 0 } else { p.match_index })
            .collect();
        if membership.is_voter(self.cfg.id) {
            matches.push(self.log.stable_index);
        }
        let quorum = membership.quorum();
        if matches.len() < quorum {
            return false;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_index = matches[quorum - 1];
        if quorum_index <= self.log.committed {
            return false;
        }
        let current_term = self.log.term(quorum_index) == Some(self.term);
        if !current_term && !self.bug(PlantedBug::CommitPreviousTerm) {
            return false;
        }
        let old = self.log.committed;
        self.log.commit_to(quorum_index);
        let freed: usize = (old + 1..=quorum_index)
            .filter_map(|i| self.log.entry(i))
            .filter(|e| e.term == self.term && e.kind == EntryKind::Normal)
            .map(Entry::size_bytes)
            .sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(freed);
        if current_term {
            let waiting = std::mem::take(&mut self.reads_awaiting_commit);
            self.register_reads(&waiting);
        }
        true
    }

    pub(super) fn check_pending_reads(&mut self) {
        let membership = self.log.memberships.latest();
        let quorum = membership.quorum();
        while let Some(r) = self.pending_reads.front() {
            let acks = usize::from(membership.is_voter(self.cfg.id))
                + self
                    .progress
                    .iter()
                    .filter(|(id, p)| p.acked_read_round >= r.round && membership.is_voter(**id))
                    .count();
            if acks < quorum {
                break;
            }
            let r = self.pending_reads.pop_front().expect("checked");
            self.read_states.push(ReadState {
                ctx: r.ctx,
                index: r.index,
            });
        }
    }
}
