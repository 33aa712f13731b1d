//! "No false failovers", as the benchmarks report it: how many partition leaderships moved and
//! how many controller elections happened while a benchmark ran. Both should be 0 on a healthy
//! cluster however hard it is loaded (issue 12).

use std::collections::BTreeMap;

use dmq_client::Admin;

use crate::local_cluster::controller_info;

/// Every partition's leader epoch, by (topic, partition).
pub type LeaderEpochs = BTreeMap<(String, u32), u64>;

/// The leader epochs of every partition the controllers know, or why not. Reads topics only
/// (ListTopics, paged): `bench meta` registers tens of thousands of brokers, which would make
/// one GetMetadata answer larger than a gRPC message may be.
pub async fn leader_epochs(admin: &Admin) -> Result<LeaderEpochs, String> {
    let topics = admin
        .list_topics()
        .await
        .map_err(|e| format!("cannot list the topics: {e}"))?;
    Ok(topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| ((t.name.clone(), p.partition), p.leader_epoch))
        })
        .collect())
}

/// Leader changes between two readings, over the partitions present in both (each change of
/// leader bumps the epoch by one).
pub fn leader_changes(before: &LeaderEpochs, after: &LeaderEpochs) -> u64 {
    before
        .iter()
        .filter_map(|(k, b)| after.get(k).map(|a| a.saturating_sub(*b)))
        .sum()
}

/// The highest Raft term any of `controllers` reports (unreachable ones are skipped).
pub async fn max_term(controllers: &[String]) -> u64 {
    let mut term = 0;
    for c in controllers {
        if let Some(info) = controller_info(c).await {
            term = term.max(info.term);
        }
    }
    term
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_count_epoch_steps_of_partitions_in_both_readings() {
        let reading = |v: &[(&str, u32, u64)]| -> LeaderEpochs {
            v.iter()
                .map(|(t, p, e)| ((t.to_string(), *p), *e))
                .collect()
        };
        let before = reading(&[("a", 0, 1), ("a", 1, 3), ("gone", 0, 1)]);
        let after = reading(&[("a", 0, 1), ("a", 1, 5), ("new", 0, 9)]);
        assert_eq!(leader_changes(&before, &after), 2);
        assert_eq!(leader_changes(&before, &before), 0);
    }
}
