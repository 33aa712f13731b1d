//! [`Leader`]: this broker leads a partition at one leader epoch. It tracks each follower's
//! durable log end (reported by its fetches), moves the high watermark, decides ISR changes, and
//! answers a follower's divergence check ([`divergence`], KIP-320).
//!
//! High watermark rule ([`high_watermark`]): the minimum, over the ISR, of each member's
//! durable log end — the leader's own counts only what its syncs covered, a follower's is the
//! `fetch_offset` of its last valid fetch (it syncs before fetching again). A member never heard
//! from in this epoch holds the high watermark where it is. The high watermark never moves back.
//! While an expansion is pending the joining replica counts too (Kafka's "maximal ISR"), so a
//! replica the controller adds never misses a committed offset; a pending shrink counts the old,
//! larger ISR until the controller has committed it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::isr::{self, Progress};
use crate::log::PartitionId;

/// After a refused or failed ISR change, no other is asked for this long.
const ISR_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// The high watermark from the durable log ends: `current` if any ISR member's is unknown,
/// else the minimum of `synced_end` (the leader, `me`) and every other member's, never below
/// `current`.
pub(crate) fn high_watermark(
    current: u64,
    synced_end: u64,
    isr: &[u64],
    me: u64,
    leo_of: impl Fn(u64) -> Option<u64>,
) -> u64 {
    let mut hw = synced_end;
    for &r in isr.iter().filter(|&&r| r != me) {
        match leo_of(r) {
            Some(leo) => hw = hw.min(leo),
            None => return current,
        }
    }
    hw.max(current)
}

/// KIP-320 on the leader: a follower whose log ends at `fetch_offset` with its last batch in
/// `last_fetched_epoch` diverges unless the leader's log has that epoch lasting at least to
/// `fetch_offset`. `end_for_epoch` is the leader's `end_offset_for_epoch(last_fetched_epoch)`.
/// Returns the `(epoch, end_offset)` to answer: the follower truncates to at most `end_offset`.
/// An epoch the leader does not know (newer than its history) answers its latest epoch and
/// log end.
pub(crate) fn divergence(
    end_for_epoch: Option<(u64, u64)>,
    last_fetched_epoch: u64,
    fetch_offset: u64,
    latest_epoch: Option<u64>,
    log_end: u64,
) -> Option<(u64, u64)> {
    match end_for_epoch {
        Some((epoch, end)) if epoch == last_fetched_epoch && end >= fetch_offset => None,
        Some((epoch, end)) => Some((epoch, end)),
        None => Some((latest_epoch.unwrap_or(0), log_end)),
    }
}

/// What kind of ISR change is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IsrChange {
    Shrink,
    Expand,
}

impl IsrChange {
    pub(crate) fn label(self) -> &'static str {
        match self {
            IsrChange::Shrink => "shrink",
            IsrChange::Expand => "expand",
        }
    }
}

#[derive(Debug)]
struct Pending {
    isr: Vec<u64>,
    kind: IsrChange,
}

#[derive(Debug)]
struct State {
    closed: bool,
    replicas: Vec<u64>,
    /// The ISR as the controllers committed it.
    isr: Vec<u64>,
    /// The metadata version `isr` is from: older snapshots do not overwrite it.
    isr_version: u64,
    pending: Option<Pending>,
    /// No new ISR change before this (after a failed one).
    quiet_until: Option<Instant>,
    followers: HashMap<u64, Progress>,
    /// The leader's own log end covered by a sync.
    synced_end: u64,
}

/// What a replica fetch changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FetchEffects {
    /// An ISR expansion to ask the controller for (now pending).
    pub expand: Option<Vec<u64>>,
}

/// This broker's leadership of one partition at one epoch.
///
/// # To ensure correctness
/// - Only the manager creates a `Leader` (after recording the epoch in the log and syncing it)
///   and [`close`](Leader::close)s it before the partition takes any other role; a closed
///   leader never moves the high watermark again, and callers holding it must answer
///   NOT_LEADER rather than acknowledge.
/// - The high watermark (the partition's `hw` watch) is moved only here, under the state lock,
///   and only up: see the module rule. Report the leader's own log end only after a sync that
///   covers it ([`on_synced`](Leader::on_synced)); report a follower's only from a fetch in
///   this epoch that passed the divergence check ([`on_replica_fetch`](Leader::on_replica_fetch)).
/// - At most one ISR change is in flight; its outcome must be reported
///   ([`isr_change_done`](Leader::isr_change_done)) whatever it is.
/// - The committed ISR only changes from the controllers' answers: an AlterPartition reply, or
///   metadata at least as new as the last one applied.
#[derive(Debug)]
pub(crate) struct Leader {
    pub id: PartitionId,
    pub epoch: u64,
    /// Where this epoch starts in the log (its first offset).
    pub epoch_start_offset: u64,
    me: u64,
    hw: watch::Sender<u64>,
    /// Bumped when the ISR changes or the leader closes (acks=ALL waiters re-check).
    changes: watch::Sender<u64>,
    state: Mutex<State>,
}

/// The arguments of [`Leader::new`].
pub(crate) struct LeaderInit {
    pub id: PartitionId,
    pub me: u64,
    pub epoch: u64,
    pub epoch_start_offset: u64,
    pub replicas: Vec<u64>,
    pub isr: Vec<u64>,
    pub isr_version: u64,
    /// The log end offset, covered by a sync.
    pub synced_end: u64,
}

impl Leader {
    /// Leadership starting `now`: every follower counts as caught up now, with an unknown
    /// log end. Moves the high watermark at once if the ISR is this broker alone.
    pub(crate) fn new(
        init: LeaderInit,
        hw: watch::Sender<u64>,
        changes: watch::Sender<u64>,
        now: Instant,
    ) -> Leader {
        let followers = init
            .replicas
            .iter()
            .filter(|&&r| r != init.me)
            .map(|&r| (r, Progress::new(now)))
            .collect();
        let leader = Leader {
            id: init.id,
            epoch: init.epoch,
            epoch_start_offset: init.epoch_start_offset,
            me: init.me,
            hw,
            changes,
            state: Mutex::new(State {
                closed: false,
                replicas: init.replicas,
                isr: init.isr,
                isr_version: init.isr_version,
                pending: None,
                quiet_until: None,
                followers,
                synced_end: init.synced_end,
            }),
        };
        leader.advance_hw(&leader.lock());
        leader
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends this leadership (the partition takes another role): no more high watermark moves.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changes.send_modify(|c| *c += 1);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether it is closed, and the size of the committed ISR.
    pub(crate) fn status(&self) -> (bool, usize) {
        let state = self.lock();
        (state.closed, state.isr.len())
    }

    /// The committed ISR.
    pub(crate) fn isr(&self) -> Vec<u64> {
        self.lock().isr.clone()
    }

    pub(crate) fn replicas(&self) -> Vec<u64> {
        self.lock().replicas.clone()
    }

    /// The leader's own log end up to `end` is durable.
    pub(crate) fn on_synced(&self, end: u64) {
        let mut state = self.lock();
        if end > state.synced_end {
            state.synced_end = end;
            self.advance_hw(&state);
        }
    }

    /// A valid fetch (this epoch, no divergence) from replica `replica` (incarnation
    /// `broker_epoch`) whose durable log ends at `fetch_offset`, while the leader's log ends at
    /// `leader_leo`. `eligible`: the metadata lists that incarnation ONLINE. Moves the high
    /// watermark, and returns an ISR expansion to ask for when the replica may join.
    pub(crate) fn on_replica_fetch(
        &self,
        replica: u64,
        broker_epoch: u64,
        fetch_offset: u64,
        leader_leo: u64,
        eligible: bool,
        now: Instant,
    ) -> FetchEffects {
        let mut state = self.lock();
        if state.closed || replica == self.me || !state.replicas.contains(&replica) {
            return FetchEffects::default();
        }
        state
            .followers
            .entry(replica)
            .or_insert_with(|| Progress::new(now))
            .on_fetch(broker_epoch, fetch_offset, leader_leo, now);
        self.advance_hw(&state);
        let hw = *self.hw.borrow();
        let mut effects = FetchEffects::default();
        if eligible
            && !state.isr.contains(&replica)
            && self.may_change(&state, now)
            && isr::may_join(fetch_offset, hw, self.epoch_start_offset)
        {
            let new_isr = isr::with_member(&state.isr, &state.replicas, replica);
            state.pending = Some(Pending {
                isr: new_isr.clone(),
                kind: IsrChange::Expand,
            });
            effects.expand = Some(new_isr);
        }
        effects
    }

    /// An ISR shrink to ask for: the members that lagged longer than `lag_max`, if any (then
    /// pending).
    pub(crate) fn shrink_check(&self, now: Instant, lag_max: Duration) -> Option<Vec<u64>> {
        let mut state = self.lock();
        if !self.may_change(&state, now) {
            return None;
        }
        let laggards = isr::lagging(&state.isr, self.me, &state.followers, now, lag_max);
        if laggards.is_empty() {
            return None;
        }
        let new_isr = isr::without(&state.isr, &laggards);
        state.pending = Some(Pending {
            isr: new_isr.clone(),
            kind: IsrChange::Shrink,
        });
        Some(new_isr)
    }

    fn may_change(&self, state: &State, now: Instant) -> bool {
        !state.closed && state.pending.is_none() && state.quiet_until.is_none_or(|t| now >= t)
    }

    /// The outcome of the pending ISR change: the ISR the controllers committed and the
    /// metadata version it is at, or `None` when it failed (no new change for a moment).
    pub(crate) fn isr_change_done(&self, committed: Option<(Vec<u64>, u64)>, now: Instant) {
        let mut state = self.lock();
        state.pending = None;
        match committed {
            Some((isr, version)) => self.set_isr(&mut state, isr, version),
            None => {
                state.quiet_until = Some(now + ISR_RETRY_BACKOFF);
                self.advance_hw(&state);
            }
        }
    }

    /// The kind of the pending change, if any.
    #[cfg(test)]
    pub(crate) fn pending_change(&self) -> Option<IsrChange> {
        self.lock().pending.as_ref().map(|p| p.kind)
    }

    /// Metadata at `version` lists these replicas and ISR for the partition (same leader and
    /// epoch). An ISR older than the one held is ignored.
    pub(crate) fn apply_metadata(&self, replicas: &[u64], isr: &[u64], version: u64, now: Instant) {
        let mut state = self.lock();
        if state.replicas != replicas {
            state.replicas = replicas.to_vec();
            for &r in replicas.iter().filter(|&&r| r != self.me) {
                state
                    .followers
                    .entry(r)
                    .or_insert_with(|| Progress::new(now));
            }
        }
        self.set_isr(&mut state, isr.to_vec(), version);
    }

    /// Takes the ISR the controllers committed at metadata `version`, unless one at least as
    /// new is held (an AlterPartition answer may arrive after newer metadata).
    fn set_isr(&self, state: &mut State, isr: Vec<u64>, version: u64) {
        if version < state.isr_version {
            self.advance_hw(state);
            return;
        }
        state.isr_version = version;
        if state.isr != isr {
            tracing::info!(topic = %self.id.topic, partition = self.id.partition,
                epoch = self.epoch, old = ?state.isr, new = ?isr, "ISR changed");
            state.isr = isr;
            self.changes.send_modify(|c| *c += 1);
        }
        self.advance_hw(state);
    }

    /// The ISR the high watermark counts: the committed one plus a pending expansion's member.
    fn hw_isr(state: &State) -> Vec<u64> {
        let mut isr = state.isr.clone();
        if let Some(Pending {
            isr: pending,
            kind: IsrChange::Expand,
        }) = &state.pending
        {
            isr.extend(pending.iter().filter(|r| !state.isr.contains(r)));
        }
        isr
    }

    fn advance_hw(&self, state: &State) {
        if state.closed {
            return;
        }
        let isr = Self::hw_isr(state);
        let leo_of = |r: u64| state.followers.get(&r).and_then(|p| p.leo);
        self.hw.send_if_modified(|current| {
            let hw = high_watermark(*current, state.synced_end, &isr, self.me, leo_of);
            if hw > *current {
                *current = hw;
                true
            } else {
                false
            }
        });
    }

    /// Follower progress (tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn progress(&self, replica: u64) -> Option<Progress> {
        self.lock().followers.get(&replica).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(isr: &[u64], synced_end: u64, hw: u64) -> (Leader, watch::Receiver<u64>) {
        let (hw_tx, hw_rx) = watch::channel(hw);
        let (changes, _) = watch::channel(0);
        let leader = Leader::new(
            LeaderInit {
                id: PartitionId::new("t", 1, 0),
                me: 1,
                epoch: 3,
                epoch_start_offset: 10,
                replicas: vec![1, 2, 3],
                isr: isr.to_vec(),
                isr_version: 5,
                synced_end,
            },
            hw_tx,
            changes,
            Instant::now(),
        );
        (leader, hw_rx)
    }

    #[test]
    fn hw_is_the_minimum_durable_end_over_the_isr() {
        let leo = |m: &[(u64, u64)]| {
            let m: HashMap<u64, u64> = m.iter().copied().collect();
            move |r: u64| m.get(&r).copied()
        };
        assert_eq!(
            high_watermark(5, 20, &[1, 2, 3], 1, leo(&[(2, 15), (3, 12)])),
            12
        );
        // The leader's unsynced records do not count.
        assert_eq!(
            high_watermark(5, 8, &[1, 2, 3], 1, leo(&[(2, 15), (3, 12)])),
            8
        );
        // A member never heard from holds it; so does a lower minimum (never backwards).
        assert_eq!(high_watermark(5, 20, &[1, 2, 3], 1, leo(&[(2, 15)])), 5);
        assert_eq!(high_watermark(14, 20, &[1, 2], 1, leo(&[(2, 12)])), 14);
        // Alone in the ISR: its own synced end.
        assert_eq!(high_watermark(0, 20, &[1], 1, leo(&[(2, 1)])), 20);
    }

    #[test]
    fn the_leader_moves_the_hw_with_syncs_and_fetches() {
        let (leader, hw) = leader(&[1, 2, 3], 10, 10);
        let now = Instant::now();
        leader.on_synced(30);
        assert_eq!(*hw.borrow(), 10, "followers not heard from yet");
        leader.on_replica_fetch(2, 7, 25, 30, true, now);
        assert_eq!(*hw.borrow(), 10);
        leader.on_replica_fetch(3, 7, 20, 30, true, now);
        assert_eq!(*hw.borrow(), 20);
        leader.on_replica_fetch(3, 7, 30, 30, true, now);
        assert_eq!(*hw.borrow(), 25);
        // Not a replica, or itself: ignored.
        leader.on_replica_fetch(9, 7, 30, 30, true, now);
        leader.on_replica_fetch(1, 7, 30, 30, true, now);
        assert_eq!(*hw.borrow(), 25);
        // Closed: frozen.
        leader.close();
        leader.on_replica_fetch(2, 7, 30, 30, true, now);
        assert_eq!(*hw.borrow(), 25);
        assert!(leader.is_closed());
    }

    #[test]
    fn a_shrink_lets_the_hw_pass_a_dead_follower_only_once_committed() {
        let (leader, hw) = leader(&[1, 2, 3], 50, 10);
        let t0 = Instant::now();
        leader.on_replica_fetch(2, 7, 50, 50, true, t0 + Duration::from_secs(9));
        assert_eq!(*hw.borrow(), 10, "3 never fetched");
        let lag = Duration::from_secs(10);
        assert_eq!(leader.shrink_check(t0 + Duration::from_secs(5), lag), None);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(leader.shrink_check(later, lag), Some(vec![1, 2]));
        assert_eq!(leader.pending_change(), Some(IsrChange::Shrink));
        assert_eq!(
            leader.shrink_check(later, lag),
            None,
            "one change at a time"
        );
        assert_eq!(*hw.borrow(), 10, "pending: the old ISR still counts");
        leader.isr_change_done(Some((vec![1, 2], 9)), later);
        assert_eq!(*hw.borrow(), 50);
        assert_eq!(leader.isr(), vec![1, 2]);
        // Older metadata does not bring the old ISR back; newer does.
        leader.apply_metadata(&[1, 2, 3], &[1, 2, 3], 8, later);
        assert_eq!(leader.isr(), vec![1, 2]);
        leader.apply_metadata(&[1, 2, 3], &[1, 2, 3], 10, later);
        assert_eq!(leader.isr(), vec![1, 2, 3]);
    }

    #[test]
    fn a_caught_up_follower_rejoins_and_counts_while_pending() {
        let (leader, hw) = leader(&[1, 2], 40, 30);
        let now = Instant::now();
        leader.on_replica_fetch(2, 7, 40, 40, true, now);
        assert_eq!(*hw.borrow(), 40);
        // Below the high watermark: not yet. Ineligible (not ONLINE): not yet.
        assert_eq!(
            leader.on_replica_fetch(3, 8, 35, 40, true, now).expand,
            None
        );
        assert_eq!(
            leader.on_replica_fetch(3, 8, 40, 40, false, now).expand,
            None
        );
        let effects = leader.on_replica_fetch(3, 8, 40, 40, true, now);
        assert_eq!(effects.expand, Some(vec![1, 2, 3]));
        // While the expansion is pending, 3 holds the HW back with everyone else.
        leader.on_synced(60);
        leader.on_replica_fetch(2, 7, 60, 60, true, now);
        assert_eq!(*hw.borrow(), 40);
        leader.on_replica_fetch(3, 8, 55, 60, true, now);
        assert_eq!(*hw.borrow(), 55);
        // A refused change leaves a quiet period before the next attempt.
        leader.isr_change_done(None, now);
        assert_eq!(
            leader.on_replica_fetch(3, 8, 60, 60, true, now).expand,
            None
        );
        let effects = leader.on_replica_fetch(3, 8, 60, 60, true, now + ISR_RETRY_BACKOFF);
        assert_eq!(effects.expand, Some(vec![1, 2, 3]));
        leader.isr_change_done(Some((vec![1, 2, 3], 12)), now);
        assert_eq!(leader.status(), (false, 3));
        // Newer metadata (broker 2 fenced at 14), then a late answer at 13: the newer stays.
        leader.apply_metadata(&[1, 2, 3], &[1, 3], 14, now);
        assert_eq!(leader.shrink_check(now, Duration::from_secs(60)), None);
        leader.isr_change_done(Some((vec![1, 2, 3], 13)), now);
        assert_eq!(leader.isr(), vec![1, 3]);
        assert_eq!(leader.progress(3).unwrap().leo, Some(60));
    }

    #[test]
    fn a_follower_before_the_epoch_start_does_not_join() {
        let (leader, _hw) = leader(&[1, 2], 5, 5);
        // HW 5 but the epoch starts at 10: the follower still has old-epoch leftovers to drop.
        let effects = leader.on_replica_fetch(3, 8, 5, 5, true, Instant::now());
        assert_eq!(effects.expand, None);
    }

    #[test]
    fn divergence_follows_kip_320() {
        // Leader history: epoch 2 from 0, epoch 4 from 10, log end 25.
        // Same epoch, ends after the follower: fine.
        assert_eq!(divergence(Some((4, 25)), 4, 20, Some(4), 25), None);
        assert_eq!(divergence(Some((2, 10)), 2, 10, Some(4), 25), None);
        // The follower has epoch-2 records past where epoch 2 ended on the leader.
        assert_eq!(divergence(Some((2, 10)), 2, 14, Some(4), 25), Some((2, 10)));
        // The follower's epoch 3 never existed on the leader: it ends where 4 starts.
        assert_eq!(divergence(Some((2, 10)), 3, 12, Some(4), 25), Some((2, 10)));
        // An epoch newer than any the leader knows.
        assert_eq!(divergence(None, 9, 12, Some(4), 25), Some((4, 25)));
    }
}
