//! Membership changes (thesis chapter 4): learners (§4.2.1), one voter at a time (§4.1),
//! removing the leader (§4.2.2), and a configuration that a restart recovers from the log and
//! the snapshot, never from the bootstrap list.

mod common;

use common::*;
use dmq_raft::{Membership, MembershipError, MessageBody, ProposeError, RecoveredState, Role};

fn m(voters: &[u64], learners: &[u64]) -> Membership {
    Membership {
        voters: voters.iter().copied().collect(),
        learners: learners.iter().copied().collect(),
        ..Membership::default()
    }
}

/// Three voters and `joiners` empty nodes that know no configuration (as `--join` starts them).
fn cluster_with_joiners(joiners: &[u64]) -> Cluster {
    let voters = ids(3);
    let mut specs: Vec<_> = voters
        .iter()
        .map(|&id| (config(id, &voters), RecoveredState::default()))
        .collect();
    for &id in joiners {
        specs.push((config(id, &[]), RecoveredState::default()));
    }
    Cluster::build(voters, specs)
}

/// Ticks and delivers until a leader other than those in `not` is elected; returns it.
fn await_leader_other_than(c: &mut Cluster, not: &[u64]) -> u64 {
    for _ in 0..200 {
        c.tick_all();
        c.deliver_all();
        if let Some(l) = c.leader().filter(|l| !not.contains(l)) {
            return l;
        }
    }
    panic!("no leader outside {not:?} elected");
}

/// Proposes `to` on `leader`, then delivers and heartbeats until every node applied it.
fn change(c: &mut Cluster, leader: u64, to: Membership) {
    let (index, _) = c.node_mut(leader).raft.propose_membership(to).unwrap();
    c.drain(leader);
    c.deliver_all();
    c.heartbeat(leader);
    assert!(c.raft(leader).commit_index() >= index);
}

/// §4.2.1: a learner gets the whole log but is never asked for a vote and never counts toward
/// a commit: with both other voters cut off, the leader and the learner cannot commit.
#[test]
fn thesis_4_2_1_a_learner_replicates_but_never_votes_or_counts() {
    let mut c = cluster_with_joiners(&[4]);
    c.elect(1);
    c.propose(1, b"a").unwrap();
    c.deliver_all();
    assert!(!c.raft(4).is_voter());
    change(&mut c, 1, m(&[1, 2, 3], &[4]));
    c.propose(1, b"b").unwrap();
    c.deliver_all();
    c.heartbeat(1);
    assert_eq!(c.applied_data(4), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(c.raft(4).membership(), &m(&[1, 2, 3], &[4]));

    // No vote request to the learner.
    c.isolate(1);
    let mark = c.sent.len();
    c.node_mut(2).raft.campaign_now();
    c.drain(2);
    let to_learner = c.sent_since(mark, |m| {
        m.to == 4 && matches!(m.body, MessageBody::RequestVote { .. })
    });
    assert!(to_learner.is_empty(), "a learner was asked to vote");
    c.heal();
    c.deliver_all();

    // The leader plus the learner are not a majority.
    let leader = c.leader().unwrap();
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&n| n != leader).collect();
    for &o in &others {
        c.isolate(o);
    }
    let commit = c.raft(leader).commit_index();
    c.propose(leader, b"c").unwrap();
    c.deliver_all();
    c.heartbeat(leader);
    assert!(c.raft(4).last_index() > commit, "the learner got the entry");
    assert_eq!(
        c.raft(leader).commit_index(),
        commit,
        "a learner's acknowledgment counted toward a commit"
    );
    // A learner never campaigns, however long it hears nothing.
    c.isolate(leader);
    for _ in 0..50 {
        c.tick(4);
    }
    assert_eq!(c.raft(4).role(), Role::Follower);
}

/// §4.1: voters change one at a time, and the next change waits for the previous to commit.
#[test]
fn thesis_4_1_one_voter_at_a_time_and_one_change_in_flight() {
    let mut c = cluster_with_joiners(&[4, 5]);
    c.elect(1);
    // A leader that has not committed an entry of its term refuses (the single-server
    // change bug): here its no-op waits for answers that are held back.
    let mut c2 = cluster_with_joiners(&[]);
    c2.filter = Some(Box::new(|m| {
        if matches!(m.body, MessageBody::AppendEntriesResponse { .. }) {
            Verdict::Hold
        } else {
            Verdict::Deliver
        }
    }));
    c2.elect(1);
    assert_eq!(c2.raft(1).commit_index(), 0);
    assert_eq!(
        c2.node_mut(1).raft.propose_membership(m(&[1, 2], &[])),
        Err(ProposeError::NoCommitInTerm)
    );
    c2.filter = None;
    c2.release_held();
    c2.deliver_all();
    c2.node_mut(1)
        .raft
        .propose_membership(m(&[1, 2], &[]))
        .unwrap();

    assert!(matches!(
        c.node_mut(1)
            .raft
            .propose_membership(m(&[1, 2, 3, 4, 5], &[])),
        Err(ProposeError::InvalidMembership(
            MembershipError::MoreThanOneVoterChanged { .. }
        ))
    ));
    assert!(matches!(
        c.node_mut(1).raft.propose_membership(m(&[1, 2, 4], &[])),
        Err(ProposeError::InvalidMembership(_))
    ));
    c.isolate(2);
    c.isolate(3);
    let (index, _) = c
        .node_mut(1)
        .raft
        .propose_membership(m(&[1, 2, 3], &[4]))
        .unwrap();
    c.drain(1);
    // In effect on the leader at once, before it commits.
    assert_eq!(c.raft(1).membership(), &m(&[1, 2, 3], &[4]));
    assert_eq!(
        c.node_mut(1)
            .raft
            .propose_membership(m(&[1, 2, 3], &[4, 5])),
        Err(ProposeError::MembershipChangePending { index })
    );
    assert!(ProposeError::MembershipChangePending { index }.is_retryable());
    c.heal();
    c.deliver_all();
    c.heartbeat(1);
    change(&mut c, 1, m(&[1, 2, 3], &[4, 5]));
    change(&mut c, 1, m(&[1, 2, 3, 4], &[5]));
    change(&mut c, 1, m(&[1, 2, 3, 4, 5], &[]));
    assert_eq!(c.raft(1).quorum(), 3);
    for id in 1..=5 {
        assert_eq!(c.raft(id).membership(), &m(&[1, 2, 3, 4, 5], &[]));
        assert!(c.raft(id).is_voter());
    }
    // Five voters: two may be lost.
    c.isolate(1);
    c.isolate(2);
    let l = await_leader_other_than(&mut c, &[1, 2]);
    c.propose(l, b"x").unwrap();
    c.deliver_all();
    c.heartbeat(l);
    assert_eq!(c.applied_data(5).last().unwrap(), b"x");
}

/// §4.2.2: a leader that removes itself goes on leading, without counting itself, until the
/// change commits; then it hands leadership to an up-to-date voter (no election timeout) and
/// steps down, and never campaigns again.
#[test]
fn thesis_4_2_2_a_removed_leader_hands_off_and_steps_down() {
    let mut c = cluster_with_joiners(&[]);
    c.elect(1);
    c.propose(1, b"a").unwrap();
    c.deliver_all();
    c.heartbeat(1);
    let term = c.raft(1).term();
    let mark = c.sent.len();
    c.node_mut(1)
        .raft
        .propose_membership(m(&[2, 3], &[]))
        .unwrap();
    c.drain(1);
    assert_eq!(
        c.raft(1).role(),
        Role::Leader,
        "leads until the change commits"
    );
    let mut rounds = 0;
    while c.leader().is_none_or(|l| l == 1) {
        rounds += 1;
        assert!(rounds <= 6, "no new leader after {rounds} rounds");
        c.round();
    }
    let now = c.sent_since(mark, |m| m.from == 1 && m.body == MessageBody::TimeoutNow);
    assert_eq!(
        now.len(),
        1,
        "the removed leader handed over with TimeoutNow"
    );
    let new = c.leader().unwrap();
    assert_ne!(new, 1);
    assert_eq!(c.raft(new).term(), term + 1);
    assert_ne!(c.raft(1).role(), Role::Leader);
    assert!(!c.raft(1).is_voter());
    c.propose(new, b"b").unwrap();
    c.deliver_all();
    c.heartbeat(new);
    assert_eq!(c.raft(new).quorum(), 2);
    // Node 1 hears nothing more (the leader forgot it) and never campaigns.
    for _ in 0..50 {
        c.tick(1);
    }
    c.deliver_all();
    assert_eq!(c.leader(), Some(new));
    assert_eq!(
        c.raft(new).term(),
        term + 1,
        "the removed node disrupted the cluster"
    );
}

/// A restarted node takes its configuration from its log, or from its snapshot once the log
/// is compacted, never from the bootstrap list it was started with.
#[test]
fn the_configuration_survives_restarts_from_log_and_snapshot() {
    let mut c = cluster_with_joiners(&[4]);
    c.elect(1);
    change(&mut c, 1, m(&[1, 2, 3], &[4]));
    change(&mut c, 1, m(&[1, 2, 3, 4], &[]));
    c.restart(2);
    assert_eq!(c.raft(2).membership(), &m(&[1, 2, 3, 4], &[]));
    c.restart(4);
    assert!(c.raft(4).is_voter(), "the joiner forgot it was promoted");
    c.propose(1, b"a").unwrap();
    c.deliver_all();
    c.heartbeat(1);
    let applied = c.raft(3).applied_index();
    c.compact(3, applied, b"snap");
    assert_eq!(c.raft(3).snapshot_meta().membership, m(&[1, 2, 3, 4], &[]));
    c.restart(3);
    assert_eq!(c.raft(3).membership(), &m(&[1, 2, 3, 4], &[]));
    assert_eq!(c.raft(3).membership_index(), None, "now the snapshot's");
    // A node that installs that snapshot learns the configuration from it.
    c.compact(1, applied, b"snap");
    c.wipe(4);
    c.propose(1, b"b").unwrap();
    c.deliver_all();
    c.heartbeat(1);
    c.heartbeat(1);
    assert_eq!(c.raft(4).membership(), &m(&[1, 2, 3, 4], &[]));
}

/// A configuration appended but truncated by a new leader is undone with it (§4.1: the latest
/// configuration in the log, committed or not).
#[test]
fn thesis_4_1_a_truncated_change_is_undone() {
    let mut c = cluster_with_joiners(&[4]);
    c.elect(1);
    c.propose(1, b"a").unwrap();
    c.deliver_all();
    c.heartbeat(1);
    c.isolate(1);
    c.node_mut(1)
        .raft
        .propose_membership(m(&[1, 2, 3], &[4]))
        .unwrap();
    c.drain(1);
    assert_eq!(c.raft(1).membership(), &m(&[1, 2, 3], &[4]));
    let l = await_leader_other_than(&mut c, &[1]);
    c.propose(l, b"b").unwrap();
    c.deliver_all();
    c.heal();
    c.heartbeat(l);
    c.heartbeat(l);
    assert_eq!(c.raft(1).leader_id(), Some(l));
    assert_eq!(c.raft(1).membership(), &m(&[1, 2, 3], &[]));
    assert_eq!(c.raft(1).membership_index(), None);
}

/// Found by the simulator: a learner promoted while it was cut off does not know it votes,
/// but the others count on its vote. Once it has heard from no leader for an election timeout
/// it must answer votes; it used to restart its timer and stay "in the leader's lease"
/// forever (always, with a timeout range of one tick), so no leader could be elected.
#[test]
fn a_learner_that_does_not_know_it_was_promoted_still_answers_votes() {
    let voters = ids(3);
    let mut specs: Vec<_> = voters
        .iter()
        .map(|&id| (config(id, &voters), RecoveredState::default()))
        .collect();
    let mut learner = config(4, &[]);
    learner.election_timeout_max_ticks = learner.election_timeout_min_ticks + 1;
    specs.push((learner, RecoveredState::default()));
    let mut c = Cluster::build(voters, specs);
    c.elect(1);
    change(&mut c, 1, m(&[1, 2, 3], &[4]));
    c.isolate(4);
    change(&mut c, 1, m(&[1, 2, 3, 4], &[]));
    c.heal();
    assert!(!c.raft(4).is_voter(), "node 4 missed its promotion");
    // The leader is lost: 2 and 3 need node 4's vote (3 of 4 voters).
    c.isolate(1);
    let l = await_leader_other_than(&mut c, &[1]);
    assert!([2, 3].contains(&l));
}

/// A follower that a change removes still gets the log until the change commits, so it sees
/// its removal: it then never campaigns, however long it hears nothing (it does not wait, with
/// pre-votes refused, for an operator to stop it). It counts for nothing meanwhile.
#[test]
fn thesis_4_2_2_a_removed_follower_learns_it_was_removed() {
    let mut c = cluster_with_joiners(&[]);
    c.elect(1);
    change(&mut c, 1, m(&[1, 2], &[]));
    assert_eq!(c.raft(3).membership(), &m(&[1, 2], &[]));
    assert!(!c.raft(3).is_voter());
    c.heartbeat(1);
    let term = c.raft(3).term();
    for _ in 0..50 {
        c.tick(3);
    }
    c.deliver_all();
    assert_eq!(c.raft(3).term(), term, "the removed node campaigned");
    assert_eq!(c.raft(3).role(), Role::Follower);
    assert!(
        !c.raft(1).match_indexes().contains_key(&3),
        "the leader still tracks a removed node after the change committed"
    );
}

/// Found by the simulator: a node that an uncommitted change removes may still campaign (it
/// leads, if elected by the latest configuration's voters, only until the change commits, as a
/// leader that removes itself does). Forbidding it left no electable node when it held the
/// longest log and the others, without its configuration, needed its vote. Once the change
/// commits it never campaigns again; a learner never does.
#[test]
fn thesis_4_2_2_a_node_removed_by_an_uncommitted_change_may_still_campaign() {
    let mut c = cluster_with_joiners(&[4]);
    c.elect(1);
    change(&mut c, 1, m(&[1, 2, 3], &[4]));
    assert!(!c.raft(4).may_campaign(), "a learner campaigns");
    // Only node 3 gets the change that removes it: it is not committed.
    c.isolate(2);
    c.node_mut(1)
        .raft
        .propose_membership(m(&[1, 2], &[4]))
        .unwrap();
    c.drain(1);
    c.deliver_all();
    assert_eq!(c.raft(3).membership(), &m(&[1, 2], &[4]));
    assert!(!c.raft(3).is_voter());
    assert!(c.raft(3).may_campaign(), "removed by an uncommitted change");
    c.heal();
    c.deliver_all();
    c.heartbeat(1);
    c.heartbeat(1);
    assert!(c.raft(3).commit_index() >= c.raft(3).membership_index().unwrap());
    assert!(!c.raft(3).may_campaign(), "removed by a committed change");
}
