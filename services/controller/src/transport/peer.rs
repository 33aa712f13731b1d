//! The client side of RaftService: one task per peer turns the core's outbound messages into
//! RPCs and feeds the answers back to the Raft thread.
//!
//! Two lanes per peer, so that a slow follower's appends never hold up the messages that keep
//! the cluster's timers quiet:
//! - **control**: heartbeats (appends without entries), votes, TimeoutNow. Their own in-flight
//!   bound ([`CONTROL_INFLIGHT_MAX`]) and a deadline of the minimum election timeout; never
//!   skipped while the peer is backed off (a heartbeat to a dead peer costs one refused
//!   connection).
//! - **data**: appends with entries, at most `peer_inflight_max` in flight, with a deadline of
//!   the replication timeout: a follower whose disk is slow answers late, and that is not a
//!   reason to give up on it.
//! - **snapshot**: one InstallSnapshot transfer at a time, streamed lazily from the shared
//!   snapshot bytes, with a deadline that grows with its size (`snapshot.rs`). Its end, either
//!   way, is reported to the Raft thread (`Raft::report_snapshot`), which sends no other
//!   snapshot to this peer before.
//!
//! A missed deadline is not unreachability: only a failed connection backs the peer off (50 ms
//! doubling to 1 s), and only the data lane is skipped meanwhile. Everything is bounded: the
//! per-peer queue (`peer_queue_depth`, excess dropped by the sender), the RPCs in flight per
//! lane (beyond them a message is dropped, not queued: Raft retransmits whatever still
//! matters), each RPC's deadline and the reconnect backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmq_proto::v1::raft_service_client::RaftServiceClient;
use dmq_raft::{Message, MessageBody, NodeId};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::convert;
use crate::node::handle::{Inbox, Input};
use crate::node::{ClusterId, NodeConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Control-lane RPCs (heartbeats, votes, TimeoutNow) in flight to one peer at most.
pub(crate) const CONTROL_INFLIGHT_MAX: usize = 16;
/// Largest gRPC message either way (an AppendEntries batch is bounded far below this).
pub(crate) const RPC_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Which lane a message travels on (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Control,
    Data,
    Snapshot,
}

fn lane(m: &Message) -> Lane {
    match &m.body {
        MessageBody::AppendEntries { entries, .. } if !entries.is_empty() => Lane::Data,
        MessageBody::InstallSnapshot { .. } => Lane::Snapshot,
        _ => Lane::Control,
    }
}

/// The index of the snapshot an InstallSnapshot carries.
fn snapshot_index(m: &Message) -> Option<dmq_raft::Index> {
    match &m.body {
        MessageBody::InstallSnapshot { snapshot } => Some(snapshot.meta.last_index),
        _ => None,
    }
}

/// Whether a failed call says the peer cannot be reached at all (as opposed to slow or
/// refusing): tonic reports a failed connection as UNAVAILABLE with the transport error as
/// its source; an answer from the peer never has a source.
fn unreachable(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    status.code() == tonic::Code::Unavailable && status.source().is_some()
}

fn timed_out(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    )
}

struct Backoff {
    down_until: Option<Instant>,
    delay: Duration,
}

/// What the calls to one peer share.
struct PeerState {
    id: NodeId,
    backoff: Mutex<Backoff>,
    /// A deadline was missed since the last answer (so it is logged once per streak).
    slow: AtomicBool,
}

impl PeerState {
    fn is_down(&self) -> bool {
        let b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        b.down_until.is_some_and(|t| Instant::now() < t)
    }

    fn failed(&self, error: &tonic::Status) {
        let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        if b.down_until.is_none() {
            tracing::warn!(peer = self.id, error = %error.message(), "peer unreachable; backing off its appends");
        }
        b.down_until = Some(Instant::now() + b.delay);
        b.delay = (b.delay * 2).min(BACKOFF_MAX);
    }

    fn answered(&self) {
        let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        if b.down_until.take().is_some() {
            tracing::info!(peer = self.id, "peer reachable again");
        }
        b.delay = BACKOFF_MIN;
        if self.slow.swap(false, Ordering::Relaxed) {
            tracing::info!(peer = self.id, "peer answers within its deadlines again");
        }
    }

    fn missed_deadline(&self, error: &tonic::Status) {
        if !self.slow.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                peer = self.id,
                error = %error.message(),
                "a raft rpc missed its deadline: the peer is slow (it is not treated as \
                 unreachable)"
            );
        }
    }
}

/// What an answer says besides its core message.
#[derive(Clone, Copy, Debug, Default)]
struct Extra {
    liveness_only: bool,
    feature_level_max: u32,
}

/// The deadlines of one peer's RPCs.
#[derive(Clone, Copy, Debug)]
struct Deadlines {
    control: Duration,
    data: Duration,
    snapshot_min_rate_bytes_per_sec: u64,
}

/// Starts the sender for peer `id` at `addr` and returns its queue.
pub(crate) fn spawn(
    runtime: &tokio::runtime::Handle,
    cfg: &NodeConfig,
    id: NodeId,
    addr: String,
    driver: Inbox,
    cluster_id: Arc<ClusterId>,
) -> mpsc::Sender<Message> {
    let (tx, mut rx) = mpsc::channel::<Message>(cfg.peer_queue_depth);
    let me = cfg.id;
    let control = Arc::new(Semaphore::new(CONTROL_INFLIGHT_MAX));
    let data = Arc::new(Semaphore::new(cfg.peer_inflight_max));
    let snapshots = Arc::new(Semaphore::new(1));
    let chunk_bytes = cfg.snapshot_chunk_bytes;
    let control_deadline =
        (cfg.tick * cfg.election_timeout_min_ticks).max(Duration::from_millis(500));
    let deadlines = Deadlines {
        control: control_deadline,
        data: cfg.replication_timeout.max(control_deadline),
        snapshot_min_rate_bytes_per_sec: cfg.snapshot_min_rate_bytes_per_sec,
    };
    runtime.spawn(async move {
        let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true),
            Err(e) => {
                tracing::error!(peer = id, %addr, error = %e, "bad peer address; this peer is unreachable");
                return;
            }
        };
        let client = RaftServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(RPC_BYTES_MAX)
            .max_encoding_message_size(RPC_BYTES_MAX);
        let peer = Arc::new(PeerState {
            id,
            backoff: Mutex::new(Backoff {
                down_until: None,
                delay: BACKOFF_MIN,
            }),
            slow: AtomicBool::new(false),
        });
        while let Some(m) = rx.recv().await {
            let lane = lane(&m);
            let snapshot = snapshot_index(&m);
            let report = |ok: bool| {
                if let Some(index) = snapshot {
                    let _ = driver.send_peer(Input::SnapshotReport { to: id, index, ok });
                }
            };
            if lane != Lane::Control && peer.is_down() {
                report(false);
                continue;
            }
            let pool = match lane {
                Lane::Control => &control,
                Lane::Data => &data,
                Lane::Snapshot => &snapshots,
            };
            // Never wait for a slot: waiting would hold up every later message, heartbeats
            // included. A dropped message is retransmitted by Raft if it still matters.
            let Ok(permit) = pool.clone().try_acquire_owned() else {
                tracing::debug!(peer = id, ?lane, "raft rpcs in flight at their bound; message dropped");
                report(false);
                continue;
            };
            let client = client.clone();
            let driver = driver.clone();
            let peer = peer.clone();
            let cluster = cluster_id.get();
            tokio::spawn(async move {
                let request_term = m.term;
                // Taken before the call: a leader lease may only count from here.
                let sent_at = std::time::Instant::now();
                let started = std::time::Instant::now();
                let result = call(client, m, me, &cluster, chunk_bytes, deadlines).await;
                drop(permit);
                if let Some(index) = snapshot {
                    match &result {
                        Ok(_) => tracing::info!(peer = id, index, took = ?started.elapsed(), "snapshot sent"),
                        Err(e) => tracing::warn!(peer = id, index, took = ?started.elapsed(), error = %e.message(), "snapshot transfer failed; it is retried"),
                    }
                    let _ = driver.send_peer(Input::SnapshotReport {
                        to: id,
                        index,
                        ok: result.is_ok(),
                    });
                }
                match result {
                    Ok(Some((message, extra))) => {
                        peer.answered();
                        // A full peer queue drops the answer (it cannot fill up while the
                        // thread runs: peers' windows bound it); Raft retransmits.
                        let _ = driver.send_peer(Input::Response {
                            message,
                            sent_at,
                            request_term,
                            liveness_only: extra.liveness_only,
                            feature_level_max: extra.feature_level_max,
                        });
                    }
                    Ok(None) => peer.answered(),
                    Err(status) if unreachable(&status) => peer.failed(&status),
                    Err(status) if timed_out(&status) => peer.missed_deadline(&status),
                    Err(status) => tracing::warn!(peer = id, error = %status, "raft rpc refused"),
                }
            });
        }
    });
    tx
}

async fn call(
    mut client: RaftServiceClient<Channel>,
    m: Message,
    me: NodeId,
    cluster: &str,
    chunk_bytes: usize,
    deadlines: Deadlines,
) -> Result<Option<(Message, Extra)>, tonic::Status> {
    let deadline = match lane(&m) {
        Lane::Control => deadlines.control,
        Lane::Data | Lane::Snapshot => deadlines.data,
    };
    match &m.body {
        MessageBody::AppendEntries { .. } => {
            let mut req = convert::append_request_to_pb(&m).expect("an append");
            req.cluster_id = cluster.to_string();
            let mut req = tonic::Request::new(req);
            req.set_timeout(deadline);
            let resp = client.append_entries(req).await?.into_inner();
            let extra = Extra {
                liveness_only: resp.liveness_only,
                feature_level_max: resp.feature_level_max,
            };
            Ok(convert::append_response_from_pb(resp, me).map(|m| (m, extra)))
        }
        MessageBody::RequestVote { .. } => {
            let mut req = convert::vote_request_to_pb(&m).expect("a vote request");
            req.cluster_id = cluster.to_string();
            let mut req = tonic::Request::new(req);
            req.set_timeout(deadline);
            let resp = client.request_vote(req).await?.into_inner();
            Ok(convert::vote_response_from_pb(resp, me).map(|m| (m, Extra::default())))
        }
        MessageBody::InstallSnapshot { snapshot } => {
            let len = snapshot.data.len();
            let chunks = super::snapshot::chunks(&m, chunk_bytes, cluster).expect("a snapshot");
            // Lazy: a chunk is made when HTTP/2 flow control lets the stream take one.
            let mut req = tonic::Request::new(tokio_stream::iter(chunks));
            req.set_timeout(super::snapshot::deadline(
                deadline,
                len,
                deadlines.snapshot_min_rate_bytes_per_sec,
            ));
            let resp = client.install_snapshot(req).await?.into_inner();
            Ok(convert::snapshot_response_from_pb(resp, me).map(|m| (m, Extra::default())))
        }
        MessageBody::TimeoutNow => {
            let mut req = convert::timeout_now_to_pb(&m).expect("a timeout-now");
            req.cluster_id = cluster.to_string();
            let mut req = tonic::Request::new(req);
            req.set_timeout(deadline);
            client.timeout_now(req).await?;
            Ok(None)
        }
        // Responses travel back on the RPC that asked; the driver never queues them here.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_failed_connection_is_unreachability() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut client = RaftServiceClient::new(channel);
        let refused = client
            .timeout_now(dmq_proto::v1::TimeoutNowRequest::default())
            .await
            .unwrap_err();
        assert!(unreachable(&refused), "{refused:?}");
        // Answers of a peer that is there, however unwelcome, are not.
        assert!(!unreachable(&tonic::Status::unavailable("shutting down")));
        assert!(!unreachable(&tonic::Status::deadline_exceeded("slow")));
        assert!(timed_out(&tonic::Status::deadline_exceeded("slow")));
        assert!(timed_out(&tonic::Status::cancelled("Timeout expired")));
        assert!(!timed_out(&refused));
    }

    #[test]
    fn heartbeats_and_votes_travel_on_the_control_lane() {
        let append = |entries: Vec<dmq_raft::Entry>| Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries,
                leader_commit: 0,
                read_round: 0,
            },
        };
        assert_eq!(lane(&append(Vec::new())), Lane::Control);
        let entry = dmq_raft::Entry {
            index: 1,
            term: 1,
            kind: dmq_raft::EntryKind::Noop,
            data: Vec::new(),
        };
        assert_eq!(lane(&append(vec![entry])), Lane::Data);
        let vote = Message {
            from: 1,
            to: 2,
            term: 2,
            body: MessageBody::RequestVote {
                pre_vote: true,
                last_log_index: 0,
                last_log_term: 0,
                leadership_transfer: false,
            },
        };
        assert_eq!(lane(&vote), Lane::Control);
    }
}
