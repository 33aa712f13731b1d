//! [`ChangeFeed`]: the most recent metadata changes, kept in memory so that watchers
//! (`WatchMetadata`) follow the metadata by small deltas instead of pulling all of it.
//!
//! Every applied entry that changed brokers or topics becomes one [`MetadataDelta`], from the
//! version before it to its own. The feed keeps the latest ones within a bound on their count
//! and bytes; a watcher holding a version older than the oldest kept change (or none) gets a
//! whole image instead.
//!
//! # To ensure correctness
//! - Changes are recorded in apply order, under the store's write lock, right after the state
//!   took them: `previous_version` of each is `version` of the one before, so a watcher that
//!   applies them in order to the version it holds reaches exactly the store's state.
//! - A snapshot install replaces the state without deltas: the feed is cleared, so nobody
//!   can be handed changes that skip it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use dmq_proto::v1::MetadataDelta;
use prost::Message;
use tokio::sync::watch;

use super::state::Delta;

/// Changes kept at most.
pub const FEED_CHANGES_MAX: usize = 4096;
/// Encoded bytes of the kept changes at most.
pub const FEED_BYTES_MAX: usize = 16 * 1024 * 1024;

/// What [`ChangeFeed::since`] has for a watcher.
#[derive(Debug, PartialEq)]
pub enum Since {
    /// Nothing after that version yet.
    UpToDate,
    /// The changes after it, in order.
    Changes(Vec<Arc<MetadataDelta>>),
    /// Not kept any more (or never: version 0): send the whole image.
    TooOld,
}

#[derive(Debug, Default)]
struct Ring {
    changes: VecDeque<(Arc<MetadataDelta>, usize)>,
    bytes: usize,
    /// The version of the state before the oldest kept change: watchers at it or later are
    /// served from the ring. `None` until the first change after open or a snapshot.
    floor: Option<u64>,
}

/// See the module docs.
#[derive(Debug)]
pub struct ChangeFeed {
    ring: Mutex<Ring>,
    version: watch::Sender<u64>,
}

impl ChangeFeed {
    pub fn new(version: u64) -> ChangeFeed {
        ChangeFeed {
            ring: Mutex::new(Ring {
                floor: Some(version),
                ..Ring::default()
            }),
            version: watch::Sender::new(version),
        }
    }

    /// The store's version changes: wake a watcher to look at [`since`](Self::since).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// `delta` took the metadata from `previous_version` to `version`.
    pub(super) fn record(&self, previous_version: u64, version: u64, delta: &Delta) {
        let mut change = MetadataDelta {
            previous_version,
            version,
            ..MetadataDelta::default()
        };
        for (name, topic) in &delta.topics {
            match topic {
                Some(t) => change.topics.push(t.clone()),
                None => change.deleted_topics.push(name.clone()),
            }
        }
        for (id, broker) in &delta.brokers {
            match broker {
                Some(b) => change.brokers.push(b.clone()),
                None => change.removed_brokers.push(*id),
            }
        }
        let size = change.encoded_len();
        {
            let mut ring = self.lock();
            if ring.floor.is_none() {
                ring.floor = Some(previous_version);
            }
            ring.changes.push_back((Arc::new(change), size));
            ring.bytes += size;
            while ring.changes.len() > FEED_CHANGES_MAX || ring.bytes > FEED_BYTES_MAX {
                let Some((oldest, size)) = ring.changes.pop_front() else {
                    break;
                };
                ring.bytes -= size;
                ring.floor = Some(oldest.version);
            }
        }
        self.version.send_replace(version);
    }

    /// The whole state was replaced (a snapshot) at `version`: no delta leads there.
    pub(super) fn reset(&self, version: u64) {
        *self.lock() = Ring {
            floor: Some(version),
            ..Ring::default()
        };
        self.version.send_replace(version);
    }

    /// What a watcher holding `version` needs next.
    pub fn since(&self, version: u64) -> Since {
        let ring = self.lock();
        let latest = ring
            .changes
            .back()
            .map(|(c, _)| c.version)
            .or(ring.floor)
            .unwrap_or(0);
        if version == 0 || ring.floor.is_none_or(|floor| version < floor) {
            return Since::TooOld;
        }
        if version >= latest {
            return if version == latest {
                Since::UpToDate
            } else {
                // Newer than this store: another leader's state; start over from an image.
                Since::TooOld
            };
        }
        let changes: Vec<_> = ring
            .changes
            .iter()
            .filter(|(c, _)| c.previous_version >= version)
            .map(|(c, _)| c.clone())
            .collect();
        match changes.first() {
            Some(first) if first.previous_version == version => Since::Changes(changes),
            // `version` is not one of the versions the feed went through.
            _ => Since::TooOld,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use dmq_proto::v1::TopicMetadata;

    use super::*;

    fn topic_delta(name: &str) -> Delta {
        let mut d = Delta::default();
        d.topics.insert(
            name.into(),
            Some(TopicMetadata {
                name: name.into(),
                ..TopicMetadata::default()
            }),
        );
        d
    }

    #[test]
    fn watchers_get_the_changes_after_their_version_or_an_image() {
        let feed = ChangeFeed::new(3);
        assert_eq!(feed.since(3), Since::UpToDate);
        assert_eq!(feed.since(0), Since::TooOld, "nothing held: an image");
        feed.record(3, 5, &topic_delta("a"));
        let mut gone = Delta::default();
        gone.topics.insert("a".into(), None);
        feed.record(5, 9, &gone);
        let Since::Changes(changes) = feed.since(3) else {
            panic!()
        };
        assert_eq!(
            changes
                .iter()
                .map(|c| (c.previous_version, c.version))
                .collect::<Vec<_>>(),
            [(3, 5), (5, 9)]
        );
        assert_eq!(changes[1].deleted_topics, ["a"]);
        let Since::Changes(changes) = feed.since(5) else {
            panic!()
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(feed.since(9), Since::UpToDate);
        assert_eq!(
            feed.since(4),
            Since::TooOld,
            "not a version it went through"
        );
        assert_eq!(feed.since(2), Since::TooOld, "older than what is kept");
        assert_eq!(feed.since(12), Since::TooOld, "newer than this store");
        feed.reset(20);
        assert_eq!(feed.since(9), Since::TooOld, "a snapshot came in between");
        assert_eq!(feed.since(20), Since::UpToDate);
    }

    #[test]
    fn the_feed_is_bounded_and_old_changes_make_way() {
        let feed = ChangeFeed::new(0);
        for v in 1..=(FEED_CHANGES_MAX as u64 + 10) {
            feed.record(v - 1, v, &topic_delta(&format!("t{v}")));
        }
        assert_eq!(feed.since(5), Since::TooOld);
        let Since::Changes(changes) = feed.since(20) else {
            panic!()
        };
        assert_eq!(changes.len(), FEED_CHANGES_MAX - 10);
        assert_eq!(*feed.subscribe().borrow(), FEED_CHANGES_MAX as u64 + 10);
    }
}
