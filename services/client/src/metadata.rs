//! [`MetadataView`]: the cluster as the data plane needs it (brokers, partition leaders),
//! cached from the controllers' `GetMetadata`.
//!
//! The cache is refreshed
//! - on demand: when a topic is not in it, when a lookup finds it older than
//!   [`MetadataOptions::max_age`] (the "periodic" refresh, done lazily by whoever looks next,
//!   so an idle client costs nothing), and when a producer or consumer is told the leader it
//!   used is wrong and the answer names no usable newer leader;
//! - from a hint: a NOT_LEADER_FOR_PARTITION answer naming a leader with a leader epoch at
//!   least the cached one updates that partition at once, without asking the controllers
//!   ([`MetadataView::on_not_leader`]);
//! - from the controller leader's metadata stream (`WatchMetadata`), which a view created
//!   inside a tokio runtime follows in the background ([`MetadataOptions::follow_stream`]):
//!   a leader change reaches the client within milliseconds, before any request fails.
//!
//! Refreshes are single-flight (callers arriving during one share its result) and spaced by at
//! least [`MetadataOptions::refresh_min_interval`], so a burst of failures costs one request.
//! A refresh never moves a partition back to an older leader epoch than one learned from a
//! hint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dmq_proto::v1 as pb;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::discovery::ChannelPool;
use crate::partition_hint::PartitionLeaderHint;
use crate::{Admin, ClientError};

/// How fresh a [`MetadataView`] keeps itself.
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataOptions {
    /// A lookup in a cache older than this refreshes it first (default 60 s). Bounds how long a
    /// client uses a leader that moved without telling anyone it was wrong.
    pub max_age: Duration,
    /// Least time between the starts of two refreshes (default 50 ms).
    pub refresh_min_interval: Duration,
    /// Bound on one refresh, retries included (default 5 s).
    pub refresh_timeout: Duration,
    /// Bound on connecting to a broker (default 2 s).
    pub broker_connect_timeout: Duration,
    /// Follow the controller leader's metadata stream in the background (default true), for
    /// as long as a clone of the view lives.
    pub follow_stream: bool,
}

impl Default for MetadataOptions {
    fn default() -> MetadataOptions {
        MetadataOptions {
            max_age: Duration::from_secs(60),
            refresh_min_interval: Duration::from_millis(50),
            refresh_timeout: Duration::from_secs(5),
            broker_connect_timeout: Duration::from_secs(2),
            follow_stream: true,
        }
    }
}

/// A broker as the metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: u64,
    /// BrokerService address, `host:port` (`[v6]:port` for an IPv6 host).
    pub address: String,
    pub rack: String,
    pub status: pb::BrokerStatus,
}

/// A partition's leadership and replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    /// 0 when the partition has no leader.
    pub leader: u64,
    pub leader_epoch: u64,
    pub replicas: Vec<u64>,
    pub isr: Vec<u64>,
}

/// A topic and its partitions, indexed by partition number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: u64,
    pub partitions: Vec<PartitionInfo>,
}

/// One consistent copy of the cluster metadata.
#[derive(Clone, Debug, Default)]
pub struct ClusterMetadata {
    /// The metadata version it was read at (0: never read).
    pub version: u64,
    /// Persistent maps: a copy shares everything but what later changes, so following a
    /// metadata stream costs each delta what it changes, not the size of the cluster.
    pub brokers: imbl::HashMap<u64, BrokerInfo>,
    pub topics: imbl::HashMap<String, TopicInfo>,
    /// When it was read from a controller; `None` before the first refresh.
    pub fetched_at: Option<Instant>,
}

/// Where to send a partition's produce and fetch requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLeader {
    pub broker_id: u64,
    /// `host:port`.
    pub address: String,
    pub leader_epoch: u64,
}

/// The cached cluster metadata plus one channel per broker. Cheap to clone; clones share the
/// cache and the connections.
#[derive(Clone, Debug)]
pub struct MetadataView {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    admin: Admin,
    opts: MetadataOptions,
    current: RwLock<Arc<ClusterMetadata>>,
    /// Bumped by every refresh attempt, so a caller that waited for another's refresh takes
    /// its outcome (success or failure) instead of refreshing again: during a controller
    /// outage, callers queued behind a failing refresh fail with it rather than each waiting
    /// out a timeout of its own.
    attempts: AtomicU64,
    /// Held for the duration of a refresh.
    refreshing: tokio::sync::Mutex<RefreshState>,
    brokers: ChannelPool,
    /// Dropped with the view: ends the stream follower.
    _alive: tokio::sync::watch::Sender<()>,
}

#[derive(Debug, Default)]
struct RefreshState {
    last_start: Option<Instant>,
    /// The outcome of the last attempt, when it failed.
    last_error: Option<ClientError>,
}

impl From<Admin> for MetadataView {
    fn from(admin: Admin) -> MetadataView {
        MetadataView::new(admin, MetadataOptions::default())
    }
}

impl MetadataView {
    /// An empty view reading metadata through `admin`. No I/O until the first lookup.
    pub fn new(admin: Admin, opts: MetadataOptions) -> MetadataView {
        let brokers = ChannelPool::new(opts.broker_connect_timeout);
        let (alive, gone) = tokio::sync::watch::channel(());
        let view = MetadataView {
            inner: Arc::new(Inner {
                admin,
                opts,
                current: RwLock::default(),
                attempts: AtomicU64::new(0),
                refreshing: tokio::sync::Mutex::default(),
                brokers,
                _alive: alive,
            }),
        };
        if view.inner.opts.follow_stream
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(follow(Arc::downgrade(&view.inner), gone));
        }
        view
    }

    /// The admin the view reads through.
    pub fn admin(&self) -> &Admin {
        &self.inner.admin
    }

    /// The cached metadata as it is, without any I/O (empty before the first refresh).
    pub fn snapshot(&self) -> Arc<ClusterMetadata> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the metadata from the controller leader now, or takes the outcome of a refresh
    /// that ran while this call waited for it.
    pub async fn refresh(&self) -> Result<Arc<ClusterMetadata>, ClientError> {
        let seen = self.inner.attempts.load(Ordering::Acquire);
        let mut state = self.inner.refreshing.lock().await;
        if self.inner.attempts.load(Ordering::Acquire) != seen {
            return match &state.last_error {
                Some(error) => Err(error.clone()),
                None => Ok(self.snapshot()),
            };
        }
        if let Some(at) = state.last_start {
            tokio::time::sleep_until(at + self.inner.opts.refresh_min_interval).await;
        }
        state.last_start = Some(Instant::now());
        let timeout = self.inner.opts.refresh_timeout;
        let answer = match tokio::time::timeout(timeout, self.inner.admin.get_metadata()).await {
            Ok(answer) => answer,
            Err(_) => Err(ClientError::Timeout {
                what: format!("reading the cluster metadata took longer than {timeout:?}"),
            }),
        };
        self.inner.attempts.fetch_add(1, Ordering::AcqRel);
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                state.last_error = Some(error.clone());
                return Err(error);
            }
        };
        state.last_error = None;
        // Never behind what the metadata stream already brought.
        update(&self.inner, |old| {
            (response.metadata_version >= old.version).then(|| merge(old, response))
        });
        let fresh = self.snapshot();
        tracing::debug!(
            version = fresh.version,
            topics = fresh.topics.len(),
            brokers = fresh.brokers.len(),
            "cluster metadata refreshed"
        );
        Ok(fresh)
    }

    /// The number of partitions of `topic`; `NotFound` when the controllers do not know it.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        let snapshot = self.with_topic(topic).await?;
        Ok(snapshot.topics[topic].partitions.len() as u32)
    }

    /// The leader of `topic`-`partition`: `NotFound` when there is no such partition,
    /// `NoLeader` (retryable) while it has none.
    pub async fn leader(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionLeader, ClientError> {
        let snapshot = self.with_topic(topic).await?;
        let info = &snapshot.topics[topic];
        let Some(p) = info.partitions.get(partition as usize) else {
            return Err(ClientError::NotFound {
                what: format!(
                    "partition {partition} of topic {topic:?} (it has {} partitions)",
                    info.partitions.len()
                ),
            });
        };
        let no_leader = || ClientError::NoLeader {
            what: format!("{topic}-{partition}"),
        };
        if p.leader == 0 {
            return Err(no_leader());
        }
        let broker = snapshot.brokers.get(&p.leader).ok_or_else(no_leader)?;
        Ok(PartitionLeader {
            broker_id: p.leader,
            address: broker.address.clone(),
            leader_epoch: p.leader_epoch,
        })
    }

    /// A broker answered NOT_LEADER_FOR_PARTITION for `topic`-`partition` when asked at
    /// `tried` (an address). When `hint` names a leader at another address with a leader
    /// epoch at least the cached one, the cache takes it and this returns `true`: retry at
    /// once. Otherwise nothing changes and it returns `false`: the caller should
    /// [`refresh`](Self::refresh) (after a pause).
    pub fn on_not_leader(
        &self,
        topic: &str,
        partition: u32,
        tried: &str,
        hint: Option<&PartitionLeaderHint>,
    ) -> bool {
        let Some(hint) = hint.filter(|h| h.leader_id != 0) else {
            return false;
        };
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let known_address = current.brokers.get(&hint.leader_id).map(|b| &b.address);
        let Some(address) = hint.leader_address.as_ref().or(known_address).cloned() else {
            return false;
        };
        let Some(p) = current
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
        else {
            return false;
        };
        if address == tried || hint.leader_epoch < p.leader_epoch {
            return false;
        }
        let mut next = (**current).clone();
        if let Some(p) = next
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(partition as usize))
        {
            p.leader = hint.leader_id;
            p.leader_epoch = hint.leader_epoch;
        }
        let broker = next
            .brokers
            .entry(hint.leader_id)
            .or_insert_with(|| BrokerInfo {
                id: hint.leader_id,
                address: address.clone(),
                rack: String::new(),
                status: pb::BrokerStatus::Unspecified,
            });
        broker.address = address;
        tracing::debug!(%topic, partition, leader = hint.leader_id, epoch = hint.leader_epoch, "following NOT_LEADER hint");
        *current = Arc::new(next);
        true
    }

    /// The channel to the broker at `address` (connected lazily, shared).
    pub fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        Ok(self.inner.brokers.get(address)?)
    }

    /// A snapshot holding `topic`: the cache when it has it and is younger than `max_age`,
    /// else a refreshed one (falling back to a stale cache that has it when the refresh fails).
    async fn with_topic(&self, topic: &str) -> Result<Arc<ClusterMetadata>, ClientError> {
        let cached = self.snapshot();
        let fresh = cached
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.inner.opts.max_age);
        if fresh && cached.topics.contains_key(topic) {
            return Ok(cached);
        }
        let refreshed = match self.refresh().await {
            Ok(snapshot) => snapshot,
            Err(error) if cached.topics.contains_key(topic) => {
                tracing::debug!(%error, "metadata refresh failed; using the cached copy");
                return Ok(cached);
            }
            Err(error) => return Err(error),
        };
        if refreshed.topics.contains_key(topic) {
            Ok(refreshed)
        } else {
            Err(ClientError::NotFound {
                what: format!("topic {topic:?} (create it first, or check the name)"),
            })
        }
    }
}

/// Swaps in what `build` makes of the current copy, under the lock (so no hint or stream
/// update is lost in between); `None` keeps it. Returns whether it changed.
fn update(inner: &Inner, build: impl FnOnce(&ClusterMetadata) -> Option<ClusterMetadata>) -> bool {
    let mut current = inner.current.write().unwrap_or_else(|e| e.into_inner());
    match build(&current) {
        Some(next) => {
            *current = Arc::new(next);
            true
        }
        None => false,
    }
}

/// Follows the controller leader's metadata stream into the view behind `view` until the view
/// is dropped (`gone` closes), reconnecting (from the version held) after failures.
async fn follow(view: std::sync::Weak<Inner>, mut gone: tokio::sync::watch::Receiver<()>) {
    let mut backoff = crate::discovery::Backoff::new(
        Duration::from_millis(50),
        Duration::from_secs(2),
        0.2,
        None,
    );
    loop {
        let Some(inner) = view.upgrade() else { return };
        let from = inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version;
        let admin = inner.admin.clone();
        drop(inner);
        let opened = tokio::select! {
            opened = admin.watch_metadata(from) => opened,
            _ = gone.changed() => return,
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(ClientError::Other(status)) if status.code() == tonic::Code::Unimplemented => {
                tracing::debug!("the controllers do not stream metadata; refreshing on demand");
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "could not open the metadata stream; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = gone.changed() => return,
                }
            }
        };
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = gone.changed() => return,
            };
            let Some(inner) = view.upgrade() else { return };
            match message {
                Ok(Some(message)) => {
                    backoff.reset();
                    let applied = match message.event {
                        Some(pb::watch_metadata_response::Event::Image(image)) => {
                            update(&inner, |old| Some(merge(old, image)))
                        }
                        Some(pb::watch_metadata_response::Event::Delta(delta)) => {
                            update(&inner, |old| with_delta(old, &delta))
                        }
                        None => true,
                    };
                    if !applied {
                        break; // a gap: start over from the version held
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = gone.changed() => return,
        }
    }
}

/// `old` with `delta` applied, if `old` is at the version it was made from (else `None`);
/// partitions keep a newer leader learned from a hint, as in [`merge`].
fn with_delta(old: &ClusterMetadata, delta: &pb::MetadataDelta) -> Option<ClusterMetadata> {
    if delta.previous_version != old.version || delta.version <= old.version {
        return None;
    }
    let mut next = old.clone();
    next.version = delta.version;
    next.fetched_at = Some(Instant::now());
    for name in &delta.deleted_topics {
        next.topics.remove(name);
    }
    for id in &delta.removed_brokers {
        next.brokers.remove(id);
    }
    for b in &delta.brokers {
        next.brokers.insert(b.broker_id, broker_info(b.clone()));
    }
    for t in &delta.topics {
        let info = topic_info(old, &mut next.brokers, t.clone());
        next.topics.insert(t.name.clone(), info);
    }
    Some(next)
}

fn broker_info(b: pb::BrokerMetadata) -> BrokerInfo {
    BrokerInfo {
        id: b.broker_id,
        address: broker_address(&b.host, b.port),
        rack: b.rack,
        status: pb::BrokerStatus::try_from(b.status).unwrap_or_default(),
    }
}

/// `t` as a [`TopicInfo`], keeping from `old` any partition leader learned from a hint with a
/// newer leader epoch (same topic id), and adding that leader's broker to `brokers`.
fn topic_info(
    old: &ClusterMetadata,
    brokers: &mut imbl::HashMap<u64, BrokerInfo>,
    t: pb::TopicMetadata,
) -> TopicInfo {
    let mut partitions: Vec<PartitionInfo> = t
        .partitions
        .into_iter()
        .map(|p| PartitionInfo {
            partition: p.partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            replicas: p.replicas,
            isr: p.isr,
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    if let Some(previous) = old.topics.get(&t.name).filter(|o| o.topic_id == t.topic_id) {
        for (p, before) in partitions.iter_mut().zip(&previous.partitions) {
            if before.partition == p.partition && before.leader_epoch > p.leader_epoch {
                p.leader = before.leader;
                p.leader_epoch = before.leader_epoch;
                if let Some(b) = old.brokers.get(&before.leader) {
                    brokers.entry(b.id).or_insert_with(|| b.clone());
                }
            }
        }
    }
    TopicInfo {
        name: t.name,
        topic_id: t.topic_id,
        partitions,
    }
}

/// `response` as a [`ClusterMetadata`], keeping from `old` any partition leader learned from a
/// hint with a newer leader epoch than the response has (same topic id), and its broker.
fn merge(old: &ClusterMetadata, response: pb::GetMetadataResponse) -> ClusterMetadata {
    let mut brokers: imbl::HashMap<u64, BrokerInfo> = response
        .brokers
        .into_iter()
        .map(|b| (b.broker_id, broker_info(b)))
        .collect();
    let mut topics = imbl::HashMap::new();
    for t in response.topics {
        let info = topic_info(old, &mut brokers, t);
        topics.insert(info.name.clone(), info);
    }
    ClusterMetadata {
        version: response.metadata_version,
        brokers,
        topics,
        fetched_at: Some(Instant::now()),
    }
}

/// `host:port`, bracketing an IPv6 host.
pub fn broker_address(host: &str, port: u32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(epoch: u64, leader: u64) -> pb::GetMetadataResponse {
        pb::GetMetadataResponse {
            metadata_version: 7,
            brokers: vec![pb::BrokerMetadata {
                broker_id: 1,
                host: "b1".into(),
                port: 9092,
                ..Default::default()
            }],
            topics: vec![pb::TopicMetadata {
                name: "t".into(),
                topic_id: 42,
                partitions: vec![pb::PartitionMetadata {
                    partition: 0,
                    leader,
                    leader_epoch: epoch,
                    replicas: vec![1, 2],
                    isr: vec![1, 2],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_refresh_never_goes_back_to_an_older_leader_epoch() {
        let mut hinted = merge(&ClusterMetadata::default(), response(5, 2));
        hinted.brokers.insert(
            2,
            BrokerInfo {
                id: 2,
                address: "b2:9092".into(),
                rack: String::new(),
                status: pb::BrokerStatus::Online,
            },
        );
        let merged = merge(&hinted, response(4, 1));
        let p = &merged.topics["t"].partitions[0];
        assert_eq!((p.leader, p.leader_epoch), (2, 5));
        assert_eq!(merged.brokers[&2].address, "b2:9092");
        let newer = merge(&hinted, response(6, 1));
        assert_eq!(newer.topics["t"].partitions[0].leader, 1);
    }

    #[test]
    fn a_stream_delta_applies_to_its_version_and_keeps_hinted_leaders() {
        let base = merge(&ClusterMetadata::default(), response(5, 1));
        let mut changed = response(6, 2).topics.remove(0);
        changed.partitions[0].leader_epoch = 6;
        let delta = pb::MetadataDelta {
            previous_version: 7,
            version: 9,
            topics: vec![changed.clone()],
            brokers: vec![pb::BrokerMetadata {
                broker_id: 2,
                host: "b2".into(),
                port: 9092,
                ..Default::default()
            }],
            ..Default::default()
        };
        let next = with_delta(&base, &delta).expect("made from version 7");
        assert_eq!(next.version, 9);
        let p = &next.topics["t"].partitions[0];
        assert_eq!((p.leader, p.leader_epoch), (2, 6));
        assert_eq!(next.brokers[&2].address, "b2:9092");
        assert!(with_delta(&next, &delta).is_none(), "not from version 9");
        // A hint newer than the delta's leader epoch stays.
        let mut hinted = base.clone();
        hinted.topics.get_mut("t").unwrap().partitions[0].leader_epoch = 8;
        let kept = with_delta(&hinted, &delta).unwrap();
        assert_eq!(kept.topics["t"].partitions[0].leader_epoch, 8);
        let gone = pb::MetadataDelta {
            previous_version: 9,
            version: 10,
            deleted_topics: vec!["t".into()],
            removed_brokers: vec![1],
            ..Default::default()
        };
        let after = with_delta(&next, &gone).unwrap();
        assert!(after.topics.is_empty());
        assert_eq!(after.brokers.keys().copied().collect::<Vec<_>>(), [2]);
    }

    #[tokio::test]
    async fn concurrent_refreshes_share_one_request_and_its_outcome() {
        use crate::testing::fake_controller::FakeController;
        use crate::testing::{fast_admin_options, within};

        let controller = FakeController::start(1).await;
        controller.set_metadata(&[(1, "127.0.0.1:1")], "t", &[(1, 1)]);
        let admin = Admin::new(vec![controller.address()], fast_admin_options()).unwrap();
        let view = MetadataView::from(admin);
        let all = within(
            "refreshes",
            futures::future::join_all((0..5).map(|_| view.refresh())),
        )
        .await;
        assert!(all.iter().all(Result::is_ok));
        assert_eq!(controller.script().metadata_requests, 1);

        controller.script().failures = vec![tonic::Status::internal("broken")];
        let all = within(
            "refreshes",
            futures::future::join_all((0..5).map(|_| view.refresh())),
        )
        .await;
        assert!(
            all.iter().all(|r| matches!(r, Err(ClientError::Other(_)))),
            "the waiting callers get the failure instead of trying again one by one"
        );
        assert_eq!(view.snapshot().topics["t"].partitions[0].leader, 1, "kept");
        assert_eq!(
            view.leader("t", 0).await.unwrap().address,
            "127.0.0.1:1",
            "a fresh cache answers without asking"
        );
    }

    /// A delta shares every broker it does not change with the view it was applied to. Before,
    /// each delta deep-copied every broker and topic: a client following a metadata flood
    /// (thousands of registrations a second) spent its CPU copying.
    #[test]
    fn a_delta_shares_what_it_does_not_change() {
        let base = merge(
            &ClusterMetadata::default(),
            pb::GetMetadataResponse {
                metadata_version: 1,
                brokers: (1..=2_000)
                    .map(|id| pb::BrokerMetadata {
                        broker_id: id,
                        host: format!("b{id}"),
                        port: 9092,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        );
        let delta = pb::MetadataDelta {
            previous_version: 1,
            version: 2,
            brokers: vec![pb::BrokerMetadata {
                broker_id: 7,
                host: "moved".into(),
                port: 9093,
                ..Default::default()
            }],
            ..Default::default()
        };
        let next = with_delta(&base, &delta).unwrap();
        assert_eq!(next.brokers[&7].address, "moved:9093");
        assert_eq!(
            base.brokers[&7].address, "b7:9092",
            "the old view is unchanged"
        );
        let shared = (1..=2_000u64)
            .filter(|id| std::ptr::eq(&base.brokers[id], &next.brokers[id]))
            .count();
        assert!(
            shared >= 1_900,
            "only {shared} of 2,000 brokers shared: the delta copied the view"
        );
    }

    #[test]
    fn formats_broker_addresses() {
        assert_eq!(broker_address("b1", 9092), "b1:9092");
        assert_eq!(broker_address("::1", 9092), "[::1]:9092");
    }
}
