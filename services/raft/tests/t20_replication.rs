//! Log replication (Raft §5.3): consistency check with conflict hints, truncation of
//! conflicting suffixes, the pipelining window and batching limits.

mod common;

use common::*;
use dmq_raft::{ConflictHint, Entry, Message, MessageBody, Storage};

fn solo(id: u64, rec: dmq_raft::RecoveredState) -> Cluster {
    Cluster::build(vec![1, 2, 3], vec![(config(id, &[1, 2, 3]), rec)])
}

fn only_answer(c: &Cluster, mark: usize) -> Message {
    let out = c.sent_since(mark, |_| true);
    assert_eq!(out.len(), 1, "expected one answer, got {out:?}");
    out[0].clone()
}

fn rejection(m: &Message) -> (u64, ConflictHint) {
    match m.body {
        MessageBody::AppendEntriesResponse {
            success: false,
            rejected_index,
            conflict: Some(h),
            ..
        } => (rejected_index, h),
        ref b => panic!("expected a rejection with a hint, got {b:?}"),
    }
}

fn success(m: &Message) -> u64 {
    match m.body {
        MessageBody::AppendEntriesResponse {
            success: true,
            match_index,
            ..
        } => match_index,
        ref b => panic!("expected a success, got {b:?}"),
    }
}

/// §5.3: an AppendEntries whose prev index/term does not match is rejected with a hint: the
/// follower's term at prev and the first index it holds for that term, or (term 0, last + 1)
/// when its log is too short. The log is left alone.
#[test]
fn s5_3_prev_mismatch_rejected_with_conflict_hint() {
    let log = ents(&[(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]);
    let mut c = solo(1, recovered(2, None, 2, log));
    let before = c.log_of(1);

    let mark = c.sent.len();
    c.inject(append(2, 1, 3, (5, 3), vec![ent(6, 3)], 2));
    let m = only_answer(&c, mark);
    assert_eq!((m.to, m.term), (2, 3));
    assert_eq!(
        rejection(&m),
        (
            5,
            ConflictHint {
                term: 2,
                first_index: 3
            }
        )
    );

    let mark = c.sent.len();
    c.inject(append(2, 1, 3, (4, 3), vec![], 2));
    assert_eq!(
        rejection(&only_answer(&c, mark)),
        (
            4,
            ConflictHint {
                term: 2,
                first_index: 3
            }
        )
    );

    let mark = c.sent.len();
    c.inject(append(2, 1, 3, (8, 3), vec![], 2));
    assert_eq!(
        rejection(&only_answer(&c, mark)),
        (
            8,
            ConflictHint {
                term: 0,
                first_index: 6
            }
        )
    );

    assert_eq!(c.log_of(1), before, "a rejected append changed the log");
    assert_eq!(c.raft(1).commit_index(), 2);
}

/// §5.3: a conflicting suffix is deleted and replaced (in memory and in storage); a delayed
/// duplicate of an earlier append deletes nothing; overlapping appends only add what is new.
#[test]
fn s5_3_conflicting_suffix_truncated() {
    let log = ents(&[(1, 1), (2, 1), (3, 2), (4, 2)]);
    let mut c = solo(1, recovered(2, None, 1, log));

    let mark = c.sent.len();
    c.inject(append(2, 1, 3, (2, 1), vec![ent(3, 3)], 1));
    assert_eq!(success(&only_answer(&c, mark)), 3);
    assert_eq!(c.log_of(1), vec![(1, 1), (2, 1), (3, 3)]);
    let st = &c.node(1).storage;
    assert_eq!(st.entry(3).map(|e| e.term), Some(3));
    assert!(st.entry(4).is_none(), "stale entry 4 survived in storage");
    assert_eq!(
        st.recover().unwrap().entries,
        ents(&[(1, 1), (2, 1), (3, 3)])
    );

    // A late duplicate of an append that carried entry 2: entry 3 must stay.
    let mark = c.sent.len();
    c.inject(append(2, 1, 3, (1, 1), vec![ent(2, 1)], 1));
    assert_eq!(success(&only_answer(&c, mark)), 2);
    assert_eq!(c.log_of(1), vec![(1, 1), (2, 1), (3, 3)]);

    // An overlapping append adds the new tail only.
    let mark = c.sent.len();
    c.inject(append(2, 1, 3, (1, 1), ents(&[(2, 1), (3, 3), (4, 3)]), 4));
    assert_eq!(success(&only_answer(&c, mark)), 4);
    assert_eq!(c.log_of(1), vec![(1, 1), (2, 1), (3, 3), (4, 3)]);
    assert_eq!(c.raft(1).commit_index(), 4);
    let applied: Vec<_> = c
        .node(1)
        .applied
        .iter()
        .map(|e| (e.index, e.term))
        .collect();
    assert_eq!(applied, vec![(1, 1), (2, 1), (3, 3), (4, 3)]);
}

/// Builds nodes 1 and 2 with `leader_log`, node 3 with `follower_log`, all with commit 1; node
/// 1 is elected. Returns the cluster and how many rejections node 3 sent meanwhile.
fn catch_up(leader_log: Vec<Entry>, follower_log: Vec<Entry>) -> (Cluster, usize, usize) {
    let voters = vec![1, 2, 3];
    let lt = leader_log.last().unwrap().term;
    let specs = vec![
        (
            config(1, &voters),
            recovered(lt, None, 1, leader_log.clone()),
        ),
        (config(2, &voters), recovered(lt, None, 1, leader_log)),
        (config(3, &voters), recovered(lt, None, 1, follower_log)),
    ];
    let mut c = Cluster::build(voters, specs);
    c.elect(1);
    c.heartbeat(1);
    let rejections = c.sent_since(0, |m| m.from == 3 && is_rejection(m)).len();
    let appends = c
        .sent_since(0, |m| m.to == 3 && is_append_with_entries(m))
        .len();
    assert_eq!(c.log_of(3), c.log_of(1), "follower did not converge");
    (c, rejections, appends)
}

/// §5.3 (the optimisation at the end of the section): the leader skips back a whole term per
/// rejection, so a follower with a long divergent suffix of one old term is repaired in O(1)
/// round trips, not one per entry. Case 1: the leader never had that term.
#[test]
fn s5_3_leader_skips_a_whole_term_per_rejection_term_unknown_to_leader() {
    let mut leader = vec![(1, 1)];
    leader.extend(run(2, 5, 3));
    let mut follower = vec![(1, 1)];
    follower.extend(run(2, 101, 2));
    let (c, rejections, appends) = catch_up(ents(&leader), ents(&follower));
    assert!(
        rejections <= 2,
        "{rejections} rejections for a 100-entry divergent suffix"
    );
    assert!(appends <= 4, "{appends} appends");
    assert_eq!(c.raft(3).last_index(), 6);
}

/// §5.3: case 2, the leader holds a prefix of the follower's old term: it resumes right after
/// its own last entry of that term.
#[test]
fn s5_3_leader_skips_a_whole_term_per_rejection_term_known_to_leader() {
    let mut leader = vec![(1, 1)];
    leader.extend(run(2, 10, 2));
    leader.extend(run(11, 15, 3));
    let mut follower = vec![(1, 1)];
    follower.extend(run(2, 101, 2));
    let (c, rejections, appends) = catch_up(ents(&leader), ents(&follower));
    assert!(rejections <= 2, "{rejections} rejections");
    assert!(appends <= 4, "{appends} appends");
    assert_eq!(c.raft(3).term_at(10), Some(2));
    assert_eq!(c.raft(3).term_at(11), Some(3));
}

/// §5.3: case 3, the follower's log is much shorter: the hint (term 0, last + 1) sends the
/// leader straight to the end of the follower's log.
#[test]
fn s5_3_short_follower_log_skips_to_its_end() {
    let mut leader = vec![(1, 1)];
    leader.extend(run(2, 60, 2));
    let (_c, rejections, appends) = catch_up(ents(&leader), ents(&[(1, 1)]));
    assert!(rejections <= 1, "{rejections} rejections");
    assert!(appends <= 3, "{appends} appends");
}

/// §5.3 pipelining: with a follower's answers withheld, the leader keeps at most
/// max_inflight_appends appends outstanding to it; once answers arrive, it streams (batched)
/// the rest.
#[test]
fn s5_3_inflight_window_is_bounded() {
    const WINDOW: usize = 3;
    let mut c = Cluster::new_with(3, |cfg| cfg.max_inflight_appends = WINDOW);
    c.elect(1);
    c.heartbeat(1);
    c.filter = Some(Box::new(|m: &Message| {
        if m.from == 2 && m.to == 1 {
            Verdict::Hold
        } else {
            Verdict::Deliver
        }
    }));
    let mark = c.sent.len();
    for i in 0..10u8 {
        c.propose(1, &[i]).unwrap();
        c.deliver_all();
        let out = c
            .sent_since(mark, |m| m.to == 2 && is_append_with_entries(m))
            .len();
        assert!(
            out <= WINDOW,
            "{out} appends outstanding to node 2 (window {WINDOW})"
        );
    }
    assert_eq!(
        c.sent_since(mark, |m| m.to == 2 && is_append_with_entries(m))
            .len(),
        WINDOW,
        "window not used"
    );
    // Node 3 answers, so everything commits meanwhile.
    assert_eq!(c.raft(1).commit_index(), c.raft(1).last_index());
    assert!(c.raft(2).last_index() < c.raft(1).last_index());

    c.filter = None;
    let mark2 = c.sent.len();
    c.release_held();
    c.deliver_all();
    assert_eq!(c.log_of(2), c.log_of(1));
    let later = c.sent_since(mark2, |m| m.to == 2 && is_append_with_entries(m));
    assert!(
        later.len() <= 2,
        "catch-up not batched: {} appends",
        later.len()
    );
}

/// §5.3 batching: every AppendEntries carries at most max_append_bytes of entries
/// (Entry::size_bytes), unless it carries a single entry.
#[test]
fn s5_3_append_bytes_are_bounded() {
    const MAX: usize = 200;
    let mut c = Cluster::new_with(3, |cfg| cfg.max_append_bytes = MAX);
    c.elect(1);
    c.heartbeat(1);
    c.isolate(3);
    for i in 0..20u8 {
        c.propose(1, &[i; 50]).unwrap();
        if i == 10 {
            c.propose(1, &[0xEE; 500]).unwrap();
        }
    }
    c.deliver_all();
    c.heal();
    for _ in 0..50 {
        if c.log_of(3) == c.log_of(1) {
            break;
        }
        c.heartbeat(1);
    }
    assert_eq!(c.log_of(3), c.log_of(1), "node 3 never caught up");
    let mut multi = 0;
    for m in &c.sent {
        if let MessageBody::AppendEntries { entries, .. } = &m.body {
            let bytes: usize = entries.iter().map(Entry::size_bytes).sum();
            assert!(
                entries.len() <= 1 || bytes <= MAX,
                "{} entries, {bytes} bytes to {}",
                entries.len(),
                m.to
            );
            if entries.len() > 1 {
                multi += 1;
            }
        }
    }
    assert!(
        multi > 0,
        "no message batched several entries: the bound was never exercised"
    );
}
