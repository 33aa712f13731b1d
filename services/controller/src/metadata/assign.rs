//! Replica assignment for a new topic, chosen by the leader before it proposes `CreateTopic`
//! (apply must stay deterministic, so the choice travels in the command).
//!
//! The algorithm is Kafka's (`AdminUtils.assignReplicasToBrokers`): brokers are laid out in a
//! ring (alternating racks when racks are known); partition `p`'s first replica, its preferred
//! leader, is ring position `p + start`, so leaders go round-robin; the other replicas follow at
//! a distance that shifts after every full round, so the followers of one broker's partitions are
//! spread over the others instead of always being its ring neighbours.

use std::collections::{BTreeMap, BTreeSet};

/// Assigns `replication_factor` replicas to each of `partitions` partitions over
/// `online_brokers` (`(broker id, rack)`, rack empty when unknown). Returns one replica list per
/// partition, first replica first (the leader at creation).
///
/// - Leaders are balanced: each broker leads `partitions / brokers` partitions, rounded up or
///   down. Replicas in total are balanced the same way.
/// - Rack-aware when every broker names a rack: the replicas of a partition are on distinct racks
///   as far as there are racks, then on distinct brokers. With some racks unknown the racks are
///   ignored, since a broker without a rack could be in any of them.
/// - Deterministic: the result depends only on the arguments, not on the order of
///   `online_brokers`. `start_offset` rotates where the first leader lands (and the follower
///   shift); choose it so topics do not all start at the same broker, e.g. the topic count.
///
/// # Panics
/// If `replication_factor` is 0 or exceeds the brokers, or a broker id repeats: the caller
/// validates these first (`validate_create_topic`).
pub fn assign_replicas(
    partitions: u32,
    replication_factor: u32,
    online_brokers: &[(u64, String)],
    start_offset: u64,
) -> Vec<Vec<u64>> {
    let rf = replication_factor as usize;
    let ring = rack_alternated_ring(online_brokers);
    let n = ring.len();
    assert_eq!(
        n,
        online_brokers.len(),
        "broker ids repeat: {online_brokers:?}"
    );
    assert!(
        (1..=n).contains(&rf),
        "replication factor {rf} with {n} brokers: validate first"
    );
    let rack_count = ring
        .iter()
        .map(|(_, rack)| rack)
        .collect::<BTreeSet<_>>()
        .len();
    let start = (start_offset % n as u64) as usize;
    // Only the shift modulo n - 1 matters (it picks a distance 1..n-1 from the leader).
    let mut shift = if n > 1 {
        (start_offset % (n as u64 - 1)) as usize
    } else {
        0
    };

    let mut assignment = Vec::with_capacity(partitions as usize);
    for p in 0..partitions as usize {
        if p > 0 && p % n == 0 {
            shift = if n > 1 { (shift + 1) % (n - 1) } else { 0 };
        }
        let first = (p + start) % n;
        let mut replicas = vec![ring[first].0];
        let mut racks = BTreeSet::from([ring[first].1]);
        let mut k = 0;
        while replicas.len() < rf {
            // Visits every other ring position once per n - 1 steps; one of them is always
            // acceptable while replicas.len() < rf <= n.
            debug_assert!(k < rf * n, "no acceptable replica found");
            let candidate = (first + 1 + (shift * rack_count + k) % (n - 1)) % n;
            let (broker, rack) = ring[candidate];
            let rack_ok = !racks.contains(&rack) || racks.len() == rack_count;
            if rack_ok && !replicas.contains(&broker) {
                replicas.push(broker);
                racks.insert(rack);
            }
            k += 1;
        }
        assignment.push(replicas);
    }
    assignment
}

/// What a broker's rack is for placement: its rack name when every broker has one, otherwise
/// its own id (each broker alone in a "rack", which makes the rack rule a no-op).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RackKey<'a> {
    Named(&'a str),
    Alone(u64),
}

/// The brokers as a ring that alternates racks (racks in name order, brokers in id order within
/// a rack): `a1, b1, c1, a2, b2, ...`, so consecutive positions sit on different racks.
fn rack_alternated_ring(brokers: &[(u64, String)]) -> Vec<(u64, RackKey<'_>)> {
    let racks_known = brokers.iter().all(|(_, rack)| !rack.is_empty());
    let mut by_rack: BTreeMap<RackKey<'_>, BTreeSet<u64>> = BTreeMap::new();
    for (id, rack) in brokers {
        let key = if racks_known {
            RackKey::Named(rack)
        } else {
            RackKey::Alone(*id)
        };
        by_rack.entry(key).or_default().insert(*id);
    }
    if !racks_known {
        // Plain id order: one broker per "rack".
        return by_rack
            .into_iter()
            .map(|(key, ids)| (ids.into_iter().next().unwrap(), key))
            .collect();
    }
    let mut iters: Vec<_> = by_rack
        .into_iter()
        .map(|(key, ids)| (key, ids.into_iter()))
        .collect();
    let mut ring = Vec::with_capacity(brokers.len());
    while iters.iter().any(|(_, ids)| ids.len() > 0) {
        for (key, ids) in &mut iters {
            if let Some(id) = ids.next() {
                ring.push((id, *key));
            }
        }
    }
    ring
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn brokers(racks: &[&str]) -> Vec<(u64, String)> {
        racks
            .iter()
            .enumerate()
            .map(|(i, rack)| (i as u64 + 1, rack.to_string()))
            .collect()
    }

    fn counts(ids: impl IntoIterator<Item = u64>) -> HashMap<u64, usize> {
        let mut counts = HashMap::new();
        for id in ids {
            *counts.entry(id).or_default() += 1;
        }
        counts
    }

    fn assert_well_formed(assignment: &[Vec<u64>], partitions: u32, rf: u32) {
        assert_eq!(assignment.len(), partitions as usize);
        for replicas in assignment {
            assert_eq!(replicas.len(), rf as usize);
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), replicas.len(), "{replicas:?}");
        }
    }

    #[test]
    fn leaders_and_replicas_are_balanced() {
        for (partitions, n, rf) in [(12, 4, 3), (10, 4, 2), (7, 3, 3), (100, 5, 3), (3, 1, 1)] {
            let online = brokers(&vec![""; n]);
            for start in [0, 1, 7] {
                let assignment = assign_replicas(partitions, rf, &online, start);
                assert_well_formed(&assignment, partitions, rf);
                let leaders = counts(assignment.iter().map(|r| r[0]));
                let (lo, hi) = (partitions as usize / n, (partitions as usize).div_ceil(n));
                assert_eq!(leaders.values().sum::<usize>(), partitions as usize);
                for id in 1..=n as u64 {
                    let led = leaders.get(&id).copied().unwrap_or(0);
                    assert!(
                        (lo..=hi).contains(&led),
                        "broker {id} leads {led}: {assignment:?}"
                    );
                }
                let replicas = counts(assignment.iter().flatten().copied());
                let total = partitions as usize * rf as usize;
                for id in 1..=n as u64 {
                    let held = replicas.get(&id).copied().unwrap_or(0);
                    assert!(
                        held.abs_diff(total / n) <= rf as usize,
                        "broker {id} holds {held} of {total}: {assignment:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn start_offset_rotates_the_first_leader() {
        let online = brokers(&["", "", ""]);
        let firsts: Vec<u64> = (0..3)
            .map(|start| assign_replicas(1, 1, &online, start)[0][0])
            .collect();
        assert_eq!(firsts, vec![1, 2, 3]);
    }

    #[test]
    fn followers_shift_after_each_round() {
        // Kafka's own example shape: with 5 brokers the second replica's distance from the
        // leader grows by one after every 5 partitions.
        let assignment = assign_replicas(10, 2, &brokers(&[""; 5]), 0);
        let distance = |r: &Vec<u64>| (r[1] + 5 - r[0]) % 5;
        assert!(
            assignment[..5].iter().all(|r| distance(r) == 1),
            "{assignment:?}"
        );
        assert!(
            assignment[5..].iter().all(|r| distance(r) == 2),
            "{assignment:?}"
        );
    }

    #[test]
    fn replicas_of_a_partition_spread_over_racks() {
        let online = brokers(&["a", "a", "b", "b", "c", "c"]);
        let rack_of: HashMap<u64, String> = online.iter().cloned().collect();
        for start in 0..6 {
            let assignment = assign_replicas(12, 3, &online, start);
            assert_well_formed(&assignment, 12, 3);
            for replicas in &assignment {
                let racks: BTreeSet<_> = replicas.iter().map(|id| &rack_of[id]).collect();
                assert_eq!(racks.len(), 3, "{replicas:?}");
            }
            let leaders = counts(assignment.iter().map(|r| r[0]));
            assert!(leaders.values().all(|&led| led == 2), "{leaders:?}");
        }
        // Uneven racks: two replicas always on two racks, a third where it fits.
        let online = brokers(&["a", "a", "a", "b"]);
        let rack_of: HashMap<u64, String> = online.iter().cloned().collect();
        for replicas in assign_replicas(8, 2, &online, 3) {
            assert_ne!(rack_of[&replicas[0]], rack_of[&replicas[1]], "{replicas:?}");
        }
        assert_well_formed(&assign_replicas(8, 4, &online, 1), 8, 4);
    }

    #[test]
    fn racks_are_ignored_unless_all_brokers_name_one() {
        let partial = brokers(&["a", "", "b"]);
        let none = brokers(&["", "", ""]);
        assert_eq!(
            assign_replicas(9, 2, &partial, 4),
            assign_replicas(9, 2, &none, 4)
        );
    }

    #[test]
    fn deterministic_whatever_the_input_order() {
        let online = brokers(&["x", "y", "x", "z", "y"]);
        let mut reversed = online.clone();
        reversed.reverse();
        assert_eq!(
            assign_replicas(20, 3, &online, 11),
            assign_replicas(20, 3, &reversed, 11)
        );
    }

    #[test]
    #[should_panic(expected = "validate first")]
    fn more_replicas_than_brokers_is_a_caller_bug() {
        assign_replicas(1, 3, &brokers(&["", ""]), 0);
    }
}
