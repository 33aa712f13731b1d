//! Restart from storage (Raft Figure 2, "Persistent state on all servers": currentTerm,
//! votedFor, log[]), with §5.2's one vote per term surviving a crash.

mod common;

use common::*;
use dmq_raft::{RecoveredState, Role};

/// Figure 2: a node rebuilt from its MemStorage keeps term, vote and log (and its commit hint).
#[test]
fn fig2_restart_keeps_term_vote_and_log() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..4u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.deliver_all();
    c.heartbeat(1);
    for id in [2, 1] {
        let (term, vote, log, commit) = {
            let r = c.raft(id);
            (r.term(), r.vote(), c.log_of(id), r.commit_index())
        };
        let entries: Vec<_> = (1..=5)
            .map(|i| c.raft(id).entry(i).cloned().unwrap())
            .collect();
        c.restart(id);
        let r = c.raft(id);
        assert_eq!((r.term(), r.vote()), (term, vote), "node {id}");
        assert_eq!(c.log_of(id), log, "node {id}");
        assert_eq!(
            (1..=5)
                .map(|i| r.entry(i).cloned().unwrap())
                .collect::<Vec<_>>(),
            entries
        );
        assert_eq!(r.commit_index(), commit, "node {id}");
        assert_eq!(
            r.role(),
            Role::Follower,
            "a restarted node starts as a follower"
        );
    }
    // The cluster carries on: a leader emerges in a later term and the log survives.
    c.tick_all_and_deliver(60);
    let l = c.leader().expect("a leader after the restarts");
    c.propose(l, b"after").unwrap();
    c.deliver_all();
    c.heartbeat(l);
    for id in 1..=3 {
        assert_eq!(c.applied_data(id).len(), 5, "node {id}");
    }
}

/// §5.2 + Figure 2: a vote survives a crash: after restarting, a node that voted for A in term
/// t still refuses B in term t.
#[test]
fn fig2_vote_survives_restart() {
    let mut c = Cluster::build(
        vec![1, 2, 3],
        vec![(config(1, &[1, 2, 3]), RecoveredState::default())],
    );
    c.inject(vote_req(2, 1, 5, (0, 0), false));
    assert_eq!(c.node(1).storage.hard_state().vote, Some(2));
    c.restart(1);
    assert_eq!((c.raft(1).term(), c.raft(1).vote()), (5, Some(2)));
    let mark = c.sent.len();
    c.inject(vote_req(3, 1, 5, (0, 0), false));
    let out = c.sent_since(mark, |_| true);
    assert_eq!(out.len(), 1);
    assert!(
        is_refusal(&out[0], false),
        "voted twice in term 5 across a restart"
    );
    assert_eq!(c.raft(1).vote(), Some(2));
}
