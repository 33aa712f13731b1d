//! The partition manager: turns every new metadata snapshot into partition roles, and runs the
//! periodic work of the partitions.
//!
//! On each snapshot (the cache only moves forward), for each partition of each topic (by name
//! and topic id) with this broker among its replicas:
//! - open its log (created empty if new) in the [`LogStore`](crate::log::LogStore);
//! - leader == this broker: lead it at the snapshot's leader epoch (the epoch is recorded in the
//!   log at its end offset and synced first); another broker: follow it at that epoch; no
//!   leader: idle. A role that changed is stopped first (leader closed, follower joined).
//!
//! Partitions no longer listed for this broker stop their role. When their topic is gone from
//! the snapshot (or has another id: re-created), their data is deleted; so is, at the first
//! snapshot after start, the stored data of topics deleted while the broker was down. Nothing is
//! ever deleted on an older snapshot: only a snapshot newer than the one that listed a topic can
//! lack it.
//!
//! Periodic: ISR shrink checks (every `replica_lag_time_max / 4`, 10 ms to 1 s), high watermark
//! checkpoints, retention, and the partition metrics.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dmq_proto::v1 as pb;
use futures::future::join_all;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval};

use super::follower::FollowerHandle;
use super::leader::{IsrOutcome, IsrRequest, Leader, LeaderInit};
use super::{Partition, Role, TopicSettings, isr};
use crate::errors::DataError;
use crate::metadata_cache::MetadataSnapshot;
use crate::state::Broker;

/// How often the partition metrics are published.
const METRICS_INTERVAL: Duration = Duration::from_secs(2);

/// The role the metadata gives this broker for a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Desired {
    Idle,
    Leader { epoch: u64 },
    Follower { leader: u64, epoch: u64 },
}

impl Desired {
    fn of(me: u64, p: &pb::PartitionMetadata) -> Desired {
        match p.leader {
            0 => Desired::Idle,
            l if l == me => Desired::Leader {
                epoch: p.leader_epoch,
            },
            leader => Desired::Follower {
                leader,
                epoch: p.leader_epoch,
            },
        }
    }
}

/// Runs until `stop` turns true, then stops every role, checkpoints the high watermarks and
/// syncs.
pub(crate) async fn run(broker: Arc<Broker>, stop: watch::Receiver<bool>) {
    tokio::join!(
        reconcile_loop(broker.clone(), stop.clone()),
        tick_loop(broker.clone(), stop.clone()),
        retention_loop(broker.clone(), stop),
    );
    for partition in broker.data.all() {
        stop_role(&partition).await;
    }
    checkpoint_all(&broker).await;
    if let Err(e) = broker.data.syncer.sync().await {
        tracing::warn!(error = %e, "final sync of the partition logs failed");
    }
    tracing::info!("partition manager stopped");
}

async fn reconcile_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut changes = broker.metadata.subscribe();
    let mut may_lead = broker.may_lead.subscribe();
    let mut cleaned = false;
    loop {
        may_lead.borrow_and_update();
        let snapshot = changes.borrow_and_update().clone();
        if snapshot.version() > 0 {
            crate::fault_point!(broker.cfg.faults, "manager.before_reconcile");
            reconcile(&broker, &snapshot, &mut cleaned).await;
            broker.data.reconciled.send_replace(snapshot.version());
        }
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            changed = changes.changed() => if changed.is_err() { return },
            changed = may_lead.changed() => if changed.is_err() { return },
        }
    }
}

/// Brings the partitions in line with `snapshot` (see the module doc).
pub(crate) async fn reconcile(
    broker: &Arc<Broker>,
    snapshot: &MetadataSnapshot,
    cleaned: &mut bool,
) {
    let me = broker.id();
    let data = &broker.data;
    let mut wanted: HashMap<(String, u32), (&pb::TopicMetadata, &pb::PartitionMetadata)> =
        HashMap::new();
    for topic in snapshot.topics() {
        for p in topic.partitions.iter().filter(|p| p.replicas.contains(&me)) {
            wanted.insert((topic.name.clone(), p.partition), (topic, p));
        }
    }
    let gone =
        |topic: &str, topic_id: u64| snapshot.topic(topic).is_none_or(|t| t.topic_id != topic_id);

    let mut deleted: BTreeSet<(String, u64)> = BTreeSet::new();
    for partition in data.all() {
        let id = &partition.id;
        let keep = wanted
            .get(&(id.topic.clone(), id.partition))
            .is_some_and(|(t, _)| t.topic_id == id.topic_id);
        if keep {
            continue;
        }
        stop_role(&partition).await;
        data.remove(id);
        if gone(&id.topic, id.topic_id) {
            deleted.insert((id.topic.clone(), id.topic_id));
        } else {
            tracing::info!(topic = %id.topic, partition = id.partition,
                "no longer a replica of this partition; keeping its data");
        }
    }
    if !*cleaned {
        let store = data.store.clone();
        match tokio::task::spawn_blocking(move || store.stored_partitions()).await {
            Ok(Ok(stored)) => {
                for id in stored.into_iter().filter(|id| gone(&id.topic, id.topic_id)) {
                    deleted.insert((id.topic, id.topic_id));
                }
                *cleaned = true;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not list the stored partitions"),
            Err(e) => tracing::warn!(error = %e, "could not list the stored partitions"),
        }
    }
    for (topic, topic_id) in deleted {
        let store = data.store.clone();
        let name = topic.clone();
        match tokio::task::spawn_blocking(move || store.remove_topic(&name, topic_id)).await {
            Ok(Ok(removed)) => tracing::info!(%topic, topic_id, partitions = removed,
                version = snapshot.version(), "deleted the data of a deleted topic"),
            Ok(Err(e)) => tracing::error!(%topic, topic_id, error = %e,
                "could not delete the data of a deleted topic"),
            Err(e) => tracing::error!(%topic, topic_id, error = %e,
                "could not delete the data of a deleted topic"),
        }
    }

    join_all(
        wanted
            .into_values()
            .map(|(topic, p)| ensure(broker, topic, p)),
    )
    .await;
}

/// Opens the partition if needed and gives it the role `p` says.
async fn ensure(broker: &Arc<Broker>, topic: &pb::TopicMetadata, p: &pb::PartitionMetadata) {
    let settings = TopicSettings::resolve(&broker.cfg, topic.config.as_ref());
    let partition = match broker.data.get(&topic.name, p.partition) {
        Some(partition) => partition,
        None => {
            let store = broker.data.store.clone();
            let (name, topic_id, index) = (topic.name.clone(), topic.topic_id, p.partition);
            let opened =
                tokio::task::spawn_blocking(move || store.partition(&name, topic_id, index)).await;
            match opened {
                Ok(Ok(log)) => {
                    let partition = Arc::new(Partition::new(log, settings));
                    broker.data.insert(partition.clone());
                    partition
                }
                Ok(Err(e)) => {
                    tracing::error!(topic = %topic.name, partition = p.partition, error = %e,
                        "cannot open the partition log; it stays offline on this broker");
                    return;
                }
                Err(e) => {
                    tracing::error!(topic = %topic.name, partition = p.partition, error = %e,
                        "cannot open the partition log");
                    return;
                }
            }
        }
    };
    partition.set_settings(settings);
    let want = match Desired::of(broker.id(), p) {
        // Without a live controller session another broker may lead by now.
        Desired::Leader { .. } if !broker.may_lead() => Desired::Idle,
        want => want,
    };
    {
        let role = partition.role.read().await;
        match (&*role, want) {
            (Role::Leader(l), Desired::Leader { epoch }) if l.epoch == epoch && !l.is_closed() => {
                l.apply_metadata(p, Instant::now());
                return;
            }
            (Role::Follower(f), Desired::Follower { leader, epoch })
                if f.leader == leader && f.epoch == epoch =>
            {
                return;
            }
            (Role::Idle, Desired::Idle) => return,
            _ => {}
        }
    }
    let mut role = partition.role.write().await;
    let old = std::mem::replace(&mut *role, Role::Idle);
    let was = old.label();
    end_role(old).await;
    partition.bump_changes();
    let id = &partition.id;
    match want {
        Desired::Idle if p.leader == broker.id() => {
            tracing::warn!(topic = %id.topic, partition = id.partition, was,
                epoch = p.leader_epoch,
                "not leading the partition: this broker has no live controller session")
        }
        Desired::Idle => {
            tracing::info!(topic = %id.topic, partition = id.partition, was,
                epoch = p.leader_epoch, "partition has no leader; idle")
        }
        Desired::Leader { epoch } => match become_leader(broker, &partition, epoch, p).await {
            Ok(leader) => {
                tracing::info!(topic = %id.topic, partition = id.partition, was, epoch,
                    epoch_start = leader.epoch_start_offset, isr = ?p.isr,
                    high_watermark = partition.high_watermark(), "leading the partition");
                *role = Role::Leader(Arc::new(leader));
            }
            Err(e) => tracing::error!(topic = %id.topic, partition = id.partition, epoch,
                error = %e, "cannot become the partition leader; idle until the metadata changes"),
        },
        Desired::Follower { leader, epoch } => {
            *role = Role::Follower(FollowerHandle::start(
                broker.clone(),
                partition.clone(),
                leader,
                epoch,
            ));
        }
    }
    partition.bump_changes();
}

/// Records `epoch` at the log end, syncs, and starts leading with everything in the log
/// durable.
async fn become_leader(
    broker: &Arc<Broker>,
    partition: &Arc<Partition>,
    epoch: u64,
    p: &pb::PartitionMetadata,
) -> Result<Leader, DataError> {
    let log = partition.log.clone();
    let (leo, start) = tokio::task::spawn_blocking(move || {
        log.assign_leader_epoch(epoch)?;
        let leo = log.log_end_offset();
        Ok::<_, DataError>((leo, log.leader_epoch_start_offset(epoch).unwrap_or(leo)))
    })
    .await
    .map_err(|e| DataError::Storage(format!("a log task failed: {e}")))??;
    broker.data.syncer.sync().await?;
    partition.leo.send_replace(leo);
    let leader = Leader::new(
        LeaderInit {
            id: partition.id.clone(),
            me: broker.id(),
            epoch,
            epoch_start_offset: start,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            partition_epoch: p.partition_epoch,
            synced_end: leo,
        },
        partition.hw.clone(),
        partition.changes.clone(),
        Instant::now(),
    );
    leader.inherit_isr(&partition.isr_seen(), Instant::now());
    Ok(leader)
}

async fn end_role(role: Role) {
    match role {
        Role::Leader(leader) => leader.close(),
        Role::Follower(follower) => follower.stop().await,
        Role::Idle => {}
    }
}

/// Ends the partition's role (it becomes idle).
async fn stop_role(partition: &Arc<Partition>) {
    let mut role = partition.role.write().await;
    let old = std::mem::replace(&mut *role, Role::Idle);
    end_role(old).await;
    partition.bump_changes();
}

/// Asks the controller for the ISR change `change` decided by `leader` (now pending) and
/// reports the outcome to it. A refusal that leaves the outcome to the metadata makes the
/// session fetch fresh metadata at once.
pub(crate) fn spawn_isr_change(
    broker: Arc<Broker>,
    partition: Arc<Partition>,
    leader: Arc<Leader>,
    change: IsrRequest,
) {
    partition.isr_seen().asked(leader.epoch, &change);
    tokio::spawn(async move {
        crate::fault_point!(broker.cfg.faults, "isr.before_alter");
        let id = &partition.id;
        let kind = change.kind.label();
        tracing::info!(topic = %id.topic, partition = id.partition, epoch = leader.epoch,
            partition_epoch = change.partition_epoch, old = ?leader.isr(), new = ?change.new_isr,
            change = kind, "asking the controller to change the ISR");
        let answer = isr::alter_partition(&broker, id, leader.epoch, &change).await;
        let outcome = isr::outcome_of(&answer);
        if let Err(status) = &answer {
            tracing::warn!(topic = %id.topic, partition = id.partition, change = kind,
                code = ?status.code(), error = %status.message(), ?outcome, "ISR change failed");
        }
        let label = match outcome {
            IsrOutcome::Committed { .. } => "ok",
            IsrOutcome::Stale => "stale",
            IsrOutcome::Refused => "refused",
            IsrOutcome::Unknown => "unknown",
        };
        if outcome == IsrOutcome::Stale {
            broker.wakeup.notify_one();
        }
        partition
            .isr_seen()
            .answered(leader.epoch, &change, &outcome);
        // The answer is for this broker's current leadership of the epoch, which is a later
        // one than the asker if the asker's lease ran out meanwhile (it inherited the change).
        let current = partition
            .leader()
            .await
            .filter(|l| l.epoch == leader.epoch)
            .unwrap_or(leader);
        current.isr_change_done(&change, outcome, Instant::now());
        crate::metrics::isr_change(kind, label);
    });
}

async fn tick_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let cfg = &broker.cfg;
    let isr_every =
        (cfg.replica_lag_time_max / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut isr_tick = interval(isr_every);
    let mut hw_tick = interval(cfg.high_watermark_checkpoint_interval);
    let mut metrics_tick = interval(METRICS_INTERVAL);
    for t in [&mut isr_tick, &mut hw_tick, &mut metrics_tick] {
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            _ = isr_tick.tick() => shrink_isrs(&broker),
            _ = hw_tick.tick() => checkpoint_all(&broker).await,
            _ = metrics_tick.tick() => publish_metrics(&broker),
        }
    }
}

fn shrink_isrs(broker: &Arc<Broker>) {
    let now = Instant::now();
    for partition in broker.data.all() {
        let Ok(role) = partition.role.try_read() else {
            continue; // changing role
        };
        if let Role::Leader(leader) = &*role
            && let Some(change) = leader.isr_work(now, broker.cfg.replica_lag_time_max)
        {
            spawn_isr_change(broker.clone(), partition.clone(), leader.clone(), change);
        }
    }
}

async fn checkpoint_all(broker: &Arc<Broker>) {
    let partitions = broker.data.all();
    let store = broker.data.store.clone();
    let done = tokio::task::spawn_blocking(move || {
        for p in partitions {
            if let Err(e) = p.checkpoint_hw() {
                tracing::warn!(topic = %p.id.topic, partition = p.id.partition, error = %e,
                    "could not checkpoint the high watermark");
            }
        }
        // Metadata-only writes reach the disk within about a second even without produce
        // traffic bringing a group commit round.
        if let Err(e) = store.sync_meta_if_due() {
            tracing::warn!(error = %e, "could not sync the partitions' metadata");
        }
    })
    .await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "high watermark checkpoint task failed");
    }
}

fn publish_metrics(broker: &Arc<Broker>) {
    let (mut leaders, mut followers, mut under) = (0, 0, 0);
    for p in broker.data.all() {
        let offsets = p.log.offsets();
        let isr = match p.role.try_read().as_deref() {
            Ok(Role::Leader(l)) => {
                leaders += 1;
                let isr = l.isr().len();
                if isr < l.replicas().len() {
                    under += 1;
                }
                Some(isr)
            }
            Ok(Role::Follower(_)) => {
                followers += 1;
                None
            }
            _ => None,
        };
        crate::metrics::partition(
            &p.id.topic,
            p.id.partition,
            offsets.log_start_offset,
            offsets.log_end_offset,
            p.high_watermark(),
            isr,
        );
    }
    crate::metrics::partition_counts(leaders, followers, under);
    crate::metrics::memory_budget_available(broker.data.budget.available_bytes());
}

async fn retention_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut tick = interval(broker.cfg.retention_check_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        let partitions = broker.data.all();
        let done = tokio::task::spawn_blocking(move || {
            let now_ms = now_ms();
            for p in partitions {
                let s = p.settings();
                match p
                    .log
                    .apply_retention(now_ms, s.retention_ms, s.retention_bytes)
                {
                    Ok(outcome) if outcome.deleted_segments > 0 => {
                        tracing::info!(topic = %p.id.topic, partition = p.id.partition,
                            segments = outcome.deleted_segments, bytes = outcome.deleted_bytes,
                            log_start = outcome.log_start_offset, "retention deleted old batches")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(topic = %p.id.topic, partition = p.id.partition,
                        error = %e, "retention failed"),
                }
            }
        })
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "retention task failed");
        }
    }
}

/// Controlled shutdown: waits (at most `bound`) until every partition this broker leads has
/// committed everything appended to it, so the acks=ALL writes in flight are answered before
/// the controllers move the leaderships (the caller has stopped new appends).
pub(crate) async fn drain(broker: &Arc<Broker>, bound: Duration) {
    let leaders: Vec<(Arc<Partition>, Arc<Leader>)> = {
        let mut out = Vec::new();
        for p in broker.data.all() {
            if let Some(l) = p.leader().await {
                out.push((p.clone(), l));
            }
        }
        out
    };
    let started = Instant::now();
    let all = join_all(leaders.iter().map(|(p, l)| async move {
        let mut commitment = l.subscribe();
        let _ = commitment
            .wait_for(|c| c.closed || c.high_watermark >= p.log.log_end_offset())
            .await;
    }));
    match tokio::time::timeout(bound, all).await {
        Ok(_) => tracing::info!(partitions = leaders.len(), took = ?started.elapsed(),
            "every led partition committed its appends; handing the leaderships over"),
        Err(_) => tracing::warn!(
            partitions = leaders.len(),
            ?bound,
            "some led partitions still had uncommitted appends; handing over anyway"
        ),
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

pub(crate) use crate::log::partition::now_ms;
