//! Backups of the controllers' metadata and new clusters seeded from them (etcdctl-style):
//! `dmq cluster snapshot save FILE` writes what the leader's `GetSnapshot` streams, and
//! `dmq controller restore FILE --data-dir DIR --node-id N --peers ...` turns it into the data
//! dir of one member of a new controller cluster.
//!
//! # File format
//! `DMQSNAP1` (8 bytes) · header length (u32 BE) · `SnapshotHeader` (protobuf) · the data (an
//! encoded `MetadataSnapshot`, `header.data_bytes` long) · CRC-32 (u32 BE) of the data. A file
//! is written to `FILE.tmp`, synced, renamed into place and its directory synced, so a crash
//! leaves the old file or the new one; [`read()`] checks every part before anything uses it.
//!
//! # To ensure correctness
//! - The snapshot is consistent: the leader takes it after a read barrier, at its applied
//!   index, in one piece (see `MetadataStore::snapshot_bytes`).
//! - A restored cluster gets a new cluster id, the same on every member restored from the same
//!   file with the same `--peers` (derived from both, unless given), so the members of the old
//!   cluster are refused by the new one and the other way round.
//! - A restored member's log starts right after the snapshot: its Raft snapshot is the backup at
//!   the backup's applied index, so broker epochs (Raft indexes of registrations) keep growing.
//! - Restore writes only into an empty or missing data dir, and syncs before it returns.

use std::io::Write;
use std::path::{Path, PathBuf};

use dmq_proto::v1::{MetadataSnapshot, SnapshotHeader};
use dmq_raft::{Bytes, HardState, Membership, NodeId, Snapshot, SnapshotMeta, Storage};
use prost::Message as _;

use crate::metadata::MetadataStore;
use crate::raft_storage::SledStorage;

const MAGIC: &[u8; 8] = b"DMQSNAP1";
/// The largest header accepted (it is a few dozen bytes).
const HEADER_BYTES_MAX: usize = 64 * 1024;

/// Why a backup could not be written, read or restored; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a usable dmq snapshot: {detail}; take a new one with `dmq cluster snapshot save`", path.display())]
    Invalid { path: PathBuf, detail: String },
    #[error(
        "the data dir {} is not empty: restore seeds a new member, so give it an empty (or \
         missing) directory",
        path.display()
    )]
    DataDirNotEmpty { path: PathBuf },
    #[error("node {node_id} is not among the peers {voters:?}: check --node-id and --peers")]
    NotAPeer {
        node_id: NodeId,
        voters: Vec<NodeId>,
    },
    #[error("restoring into {}: {detail}", path.display())]
    Restore { path: PathBuf, detail: String },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |source| BackupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A backup: what it is and the encoded metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Backup {
    pub header: SnapshotHeader,
    pub data: Bytes,
}

/// Writes `backup` to `path` atomically (a temporary file, synced, renamed, directory synced).
pub fn write(path: &Path, backup: &Backup) -> Result<(), BackupError> {
    let tmp = path.with_extension("tmp");
    let header = backup.header.encode_to_vec();
    let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    let written = (|| {
        file.write_all(MAGIC)?;
        file.write_all(&(header.len() as u32).to_be_bytes())?;
        file.write_all(&header)?;
        file.write_all(&backup.data)?;
        file.write_all(&crc32fast::hash(&backup.data).to_be_bytes())?;
        file.sync_all()
    })();
    written.map_err(io("write", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("rename the snapshot into", path))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the directory", dir))?;
    Ok(())
}

/// Reads and checks a backup written by [`write()`]: magic, lengths, checksum, and that the data
/// decodes as the metadata the header describes.
pub fn read(path: &Path) -> Result<(Backup, MetadataSnapshot), BackupError> {
    let bytes = std::fs::read(path).map_err(io("read", path))?;
    let invalid = |detail: String| BackupError::Invalid {
        path: path.to_path_buf(),
        detail,
    };
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| invalid("it does not start with DMQSNAP1".into()))?;
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| invalid("it ends inside its header".into()))?;
    let header_len = u32::from_be_bytes(*len) as usize;
    if header_len > HEADER_BYTES_MAX || rest.len() < header_len {
        return Err(invalid(format!("header length {header_len} is impossible")));
    }
    let (header, rest) = rest.split_at(header_len);
    let header = SnapshotHeader::decode(header)
        .map_err(|e| invalid(format!("its header does not decode: {e}")))?;
    let data_len = usize::try_from(header.data_bytes).unwrap_or(usize::MAX);
    if rest.len() != data_len.saturating_add(4) {
        return Err(invalid(format!(
            "it holds {} bytes of data and checksum, the header says {} of data: truncated?",
            rest.len(),
            header.data_bytes
        )));
    }
    let (data, crc) = rest.split_at(data_len);
    let crc = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
    let computed = crc32fast::hash(data);
    if crc != computed {
        return Err(invalid(format!(
            "its checksum is {crc:#010x} but the data gives {computed:#010x}: it is damaged"
        )));
    }
    let metadata = MetadataSnapshot::decode(data)
        .map_err(|e| invalid(format!("its metadata does not decode: {e}")))?;
    if metadata.applied_index != header.applied_index {
        return Err(invalid(format!(
            "the header says index {}, the metadata {}",
            header.applied_index, metadata.applied_index
        )));
    }
    Ok((
        Backup {
            header,
            data: Bytes::from(data.to_vec()),
        },
        metadata,
    ))
}

/// The id of a cluster restored from a backup whose data has checksum `crc` and that belonged
/// to `old`, with members `peers` (as given to `--peers`, order-insensitive): 128 bits as 32
/// hex digits, the same for every member.
pub fn derived_cluster_id(old: &str, crc: u32, peers: &[String]) -> String {
    let mut sorted = peers.to_vec();
    sorted.sort();
    let input = format!("restore\0{old}\0{crc:08x}\0{}", sorted.join(","));
    // FNV-1a, twice with different bases: stable across builds, unlike std's hashers.
    let fnv = |basis: u64| {
        input.bytes().fold(basis, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub cluster_id: String,
    pub applied_index: u64,
    pub term: u64,
    pub brokers: usize,
    pub topics: usize,
}

/// Seeds `data_dir` (empty or missing) as member `node_id` of a new cluster of `voters` from
/// `backup`, with cluster id `cluster_id`: the metadata restored, and a Raft snapshot of it at
/// the backup's applied index and term, synced.
pub fn restore(
    backup: &Backup,
    metadata: MetadataSnapshot,
    data_dir: &Path,
    node_id: NodeId,
    voters: Vec<NodeId>,
    cluster_id: &str,
) -> Result<Restored, BackupError> {
    if !voters.contains(&node_id) {
        return Err(BackupError::NotAPeer { node_id, voters });
    }
    if let Ok(mut listing) = std::fs::read_dir(data_dir)
        && listing.next().is_some()
    {
        return Err(BackupError::DataDirNotEmpty {
            path: data_dir.to_path_buf(),
        });
    }
    let failed = |detail: String| BackupError::Restore {
        path: data_dir.to_path_buf(),
        detail,
    };
    let mut metadata = metadata;
    metadata.cluster_id = cluster_id.to_string();
    let (applied_index, term) = (metadata.applied_index, backup.header.term.max(1));
    let restored = Restored {
        cluster_id: cluster_id.to_string(),
        applied_index,
        term,
        brokers: metadata.brokers.len(),
        topics: metadata.topics.len(),
    };
    let data = Bytes::from(metadata.encode_to_vec());
    let mut storage = SledStorage::open(data_dir).map_err(|e| failed(e.to_string()))?;
    let store = MetadataStore::open(storage.db()).map_err(|e| failed(e.to_string()))?;
    store
        .restore_owned(metadata)
        .map_err(|e| failed(e.to_string()))?;
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            last_index: applied_index,
            last_term: term,
            membership: Membership::from_voters(voters),
        },
        data,
    };
    let hard_state = HardState {
        term,
        vote: None,
        commit: applied_index,
        catching_up: false,
    };
    // One sync for the snapshot, the hard state and the metadata trees (the same sled db).
    storage
        .persist(Some(&snapshot), &[], Some(&hard_state))
        .map_err(|e| failed(e.to_string()))?;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmq_proto::v1::{BrokerMetadata, TopicMetadata};

    fn backup() -> (Backup, MetadataSnapshot) {
        let metadata = MetadataSnapshot {
            applied_index: 42,
            metadata_version: 40,
            brokers: vec![BrokerMetadata {
                broker_id: 1,
                host: "h".into(),
                port: 1,
                rack: String::new(),
                broker_epoch: 3,
                status: 1,
                ..Default::default()
            }],
            topics: vec![TopicMetadata {
                name: "t".into(),
                topic_id: 1,
                partitions: vec![dmq_proto::v1::PartitionMetadata {
                    partition: 0,
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    ..Default::default()
                }],
                replication_factor: 1,
                config: None,
            }],
            next_topic_id: 2,
            feature_level: 1,
            cluster_id: "old".into(),
        };
        let data = Bytes::from(metadata.encode_to_vec());
        let header = SnapshotHeader {
            applied_index: 42,
            term: 7,
            cluster_id: "old".into(),
            feature_level: 1,
            metadata_version: 40,
            data_bytes: data.len() as u64,
            version: "test".into(),
        };
        (Backup { header, data }, metadata)
    }

    #[test]
    fn a_written_backup_reads_back_and_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.snap");
        let (b, metadata) = backup();
        write(&path, &b).unwrap();
        assert_eq!(read(&path).unwrap(), (b.clone(), metadata));
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("damaged"));
        std::fs::write(&path, &bytes[..n - 3]).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("truncated"));
        std::fs::write(&path, b"not a snapshot").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("DMQSNAP1"));
    }

    #[test]
    fn a_restored_member_starts_after_the_backup_with_the_new_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        let (b, metadata) = backup();
        let id = derived_cluster_id("old", 5, &["2=b".into(), "1=a".into()]);
        assert_eq!(
            id,
            derived_cluster_id("old", 5, &["1=a".into(), "2=b".into()])
        );
        assert_ne!(
            id,
            derived_cluster_id("old", 6, &["1=a".into(), "2=b".into()])
        );
        let data = dir.path().join("c1");
        let r = restore(&b, metadata.clone(), &data, 1, vec![1, 2, 3], &id).unwrap();
        assert_eq!((r.applied_index, r.term, r.topics), (42, 7, 1));
        // A second restore into the same dir is refused.
        assert!(matches!(
            restore(&b, metadata.clone(), &data, 1, vec![1, 2, 3], &id),
            Err(BackupError::DataDirNotEmpty { .. })
        ));
        assert!(matches!(
            restore(&b, metadata, &dir.path().join("c9"), 9, vec![1, 2, 3], &id),
            Err(BackupError::NotAPeer { .. })
        ));
        let storage = SledStorage::open(&data).unwrap();
        let recovered = storage.recover().unwrap();
        let snap = recovered.snapshot.unwrap();
        assert_eq!((snap.meta.last_index, snap.meta.last_term), (42, 7));
        assert_eq!(recovered.hard_state.commit, 42);
        let store = MetadataStore::open(storage.db()).unwrap();
        assert_eq!(store.applied_index(), 42);
        assert_eq!(store.cluster_id(), id);
        assert_eq!(store.describe_topic("t").unwrap().1.partitions.len(), 1);
        assert_eq!(store.broker(1).unwrap().broker_epoch, 3);
    }
}
