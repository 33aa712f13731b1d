//! Commitment (Raft §5.3, §5.4.2 and Figure 8), the no-op of a new leader, apply order and
//! exactly-once, and durability of the leader's own entries before they count.

mod common;

use common::*;
use dmq_raft::{Config, EntryKind, Message, MessageBody, PlantedBug, ProposeError, Role, Storage};

/// §5.4.2 / §8: a new leader appends a no-op of its term at once, which commits without any
/// client proposal and carries earlier terms' entries with it.
#[test]
fn s5_4_2_leader_appends_noop_on_election() {
    // Check-quorum off so node 3 votes for 2 without waiting out its lease on 1.
    let mut c = Cluster::new_with(3, |cfg| cfg.check_quorum = false);
    c.elect(1);
    let t1 = c.raft(1).term();
    let noop = c.raft(1).entry(1).unwrap().clone();
    assert_eq!((noop.index, noop.term, noop.kind), (1, t1, EntryKind::Noop));
    c.heartbeat(1);
    for id in 1..=3 {
        assert_eq!(c.raft(id).commit_index(), 1, "node {id}");
        assert_eq!(c.node(id).applied[0].kind, EntryKind::Noop);
    }

    // Node 1 appends an entry only it holds, then node 2 takes over: its no-op is the first
    // entry of its term and commits on its own.
    c.propose(1, b"a").unwrap();
    c.deliver_all();
    c.heartbeat(1);
    c.isolate(1);
    c.elect(2);
    let t2 = c.raft(2).term();
    let last = c.raft(2).last_index();
    let e = c.raft(2).entry(last).unwrap();
    assert_eq!((e.term, e.kind), (t2, EntryKind::Noop));
    c.heartbeat(2);
    assert_eq!(c.raft(2).commit_index(), last);
    assert_eq!(c.raft(3).commit_index(), last);
}

/// Builds the Figure 8 cluster after (b): S1 and S2 hold 2@2 from S1's term-2 leadership, S5
/// holds 2@3 from its term-3 leadership, S3 and S4 hold only 1@1. Every append carries one
/// entry. S5 is cut off; S1 is elected in term 4 and, while its term-4 entries are dropped,
/// brings 2@2 to S3 and S4: a majority holds an entry of an older term (Figure 8 (c)).
fn figure8_c(bug: Option<PlantedBug>) -> Cluster {
    let voters = ids(5);
    let cfg = |id| {
        let mut c: Config = config(id, &voters);
        c.check_quorum = false;
        c.max_append_bytes = 1;
        if id == 1 {
            c.planted_bug = bug;
        }
        c
    };
    let specs = vec![
        (cfg(1), recovered(3, None, 1, ents(&[(1, 1), (2, 2)]))),
        (cfg(2), recovered(3, None, 1, ents(&[(1, 1), (2, 2)]))),
        (cfg(3), recovered(3, None, 1, ents(&[(1, 1)]))),
        (cfg(4), recovered(3, None, 1, ents(&[(1, 1)]))),
        (cfg(5), recovered(3, None, 1, ents(&[(1, 1), (2, 3)]))),
    ];
    let mut c = Cluster::build(voters.clone(), specs);
    c.isolate(5);
    c.filter = Some(Box::new(|m: &Message| match &m.body {
        MessageBody::AppendEntries { entries, .. } if entries.iter().any(|e| e.term == 4) => {
            Verdict::Drop
        }
        _ => Verdict::Deliver,
    }));
    c.elect(1);
    assert_eq!(c.raft(1).term(), 4);
    for _ in 0..3 {
        c.heartbeat(1);
    }
    c
}

/// §5.4.2, Figure 8 (c) then (e): an entry of an earlier term stored on a majority is not
/// committed by counting replicas; it commits only with an entry of the current term.
#[test]
fn s5_4_2_figure8_old_term_entry_on_majority_not_committed() {
    let mut c = figure8_c(None);
    let m = c.raft(1).match_indexes();
    for id in 2..=4 {
        assert_eq!(m[&id], 2, "S{id} should hold 2@2");
        assert_eq!(c.raft(id).term_at(2), Some(2));
    }
    assert_eq!(c.raft(1).term_at(3), Some(4), "the leader's no-op");
    assert_eq!(
        c.raft(1).commit_index(),
        1,
        "2@2 committed by counting replicas"
    );
    for id in 1..=4 {
        assert!(
            c.node(id).applied.iter().all(|e| e.index < 2),
            "S{id} applied 2@2"
        );
    }

    // (e): once the term-4 no-op reaches a majority, it commits and 2@2 with it.
    c.filter = None;
    c.heartbeat(1);
    c.heartbeat(1);
    assert_eq!(c.raft(1).commit_index(), 3);
    let applied: Vec<_> = c
        .node(1)
        .applied
        .iter()
        .map(|e| (e.index, e.term))
        .collect();
    assert_eq!(applied, vec![(1, 1), (2, 2), (3, 4)]);
}

/// §5.4.2, Figure 8 (d): why the rule matters. S5, whose last entry 2@3 is newer than 2@2, can
/// still win an election with S2, S3, S4 and overwrite 2@2 everywhere, so 2@2 was never safe.
/// Control: with the planted bug the leader does commit 2@2 in (c).
#[test]
fn s5_4_2_figure8_old_term_entry_can_still_be_overwritten() {
    let bugged = figure8_c(Some(PlantedBug::CommitPreviousTerm));
    assert_eq!(
        bugged.raft(1).commit_index(),
        2,
        "control: the planted bug commits 2@2"
    );

    let mut c = figure8_c(None);
    c.filter = None;
    c.heal();
    c.isolate(1);
    for _ in 0..3 {
        if c.raft(5).role() == Role::Leader {
            break;
        }
        c.node_mut(5).raft.campaign_now();
        c.deliver_all();
    }
    assert_eq!(
        c.raft(5).role(),
        Role::Leader,
        "S5 can be elected without S1"
    );
    c.heartbeat(5);
    c.heartbeat(5);
    for id in 2..=5 {
        assert_eq!(
            c.raft(id).term_at(2),
            Some(3),
            "S{id}: 2@2 was overwritten by 2@3"
        );
    }
    c.heal();
    c.heartbeat(5);
    c.heartbeat(5);
    assert_eq!(c.log_of(1), c.log_of(5));
    assert_eq!(c.raft(1).term_at(2), Some(3));
    assert!(c.applied_at.get(&2).is_some_and(|e| e.term == 3));
}

/// §5.3 / state machine safety: under a seeded workload of proposals, partitions, message
/// loss, restarts and leader changes, every node applies entries in index order, each exactly
/// once, never beyond its commit, and never two different entries at one index (checked on
/// every Ready by the harness); in the end everyone applied the same sequence.
#[test]
fn s5_3_applied_in_order_exactly_once_never_beyond_commit() {
    for seed in 0..6u64 {
        let mut c = Cluster::new_with(5, |cfg| cfg.seed = cfg.seed.wrapping_mul(7) + seed);
        let mut rng = Rng::new(seed);
        let mut loss = Rng::new(seed + 100);
        c.filter = Some(Box::new(move |_m: &Message| {
            if loss.below(20) == 0 {
                Verdict::Drop
            } else {
                Verdict::Deliver
            }
        }));
        let mut proposed = 0u64;
        for _ in 0..1500 {
            match rng.below(100) {
                0..=54 => c.tick_all(),
                55..=79 => {
                    if let Some(l) = c.leader() {
                        proposed += 1;
                        let _ = c.propose(l, format!("cmd-{proposed}").as_bytes());
                    }
                }
                80..=85 => {
                    if c.isolated.len() < 2 {
                        let id = 1 + rng.below(5);
                        c.isolate(id);
                    }
                }
                86..=92 => c.heal(),
                _ => {
                    let id = 1 + rng.below(5);
                    c.restart(id);
                }
            }
            c.deliver_all();
        }
        c.heal();
        c.filter = None;
        let mut done = false;
        for _ in 0..300 {
            c.tick_all_and_deliver(1);
            if let Some(l) = c.leader() {
                let commit = c.raft(l).commit_index();
                if c.node_ids()
                    .iter()
                    .all(|&i| c.node(i).applied_index == commit)
                {
                    done = true;
                    break;
                }
            }
        }
        assert!(done, "seed {seed}: cluster did not converge");
        let reference = c.node(1).applied.clone();
        assert!(
            reference.len() > 20,
            "seed {seed}: too little was committed ({})",
            reference.len()
        );
        for id in 2..=5 {
            assert_eq!(
                c.node(id).applied,
                reference,
                "seed {seed}: node {id} applied differently"
            );
        }
    }
}

/// The leader counts its own entry toward a commit only once its Ready was persisted and
/// advance() called (Durability in DESIGN.md): a follower's acknowledgement that overtakes the
/// leader's own flush does not commit the entry.
#[test]
fn leader_counts_own_entry_only_after_persist_and_advance() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.heartbeat(1);
    let t = c.raft(1).term();
    let before = c.raft(1).commit_index();
    let (index, _) = c.node_mut(1).raft.propose(b"x".to_vec()).unwrap();
    assert_eq!(c.raft(1).stable_index(), index - 1);
    // Node 2's acknowledgement arrives before the leader's Ready was handled.
    c.node_mut(1).raft.step(Message {
        from: 2,
        to: 1,
        term: t,
        body: MessageBody::AppendEntriesResponse {
            success: true,
            match_index: index,
            rejected_index: 0,
            conflict: None,
            read_round: 0,
            catching_up: false,
        },
    });
    assert_eq!(
        c.raft(1).commit_index(),
        before,
        "committed with only one durable copy of two"
    );
    let rd = c.node_mut(1).raft.ready();
    assert_eq!(rd.entries.last().map(|e| e.index), Some(index));
    assert!(rd.committed_entries.iter().all(|e| e.index < index));
    assert_eq!(
        c.raft(1).commit_index(),
        before,
        "committed between ready() and advance()"
    );
    let node = c.node_mut(1);
    node.storage
        .persist(rd.snapshot.as_ref(), &rd.entries, rd.hard_state.as_ref())
        .unwrap();
    node.raft.advance();
    assert_eq!(
        c.raft(1).commit_index(),
        index,
        "durable on 2 of 3 after advance()"
    );
}

/// Same rule in a single-node cluster: a proposal commits on advance(), not before.
#[test]
fn single_node_commits_only_after_persist_and_advance() {
    let mut c = Cluster::build(
        vec![1],
        vec![(config(1, &[1]), dmq_raft::RecoveredState::default())],
    );
    c.elect(1);
    let before = c.raft(1).commit_index();
    let node = c.node_mut(1);
    let (index, _) = node.raft.propose(b"y".to_vec()).unwrap();
    assert_eq!(node.raft.commit_index(), before);
    let rd = node.raft.ready();
    assert!(rd.committed_entries.is_empty());
    assert_eq!(node.raft.commit_index(), before);
    node.storage
        .persist(None, &rd.entries, rd.hard_state.as_ref())
        .unwrap();
    node.raft.advance();
    assert_eq!(node.raft.commit_index(), index);
    let rd = node.raft.ready();
    assert_eq!(
        rd.committed_entries
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![index]
    );
    node.raft.advance();
}

/// §5.3: followers learn a new commit index from the leader without waiting for the next
/// heartbeat (raft.rs advance(): "Tell followers the new commit promptly").
#[test]
fn s5_3_followers_learn_commit_without_waiting_for_a_heartbeat() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.heartbeat(1);
    let (index, _) = c.propose(1, b"z").unwrap();
    c.deliver_all();
    assert_eq!(c.raft(1).commit_index(), index);
    for id in 2..=3 {
        assert_eq!(
            c.raft(id).commit_index(),
            index,
            "node {id} still at an old commit"
        );
    }
}

/// Flow control: uncommitted proposals beyond max_uncommitted_bytes are refused with
/// Backpressure (retryable) and accepted again once earlier ones commit.
#[test]
fn uncommitted_bytes_are_bounded() {
    let per = 100 + 24;
    let mut c = Cluster::new_with(3, |cfg| cfg.max_uncommitted_bytes = 3 * per);
    c.elect(1);
    c.heartbeat(1);
    c.isolate(2);
    c.isolate(3);
    for _ in 0..3 {
        c.propose(1, &[1; 100]).unwrap();
    }
    let err = c.propose(1, &[1; 100]).unwrap_err();
    assert!(matches!(err, ProposeError::Backpressure { .. }), "{err:?}");
    assert!(err.is_retryable());
    c.heal();
    for _ in 0..5 {
        c.heartbeat(1);
    }
    assert_eq!(c.raft(1).commit_index(), c.raft(1).last_index());
    c.propose(1, &[1; 100]).unwrap();
}
