//! What a metadata node needs to know to run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dmq_raft::NodeId;

use crate::faults::Faults;

/// Where one controller listens: `raft` for RaftService (peer port), `client` for
/// ControllerService (what leader hints carry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddrs {
    pub raft: String,
    pub client: String,
}

impl PeerAddrs {
    /// The member context the Raft configuration carries for this controller, so every node
    /// learns its addresses from the log and the snapshot: `raft length (u16 BE) · raft ·
    /// client length (u16 BE) · client`.
    pub fn to_context(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.raft.len() + self.client.len());
        for s in [&self.raft, &self.client] {
            let len = u16::try_from(s.len()).expect("an address fits 64 KiB");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    /// Reads [`PeerAddrs::to_context`]'s bytes; `None` for anything else.
    pub fn from_context(mut bytes: &[u8]) -> Option<PeerAddrs> {
        let mut take = || -> Option<String> {
            let (len, rest) = bytes.split_first_chunk::<2>()?;
            let len = u16::from_be_bytes(*len) as usize;
            if rest.len() < len {
                return None;
            }
            let (s, rest) = rest.split_at(len);
            bytes = rest;
            String::from_utf8(s.to_vec()).ok()
        };
        let raft = take()?;
        let client = take()?;
        bytes.is_empty().then_some(PeerAddrs { raft, client })
    }
}

/// A node's configuration. Times are wall-clock durations; the Raft core counts ticks of
/// `tick`.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Every controller of the cluster this node bootstraps, this one included; with `join`,
    /// only this one. Once the log or a snapshot holds a configuration (the first leader
    /// records the bootstrap one with its addresses), members and their addresses come from
    /// there and this only names this node's own addresses.
    pub peers: BTreeMap<NodeId, PeerAddrs>,
    /// This node joins a cluster that exists: it bootstraps nothing, knows no voter, and
    /// learns the configuration from the leader once a member adds it (as a learner).
    pub join: bool,
    pub data_dir: PathBuf,
    /// One Raft tick.
    pub tick: Duration,
    pub heartbeat_interval_ticks: u32,
    pub election_timeout_min_ticks: u32,
    pub election_timeout_max_ticks: u32,
    /// A proposal not committed within this long fails with a retryable error.
    pub replication_timeout: Duration,
    /// Snapshot the metadata and compact the log every this many applied entries.
    pub snapshot_every_entries: u64,
    /// Client inputs (proposals, read barriers) queued for the Raft thread at most; beyond it
    /// callers get RESOURCE_EXHAUSTED (CONTROLLER_OVERLOADED).
    pub client_queue_depth: usize,
    /// Peer inputs (Raft RPCs and answers) queued for the Raft thread at most. Peer traffic
    /// has its own queue, taken first, so a client flood cannot crowd it out; the peers'
    /// in-flight windows keep it far below this depth.
    pub peer_inbox_depth: usize,
    /// Proposals waiting for their commit at most; beyond it new ones are refused with
    /// RESOURCE_EXHAUSTED (nothing proposed).
    pub pending_proposals_max: usize,
    /// Read barriers waiting for their read index at most; beyond it new ones are refused.
    pub pending_reads_max: usize,
    /// Messages queued for one peer at most; beyond it they are dropped (Raft retransmits).
    pub peer_queue_depth: usize,
    /// RPCs in flight to one peer at most (pipelining window of the transport).
    pub peer_inflight_max: usize,
    /// Bytes of entries in one AppendEntries at most.
    pub max_append_bytes: usize,
    /// Snapshot bytes per InstallSnapshot stream chunk.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot accepted from a leader.
    pub snapshot_max_bytes: usize,
    /// The slowest rate an InstallSnapshot transfer may run at before it is given up: its
    /// deadline grows with the snapshot's size at this rate.
    pub snapshot_min_rate_bytes_per_sec: u64,
    /// Seed of the Raft core's RNG (election timeouts). Defaults to the node id.
    pub seed: u64,
    /// Test-only fault points; inert unless built with the `fault-injection` feature.
    pub faults: Arc<Faults>,
}

impl NodeConfig {
    /// The defaults: 50 ms ticks, heartbeats every 100 ms, elections after 0.5..1 s of silence.
    /// DESIGN.md started from etcd's 1..2 s; measured here, that makes a failover take 1.3 s
    /// on average, while 0.5..1 s gives about 0.7 s and still no spurious election during a
    /// saturating `dmq bench meta` (fsync stalls stay far below 500 ms).
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, PeerAddrs>, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            id,
            peers,
            join: false,
            data_dir,
            tick: Duration::from_millis(50),
            heartbeat_interval_ticks: 2,
            election_timeout_min_ticks: 10,
            election_timeout_max_ticks: 20,
            replication_timeout: Duration::from_secs(5),
            snapshot_every_entries: 10_000,
            client_queue_depth: 4096,
            peer_inbox_depth: 16 * 1024,
            pending_proposals_max: 16 * 1024,
            pending_reads_max: 16 * 1024,
            peer_queue_depth: 1024,
            peer_inflight_max: 64,
            max_append_bytes: 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_max_bytes: 512 * 1024 * 1024,
            snapshot_min_rate_bytes_per_sec: 1024 * 1024,
            seed: id,
            faults: Arc::new(Faults::none()),
        }
    }

    /// The Raft core's configuration derived from this one.
    pub fn raft_config(&self) -> dmq_raft::Config {
        let voters = if self.join {
            Vec::new()
        } else {
            self.peers.keys().copied().collect()
        };
        let mut c = dmq_raft::Config::new(self.id, voters);
        c.heartbeat_interval_ticks = self.heartbeat_interval_ticks;
        c.election_timeout_min_ticks = self.election_timeout_min_ticks;
        c.election_timeout_max_ticks = self.election_timeout_max_ticks;
        c.max_inflight_appends = self.peer_inflight_max;
        c.max_append_bytes = self.max_append_bytes;
        c.seed = self.seed;
        c
    }

    /// The client address of `id`, for leader hints.
    pub fn client_addr(&self, id: NodeId) -> Option<&str> {
        self.peers.get(&id).map(|p| p.client.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_a_member_context() {
        let a = PeerAddrs {
            raft: "dmq-controller-3.dmq-controller:9094".into(),
            client: "[::1]:9093".into(),
        };
        let ctx = a.to_context();
        assert_eq!(PeerAddrs::from_context(&ctx), Some(a));
        for cut in 0..ctx.len() {
            assert_eq!(PeerAddrs::from_context(&ctx[..cut]), None, "cut at {cut}");
        }
        assert_eq!(
            PeerAddrs::from_context(&[ctx.clone(), vec![0]].concat()),
            None
        );
    }
}
