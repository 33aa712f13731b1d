//! [`LivenessTracker`]: the leader's in-memory record of broker heartbeats, and the decision of
//! who is overdue. Pure (times are passed in); the service runs it (see `controller.rs`).
//!
//! - Bounded: one entry per registered broker. Entries are created from the registered brokers
//!   and heartbeats of current incarnations only, and [`LivenessTracker::overdue`] drops the
//!   entries of brokers no longer registered.
//! - Grace: a new leader [`reset`](LivenessTracker::reset)s every clock to "now", and a broker
//!   the tracker has not seen yet (or a new incarnation of one) starts at "now" too, so a
//!   failover (or a leader whose applied state was behind) marks no live broker OFFLINE.
//! - At most one fence and one unfence proposal in flight per broker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A registered broker as the applied metadata shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokerView {
    pub broker_id: u64,
    pub broker_epoch: u64,
    /// ONLINE in the metadata (only those can be overdue).
    pub online: bool,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    epoch: u64,
    last_heard: Instant,
    fencing: bool,
    unfencing: bool,
}

/// Each broker's last heartbeat (see the module docs).
#[derive(Debug, Default)]
pub struct LivenessTracker {
    brokers: HashMap<u64, Entry>,
}

impl LivenessTracker {
    pub fn new() -> LivenessTracker {
        LivenessTracker::default()
    }

    /// Starts over as a new leader: every broker in `brokers` was heard `now` (grace). Proposals
    /// in flight keep their place, so the bound of one per broker holds across the reset.
    pub fn reset(&mut self, brokers: impl IntoIterator<Item = BrokerView>, now: Instant) {
        let in_flight: HashMap<u64, (bool, bool)> = self
            .brokers
            .iter()
            .map(|(&id, e)| (id, (e.fencing, e.unfencing)))
            .collect();
        self.brokers.clear();
        for b in brokers {
            let (fencing, unfencing) = in_flight.get(&b.broker_id).copied().unwrap_or_default();
            self.brokers.insert(
                b.broker_id,
                Entry {
                    epoch: b.broker_epoch,
                    last_heard: now,
                    fencing,
                    unfencing,
                },
            );
        }
    }

    /// Records a heartbeat (or registration) of incarnation `epoch` of `broker_id` at `now`. The
    /// caller checked that `epoch` is the broker's current one.
    pub fn heard(&mut self, broker_id: u64, epoch: u64, now: Instant) {
        let entry = self.brokers.entry(broker_id).or_insert(Entry {
            epoch,
            last_heard: now,
            fencing: false,
            unfencing: false,
        });
        entry.epoch = epoch;
        entry.last_heard = entry.last_heard.max(now);
    }

    /// The ONLINE brokers of `brokers` (all registered brokers) not heard from within `timeout`
    /// before `now`, as `(broker id, epoch)`, each marked as being fenced until
    /// [`fence_finished`](Self::fence_finished); brokers already being fenced are left out.
    /// Also forgets brokers no longer registered and starts the clock of new ones (or new
    /// incarnations) at `now`.
    pub fn overdue(
        &mut self,
        brokers: &[BrokerView],
        now: Instant,
        timeout: Duration,
    ) -> Vec<(u64, u64)> {
        let known: std::collections::HashSet<u64> = brokers.iter().map(|b| b.broker_id).collect();
        self.brokers
            .retain(|id, e| e.fencing || e.unfencing || known.contains(id));
        let mut overdue = Vec::new();
        for b in brokers {
            let entry = self.brokers.entry(b.broker_id).or_insert(Entry {
                epoch: b.broker_epoch,
                last_heard: now,
                fencing: false,
                unfencing: false,
            });
            if entry.epoch != b.broker_epoch {
                // A new incarnation: its registration counts as a heartbeat.
                entry.epoch = b.broker_epoch;
                entry.last_heard = now;
            }
            if b.online
                && !entry.fencing
                && now.saturating_duration_since(entry.last_heard) >= timeout
            {
                entry.fencing = true;
                overdue.push((b.broker_id, b.broker_epoch));
            }
        }
        overdue
    }

    /// The fence proposal for `broker_id` completed (whatever its outcome).
    pub fn fence_finished(&mut self, broker_id: u64) {
        if let Some(entry) = self.brokers.get_mut(&broker_id) {
            entry.fencing = false;
        }
    }

    /// Claims the one unfence proposal allowed in flight for `broker_id`; false if one is
    /// already in flight.
    pub fn try_begin_unfence(&mut self, broker_id: u64, epoch: u64, now: Instant) -> bool {
        self.heard(broker_id, epoch, now);
        let entry = self.brokers.get_mut(&broker_id).expect("just inserted");
        !std::mem::replace(&mut entry.unfencing, true)
    }

    /// The unfence proposal for `broker_id` completed (whatever its outcome).
    pub fn unfence_finished(&mut self, broker_id: u64) {
        if let Some(entry) = self.brokers.get_mut(&broker_id) {
            entry.unfencing = false;
        }
    }

    /// Forgets `broker_id` (it unregistered).
    pub fn forget(&mut self, broker_id: u64) {
        self.brokers.remove(&broker_id);
    }

    /// When `broker_id` was last heard from, if it is tracked.
    pub fn last_heard(&self, broker_id: u64) -> Option<Instant> {
        self.brokers.get(&broker_id).map(|e| e.last_heard)
    }

    /// How many brokers are tracked.
    pub fn len(&self) -> usize {
        self.brokers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.brokers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn online(id: u64, epoch: u64) -> BrokerView {
        BrokerView {
            broker_id: id,
            broker_epoch: epoch,
            online: true,
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn brokers_not_heard_within_the_timeout_are_overdue() {
        let t0 = Instant::now();
        let brokers = [online(1, 10), online(2, 20), online(3, 30)];
        let mut t = LivenessTracker::new();
        t.reset(brokers, t0);
        assert!(t.overdue(&brokers, secs(t0, 29), TIMEOUT).is_empty());
        t.heard(2, 20, secs(t0, 20));
        let mut due = t.overdue(&brokers, secs(t0, 30), TIMEOUT);
        due.sort();
        assert_eq!(due, vec![(1, 10), (3, 30)]);
        t.fence_finished(1);
        t.fence_finished(3);
        // Broker 2 is due 30 s after its heartbeat.
        assert!(
            !t.overdue(&brokers, secs(t0, 49), TIMEOUT)
                .iter()
                .any(|&(id, _)| id == 2)
        );
        assert!(
            t.overdue(&brokers, secs(t0, 50), TIMEOUT)
                .contains(&(2, 20))
        );
    }

    #[test]
    fn at_most_one_fence_in_flight_per_broker() {
        let t0 = Instant::now();
        let brokers = [online(1, 10)];
        let mut t = LivenessTracker::new();
        t.reset(brokers, t0);
        assert_eq!(t.overdue(&brokers, secs(t0, 31), TIMEOUT), vec![(1, 10)]);
        for s in 32..40 {
            assert!(t.overdue(&brokers, secs(t0, s), TIMEOUT).is_empty());
        }
        // Still in flight across a leadership reset.
        t.reset(brokers, secs(t0, 40));
        assert!(t.overdue(&brokers, secs(t0, 80), TIMEOUT).is_empty());
        t.fence_finished(1);
        // The fence failed (the broker is still ONLINE): the next check retries once.
        assert_eq!(t.overdue(&brokers, secs(t0, 81), TIMEOUT), vec![(1, 10)]);
        assert!(t.overdue(&brokers, secs(t0, 82), TIMEOUT).is_empty());
    }

    #[test]
    fn offline_brokers_are_not_fenced_again() {
        let t0 = Instant::now();
        let offline = BrokerView {
            online: false,
            ..online(1, 10)
        };
        let mut t = LivenessTracker::new();
        t.reset([offline], t0);
        assert!(t.overdue(&[offline], secs(t0, 300), TIMEOUT).is_empty());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_new_leader_gives_every_broker_a_full_session() {
        let t0 = Instant::now();
        let brokers = [online(1, 10), online(2, 20)];
        let mut t = LivenessTracker::new();
        t.reset(brokers, t0);
        // Long silence under the previous leader: the new one starts the clocks again.
        t.reset(brokers, secs(t0, 100));
        assert!(t.overdue(&brokers, secs(t0, 129), TIMEOUT).is_empty());
        assert_eq!(t.overdue(&brokers, secs(t0, 130), TIMEOUT).len(), 2);
    }

    #[test]
    fn unseen_brokers_and_new_incarnations_start_at_now() {
        let t0 = Instant::now();
        let mut t = LivenessTracker::new();
        t.reset([], t0);
        // Registered before this leader applied it: first seen by the check.
        let brokers = [online(1, 10)];
        assert!(t.overdue(&brokers, secs(t0, 100), TIMEOUT).is_empty());
        assert_eq!(t.last_heard(1), Some(secs(t0, 100)));
        // Re-registered (new epoch) without a heartbeat here: a fresh clock.
        let again = [online(1, 50)];
        assert!(t.overdue(&again, secs(t0, 129), TIMEOUT).is_empty());
        assert!(t.overdue(&again, secs(t0, 130), TIMEOUT).is_empty());
        assert_eq!(t.overdue(&again, secs(t0, 159), TIMEOUT), vec![(1, 50)]);
    }

    #[test]
    fn unregistered_brokers_are_forgotten() {
        let t0 = Instant::now();
        let mut t = LivenessTracker::new();
        t.reset([online(1, 10), online(2, 20)], t0);
        t.overdue(&[online(2, 20)], secs(t0, 1), TIMEOUT);
        assert_eq!(t.len(), 1);
        assert_eq!(t.last_heard(1), None);
        t.forget(2);
        assert!(t.is_empty());
    }

    #[test]
    fn heartbeats_never_move_a_clock_back_and_unfences_are_claimed_once() {
        let t0 = Instant::now();
        let mut t = LivenessTracker::new();
        t.heard(1, 10, secs(t0, 5));
        t.heard(1, 10, secs(t0, 3));
        assert_eq!(t.last_heard(1), Some(secs(t0, 5)));
        assert!(t.try_begin_unfence(1, 10, secs(t0, 6)));
        assert!(!t.try_begin_unfence(1, 10, secs(t0, 7)));
        assert_eq!(t.last_heard(1), Some(secs(t0, 7)));
        t.unfence_finished(1);
        assert!(t.try_begin_unfence(1, 10, secs(t0, 8)));
    }
}
