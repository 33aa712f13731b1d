//! The broker's copy of the cluster metadata: versioned, swapped whole, never older. It moves
//! by whole images (GetMetadata, a WatchMetadata image) or by deltas (WatchMetadata), each
//! applied only to the version it was made from.
//!
//! A delta makes a new snapshot sharing all but what it changed (persistent maps: O(log n) per
//! change, not a copy of every broker and topic). With copied maps, a metadata flood (thousands
//! of brokers registering per second) cost a broker a full copy per delta, so it fell behind
//! its metadata stream and, with it, behind its heartbeats.

use std::sync::Arc;

use imbl::OrdMap;

use dmq_proto::v1 as pb;
use tokio::sync::watch;

/// One consistent view of the cluster metadata at `version` (the controllers' metadata
/// version: the Raft index of the last applied change). Immutable once built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataSnapshot {
    version: u64,
    brokers: OrdMap<u64, Arc<pb::BrokerMetadata>>,
    topics: OrdMap<String, Arc<pb::TopicMetadata>>,
}

impl MetadataSnapshot {
    /// The snapshot a `GetMetadata` answer describes.
    pub fn from_response(response: pb::GetMetadataResponse) -> MetadataSnapshot {
        MetadataSnapshot {
            version: response.metadata_version,
            brokers: response
                .brokers
                .into_iter()
                .map(|b| (b.broker_id, Arc::new(b)))
                .collect(),
            topics: response
                .topics
                .into_iter()
                .map(|t| (t.name.clone(), Arc::new(t)))
                .collect(),
        }
    }

    /// This snapshot with `delta` applied, if it was made from this version.
    pub fn with_delta(&self, delta: &pb::MetadataDelta) -> Option<MetadataSnapshot> {
        if delta.previous_version != self.version || delta.version <= self.version {
            return None;
        }
        let mut next = self.clone();
        next.version = delta.version;
        for name in &delta.deleted_topics {
            next.topics.remove(name);
        }
        for t in &delta.topics {
            next.topics.insert(t.name.clone(), Arc::new(t.clone()));
        }
        for id in &delta.removed_brokers {
            next.brokers.remove(id);
        }
        for b in &delta.brokers {
            next.brokers.insert(b.broker_id, Arc::new(b.clone()));
        }
        Some(next)
    }

    /// The metadata version this snapshot is at (0: nothing fetched yet).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&pb::TopicMetadata> {
        self.topics.get(name).map(Arc::as_ref)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = &pb::TopicMetadata> {
        self.topics.values().map(Arc::as_ref)
    }

    /// A broker by id.
    pub fn broker(&self, broker_id: u64) -> Option<&pb::BrokerMetadata> {
        self.brokers.get(&broker_id).map(Arc::as_ref)
    }

    /// Every registered broker, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &pb::BrokerMetadata> {
        self.brokers.values().map(Arc::as_ref)
    }
}

/// The current [`MetadataSnapshot`], shared by clones. Readers take an `Arc` of a whole
/// snapshot ([`get`](Self::get)), so they never see half an update; [`install`](Self::install)
/// swaps in a newer one atomically and refuses an older or equal version, so the cache never
/// goes backwards even when answers arrive out of order.
#[derive(Clone, Debug)]
pub struct MetadataCache {
    current: Arc<watch::Sender<Arc<MetadataSnapshot>>>,
}

impl Default for MetadataCache {
    fn default() -> MetadataCache {
        MetadataCache::new()
    }
}

impl MetadataCache {
    /// An empty cache at version 0.
    pub fn new() -> MetadataCache {
        MetadataCache {
            current: Arc::new(watch::Sender::new(Arc::default())),
        }
    }

    /// The current snapshot.
    pub fn get(&self) -> Arc<MetadataSnapshot> {
        self.current.borrow().clone()
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.current.borrow().version
    }

    /// Every topic of the current snapshot (cloned; prefer [`get`](Self::get) on hot paths).
    pub fn topics(&self) -> Vec<pb::TopicMetadata> {
        self.get().topics().cloned().collect()
    }

    /// Every broker of the current snapshot (cloned).
    pub fn brokers(&self) -> Vec<pb::BrokerMetadata> {
        self.get().brokers().cloned().collect()
    }

    /// One topic of the current snapshot.
    pub fn topic(&self, name: &str) -> Option<pb::TopicMetadata> {
        self.get().topic(name).cloned()
    }

    /// Swaps in `snapshot` if it is newer than the current one; returns whether it did.
    pub fn install(&self, snapshot: MetadataSnapshot) -> bool {
        let snapshot = Arc::new(snapshot);
        self.current.send_if_modified(|current| {
            if snapshot.version > current.version {
                *current = snapshot;
                true
            } else {
                false
            }
        })
    }

    /// Applies `delta` if the cache holds exactly the version it was made from; returns
    /// whether it did (if not, the watcher must start again from the version held).
    pub fn apply_delta(&self, delta: &pb::MetadataDelta) -> bool {
        self.current
            .send_if_modified(|current| match current.with_delta(delta) {
                Some(next) => {
                    *current = Arc::new(next);
                    true
                }
                None => false,
            })
    }

    /// Notified on every installed snapshot (e.g. to wait for a topic to appear).
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataSnapshot>> {
        self.current.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(version: u64, topics: &[&str]) -> MetadataSnapshot {
        MetadataSnapshot::from_response(pb::GetMetadataResponse {
            metadata_version: version,
            topics: topics
                .iter()
                .map(|t| pb::TopicMetadata {
                    name: t.to_string(),
                    ..Default::default()
                })
                .collect(),
            brokers: vec![pb::BrokerMetadata {
                broker_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    #[test]
    fn never_goes_backwards() {
        let cache = MetadataCache::new();
        assert_eq!(cache.version(), 0);
        assert!(cache.install(snapshot(5, &["a"])));
        assert!(cache.install(snapshot(7, &["a", "b"])));
        assert!(!cache.install(snapshot(6, &["a"])), "older");
        assert!(!cache.install(snapshot(7, &[])), "same version");
        assert_eq!(cache.version(), 7);
        assert_eq!(cache.topics().len(), 2);
        assert!(cache.topic("b").is_some());
        assert_eq!(cache.brokers().len(), 1);
    }

    #[test]
    fn a_delta_applies_only_to_the_version_it_was_made_from() {
        let cache = MetadataCache::new();
        cache.install(snapshot(5, &["a", "b"]));
        let delta = pb::MetadataDelta {
            previous_version: 5,
            version: 8,
            topics: vec![pb::TopicMetadata {
                name: "c".into(),
                topic_id: 3,
                ..Default::default()
            }],
            deleted_topics: vec!["a".into()],
            brokers: vec![pb::BrokerMetadata {
                broker_id: 2,
                ..Default::default()
            }],
            removed_brokers: vec![1],
        };
        assert!(cache.apply_delta(&delta));
        let now = cache.get();
        assert_eq!(now.version(), 8);
        assert_eq!(
            now.topics().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(now.brokers().map(|b| b.broker_id).collect::<Vec<_>>(), [2]);
        // Again (a duplicate), or from another version: refused, nothing changes.
        assert!(!cache.apply_delta(&delta));
        assert!(!cache.apply_delta(&pb::MetadataDelta {
            previous_version: 7,
            version: 9,
            ..Default::default()
        }));
        assert_eq!(cache.version(), 8);
    }

    #[test]
    fn readers_keep_their_snapshot_across_a_swap() {
        let cache = MetadataCache::new();
        cache.install(snapshot(1, &["a"]));
        let held = cache.get();
        let mut changes = cache.subscribe();
        cache.install(snapshot(2, &["a", "b"]));
        assert_eq!(held.version(), 1);
        assert_eq!(held.topics().count(), 1);
        assert!(changes.has_changed().unwrap());
        assert_eq!(changes.borrow_and_update().version(), 2);
    }

    #[test]
    fn concurrent_installs_end_at_the_newest() {
        let cache = MetadataCache::new();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let cache = cache.clone();
                s.spawn(move || {
                    for v in (0..500u64).map(|i| i * 4 + t) {
                        let before = cache.version();
                        cache.install(snapshot(v, &[]));
                        assert!(cache.version() >= before);
                    }
                });
            }
        });
        assert_eq!(cache.version(), 499 * 4 + 3);
    }
}
