//! Elections (§5.2, §5.4.1), with the thesis' pre-vote (§9.6) and the live-leader check (§4.2.3).

use rand::Rng;

use super::Raft;
use crate::config::PlantedBug;
use crate::progress::Progress;
use crate::types::*;

impl Raft {
    pub(super) fn observe_higher_term(&mut self, term: Term, leader: Option<NodeId>) {
        if self.bug(PlantedBug::NoStepDownOnHigherTerm) && self.role == Role::Leader {
            self.term = term;
            self.vote = None;
            return;
        }
        self.become_follower(term, leader);
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.randomized_election_timeout_ticks = self
            .rng
            .random_range(self.cfg.election_timeout_min_ticks..self.cfg.election_timeout_max_ticks);
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term, "term would go backwards");
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        let was_leader_or_candidate = self.role != Role::Follower;
        self.role = Role::Follower;
        if was_leader_or_candidate || self.leader_id != leader {
            self.leader_id = leader;
            self.reset_election_timer();
        }
        self.progress.clear();
        self.votes.clear();
        self.pending_reads.clear();
        self.reads_awaiting_commit.clear();
        self.transferee = None;
        self.uncommitted_bytes = 0;
    }

    pub(super) fn campaign(&mut self, pre_vote: bool, leadership_transfer: bool) {
        self.leader_id = None;
        self.votes.clear();
        self.progress.clear();
        self.reset_election_timer();
        let campaign_term = if pre_vote {
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            self.role = Role::Candidate;
            self.term += 1;
            self.vote = Some(self.cfg.id);
            self.term
        };
        self.votes.insert(self.cfg.id, true);
        if self.membership().voters.iter().eq([&self.cfg.id]) {
            self.win_election(pre_vote, leadership_transfer);
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        // Learners get no vote request: they never vote (thesis §4.2.1).
        let voters: Vec<NodeId> = self.membership().voters.iter().copied().collect();
        for to in voters {
            if to != self.cfg.id {
                self.msgs.push(Message {
                    from: self.cfg.id,
                    to,
                    term: campaign_term,
                    body: MessageBody::RequestVote {
                        pre_vote,
                        last_log_index,
                        last_log_term,
                        leadership_transfer,
                    },
                });
            }
        }
    }

    pub(super) fn win_election(&mut self, pre_vote: bool, leadership_transfer: bool) {
        if pre_vote {
            self.campaign(false, leadership_transfer);
        } else {
            self.become_leader();
        }
    }

    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last_index: Index,
        last_term: Term,
    ) {
        // A node catching up forgot the votes it gave: it gives none until caught up.
        let can_vote = !self.catching_up
            && (self.vote == Some(from)
                || (self.vote.is_none() && self.leader_id.is_none())
                || (pre_vote && term > self.term));
        let up_to_date =
            self.bug(PlantedBug::VoteForStaleLog) || self.log.is_up_to_date(last_index, last_term);
        if can_vote && up_to_date {
            if !pre_vote {
                assert_eq!(term, self.term);
                self.vote = Some(from);
                self.election_elapsed_ticks = 0;
            }
            self.msgs.push(Message {
                from: self.cfg.id,
                to: from,
                term,
                body: MessageBody::RequestVoteResponse {
                    pre_vote,
                    granted: true,
                },
            });
        } else {
            self.send(
                from,
                MessageBody::RequestVoteResponse {
                    pre_vote,
                    granted: false,
                },
            );
        }
    }

    pub(super) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        granted: bool,
    ) {
        let expected = match self.role {
            // A granted pre-vote echoes the term we would campaign at; a refusal carries the
            // voter's own term, which is ours (a higher one made us a follower already).
            Role::PreCandidate => {
                pre_vote && (term == self.term + 1 || (!granted && term == self.term))
            }
            Role::Candidate => !pre_vote && term == self.term,
            _ => false,
        };
        if !expected {
            return;
        }
        if !self.membership().is_voter(from) {
            // Not a voter of our configuration (a learner, or a node our configuration
            // removed): its vote does not count.
            return;
        }
        self.votes.entry(from).or_insert(granted);
        // Our own vote counts only if we are a voter of our configuration (a node that an
        // uncommitted change removes may campaign, see `may_campaign`, without counting).
        let membership = self.log.memberships.latest();
        let counted = self
            .votes
            .iter()
            .filter(|(id, _)| membership.is_voter(**id));
        let (yes, no) = counted.fold(
            (0, 0),
            |(y, n), (_, &g)| if g { (y + 1, n) } else { (y, n + 1) },
        );
        let quorum = self.quorum();
        if yes >= quorum {
            self.win_election(pre_vote, false);
        } else if no >= quorum {
            let t = self.term;
            self.become_follower(t, None);
        }
    }

    pub(super) fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.leader_id = Some(self.cfg.id);
        self.votes.clear();
        self.reset_election_timer();
        let next = self.log.last_index() + 1;
        self.progress = self
            .membership()
            .members()
            .filter(|&v| v != self.cfg.id)
            .map(|v| {
                let mut p = Progress::new(next);
                p.recent_active = true;
                (v, p)
            })
            .collect();
        self.uncommitted_bytes = 0;
        // §5.4.2 / §8: a no-op of the new term lets earlier entries commit.
        let noop = Entry {
            index: next,
            term: self.term,
            kind: EntryKind::Noop,
            data: Vec::new(),
        };
        self.log.append(noop);
        self.broadcast_append();
    }
}
