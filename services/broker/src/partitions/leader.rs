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
//!
//! ISR changes ([`IsrRequest`]) name the partition epoch they were computed from. An attempt
//! whose outcome is unknown (no answer, a timeout) may have committed, so it stays pending —
//! the joiner keeps counting — and the same change is sent again after a pause until an answer
//! or metadata settles it: a committed answer, metadata at a newer partition epoch (whatever it
//! says is then the truth), or a refusal decided against the controllers' current state.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dmq_proto::v1 as pb;
use tokio::sync::watch;
use tokio::time::Instant;

use super::isr::{self, Progress};
use crate::log::PartitionId;

/// After a refused ISR change, no other is asked for this long; an attempt with an unknown
/// outcome is sent again after it.
pub(crate) const ISR_RETRY_BACKOFF: Duration = Duration::from_millis(500);

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

/// An ISR change to ask the controller for (AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IsrRequest {
    pub new_isr: Vec<u64>,
    pub kind: IsrChange,
    /// The partition epoch the change was computed from.
    pub partition_epoch: u64,
}

/// What became of an [`IsrRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IsrOutcome {
    /// The controllers committed it: the partition as it is now.
    Committed { isr: Vec<u64>, partition_epoch: u64 },
    /// Refused because the partition epoch moved on (perhaps an earlier attempt of this very
    /// change committed): the metadata will tell; nothing to retry.
    Stale,
    /// Refused for good against the controllers' current state (e.g. the joiner is not
    /// ONLINE): nothing changed.
    Refused,
    /// No answer, or one that does not say: it may have committed. Retried.
    Unknown,
}

/// What the leadership tells those waiting for acks=ALL: only this leadership moves it, and
/// only until it is closed, so "reached" always means committed in this leader epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Commitment {
    pub high_watermark: u64,
    /// The size of the committed ISR.
    pub isr_size: usize,
    pub closed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Sent; the answer has not come back.
    InFlight,
    /// The last attempt's outcome is unknown: send it again at this time.
    RetryAt(Instant),
    /// Refused as stale: waiting for metadata at a newer partition epoch.
    AwaitMetadata,
}

#[derive(Debug)]
struct Pending {
    request: IsrRequest,
    phase: Phase,
}

#[derive(Debug)]
struct State {
    closed: bool,
    replicas: Vec<u64>,
    /// The ISR as the controllers committed it.
    isr: Vec<u64>,
    /// The partition epoch `isr` is at: older metadata does not overwrite it.
    partition_epoch: u64,
    pending: Option<Pending>,
    /// No new ISR change before this (after a refused one).
    quiet_until: Option<Instant>,
    followers: HashMap<u64, Progress>,
    /// The leader's own log end covered by a sync.
    synced_end: u64,
}

/// What a replica fetch changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FetchEffects {
    /// An ISR expansion to ask the controller for (now pending).
    pub expand: Option<IsrRequest>,
}

/// This broker's leadership of one partition at one epoch.
///
/// # To ensure correctness
/// - Only the manager creates a `Leader` (after recording the epoch in the log and syncing it)
///   and [`close`](Leader::close)s it before the partition takes any other role; a closed
///   leader never moves a high watermark again.
/// - acks=ALL waiters trust only this leadership's [`Commitment`] ([`subscribe`]): the
///   partition's shared `hw` is also raised by the follower role that may follow this one, with
///   other records at the same offsets. A closed leadership's waiters answer "unknown outcome".
/// - The high watermark is moved only here, under the state lock, and only up: see the module
///   rule. Report the leader's own log end only after a sync that covers it
///   ([`on_synced`](Leader::on_synced)); report a follower's only from a fetch in this epoch,
///   by the incarnation the metadata lists, that passed the divergence check
///   ([`on_replica_fetch`](Leader::on_replica_fetch)).
/// - At most one ISR change is pending; it is settled only by a committed answer or a definite
///   refusal *to that change* (a late answer to an earlier one settles nothing), or metadata
///   at a newer partition epoch ([`isr_change_done`], [`apply_metadata`]). Until then an
///   expansion's joiner counts for the high watermark.
///
/// [`subscribe`]: Leader::subscribe
/// [`isr_change_done`]: Leader::isr_change_done
/// [`apply_metadata`]: Leader::apply_metadata
#[derive(Debug)]
pub(crate) struct Leader {
    pub id: PartitionId,
    pub epoch: u64,
    /// Where this epoch starts in the log (its first offset).
    pub epoch_start_offset: u64,
    me: u64,
    /// The partition's shared high watermark (consumers are served up to it).
    hw: watch::Sender<u64>,
    /// Bumped when the ISR changes or the leader closes.
    changes: watch::Sender<u64>,
    commitment: watch::Sender<Commitment>,
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
    pub partition_epoch: u64,
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
        let commitment = watch::Sender::new(Commitment {
            high_watermark: *hw.borrow(),
            isr_size: init.isr.len(),
            closed: false,
        });
        let leader = Leader {
            id: init.id,
            epoch: init.epoch,
            epoch_start_offset: init.epoch_start_offset,
            me: init.me,
            hw,
            changes,
            commitment,
            state: Mutex::new(State {
                closed: false,
                replicas: init.replicas,
                isr: init.isr,
                partition_epoch: init.partition_epoch,
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

    /// Ends this leadership (the partition takes another role): no more high watermark moves;
    /// waiters see `closed`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.commitment.send_modify(|c| c.closed = true);
        self.changes.send_modify(|c| *c += 1);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// This leadership's high watermark, ISR size and whether it ended, to wait on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Commitment> {
        self.commitment.subscribe()
    }

    pub(crate) fn commitment(&self) -> Commitment {
        *self.commitment.borrow()
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

    /// A valid fetch (this epoch, no divergence, by the incarnation the metadata lists) from
    /// replica `replica` (incarnation `broker_epoch`) whose durable log ends at
    /// `fetch_offset`, while the leader's log ends at `leader_leo`. `eligible`: the metadata
    /// lists that incarnation ONLINE. Moves the high watermark, and returns an ISR expansion
    /// to ask for when the replica may join.
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
            let request = IsrRequest {
                new_isr: isr::with_member(&state.isr, &state.replicas, replica),
                kind: IsrChange::Expand,
                partition_epoch: state.partition_epoch,
            };
            state.pending = Some(Pending {
                request: request.clone(),
                phase: Phase::InFlight,
            });
            effects.expand = Some(request);
        }
        effects
    }

    /// The ISR change to send now, if any: the pending one again when its last attempt's
    /// outcome is unknown and its pause is over, else a shrink by the members that lagged
    /// longer than `lag_max` (then pending).
    pub(crate) fn isr_work(&self, now: Instant, lag_max: Duration) -> Option<IsrRequest> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        if let Some(pending) = &mut state.pending {
            return match pending.phase {
                Phase::RetryAt(at) if now >= at => {
                    pending.phase = Phase::InFlight;
                    Some(pending.request.clone())
                }
                _ => None,
            };
        }
        if !self.may_change(&state, now) {
            return None;
        }
        let laggards = isr::lagging(&state.isr, self.me, &state.followers, now, lag_max);
        if laggards.is_empty() {
            return None;
        }
        let request = IsrRequest {
            new_isr: isr::without(&state.isr, &laggards),
            kind: IsrChange::Shrink,
            partition_epoch: state.partition_epoch,
        };
        state.pending = Some(Pending {
            request: request.clone(),
            phase: Phase::InFlight,
        });
        Some(request)
    }

    fn may_change(&self, state: &State, now: Instant) -> bool {
        !state.closed && state.pending.is_none() && state.quiet_until.is_none_or(|t| now >= t)
    }

    /// The outcome of an attempt of ISR change `change` (see [`IsrOutcome`]). It settles the
    /// pending change only if that is `change`: an answer can arrive after newer metadata
    /// settled its change and another became pending, and must not drop that one (its joiner
    /// would stop counting while the controllers may commit it). Of an answer to another
    /// change only a committed ISR is kept (if newer than the one held).
    pub(crate) fn isr_change_done(&self, change: &IsrRequest, outcome: IsrOutcome, now: Instant) {
        let mut state = self.lock();
        let pending = match &mut state.pending {
            Some(pending) if pending.request == *change => pending,
            _ => {
                // Settled meanwhile by newer metadata; another change may be pending.
                if let IsrOutcome::Committed {
                    isr,
                    partition_epoch,
                } = outcome
                {
                    self.set_isr(&mut state, isr, partition_epoch);
                }
                return;
            }
        };
        match outcome {
            IsrOutcome::Committed {
                isr,
                partition_epoch,
            } => {
                state.pending = None;
                self.set_isr(&mut state, isr, partition_epoch);
            }
            IsrOutcome::Stale => pending.phase = Phase::AwaitMetadata,
            IsrOutcome::Unknown => pending.phase = Phase::RetryAt(now + ISR_RETRY_BACKOFF),
            IsrOutcome::Refused => {
                state.pending = None;
                state.quiet_until = Some(now + ISR_RETRY_BACKOFF);
                self.advance_hw(&state);
            }
        }
    }

    /// Takes what this broker's earlier leaderships asked of the ISR ([`IsrSeen`]): the
    /// newest ISR an answer said was committed, and the last change, if it was asked at this
    /// leader epoch from the partition epoch held here and is not known committed or refused,
    /// as the pending change. Its joiner then counts for the high watermark as it did for the
    /// leadership that asked, since the controllers may commit it: in flight, its answer
    /// comes here (the manager hands answers to the current leadership of their epoch);
    /// unknown, it is sent again; stale, the metadata settles it.
    ///
    /// [`IsrSeen`]: super::IsrSeen
    pub(crate) fn inherit_isr(&self, seen: &super::IsrSeen, now: Instant) {
        let mut state = self.lock();
        if let Some((partition_epoch, isr)) = &seen.committed {
            self.set_isr(&mut state, isr.clone(), *partition_epoch);
        }
        let Some((epoch, change, outcome)) = &seen.last else {
            return;
        };
        if *epoch != self.epoch
            || state.pending.is_some()
            || change.partition_epoch != state.partition_epoch
        {
            return;
        }
        let phase = match outcome {
            None => Phase::InFlight,
            Some(IsrOutcome::Unknown) => Phase::RetryAt(now),
            Some(IsrOutcome::Stale) => Phase::AwaitMetadata,
            Some(IsrOutcome::Committed { .. } | IsrOutcome::Refused) => return,
        };
        state.pending = Some(Pending {
            request: change.clone(),
            phase,
        });
        self.advance_hw(&state);
    }

    /// The pending change, if any (tests).
    #[cfg(test)]
    pub(crate) fn pending_change(&self) -> Option<IsrRequest> {
        self.lock().pending.as_ref().map(|p| p.request.clone())
    }

    /// Metadata lists the partition `p` (same leader and epoch). An ISR at an older partition
    /// epoch than the one held is ignored; a newer partition epoch settles the pending change
    /// (whatever became of it, the metadata now says what the ISR is).
    pub(crate) fn apply_metadata(&self, p: &pb::PartitionMetadata, now: Instant) {
        let mut state = self.lock();
        if state.replicas != p.replicas {
            state.replicas = p.replicas.clone();
            for &r in p.replicas.iter().filter(|&&r| r != self.me) {
                state
                    .followers
                    .entry(r)
                    .or_insert_with(|| Progress::new(now));
            }
        }
        if state
            .pending
            .as_ref()
            .is_some_and(|pending| p.partition_epoch > pending.request.partition_epoch)
        {
            state.pending = None;
        }
        self.set_isr(&mut state, p.isr.clone(), p.partition_epoch);
    }

    /// Takes the ISR the controllers committed at `partition_epoch`, unless a newer one is
    /// held (an AlterPartition answer may arrive after newer metadata).
    fn set_isr(&self, state: &mut State, isr: Vec<u64>, partition_epoch: u64) {
        if partition_epoch < state.partition_epoch {
            self.advance_hw(state);
            return;
        }
        state.partition_epoch = partition_epoch;
        if state.isr != isr {
            tracing::info!(topic = %self.id.topic, partition = self.id.partition,
                epoch = self.epoch, partition_epoch, old = ?state.isr, new = ?isr, "ISR changed");
            state.isr = isr;
            self.changes.send_modify(|c| *c += 1);
        }
        self.advance_hw(state);
    }

    /// The ISR the high watermark counts: the committed one plus a pending expansion's member.
    fn hw_isr(state: &State) -> Vec<u64> {
        let mut isr = state.isr.clone();
        if let Some(Pending { request, .. }) = &state.pending
            && request.kind == IsrChange::Expand
        {
            isr.extend(request.new_isr.iter().filter(|r| !state.isr.contains(r)));
        }
        isr
    }

    fn advance_hw(&self, state: &State) {
        if state.closed {
            return;
        }
        let isr = Self::hw_isr(state);
        let leo_of = |r: u64| state.followers.get(&r).and_then(|p| p.leo);
        let current = self.commitment.borrow().high_watermark;
        let hw = high_watermark(current, state.synced_end, &isr, self.me, leo_of);
        self.commitment.send_if_modified(|c| {
            let changed = c.high_watermark != hw || c.isr_size != state.isr.len();
            c.high_watermark = hw;
            c.isr_size = state.isr.len();
            changed
        });
        self.hw.send_if_modified(|shared| {
            if hw > *shared {
                *shared = hw;
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
                partition_epoch: 5,
                synced_end,
            },
            hw_tx,
            changes,
            Instant::now(),
        );
        (leader, hw_rx)
    }

    fn partition(isr: &[u64], partition_epoch: u64) -> pb::PartitionMetadata {
        pb::PartitionMetadata {
            leader: 1,
            leader_epoch: 3,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            partition_epoch,
            ..Default::default()
        }
    }

    fn committed(isr: &[u64], partition_epoch: u64) -> IsrOutcome {
        IsrOutcome::Committed {
            isr: isr.to_vec(),
            partition_epoch,
        }
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
        assert_eq!(leader.commitment().high_watermark, 25);
        // Not a replica, or itself: ignored.
        leader.on_replica_fetch(9, 7, 30, 30, true, now);
        leader.on_replica_fetch(1, 7, 30, 30, true, now);
        assert_eq!(*hw.borrow(), 25);
        // Closed: frozen, and its waiters are told.
        let waiter = leader.subscribe();
        leader.close();
        leader.on_replica_fetch(2, 7, 30, 30, true, now);
        assert_eq!(*hw.borrow(), 25);
        assert!(leader.is_closed());
        assert!(waiter.borrow().closed);
    }

    #[test]
    fn a_shared_watermark_raised_by_another_role_is_not_this_leaders() {
        // The follower role that comes after this leadership raises the partition's shared
        // watermark; the leadership's own commitment does not follow it.
        let (hw_tx, _rx) = watch::channel(10);
        let (changes, _) = watch::channel(0);
        let leader = Leader::new(
            LeaderInit {
                id: PartitionId::new("t", 1, 0),
                me: 1,
                epoch: 3,
                epoch_start_offset: 10,
                replicas: vec![1, 2],
                isr: vec![1, 2],
                partition_epoch: 0,
                synced_end: 10,
            },
            hw_tx.clone(),
            changes,
            Instant::now(),
        );
        leader.close();
        hw_tx.send_replace(50);
        assert_eq!(
            leader.commitment(),
            Commitment {
                high_watermark: 10,
                isr_size: 2,
                closed: true
            }
        );
    }

    #[test]
    fn a_shrink_lets_the_hw_pass_a_dead_follower_only_once_committed() {
        let (leader, hw) = leader(&[1, 2, 3], 50, 10);
        let t0 = Instant::now();
        leader.on_replica_fetch(2, 7, 50, 50, true, t0 + Duration::from_secs(9));
        assert_eq!(*hw.borrow(), 10, "3 never fetched");
        let lag = Duration::from_secs(10);
        assert_eq!(leader.isr_work(t0 + Duration::from_secs(5), lag), None);
        let later = t0 + Duration::from_secs(11);
        let shrink = leader.isr_work(later, lag).unwrap();
        assert_eq!(
            shrink,
            IsrRequest {
                new_isr: vec![1, 2],
                kind: IsrChange::Shrink,
                partition_epoch: 5
            }
        );
        assert_eq!(leader.isr_work(later, lag), None, "one change at a time");
        assert_eq!(*hw.borrow(), 10, "pending: the old ISR still counts");
        leader.isr_change_done(&shrink, committed(&[1, 2], 6), later);
        assert_eq!(*hw.borrow(), 50);
        assert_eq!(leader.isr(), vec![1, 2]);
        // Older metadata does not bring the old ISR back; newer does.
        leader.apply_metadata(&partition(&[1, 2, 3], 5), later);
        assert_eq!(leader.isr(), vec![1, 2]);
        leader.apply_metadata(&partition(&[1, 2, 3], 7), later);
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
        let expand = effects.expand.unwrap();
        assert_eq!(expand.new_isr, vec![1, 2, 3]);
        // While the expansion is pending, 3 holds the HW back with everyone else.
        leader.on_synced(60);
        leader.on_replica_fetch(2, 7, 60, 60, true, now);
        assert_eq!(*hw.borrow(), 40);
        leader.on_replica_fetch(3, 8, 55, 60, true, now);
        assert_eq!(*hw.borrow(), 55);
        // A definite refusal leaves a quiet period before the next attempt.
        leader.isr_change_done(&expand, IsrOutcome::Refused, now);
        assert_eq!(
            leader.on_replica_fetch(3, 8, 60, 60, true, now).expand,
            None
        );
        let effects = leader.on_replica_fetch(3, 8, 60, 60, true, now + ISR_RETRY_BACKOFF);
        let expand = effects.expand.unwrap();
        assert_eq!(expand.new_isr, vec![1, 2, 3]);
        leader.isr_change_done(&expand, committed(&[1, 2, 3], 6), now);
        assert_eq!(leader.commitment().isr_size, 3);
        // Newer metadata (broker 2 fenced at epoch 8), then a late answer at 7: the newer stays.
        leader.apply_metadata(&partition(&[1, 3], 8), now);
        assert_eq!(leader.isr_work(now, Duration::from_secs(60)), None);
        leader.isr_change_done(&expand, committed(&[1, 2, 3], 7), now);
        assert_eq!(leader.isr(), vec![1, 3]);
        assert_eq!(leader.progress(3).unwrap().leo, Some(60));
    }

    /// Issue 10, path 2: an expansion whose outcome is unknown may have committed {1,2,3}; if
    /// the leader stopped counting 3, the high watermark would pass records 3 lacks while the
    /// controllers list 3 in the ISR (and could elect it).
    #[test]
    fn an_expansion_with_an_unknown_outcome_keeps_counting_the_joiner_until_settled() {
        let (leader, hw) = leader(&[1, 2], 40, 40);
        let now = Instant::now();
        leader.on_replica_fetch(2, 7, 40, 40, true, now);
        let expand = leader
            .on_replica_fetch(3, 8, 40, 40, true, now)
            .expand
            .unwrap();
        leader.isr_change_done(&expand, IsrOutcome::Unknown, now);
        // New records reach 2 but not 3: the watermark waits for 3.
        leader.on_synced(60);
        leader.on_replica_fetch(2, 7, 60, 60, true, now);
        assert_eq!(*hw.borrow(), 40, "the joiner still counts");
        // The same change is sent again after the pause, and only then.
        assert_eq!(leader.isr_work(now, Duration::from_secs(60)), None);
        let retry = leader.isr_work(now + ISR_RETRY_BACKOFF, Duration::from_secs(60));
        assert_eq!(retry, Some(expand.clone()));
        // It was the first attempt that committed: the retry is stale. Still counting, and
        // nothing more is sent, until the metadata says.
        leader.isr_change_done(&expand, IsrOutcome::Stale, now);
        assert_eq!(
            leader.isr_work(now + 10 * ISR_RETRY_BACKOFF, Duration::from_secs(60)),
            None
        );
        assert_eq!(*hw.borrow(), 40);
        // Metadata at the same partition epoch settles nothing.
        leader.apply_metadata(&partition(&[1, 2], 5), now);
        assert_eq!(leader.pending_change(), Some(expand));
        leader.apply_metadata(&partition(&[1, 2, 3], 6), now);
        assert_eq!(leader.pending_change(), None);
        assert_eq!(leader.isr(), vec![1, 2, 3]);
        assert_eq!(*hw.borrow(), 40, "3 is in the ISR now and still at 40");
        leader.on_replica_fetch(3, 8, 60, 60, true, now);
        assert_eq!(*hw.borrow(), 60);
    }

    /// A late AlterPartition answer settles only the change it answers. ISR {1} at partition
    /// epoch 5: adding 2 is sent; the controllers commit {1,2} at 6 and the metadata says so
    /// before the answer comes (it settles the change). 3 catches up: adding 3 is sent from 6.
    /// The first answer then dropped that second change, which the controllers committed
    /// ({1,2,3} at 7, its own answer ignored: nothing pending) while this leader counted only
    /// {1,2}: records 3 lacked were acknowledged, and the controllers could elect 3.
    #[test]
    fn a_late_answer_settles_only_the_change_it_answers() {
        let (leader, hw) = leader(&[1], 40, 40);
        let now = Instant::now();
        let first = leader
            .on_replica_fetch(2, 7, 40, 40, true, now)
            .expand
            .unwrap();
        assert_eq!(first.new_isr, vec![1, 2]);
        leader.apply_metadata(&partition(&[1, 2], 6), now);
        assert_eq!(leader.pending_change(), None);
        let second = leader
            .on_replica_fetch(3, 8, 40, 40, true, now)
            .expand
            .unwrap();
        assert_eq!(
            (second.new_isr.clone(), second.partition_epoch),
            (vec![1, 2, 3], 6)
        );

        leader.isr_change_done(&first, committed(&[1, 2], 6), now);
        assert_eq!(
            leader.pending_change(),
            Some(second.clone()),
            "the second change is still pending"
        );
        leader.isr_change_done(&first, IsrOutcome::Refused, now);
        assert_eq!(leader.pending_change(), Some(second.clone()));
        // New records reach 2, not 3: the joiner holds the watermark back.
        leader.on_synced(60);
        leader.on_replica_fetch(2, 7, 60, 60, true, now);
        assert_eq!(*hw.borrow(), 40);

        leader.isr_change_done(&second, committed(&[1, 2, 3], 7), now);
        assert_eq!(leader.pending_change(), None);
        assert_eq!(leader.isr(), vec![1, 2, 3]);
        assert_eq!(*hw.borrow(), 40);
    }

    /// What a leadership takes from the earlier ones of this broker (the partition's
    /// `IsrSeen`): a newer committed ISR, and the last change asked at its epoch from its
    /// partition epoch unless known committed or refused.
    #[test]
    fn a_new_leadership_inherits_the_isr_changes_of_the_earlier_ones() {
        let expand = IsrRequest {
            new_isr: vec![1, 2, 3],
            kind: IsrChange::Expand,
            partition_epoch: 5,
        };
        let seen = |epoch: u64, outcome: Option<IsrOutcome>| super::super::IsrSeen {
            committed: None,
            last: Some((epoch, expand.clone(), outcome)),
        };
        let now = Instant::now();
        let lag = Duration::from_secs(60);
        for (outcome, pending, resent) in [
            (None, true, false),
            (Some(IsrOutcome::Unknown), true, true),
            (Some(IsrOutcome::Stale), true, false),
            (Some(IsrOutcome::Refused), false, false),
        ] {
            let (l, hw) = leader(&[1, 2], 40, 40);
            l.inherit_isr(&seen(3, outcome.clone()), now);
            assert_eq!(l.pending_change().is_some(), pending, "{outcome:?}");
            assert_eq!(l.isr_work(now, lag).is_some(), resent, "{outcome:?}");
            l.on_synced(60);
            l.on_replica_fetch(2, 7, 60, 60, true, now);
            let expected = if pending { 40 } else { 60 };
            assert_eq!(*hw.borrow(), expected, "the joiner counts: {outcome:?}");
        }
        // Asked at another leader epoch, or from another partition epoch: not this one's.
        let (l, _) = leader(&[1, 2], 40, 40);
        l.inherit_isr(&seen(2, None), now);
        assert_eq!(l.pending_change(), None);
        let (l, _) = leader(&[1, 2], 40, 40);
        l.apply_metadata(&partition(&[1, 2], 6), now);
        l.inherit_isr(&seen(3, None), now);
        assert_eq!(l.pending_change(), None);
        // A committed ISR newer than the metadata it started from is taken.
        let (l, _) = leader(&[1, 2], 40, 40);
        l.inherit_isr(
            &super::super::IsrSeen {
                committed: Some((6, vec![1, 2, 3])),
                last: Some((3, expand.clone(), Some(committed(&[1, 2, 3], 6)))),
            },
            now,
        );
        assert_eq!((l.isr(), l.pending_change()), (vec![1, 2, 3], None));
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
