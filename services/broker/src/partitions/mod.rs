//! The partitions this broker holds a replica of, and the role it plays for each.
//!
//! - [`manager`]: follows the metadata: opens logs, makes this broker leader or follower at the
//!   current leader epoch, stops lost roles, deletes the data of deleted topics; runs the
//!   periodic work (ISR shrink checks, high watermark checkpoints, retention, metrics).
//! - [`leader`]: the leader's follower tracking, high watermark and ISR decisions.
//! - [`follower`]: the fetcher that copies the leader's log (with KIP-320 truncation).
//! - [`isr`]: the ISR rules and the `AlterPartition` call.
//! - [`syncer`]: the group-commit thread every durable append waits on.
//!
//! A [`Partition`] is shared (`Arc`) by the manager, the request handlers and its role's
//! tasks. Its in-memory high watermark ([`Partition::hw`]) is what consumers are served up to;
//! the copy in the log is a checkpoint written every
//! [`BrokerConfig::high_watermark_checkpoint_interval`] and on role changes (never ahead of the
//! in-memory one).

pub(crate) mod follower;
pub(crate) mod isr;
pub(crate) mod leader;
pub(crate) mod manager;
pub(crate) mod syncer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use dmq_client::discovery::ChannelPool;
use dmq_proto::v1 as pb;
use tokio::sync::watch;

use self::follower::FollowerHandle;
use self::leader::{IsrOutcome, IsrRequest, Leader};
use self::syncer::Syncer;
use crate::BrokerConfig;
use crate::budget::MemoryBudget;
use crate::log::{LogStore, PartitionId, PartitionLog};

/// A topic's settings resolved against the broker's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TopicSettings {
    pub min_insync_replicas: usize,
    /// The largest record accepted (encoded).
    pub max_record_bytes: usize,
    pub retention_ms: i64,
    pub retention_bytes: i64,
}

impl TopicSettings {
    /// Zero in the topic's config means the broker's default; a topic's `max_message_bytes`
    /// can only lower the broker's `max_record_bytes`.
    pub(crate) fn resolve(cfg: &BrokerConfig, topic: Option<&pb::TopicConfig>) -> TopicSettings {
        let t = topic.cloned().unwrap_or_default();
        let max_record_bytes = match t.max_message_bytes {
            0 => cfg.max_record_bytes,
            n => cfg.max_record_bytes.min(n as usize),
        };
        TopicSettings {
            min_insync_replicas: match t.min_insync_replicas {
                0 => cfg.min_insync_replicas as usize,
                n => n as usize,
            },
            max_record_bytes,
            retention_ms: if t.retention_ms == 0 {
                cfg.retention_ms
            } else {
                t.retention_ms
            },
            retention_bytes: if t.retention_bytes == 0 {
                cfg.retention_bytes
            } else {
                t.retention_bytes
            },
        }
    }
}

/// What this broker does for a partition.
pub(crate) enum Role {
    /// Neither leader nor follower (no leader, or being changed).
    Idle,
    Leader(Arc<Leader>),
    Follower(FollowerHandle),
}

impl Role {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Role::Idle => "idle",
            Role::Leader(_) => "leader",
            Role::Follower(_) => "follower",
        }
    }
}

/// One partition replica on this broker.
///
/// # To ensure correctness
/// - [`role`](Self::role) changes only in the manager, under its write lock, and the old role
///   is fully stopped first (leader closed, follower task joined), so two roles never write the
///   log at once. Leader appends hold the read lock, so no append of an old leadership lands
///   after the role changed.
/// - [`hw`](Self::hw) only moves up, and only by the current role (see [`Leader`] and the
///   follower); it never passes the log end offset.
pub(crate) struct Partition {
    pub id: PartitionId,
    pub log: Arc<PartitionLog>,
    /// The high watermark served to consumers; wakes long polls and acks=ALL waiters.
    pub hw: watch::Sender<u64>,
    /// The log end offset after appends (wakes replica fetches waiting at the leader).
    pub leo: watch::Sender<u64>,
    /// Bumped at every role or ISR change.
    pub changes: watch::Sender<u64>,
    pub role: tokio::sync::RwLock<Role>,
    settings: Mutex<TopicSettings>,
    /// The high watermark last written to the log.
    checkpointed_hw: AtomicU64,
    /// What this broker's leaderships asked of the ISR, kept across them (see [`IsrSeen`]).
    isr_seen: Mutex<IsrSeen>,
}

/// ISR changes this broker asked for, kept by the partition rather than by one leadership: a
/// leadership that ends (its lease ran out) can leave an AlterPartition in flight, and the
/// controllers accept it from the next leadership of this broker at the same leader epoch.
/// That leadership starts from metadata that may predate the change, so it takes what is
/// here ([`Leader::inherit_isr`]): the newest committed ISR an answer brought, and the last
/// change asked at its epoch with its outcome so far.
#[derive(Debug, Default)]
pub(crate) struct IsrSeen {
    /// The newest ISR an AlterPartition answer said was committed, at its partition epoch.
    pub committed: Option<(u64, Vec<u64>)>,
    /// The last change asked: (leader epoch, change, outcome; `None` while in flight).
    pub last: Option<(u64, IsrRequest, Option<IsrOutcome>)>,
}

impl IsrSeen {
    /// `change` is being asked by the leadership at `leader_epoch`.
    pub(crate) fn asked(&mut self, leader_epoch: u64, change: &IsrRequest) {
        self.last = Some((leader_epoch, change.clone(), None));
    }

    /// The answer to `change`, asked at `leader_epoch`, came back as `outcome`.
    pub(crate) fn answered(
        &mut self,
        leader_epoch: u64,
        change: &IsrRequest,
        outcome: &IsrOutcome,
    ) {
        if let IsrOutcome::Committed {
            isr,
            partition_epoch,
        } = outcome
            && self
                .committed
                .as_ref()
                .is_none_or(|(held, _)| partition_epoch > held)
        {
            self.committed = Some((*partition_epoch, isr.clone()));
        }
        if let Some((epoch, asked, known)) = &mut self.last
            && *epoch == leader_epoch
            && asked == change
        {
            *known = Some(outcome.clone());
        }
    }
}

impl Partition {
    pub(crate) fn new(log: Arc<PartitionLog>, settings: TopicSettings) -> Partition {
        let offsets = log.offsets();
        Partition {
            id: log.id().clone(),
            hw: watch::Sender::new(offsets.high_watermark),
            leo: watch::Sender::new(offsets.log_end_offset),
            changes: watch::Sender::new(0),
            role: tokio::sync::RwLock::new(Role::Idle),
            settings: Mutex::new(settings),
            checkpointed_hw: AtomicU64::new(offsets.high_watermark),
            isr_seen: Mutex::new(IsrSeen::default()),
            log,
        }
    }

    pub(crate) fn settings(&self) -> TopicSettings {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_settings(&self, settings: TopicSettings) {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = settings;
    }

    pub(crate) fn high_watermark(&self) -> u64 {
        *self.hw.borrow()
    }

    /// Raises the high watermark to `hw` (a follower learning the leader's).
    pub(crate) fn raise_hw(&self, hw: u64) {
        self.hw.send_if_modified(|current| {
            if hw > *current {
                *current = hw;
                true
            } else {
                false
            }
        });
    }

    /// An append (leader) made the log end at `end`.
    pub(crate) fn note_appended(&self, end: u64) {
        self.leo.send_if_modified(|current| {
            if end > *current {
                *current = end;
                true
            } else {
                false
            }
        });
    }

    /// What this broker's leaderships asked of the ISR (see [`IsrSeen`]).
    pub(crate) fn isr_seen(&self) -> std::sync::MutexGuard<'_, IsrSeen> {
        self.isr_seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn bump_changes(&self) {
        self.changes.send_modify(|c| *c += 1);
    }

    /// The current leadership, if this broker leads and it is not closed.
    pub(crate) async fn leader(&self) -> Option<Arc<Leader>> {
        match &*self.role.read().await {
            Role::Leader(l) if !l.is_closed() => Some(l.clone()),
            _ => None,
        }
    }

    /// Writes the in-memory high watermark to the log if it moved (blocking: call from
    /// `spawn_blocking`).
    pub(crate) fn checkpoint_hw(&self) -> Result<(), crate::log::LogError> {
        let hw = self.high_watermark();
        if hw <= self.checkpointed_hw.load(Ordering::Relaxed) || self.log.is_deleted() {
            return Ok(());
        }
        let written = self
            .log
            .set_high_watermark(hw.min(self.log.log_end_offset()))?;
        self.checkpointed_hw.fetch_max(written, Ordering::Relaxed);
        Ok(())
    }
}

/// Every partition replica on this broker, the log store and what their roles share.
pub(crate) struct Partitions {
    pub store: Arc<LogStore>,
    pub syncer: Syncer,
    /// Bytes that requests in flight may hold (see [`MemoryBudget`]).
    pub budget: MemoryBudget,
    /// Channels to other brokers (followers fetching from leaders).
    pub peers: ChannelPool,
    map: RwLock<HashMap<(String, u32), Arc<Partition>>>,
    /// The metadata version the partitions were last brought in line with (roles started,
    /// logs opened), so a request can wait for a role this broker is about to take.
    pub reconciled: tokio::sync::watch::Sender<u64>,
}

impl Partitions {
    /// Starts the syncer thread.
    ///
    /// Errors: the OS refused the syncer thread.
    pub(crate) fn new(
        store: Arc<LogStore>,
        peers: ChannelPool,
        cfg: &BrokerConfig,
    ) -> std::io::Result<Partitions> {
        Ok(Partitions {
            syncer: Syncer::start(store.clone(), cfg)?,
            budget: MemoryBudget::new(cfg.memory_budget_bytes),
            store,
            peers,
            map: RwLock::default(),
            reconciled: tokio::sync::watch::Sender::new(0),
        })
    }

    pub(crate) fn get(&self, topic: &str, partition: u32) -> Option<Arc<Partition>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Partition>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn insert(&self, partition: Arc<Partition>) {
        let key = (partition.id.topic.clone(), partition.id.partition);
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, partition);
    }

    fn remove(&self, id: &PartitionId) -> Option<Arc<Partition>> {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(id.topic.clone(), id.partition))
    }
}
