//! The metadata state in memory ([`State`]), the change one command makes to it ([`Delta`]) and
//! the invariants every applied state satisfies ([`State::check_invariants`]).

use std::collections::{BTreeMap, BTreeSet};

use dmq_proto::v1::{BrokerMetadata, BrokerStatus, TopicMetadata};

/// The first topic id handed out; 0 means "no topic".
pub(super) const FIRST_TOPIC_ID: u64 = 1;

/// The whole metadata state at `applied_index`. Maps are ordered, so every walk over them (and
/// so every apply) is deterministic.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct State {
    /// The Raft index of the last entry applied (a change, a rejection or a no-op).
    pub applied_index: u64,
    /// The Raft index of the last entry that changed brokers or topics.
    pub version: u64,
    /// The id the next created topic gets: ids are never reused, so a re-created topic is told
    /// apart from its namesake.
    pub next_topic_id: u64,
    pub brokers: BTreeMap<u64, BrokerMetadata>,
    pub topics: BTreeMap<String, TopicMetadata>,
    /// The agreed metadata feature level (see `features.rs`).
    pub feature_level: u32,
    /// The cluster's id, empty until the first SetFeatureLevel names it.
    pub cluster_id: String,
}

impl Default for State {
    fn default() -> State {
        State {
            applied_index: 0,
            version: 0,
            next_topic_id: FIRST_TOPIC_ID,
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            feature_level: 0,
            cluster_id: String::new(),
        }
    }
}

/// The changes one command makes: entries to write (`Some`) or remove (`None`). Built by planning
/// against the current state, written to sled in one transaction, then folded into memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Delta {
    pub brokers: BTreeMap<u64, Option<BrokerMetadata>>,
    pub topics: BTreeMap<String, Option<TopicMetadata>>,
    pub next_topic_id: Option<u64>,
    pub feature_level: Option<u32>,
    pub cluster_id: Option<String>,
}

impl Delta {
    /// Whether the command changed any broker or topic (and so bumps the metadata version).
    pub fn changes_metadata(&self) -> bool {
        !self.brokers.is_empty() || !self.topics.is_empty()
    }
}

impl State {
    /// Folds in the delta of the entry at `index`.
    pub fn commit(&mut self, index: u64, delta: Delta) {
        assert!(
            index > self.applied_index,
            "index {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
        if delta.changes_metadata() {
            self.version = index;
        }
        for (id, broker) in delta.brokers {
            match broker {
                Some(broker) => self.brokers.insert(id, broker),
                None => self.brokers.remove(&id),
            };
        }
        for (name, topic) in delta.topics {
            match topic {
                Some(topic) => self.topics.insert(name, topic),
                None => self.topics.remove(&name),
            };
        }
        if let Some(next) = delta.next_topic_id {
            self.next_topic_id = next;
        }
        if let Some(level) = delta.feature_level {
            self.feature_level = level;
        }
        if let Some(id) = delta.cluster_id {
            self.cluster_id = id;
        }
    }

    /// Whether `id` is a registered, ONLINE broker.
    pub fn is_online(&self, id: u64) -> bool {
        self.brokers
            .get(&id)
            .is_some_and(|b| b.status == BrokerStatus::Online as i32)
    }

    /// Checks the invariants every applied state keeps; the message names the first violation.
    /// Run after every apply in debug builds while the state is small (see `store.rs`), and on
    /// whatever `open` or `restore` loads.
    ///
    /// - version <= applied index; topic ids unique and below `next_topic_id`.
    /// - Brokers: id != 0, status ONLINE or OFFLINE, epoch in `1..=applied index`.
    /// - Partitions: numbered `0..n`; `replication_factor` replicas, distinct and non-zero; the
    ///   ISR a non-empty duplicate-free subset of the replicas.
    /// - Leadership: a leader is an ONLINE broker in the ISR, and then every ISR member is
    ///   ONLINE (OFFLINE brokers leave ISRs); no leader (0) only when the ISR is a single broker
    ///   that is not ONLINE (the last member is kept, so no unclean election is ever needed).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.version > self.applied_index {
            return Err(format!(
                "version {} is above the applied index {}",
                self.version, self.applied_index
            ));
        }
        if self.feature_level > super::features::FEATURE_LEVEL_MAX {
            return Err(format!(
                "metadata feature level {} needs a newer version (this one supports up to {}):                  upgrade this controller",
                self.feature_level,
                super::features::FEATURE_LEVEL_MAX
            ));
        }
        for (&id, broker) in &self.brokers {
            if id == 0 || broker.broker_id != id {
                return Err(format!("broker {} stored under id {id}", broker.broker_id));
            }
            let status = broker.status;
            if status != BrokerStatus::Online as i32 && status != BrokerStatus::Offline as i32 {
                return Err(format!("broker {id} has status {status}"));
            }
            if broker.broker_epoch == 0 || broker.broker_epoch > self.applied_index {
                return Err(format!(
                    "broker {id} has epoch {} (applied index {})",
                    broker.broker_epoch, self.applied_index
                ));
            }
        }
        let mut topic_ids = BTreeSet::new();
        for (name, topic) in &self.topics {
            let fail = |what: String| Err(format!("topic {name:?}: {what}"));
            if &topic.name != name {
                return fail(format!("stored under another name ({:?})", topic.name));
            }
            if topic.topic_id == 0 || topic.topic_id >= self.next_topic_id {
                return fail(format!(
                    "topic id {} outside 1..{}",
                    topic.topic_id, self.next_topic_id
                ));
            }
            if !topic_ids.insert(topic.topic_id) {
                return fail(format!("topic id {} is used twice", topic.topic_id));
            }
            if topic.partitions.is_empty() {
                return fail("no partitions".to_string());
            }
            for (i, p) in topic.partitions.iter().enumerate() {
                let fail = |what: String| fail(format!("partition {}: {what}", p.partition));
                if p.partition as usize != i {
                    return fail(format!("found at position {i}"));
                }
                if p.replicas.len() != topic.replication_factor as usize
                    || p.replicas.contains(&0)
                    || super::validate::has_duplicates(&p.replicas)
                {
                    return fail(format!(
                        "replicas {:?} for replication factor {}",
                        p.replicas, topic.replication_factor
                    ));
                }
                if p.isr.is_empty()
                    || super::validate::has_duplicates(&p.isr)
                    || !p.isr.iter().all(|r| p.replicas.contains(r))
                {
                    return fail(format!("ISR {:?} for replicas {:?}", p.isr, p.replicas));
                }
                if p.leader == 0 {
                    // An ONLINE last member is leaderless only when it came back with another
                    // storage than the one that held the partition (a wiped disk).
                    let waits_for_storage = p.last_isr_storage_id != 0
                        && self
                            .brokers
                            .get(&p.isr[0])
                            .is_some_and(|b| b.storage_id != p.last_isr_storage_id);
                    if p.isr.len() != 1 || (self.is_online(p.isr[0]) && !waits_for_storage) {
                        return fail(format!("no leader although the ISR is {:?}", p.isr));
                    }
                } else if !p.isr.contains(&p.leader) || !p.isr.iter().all(|&r| self.is_online(r)) {
                    return fail(format!(
                        "leader {} with ISR {:?} holding a broker that is not ONLINE, or not \
                         holding the leader",
                        p.leader, p.isr
                    ));
                }
            }
        }
        Ok(())
    }
}
