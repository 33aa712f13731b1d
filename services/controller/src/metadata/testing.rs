//! Test helpers: stores in temporary directories and command builders.

use std::path::Path;
use std::time::{Duration, Instant};

use dmq_proto::v1::metadata_command::Command;
use dmq_proto::v1::{
    AlterPartitionCommand, CreateTopicCommand, DeleteTopicCommand, ElectPreferredLeadersCommand,
    FenceBrokerCommand, MetadataCommand, PartitionMetadata, RegisterBrokerCommand,
    ReplicaAssignment, UnfenceBrokerCommand, UnregisterBrokerCommand,
};

use super::{ApplyOutcome, CommandReply, MetadataStore};

/// A store on a fresh sled db in its own temporary directory.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub db: sled::Db,
    pub store: MetadataStore,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path());
        let store = MetadataStore::open(&db).unwrap();
        TestStore { dir, db, store }
    }

    /// Flushes, closes and reopens the db, as a restart would.
    pub fn reopen(self) -> TestStore {
        let TestStore { dir, db, store } = self;
        db.flush().unwrap();
        drop(store);
        drop(db);
        let db = open_db(dir.path());
        let store = MetadataStore::open(&db).unwrap();
        TestStore { dir, db, store }
    }

    /// Applies `command` at `index`, expecting it to be applied, and returns its reply.
    pub fn ok(&self, index: u64, command: MetadataCommand) -> CommandReply {
        match self.store.apply(index, &command).unwrap() {
            ApplyOutcome::Applied { reply, .. } => reply,
            other => panic!("index {index}: {command:?} gave {other:?}"),
        }
    }

    /// Registers `id` at `index` (so its epoch is `index`).
    pub fn register(&self, index: u64, id: u64, rack: &str) {
        assert_eq!(
            self.ok(index, register(id, rack)),
            CommandReply::BrokerRegistered {
                broker_epoch: index
            }
        );
    }

    pub fn partition(&self, topic: &str, partition: usize) -> PartitionMetadata {
        self.store.describe_topic(topic).unwrap().1.partitions[partition].clone()
    }
}

/// Opens the db in `path`, waiting (boundedly) for the lock of a db just dropped there: sled
/// 0.34 releases it only once its background threads let go (spacejam/sled#1234).
pub fn open_db(path: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sled::Config::new().path(path).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.unwrap(),
        }
    }
}

fn cmd(command: Command) -> MetadataCommand {
    MetadataCommand {
        command: Some(command),
    }
}

pub fn register(broker_id: u64, rack: &str) -> MetadataCommand {
    cmd(Command::RegisterBroker(RegisterBrokerCommand {
        broker_id,
        host: format!("broker-{broker_id}"),
        port: 9092,
        rack: rack.to_string(),
        incarnation_id: 0,
        storage_id: 0,
    }))
}

pub fn unregister(broker_id: u64, broker_epoch: u64) -> MetadataCommand {
    cmd(Command::UnregisterBroker(UnregisterBrokerCommand {
        broker_id,
        broker_epoch,
    }))
}

pub fn fence(broker_id: u64, broker_epoch: u64) -> MetadataCommand {
    cmd(Command::FenceBroker(FenceBrokerCommand {
        broker_id,
        broker_epoch,
    }))
}

pub fn unfence(broker_id: u64, broker_epoch: u64) -> MetadataCommand {
    cmd(Command::UnfenceBroker(UnfenceBrokerCommand {
        broker_id,
        broker_epoch,
    }))
}

pub fn create(name: &str, assignment: &[Vec<u64>]) -> MetadataCommand {
    cmd(Command::CreateTopic(CreateTopicCommand {
        name: name.to_string(),
        assignment: assignment
            .iter()
            .map(|replicas| ReplicaAssignment {
                replicas: replicas.clone(),
            })
            .collect(),
        config: None,
    }))
}

pub fn delete(name: &str) -> MetadataCommand {
    cmd(Command::DeleteTopic(DeleteTopicCommand {
        name: name.to_string(),
    }))
}

pub fn elect_preferred(max_partitions: u32) -> MetadataCommand {
    cmd(Command::ElectPreferredLeaders(
        ElectPreferredLeadersCommand { max_partitions },
    ))
}

pub fn alter(
    broker_id: u64,
    broker_epoch: u64,
    topic: &str,
    partition: u32,
    leader_epoch: u64,
    partition_epoch: u64,
    new_isr: &[u64],
) -> MetadataCommand {
    cmd(Command::AlterPartition(AlterPartitionCommand {
        broker_id,
        broker_epoch,
        topic: topic.to_string(),
        partition,
        leader_epoch,
        new_isr: new_isr.to_vec(),
        partition_epoch,
    }))
}
