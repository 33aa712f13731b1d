//! A member that comes back with empty storage (a wiped data dir) while its cluster runs. It
//! forgot its votes and its log: voting at term 0 again could elect a leader without a
//! committed entry (Leader Completeness, §5.4.1) or a second leader in a term it voted in
//! (§5.2), and its acknowledgments could complete a stale leader's majority. So it neither
//! votes nor campaigns, and a leader does not count it, until its log durably reaches a
//! commit index its leader told it, at an entry of the leader's term
//! ([`dmq_raft::Raft::rejoin`]).

mod common;

use common::*;
use dmq_raft::{MessageBody, Role};

/// The committed entry lives on nodes 1 and 2; 2 is wiped and 1 is cut off. Node 3, whose
/// log lacks the entry, must not be elected with 2's vote.
#[test]
fn a_wiped_node_gives_no_vote_that_could_lose_a_committed_entry() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    let (index, _) = c.propose(1, b"committed on 1 and 2").unwrap();
    c.deliver_all();
    c.heartbeat(1);
    assert!(c.raft(1).commit_index() >= index);
    c.wipe(2);
    c.heal();
    c.isolate(1);
    let mark = c.sent.len();
    c.tick_all_and_deliver(200);
    assert_eq!(c.leader(), None, "a leader without the committed entry");
    assert!(
        c.sent_since(mark, |m| m.from == 2
            && (is_grant(m, true) || is_grant(m, false)))
            .is_empty(),
        "the wiped node voted"
    );
    assert!(
        c.sent_since(mark, |m| m.from == 2
            && matches!(m.body, MessageBody::RequestVote { .. }))
            .is_empty(),
        "the wiped node campaigned"
    );
    assert!(c.raft(2).is_catching_up());
    // Node 1 returns: a leader with the entry, from which 2 catches up and votes again.
    c.heal();
    c.tick_all_and_deliver(200);
    let l = c.leader().expect("a leader once node 1 is back");
    assert_ne!(l, 3, "node 3 lacks a committed entry");
    c.propose(l, b"later").unwrap();
    c.deliver_all();
    c.heartbeat(l);
    c.deliver_all();
    assert!(!c.raft(2).is_catching_up(), "caught up from the leader");
    assert!(
        !c.node(2).storage.hard_state().catching_up,
        "and persisted it"
    );
    assert_eq!(c.applied_data(2), c.applied_data(l));
    assert_eq!(
        c.raft(2).vote(),
        Some(l).filter(|_| c.raft(2).term() == c.raft(l).term()),
        "its vote in the leader's term counts as given to it"
    );
}

/// A wiped node may take entries from a stale leader of an old term, which it can no longer
/// tell from the real one: its acknowledgments must not make entries committed. With node 3
/// down for good, the entry proposed after node 2 was wiped commits only through an answer
/// of 2's that no longer says it is catching up.
#[test]
fn a_node_catching_up_does_not_count_toward_a_commit() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"first").unwrap();
    c.deliver_all();
    c.heartbeat(1);
    c.isolate(3);
    c.wipe(2);
    let (index, _) = c.propose(1, b"needs a real majority").unwrap();
    let mut steps = 0;
    loop {
        if c.raft(1).commit_index() >= index {
            let voting_ack = c.delivered.iter().any(|m| {
                m.from == 2
                    && m.to == 1
                    && matches!(
                        m.body,
                        MessageBody::AppendEntriesResponse {
                            success: true,
                            catching_up: false,
                            match_index,
                            ..
                        } if match_index >= index
                    )
            });
            assert!(
                voting_ack,
                "committed {index} without an acknowledgment from a caught-up node 2"
            );
            break;
        }
        if !c.deliver_one() {
            c.heartbeat(1);
        }
        steps += 1;
        assert!(steps < 1000, "never committed");
    }
    assert!(
        c.delivered.iter().any(|m| m.from == 2
            && matches!(
                m.body,
                MessageBody::AppendEntriesResponse {
                    catching_up: true,
                    ..
                }
            )),
        "2 answered as catching up first"
    );
}

/// A node catching up never campaigns, however long it hears no leader, and ignores
/// TimeoutNow; it keeps the flag across a restart.
#[test]
fn a_node_catching_up_never_campaigns_and_keeps_the_flag_across_a_restart() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.wipe(2);
    c.isolate(1);
    c.isolate(3);
    for _ in 0..500 {
        c.tick(2);
    }
    assert_eq!(c.raft(2).role(), Role::Follower);
    assert_eq!(c.raft(2).term(), 0);
    c.node_mut(2).raft.campaign_now();
    c.drain(2);
    assert_eq!(
        c.raft(2).role(),
        Role::Follower,
        "campaign_now while catching up"
    );
    c.inject(dmq_raft::Message {
        from: 1,
        to: 2,
        term: c.raft(1).term(),
        body: MessageBody::TimeoutNow,
    });
    assert_ne!(
        c.raft(2).role(),
        Role::Candidate,
        "TimeoutNow while catching up"
    );
    assert!(c.node(2).storage.hard_state().catching_up);
    c.restart(2);
    assert!(c.raft(2).is_catching_up(), "lost across a restart");
}

/// Every node empty is a brand-new cluster, not a wiped member: it elects a leader as ever.
#[test]
fn a_brand_new_cluster_still_bootstraps() {
    let mut c = Cluster::new(3);
    c.tick_all_and_deliver(100);
    let l = c.leader().expect("a brand-new cluster elects a leader");
    c.propose(l, b"x").unwrap();
    c.deliver_all();
    c.heartbeat(l);
    for id in 1..=3 {
        assert!(!c.raft(id).is_catching_up());
        assert_eq!(c.applied_data(id).len(), 1, "node {id}");
    }
}

/// A leader's commit index is a hint: one elected a moment ago may not know yet that an entry
/// it holds was committed. Node 2 led and committed entry 3 with node 1's acknowledgment, but
/// node 1 never heard of the commit; then 2's disk is lost. Node 1 is elected with 3's vote
/// and tells 2 its commit index, 2, which 2 reaches before it holds entry 3. That index is not
/// one of node 1's term, so it need not cover every committed entry: 2 must keep catching up,
/// or once 1 is cut off it and 3, neither holding entry 3, elect a leader without it.
#[test]
fn a_commit_index_from_before_the_leaders_term_does_not_end_catching_up() {
    // One entry per append and one append in flight, so that node 2 reaches the stale commit
    // before entry 3; no check-quorum, so that node 3 answers node 1's campaign at once.
    let mut c = Cluster::new_with(3, |cfg| {
        cfg.max_append_bytes = 1;
        cfg.max_inflight_appends = 1;
        cfg.check_quorum = false;
    });
    c.elect(2);
    c.propose(2, b"first").unwrap();
    c.deliver_all();
    c.heartbeat(2);
    c.isolate(3);
    let (index, term) = c.propose(2, b"committed on 1 and 2").unwrap();
    assert_eq!(index, 3);
    // 2's append reaches 1; nothing 2 sends after 1's answer does.
    assert!(c.deliver_one());
    c.cut.insert((2, 1));
    c.deliver_all();
    assert!(c.raft(2).commit_index() >= index, "committed on 1 and 2");
    assert_eq!(c.raft(1).commit_index(), 2, "1 does not know it");
    c.wipe(2);
    c.heal();
    c.node_mut(1).raft.campaign_now();
    c.drain(1);
    while c.raft(1).role() != Role::Leader {
        assert!(c.deliver_one(), "node 1 is elected with 3's vote");
    }
    c.isolate(3);
    // Node 1's appends to 2, one entry each, until 2 holds the stale commit index.
    let mut rounds = 0;
    while c.node(2).storage.entry(2).is_none() {
        rounds += 1;
        assert!(rounds <= 10_000, "node 2 never receives entry 2");
        if !c.deliver_one() {
            c.tick(1);
        }
    }
    assert_eq!(c.raft(2).commit_index(), 2);
    assert!(c.log_of(2).iter().all(|&(i, _)| i < index));
    assert!(
        c.raft(2).is_catching_up(),
        "caught up on a stale commit index"
    );
    c.heal();
    c.isolate(1);
    c.queue.clear();
    c.tick_all_and_deliver(200);
    assert_eq!(
        c.leaders(),
        vec![1],
        "a leader without committed entry {index} (1 is cut off, not deposed)"
    );
    // Node 1 returns and commits its term's no-op: 2 catches up from it, with entry 3.
    c.heal();
    c.tick_all_and_deliver(200);
    let l = c.leader().expect("a leader once node 1 is back");
    assert!(c.log_of(l).contains(&(index, term)));
    c.heartbeat(l);
    assert!(!c.raft(2).is_catching_up(), "caught up from the leader");
    assert!(c.log_of(2).contains(&(index, term)));
}
