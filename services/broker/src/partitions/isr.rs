//! The in-sync replica set, as the leader sees it: when a follower counts as caught up, when it
//! leaves the ISR and when it may join again (pure rules, Kafka's), and the `AlterPartition`
//! call that asks the controller for the change.
//!
//! - Caught up: a fetch at or past the leader's log end offset, or at or past the log end the
//!   leader had at the follower's previous fetch (under steady produce a follower never equals
//!   the moving end, but it reaches where the end was one round trip ago). The follower's
//!   `last_caught_up` moves to that fetch's time (or the previous fetch's time).
//! - Shrink: an ISR member (not the leader) whose `last_caught_up` is older than
//!   `replica_lag_time_max` leaves the ISR.
//! - Expand: a replica outside the ISR joins once it fetches in the current leader epoch with
//!   a log end at or past both the high watermark and the start of the leader's epoch (so it
//!   holds everything committed and truncated whatever the old epochs left behind), while the
//!   controllers list its current incarnation (broker epoch) ONLINE.

use std::collections::HashMap;
use std::time::Duration;

use dmq_client::discovery::{ControllerFailure, classify};
use dmq_proto::v1 as pb;
use tokio::time::Instant;
use tonic::Status;

use super::leader::{IsrOutcome, IsrRequest};
use crate::errors::error_info;
use crate::log::PartitionId;
use crate::state::Broker;

/// Calls of one ISR change (NOT_LEADER redirects and retries after an unreachable leader).
const ALTER_ATTEMPTS: u32 = 3;
/// Pause between two attempts that failed without a redirect.
const ALTER_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What the leader knows of one follower's fetching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The incarnation of the follower that fetched last (0: none yet).
    pub broker_epoch: u64,
    /// Its log end offset (durable on it), as its last valid fetch reported; `None` before one.
    pub leo: Option<u64>,
    pub last_fetch: Instant,
    /// The leader's log end offset when that fetch came.
    pub leader_leo_at_last_fetch: u64,
    pub last_caught_up: Instant,
}

impl Progress {
    /// A follower not heard from yet: counted as caught up `now` (when leadership started), so
    /// it has `replica_lag_time_max` to show up before it leaves the ISR.
    pub(crate) fn new(now: Instant) -> Progress {
        Progress {
            broker_epoch: 0,
            leo: None,
            last_fetch: now,
            leader_leo_at_last_fetch: 0,
            last_caught_up: now,
        }
    }

    /// Records a valid fetch at `fetch_offset` (its durable log end) when the leader's log
    /// ends at `leader_leo`.
    pub(crate) fn on_fetch(
        &mut self,
        broker_epoch: u64,
        fetch_offset: u64,
        leader_leo: u64,
        now: Instant,
    ) {
        if fetch_offset >= leader_leo {
            self.last_caught_up = now;
        } else if self.leo.is_some() && fetch_offset >= self.leader_leo_at_last_fetch {
            self.last_caught_up = self.last_caught_up.max(self.last_fetch);
        }
        self.broker_epoch = broker_epoch;
        self.leo = Some(fetch_offset);
        self.leader_leo_at_last_fetch = leader_leo;
        self.last_fetch = now;
    }
}

/// The ISR members (other than `me`) that have not caught up within `lag_max`. A member
/// without progress counts as lagging (it was never heard from and has no clock).
pub(crate) fn lagging(
    isr: &[u64],
    me: u64,
    followers: &HashMap<u64, Progress>,
    now: Instant,
    lag_max: Duration,
) -> Vec<u64> {
    isr.iter()
        .copied()
        .filter(|&r| r != me)
        .filter(|r| {
            followers
                .get(r)
                .is_none_or(|p| now.saturating_duration_since(p.last_caught_up) > lag_max)
        })
        .collect()
}

/// Whether a follower whose durable log ends at `leo` holds enough to join the ISR.
pub(crate) fn may_join(leo: u64, high_watermark: u64, epoch_start_offset: u64) -> bool {
    leo >= high_watermark && leo >= epoch_start_offset
}

/// `isr` plus `joining`, in replica order (how the controllers store it).
pub(crate) fn with_member(isr: &[u64], replicas: &[u64], joining: u64) -> Vec<u64> {
    replicas
        .iter()
        .copied()
        .filter(|r| *r == joining || isr.contains(r))
        .collect()
}

/// `isr` without `leaving`.
pub(crate) fn without(isr: &[u64], leaving: &[u64]) -> Vec<u64> {
    isr.iter()
        .copied()
        .filter(|r| !leaving.contains(r))
        .collect()
}

/// What an AlterPartition answer says became of the change (see [`IsrOutcome`]). Only a
/// refusal of the change itself (`INELIGIBLE_REPLICA`, `INVALID_ISR`), decided against the
/// controllers' state after every earlier attempt, proves nothing changed; a refusal because
/// the partition, its leader or this broker moved on leaves it to the metadata, and anything
/// unanswered may have committed.
pub(crate) fn outcome_of(answer: &Result<pb::AlterPartitionResponse, Status>) -> IsrOutcome {
    match answer {
        Ok(answer) => match &answer.partition {
            Some(p) => IsrOutcome::Committed {
                isr: p.isr.clone(),
                partition_epoch: p.partition_epoch,
            },
            None => IsrOutcome::Unknown,
        },
        Err(status) => match classify(status) {
            ControllerFailure::Refused => {
                let reason = error_info(status).map(|(r, _)| r).unwrap_or_default();
                match reason.as_str() {
                    "INELIGIBLE_REPLICA" | "INVALID_ISR" => IsrOutcome::Refused,
                    _ => IsrOutcome::Stale,
                }
            }
            ControllerFailure::NotLeader { .. } | ControllerFailure::Unavailable => {
                IsrOutcome::Unknown
            }
        },
    }
}

/// Asks the controller leader for `change` to the ISR of `id`, as the leader at
/// `leader_epoch`. Follows NOT_LEADER redirects and retries an unreachable leader, at most
/// [`ALTER_ATTEMPTS`] calls, each bounded by the broker's RPC timeout (discovery included).
///
/// Errors: the controller's refusal (stale epochs, ineligible replica, ...) or the last
/// failure; [`outcome_of`] reads them.
pub(crate) async fn alter_partition(
    broker: &Broker,
    id: &PartitionId,
    leader_epoch: u64,
    change: &IsrRequest,
) -> Result<pb::AlterPartitionResponse, Status> {
    let mut last = Status::unavailable("no attempt made");
    for attempt in 1..=ALTER_ATTEMPTS {
        let Ok(leader) =
            tokio::time::timeout(broker.cfg.rpc_timeout, broker.locator.leader()).await
        else {
            last = Status::unavailable("no controller leader found in time");
            continue;
        };
        let request = pb::AlterPartitionRequest {
            broker_id: broker.id(),
            broker_epoch: broker.session().epoch,
            topic: id.topic.clone(),
            partition: id.partition,
            leader_epoch,
            new_isr: change.new_isr.clone(),
            partition_epoch: change.partition_epoch,
        };
        match broker.calls.alter_partition(&leader.address, request).await {
            Ok(answer) => return Ok(answer),
            Err(status) => {
                match classify(&status) {
                    ControllerFailure::NotLeader { hint } => broker.locator.on_not_leader(hint),
                    ControllerFailure::Unavailable if attempt < ALTER_ATTEMPTS => {
                        tokio::time::sleep(ALTER_RETRY_PAUSE).await
                    }
                    ControllerFailure::Unavailable => {}
                    ControllerFailure::Refused => return Err(status),
                }
                last = status;
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_secs(10);

    #[test]
    fn a_follower_is_caught_up_when_it_reaches_the_end_it_was_shown() {
        let t0 = Instant::now();
        let mut p = Progress::new(t0);
        // Reaches the end exactly.
        p.on_fetch(5, 100, 100, t0 + Duration::from_secs(1));
        assert_eq!(p.last_caught_up, t0 + Duration::from_secs(1));
        // Under load: behind the moving end, but at the end of the previous fetch (100).
        p.on_fetch(5, 100, 150, t0 + Duration::from_secs(2));
        p.on_fetch(5, 150, 200, t0 + Duration::from_secs(3));
        assert_eq!(p.last_caught_up, t0 + Duration::from_secs(2));
        // Falling behind (160 < 200, the end it was shown): the clock stops.
        p.on_fetch(5, 160, 300, t0 + Duration::from_secs(4));
        assert_eq!(p.last_caught_up, t0 + Duration::from_secs(2));
        p.on_fetch(5, 170, 400, t0 + Duration::from_secs(5));
        assert_eq!(p.last_caught_up, t0 + Duration::from_secs(2));
        assert_eq!(p.leo, Some(170));
    }

    #[test]
    fn the_isr_shrinks_by_lagging_followers_only() {
        let t0 = Instant::now();
        let mut followers = HashMap::new();
        followers.insert(2, Progress::new(t0));
        followers.insert(3, Progress::new(t0));
        let isr = [1, 2, 3];
        assert!(lagging(&isr, 1, &followers, t0 + LAG, LAG).is_empty());
        followers
            .get_mut(&2)
            .unwrap()
            .on_fetch(1, 10, 10, t0 + Duration::from_secs(8));
        let late = t0 + LAG + Duration::from_millis(1);
        assert_eq!(lagging(&isr, 1, &followers, late, LAG), vec![3]);
        // Never heard of: lagging. The leader itself: never.
        assert_eq!(lagging(&[1, 4], 1, &followers, t0, LAG), vec![4]);
        assert_eq!(without(&isr, &[3]), vec![1, 2]);
    }

    #[test]
    fn a_follower_joins_only_with_everything_committed_and_the_epoch_start() {
        assert!(may_join(100, 100, 90));
        assert!(!may_join(99, 100, 90), "below the high watermark");
        assert!(!may_join(100, 80, 120), "before the leader's epoch starts");
        assert_eq!(with_member(&[3, 1], &[1, 2, 3], 2), vec![1, 2, 3]);
        assert_eq!(with_member(&[1], &[3, 2, 1], 3), vec![3, 1]);
    }
}
