//! InstallSnapshot transfers (Raft §7) over a client-streaming RPC.
//!
//! - **Sender** ([`chunks`]): the stream's chunks are made one at a time as the transport asks
//!   for them, each a slice of the snapshot's shared bytes (no copy). HTTP/2 flow control
//!   holds the sender to what the receiver took, so only a window of the snapshot is ever in
//!   flight, however big it is. The deadline grows with the size ([`deadline`]).
//! - **Receiver** ([`Receiver`]): chunks are written to a file in the data dir as they come
//!   (checked: in order, of one snapshot, below a size bound), so a transfer holds one chunk in
//!   memory, not the stream. Once the last chunk is in, the file is synced and read back once
//!   for the Raft thread, then removed. A transfer that fails removes its file; files a crash
//!   left behind are removed at start ([`remove_leftovers`]).
//!
//! One transfer per follower at a time: the Raft core sends no second snapshot to a follower
//! before the transport reported the first one's end (`Raft::report_snapshot`), and the sender
//! keeps one snapshot lane per peer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dmq_proto::v1 as pb;
use dmq_raft::{Bytes, Membership, Message, MessageBody, NodeId, Snapshot, SnapshotMeta};
use tokio::io::AsyncWriteExt;

use super::convert::{ConvertError, check};

/// The prefix of the files transfers write to; anything with it in the data dir at start is a
/// crash's leftover.
const FILE_PREFIX: &str = "incoming-snapshot-";

/// The chunks of the snapshot that `m` (an InstallSnapshot) carries, at most `chunk_bytes` of
/// data each (one chunk for an empty snapshot), tagged with `cluster_id`. Lazy: each chunk is
/// made when the iterator is asked for it.
pub fn chunks(
    m: &Message,
    chunk_bytes: usize,
    cluster_id: &str,
) -> Option<impl Iterator<Item = pb::InstallSnapshotRequest> + Send + 'static> {
    let MessageBody::InstallSnapshot { snapshot } = &m.body else {
        return None;
    };
    let chunk_bytes = chunk_bytes.max(1);
    let data = snapshot.data.clone();
    let len = data.len();
    let count = len.div_ceil(chunk_bytes).max(1);
    let (term, from, to) = (m.term, m.from, m.to);
    let meta = snapshot.meta.clone();
    let membership = meta.membership.encode();
    let cluster_id = cluster_id.to_string();
    Some((0..count).map(move |i| {
        let offset = i * chunk_bytes;
        let end = (offset + chunk_bytes).min(len);
        pb::InstallSnapshotRequest {
            term,
            leader_id: from,
            last_included_index: meta.last_index,
            last_included_term: meta.last_term,
            voters: meta.membership.voters.iter().copied().collect(),
            membership: membership.clone(),
            offset: offset as u64,
            data: data.slice(offset..end),
            done: end == len,
            to,
            cluster_id: cluster_id.clone(),
        }
    }))
}

/// The deadline of a transfer of `len_bytes`: `base`, plus the time the bytes take at
/// `min_rate_bytes_per_sec` (the slowest link or disk the controllers are expected to cope
/// with), plus the same again for the receiver to store and install what it got.
pub fn deadline(base: Duration, len_bytes: usize, min_rate_bytes_per_sec: u64) -> Duration {
    let rate = min_rate_bytes_per_sec.max(1);
    base + Duration::from_secs_f64(2.0 * len_bytes as f64 / rate as f64)
}

/// Why a snapshot stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(
        "snapshot chunk at offset {got} but {expected} bytes were received: chunks must be in order"
    )]
    OutOfOrder { expected: u64, got: u64 },
    #[error("snapshot chunks disagree on the snapshot they belong to")]
    Mixed,
    #[error("snapshot exceeds {max_bytes} bytes")]
    TooLarge { max_bytes: usize },
    #[error("snapshot stream ended before the chunk marked done")]
    Incomplete,
    #[error("cannot store the incoming snapshot in {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("the snapshot's membership cannot be read: {0}")]
    BadMembership(String),
}

/// What the first chunk says about the snapshot; every later chunk must say the same.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    term: u64,
    leader_id: NodeId,
    last_index: u64,
    last_term: u64,
    voters: Vec<NodeId>,
    membership: Vec<u8>,
    to: NodeId,
}

impl Header {
    fn of(c: &pb::InstallSnapshotRequest) -> Header {
        Header {
            term: c.term,
            leader_id: c.leader_id,
            last_index: c.last_included_index,
            last_term: c.last_included_term,
            voters: c.voters.clone(),
            membership: c.membership.clone(),
            to: c.to,
        }
    }
}

/// One incoming transfer, written to a file as it comes (see the module docs).
pub struct Receiver {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    header: Option<Header>,
    received: u64,
    done: bool,
    max_bytes: usize,
}

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

impl Receiver {
    /// A transfer into a new file in `dir`, refused beyond `max_bytes`.
    pub async fn create(dir: &Path, max_bytes: usize) -> Result<Receiver, ReceiveError> {
        let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{FILE_PREFIX}{}-{n}.tmp", std::process::id()));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|source| ReceiveError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Receiver {
            path,
            file: Some(file),
            header: None,
            received: 0,
            done: false,
            max_bytes,
        })
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> ReceiveError + '_ {
        |source| ReceiveError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Takes the next chunk.
    pub async fn push(&mut self, c: pb::InstallSnapshotRequest) -> Result<(), ReceiveError> {
        if c.offset != self.received || self.done {
            return Err(ReceiveError::OutOfOrder {
                expected: self.received,
                got: c.offset,
            });
        }
        if self.received as usize + c.data.len() > self.max_bytes {
            return Err(ReceiveError::TooLarge {
                max_bytes: self.max_bytes,
            });
        }
        let header = Header::of(&c);
        match &self.header {
            None => self.header = Some(header),
            Some(h) if *h == header => {}
            Some(_) => return Err(ReceiveError::Mixed),
        }
        let file = self.file.as_mut().expect("open until finished");
        let written = file.write_all(&c.data).await;
        written.map_err(self.io())?;
        self.received += c.data.len() as u64;
        self.done = c.done;
        Ok(())
    }

    /// The whole snapshot as a core message for node `me`, once the chunk marked done is in:
    /// the file is synced, read back once and removed.
    pub async fn finish(mut self, me: NodeId) -> Result<Message, ReceiveError> {
        let header = self.header.clone().ok_or(ReceiveError::Incomplete)?;
        // Senders from before membership changes send only the voters.
        let membership = if header.membership.is_empty() {
            Membership::from_voters(header.voters.iter().copied())
        } else {
            Membership::decode(&header.membership)
                .map_err(|e| ReceiveError::BadMembership(e.to_string()))?
        };
        if !self.done {
            return Err(ReceiveError::Incomplete);
        }
        check(header.leader_id, header.to, me)?;
        let mut file = self.file.take().expect("open until finished");
        let flushed = file.flush().await;
        flushed.map_err(self.io())?;
        let synced = file.sync_data().await;
        synced.map_err(self.io())?;
        drop(file);
        let read = tokio::fs::read(&self.path).await;
        let data = read.map_err(self.io())?;
        if data.len() as u64 != self.received {
            return Err(self.io()(std::io::Error::other(format!(
                "read back {} bytes of the {} received",
                data.len(),
                self.received
            ))));
        }
        Ok(Message {
            from: header.leader_id,
            to: header.to,
            term: header.term,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        last_index: header.last_index,
                        last_term: header.last_term,
                        membership,
                    },
                    data: Bytes::from(data),
                },
            },
        })
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Done or failed, the file is no longer needed (the Raft thread stores the snapshot).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the files of transfers a crash interrupted.
pub fn remove_leftovers(dir: &Path) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    for item in listing.flatten() {
        if item.file_name().to_string_lossy().starts_with(FILE_PREFIX) {
            let path = item.path();
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed an interrupted snapshot transfer")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove an interrupted snapshot transfer")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(data: Vec<u8>) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 4,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        last_index: 10,
                        last_term: 3,
                        membership: {
                            let mut m = Membership::from_voters([1, 2, 3]);
                            m.learners.insert(4);
                            m.context.insert(4, b"127.0.0.1:9094".to_vec());
                            m
                        },
                    },
                    data: Bytes::from(data),
                },
            },
        }
    }

    #[tokio::test]
    async fn chunks_are_slices_written_to_a_file_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let m = install(data.clone());
        let MessageBody::InstallSnapshot { snapshot } = &m.body else {
            unreachable!()
        };
        let parts: Vec<_> = chunks(&m, 4096, "cid").unwrap().collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|c| c.cluster_id == "cid"));
        // A slice of the shared buffer, not a copy.
        assert_eq!(parts[1].data.as_ptr(), snapshot.data[4096..].as_ptr());
        let chunks = parts;
        let mut r = Receiver::create(dir.path(), 1 << 20).await.unwrap();
        for c in chunks.clone() {
            r.push(c).await.unwrap();
        }
        assert_eq!(r.received(), 10_000);
        assert_eq!(r.finish(2).await.unwrap(), m);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "file removed"
        );

        // Out of order, mixed, too large, incomplete: refused, and the file goes.
        {
            let mut r = Receiver::create(dir.path(), 1 << 20).await.unwrap();
            assert!(matches!(
                r.push(chunks[1].clone()).await,
                Err(ReceiveError::OutOfOrder { .. })
            ));
        }
        {
            let mut r = Receiver::create(dir.path(), 1 << 20).await.unwrap();
            r.push(chunks[0].clone()).await.unwrap();
            let mut other = chunks[1].clone();
            other.last_included_index = 11;
            assert!(matches!(r.push(other).await, Err(ReceiveError::Mixed)));
        }
        {
            let mut r = Receiver::create(dir.path(), 100).await.unwrap();
            assert!(matches!(
                r.push(chunks[0].clone()).await,
                Err(ReceiveError::TooLarge { .. })
            ));
        }
        {
            let mut r = Receiver::create(dir.path(), 1 << 20).await.unwrap();
            r.push(chunks[0].clone()).await.unwrap();
            assert!(matches!(r.finish(2).await, Err(ReceiveError::Incomplete)));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        // An empty snapshot is one chunk marked done.
        let empty: Vec<_> = super::chunks(&install(Vec::new()), 4096, "")
            .unwrap()
            .collect();
        assert_eq!(empty.len(), 1);
        assert!(empty[0].done);
    }

    #[test]
    fn the_deadline_grows_with_the_size() {
        let base = Duration::from_secs(5);
        assert_eq!(deadline(base, 0, 1 << 20), base);
        assert_eq!(
            deadline(base, 100 << 20, 1 << 20),
            base + Duration::from_secs(200)
        );
    }

    #[test]
    fn leftovers_of_a_crash_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{FILE_PREFIX}1-0.tmp")), b"x").unwrap();
        std::fs::write(dir.path().join("db"), b"keep").unwrap();
        remove_leftovers(dir.path());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("db")]);
    }
}
