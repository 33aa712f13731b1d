//! Log compaction and InstallSnapshot (Raft §7).

mod common;

use common::*;
use dmq_raft::{Message, MessageBody, Snapshot, SnapshotMeta, Storage};

fn install(from: u64, to: u64, term: u64, index: u64, last_term: u64) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    last_index: index,
                    last_term,
                    membership: dmq_raft::Membership::from_voters([1, 2, 3]),
                },
                data: format!("state@{index}").into_bytes().into(),
            },
        },
    }
}

fn snapshot_answer(c: &Cluster, mark: usize) -> u64 {
    let out = c.sent_since(mark, |_| true);
    assert_eq!(out.len(), 1, "{out:?}");
    match out[0].body {
        MessageBody::InstallSnapshotResponse { match_index, .. } => match_index,
        ref b => panic!("expected an InstallSnapshotResponse, got {b:?}"),
    }
}

/// §7: once the leader compacted the entries a lagging follower needs, it sends InstallSnapshot;
/// the follower's Ready carries the snapshot (persisted, state machine restored), it reaches the
/// leader's commit, survives a restart, and then replicates normal entries again.
#[test]
fn s7_lagging_follower_receives_install_snapshot_then_normal_entries() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.heartbeat(1);
    c.isolate(3);
    for i in 0..10u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.deliver_all();
    c.heartbeat(1);
    let commit = c.raft(1).commit_index();
    assert_eq!(commit, 11);
    assert_eq!(c.node(1).applied_index, commit);
    c.compact(1, commit, b"state@11");
    let t = c.raft(1).term();
    assert_eq!(c.raft(1).snapshot_meta().last_index, 11);
    assert!(
        c.raft(1).entry(5).is_none(),
        "compacted entries still in the log"
    );
    assert_eq!(c.node(1).storage.snapshot_index(), 11);

    c.heal();
    let mark = c.sent.len();
    for _ in 0..20 {
        if c.raft(3).commit_index() == commit {
            break;
        }
        c.heartbeat(1);
    }
    let installs = c.sent_since(mark, |m| {
        m.to == 3 && matches!(m.body, MessageBody::InstallSnapshot { .. })
    });
    assert_eq!(installs.len(), 1, "expected one InstallSnapshot");
    let n3 = c.node(3);
    assert_eq!(
        n3.snapshots.len(),
        1,
        "follower's Ready did not carry the snapshot"
    );
    let s = &n3.snapshots[0];
    assert_eq!((s.meta.last_index, s.meta.last_term), (11, t));
    assert_eq!(
        s.meta.membership,
        dmq_raft::Membership::from_voters([1, 2, 3])
    );
    assert_eq!(s.data, b"state@11".to_vec());
    assert_eq!(n3.storage.snapshot_index(), 11);
    assert_eq!(n3.raft.commit_index(), commit);
    assert_eq!(n3.applied_index, 11);
    assert!(
        n3.applied.iter().all(|e| e.index <= 1),
        "compacted entries were applied one by one"
    );
    assert_eq!(c.raft(1).match_indexes()[&3], 11);

    // Normal replication resumes after the snapshot.
    for i in 0..3u8 {
        c.propose(1, &[100 + i]).unwrap();
    }
    c.deliver_all();
    c.heartbeat(1);
    assert_eq!(c.log_of(3), c.log_of(1));
    assert_eq!(c.raft(3).commit_index(), 14);
    let tail: Vec<_> = c.node(3).applied.iter().map(|e| e.index).collect();
    assert_eq!(tail, vec![1, 12, 13, 14]);

    // The follower's storage holds the snapshot and the entries after it: a restart keeps both.
    c.restart(3);
    assert_eq!(c.raft(3).snapshot_meta().last_index, 11);
    assert_eq!(c.raft(3).last_index(), 14);
    assert_eq!(c.raft(3).commit_index(), 14);
    c.propose(1, b"after-restart").unwrap();
    c.deliver_all();
    c.heartbeat(1);
    assert_eq!(
        c.applied_data(3).last().unwrap(),
        &b"after-restart".to_vec()
    );
}

/// §7: a snapshot whose last entry the follower already holds (same index and term) keeps the
/// log after it and only moves the commit; one at or below the commit changes nothing.
#[test]
fn s7_snapshot_covering_a_matching_prefix_keeps_the_log() {
    let rec = recovered(1, None, 5, ents(&run(1, 10, 1)));
    let mut c = Cluster::build(vec![1, 2, 3], vec![(config(1, &[1, 2, 3]), rec)]);
    c.drain(1);
    let mark = c.sent.len();
    c.inject(install(2, 1, 1, 8, 1));
    assert_eq!(snapshot_answer(&c, mark), 8);
    assert!(
        c.node(1).snapshots.is_empty(),
        "a needless snapshot restore"
    );
    assert_eq!(c.raft(1).last_index(), 10);
    assert_eq!(c.raft(1).commit_index(), 8);
    assert_eq!(c.node(1).applied_index, 8);

    let mark = c.sent.len();
    c.inject(install(2, 1, 1, 6, 1));
    assert_eq!(
        snapshot_answer(&c, mark),
        8,
        "an old snapshot answers with the commit"
    );
    assert_eq!(c.raft(1).last_index(), 10);
    assert!(c.node(1).snapshots.is_empty());
}

/// §7: a snapshot that the follower's log does not contain replaces the whole log (a
/// conflicting uncommitted suffix included), in memory and in storage; appends then continue
/// after it.
#[test]
fn s7_snapshot_replaces_a_conflicting_log() {
    let rec = recovered(
        2,
        None,
        1,
        ents(&[(1, 1), (2, 1), (3, 2), (4, 2), (5, 2), (6, 2)]),
    );
    let mut c = Cluster::build(vec![1, 2, 3], vec![(config(1, &[1, 2, 3]), rec)]);
    c.drain(1);
    let mark = c.sent.len();
    c.inject(install(2, 1, 3, 5, 3));
    assert_eq!(snapshot_answer(&c, mark), 5);
    assert_eq!(c.node(1).snapshots.len(), 1);
    let r = c.raft(1);
    assert_eq!(
        (r.snapshot_meta().last_index, r.snapshot_meta().last_term),
        (5, 3)
    );
    assert_eq!((r.last_index(), r.last_term(), r.commit_index()), (5, 3, 5));
    assert_eq!(c.node(1).storage.snapshot_index(), 5);

    let mark = c.sent.len();
    c.inject(append(2, 1, 3, (5, 3), vec![ent(6, 3)], 6));
    let out = c.sent_since(mark, |_| true);
    assert!(matches!(
        out[0].body,
        MessageBody::AppendEntriesResponse {
            success: true,
            match_index: 6,
            ..
        }
    ));
    assert_eq!(c.raft(1).commit_index(), 6);
    assert_eq!(
        c.node(1).applied.last().map(|e| (e.index, e.term)),
        Some((6, 3))
    );
}

/// §7 and Figure 2 (persistent state): the snapshot a follower installs replaces its whole log
/// on disk as it did in memory, so a restart right after the install recovers the snapshot's
/// last entry as the last one, not an older term's stale suffix, and the node still refuses a
/// candidate that lacks the (committed) snapshot (§5.4.1).
#[test]
fn s7_received_snapshot_replaces_the_stored_log_across_restart() {
    let rec = recovered(
        2,
        None,
        1,
        ents(&[(1, 1), (2, 1), (3, 2), (4, 2), (5, 2), (6, 2), (7, 2)]),
    );
    let mut c = Cluster::build(vec![1, 2, 3], vec![(config(1, &[1, 2, 3]), rec)]);
    c.drain(1);
    c.inject(install(2, 1, 3, 5, 3));
    assert_eq!(
        (c.raft(1).last_index(), c.raft(1).last_term()),
        (5, 3),
        "in memory"
    );
    let stored = c.node(1).storage.recover().unwrap().entries;
    assert!(
        stored.is_empty(),
        "stale entries kept on disk after the snapshot: {stored:?}"
    );

    c.restart(1);
    let r = c.raft(1);
    assert_eq!(
        (r.last_index(), r.last_term()),
        (5, 3),
        "recovered log differs from the installed one"
    );
    // A candidate with the stale term-2 suffix lacks the committed 5@3: it must be refused.
    let mark = c.sent.len();
    c.inject(vote_req(3, 1, 4, (7, 2), false));
    let out = c.sent_since(mark, |m| m.to == 3);
    assert!(
        is_refusal(&out[0], false),
        "voted for a candidate missing committed entry 5@3"
    );
}

/// §7, issue 13 item 1: one InstallSnapshot transfer per follower at a time. While a transfer
/// is under way (its message or answer may take long with a big snapshot) the leader sends no
/// second one, however many heartbeats and election timeouts pass; only a failure reported by
/// the transport starts another, after a pause of the minimum election timeout.
#[test]
fn s7_one_snapshot_transfer_at_a_time_until_the_transport_reports_its_end() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for i in 0..10u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.deliver_all();
    c.heartbeat(1);
    let commit = c.raft(1).commit_index();
    c.compact(1, commit, b"state");
    c.heal();
    // The transfer never arrives (a slow link): every InstallSnapshot is held.
    c.filter = Some(Box::new(|m| {
        if matches!(m.body, MessageBody::InstallSnapshot { .. }) {
            Verdict::Hold
        } else {
            Verdict::Deliver
        }
    }));
    let installs = |c: &Cluster| {
        c.sent
            .iter()
            .filter(|m| m.to == 3 && matches!(m.body, MessageBody::InstallSnapshot { .. }))
            .count()
    };
    let min = c.raft(1).config().election_timeout_min_ticks as usize;
    for _ in 0..10 * min {
        c.heartbeat(1);
    }
    assert_eq!(
        installs(&c),
        1,
        "a second transfer started while one was under way"
    );
    assert_eq!(c.raft(1).role(), dmq_raft::Role::Leader);
    // The transport gives up on it: another transfer, but not at once.
    c.node_mut(1).raft.report_snapshot(3, commit, false);
    c.heartbeat(1);
    assert_eq!(installs(&c), 1, "resent at once after a failure");
    for _ in 0..min {
        c.heartbeat(1);
    }
    assert_eq!(installs(&c), 2, "no new transfer after the retry pause");
    // A late failure report of an older transfer changes nothing; this one gets through.
    c.node_mut(1).raft.report_snapshot(3, commit - 1, false);
    c.filter = None;
    c.release_held();
    c.deliver_all();
    c.heartbeat(1);
    assert_eq!(c.raft(3).commit_index(), commit);
    assert_eq!(installs(&c), 2);
}

/// §7: a heartbeat is anchored at the follower's match index, so where that entry is
/// compacted it can carry no commit index. Node 3's acknowledgments are held while node 1
/// commits with node 2 and compacts; only the first few arrive, so 3's match index stays in
/// the compacted part of the log (3 will need the snapshot). A heartbeat sent in answer to
/// each answer would then ping-pong with 3 without end (3 answers every heartbeat, which tells
/// it nothing new), one more exchange each time a slow transfer lets a heartbeat through.
#[test]
fn s7_no_heartbeat_per_answer_to_a_follower_whose_match_index_is_compacted() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"a").unwrap();
    c.deliver_all();
    c.heartbeat(1);
    c.filter = Some(Box::new(|m| {
        if m.from == 3 && m.to == 1 {
            Verdict::Hold
        } else {
            Verdict::Deliver
        }
    }));
    for i in 0..10u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.deliver_all();
    let commit = c.raft(1).commit_index();
    assert_eq!(commit, c.raft(1).last_index(), "committed with node 2");
    assert!(c.raft(3).commit_index() < commit);
    c.compact(1, commit, b"state");
    c.filter = None;
    c.held.truncate(3);
    c.release_held();
    let mark = c.sent.len();
    c.deliver_all(); // never goes quiet if every answer draws a heartbeat
    let to_3 = c.sent_since(mark, |m| m.to == 3).len();
    assert!(to_3 <= 10, "{to_3} messages to node 3 for 3 answers");
    assert!(c.raft(1).match_indexes()[&3] < commit);
    // The leader sees 3 make no progress for two heartbeats, probes and sends the snapshot.
    for _ in 0..3 {
        c.heartbeat(1);
    }
    assert_eq!(c.raft(3).commit_index(), commit, "node 3 gets the snapshot");
}
