//! What each metadata command does: [`State::plan`] turns a command into the [`Delta`] it makes
//! and the [`CommandReply`] for its proposer, or a deterministic rejection.
//!
//! Planning is a pure function of the state, the command and its Raft index: no clock, no
//! randomness, no configuration, and maps walked in key order. So every controller that applies
//! the same log reaches the same state, and a command that raced another (two creates of one
//! topic, an epoch that changed meanwhile) is rejected the same way everywhere. Policy checks
//! (name rules, limits) live in `validate.rs`, before proposing, never here: a later version with
//! other limits must still apply an old log the same way.
//!
//! Leadership rules (Kafka's):
//! - A leader is an ONLINE broker in the ISR. When a broker goes OFFLINE, is unregistered or
//!   registers again (its old incarnation is gone), each partition it leads gets the first
//!   replica, in replica order, that is in the ISR, ONLINE and not that broker; and it leaves
//!   every ISR it is in, unless it is the last member: the last member is kept, with no leader
//!   (0), because it may hold committed records nobody else has.
//! - A broker that becomes ONLINE (unfenced or registered) leads every leaderless partition whose
//!   ISR holds it.
//! - `leader_epoch` grows by one at every change of leader, including "none" and a new
//!   incarnation of the same broker; `partition_epoch` grows by one at every change of leader
//!   or ISR, and an AlterPartition computed from another partition epoch is refused.
//! - A partition that keeps its last ISR member without a leader records that member's storage
//!   id (`last_isr_storage_id`); the broker leads it again only with that storage. A broker
//!   whose disk was wiped registers with a new storage id and is not elected: its empty log
//!   would reuse offsets of acknowledged records.
//! - A registration that repeats the current incarnation id of the broker is a retry: it gets
//!   the current epoch back and changes nothing.
//! - A preferred leader election (ElectPreferredLeaders) gives a partition to its first
//!   replica when that replica is ONLINE, in the ISR and not the leader: the ISR holds every
//!   committed record, so the move loses nothing. Partitions are taken in (topic, partition)
//!   order up to the command's bound.

use std::collections::BTreeMap;

use dmq_proto::v1::metadata_command::Command;
use dmq_proto::v1::{
    AlterPartitionCommand, BrokerMetadata, BrokerStatus, CreateTopicCommand,
    ElectPreferredLeadersCommand, MetadataCommand, PartitionMetadata, RegisterBrokerCommand,
    TopicMetadata,
};

use super::error::MetadataError;
use super::state::{Delta, State};
use super::validate::has_duplicates;

/// What an applied command answers its proposer, beyond the new metadata version.
#[derive(Clone, Debug, PartialEq)]
pub enum CommandReply {
    /// A no-op entry (e.g. the one a new Raft leader appends).
    Noop,
    /// The broker's new epoch, which its heartbeats must carry.
    BrokerRegistered {
        broker_epoch: u64,
    },
    BrokerUnregistered,
    BrokerFenced,
    BrokerUnfenced,
    TopicCreated(TopicMetadata),
    TopicDeleted,
    /// The partition after the change.
    PartitionAltered(PartitionMetadata),
    /// The agreed feature level (and the cluster id) after the change.
    FeaturesSet {
        feature_level: u32,
    },
    /// How many partitions got their preferred replica back as leader.
    PreferredLeadersElected {
        partitions: u32,
    },
}

/// Topics changed so far while planning one command, overriding the state's.
type Changed = BTreeMap<String, TopicMetadata>;

impl State {
    /// Plans the command logged at `index` (which must be above the applied index).
    pub fn plan(
        &self,
        index: u64,
        command: &MetadataCommand,
    ) -> Result<(Delta, CommandReply), MetadataError> {
        debug_assert!(index > self.applied_index);
        match command
            .command
            .as_ref()
            .ok_or(MetadataError::EmptyCommand)?
        {
            Command::RegisterBroker(c) => self.plan_register(index, c),
            Command::UnregisterBroker(c) => {
                self.current_broker(c.broker_id, c.broker_epoch)?;
                let mut changed = Changed::new();
                self.relieve(c.broker_id, &mut changed);
                let mut delta = topics_delta(changed);
                delta.brokers.insert(c.broker_id, None);
                Ok((delta, CommandReply::BrokerUnregistered))
            }
            Command::FenceBroker(c) => {
                let broker = self.current_broker(c.broker_id, c.broker_epoch)?;
                let mut changed = Changed::new();
                self.relieve(c.broker_id, &mut changed);
                let mut delta = topics_delta(changed);
                if broker.status != BrokerStatus::Offline as i32 {
                    let mut broker = broker.clone();
                    broker.set_status(BrokerStatus::Offline);
                    delta.brokers.insert(c.broker_id, Some(broker));
                }
                Ok((delta, CommandReply::BrokerFenced))
            }
            Command::UnfenceBroker(c) => {
                let broker = self.current_broker(c.broker_id, c.broker_epoch)?;
                let mut changed = Changed::new();
                self.elect_leaderless(c.broker_id, broker.storage_id, &mut changed);
                let mut delta = topics_delta(changed);
                if broker.status != BrokerStatus::Online as i32 {
                    let mut broker = broker.clone();
                    broker.set_status(BrokerStatus::Online);
                    delta.brokers.insert(c.broker_id, Some(broker));
                }
                Ok((delta, CommandReply::BrokerUnfenced))
            }
            Command::CreateTopic(c) => self.plan_create_topic(c),
            Command::DeleteTopic(c) => {
                if !self.topics.contains_key(&c.name) {
                    return Err(MetadataError::TopicNotFound {
                        name: c.name.clone(),
                    });
                }
                let mut delta = Delta::default();
                delta.topics.insert(c.name.clone(), None);
                Ok((delta, CommandReply::TopicDeleted))
            }
            Command::AlterPartition(c) => self.plan_alter_partition(c),
            Command::ElectPreferredLeaders(c) => Ok(self.plan_elect_preferred(c)),
            Command::SetFeatureLevel(c) => {
                if c.feature_level < self.feature_level {
                    return Err(MetadataError::FeatureLevelDowngrade {
                        current: self.feature_level,
                        requested: c.feature_level,
                    });
                }
                let delta = Delta {
                    feature_level: Some(c.feature_level),
                    // The cluster is named once.
                    cluster_id: (self.cluster_id.is_empty() && !c.cluster_id.is_empty())
                        .then(|| c.cluster_id.clone()),
                    ..Delta::default()
                };
                Ok((
                    delta,
                    CommandReply::FeaturesSet {
                        feature_level: c.feature_level,
                    },
                ))
            }
        }
    }

    /// A registration starts a new incarnation with epoch `index` (unique and increasing, so no
    /// counter is stored). The old incarnation, if any, is gone: its leaderships and ISR places
    /// are given up exactly as if it were fenced, then the new one, ONLINE, takes the
    /// leaderless partitions it is the last ISR member of.
    fn plan_register(
        &self,
        index: u64,
        c: &RegisterBrokerCommand,
    ) -> Result<(Delta, CommandReply), MetadataError> {
        if c.broker_id == 0 {
            return Err(MetadataError::InvalidBrokerId);
        }
        if let Some(current) = self.brokers.get(&c.broker_id)
            && c.incarnation_id != 0
            && current.incarnation_id == c.incarnation_id
        {
            // A retry of a registration already applied (its answer was lost): the same
            // process keeps its epoch and its leaderships.
            return Ok((
                Delta::default(),
                CommandReply::BrokerRegistered {
                    broker_epoch: current.broker_epoch,
                },
            ));
        }
        let mut changed = Changed::new();
        self.relieve(c.broker_id, &mut changed);
        self.elect_leaderless(c.broker_id, c.storage_id, &mut changed);
        let mut delta = topics_delta(changed);
        let mut broker = BrokerMetadata {
            broker_id: c.broker_id,
            host: c.host.clone(),
            port: c.port,
            rack: c.rack.clone(),
            broker_epoch: index,
            status: 0,
            incarnation_id: c.incarnation_id,
            storage_id: c.storage_id,
        };
        broker.set_status(BrokerStatus::Online);
        delta.brokers.insert(c.broker_id, Some(broker));
        Ok((
            delta,
            CommandReply::BrokerRegistered {
                broker_epoch: index,
            },
        ))
    }

    fn plan_create_topic(
        &self,
        c: &CreateTopicCommand,
    ) -> Result<(Delta, CommandReply), MetadataError> {
        let invalid = |reason: String| MetadataError::InvalidAssignment {
            topic: c.name.clone(),
            reason,
        };
        if c.name.is_empty() {
            return Err(invalid("the topic name is empty".to_string()));
        }
        if self.topics.contains_key(&c.name) {
            return Err(MetadataError::TopicAlreadyExists {
                name: c.name.clone(),
            });
        }
        let Some(first) = c.assignment.first() else {
            return Err(invalid("it has no partitions".to_string()));
        };
        let replication_factor = first.replicas.len();
        let mut partitions = Vec::with_capacity(c.assignment.len());
        for (i, assignment) in c.assignment.iter().enumerate() {
            let replicas = &assignment.replicas;
            if replicas.is_empty()
                || replicas.len() != replication_factor
                || replicas.contains(&0)
                || has_duplicates(replicas)
            {
                return Err(invalid(format!(
                    "partition {i} has replicas {replicas:?}; every partition needs \
                     {replication_factor} distinct non-zero broker ids"
                )));
            }
            if let Some(&broker_id) = replicas.iter().find(|&&r| !self.is_online(r)) {
                return Err(MetadataError::AssignedBrokerUnavailable {
                    topic: c.name.clone(),
                    broker_id,
                });
            }
            partitions.push(PartitionMetadata {
                partition: u32::try_from(i).expect("a log entry holds fewer than 2^32 partitions"),
                leader: replicas[0],
                leader_epoch: 0,
                replicas: replicas.clone(),
                isr: replicas.clone(),
                partition_epoch: 0,
                last_isr_storage_id: 0,
            });
        }
        let topic = TopicMetadata {
            name: c.name.clone(),
            topic_id: self.next_topic_id,
            partitions,
            replication_factor: u32::try_from(replication_factor)
                .expect("fewer than 2^32 replicas"),
            config: Some(c.config.unwrap_or_default()),
        };
        let mut delta = Delta::default();
        delta.topics.insert(c.name.clone(), Some(topic.clone()));
        delta.next_topic_id = Some(self.next_topic_id + 1);
        Ok((delta, CommandReply::TopicCreated(topic)))
    }

    /// Only the partition's leader, at the current leader epoch, with its current broker epoch,
    /// may set the ISR: a non-empty subset of the replicas, holding the leader, of ONLINE
    /// brokers. The ISR is stored in replica order, so equal sets compare equal. The leader
    /// epoch does not change (the leader does not).
    fn plan_alter_partition(
        &self,
        c: &AlterPartitionCommand,
    ) -> Result<(Delta, CommandReply), MetadataError> {
        self.current_broker(c.broker_id, c.broker_epoch)?;
        let topic = self
            .topics
            .get(&c.topic)
            .ok_or_else(|| MetadataError::TopicNotFound {
                name: c.topic.clone(),
            })?;
        let current = topic.partitions.get(c.partition as usize).ok_or_else(|| {
            MetadataError::PartitionNotFound {
                topic: c.topic.clone(),
                partition: c.partition,
                partitions: topic.partitions.len() as u32,
            }
        })?;
        if current.leader != c.broker_id {
            return Err(MetadataError::NotPartitionLeader {
                broker_id: c.broker_id,
                topic: c.topic.clone(),
                partition: c.partition,
                leader: current.leader,
            });
        }
        if current.leader_epoch != c.leader_epoch {
            return Err(MetadataError::StaleLeaderEpoch {
                topic: c.topic.clone(),
                partition: c.partition,
                given: c.leader_epoch,
                current: current.leader_epoch,
            });
        }
        if current.partition_epoch != c.partition_epoch {
            return Err(MetadataError::StalePartitionEpoch {
                topic: c.topic.clone(),
                partition: c.partition,
                given: c.partition_epoch,
                current: current.partition_epoch,
            });
        }
        let invalid = |reason: &str| MetadataError::InvalidIsr {
            topic: c.topic.clone(),
            partition: c.partition,
            isr: c.new_isr.clone(),
            reason: reason.to_string(),
        };
        if c.new_isr.is_empty() || has_duplicates(&c.new_isr) {
            return Err(invalid("it must be non-empty and list each broker once"));
        }
        if !c.new_isr.iter().all(|r| current.replicas.contains(r)) {
            return Err(invalid(&format!(
                "it must be a subset of the replicas {:?}",
                current.replicas
            )));
        }
        if !c.new_isr.contains(&c.broker_id) {
            return Err(invalid("it must hold the leader"));
        }
        if let Some(&broker_id) = c.new_isr.iter().find(|&&r| !self.is_online(r)) {
            return Err(MetadataError::IneligibleReplica {
                broker_id,
                topic: c.topic.clone(),
                partition: c.partition,
            });
        }
        let isr: Vec<u64> = current
            .replicas
            .iter()
            .copied()
            .filter(|r| c.new_isr.contains(r))
            .collect();
        let mut delta = Delta::default();
        if isr == current.isr {
            return Ok((delta, CommandReply::PartitionAltered(current.clone())));
        }
        let mut topic = topic.clone();
        let partition = &mut topic.partitions[c.partition as usize];
        partition.isr = isr;
        partition.partition_epoch += 1;
        let reply = CommandReply::PartitionAltered(partition.clone());
        delta.topics.insert(c.topic.clone(), Some(topic));
        Ok((delta, reply))
    }

    /// Whether `p`'s preferred replica (its first) should lead it and can (see the module docs).
    pub fn prefers_another_leader(&self, p: &PartitionMetadata) -> bool {
        p.replicas.first().is_some_and(|&preferred| {
            p.leader != 0
                && p.leader != preferred
                && p.isr.contains(&preferred)
                && self.is_online(preferred)
        })
    }

    fn plan_elect_preferred(&self, c: &ElectPreferredLeadersCommand) -> (Delta, CommandReply) {
        let bound = match c.max_partitions {
            0 => usize::MAX,
            n => n as usize,
        };
        let mut moved = 0usize;
        let mut changed = Changed::new();
        for (name, topic) in &self.topics {
            if moved == bound {
                break;
            }
            if !topic
                .partitions
                .iter()
                .any(|p| self.prefers_another_leader(p))
            {
                continue;
            }
            let mut topic = topic.clone();
            for p in topic.partitions.iter_mut() {
                if moved == bound {
                    break;
                }
                if self.prefers_another_leader(p) {
                    p.leader = p.replicas[0];
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                    moved += 1;
                }
            }
            changed.insert(name.clone(), topic);
        }
        let partitions = u32::try_from(moved).unwrap_or(u32::MAX);
        (
            topics_delta(changed),
            CommandReply::PreferredLeadersElected { partitions },
        )
    }

    /// The registered broker `id`, if `epoch` is its current epoch.
    fn current_broker(&self, id: u64, epoch: u64) -> Result<&BrokerMetadata, MetadataError> {
        let broker = self
            .brokers
            .get(&id)
            .ok_or(MetadataError::BrokerNotRegistered { broker_id: id })?;
        if broker.broker_epoch != epoch {
            return Err(MetadataError::StaleBrokerEpoch {
                broker_id: id,
                given: epoch,
                current: broker.broker_epoch,
            });
        }
        Ok(broker)
    }

    /// Moves leadership away from `broker` and takes it out of every ISR it is not the last
    /// member of (see the module docs). A partition left without a leader remembers the
    /// storage id its last ISR member had, so only that storage can lead it again.
    fn relieve(&self, broker: u64, changed: &mut Changed) {
        let storage_id = self.brokers.get(&broker).map_or(0, |b| b.storage_id);
        for (name, topic) in &self.topics {
            let current = changed.get(name).unwrap_or(topic);
            let touches = |p: &PartitionMetadata| {
                p.leader == broker || (p.isr.len() > 1 && p.isr.contains(&broker))
            };
            if !current.partitions.iter().any(touches) {
                continue;
            }
            let mut topic = current.clone();
            for p in topic.partitions.iter_mut().filter(|p| touches(p)) {
                if p.leader == broker {
                    p.leader = p
                        .replicas
                        .iter()
                        .copied()
                        .find(|&r| r != broker && p.isr.contains(&r) && self.is_online(r))
                        .unwrap_or(0);
                    p.leader_epoch += 1;
                }
                if p.isr.len() > 1 {
                    p.isr.retain(|&r| r != broker);
                }
                if p.leader == 0 && p.isr == [broker] {
                    p.last_isr_storage_id = storage_id;
                }
                p.partition_epoch += 1;
            }
            changed.insert(name.clone(), topic);
        }
    }

    /// Makes `broker` (now ONLINE, with storage `storage_id`) the leader of every leaderless
    /// partition whose ISR holds it, unless the partition waits for another storage: a broker
    /// whose disk was replaced must not lead with an empty log what its old disk held.
    fn elect_leaderless(&self, broker: u64, storage_id: u64, changed: &mut Changed) {
        for (name, topic) in &self.topics {
            let current = changed.get(name).unwrap_or(topic);
            let orphaned = |p: &PartitionMetadata| {
                p.leader == 0
                    && p.isr.contains(&broker)
                    && (p.last_isr_storage_id == 0 || p.last_isr_storage_id == storage_id)
            };
            let refused = current
                .partitions
                .iter()
                .filter(|p| p.leader == 0 && p.isr.contains(&broker) && !orphaned(p));
            for p in refused {
                tracing::warn!(topic = %name, partition = p.partition, broker,
                    storage_id, expected = p.last_isr_storage_id,
                    "not electing a broker whose storage differs from the one that held the \
                     partition's committed records (its disk was replaced or wiped)");
            }
            if !current.partitions.iter().any(orphaned) {
                continue;
            }
            let mut topic = current.clone();
            for p in topic.partitions.iter_mut().filter(|p| orphaned(p)) {
                p.leader = broker;
                p.leader_epoch += 1;
                p.partition_epoch += 1;
                p.last_isr_storage_id = 0;
            }
            changed.insert(name.clone(), topic);
        }
    }
}

fn topics_delta(changed: Changed) -> Delta {
    Delta {
        topics: changed.into_iter().map(|(n, t)| (n, Some(t))).collect(),
        ..Delta::default()
    }
}

#[cfg(test)]
mod tests {
    use dmq_proto::v1::{BrokerStatus, TopicConfig};

    use super::super::testing::*;
    use super::super::{ApplyOutcome, MetadataError};
    use super::*;

    /// Brokers 1..=n registered at indexes 1..=n (so broker i has epoch i).
    fn cluster(n: u64) -> TestStore {
        let t = TestStore::new();
        for id in 1..=n {
            t.register(id, id, "");
        }
        t
    }

    fn rejected(t: &TestStore, index: u64, command: MetadataCommand) -> MetadataError {
        let before = t.store.get_metadata();
        let outcome = t.store.apply(index, &command).unwrap();
        let ApplyOutcome::Rejected(error) = outcome else {
            panic!("index {index}: {command:?} gave {outcome:?}");
        };
        assert_eq!(
            t.store.get_metadata(),
            before,
            "a rejection changed the state"
        );
        assert_eq!(
            t.store.applied_index(),
            index,
            "a rejection must still advance"
        );
        error
    }

    fn status(t: &TestStore, id: u64) -> BrokerStatus {
        t.store.broker(id).unwrap().status()
    }

    #[test]
    fn register_and_reregister_hand_out_increasing_epochs() {
        let t = TestStore::new();
        t.register(3, 7, "rack-a");
        let broker = t.store.broker(7).unwrap();
        assert_eq!(
            broker,
            BrokerMetadata {
                broker_id: 7,
                host: "broker-7".into(),
                port: 9092,
                rack: "rack-a".into(),
                broker_epoch: 3,
                status: BrokerStatus::Online as i32,
                ..Default::default()
            }
        );
        assert_eq!((t.store.version(), t.store.applied_index()), (3, 3));
        t.register(9, 7, "rack-b");
        assert_eq!(t.store.broker(7).unwrap().broker_epoch, 9);
        assert_eq!(t.store.broker(7).unwrap().rack, "rack-b");
        assert_eq!(t.store.brokers().len(), 1);
        assert_eq!(
            rejected(&t, 10, register(0, "")),
            MetadataError::InvalidBrokerId
        );
    }

    #[test]
    fn create_topic_sets_leaders_isr_and_ids() {
        let t = cluster(3);
        let reply = t.ok(4, create("t", &[vec![1, 2, 3], vec![2, 3, 1]]));
        let (version, topic) = t.store.describe_topic("t").unwrap();
        assert_eq!(reply, CommandReply::TopicCreated(topic.clone()));
        assert_eq!(version, 4);
        assert_eq!(topic.topic_id, 1);
        assert_eq!(topic.replication_factor, 3);
        assert_eq!(topic.config, Some(TopicConfig::default()));
        assert_eq!(
            topic.partitions[1],
            PartitionMetadata {
                partition: 1,
                leader: 2,
                leader_epoch: 0,
                replicas: vec![2, 3, 1],
                isr: vec![2, 3, 1],
                ..Default::default()
            }
        );
        t.ok(5, create("u", &[vec![3]]));
        assert_eq!(t.store.describe_topic("u").unwrap().1.topic_id, 2);
        assert_eq!(t.ok(6, delete("t")), CommandReply::TopicDeleted);
        assert_eq!(
            t.store.describe_topic("t"),
            Err(MetadataError::TopicNotFound { name: "t".into() })
        );
        t.ok(7, create("t", &[vec![1]]));
        assert_eq!(
            t.store.describe_topic("t").unwrap().1.topic_id,
            3,
            "ids are never reused"
        );
    }

    #[test]
    fn commands_invalid_when_applied_are_rejected_deterministically() {
        let t = cluster(2);
        t.ok(3, create("t", &[vec![1, 2]]));
        // Two creates of one topic raced: the second loses.
        let error = rejected(&t, 4, create("t", &[vec![2, 1]]));
        assert_eq!(
            error,
            MetadataError::TopicAlreadyExists { name: "t".into() }
        );
        assert_eq!(error.code(), tonic::Code::AlreadyExists);
        assert_eq!(t.store.version(), 3, "a rejection is not a metadata change");
        assert_eq!(
            rejected(&t, 5, delete("nope")),
            MetadataError::TopicNotFound {
                name: "nope".into()
            }
        );
        assert_eq!(
            rejected(&t, 6, MetadataCommand { command: None }),
            MetadataError::EmptyCommand
        );
        for bad in [
            vec![],
            vec![vec![1, 2], vec![1]],
            vec![vec![1, 1]],
            vec![vec![0]],
        ] {
            assert!(matches!(
                rejected(&t, t.store.applied_index() + 1, create("x", &bad)),
                MetadataError::InvalidAssignment { .. }
            ));
        }
        // A broker that went OFFLINE, or away, after the leader chose it.
        t.ok(20, fence(2, 2));
        let error = rejected(&t, 21, create("x", &[vec![1, 2]]));
        assert_eq!(
            error,
            MetadataError::AssignedBrokerUnavailable {
                topic: "x".into(),
                broker_id: 2
            }
        );
        assert_eq!(error.code(), tonic::Code::Unavailable);
        assert!(matches!(
            rejected(&t, 22, create("x", &[vec![9]])),
            MetadataError::AssignedBrokerUnavailable { broker_id: 9, .. }
        ));
        // Stale and unknown broker epochs.
        t.register(23, 1, "");
        let error = rejected(&t, 24, fence(1, 1));
        assert_eq!(
            error,
            MetadataError::StaleBrokerEpoch {
                broker_id: 1,
                given: 1,
                current: 23
            }
        );
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        for command in [
            unfence(1, 1),
            unregister(1, 1),
            alter(1, 1, "t", 0, 0, t.partition("t", 0).partition_epoch, &[1]),
        ] {
            assert!(matches!(
                rejected(&t, t.store.applied_index() + 1, command),
                MetadataError::StaleBrokerEpoch { .. }
            ));
        }
        let error = rejected(&t, 30, fence(5, 5));
        assert_eq!(error, MetadataError::BrokerNotRegistered { broker_id: 5 });
        assert_eq!(error.code(), tonic::Code::NotFound);
    }

    #[test]
    fn fencing_moves_leadership_along_the_isr_and_keeps_the_last_member() {
        let t = cluster(3);
        t.ok(4, create("t", &[vec![1, 2, 3]]));
        t.ok(5, create("f", &[vec![2, 1]]));

        assert_eq!(t.ok(6, fence(1, 1)), CommandReply::BrokerFenced);
        assert_eq!(status(&t, 1), BrokerStatus::Offline);
        let p = t.partition("t", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (2, 1, vec![2, 3]));
        // A partition it follows: it leaves the ISR, the leader and its epoch stay.
        let p = t.partition("f", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (2, 0, vec![2]));
        assert_eq!(t.store.version(), 6);

        t.ok(7, fence(2, 2));
        let p = t.partition("t", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (3, 2, vec![3]));
        // The last ISR member is kept, with no leader.
        let p = t.partition("f", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (0, 1, vec![2]));

        t.ok(8, fence(3, 3));
        let p = t.partition("t", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (0, 3, vec![3]));

        // Fencing an OFFLINE broker again changes nothing, not even the version.
        assert_eq!(
            t.store.apply(9, &fence(3, 3)).unwrap(),
            ApplyOutcome::Applied {
                version: 8,
                reply: CommandReply::BrokerFenced
            }
        );
    }

    #[test]
    fn the_new_leader_is_the_first_online_isr_member_in_replica_order() {
        let t = cluster(4);
        t.ok(5, create("t", &[vec![1, 4, 2, 3]]));
        t.ok(
            6,
            alter(
                1,
                1,
                "t",
                0,
                0,
                t.partition("t", 0).partition_epoch,
                &[3, 2, 1],
            ),
        );
        t.ok(7, fence(1, 1));
        let p = t.partition("t", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (2, 1, vec![2, 3]));
    }

    #[test]
    fn unfencing_restores_a_leader_to_leaderless_partitions() {
        let t = cluster(2);
        t.ok(3, create("t", &[vec![1, 2]]));
        t.ok(4, fence(2, 2));
        t.ok(5, fence(1, 1));
        let p = t.partition("t", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (0, 1, vec![1]));
        // Broker 2 is not in the ISR: it may not lead (no unclean election).
        assert_eq!(t.ok(6, unfence(2, 2)), CommandReply::BrokerUnfenced);
        assert_eq!(t.partition("t", 0).leader, 0);
        assert_eq!(status(&t, 2), BrokerStatus::Online);
        t.ok(7, unfence(1, 1));
        let p = t.partition("t", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (1, 2, vec![1]));
        assert_eq!(status(&t, 1), BrokerStatus::Online);
        // Unfencing an ONLINE broker changes nothing.
        assert_eq!(
            t.store.apply(8, &unfence(1, 1)).unwrap(),
            ApplyOutcome::Applied {
                version: 7,
                reply: CommandReply::BrokerUnfenced
            }
        );
    }

    #[test]
    fn a_preferred_leader_election_moves_only_to_an_online_isr_member_within_its_bound() {
        let t = cluster(3);
        t.ok(
            4,
            create("t", &[vec![1, 2, 3], vec![1, 3, 2], vec![2, 1, 3]]),
        );
        t.ok(5, fence(1, 1));
        let (p0, p1) = (t.partition("t", 0), t.partition("t", 1));
        assert_eq!((p0.leader, p0.isr.clone()), (2, vec![2, 3]));
        assert_eq!((p1.leader, p1.isr.clone()), (3, vec![3, 2]));
        // Broker 1 is back ONLINE but in no ISR: it has not caught up, nothing moves.
        t.ok(6, unfence(1, 1));
        assert_eq!(t.store.imbalanced_partitions(), 0);
        assert_eq!(
            t.ok(7, elect_preferred(0)),
            CommandReply::PreferredLeadersElected { partitions: 0 }
        );
        assert_eq!(t.partition("t", 0), p0);
        // It caught up and rejoined both ISRs.
        t.ok(
            8,
            alter(
                2,
                2,
                "t",
                0,
                p0.leader_epoch,
                p0.partition_epoch,
                &[2, 3, 1],
            ),
        );
        t.ok(
            9,
            alter(
                3,
                3,
                "t",
                1,
                p1.leader_epoch,
                p1.partition_epoch,
                &[3, 2, 1],
            ),
        );
        assert_eq!(t.store.imbalanced_partitions(), 2);
        // A bound of 1 moves the first partition in (topic, partition) order only.
        let before = t.partition("t", 0);
        assert_eq!(
            t.ok(10, elect_preferred(1)),
            CommandReply::PreferredLeadersElected { partitions: 1 }
        );
        let after = t.partition("t", 0);
        assert_eq!(after.leader, 1);
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert_eq!(after.partition_epoch, before.partition_epoch + 1);
        assert_eq!(after.isr, before.isr, "the ISR is kept");
        assert_eq!(t.partition("t", 1).leader, 3);
        assert_eq!(
            t.ok(11, elect_preferred(0)),
            CommandReply::PreferredLeadersElected { partitions: 1 }
        );
        assert_eq!(t.partition("t", 1).leader, 1);
        // Partition 2 was led by its preferred replica all along.
        assert_eq!(t.partition("t", 2).leader, 2);
        assert_eq!(t.store.imbalanced_partitions(), 0);
        // A preferred replica that is OFFLINE again is not elected.
        t.ok(12, fence(1, 1));
        t.ok(13, elect_preferred(0));
        assert_eq!(t.partition("t", 0).leader, 2);
    }

    #[test]
    fn unregistering_moves_leadership_and_a_new_registration_takes_it_back() {
        let t = cluster(2);
        t.ok(3, create("t", &[vec![1, 2]]));
        t.ok(4, create("solo", &[vec![1]]));
        assert_eq!(t.ok(5, unregister(1, 1)), CommandReply::BrokerUnregistered);
        assert_eq!(t.store.broker(1), None);
        let p = t.partition("t", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (2, 1, vec![2]));
        let p = t.partition("solo", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (0, 1, vec![1]));
        t.register(6, 1, "");
        let p = t.partition("solo", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (1, 2, vec![1]));
        assert_eq!(t.partition("t", 0).leader, 2, "no ISR place, no leadership");
    }

    #[test]
    fn a_new_incarnation_gives_up_what_the_old_one_held() {
        let t = cluster(2);
        t.ok(3, create("t", &[vec![1, 2]]));
        t.ok(4, create("solo", &[vec![1]]));
        t.register(5, 1, "");
        let p = t.partition("t", 0);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (2, 1, vec![2]));
        // The last member keeps its place and leads again, under a new leader epoch.
        let p = t.partition("solo", 0);
        assert_eq!(p.leader, 1);
        assert!(p.leader_epoch > 0);
    }

    #[test]
    fn only_the_current_leader_at_its_epoch_alters_the_isr() {
        let t = cluster(3);
        t.ok(4, create("t", &[vec![1, 2, 3]]));
        let reply = t.ok(
            5,
            alter(
                1,
                1,
                "t",
                0,
                0,
                t.partition("t", 0).partition_epoch,
                &[2, 1],
            ),
        );
        let p = t.partition("t", 0);
        assert_eq!(reply, CommandReply::PartitionAltered(p.clone()));
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr),
            (1, 0, vec![1, 2]),
            "replica order"
        );
        assert_eq!(t.store.version(), 5);
        // Expanding back, and a change to the same set, which is no metadata change.
        t.ok(
            6,
            alter(
                1,
                1,
                "t",
                0,
                0,
                t.partition("t", 0).partition_epoch,
                &[1, 2, 3],
            ),
        );
        assert_eq!(t.partition("t", 0).isr, vec![1, 2, 3]);
        t.ok(
            7,
            alter(
                1,
                1,
                "t",
                0,
                0,
                t.partition("t", 0).partition_epoch,
                &[3, 2, 1],
            ),
        );
        assert_eq!(t.store.version(), 6);

        let error = rejected(
            &t,
            8,
            alter(
                2,
                2,
                "t",
                0,
                0,
                t.partition("t", 0).partition_epoch,
                &[2, 3],
            ),
        );
        assert_eq!(
            error,
            MetadataError::NotPartitionLeader {
                broker_id: 2,
                topic: "t".into(),
                partition: 0,
                leader: 1
            }
        );
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        for isr in [&[2, 3][..], &[1, 4], &[]] {
            let error = rejected(
                &t,
                t.store.applied_index() + 1,
                alter(1, 1, "t", 0, 0, t.partition("t", 0).partition_epoch, isr),
            );
            assert!(matches!(error, MetadataError::InvalidIsr { .. }), "{error}");
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
        }
        assert!(matches!(
            rejected(&t, 20, alter(1, 1, "t", 1, 0, 0, &[1])),
            MetadataError::PartitionNotFound {
                partition: 1,
                partitions: 1,
                ..
            }
        ));
        assert!(matches!(
            rejected(&t, 21, alter(1, 1, "u", 0, 0, 0, &[1])),
            MetadataError::TopicNotFound { .. }
        ));

        // Broker 3 goes OFFLINE: it leaves the ISR and may not be added back while OFFLINE.
        t.ok(22, fence(3, 3));
        let error = rejected(
            &t,
            23,
            alter(
                1,
                1,
                "t",
                0,
                0,
                t.partition("t", 0).partition_epoch,
                &[1, 2, 3],
            ),
        );
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        assert!(matches!(
            error,
            MetadataError::IneligibleReplica { broker_id: 3, .. }
        ));

        // Leadership moves: the old leader's epoch is stale, and it is no longer the leader.
        t.ok(24, fence(1, 1));
        assert!(matches!(
            rejected(
                &t,
                25,
                alter(2, 2, "t", 0, 0, t.partition("t", 0).partition_epoch, &[2])
            ),
            MetadataError::StaleLeaderEpoch {
                given: 0,
                current: 1,
                ..
            }
        ));
        assert!(matches!(
            rejected(
                &t,
                26,
                alter(
                    1,
                    1,
                    "t",
                    0,
                    0,
                    t.partition("t", 0).partition_epoch,
                    &[1, 2]
                )
            ),
            MetadataError::NotPartitionLeader { leader: 2, .. }
        ));
        t.ok(
            27,
            alter(2, 2, "t", 0, 1, t.partition("t", 0).partition_epoch, &[2]),
        );
        assert_eq!(t.partition("t", 0).isr, vec![2]);
    }

    fn register_with(id: u64, incarnation_id: u64, storage_id: u64) -> MetadataCommand {
        let mut command = register(id, "");
        if let Some(Command::RegisterBroker(c)) = &mut command.command {
            c.incarnation_id = incarnation_id;
            c.storage_id = storage_id;
        }
        command
    }

    #[test]
    fn every_leader_or_isr_change_bumps_the_partition_epoch_and_a_stale_one_is_refused() {
        let t = cluster(3);
        t.ok(4, create("t", &[vec![1, 2, 3]]));
        assert_eq!(t.partition("t", 0).partition_epoch, 0);
        t.ok(5, alter(1, 1, "t", 0, 0, 0, &[1, 2]));
        assert_eq!(t.partition("t", 0).partition_epoch, 1);
        // An expansion computed from epoch 0 (before the shrink) would put 3 back on a stale
        // view: refused, nothing changes.
        let error = rejected(&t, 6, alter(1, 1, "t", 0, 0, 0, &[1, 2, 3]));
        assert_eq!(
            error,
            MetadataError::StalePartitionEpoch {
                topic: "t".into(),
                partition: 0,
                given: 0,
                current: 1
            }
        );
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        assert_eq!(t.partition("t", 0).isr, vec![1, 2]);
        // The same change repeated (an attempt whose answer was lost) is refused too, so the
        // leader learns it from the metadata rather than applying it twice.
        t.ok(7, alter(1, 1, "t", 0, 0, 1, &[1, 2, 3]));
        assert!(matches!(
            rejected(&t, 8, alter(1, 1, "t", 0, 0, 1, &[1, 2, 3])),
            MetadataError::StalePartitionEpoch { current: 2, .. }
        ));
        // Leader moves and ISR removals bump it too.
        t.ok(9, fence(1, 1));
        let p = t.partition("t", 0);
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 3));
        t.ok(10, unfence(1, 1));
        assert_eq!(
            t.partition("t", 0).partition_epoch,
            3,
            "not in the ISR: no change"
        );
    }

    #[test]
    fn a_broker_with_a_wiped_disk_never_leads_what_its_old_disk_held() {
        let t = TestStore::new();
        t.ok(1, register_with(1, 11, 500));
        t.ok(2, register_with(2, 21, 600));
        t.ok(3, create("a", &[vec![1]]));
        t.ok(30, create("b", &[vec![1, 2]]));
        // Broker 2 goes first, then broker 1: both partitions keep broker 1 as the last member.
        t.ok(31, fence(2, 2));
        t.ok(32, fence(1, 1));
        for name in ["a", "b"] {
            let p = t.partition(name, 0);
            assert_eq!(
                (p.leader, p.isr.clone(), p.last_isr_storage_id),
                (0, vec![1], 500)
            );
        }
        // Broker 1 comes back with an empty disk (new storage id): it must not lead.
        t.ok(33, register_with(1, 12, 501));
        for name in ["a", "b"] {
            let p = t.partition(name, 0);
            assert_eq!((p.leader, p.isr.clone()), (0, vec![1]), "{name}");
        }
        // Its old disk is back (a restart with the original storage): it leads again.
        t.ok(34, register_with(1, 13, 500));
        for name in ["a", "b"] {
            let p = t.partition(name, 0);
            assert_eq!((p.leader, p.last_isr_storage_id), (1, 0), "{name}");
        }
        // A plain restart on the same disk keeps working as before.
        t.ok(35, fence(1, 34));
        t.ok(36, register_with(1, 14, 500));
        assert_eq!(t.partition("a", 0).leader, 1);
    }

    #[test]
    fn a_retried_registration_of_the_same_incarnation_keeps_its_epoch_and_leaderships() {
        let t = TestStore::new();
        t.ok(1, register_with(1, 77, 5));
        t.ok(2, register_with(2, 88, 6));
        t.ok(3, create("t", &[vec![1, 2]]));
        let before = t.store.get_metadata();
        // The answer to the first registration was lost; the broker retries.
        assert_eq!(
            t.ok(4, register_with(1, 77, 5)),
            CommandReply::BrokerRegistered { broker_epoch: 1 }
        );
        let after = t.store.get_metadata();
        assert_eq!((&after.1, &after.2), (&before.1, &before.2));
        // A new process (another incarnation) is a new registration.
        assert_eq!(
            t.ok(5, register_with(1, 78, 5)),
            CommandReply::BrokerRegistered { broker_epoch: 5 }
        );
        assert_eq!(t.partition("t", 0).leader, 2);
    }
}
