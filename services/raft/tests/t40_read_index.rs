//! Linearizable reads with ReadIndex (thesis §6.4): the read point is the commit index, handed
//! out only after a heartbeat round a majority acknowledged.

mod common;

use common::*;
use dmq_raft::{Message, MessageBody, ProposeError, ReadState, Role};

fn hold_responses_to_leader(c: &mut Cluster, leader: u64, from: Vec<u64>) {
    c.filter = Some(Box::new(move |m: &Message| {
        if m.to == leader && from.contains(&m.from) {
            Verdict::Hold
        } else {
            Verdict::Deliver
        }
    }));
}

fn read_round(m: &Message) -> u64 {
    match m.body {
        MessageBody::AppendEntriesResponse { read_round, .. } => read_round,
        _ => 0,
    }
}

/// Thesis §6.4: read_index on a leader yields ReadState{ctx, commit} only once a majority
/// acknowledged a heartbeat sent after the request.
#[test]
fn thesis_6_4_read_index_confirmed_after_majority_heartbeat() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"a").unwrap();
    c.heartbeat(1);
    let commit = c.raft(1).commit_index();
    assert_eq!(commit, 2);

    hold_responses_to_leader(&mut c, 1, vec![2, 3]);
    let mark = c.sent.len();
    c.read_index(1, 42).unwrap();
    let beats = c.sent_since(mark, |m| {
        m.from == 1 && matches!(m.body, MessageBody::AppendEntries { .. })
    });
    assert_eq!(
        beats.len(),
        2,
        "read_index should send a heartbeat round at once"
    );
    c.deliver_all();
    assert!(
        c.node(1).read_states.is_empty(),
        "read confirmed without any acknowledgement"
    );
    assert_eq!(c.held.len(), 2);

    // One follower's answer makes a majority (2 of 3).
    hold_responses_to_leader(&mut c, 1, vec![3]);
    c.release_held();
    c.deliver_all();
    assert_eq!(
        c.node(1).read_states,
        vec![ReadState {
            ctx: 42,
            index: commit
        }]
    );
    c.filter = None;
    c.release_held();
    c.deliver_all();
    assert_eq!(
        c.node(1).read_states.len(),
        1,
        "a read state handed out twice"
    );
}

/// Thesis §6.4: a read asked before the new leader committed an entry of its term waits for
/// that commit, so its read index covers every entry committed by earlier leaders.
#[test]
fn thesis_6_4_read_waits_for_the_leaders_first_commit() {
    // Check-quorum off so node 3 votes for 2 at once, without waiting out its lease on 1.
    let mut c = Cluster::new_with(3, |cfg| cfg.check_quorum = false);
    c.elect(1);
    c.propose(1, b"a").unwrap();
    c.heartbeat(1);
    c.isolate(1);
    c.filter = Some(Box::new(|m: &Message| {
        if matches!(m.body, MessageBody::AppendEntriesResponse { .. }) {
            Verdict::Hold
        } else {
            Verdict::Deliver
        }
    }));
    c.elect(2);
    let noop = c.raft(2).last_index();
    assert!(c.raft(2).commit_index() < noop);
    c.read_index(2, 7).unwrap();
    c.deliver_all();
    assert!(
        c.node(2).read_states.is_empty(),
        "read confirmed before the no-op committed"
    );

    c.filter = None;
    c.release_held();
    c.deliver_all();
    assert_eq!(c.raft(2).commit_index(), noop);
    assert_eq!(
        c.node(2).read_states,
        vec![ReadState {
            ctx: 7,
            index: noop
        }]
    );
}

/// Thesis §6.4: only the leader serves ReadIndex; a follower answers NotLeader with its hint.
#[test]
fn thesis_6_4_read_index_on_follower_is_not_leader() {
    let mut c = Cluster::new(3);
    assert_eq!(
        c.read_index(2, 1),
        Err(ProposeError::NotLeader { leader_hint: None })
    );
    c.elect(1);
    c.heartbeat(1);
    assert_eq!(
        c.read_index(2, 1),
        Err(ProposeError::NotLeader {
            leader_hint: Some(1)
        })
    );
    assert!(c.node(2).read_states.is_empty());
}

/// Thesis §6.4: a leader cut off from the majority never confirms a read, neither before nor
/// after it steps down, nor after it rejoins.
#[test]
fn thesis_6_4_partitioned_leader_never_confirms_read() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.heartbeat(1);
    c.isolate(1);
    c.read_index(1, 9).unwrap();
    for _ in 0..40 {
        c.tick(1);
        c.deliver_all();
        assert!(
            c.node(1).read_states.is_empty(),
            "isolated leader confirmed a read"
        );
    }
    assert_ne!(c.raft(1).role(), Role::Leader);
    assert!(matches!(
        c.read_index(1, 10),
        Err(ProposeError::NotLeader { .. })
    ));
    c.heal();
    c.tick_all_and_deliver(60);
    assert!(
        c.node(1).read_states.is_empty(),
        "a stale read surfaced after rejoining"
    );

    // Five nodes, leader with one follower of four: still a minority.
    let mut c = Cluster::new(5);
    c.elect(1);
    c.heartbeat(1);
    for id in 3..=5 {
        c.isolate(id);
    }
    c.read_index(1, 11).unwrap();
    for _ in 0..5 {
        c.tick(1);
        c.deliver_all();
    }
    assert!(c.node(1).read_states.is_empty(), "confirmed with 2 of 5");
}

/// Thesis §6.4: acknowledgements of heartbeats sent before the read was asked do not confirm
/// it: only the round started for (or after) the read counts.
#[test]
fn thesis_6_4_earlier_heartbeat_acks_do_not_confirm_a_later_read() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.heartbeat(1);
    hold_responses_to_leader(&mut c, 1, vec![2, 3]);
    c.tick(1); // a plain heartbeat round
    c.deliver_all();
    let old_round = c.held.iter().map(read_round).max().unwrap();
    c.read_index(1, 5).unwrap();
    c.deliver_all();
    assert_eq!(c.held.len(), 4);

    // Deliver only the answers to the earlier round.
    let (old, new): (Vec<_>, Vec<_>) = std::mem::take(&mut c.held)
        .into_iter()
        .partition(|m| read_round(m) <= old_round);
    assert_eq!(old.len(), 2);
    c.filter = None;
    c.queue.extend(old);
    c.deliver_all();
    assert!(
        c.node(1).read_states.is_empty(),
        "confirmed by acknowledgements of an older round"
    );
    c.queue.extend(new);
    c.deliver_all();
    assert_eq!(c.node(1).read_states.len(), 1);
}
