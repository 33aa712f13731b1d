//! Membership changes one voter at a time (thesis §4.1), learners (§4.2.1) and the removal of
//! the leader itself (§4.2.2).

use super::Raft;
use crate::config::PlantedBug;
use crate::error::ProposeError;
use crate::membership::Membership;
use crate::progress::Progress;
use crate::types::*;

impl Raft {
    /// Proposes `to` as the next configuration (on the leader). It takes effect here and on
    /// each follower as soon as it is appended; it is committed once an applied entry has the
    /// returned index and term. Refused, with nothing appended, when
    /// - this node does not lead ([`ProposeError::NotLeader`]), or hands leadership over;
    /// - it has not committed an entry of its term yet ([`ProposeError::NoCommitInTerm`]: a
    ///   leader must not change the configuration before it knows the latest committed one,
    ///   the single-server change bug found after the thesis);
    /// - the previous change is not committed ([`ProposeError::MembershipChangePending`]);
    /// - `to` is not one valid step from the current configuration
    ///   ([`ProposeError::InvalidMembership`], not retryable).
    ///
    /// Learners get the log at once. To remove this node (the leader), propose a
    /// configuration without it: it goes on leading without counting itself until the change
    /// commits, then hands leadership to the most up-to-date voter and steps down.
    pub fn propose_membership(&mut self, to: Membership) -> Result<(Index, Term), ProposeError> {
        self.assert_not_in_ready();
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if self.transferee.is_some() {
            return Err(ProposeError::LeadershipTransferInProgress);
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            return Err(ProposeError::NoCommitInTerm);
        }
        if let Some(index) = self.log.memberships.latest_index()
            && index > self.log.committed
            && !self.bug(PlantedBug::TwoMembershipChangesInFlight)
        {
            return Err(ProposeError::MembershipChangePending { index });
        }
        to.check_change_from(self.membership())
            .map_err(ProposeError::InvalidMembership)?;
        let entry = Entry {
            index: self.log.last_index() + 1,
            term: self.term,
            kind: EntryKind::Membership,
            data: to.encode(),
        };
        let at = (entry.index, entry.term);
        self.log.append(entry);
        self.sync_progress();
        self.append_pending = true;
        Ok(at)
    }

    /// A leader tracks the members of its configuration other than itself: new ones start
    /// probing from the end of the log. Nodes a change removes keep getting the log until the
    /// change commits, so that they see their removal and stop campaigning; they count for
    /// nothing meanwhile (every count uses the latest configuration). Then they are forgotten
    /// (`forget_removed`).
    pub(super) fn sync_progress(&mut self) {
        let membership = self.log.memberships.latest().clone();
        let pending = self
            .log
            .memberships
            .latest_index()
            .is_some_and(|i| i > self.log.committed);
        let previous = self.log.memberships.at(self.log.committed).clone();
        let id = self.cfg.id;
        self.progress
            .retain(|n, _| membership.contains(*n) || (pending && previous.contains(*n)));
        let last = self.log.last_index();
        for n in membership.members().filter(|&n| n != id) {
            self.progress.entry(n).or_insert_with(|| {
                let mut p = Progress::new(last);
                // One check-quorum period to be heard from, as for every follower of a new
                // leader.
                p.recent_active = true;
                p
            });
        }
    }

    /// On a leader, once the change that removed them committed: forgets the removed nodes.
    pub(super) fn forget_removed(&mut self) {
        let pending = self
            .log
            .memberships
            .latest_index()
            .is_some_and(|i| i > self.log.committed);
        let membership = self.log.memberships.latest();
        if !pending && self.progress.keys().any(|n| !membership.contains(*n)) {
            self.sync_progress();
        }
    }

    /// On a leader that its committed configuration removed (or made a learner): hand
    /// leadership to the most up-to-date voter, then step down. Until that voter holds the
    /// whole log it is sent appends (proposals wait, as in any transfer); if the transfer
    /// times out it is tried again. With no voter to hand to, it steps down at once.
    pub(super) fn hand_off_if_removed(&mut self) {
        if self.role != Role::Leader || self.is_voter() {
            return;
        }
        if self
            .log
            .memberships
            .latest_index()
            .is_some_and(|i| i > self.log.committed)
        {
            return;
        }
        let last = self.log.last_index();
        let term = self.term;
        if let Some(t) = self.transferee {
            if self.progress.get(&t).is_some_and(|p| p.match_index == last) {
                // TimeoutNow went out when it caught up (see `handle_append_response`).
                self.become_follower(term, None);
            }
            return;
        }
        let best = self
            .transfer_candidates()
            .into_iter()
            .max_by_key(|&(id, m)| (m, std::cmp::Reverse(id)));
        match best {
            None => self.become_follower(term, None),
            Some((to, m)) if m == last => {
                self.send(to, MessageBody::TimeoutNow);
                self.become_follower(term, None);
            }
            Some((to, _)) => {
                self.transferee = Some(to);
                self.transfer_elapsed_ticks = 0;
                self.send_append(to);
            }
        }
    }
}
