//! Leadership transfer (thesis §3.10): the leader stops taking proposals, brings the target up
//! to date and sends it TimeoutNow; the target campaigns at once, bypassing check-quorum leases.

mod common;

use common::*;
use dmq_raft::{MessageBody, ProposeError, Role};

/// Thesis §3.10: a transfer to an up-to-date follower completes within a few message rounds
/// and no ticks at all; proposals are refused meanwhile; the target leads the next term.
#[test]
fn thesis_3_10_transfer_to_up_to_date_follower_is_quick() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"a").unwrap();
    c.heartbeat(1);
    let t = c.raft(1).term();
    let mark = c.sent.len();
    c.node_mut(1).raft.transfer_leadership(2).unwrap();
    c.drain(1);
    assert_eq!(
        c.propose(1, b"b"),
        Err(ProposeError::LeadershipTransferInProgress)
    );
    assert!(ProposeError::LeadershipTransferInProgress.is_retryable());
    let now = c.sent_since(mark, |m| m.to == 2 && m.body == MessageBody::TimeoutNow);
    assert_eq!(now.len(), 1, "an up-to-date target gets TimeoutNow at once");

    let mut rounds = 0;
    while c.raft(2).role() != Role::Leader {
        rounds += 1;
        assert!(
            rounds <= 4,
            "transfer not done after {rounds} message rounds"
        );
        c.round();
    }
    assert_eq!(c.raft(2).term(), t + 1);
    c.deliver_all();
    assert_eq!(c.leaders(), vec![2]);
    assert_eq!(
        (c.raft(1).role(), c.raft(1).leader_id()),
        (Role::Follower, Some(2))
    );
    assert_eq!(c.raft(3).leader_id(), Some(2));
    assert_eq!(
        c.propose(1, b"c"),
        Err(ProposeError::NotLeader {
            leader_hint: Some(2)
        })
    );
    c.propose(2, b"c").unwrap();
    c.deliver_all();
    c.heartbeat(2);
    assert_eq!(c.applied_data(1), vec![b"a".to_vec(), b"c".to_vec()]);
}

/// Thesis §3.10: a lagging target is first brought up to date, then told to campaign; it wins
/// well before an election timeout would have elapsed.
#[test]
fn thesis_3_10_transfer_to_lagging_follower_catches_it_up_first() {
    let mut c = Cluster::new(3);
    let min = c.raft(1).config().election_timeout_min_ticks;
    c.elect(1);
    c.heartbeat(1);
    c.isolate(3);
    for i in 0..5u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.deliver_all();
    c.heal();
    let t = c.raft(1).term();
    let last = c.raft(1).last_index();
    assert!(c.raft(3).last_index() < last);
    c.node_mut(1).raft.transfer_leadership(3).unwrap();
    c.drain(1);
    let mut ticks = 0;
    loop {
        c.deliver_all();
        if c.raft(3).role() == Role::Leader {
            break;
        }
        if c.raft(1).role() == Role::Leader {
            assert_eq!(
                c.propose(1, b"x"),
                Err(ProposeError::LeadershipTransferInProgress)
            );
        }
        c.tick_all();
        ticks += 1;
        assert!(
            ticks < min,
            "transfer to a lagging node took {ticks} ticks (>= election timeout)"
        );
    }
    assert_eq!(c.raft(3).term(), t + 1);
    assert!(
        c.raft(3).last_index() > last,
        "new leader holds every entry plus its no-op"
    );
    assert_eq!(c.raft(3).term_at(last), Some(t));
}

/// Thesis §3.10: a transfer to a node that is not a voter fails (not retryable); one to itself
/// is a no-op; a follower answers NotLeader.
#[test]
fn thesis_3_10_transfer_errors() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.heartbeat(1);
    let err = c.node_mut(1).raft.transfer_leadership(9).unwrap_err();
    assert_eq!(err, ProposeError::UnknownNode { node: 9 });
    assert!(!err.is_retryable());
    c.drain(1);
    c.propose(1, b"still-leader").unwrap();

    c.node_mut(1).raft.transfer_leadership(1).unwrap();
    c.drain(1);
    c.propose(1, b"self-transfer-is-a-no-op").unwrap();
    assert_eq!(c.raft(1).role(), Role::Leader);

    let err = c.node_mut(2).raft.transfer_leadership(3).unwrap_err();
    assert_eq!(
        err,
        ProposeError::NotLeader {
            leader_hint: Some(1)
        }
    );
}

/// Thesis §3.10: a transfer whose target cannot be reached gives up after an election timeout:
/// the leader keeps leading the same term and takes proposals again.
#[test]
fn thesis_3_10_transfer_to_unreachable_node_gives_up() {
    let mut c = Cluster::new(3);
    let min = c.raft(1).config().election_timeout_min_ticks;
    c.elect(1);
    c.heartbeat(1);
    let t = c.raft(1).term();
    c.isolate(3);
    c.node_mut(1).raft.transfer_leadership(3).unwrap();
    c.drain(1);
    assert_eq!(
        c.propose(1, b"x"),
        Err(ProposeError::LeadershipTransferInProgress)
    );
    for _ in 0..min {
        c.tick(1);
        c.tick(2);
        c.deliver_all();
    }
    assert_eq!((c.raft(1).role(), c.raft(1).term()), (Role::Leader, t));
    c.propose(1, b"y").unwrap();
}
