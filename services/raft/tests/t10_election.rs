//! Leader election (Raft §5.1, §5.2, §5.4.1), pre-vote (thesis §9.6) and check-quorum
//! (thesis §6.2).

mod common;

use std::collections::BTreeSet;

use common::*;
use dmq_raft::{Config, Message, MessageBody, PlantedBug, ProposeError, RecoveredState, Role};

fn solo(cfg: Config, rec: RecoveredState) -> Cluster {
    let voters = cfg.voters.clone();
    Cluster::build(voters, vec![(cfg, rec)])
}

/// §5.2: a follower that hears nothing campaigns after a timeout drawn from min..max ticks, and
/// draws a fresh one after each failed campaign; different seeds draw different timeouts.
#[test]
fn s5_2_follower_campaigns_within_randomized_timeout_and_seeds_differ() {
    let mut first_timeouts = BTreeSet::new();
    for seed in 0..32u64 {
        let mut cfg = config(1, &[1, 2, 3]);
        cfg.seed = seed;
        cfg.pre_vote = false;
        let (min, max) = (
            cfg.election_timeout_min_ticks,
            cfg.election_timeout_max_ticks,
        );
        let mut c = solo(cfg, RecoveredState::default());
        let mut ticks = 0;
        while c.raft(1).role() == Role::Follower {
            c.tick(1);
            ticks += 1;
            assert!(ticks <= max, "seed {seed}: no campaign within {max} ticks");
        }
        assert!(
            ticks >= min,
            "seed {seed}: campaigned after {ticks} < {min} ticks"
        );
        first_timeouts.insert(ticks);
        let r = c.raft(1);
        assert_eq!(
            (r.role(), r.term(), r.vote()),
            (Role::Candidate, 1, Some(1))
        );
        let asks = c.sent_since(0, |m| {
            matches!(
                m.body,
                MessageBody::RequestVote {
                    pre_vote: false,
                    ..
                }
            )
        });
        assert_eq!(asks.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
        assert!(asks.iter().all(|m| m.term == 1));

        // Nobody answers: the next campaign comes after a fresh timeout, also in range.
        let mut again = 0;
        while c.raft(1).term() == 1 {
            c.tick(1);
            again += 1;
            assert!(again <= max, "seed {seed}: no second campaign");
        }
        assert!(
            again >= min && again < max,
            "seed {seed}: second timeout {again}"
        );
        assert_eq!(c.raft(1).term(), 2);
    }
    assert!(
        first_timeouts.len() >= 4,
        "timeouts barely vary across seeds: {first_timeouts:?}"
    );
}

/// §5.2: at most one vote per term, and the vote is durable before it is sent (the harness
/// asserts the latter on every Ready).
#[test]
fn s5_2_one_vote_per_term() {
    let mut c = solo(config(1, &[1, 2, 3]), RecoveredState::default());
    let mark = c.sent.len();
    c.inject(vote_req(2, 1, 1, (0, 0), false));
    let out = c.sent_since(mark, |_| true);
    assert_eq!(out.len(), 1);
    assert!(is_grant(&out[0], false) && out[0].to == 2 && out[0].term == 1);
    assert_eq!(c.node(1).storage.hard_state().vote, Some(2));

    // Another candidate in the same term is refused, even with an equally good log.
    let mark = c.sent.len();
    c.inject(vote_req(3, 1, 1, (0, 0), false));
    let out = c.sent_since(mark, |_| true);
    assert_eq!(out.len(), 1);
    assert!(is_refusal(&out[0], false) && out[0].to == 3);
    assert_eq!(c.raft(1).vote(), Some(2));

    // A retransmitted request from the same candidate is granted again (same vote).
    let mark = c.sent.len();
    c.inject(vote_req(2, 1, 1, (0, 0), false));
    assert!(is_grant(&c.sent_since(mark, |_| true)[0], false));

    // A new term frees the vote.
    let mark = c.sent.len();
    c.inject(vote_req(3, 1, 2, (0, 0), false));
    assert!(is_grant(&c.sent_since(mark, |_| true)[0], false));
    assert_eq!(c.node(1).storage.hard_state().term, 2);
    assert_eq!(c.node(1).storage.hard_state().vote, Some(3));
}

/// §5.4.1: a vote goes only to a candidate whose log is at least as up to date: compare last
/// terms first, then last indexes.
#[test]
fn s5_4_1_candidate_with_stale_log_is_refused() {
    let voter_log = || recovered(2, None, 1, ents(&[(1, 1), (2, 2)]));
    let mut c = solo(config(1, &[1, 2, 3]), voter_log());
    // Longer log but an older last term: refused.
    assert!(!ask(&mut c, 2, 3, (5, 1), false));
    // Same last term, shorter: refused.
    assert!(!ask(&mut c, 3, 4, (1, 2), false));
    // Same last term and index: granted.
    assert!(ask(&mut c, 2, 5, (2, 2), false));
    // Newer last term wins even when shorter.
    assert!(ask(&mut c, 3, 6, (1, 3), false));
    // The same rule holds for a pre-vote, which changes nothing on the voter.
    let before = c.node(1).storage.hard_state();
    assert!(!ask(&mut c, 2, 7, (9, 1), true));
    assert!(ask(&mut c, 2, 7, (2, 2), true));
    assert_eq!(c.node(1).storage.hard_state(), before);
    assert_eq!(c.raft(1).term(), 6);

    // Control: the planted bug that skips the check grants the stale candidate.
    let mut cfg = config(1, &[1, 2, 3]);
    cfg.planted_bug = Some(PlantedBug::VoteForStaleLog);
    let mut c = solo(cfg, voter_log());
    assert!(ask(&mut c, 2, 3, (5, 1), false));
}

/// Asks node 1 for a (pre-)vote; returns whether it was granted.
fn ask(c: &mut Cluster, from: u64, term: u64, last: (u64, u64), pre: bool) -> bool {
    let mark = c.sent.len();
    c.inject(vote_req(from, 1, term, last, pre));
    let out = c.sent_since(mark, |m| m.to == from);
    assert_eq!(out.len(), 1, "one answer to {from}");
    is_grant(&out[0], pre)
}

/// §5.1: a leader that sees a higher term steps down, whichever message carries it.
#[test]
fn s5_1_leader_steps_down_on_higher_term() {
    // An AppendEntries from a newer leader.
    let mut c = Cluster::new(3);
    c.elect(1);
    let t = c.raft(1).term();
    c.isolate(2);
    c.isolate(3);
    c.inject(append(2, 1, t + 1, (0, 0), vec![], 0));
    let r = c.raft(1);
    assert_eq!(
        (r.role(), r.term(), r.leader_id()),
        (Role::Follower, t + 1, Some(2))
    );
    assert_eq!(
        c.propose(1, b"x"),
        Err(ProposeError::NotLeader {
            leader_hint: Some(2)
        })
    );

    // A response carrying a higher term.
    let mut c = Cluster::new(3);
    c.elect(1);
    let t = c.raft(1).term();
    c.inject(Message {
        from: 3,
        to: 1,
        term: t + 1,
        body: MessageBody::AppendEntriesResponse {
            success: false,
            match_index: 0,
            rejected_index: 0,
            conflict: None,
            read_round: 0,
            catching_up: false,
        },
    });
    let r = c.raft(1);
    assert_eq!(
        (r.role(), r.term(), r.leader_id()),
        (Role::Follower, t + 1, None)
    );
    assert_eq!(c.node(1).storage.hard_state().term, t + 1);

    // Control: the planted bug keeps the leader in place.
    let mut c = Cluster::new_with(3, |cfg| {
        if cfg.id == 1 {
            cfg.planted_bug = Some(PlantedBug::NoStepDownOnHigherTerm)
        }
    });
    c.elect(1);
    let t = c.raft(1).term();
    c.inject(append(2, 1, t + 1, (0, 0), vec![], 0));
    assert_eq!(c.raft(1).role(), Role::Leader);
}

/// §5.1 with pre-vote (thesis §9.6): a stale leader cut off by a partition (check-quorum off, so
/// it does not step down by itself) learns the new term from the followers' answers to its
/// heartbeats once the partition heals, and steps down.
#[test]
fn s5_1_stale_leader_learns_the_new_term_from_followers() {
    let mut c = Cluster::new_with(3, |cfg| cfg.check_quorum = false);
    c.elect(1);
    let t = c.raft(1).term();
    c.isolate(1);
    for _ in 0..100 {
        if c.leaders().len() == 2 {
            break;
        }
        c.tick_all_and_deliver(1);
    }
    let new = c.leader().expect("a new leader");
    assert_ne!(new, 1);
    assert!(c.raft(new).term() > t);
    assert_eq!(
        c.raft(1).role(),
        Role::Leader,
        "stale leader still believes it leads"
    );
    c.heal();
    // Only the stale leader ticks: its heartbeats are answered with the newer term.
    c.tick(1);
    c.deliver_all();
    let r = c.raft(1);
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(r.term(), c.raft(new).term());
    assert_eq!(c.leaders(), vec![new]);
}

/// §5.2: a single-node cluster elects itself (through its own pre-vote) and commits alone.
#[test]
fn s5_2_single_node_cluster_elects_itself() {
    let cfg = config(1, &[1]);
    let max = cfg.election_timeout_max_ticks;
    let mut c = solo(cfg, RecoveredState::default());
    let mut ticks = 0;
    while c.raft(1).role() != Role::Leader {
        c.tick(1);
        ticks += 1;
        assert!(ticks <= max, "no election within {max} ticks");
    }
    assert_eq!(c.raft(1).term(), 1);
    assert_eq!(c.raft(1).commit_index(), 1, "the no-op commits at once");
    let (index, term) = c.propose(1, b"solo").unwrap();
    assert_eq!((index, term), (2, 1));
    assert_eq!(c.raft(1).commit_index(), 2);
    assert_eq!(c.applied_data(1), vec![b"solo".to_vec()]);
}

/// §5.2 and election safety: clusters of 3 and 5 elect exactly one leader that everyone
/// follows, for several seeds.
#[test]
fn s5_2_cluster_elects_exactly_one_leader() {
    for n in [3u64, 5] {
        for s in 0..10u64 {
            let mut c = Cluster::new_with(n, |cfg| cfg.seed = cfg.seed.wrapping_mul(31) + s);
            let mut rounds = 0;
            loop {
                c.tick_all_and_deliver(1);
                rounds += 1;
                let leaders = c.leaders();
                assert!(
                    leaders.len() <= 1,
                    "n={n} seed={s}: two leaders {leaders:?}"
                );
                if let Some(&l) = leaders.first() {
                    let t = c.raft(l).term();
                    if c.node_ids()
                        .iter()
                        .all(|&i| c.raft(i).leader_id() == Some(l) && c.raft(i).term() == t)
                    {
                        break;
                    }
                }
                assert!(rounds < 200, "n={n} seed={s}: no stable leader");
            }
        }
    }
}

/// Thesis §9.6: a node cut off from the others cannot win a pre-vote, so its term never grows;
/// when it comes back it follows the leader instead of deposing it.
#[test]
fn thesis_9_6_partitioned_node_term_does_not_grow_and_rejoin_does_not_disrupt() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"a").unwrap();
    c.heartbeat(1);
    let t = c.raft(1).term();
    c.isolate(3);
    let mark = c.sent.len();
    for _ in 0..100 {
        c.tick_all_and_deliver(1);
        assert_ne!(c.raft(3).role(), Role::Candidate);
        assert_eq!(c.raft(3).term(), t, "isolated node's term grew");
    }
    let pre_campaigns = c
        .sent_since(mark, |m| {
            m.from == 3 && matches!(m.body, MessageBody::RequestVote { pre_vote: true, .. })
        })
        .len()
        / 2;
    assert!(
        pre_campaigns >= 3,
        "the isolated node should have tried ({pre_campaigns})"
    );
    c.propose(1, b"b").unwrap();

    c.heal();
    for _ in 0..60 {
        c.tick_all_and_deliver(1);
    }
    assert_eq!(c.leaders(), vec![1]);
    for id in 1..=3 {
        let r = c.raft(id);
        assert_eq!((r.term(), r.leader_id()), (t, Some(1)), "node {id}");
    }
    assert_eq!(c.log_of(3), c.log_of(1));
    assert_eq!(c.leaders.keys().copied().collect::<Vec<_>>(), vec![t]);
}

/// Thesis §9.6, control: without pre-vote the isolated node's term does grow (so the test above
/// measures pre-vote, not the harness).
#[test]
fn thesis_9_6_control_without_pre_vote_the_isolated_term_grows() {
    let mut c = Cluster::new_with(3, |cfg| cfg.pre_vote = false);
    c.elect(1);
    let t = c.raft(1).term();
    c.isolate(3);
    c.tick_all_and_deliver(50);
    assert!(c.raft(3).term() > t + 1);
}

/// Thesis §9.6: a pre-vote changes no durable state, on the pre-candidate or on the voter.
#[test]
fn thesis_9_6_pre_vote_changes_no_state() {
    let mut c = solo(config(1, &[1, 2, 3]), RecoveredState::default());
    while c.raft(1).role() == Role::Follower {
        c.tick(1);
    }
    assert_eq!(c.raft(1).role(), Role::PreCandidate);
    assert_eq!((c.raft(1).term(), c.raft(1).vote()), (0, None));
    assert_eq!(c.node(1).storage.hard_state().term, 0);
    let asks = c.sent_since(0, |_| true);
    assert_eq!(asks.len(), 2);
    for m in &asks {
        assert_eq!(
            m.term, 1,
            "a pre-vote asks for the term it would campaign at"
        );
        assert!(matches!(
            m.body,
            MessageBody::RequestVote { pre_vote: true, .. }
        ));
    }

    // The voter grants it but neither its term nor its vote moves.
    let mut v = solo(config(2, &[1, 2, 3]), RecoveredState::default());
    v.inject(vote_req(1, 2, 1, (0, 0), true));
    let out = v.sent_since(0, |_| true);
    assert_eq!(out.len(), 1);
    assert!(is_grant(&out[0], true));
    assert_eq!(out[0].term, 1);
    assert_eq!((v.raft(2).term(), v.raft(2).vote()), (0, None));
    assert_eq!(v.node(2).readies, 1);
    assert_eq!(v.node(2).storage.hard_state().term, 0);

    // With a majority of pre-votes the pre-candidate campaigns for real and wins.
    let mut c = Cluster::new(3);
    while c.raft(1).role() == Role::Follower {
        c.tick(1);
    }
    c.deliver_all();
    assert_eq!((c.raft(1).role(), c.raft(1).term()), (Role::Leader, 1));
}

/// Thesis §6.2: a leader that cannot hear a majority steps down. The period is
/// election_timeout_min ticks; a leader cut off right after a check steps down at the end of
/// the following period, so within 2 * min ticks of losing the majority.
#[test]
fn thesis_6_2_check_quorum_isolated_leader_steps_down() {
    let mut c = Cluster::new(3);
    let min = c.raft(1).config().election_timeout_min_ticks as usize;
    c.elect(1);
    c.heartbeat(1);
    c.isolate(1);
    let mut ticks = 0;
    while c.raft(1).role() == Role::Leader {
        c.tick(1);
        ticks += 1;
        assert!(
            ticks <= 2 * min,
            "isolated leader still leads after {ticks} ticks"
        );
    }
    assert_eq!(c.raft(1).role(), Role::Follower);
    assert_eq!(c.raft(1).leader_id(), None);

    // A leader that keeps a majority (one follower of two) stays.
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for _ in 0..5 * min {
        c.tick(1);
        c.tick(2);
        c.deliver_all();
    }
    assert_eq!(c.raft(1).role(), Role::Leader);
}

/// Thesis §6.2 / §9.6: a follower that heard from a live leader less than
/// election_timeout_min ticks ago ignores a RequestVote (or pre-vote) with a higher term: no
/// answer, no term change. A leadership-transfer campaign (thesis §3.10) is not ignored.
#[test]
fn thesis_6_2_follower_in_lease_ignores_higher_term_votes() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.heartbeat(1);
    let t = c.raft(2).term();
    let last = (c.raft(2).last_index(), c.raft(2).last_term());
    let hs = c.node(2).storage.hard_state();
    for pre in [false, true] {
        let mark = c.sent.len();
        c.inject(vote_req(3, 2, t + 1, last, pre));
        assert!(
            c.sent_since(mark, |_| true).is_empty(),
            "answered a vote in lease (pre={pre})"
        );
        assert_eq!(c.raft(2).term(), t);
        assert_eq!(c.node(2).storage.hard_state(), hs);
    }
    // The transfer flag bypasses the lease.
    let mark = c.sent.len();
    let mut m = vote_req(3, 2, t + 1, last, false);
    if let MessageBody::RequestVote {
        leadership_transfer,
        ..
    } = &mut m.body
    {
        *leadership_transfer = true;
    }
    c.inject(m);
    let out = c.sent_since(mark, |_| true);
    assert_eq!(out.len(), 1);
    assert!(is_grant(&out[0], false));
    assert_eq!((c.raft(2).term(), c.raft(2).vote()), (t + 1, Some(3)));
}

/// Thesis §6.2: the lease lasts exactly election_timeout_min ticks after the last message from
/// the leader; after it a higher-term vote is honoured.
#[test]
fn thesis_6_2_lease_expires_after_min_election_timeout() {
    let mut c = Cluster::new(3);
    let min = c.raft(2).config().election_timeout_min_ticks;
    c.elect(1);
    c.heartbeat(1);
    c.isolate(1);
    let t = c.raft(2).term();
    let last = (c.raft(2).last_index(), c.raft(2).last_term());
    for _ in 0..min - 1 {
        c.tick(2);
    }
    let mark = c.sent.len();
    c.inject(vote_req(3, 2, t + 1, last, false));
    assert!(
        c.sent_since(mark, |m| m.to == 3).is_empty(),
        "answered a vote in lease"
    );
    c.tick(2);
    let mark = c.sent.len();
    c.inject(vote_req(3, 2, t + 1, last, false));
    let out = c.sent_since(mark, |m| m.to == 3);
    assert_eq!(out.len(), 1);
    assert!(
        is_grant(&out[0], false),
        "vote not honoured after the lease: {out:?}"
    );
    assert_eq!(c.raft(2).term(), t + 1);
    assert_eq!(c.node(2).storage.hard_state().vote, Some(3));
}
