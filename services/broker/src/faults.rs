//! Test-only fault points: named places in the broker where a test can pause the code that
//! reaches them, count how often they were reached, or make an operation fail. Compiled in only
//! for this crate's tests and with the `fault-injection` feature (never in a release build of
//! `dmq`); every other build has no trace of them ([`fault_point!`] expands to nothing).
//!
//! Each broker has its own set ([`BrokerConfig::faults`](crate::BrokerConfig)), so tests with
//! several in-process brokers steer each one separately. A test arms a point with
//! [`FaultPoints::hold`], waits until some code is parked there with
//! [`FaultPoints::wait_hits`], rearranges the world, and lets it go with
//! [`FaultPoints::release`].
//!
//! Points (the name says where): `produce.after_append` (an acks>=1 Produce appended, before
//! its sync), `replica_fetch.before_read` (a ReplicaFetch passed its checks and counted
//! the follower's progress; it is about to read), `follower.before_fetch` (a follower is about to send a
//! ReplicaFetch), `manager.before_reconcile` (the partition manager is about to apply a new
//! metadata snapshot), `isr.before_alter` (an ISR change is about to be sent), and the failure
//! switch `log.sync` (the next group-commit syncs fail as a failed fdatasync would).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

#[derive(Default)]
struct Point {
    held: watch::Sender<bool>,
    hits: watch::Sender<u64>,
    fail: AtomicBool,
}

/// One broker's fault points; clones share them.
#[derive(Clone, Default)]
pub struct FaultPoints {
    points: Arc<Mutex<HashMap<&'static str, Arc<Point>>>>,
}

impl std::fmt::Debug for FaultPoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultPoints")
    }
}

/// Configurations compare equal whatever their fault points (they are not settings).
impl PartialEq for FaultPoints {
    fn eq(&self, _: &FaultPoints) -> bool {
        true
    }
}

impl FaultPoints {
    fn point(&self, name: &'static str) -> Arc<Point> {
        self.points
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name)
            .or_default()
            .clone()
    }

    /// From now on, code reaching `name` waits there until [`release`](Self::release).
    pub fn hold(&self, name: &'static str) {
        self.point(name).held.send_replace(true);
    }

    /// Lets everything parked at `name` (and later arrivals) go on.
    pub fn release(&self, name: &'static str) {
        self.point(name).held.send_replace(false);
    }

    /// Makes the operation at `name` fail (while `on`).
    pub fn fail(&self, name: &'static str, on: bool) {
        self.point(name).fail.store(on, Ordering::SeqCst);
    }

    /// How often `name` was reached so far.
    pub fn hits(&self, name: &'static str) -> u64 {
        *self.point(name).hits.borrow()
    }

    /// Waits until `name` was reached at least `n` times; panics after `max` (a test bug or a
    /// broker that never got there).
    pub async fn wait_hits(&self, name: &'static str, n: u64, max: Duration) {
        let mut hits = self.point(name).hits.subscribe();
        let reached = tokio::time::timeout(max, hits.wait_for(|h| *h >= n)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "fault point {name} was not reached {n} times within {max:?}"
        );
    }

    /// At the point `name`: counts the visit and waits while the point is held.
    pub(crate) async fn hit(&self, name: &'static str) {
        let point = self.point(name);
        let mut held = point.held.subscribe();
        point.hits.send_modify(|h| *h += 1);
        let _ = held.wait_for(|held| !*held).await;
    }

    /// Whether the operation at `name` must fail now.
    pub(crate) fn fails(&self, name: &'static str) -> bool {
        self.point(name).fail.load(Ordering::SeqCst)
    }
}
