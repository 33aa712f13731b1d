//! [`LivenessTracker`]: the leader's in-memory record of broker heartbeats, and the decision of
//! who is overdue. Pure (times are passed in); the service runs it (see `controller.rs`).
//!
//! - Bounded: one entry per registered broker. Entries are created from the registered brokers
//!   and heartbeats of current incarnations only, and [`LivenessTracker::overdue`] drops the
//!   entries of brokers no longer registered.
//! - Grace: a new leader gives every broker it has not been waiting for a full session, and a
//!   broker the tracker has not seen yet (or a new incarnation of one) starts at "now" too, so
//!   a failover (or a leader whose applied state was behind) marks no live broker OFFLINE.
//! - Bounded grace: what counts is the time this node *listened* (led, checking) without
//!   hearing a broker, summed over all its terms since it last heard it; a new term does not
//!   start it over. Listening is proven by the checks: the time from a reset (a new term) or a
//!   check to the next check counts, unless the gap between them exceeds the tracker's
//!   maximum (a pause: nobody listened then). So however often leadership moves, a silent
//!   broker is fenced once some controller has listened for a whole session: at most one
//!   session per controller (plus elections) after its last heartbeat.
//! - Disconnects: a broker also holds a WatchMetadata stream to the leader. When the last
//!   stream of its current incarnation closes (its process died and the connection went with
//!   it), and neither a new stream nor a heartbeat follows within a short grace, it is overdue
//!   at once ([`LivenessTracker::disconnected`]) instead of after the session timeout. A
//!   broker that is cut off or paused keeps its connection: only the session timeout applies.
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
    /// Time listened without hearing the broker in this node's earlier listening stretches.
    carried: Duration,
    fencing: bool,
    unfencing: bool,
    /// Open metadata streams of this incarnation.
    streams: u32,
    /// When its last stream closed, if nothing was heard since.
    disconnected_at: Option<Instant>,
}

impl Entry {
    fn new(epoch: u64, now: Instant) -> Entry {
        Entry {
            epoch,
            last_heard: now,
            carried: Duration::ZERO,
            fencing: false,
            unfencing: false,
            streams: 0,
            disconnected_at: None,
        }
    }
}

/// Each broker's last heartbeat (see the module docs).
#[derive(Debug)]
pub struct LivenessTracker {
    brokers: HashMap<u64, Entry>,
    /// The start of the current listening stretch (a new term, or the first check after a
    /// gap), and the last check in it.
    stretch: Option<(Instant, Instant)>,
    /// A gap between checks longer than this is not listening (a paused or cut-off leader).
    max_check_gap: Duration,
}

impl Default for LivenessTracker {
    fn default() -> LivenessTracker {
        LivenessTracker {
            brokers: HashMap::new(),
            stretch: None,
            max_check_gap: Duration::MAX,
        }
    }
}

impl LivenessTracker {
    /// A tracker that counts every gap between checks as listened.
    pub fn new() -> LivenessTracker {
        LivenessTracker::default()
    }

    /// A tracker for checks every `check_interval` or so: a gap of more than a few intervals
    /// is a pause, not listening.
    pub fn for_check_interval(check_interval: Duration) -> LivenessTracker {
        LivenessTracker {
            max_check_gap: check_interval * 4,
            ..LivenessTracker::default()
        }
    }

    /// The listening stretch under way ends at its last check: what it listened without
    /// hearing each broker is carried into the next one.
    fn end_stretch(&mut self) {
        if let Some((start, last)) = self.stretch.take() {
            for e in self.brokers.values_mut() {
                e.carried += last.saturating_duration_since(e.last_heard.max(start));
            }
        }
    }

    /// How long this node has listened without hearing `e`, as of `now`.
    fn unheard(&self, e: &Entry, now: Instant) -> Duration {
        let current = match self.stretch {
            Some((start, _)) => now.saturating_duration_since(e.last_heard.max(start)),
            None => Duration::ZERO,
        };
        e.carried + current
    }

    /// Starts a new term as leader: every broker in `brokers` that this node was not already
    /// waiting for (a new incarnation included) starts at `now` (grace); the time this node
    /// listened without hearing the others in earlier terms still counts. Proposals in flight
    /// keep their place, so the bound of one per broker holds across the reset.
    pub fn reset(&mut self, brokers: impl IntoIterator<Item = BrokerView>, now: Instant) {
        self.end_stretch();
        let mut old = std::mem::take(&mut self.brokers);
        for b in brokers {
            let entry = match old.remove(&b.broker_id) {
                Some(e) if e.epoch == b.broker_epoch => e,
                Some(e) => Entry {
                    fencing: e.fencing,
                    unfencing: e.unfencing,
                    ..Entry::new(b.broker_epoch, now)
                },
                None => Entry::new(b.broker_epoch, now),
            };
            self.brokers.insert(b.broker_id, entry);
        }
        self.stretch = Some((now, now));
    }

    /// Records a heartbeat (or registration) of incarnation `epoch` of `broker_id` at `now`. The
    /// caller checked that `epoch` is the broker's current one.
    pub fn heard(&mut self, broker_id: u64, epoch: u64, now: Instant) {
        let entry = self
            .brokers
            .entry(broker_id)
            .or_insert(Entry::new(epoch, now));
        if entry.epoch != epoch {
            entry.streams = 0;
        }
        entry.epoch = epoch;
        entry.last_heard = entry.last_heard.max(now);
        entry.carried = Duration::ZERO;
        entry.disconnected_at = None;
    }

    /// Incarnation `epoch` of `broker_id` opened a metadata stream at `now` (it is alive).
    pub fn stream_opened(&mut self, broker_id: u64, epoch: u64, now: Instant) {
        self.heard(broker_id, epoch, now);
        if let Some(entry) = self.brokers.get_mut(&broker_id) {
            entry.streams += 1;
        }
    }

    /// A metadata stream of incarnation `epoch` of `broker_id` closed at `now` because the
    /// broker went away (not because this node ended it).
    pub fn stream_closed(&mut self, broker_id: u64, epoch: u64, now: Instant) {
        if let Some(entry) = self.brokers.get_mut(&broker_id)
            && entry.epoch == epoch
        {
            entry.streams = entry.streams.saturating_sub(1);
            if entry.streams == 0 {
                entry.disconnected_at = Some(now);
            }
        }
    }

    /// The ONLINE brokers whose last metadata stream closed at least `grace` before `now`
    /// with nothing heard from them since, as `(broker id, epoch)`, each marked as being
    /// fenced (as [`overdue`](Self::overdue) does).
    pub fn disconnected(
        &mut self,
        brokers: &[BrokerView],
        now: Instant,
        grace: Duration,
    ) -> Vec<(u64, u64)> {
        let mut due = Vec::new();
        for b in brokers.iter().filter(|b| b.online) {
            if let Some(entry) = self.brokers.get_mut(&b.broker_id)
                && entry.epoch == b.broker_epoch
                && !entry.fencing
                && entry
                    .disconnected_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= grace)
            {
                entry.fencing = true;
                due.push((b.broker_id, b.broker_epoch));
            }
        }
        due
    }

    /// The ONLINE brokers of `brokers` (all registered brokers) this node has listened for
    /// `timeout` without hearing, as `(broker id, epoch)`, each marked as being fenced until
    /// [`fence_finished`](Self::fence_finished); brokers already being fenced are left out.
    /// Also forgets brokers no longer registered and starts the clock of new ones (or new
    /// incarnations) at `now`. Each call is a check: it proves this node was listening since
    /// the previous one (see the module docs).
    pub fn overdue(
        &mut self,
        brokers: &[BrokerView],
        now: Instant,
        timeout: Duration,
    ) -> Vec<(u64, u64)> {
        match self.stretch {
            Some((_, last)) if now.saturating_duration_since(last) > self.max_check_gap => {
                // Nobody listened during the gap: a new stretch starts now.
                self.end_stretch();
                self.stretch = Some((now, now));
            }
            Some((start, _)) => self.stretch = Some((start, now)),
            None => self.stretch = Some((now, now)),
        }
        let known: std::collections::HashSet<u64> = brokers.iter().map(|b| b.broker_id).collect();
        self.brokers
            .retain(|id, e| e.fencing || e.unfencing || known.contains(id));
        let mut overdue = Vec::new();
        for b in brokers {
            let entry = self
                .brokers
                .entry(b.broker_id)
                .or_insert(Entry::new(b.broker_epoch, now));
            if entry.epoch != b.broker_epoch {
                // A new incarnation: its registration counts as a heartbeat.
                *entry = Entry {
                    fencing: entry.fencing,
                    unfencing: entry.unfencing,
                    ..Entry::new(b.broker_epoch, now)
                };
            }
        }
        for b in brokers {
            let entry = self.brokers[&b.broker_id];
            if b.online && !entry.fencing && self.unheard(&entry, now) >= timeout {
                self.brokers
                    .get_mut(&b.broker_id)
                    .expect("just inserted")
                    .fencing = true;
                overdue.push((b.broker_id, b.broker_epoch));
            }
        }
        overdue
    }

    /// This node stopped listening (it lost leadership or its lease): the stretch ends at the
    /// last check.
    pub fn stop_listening(&mut self) {
        self.end_stretch();
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

    /// Issue 12: a broker whose process died is noticed when its metadata stream closes, after
    /// a short grace, not after the session timeout; a new stream or a heartbeat within the
    /// grace (a reconnect) cancels it, and a stream of an older incarnation closing counts
    /// for nothing.
    #[test]
    fn a_closed_stream_makes_a_broker_due_after_the_grace_unless_it_comes_back() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let grace = Duration::from_millis(500);
        let brokers = [online(1, 10), online(2, 20)];
        let mut t = LivenessTracker::new();
        t.reset(brokers, t0);
        t.stream_opened(1, 10, ms(10));
        t.stream_opened(2, 20, ms(10));
        assert!(t.disconnected(&brokers, ms(5000), grace).is_empty());
        // Broker 1 dies; broker 2 reconnects within the grace (a new stream, then the old
        // one's close arrives late and is outweighed).
        t.stream_closed(1, 10, ms(6000));
        t.stream_opened(2, 20, ms(6000));
        t.stream_closed(2, 20, ms(6001));
        assert!(t.disconnected(&brokers, ms(6499), grace).is_empty());
        assert_eq!(t.disconnected(&brokers, ms(6500), grace), vec![(1, 10)]);
        assert!(
            t.disconnected(&brokers, ms(7000), grace).is_empty(),
            "one fence in flight"
        );
        // Fenced (OFFLINE now). A heartbeat after a close means the process lives (only its
        // stream broke).
        t.fence_finished(1);
        let brokers = [
            BrokerView {
                online: false,
                ..online(1, 10)
            },
            online(2, 20),
        ];
        t.stream_opened(2, 20, ms(8000));
        t.stream_closed(2, 20, ms(8000));
        t.stream_closed(2, 20, ms(8000));
        t.heard(2, 20, ms(8100));
        assert!(t.disconnected(&brokers, ms(9000), grace).is_empty());
        // A new incarnation: the old one's stream closing is not its disconnect.
        let newer = [online(2, 21)];
        t.stream_opened(2, 21, ms(9000));
        t.stream_closed(2, 20, ms(9001));
        assert!(t.disconnected(&newer, ms(10_000), grace).is_empty());
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

    /// Item 8: every new term gave every broker a full session again, so a node that kept
    /// losing and regaining leadership never fenced a dead broker. The time it already listened
    /// in earlier terms without hearing the broker counts.
    #[test]
    fn time_listened_in_earlier_terms_counts_toward_the_session() {
        let t0 = Instant::now();
        let brokers = [online(1, 10)];
        let mut t = LivenessTracker::new();
        t.reset(brokers, t0);
        for s in 1..=20 {
            assert!(t.overdue(&brokers, secs(t0, s), TIMEOUT).is_empty());
        }
        // Another controller leads from 20 s to 40 s; this one leads again.
        t.reset(brokers, secs(t0, 40));
        for s in 41..50 {
            assert!(
                t.overdue(&brokers, secs(t0, s), TIMEOUT).is_empty(),
                "at {s} s"
            );
        }
        assert_eq!(
            t.overdue(&brokers, secs(t0, 50), TIMEOUT),
            vec![(1, 10)],
            "20 s listened before and 10 s now make the 30 s session"
        );
    }

    #[test]
    fn a_gap_between_checks_is_not_listening() {
        let t0 = Instant::now();
        let brokers = [online(1, 10)];
        let mut t = LivenessTracker::for_check_interval(Duration::from_secs(1));
        t.reset(brokers, t0);
        for s in 1..=10 {
            assert!(t.overdue(&brokers, secs(t0, s), TIMEOUT).is_empty());
        }
        // Paused from 10 s to 50 s: the 40 s do not count, the 10 s before do.
        for s in 50..70 {
            assert!(
                t.overdue(&brokers, secs(t0, s), TIMEOUT).is_empty(),
                "at {s} s"
            );
        }
        assert_eq!(t.overdue(&brokers, secs(t0, 70), TIMEOUT), vec![(1, 10)]);
        // Without a lease (stop_listening) the time does not count either.
        let mut t = LivenessTracker::for_check_interval(Duration::from_secs(1));
        t.reset(brokers, t0);
        assert!(t.overdue(&brokers, secs(t0, 1), TIMEOUT).is_empty());
        t.stop_listening();
        // Listening again from 2 s: 1 s before and 28 s since is not yet the session.
        for s in 2..=30 {
            assert!(
                t.overdue(&brokers, secs(t0, s), TIMEOUT).is_empty(),
                "at {s} s"
            );
        }
        assert_eq!(t.overdue(&brokers, secs(t0, 31), TIMEOUT), vec![(1, 10)]);
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
