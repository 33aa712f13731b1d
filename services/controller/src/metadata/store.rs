//! [`MetadataStore`]: the metadata state machine, durable in sled, mirrored in memory.
//!
//! # Layout
//! Three trees of the node's shared `sled::Db`:
//! - `meta_brokers`: key = broker id (u64 big-endian), value = `BrokerMetadata` (prost).
//! - `meta_topics`: key = topic name (UTF-8), value = `TopicMetadata` (prost).
//! - `meta_state`: `format` (the layout version), `applied_index`, `version`, `next_topic_id`
//!   (u64 big-endian each).
//!
//! Every value starts with a CRC32 over its key and payload ([`crate::checksum`]); `open` reads
//! and verifies everything, then checks the state's invariants, so corruption stops the node at
//! start-up instead of being served.
//!
//! There is no "next broker epoch" counter: a broker's epoch is the Raft index of its
//! registration, unique and increasing by construction, and the snapshot needs nothing to carry
//! it.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use dmq_proto::v1::{
    BrokerMetadata, BrokerStatus, MetadataCommand, MetadataSnapshot, TopicMetadata,
};
use prost::Message;
use sled::Batch;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::apply::CommandReply;
use super::error::MetadataError;
use super::feed::ChangeFeed;
use super::page::{TopicPage, decode_token, effective_page_size, encode_token};
use super::state::{Delta, FIRST_TOPIC_ID, State};
use crate::checksum::{Reader, seal, unseal};

const BROKERS_TREE: &str = "meta_brokers";
const TOPICS_TREE: &str = "meta_topics";
const STATE_TREE: &str = "meta_state";
const KEY_FORMAT: &[u8] = b"format";
/// The layout this module writes; any other value stops `open`.
const FORMAT_V1: &[u8] = b"dmq-metadata-sled/1";
const KEY_APPLIED_INDEX: &[u8] = b"applied_index";
const KEY_VERSION: &[u8] = b"version";
const KEY_NEXT_TOPIC_ID: &[u8] = b"next_topic_id";
const KEY_FEATURE_LEVEL: &[u8] = b"feature_level";
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";

/// What applying one log entry did, for its proposer. A storage failure is not an outcome: it
/// is the `Err` of [`ApplyResult`].
#[derive(Clone, Debug, PartialEq)]
pub enum ApplyOutcome {
    /// The entry was applied; `version` is the metadata version after it: the entry's index if
    /// it changed brokers or topics, otherwise unchanged.
    Applied { version: u64, reply: CommandReply },
    /// The command was no longer valid at its place in the log. The state is unchanged, the
    /// applied index advanced; every controller rejects it the same way.
    Rejected(MetadataError),
    /// The index was applied before (a replay after restart): nothing happened.
    AlreadyApplied,
}

/// The result of applying one entry. `Err` means the node must stop: what reached the disk is
/// unknown, and the entry must not be treated as applied.
pub type ApplyResult = Result<ApplyOutcome, StoreError>;

/// Why the store failed. Every variant means the node must not go on as if the call succeeded.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error.
    #[error(
        "sled failed on the metadata store: {0}. Stop this node; restarting recovers the last \
         applied state and replays the Raft log. If it keeps failing, check the disk"
    )]
    Sled(#[from] sled::Error),
    /// A stored value failed its checksum, does not decode, or the state breaks its invariants.
    #[error(
        "the metadata store is corrupt: {what}: {detail}. This node must not run on it: stop \
         it, move its data directory aside and restart it empty so that it catches up from the \
         leader (it neither votes nor counts toward commits until it has)"
    )]
    Corrupt { what: String, detail: String },
    /// A snapshot that does not describe a valid state; nothing of it was installed.
    #[error("refusing to install the metadata snapshot at index {applied_index}: {detail}")]
    InvalidSnapshot { applied_index: u64, detail: String },
}

/// The controllers' metadata state machine over sled (see the module docs for the layout).
///
/// # To ensure correctness
/// - Apply is exactly once and all or nothing: the changes of one entry and its index are
///   written in one multi-tree sled transaction, so after a crash the store holds a prefix of
///   the applied entries, and the applied index says where to resume; an index at or below it is
///   a no-op ([`ApplyOutcome::AlreadyApplied`]).
/// - Apply does not flush: the Raft log holds every entry, so whatever a crash loses is applied
///   again on restart. The caller must make the store durable (`Db::flush`, and an fsync of the
///   data file) before it compacts the log past [`MetadataStore::applied_index`], or restore
///   from the Raft snapshot when the log starts after the applied index.
/// - Apply is deterministic (see `apply.rs`); the in-memory copy is updated only after the
///   transaction succeeded, and readers see whole entries only (one lock).
/// - Entries are applied by one caller in log order; the lock also makes concurrent calls safe.
/// - One `MetadataStore` per `Db`: the state lives in memory too, so a second store over the
///   same trees would not see the first one's writes.
pub struct MetadataStore {
    brokers: sled::Tree,
    topics: sled::Tree,
    meta: sled::Tree,
    state: RwLock<State>,
    /// The latest changes, for WatchMetadata.
    feed: ChangeFeed,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("MetadataStore")
            .field("applied_index", &state.applied_index)
            .field("version", &state.version)
            .field("brokers", &state.brokers.len())
            .field("topics", &state.topics.len())
            .finish()
    }
}

impl MetadataStore {
    /// Opens (creating if needed) the metadata trees in `db`, reads and verifies all of them
    /// into memory and checks the state's invariants.
    pub fn open(db: &sled::Db) -> Result<MetadataStore, StoreError> {
        let store = MetadataStore {
            brokers: db.open_tree(BROKERS_TREE)?,
            topics: db.open_tree(TOPICS_TREE)?,
            meta: db.open_tree(STATE_TREE)?,
            state: RwLock::new(State::default()),
            feed: ChangeFeed::new(0),
        };
        let state = store.load()?;
        state
            .check_invariants()
            .map_err(|detail| StoreError::Corrupt {
                what: "the stored state".to_string(),
                detail,
            })?;
        store.feed.reset(state.version);
        *store.write() = state;
        Ok(store)
    }

    /// Applies the command logged at `index` (see [`ApplyOutcome`]).
    pub fn apply(&self, index: u64, command: &MetadataCommand) -> ApplyResult {
        let mut state = self.write();
        if index <= state.applied_index {
            return Ok(ApplyOutcome::AlreadyApplied);
        }
        let (delta, outcome) = match state.plan(index, command) {
            Ok((delta, reply)) => {
                let version = if delta.changes_metadata() {
                    index
                } else {
                    state.version
                };
                (delta, ApplyOutcome::Applied { version, reply })
            }
            Err(rejection) => (Delta::default(), ApplyOutcome::Rejected(rejection)),
        };
        self.write_delta(index, &delta)?;
        if delta.changes_metadata() {
            self.feed.record(state.version, index, &delta);
        }
        state.commit(index, delta);
        debug_check(&state, index);
        Ok(outcome)
    }

    /// Applies consecutive log entries (`None` for a no-op) in one sled transaction, which is
    /// what a Ready's committed entries are: one write for the batch instead of one per entry.
    /// `answer` gets the outcomes, each what [`MetadataStore::apply`] would have returned, once
    /// the in-memory state holds them and before that transaction: the entries are committed,
    /// so their outcomes are decided whatever happens to this node's copy, and the proposers'
    /// round trips overlap the write (readers still wait for it: the state's lock is held).
    /// On `Err` the node must stop: the in-memory state may be ahead of what was written.
    pub fn apply_batch(
        &self,
        entries: &[(u64, Option<&MetadataCommand>)],
        answer: impl FnOnce(Vec<ApplyOutcome>),
    ) -> Result<(), StoreError> {
        let mut state = self.write();
        let (mut brokers, mut topics, mut meta) =
            (Batch::default(), Batch::default(), Batch::default());
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut last = None;
        for &(index, command) in entries {
            if index <= state.applied_index {
                outcomes.push(ApplyOutcome::AlreadyApplied);
                continue;
            }
            let (delta, outcome) = match command {
                None => (
                    Delta::default(),
                    ApplyOutcome::Applied {
                        version: state.version,
                        reply: CommandReply::Noop,
                    },
                ),
                Some(command) => match state.plan(index, command) {
                    Ok((delta, reply)) => {
                        let version = if delta.changes_metadata() {
                            index
                        } else {
                            state.version
                        };
                        (delta, ApplyOutcome::Applied { version, reply })
                    }
                    Err(rejection) => (Delta::default(), ApplyOutcome::Rejected(rejection)),
                },
            };
            stage_delta(&delta, index, &mut brokers, &mut topics, &mut meta);
            if delta.changes_metadata() {
                self.feed.record(state.version, index, &delta);
            }
            state.commit(index, delta);
            last = Some(index);
            outcomes.push(outcome);
        }
        answer(outcomes);
        if let Some(index) = last {
            meta.insert(KEY_APPLIED_INDEX, seal_u64(KEY_APPLIED_INDEX, index));
            self.commit(&brokers, &topics, &meta)?;
            debug_check(&state, index);
        }
        Ok(())
    }

    /// Applies a log entry that carries no metadata command (a new leader's no-op, a membership
    /// change): only the applied index moves.
    pub fn apply_noop(&self, index: u64) -> ApplyResult {
        let mut state = self.write();
        if index <= state.applied_index {
            return Ok(ApplyOutcome::AlreadyApplied);
        }
        self.write_delta(index, &Delta::default())?;
        state.commit(index, Delta::default());
        Ok(ApplyOutcome::Applied {
            version: state.version,
            reply: CommandReply::Noop,
        })
    }

    /// Whether `command` would be applied if it were the next entry: the leader's early refusal
    /// of commands that are already invalid, so they need not go through the log. Apply stays
    /// authoritative: entries in flight may change the answer.
    pub fn check(&self, command: &MetadataCommand) -> Result<(), MetadataError> {
        let state = self.read();
        state.plan(state.applied_index + 1, command).map(drop)
    }

    /// The whole state at the applied index.
    pub fn snapshot(&self) -> MetadataSnapshot {
        let state = self.read();
        MetadataSnapshot {
            applied_index: state.applied_index,
            metadata_version: state.version,
            brokers: state.brokers.values().cloned().collect(),
            topics: state.topics.values().cloned().collect(),
            next_topic_id: state.next_topic_id,
            feature_level: state.feature_level,
            cluster_id: state.cluster_id.clone(),
        }
    }

    /// The state at the applied index as an encoded [`MetadataSnapshot`], with that index:
    /// encoded straight from the state, without the copy [`MetadataStore::snapshot`] makes
    /// (the state can be hundreds of MiB). Decodes to what `snapshot()` returns.
    pub fn snapshot_bytes(&self) -> (u64, Vec<u8>) {
        use prost::encoding::{message, string, uint32, uint64};
        let state = self.read();
        let brokers = state.brokers.values();
        let topics = state.topics.values();
        let mut len = 0;
        len += uint64::encoded_len(1, &state.applied_index);
        len += uint64::encoded_len(2, &state.version);
        len += brokers
            .clone()
            .map(|b| message::encoded_len(3, b))
            .sum::<usize>();
        len += topics
            .clone()
            .map(|t| message::encoded_len(4, t))
            .sum::<usize>();
        len += uint64::encoded_len(5, &state.next_topic_id);
        len += uint32::encoded_len(6, &state.feature_level);
        len += string::encoded_len(7, &state.cluster_id);
        let mut out = Vec::with_capacity(len);
        // Proto3: default values are not written, as prost's derived encoding does.
        if state.applied_index != 0 {
            uint64::encode(1, &state.applied_index, &mut out);
        }
        if state.version != 0 {
            uint64::encode(2, &state.version, &mut out);
        }
        for b in brokers {
            message::encode(3, b, &mut out);
        }
        for t in topics {
            message::encode(4, t, &mut out);
        }
        if state.next_topic_id != 0 {
            uint64::encode(5, &state.next_topic_id, &mut out);
        }
        if state.feature_level != 0 {
            uint32::encode(6, &state.feature_level, &mut out);
        }
        if !state.cluster_id.is_empty() {
            string::encode(7, &state.cluster_id, &mut out);
        }
        (state.applied_index, out)
    }

    /// Replaces the whole state with `snapshot`, in one transaction: after a crash the store
    /// holds either the old state or the snapshot. A snapshot that breaks the state's
    /// invariants is refused and nothing changes.
    pub fn restore(&self, snapshot: &MetadataSnapshot) -> Result<(), StoreError> {
        self.restore_owned(snapshot.clone())
    }

    /// [`MetadataStore::restore`], moving the snapshot's brokers and topics into the state
    /// instead of copying them: a big snapshot is then held once, not twice.
    pub fn restore_owned(&self, snapshot: MetadataSnapshot) -> Result<(), StoreError> {
        let applied_index = snapshot.applied_index;
        let invalid = |detail: String| StoreError::InvalidSnapshot {
            applied_index,
            detail,
        };
        let mut new = State {
            applied_index: snapshot.applied_index,
            version: snapshot.metadata_version,
            next_topic_id: snapshot.next_topic_id,
            feature_level: snapshot.feature_level,
            cluster_id: snapshot.cluster_id,
            ..State::default()
        };
        for broker in snapshot.brokers {
            let id = broker.broker_id;
            if new.brokers.insert(id, broker).is_some() {
                return Err(invalid(format!("broker {id} appears twice")));
            }
        }
        for topic in snapshot.topics {
            if let Some(twice) = new.topics.insert(topic.name.clone(), topic) {
                return Err(invalid(format!("topic {:?} appears twice", twice.name)));
            }
        }
        new.check_invariants().map_err(invalid)?;

        let mut state = self.write();
        let (mut brokers, mut topics) = (Batch::default(), Batch::default());
        for id in state.brokers.keys() {
            brokers.remove(&id.to_be_bytes());
        }
        for name in state.topics.keys() {
            topics.remove(name.as_bytes());
        }
        for broker in new.brokers.values() {
            let key = broker.broker_id.to_be_bytes();
            brokers.insert(&key, seal_message(&key, broker));
        }
        for topic in new.topics.values() {
            topics.insert(
                topic.name.as_bytes(),
                seal_message(topic.name.as_bytes(), topic),
            );
        }
        let mut meta = Batch::default();
        meta.insert(
            KEY_APPLIED_INDEX,
            seal_u64(KEY_APPLIED_INDEX, new.applied_index),
        );
        meta.insert(KEY_VERSION, seal_u64(KEY_VERSION, new.version));
        meta.insert(
            KEY_NEXT_TOPIC_ID,
            seal_u64(KEY_NEXT_TOPIC_ID, new.next_topic_id),
        );
        meta.insert(
            KEY_FEATURE_LEVEL,
            seal_u64(KEY_FEATURE_LEVEL, u64::from(new.feature_level)),
        );
        meta.insert(
            KEY_CLUSTER_ID,
            seal_bytes(KEY_CLUSTER_ID, new.cluster_id.as_bytes()),
        );
        self.commit(&brokers, &topics, &meta)?;
        self.feed.reset(new.version);
        *state = new;
        Ok(())
    }

    /// The latest metadata changes (WatchMetadata).
    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    /// The metadata version, all brokers (by id) and all topics (by name), read at one version.
    pub fn get_metadata(&self) -> (u64, Vec<BrokerMetadata>, Vec<TopicMetadata>) {
        let state = self.read();
        (
            state.version,
            state.brokers.values().cloned().collect(),
            state.topics.values().cloned().collect(),
        )
    }

    /// One page of topics in name order, after the topic named by `page_token` (empty: from the
    /// start). `page_size` 0 means 100; at most 1000 are returned.
    pub fn list_topics(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<TopicPage, MetadataError> {
        let after = decode_token(page_token)?;
        let size = effective_page_size(page_size);
        let state = self.read();
        let mut rest = match &after {
            Some(name) => state.topics.range::<str, _>((
                std::ops::Bound::Excluded(name.as_str()),
                std::ops::Bound::Unbounded,
            )),
            None => state.topics.range::<str, _>(..),
        };
        let topics: Vec<TopicMetadata> = rest.by_ref().take(size).map(|(_, t)| t.clone()).collect();
        let next_page_token = match (rest.next(), topics.last()) {
            (Some(_), Some(last)) => encode_token(&last.name),
            _ => String::new(),
        };
        Ok(TopicPage {
            topics,
            next_page_token,
            metadata_version: state.version,
        })
    }

    /// The topic `name` and the metadata version it was read at.
    pub fn describe_topic(&self, name: &str) -> Result<(u64, TopicMetadata), MetadataError> {
        let state = self.read();
        let topic = state
            .topics
            .get(name)
            .ok_or_else(|| MetadataError::TopicNotFound {
                name: name.to_string(),
            })?;
        Ok((state.version, topic.clone()))
    }

    /// The registered broker `id`.
    pub fn broker(&self, id: u64) -> Option<BrokerMetadata> {
        self.read().brokers.get(&id).cloned()
    }

    /// All registered brokers, by id.
    pub fn brokers(&self) -> Vec<BrokerMetadata> {
        self.read().brokers.values().cloned().collect()
    }

    /// The ONLINE brokers as `(id, rack)`, by id: the input of
    /// [`assign_replicas`](super::assign_replicas).
    pub fn online_brokers(&self) -> Vec<(u64, String)> {
        self.read()
            .brokers
            .values()
            .filter(|b| b.status == BrokerStatus::Online as i32)
            .map(|b| (b.broker_id, b.rack.clone()))
            .collect()
    }

    /// How many partitions are led by another replica than their preferred one while the
    /// preferred one could lead (what an ElectPreferredLeaders command would move).
    pub fn imbalanced_partitions(&self) -> usize {
        let state = self.read();
        state
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| state.prefers_another_leader(p))
            .count()
    }

    /// How many topics exist (a natural `start_offset` for the next assignment).
    pub fn topic_count(&self) -> usize {
        self.read().topics.len()
    }

    /// The Raft index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.read().applied_index
    }

    /// The metadata version: the Raft index of the last entry that changed brokers or topics.
    pub fn version(&self) -> u64 {
        self.read().version
    }

    /// The agreed metadata feature level (0 before the first SetFeatureLevel).
    pub fn feature_level(&self) -> u32 {
        self.read().feature_level
    }

    /// The cluster id, empty before the first SetFeatureLevel named it.
    pub fn cluster_id(&self) -> String {
        self.read().cluster_id.clone()
    }

    /// Whether nothing was ever applied that changed brokers, topics or the feature level.
    pub fn is_pristine(&self) -> bool {
        let s = self.read();
        s.version == 0 && s.feature_level == 0 && s.brokers.is_empty() && s.topics.is_empty()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().expect("a metadata apply panicked")
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().expect("a metadata apply panicked")
    }

    /// Writes the delta of the entry at `index` with the new applied index (and version), in
    /// one transaction.
    fn write_delta(&self, index: u64, delta: &Delta) -> Result<(), StoreError> {
        let (mut brokers, mut topics, mut meta) =
            (Batch::default(), Batch::default(), Batch::default());
        stage_delta(delta, index, &mut brokers, &mut topics, &mut meta);
        meta.insert(KEY_APPLIED_INDEX, seal_u64(KEY_APPLIED_INDEX, index));
        self.commit(&brokers, &topics, &meta)
    }

    /// One sled transaction over the three trees: sled recovers all of it or none of it.
    fn commit(&self, brokers: &Batch, topics: &Batch, meta: &Batch) -> Result<(), StoreError> {
        (&self.brokers, &self.topics, &self.meta)
            .transaction(|(b, t, m)| {
                b.apply_batch(brokers)?;
                t.apply_batch(topics)?;
                m.apply_batch(meta)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|error| match error {
                TransactionError::Storage(error) => StoreError::Sled(error),
                TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
            })
    }

    /// Reads and verifies the three trees. A store never written gets its format marker.
    fn load(&self) -> Result<State, StoreError> {
        let mut state = State::default();
        match self.meta.get(KEY_FORMAT)? {
            Some(value) => {
                let format = unseal(KEY_FORMAT, &value).map_err(corrupt("the format marker"))?;
                if format != FORMAT_V1 {
                    return Err(corrupt("the format marker")(format!(
                        "unknown layout {:?} (this version reads {:?})",
                        String::from_utf8_lossy(format),
                        String::from_utf8_lossy(FORMAT_V1)
                    )));
                }
            }
            None => {
                if !(self.meta.is_empty() && self.brokers.is_empty() && self.topics.is_empty()) {
                    return Err(corrupt("the format marker")(
                        "it is missing from non-empty metadata trees".to_string(),
                    ));
                }
                self.meta.insert(
                    KEY_FORMAT,
                    seal(KEY_FORMAT, FORMAT_V1.len(), |v| {
                        v.extend_from_slice(FORMAT_V1)
                    }),
                )?;
                return Ok(state);
            }
        }
        let read_u64 = |key: &[u8], default: u64| -> Result<u64, StoreError> {
            let what = || format!("meta_state key {:?}", String::from_utf8_lossy(key));
            match self.meta.get(key)? {
                None => Ok(default),
                Some(value) => {
                    let payload = unseal(key, &value).map_err(corrupt(&what()))?;
                    let mut reader = Reader::new(payload);
                    let n = reader.u64().map_err(corrupt(&what()))?;
                    reader.finish().map_err(corrupt(&what()))?;
                    Ok(n)
                }
            }
        };
        state.applied_index = read_u64(KEY_APPLIED_INDEX, 0)?;
        state.version = read_u64(KEY_VERSION, 0)?;
        state.next_topic_id = read_u64(KEY_NEXT_TOPIC_ID, FIRST_TOPIC_ID)?;
        state.feature_level = u32::try_from(read_u64(KEY_FEATURE_LEVEL, 0)?)
            .map_err(|_| corrupt("meta_state key \"feature_level\"")("out of range".to_string()))?;
        if let Some(value) = self.meta.get(KEY_CLUSTER_ID)? {
            let what = "meta_state key \"cluster_id\"";
            let payload = unseal(KEY_CLUSTER_ID, &value).map_err(corrupt(what))?;
            state.cluster_id = String::from_utf8(payload.to_vec())
                .map_err(|e| corrupt(what)(format!("not UTF-8: {e}")))?;
        }
        for entry in self.brokers.iter() {
            let (key, value) = entry?;
            let what = format!("meta_brokers key {key:?}");
            let broker: BrokerMetadata = open_message(&key, &value).map_err(corrupt(&what))?;
            if key.as_ref() != broker.broker_id.to_be_bytes() {
                return Err(corrupt(&what)(format!(
                    "it holds broker {}",
                    broker.broker_id
                )));
            }
            state.brokers.insert(broker.broker_id, broker);
        }
        for entry in self.topics.iter() {
            let (key, value) = entry?;
            let what = format!("meta_topics key {:?}", String::from_utf8_lossy(&key));
            let topic: TopicMetadata = open_message(&key, &value).map_err(corrupt(&what))?;
            if key.as_ref() != topic.name.as_bytes() {
                return Err(corrupt(&what)(format!("it holds topic {:?}", topic.name)));
            }
            state.topics.insert(topic.name.clone(), topic);
        }
        Ok(state)
    }
}

fn seal_message(key: &[u8], message: &impl Message) -> Vec<u8> {
    seal(key, message.encoded_len(), |v| {
        message.encode(v).expect("a Vec grows to fit any message")
    })
}

/// Debug builds check the state's invariants after every apply while the state is small: the
/// check walks every partition, and a test that builds a big state (hundreds of thousands of
/// partitions) would spend its time there. Every state is checked at `open` and `restore`.
fn debug_check(state: &State, index: u64) {
    const CHECKED_TOPICS_MAX: usize = 256;
    if cfg!(debug_assertions) && state.topics.len() <= CHECKED_TOPICS_MAX {
        assert_eq!(state.check_invariants(), Ok(()), "after index {index}");
    }
}

fn seal_bytes(key: &[u8], bytes: &[u8]) -> Vec<u8> {
    seal(key, bytes.len(), |v| v.extend_from_slice(bytes))
}

fn seal_u64(key: &[u8], n: u64) -> Vec<u8> {
    seal(key, 8, |v| v.extend_from_slice(&n.to_be_bytes()))
}

fn open_message<M: Message + Default>(key: &[u8], value: &[u8]) -> Result<M, String> {
    let payload = unseal(key, value)?;
    M::decode(payload).map_err(|e| format!("it does not decode: {e}"))
}

fn corrupt(what: &str) -> impl Fn(String) -> StoreError + '_ {
    move |detail| StoreError::Corrupt {
        what: what.to_string(),
        detail,
    }
}

/// Adds the writes of `delta` (applied at `index`) to the batches; later writes to a key
/// replace earlier ones, so deltas of consecutive entries can share batches.
fn stage_delta(
    delta: &Delta,
    index: u64,
    brokers: &mut Batch,
    topics: &mut Batch,
    meta: &mut Batch,
) {
    for (id, broker) in &delta.brokers {
        let key = id.to_be_bytes();
        match broker {
            Some(broker) => brokers.insert(&key, seal_message(&key, broker)),
            None => brokers.remove(&key),
        }
    }
    for (name, topic) in &delta.topics {
        match topic {
            Some(topic) => topics.insert(name.as_bytes(), seal_message(name.as_bytes(), topic)),
            None => topics.remove(name.as_bytes()),
        }
    }
    if delta.changes_metadata() {
        meta.insert(KEY_VERSION, seal_u64(KEY_VERSION, index));
    }
    if let Some(next) = delta.next_topic_id {
        meta.insert(KEY_NEXT_TOPIC_ID, seal_u64(KEY_NEXT_TOPIC_ID, next));
    }
    if let Some(level) = delta.feature_level {
        meta.insert(
            KEY_FEATURE_LEVEL,
            seal_u64(KEY_FEATURE_LEVEL, u64::from(level)),
        );
    }
    if let Some(id) = &delta.cluster_id {
        meta.insert(KEY_CLUSTER_ID, seal_bytes(KEY_CLUSTER_ID, id.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::assign_replicas;
    use super::super::testing::*;
    use super::*;

    /// A small cluster with a history: registrations, topics, a fence, an ISR change.
    fn populated() -> TestStore {
        let t = TestStore::new();
        for id in 1..=3 {
            t.register(id, id, &format!("rack-{id}"));
        }
        t.ok(4, create("orders", &[vec![1, 2, 3], vec![2, 3, 1]]));
        t.ok(5, create("audit", &[vec![3]]));
        t.ok(6, fence(2, 2));
        t.ok(
            7,
            alter(
                1,
                1,
                "orders",
                0,
                0,
                t.partition("orders", 0).partition_epoch,
                &[1],
            ),
        );
        t.store.apply_noop(9).unwrap();
        t
    }

    #[test]
    fn a_reopened_store_has_the_same_state_and_applied_index() {
        let t = populated();
        let (metadata, snapshot) = (t.store.get_metadata(), t.store.snapshot());
        assert_eq!((t.store.applied_index(), t.store.version()), (9, 7));
        let t = t.reopen();
        assert_eq!(t.store.get_metadata(), metadata);
        assert_eq!(t.store.snapshot(), snapshot);
        assert_eq!((t.store.applied_index(), t.store.version()), (9, 7));
        // Counters survived too: the next topic gets the next id.
        t.ok(10, create("next", &[vec![1]]));
        assert_eq!(t.store.describe_topic("next").unwrap().1.topic_id, 3);
    }

    #[test]
    fn replaying_an_applied_index_changes_nothing() {
        let t = populated();
        let snapshot = t.store.snapshot();
        for index in [1, 4, 6, 9] {
            for command in [register(1, ""), delete("orders"), fence(1, 1)] {
                assert_eq!(
                    t.store.apply(index, &command).unwrap(),
                    ApplyOutcome::AlreadyApplied
                );
            }
            assert_eq!(
                t.store.apply_noop(index).unwrap(),
                ApplyOutcome::AlreadyApplied
            );
        }
        assert_eq!(t.store.snapshot(), snapshot);
        let t = t.reopen();
        assert_eq!(
            t.store.apply(9, &delete("orders")).unwrap(),
            ApplyOutcome::AlreadyApplied
        );
        assert_eq!(t.store.snapshot(), snapshot);
    }

    #[test]
    fn a_noop_moves_only_the_applied_index() {
        let t = TestStore::new();
        t.register(1, 1, "");
        assert_eq!(
            t.store.apply_noop(2).unwrap(),
            ApplyOutcome::Applied {
                version: 1,
                reply: CommandReply::Noop
            }
        );
        assert_eq!((t.store.applied_index(), t.store.version()), (2, 1));
    }

    #[test]
    fn check_refuses_what_apply_would_reject_without_applying() {
        let t = populated();
        let before = t.store.snapshot();
        assert_eq!(
            t.store.check(&create("orders", &[vec![1]])),
            Err(MetadataError::TopicAlreadyExists {
                name: "orders".into()
            })
        );
        assert_eq!(t.store.check(&create("fresh", &[vec![1]])), Ok(()));
        assert_eq!(t.store.snapshot(), before);
    }

    #[test]
    fn a_snapshot_restores_the_same_state_on_a_fresh_db() {
        let source = populated();
        let snapshot = source.store.snapshot();
        let decoded = MetadataSnapshot::decode(snapshot.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, snapshot);

        let target = TestStore::new();
        target.store.restore(&decoded).unwrap();
        assert_eq!(target.store.get_metadata(), source.store.get_metadata());
        assert_eq!(target.store.applied_index(), 9);
        let target = target.reopen();
        assert_eq!(target.store.snapshot(), snapshot);

        // Both go on identically from there.
        for t in [&source, &target] {
            t.ok(10, create("later", &[vec![3, 1]]));
            t.ok(11, delete("audit"));
        }
        assert_eq!(target.store.snapshot(), source.store.snapshot());
    }

    #[test]
    fn snapshot_bytes_are_the_encoded_snapshot_without_the_copy() {
        let empty = TestStore::new();
        assert_eq!(
            empty.store.snapshot_bytes(),
            (0, empty.store.snapshot().encode_to_vec())
        );
        let t = populated();
        t.ok(
            10,
            MetadataCommand {
                command: Some(dmq_proto::v1::metadata_command::Command::SetFeatureLevel(
                    dmq_proto::v1::SetFeatureLevelCommand {
                        feature_level: 1,
                        cluster_id: "c".into(),
                    },
                )),
            },
        );
        let (index, bytes) = t.store.snapshot_bytes();
        assert_eq!(index, 10);
        assert_eq!(bytes, t.store.snapshot().encode_to_vec());
    }

    #[test]
    fn restore_replaces_everything_and_refuses_a_broken_snapshot() {
        let t = populated();
        let other = TestStore::new();
        other.register(20, 8, "");
        other.ok(21, create("only", &[vec![8]]));
        let snapshot = other.store.snapshot();

        let mut broken = snapshot.clone();
        broken.topics[0].partitions[0].leader = 9;
        let error = t.store.restore(&broken).unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidSnapshot { .. }),
            "{error}"
        );
        let mut twice = snapshot.clone();
        twice.brokers.push(twice.brokers[0].clone());
        assert!(t.store.restore(&twice).is_err());
        assert_eq!(
            t.store.applied_index(),
            9,
            "a refused snapshot changes nothing"
        );

        t.store.restore(&snapshot).unwrap();
        assert_eq!(t.store.get_metadata(), other.store.get_metadata());
        let t = t.reopen();
        assert_eq!(
            t.store.snapshot(),
            snapshot,
            "nothing of the old state is left on disk"
        );
    }

    #[test]
    fn corruption_is_found_at_open() {
        let t = populated();
        let TestStore { dir, db, store } = t;
        drop(store);
        let topics = db.open_tree(TOPICS_TREE).unwrap();
        let mut value = topics.get("orders").unwrap().unwrap().to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x40;
        topics.insert("orders", value).unwrap();
        let error = MetadataStore::open(&db).unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt { what, .. } if what.contains("orders")),
            "{error}"
        );
        drop(dir);
    }

    #[test]
    fn topics_are_listed_in_pages() {
        let t = TestStore::new();
        t.register(1, 1, "");
        for i in 0..250 {
            t.ok(2 + i, create(&format!("topic-{i:03}"), &[vec![1]]));
        }
        let mut names = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = t.store.list_topics(0, &token).unwrap();
            assert_eq!(page.metadata_version, 251);
            assert!(page.topics.len() <= 100);
            names.extend(page.topics.into_iter().map(|topic| topic.name));
            pages += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3);
        let expected: Vec<String> = (0..250).map(|i| format!("topic-{i:03}")).collect();
        assert_eq!(names, expected);

        let exact = t.store.list_topics(250, "").unwrap();
        assert_eq!(
            (exact.topics.len(), exact.next_page_token.as_str()),
            (250, "")
        );
        assert_eq!(t.store.list_topics(5000, "").unwrap().topics.len(), 250);
        let error = t.store.list_topics(10, "not a token").unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        // A token naming a deleted topic still continues after it.
        let page = t.store.list_topics(2, "").unwrap();
        t.ok(300, delete("topic-001"));
        let next = t.store.list_topics(2, &page.next_page_token).unwrap();
        assert_eq!(next.topics[0].name, "topic-002");
    }

    /// What a random history does, resolved against the state at that point so that most
    /// commands are meaningful (current epochs, the current leader) and some are stale.
    #[derive(Clone, Debug)]
    enum Op {
        Register {
            broker: u64,
            rack: u8,
        },
        Unregister {
            broker: u64,
            stale: bool,
        },
        Fence {
            broker: u64,
            stale: bool,
        },
        Unfence {
            broker: u64,
            stale: bool,
        },
        Create {
            topic: u8,
            partitions: u32,
            rf: u32,
        },
        Delete {
            topic: u8,
        },
        /// The current leader of a partition keeps the ISR members picked by `keep`.
        Alter {
            topic: u8,
            partition: u32,
            keep: u8,
            stale: bool,
        },
        Noop,
        /// Re-applies an applied index (a replay after restart).
        Replay {
            back: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let broker = 1..=5u64;
        prop_oneof![
            4 => (broker.clone(), 0..3u8).prop_map(|(broker, rack)| Op::Register { broker, rack }),
            1 => (broker.clone(), any::<bool>())
                .prop_map(|(broker, stale)| Op::Unregister { broker, stale }),
            3 => (broker.clone(), any::<bool>())
                .prop_map(|(broker, stale)| Op::Fence { broker, stale }),
            3 => (broker, any::<bool>()).prop_map(|(broker, stale)| Op::Unfence { broker, stale }),
            3 => (0..4u8, 1..5u32, 1..4u32)
                .prop_map(|(topic, partitions, rf)| Op::Create { topic, partitions, rf }),
            1 => (0..4u8).prop_map(|topic| Op::Delete { topic }),
            3 => (0..4u8, 0..4u32, any::<u8>(), any::<bool>()).prop_map(
                |(topic, partition, keep, stale)| Op::Alter { topic, partition, keep, stale }
            ),
            1 => Just(Op::Noop),
            1 => (1..4u64).prop_map(|back| Op::Replay { back }),
        ]
    }

    /// The command `op` stands for, given the state of `store`.
    fn resolve(store: &MetadataStore, op: &Op) -> Option<MetadataCommand> {
        let epoch = |broker: u64, stale: bool| {
            let current = store.broker(broker).map_or(1, |b| b.broker_epoch);
            if stale {
                current.saturating_sub(1)
            } else {
                current
            }
        };
        Some(match *op {
            Op::Register { broker, rack } => register(broker, &format!("r{rack}")),
            Op::Unregister { broker, stale } => unregister(broker, epoch(broker, stale)),
            Op::Fence { broker, stale } => fence(broker, epoch(broker, stale)),
            Op::Unfence { broker, stale } => unfence(broker, epoch(broker, stale)),
            Op::Create {
                topic,
                partitions,
                rf,
            } => {
                let online = store.online_brokers();
                let assignment = if (rf as usize) <= online.len() {
                    assign_replicas(partitions, rf, &online, store.topic_count() as u64)
                } else {
                    // More replicas than ONLINE brokers: rejected at apply.
                    vec![(1..=u64::from(rf)).collect(); partitions as usize]
                };
                create(&format!("t{topic}"), &assignment)
            }
            Op::Delete { topic } => delete(&format!("t{topic}")),
            Op::Alter {
                topic,
                partition,
                keep,
                stale,
            } => {
                // Any existing topic and partition, so most changes reach a real partition.
                let topics = store.get_metadata().2;
                let t = topics.get(usize::from(topic) % topics.len().max(1))?;
                let partition = partition % t.partitions.len() as u32;
                let (name, p) = (t.name.clone(), t.partitions[partition as usize].clone());
                let leader = if p.leader == 0 {
                    p.replicas[0]
                } else {
                    p.leader
                };
                let isr: Vec<u64> = p
                    .replicas
                    .iter()
                    .enumerate()
                    .filter(|&(i, &r)| r == leader || keep & (1 << i) != 0)
                    .map(|(_, &r)| r)
                    .collect();
                let leader_epoch = if stale {
                    p.leader_epoch + 1
                } else {
                    p.leader_epoch
                };
                alter(
                    leader,
                    epoch(leader, false),
                    &name,
                    partition,
                    leader_epoch,
                    p.partition_epoch,
                    &isr,
                )
            }
            Op::Noop | Op::Replay { .. } => return None,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Two stores applying the same log reach the same state and answer the same, whatever
        /// the history; one of them restarts halfway; the state's invariants hold throughout;
        /// and a snapshot of the end state restores to an equal store.
        #[test]
        fn the_same_log_gives_the_same_state(ops in prop::collection::vec(op(), 1..80)) {
            let a = TestStore::new();
            let mut b = TestStore::new();
            let mut index = 0u64;
            for (i, op) in ops.iter().enumerate() {
                if i == ops.len() / 2 {
                    b = b.reopen();
                }
                let (outcome_a, outcome_b) = match (op, resolve(&a.store, op)) {
                    (Op::Replay { back }, _) => {
                        let replayed = index.saturating_sub(*back);
                        let command = delete("t0");
                        (a.store.apply(replayed, &command).unwrap(),
                         b.store.apply(replayed, &command).unwrap())
                    }
                    (_, Some(command)) => {
                        index += 1;
                        (a.store.apply(index, &command).unwrap(),
                         b.store.apply(index, &command).unwrap())
                    }
                    (_, None) => {
                        index += 1;
                        (a.store.apply_noop(index).unwrap(), b.store.apply_noop(index).unwrap())
                    }
                };
                prop_assert_eq!(outcome_a, outcome_b);
                prop_assert_eq!(a.store.read().check_invariants(), Ok(()));
                prop_assert_eq!(a.store.applied_index(), index);
            }
            prop_assert_eq!(a.store.snapshot(), b.store.snapshot());
            let b = b.reopen();
            prop_assert_eq!(a.store.snapshot(), b.store.snapshot());
            let c = TestStore::new();
            c.store.restore(&a.store.snapshot()).unwrap();
            prop_assert_eq!(c.store.get_metadata(), a.store.get_metadata());
        }
    }
}
