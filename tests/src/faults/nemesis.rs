//! Plays a [`plan`](super::schedule::plan) against the cluster: for each fault, wait its quiet
//! gap, resolve its target from the live metadata, inject it, hold it, heal everything. A
//! separate watcher restarts (and reports) nodes that exit although no fault stopped them.
//!
//! A fault's steps are injected at their offsets, each resolving its target when its time
//! comes (a later step aimed at "the leader of partition 1" hits whoever took over). Healing
//! is the same for every fault ([`Cluster::heal_all`]) and comes once, at the end of the hold:
//! remove every cut, resume every paused node, start every node that is down. So a fault never
//! outlives its hold, whatever went wrong while injecting it.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex;

use super::cluster::{Cluster, Crash};
use super::history::{Clock, Micros, secs};
use super::layout::Node;
use super::meta::Meta;
use super::schedule::{Fault, FaultKind, OneWay, Step, Target};
use super::{interrupted, say};

pub type SharedCluster = Arc<Mutex<Cluster>>;

/// How long a fault's target may take to exist (a partition without a leader right after the
/// previous fault, say) before the fault is skipped.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(8);
/// A node that crashes more often than this is left down (and reported).
const CRASH_RESTARTS_MAX: usize = 5;

/// What happened to one planned fault.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub index: usize,
    pub kind: FaultKind,
    pub planned: String,
    /// The nodes it hit, once resolved.
    pub nodes: Vec<String>,
    /// What each step did.
    pub steps: Vec<String>,
    pub injected_at: Option<Micros>,
    pub healed_at: Option<Micros>,
    /// Why it was not injected (no target).
    pub skipped: Option<String>,
    /// A harness operation that failed (the run fails).
    pub error: Option<String>,
}

/// A node that exited by itself.
#[derive(Clone, Debug, Serialize)]
pub struct CrashEvent {
    pub at: Micros,
    pub node: String,
    pub status: String,
    pub restarted: bool,
    #[serde(skip)]
    pub log_tail: String,
}

/// Sleeps `d` in small steps, stopping early on Ctrl-C; returns whether it was interrupted.
pub async fn sleep_interruptible(d: Duration) -> bool {
    let until = tokio::time::Instant::now() + d;
    loop {
        if interrupted() {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            return false;
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(100))).await;
    }
}

pub struct Nemesis {
    pub cluster: SharedCluster,
    pub meta: Arc<Meta>,
    pub clock: Clock,
}

impl Nemesis {
    /// Plays every fault of `plan` in order (stopping early on Ctrl-C).
    pub async fn run(&self, plan: &[Fault]) -> Vec<FaultRecord> {
        let mut records = Vec::new();
        for fault in plan {
            if sleep_interruptible(Duration::from_millis(fault.gap_before_ms)).await {
                break;
            }
            let record = self.play(fault).await;
            let done = record.skipped.is_none() && record.error.is_none();
            say(
                &self.clock,
                &format!(
                    "fault {} {}: {}",
                    fault.index,
                    if done { "healed" } else { "ended" },
                    record
                        .skipped
                        .as_deref()
                        .or(record.error.as_deref())
                        .unwrap_or("ok")
                ),
            );
            records.push(record);
            if interrupted() {
                break;
            }
        }
        records
    }

    async fn play(&self, fault: &Fault) -> FaultRecord {
        let mut record = FaultRecord {
            index: fault.index,
            kind: fault.kind,
            planned: fault.to_string(),
            nodes: Vec::new(),
            steps: Vec::new(),
            injected_at: None,
            healed_at: None,
            skipped: None,
            error: None,
        };
        let start = tokio::time::Instant::now();
        let mut rewind = Vec::new();
        for step in &fault.steps {
            let at = start + Duration::from_millis(step.at_ms);
            if sleep_interruptible(at.saturating_duration_since(tokio::time::Instant::now())).await
            {
                break;
            }
            // A later step of a compound fault waits less: its moment matters.
            let patience = if step.at_ms == 0 {
                RESOLVE_TIMEOUT
            } else {
                Duration::from_secs(2)
            };
            let nodes = match self.resolve(step.target, patience).await {
                Ok(nodes) => nodes,
                Err(why) => {
                    record
                        .steps
                        .push(format!("{step}: skipped, no target: {why}"));
                    continue;
                }
            };
            let names: Vec<String> = nodes.iter().map(ToString::to_string).collect();
            say(
                &self.clock,
                &format!("fault #{} step {step} -> {}", fault.index, names.join(", ")),
            );
            record.steps.push(format!("{step} -> {}", names.join(", ")));
            record.nodes.extend(nodes.iter().map(|n| n.name()));
            record.injected_at.get_or_insert(self.clock.now());
            if let Err(e) = self.inject(step, &nodes).await {
                record.error = Some(format!("injecting {step}: {e}"));
                break;
            }
            if step.kind == FaultKind::SabotageRewindBrokerDisks {
                rewind = nodes;
            }
        }
        if record.injected_at.is_none() {
            record.skipped = Some(record.steps.join("; "));
        } else if record.error.is_none() {
            let end = start + Duration::from_millis(fault.hold_ms);
            sleep_interruptible(end.saturating_duration_since(tokio::time::Instant::now())).await;
        }
        let mut c = self.cluster.lock().await;
        if !rewind.is_empty()
            && let Err(e) = c.rewind_disks(&rewind)
        {
            record
                .error
                .get_or_insert(format!("rewinding the disks: {e}"));
        }
        let healed = c.heal_all().await;
        record.healed_at = Some(self.clock.now());
        if let Err(e) = healed {
            record.error.get_or_insert(format!("healing: {e}"));
        }
        record
    }

    /// The nodes `target` names now, waiting (bounded) for a leader to exist.
    async fn resolve(&self, target: Target, patience: Duration) -> Result<Vec<Node>, String> {
        let until = tokio::time::Instant::now() + patience;
        loop {
            let r = match target {
                Target::PartitionLeader(p) => self
                    .meta
                    .partition_leader_now(p)
                    .await
                    .map(|b| vec![Node::Broker(b)]),
                Target::ControllerLeader => self
                    .meta
                    .controller_leader()
                    .await
                    .map(|c| vec![Node::Controller(c)]),
                Target::Broker(b) => Ok(vec![Node::Broker(b)]),
                Target::Controller(c) => Ok(vec![Node::Controller(c)]),
                Target::AllBrokers => Ok(self.cluster.lock().await.brokers()),
            };
            match r {
                Ok(nodes) => return Ok(nodes),
                Err(e) if tokio::time::Instant::now() >= until || interrupted() => {
                    return Err(e);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn inject(&self, step: &Step, nodes: &[Node]) -> Result<(), String> {
        let mut guard = self.cluster.lock().await;
        let c = &mut *guard;
        let all = c.nodes();
        let brokers = c.brokers();
        let controllers = c.controllers();
        let others = |n: Node, among: &[Node]| -> Vec<Node> {
            among.iter().copied().filter(|&m| m != n).collect()
        };
        match step.kind {
            FaultKind::Compound => return Err("a compound fault is not a step".into()),
            FaultKind::SabotageRewindBrokerDisks => c.snapshot_disks(nodes)?,
            FaultKind::KillPartitionLeader
            | FaultKind::KillControllerLeader
            | FaultKind::KillAllBrokers => {
                for &n in nodes {
                    c.kill(n)?;
                }
            }
            FaultKind::RestartPartitionLeader | FaultKind::RestartControllerLeader => {
                for &n in nodes {
                    c.terminate(n, Duration::from_secs(15)).await?;
                }
            }
            FaultKind::PowerLossBroker
            | FaultKind::PowerLossController
            | FaultKind::PowerLossAllBrokers => c.power_loss(nodes)?,
            FaultKind::PauseShort | FaultKind::PauseLong => {
                for &n in nodes {
                    c.pause(n)?;
                }
            }
            FaultKind::IsolateBroker | FaultKind::IsolateControllerLeader => {
                for &n in nodes {
                    let mut rest = others(n, &all);
                    rest.push(Node::Client);
                    c.cuts.cut_both(&c.layout, n, &rest).await?;
                }
            }
            FaultKind::ZombieLeaderReachingControllers => {
                for &n in nodes {
                    c.cuts.cut_both(&c.layout, n, &others(n, &brokers)).await?;
                }
            }
            FaultKind::ZombieLeaderClientsOnly => {
                for &n in nodes {
                    let mut rest = others(n, &brokers);
                    rest.extend(&controllers);
                    c.cuts.cut_both(&c.layout, n, &rest).await?;
                }
            }
            FaultKind::OneWayCut => {
                let n = *nodes.first().ok_or("no node")?;
                let pairs: Vec<(Node, Node)> = match step
                    .one_way
                    .ok_or("a one-way cut without its direction")?
                {
                    OneWay::LeaderToFollowers(_) => {
                        others(n, &brokers).into_iter().map(|b| (n, b)).collect()
                    }
                    OneWay::FollowersToLeader(_) => {
                        others(n, &brokers).into_iter().map(|b| (b, n)).collect()
                    }
                    OneWay::LeaderToClients(_) => vec![(n, Node::Client)],
                    OneWay::BrokerToControllers(_) => controllers.iter().map(|&k| (n, k)).collect(),
                    OneWay::ControllersToBroker(_) => controllers.iter().map(|&k| (k, n)).collect(),
                    OneWay::ControllerLeaderToFollowers => others(n, &controllers)
                        .into_iter()
                        .map(|k| (n, k))
                        .collect(),
                };
                for (from, to) in pairs {
                    c.cuts.cut(&c.layout, from, to).await?;
                }
            }
        }
        Ok(())
    }
}

/// Every `period`, restarts the nodes that exited by themselves (each at most
/// [`CRASH_RESTARTS_MAX`] times) and records them, until `stop`.
pub async fn watch_crashes(
    cluster: SharedCluster,
    clock: Clock,
    events: Arc<std::sync::Mutex<Vec<CrashEvent>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let period = Duration::from_millis(250);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut c = cluster.lock().await;
        let crashes: Vec<Crash> = c.unexpected_exits();
        for crash in crashes {
            let mut events = events.lock().unwrap_or_else(|e| e.into_inner());
            let before = events
                .iter()
                .filter(|e| e.node == crash.node.name())
                .count();
            let restart = before < CRASH_RESTARTS_MAX;
            let restarted = restart && c.start(crash.node).is_ok();
            say(
                &clock,
                &format!(
                    "CRASH: {} exited by itself ({}){}",
                    crash.node,
                    crash.status,
                    if restarted {
                        "; restarted"
                    } else {
                        "; left down"
                    }
                ),
            );
            events.push(CrashEvent {
                at: clock.now(),
                node: crash.node.name(),
                status: crash.status,
                restarted,
                log_tail: crash.log_tail,
            });
        }
    }
}

/// `us` as `12.345s`.
pub fn at(us: Option<Micros>) -> String {
    us.map_or("-".into(), |u| format!("{:.3}s", secs(u)))
}
