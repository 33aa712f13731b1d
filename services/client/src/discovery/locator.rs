//! The cached controller leader and the rules for finding and forgetting it.

use std::fmt;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use super::{
    Backoff, ChannelPool, ControllerProbe, DiscoveryError, DiscoveryOptions, GrpcProbe, endpoint,
};

/// Controllers a locator keeps learned at most (the group is far smaller).
pub const LEARNED_CONTROLLERS_MAX: usize = 64;

/// The controller leader as last learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's node id (never 0).
    pub id: u64,
    /// The leader's ControllerService address, `host:port`.
    pub address: String,
    /// The Raft term in which it leads, as reported by whoever named it.
    pub term: u64,
}

/// What the locator believes; one lock so the rules see a consistent view.
#[derive(Clone, Debug, Default)]
struct State {
    leader: Option<LeaderInfo>,
    /// The term of the cached leader, kept after the leader is forgotten so that a push is
    /// accepted only when it is newer than anything learned so far.
    term: u64,
    heartbeat_failures: u32,
    /// A NOT_LEADER hint to try before asking every controller.
    hint: Option<String>,
}

/// The discovery loop's own state; holding its lock makes discovery single-flight.
struct Discovery {
    backoff: Backoff,
    failed_rounds: u64,
    last_warning: Option<Instant>,
}

/// Finds and caches the controller leader. Share it behind an `Arc`; every method takes
/// `&self`.
///
/// - [`leader`](Self::leader) returns the cached leader or discovers one, retrying forever
///   with backoff: wrap it in a `select!` or timeout where the caller must stay responsive.
///   Only one discovery runs at a time; concurrent callers wait for its result.
/// - The `on_*` methods apply the invalidation rules; [`invalidate`](Self::invalidate)
///   forgets the leader unconditionally.
pub struct LeaderLocator<P = GrpcProbe> {
    controllers: Vec<String>,
    /// Controllers learned from the cluster itself (see [`LeaderLocator::learn_controllers`]),
    /// asked after the configured ones.
    learned: std::sync::Mutex<Vec<String>>,
    opts: DiscoveryOptions,
    probe: P,
    state: watch::Sender<State>,
    discovery: Mutex<Discovery>,
}

impl<P> fmt::Debug for LeaderLocator<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderLocator")
            .field("controllers", &self.controllers)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl LeaderLocator<GrpcProbe> {
    /// A locator asking `controllers` (`host:port` each) over gRPC.
    pub fn new(
        controllers: Vec<String>,
        opts: DiscoveryOptions,
    ) -> Result<LeaderLocator<GrpcProbe>, DiscoveryError> {
        let channels = ChannelPool::new(opts.call_timeout);
        LeaderLocator::with_probe(
            controllers,
            opts.clone(),
            GrpcProbe::new(channels, opts.call_timeout),
        )
    }
}

impl<P: ControllerProbe> LeaderLocator<P> {
    /// A locator asking `controllers` through `probe`. Fails when the list is empty or an
    /// address is malformed; duplicates are dropped.
    pub fn with_probe(
        controllers: Vec<String>,
        opts: DiscoveryOptions,
        probe: P,
    ) -> Result<LeaderLocator<P>, DiscoveryError> {
        let mut unique: Vec<String> = Vec::with_capacity(controllers.len());
        for address in controllers {
            let address = address.trim().to_string();
            endpoint(&address, opts.call_timeout)?;
            if !unique.contains(&address) {
                unique.push(address);
            }
        }
        if unique.is_empty() {
            return Err(DiscoveryError::NoControllers);
        }
        let discovery = Discovery {
            backoff: Backoff::from_options(&opts),
            failed_rounds: 0,
            last_warning: None,
        };
        Ok(LeaderLocator {
            controllers: unique,
            learned: std::sync::Mutex::new(Vec::new()),
            opts,
            probe,
            state: watch::Sender::new(State::default()),
            discovery: Mutex::new(discovery),
        })
    }

    /// The configured controllers, deduplicated, in order.
    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// Replaces the controllers learned from the cluster (a heartbeat answer or DescribeCluster
    /// lists the group's members): discovery asks them too, after the configured ones, so a
    /// controller added since start is found and a client whose configured controllers were all
    /// replaced still finds the leader. Malformed addresses are skipped; at most
    /// [`LEARNED_CONTROLLERS_MAX`] are kept.
    pub fn learn_controllers(&self, addresses: impl IntoIterator<Item = String>) {
        let mut learned: Vec<String> = Vec::new();
        for a in addresses {
            let a = a.trim().to_string();
            if learned.len() >= LEARNED_CONTROLLERS_MAX
                || a.is_empty()
                || self.controllers.contains(&a)
                || learned.contains(&a)
                || endpoint(&a, self.opts.call_timeout).is_err()
            {
                continue;
            }
            learned.push(a);
        }
        let mut current = self.learned.lock().expect("not poisoned");
        if *current != learned {
            tracing::debug!(?learned, "controllers learned from the cluster");
            *current = learned;
        }
    }

    /// The configured controllers, then the learned ones.
    pub fn all_controllers(&self) -> Vec<String> {
        let learned = self.learned.lock().expect("not poisoned");
        self.controllers
            .iter()
            .chain(learned.iter())
            .cloned()
            .collect()
    }

    /// The probe (e.g. to share a [`GrpcProbe`]'s channels).
    pub fn probe(&self) -> &P {
        &self.probe
    }

    /// The cached leader, without discovering.
    pub fn cached(&self) -> Option<LeaderInfo> {
        self.state.borrow().leader.clone()
    }

    /// The newest term learned (from discovery or a push), 0 when none yet.
    pub fn term(&self) -> u64 {
        self.state.borrow().term
    }

    /// The cached leader, or the one discovery finds: first a pending NOT_LEADER hint alone,
    /// then every controller at once; the first OK answer naming a leader wins. When a round
    /// finds none, waits 1, 2, 4, 8, 8, … s (jittered) and tries again, forever; a push or a
    /// hint arriving meanwhile ends the wait early. Cancel-safe.
    pub async fn leader(&self) -> LeaderInfo {
        if let Some(leader) = self.cached() {
            return leader;
        }
        let mut discovery = self.discovery.lock().await;
        loop {
            if let Some(leader) = self.cached() {
                return leader;
            }
            let mut hint = None;
            self.state.send_if_modified(|s| {
                hint = s.hint.take();
                false
            });
            if let Some(address) = hint {
                match self.ask(&address).await {
                    Ok(found) => {
                        tracing::debug!(%address, leader = found.id, "NOT_LEADER hint confirmed");
                        discovery.succeeded(&self.all_controllers());
                        return self.install(found);
                    }
                    Err(why) => {
                        tracing::debug!(%address, %why, "NOT_LEADER hint did not name a leader; asking every controller");
                    }
                }
            }
            match self.round().await {
                Ok(found) => {
                    discovery.succeeded(&self.all_controllers());
                    return self.install(found);
                }
                Err(failures) => {
                    let delay = discovery.backoff.next_delay();
                    discovery.failed(&self.opts, &failures, delay);
                    let mut changes = self.state.subscribe();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = changes.wait_for(|s| s.leader.is_some() || s.hint.is_some()) => {}
                    }
                }
            }
        }
    }

    /// Forgets the cached leader; the next [`leader`](Self::leader) discovers.
    pub fn invalidate(&self) {
        self.state.send_if_modified(|s| {
            s.heartbeat_failures = 0;
            s.leader.take().is_some()
        });
    }

    /// A controller answered NOT_LEADER: forget the cached leader and, when the answer named
    /// one, try that address first on the next [`leader`](Self::leader).
    pub fn on_not_leader(&self, hint: Option<String>) {
        let hint = hint.map(|h| h.trim().to_string()).filter(|h| !h.is_empty());
        self.state.send_modify(|s| {
            s.leader = None;
            s.heartbeat_failures = 0;
            if hint.is_some() {
                s.hint = hint;
            }
        });
    }

    /// A call to the cached leader failed (unreachable, timed out, no leader). After
    /// [`heartbeat_failures_max`](DiscoveryOptions::heartbeat_failures_max) consecutive
    /// failures the leader is forgotten; returns whether this call forgot it.
    pub fn on_heartbeat_failure(&self) -> bool {
        let max = self.opts.heartbeat_failures_max.max(1);
        let mut forgot = None;
        self.state.send_if_modified(|s| {
            s.heartbeat_failures = s.heartbeat_failures.saturating_add(1);
            if s.heartbeat_failures < max || s.leader.is_none() {
                return false;
            }
            s.heartbeat_failures = 0;
            forgot = s.leader.take();
            true
        });
        if let Some(old) = &forgot {
            tracing::warn!(
                leader = old.id,
                address = %old.address,
                failures = max,
                "controller leader failed {max} calls in a row; rediscovering"
            );
        }
        forgot.is_some()
    }

    /// A call to the cached leader succeeded: the failure count starts over.
    pub fn on_heartbeat_success(&self) {
        self.state.send_if_modified(|s| {
            s.heartbeat_failures = 0;
            false
        });
    }

    /// A CONTROLLER_CHANGED push: accepted (and cached as the leader) only when `term` is
    /// higher than any term learned so far; a stale or repeated push is ignored. Returns
    /// whether it was accepted. A push naming no leader (`leader_id` 0 or no address) still
    /// raises the term and forgets the cached leader.
    pub fn on_controller_changed(&self, term: u64, leader_id: u64, address: String) -> bool {
        let address = address.trim().to_string();
        let accepted = self.state.send_if_modified(|s| {
            if term <= s.term {
                return false;
            }
            s.term = term;
            s.heartbeat_failures = 0;
            s.hint = None;
            s.leader = (leader_id != 0 && !address.is_empty()).then(|| LeaderInfo {
                id: leader_id,
                address: address.clone(),
                term,
            });
            true
        });
        if accepted {
            tracing::info!(leader = leader_id, %address, term, "controller leader changed (push)");
        } else {
            tracing::debug!(leader = leader_id, %address, term, known_term = self.term(), "ignoring stale CONTROLLER_CHANGED push");
        }
        accepted
    }

    /// Caches a leader found by discovery unless a push installed a newer one meanwhile;
    /// returns the leader now cached.
    fn install(&self, found: LeaderInfo) -> LeaderInfo {
        let mut current = found.clone();
        self.state.send_if_modified(|s| {
            if let Some(pushed) = &s.leader
                && pushed.term > found.term
            {
                current = pushed.clone();
                return false;
            }
            s.term = found.term;
            s.heartbeat_failures = 0;
            s.hint = None;
            s.leader = Some(found.clone());
            true
        });
        if current == found {
            tracing::info!(leader = found.id, address = %found.address, term = found.term, "found controller leader");
        }
        current
    }

    /// One round: every controller at once; the first OK answer naming a leader wins and the
    /// calls still running are dropped. Otherwise each controller's reason, for the log.
    async fn round(&self) -> Result<LeaderInfo, Vec<String>> {
        let controllers = self.all_controllers();
        let mut calls: FuturesUnordered<_> = controllers
            .iter()
            .map(|address| async move { (address, self.ask(address).await) })
            .collect();
        let mut failures = Vec::with_capacity(controllers.len());
        while let Some((address, answer)) = calls.next().await {
            match answer {
                Ok(found) => return Ok(found),
                Err(why) => failures.push(format!("{address}: {why}")),
            }
        }
        Err(failures)
    }

    /// Asks one controller, bounded by the call timeout; only an answer naming a leader is a
    /// success.
    async fn ask(&self, address: &str) -> Result<LeaderInfo, String> {
        let timeout = self.opts.call_timeout;
        match tokio::time::timeout(timeout, self.probe.get_info(address)).await {
            Err(_) => Err(format!("no answer within {timeout:?}")),
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
            Ok(Ok(info)) if info.leader_id != 0 && !info.leader_address.is_empty() => {
                Ok(LeaderInfo {
                    id: info.leader_id,
                    address: info.leader_address,
                    term: info.term,
                })
            }
            Ok(Ok(info)) => Err(format!(
                "node {} knows no leader (term {})",
                info.node_id, info.term
            )),
        }
    }
}

impl Discovery {
    fn succeeded(&mut self, controllers: &[String]) {
        if self.failed_rounds > 0 {
            tracing::info!(
                failed_rounds = self.failed_rounds,
                ?controllers,
                "controller leader reachable again"
            );
        }
        self.backoff.reset();
        self.failed_rounds = 0;
        self.last_warning = None;
    }

    /// Logs the first failed round and then at most once per `log_interval`.
    fn failed(&mut self, opts: &DiscoveryOptions, failures: &[String], delay: std::time::Duration) {
        self.failed_rounds += 1;
        let now = Instant::now();
        let due = self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= opts.log_interval);
        if due {
            self.last_warning = Some(now);
            tracing::warn!(
                failed_rounds = self.failed_rounds,
                retry_in = ?delay,
                ?failures,
                "no controller named a leader; retrying"
            );
        } else {
            tracing::debug!(failed_rounds = self.failed_rounds, retry_in = ?delay, ?failures, "no controller named a leader");
        }
    }
}

#[cfg(test)]
mod tests;
