//! The client side of RaftService: one task per peer turns the core's outbound messages into
//! RPCs and feeds the answers back to the Raft thread.
//!
//! Bounded everywhere: the per-peer queue (`peer_queue_depth`, excess dropped by the sender),
//! the RPCs in flight (`peer_inflight_max`), each RPC's deadline, and the reconnect backoff
//! (50 ms doubling to 1 s) during which messages to an unreachable peer are dropped — Raft
//! retransmits whatever still matters.

use std::sync::Arc;
use std::time::Duration;

use dmq_proto::v1::raft_service_client::RaftServiceClient;
use dmq_raft::{Message, MessageBody, NodeId};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::convert;
use crate::node::NodeConfig;
use crate::node::handle::{Inbox, Input};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Largest gRPC message either way (an AppendEntries batch is bounded far below this).
pub(crate) const RPC_BYTES_MAX: usize = 64 * 1024 * 1024;

struct Backoff {
    down_until: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    fn failed(&mut self, peer: NodeId, error: &tonic::Status) {
        if self.down_until.is_none() {
            tracing::warn!(peer, error = %error.message(), "peer unreachable; backing off");
        }
        self.down_until = Some(Instant::now() + self.delay);
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
    }

    fn succeeded(&mut self, peer: NodeId) {
        if self.down_until.take().is_some() {
            tracing::info!(peer, "peer reachable again");
        }
        self.delay = BACKOFF_MIN;
    }
}

/// Starts the sender for peer `id` at `addr` and returns its queue.
pub(crate) fn spawn(
    runtime: &tokio::runtime::Handle,
    cfg: &NodeConfig,
    id: NodeId,
    addr: String,
    driver: Inbox,
) -> mpsc::Sender<Message> {
    let (tx, mut rx) = mpsc::channel::<Message>(cfg.peer_queue_depth);
    let me = cfg.id;
    let inflight = Arc::new(Semaphore::new(cfg.peer_inflight_max));
    let chunk_bytes = cfg.snapshot_chunk_bytes;
    let rpc_timeout = (cfg.tick * cfg.election_timeout_min_ticks).max(Duration::from_millis(500));
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
        let backoff = Arc::new(Mutex::new(Backoff { down_until: None, delay: BACKOFF_MIN }));
        while let Some(m) = rx.recv().await {
            if backoff.lock().await.down_until.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            let Ok(permit) = inflight.clone().acquire_owned().await else { return };
            let client = client.clone();
            let driver = driver.clone();
            let backoff = backoff.clone();
            tokio::spawn(async move {
                let result = call(client, m, me, chunk_bytes, rpc_timeout).await;
                drop(permit);
                match result {
                    Ok(Some(response)) => {
                        backoff.lock().await.succeeded(id);
                        // A full peer queue drops the answer (it cannot fill up while the
                        // thread runs: peers' windows bound it); Raft retransmits.
                        let _ = driver.send_peer(Input::Peer(response));
                    }
                    Ok(None) => backoff.lock().await.succeeded(id),
                    Err(status) => {
                        if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown) {
                            backoff.lock().await.failed(id, &status);
                        } else {
                            tracing::warn!(peer = id, error = %status, "raft rpc refused");
                        }
                    }
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
    chunk_bytes: usize,
    timeout: Duration,
) -> Result<Option<Message>, tonic::Status> {
    match &m.body {
        MessageBody::AppendEntries { .. } => {
            let req = convert::append_request_to_pb(&m).expect("an append");
            let mut req = tonic::Request::new(req);
            req.set_timeout(timeout);
            let resp = client.append_entries(req).await?.into_inner();
            Ok(convert::append_response_from_pb(resp, me))
        }
        MessageBody::RequestVote { .. } => {
            let mut req =
                tonic::Request::new(convert::vote_request_to_pb(&m).expect("a vote request"));
            req.set_timeout(timeout);
            let resp = client.request_vote(req).await?.into_inner();
            Ok(convert::vote_response_from_pb(resp, me))
        }
        MessageBody::InstallSnapshot { .. } => {
            let chunks = convert::snapshot_to_chunks(&m, chunk_bytes).expect("a snapshot");
            let mut req = tonic::Request::new(tokio_stream::iter(chunks));
            // A snapshot may be large: allow it far longer than a heartbeat.
            req.set_timeout(timeout * 60);
            let resp = client.install_snapshot(req).await?.into_inner();
            Ok(convert::snapshot_response_from_pb(resp, me))
        }
        MessageBody::TimeoutNow => {
            let mut req =
                tonic::Request::new(convert::timeout_now_to_pb(&m).expect("a timeout-now"));
            req.set_timeout(timeout);
            client.timeout_now(req).await?;
            Ok(None)
        }
        // Responses travel back on the RPC that asked; the driver never queues them here.
        _ => Ok(None),
    }
}
