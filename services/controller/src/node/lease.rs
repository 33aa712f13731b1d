//! [`LeaderLease`]: how long this leader may be sure no other controller leads, on the
//! monotonic clock.
//!
//! The Raft core counts ticks, and a process that was paused (SIGSTOP, a stalled VM) resumes
//! with its tick count where it left it: still the leader in its own eyes, maybe long after
//! another node was elected. Answers that change or reveal liveness (a broker heartbeat
//! answered ONLINE, a broker fenced for silence, GetControllerInfo naming itself the leader)
//! need more: a lease, measured in wall time.
//!
//! A follower that took an append (a heartbeat included) from the leader of its term refuses
//! every vote and pre-vote for the minimum election timeout after it (check-quorum's "live
//! leader" rule; its ticks can only run slower than the wall clock, and the first may come at
//! once, so it waits at least `election_timeout_min_ticks - 1` ticks). So once a majority
//! answered appends sent at or after `t` in this term, no other leader can exist before
//! `t + (min - 1) ticks`. The lease is that, shortened by a tenth for clock-rate error.
//!
//! # To ensure correctness
//! - Only answers to requests sent in the current term, answered in the current term and not
//!   `liveness_only` (see `follower_view.rs`) count; the send time is taken before the call.
//! - The quorum counts the leader itself as acknowledged now.
//! - A lease is never valid while a leadership transfer is under way (the transferee
//!   campaigns without waiting for the timeout) or in another term than the one it was
//!   taken in.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dmq_raft::{NodeId, Term};

/// The lease as the Raft thread publishes it and the service reads it.
#[derive(Debug)]
pub struct LeaderLease {
    base: Instant,
    /// Nanoseconds after `base` until which the lease holds; 0: no lease.
    until_nanos: AtomicU64,
    term: AtomicU64,
}

impl Default for LeaderLease {
    fn default() -> LeaderLease {
        LeaderLease {
            base: Instant::now(),
            until_nanos: AtomicU64::new(0),
            term: AtomicU64::new(0),
        }
    }
}

impl LeaderLease {
    /// Whether this node holds a leader lease for `term` now.
    pub fn holds(&self, term: Term) -> bool {
        self.holds_at(term, Instant::now())
    }

    fn holds_at(&self, term: Term, now: Instant) -> bool {
        let until = self.until_nanos.load(Ordering::Acquire);
        until != 0
            && self.term.load(Ordering::Acquire) == term
            && now.saturating_duration_since(self.base).as_nanos() < u128::from(until)
    }

    /// When the lease ends, if it holds for `term`.
    pub fn until(&self, term: Term) -> Option<Instant> {
        let until = self.until_nanos.load(Ordering::Acquire);
        (until != 0 && self.term.load(Ordering::Acquire) == term)
            .then(|| self.base + Duration::from_nanos(until))
    }

    pub(crate) fn set(&self, term: Term, until: Option<Instant>) {
        let nanos = until.map_or(0, |t| {
            (t.saturating_duration_since(self.base).as_nanos() as u64).max(1)
        });
        // Never a moment with the new term and the old deadline: clear, set term, set.
        self.until_nanos.store(0, Ordering::Release);
        self.term.store(term, Ordering::Release);
        self.until_nanos.store(nanos, Ordering::Release);
    }
}

/// The leader's record of acknowledgments, kept by the Raft thread.
#[derive(Debug, Default)]
pub(crate) struct LeaseTracker {
    term: Term,
    /// Per follower, the latest send time of a request of `term` it answered in `term`.
    acked: BTreeMap<NodeId, Instant>,
}

impl LeaseTracker {
    pub(crate) fn term(&self) -> Term {
        self.term
    }

    /// Starts over (a new term or role).
    pub(crate) fn reset(&mut self, term: Term) {
        self.term = term;
        self.acked.clear();
    }

    /// `from` answered, in `term`, a request of `term` sent at `sent_at`.
    pub(crate) fn acked(&mut self, from: NodeId, term: Term, sent_at: Instant) {
        if term != self.term {
            return;
        }
        let t = self.acked.entry(from).or_insert(sent_at);
        *t = (*t).max(sent_at);
    }

    /// Until when the lease holds given `quorum` (this node included) and the lease length:
    /// the quorum-th latest acknowledgment, this node counting as now.
    pub(crate) fn until(&self, quorum: usize, length: Duration, now: Instant) -> Option<Instant> {
        let mut times: Vec<Instant> = self.acked.values().copied().collect();
        times.push(now);
        times.sort_unstable_by(|a, b| b.cmp(a));
        times.get(quorum.checked_sub(1)?).map(|&t| t + length)
    }
}

/// The lease length for `election_timeout_min_ticks` ticks of `tick` (see the module docs).
pub(crate) fn lease_length(tick: Duration, election_timeout_min_ticks: u32) -> Duration {
    tick * election_timeout_min_ticks.saturating_sub(1) * 9 / 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_runs_from_the_quorum_th_latest_acknowledged_send() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let length = lease_length(ms(50), 10);
        assert_eq!(length, ms(405));
        let mut l = LeaseTracker::default();
        l.reset(3);
        // Alone among three: no lease.
        assert_eq!(l.until(2, length, t0), None);
        // Alone in a cluster of one: always.
        assert_eq!(l.until(1, length, t0), Some(t0 + length));
        l.acked(2, 3, t0);
        l.acked(3, 3, t0 + ms(100));
        // Quorum 2: self (now) and the latest follower.
        assert_eq!(
            l.until(2, length, t0 + ms(200)),
            Some(t0 + ms(100) + length)
        );
        // Quorum 3: the oldest of the three.
        assert_eq!(l.until(3, length, t0 + ms(200)), Some(t0 + length));
        // An older answer never moves it back; another term's never counts.
        l.acked(3, 3, t0 + ms(50));
        l.acked(2, 4, t0 + ms(150));
        assert_eq!(l.until(3, length, t0 + ms(200)), Some(t0 + length));
        l.reset(4);
        assert_eq!(l.until(2, length, t0 + ms(200)), None);
    }

    #[test]
    fn a_published_lease_holds_only_in_its_term_and_until_its_end() {
        let lease = LeaderLease::default();
        let now = Instant::now();
        assert!(!lease.holds(1));
        lease.set(1, Some(now + Duration::from_secs(60)));
        assert!(lease.holds(1));
        assert!(!lease.holds(2));
        assert!(!lease.holds_at(1, now + Duration::from_secs(61)));
        lease.set(1, None);
        assert!(!lease.holds(1));
    }
}
