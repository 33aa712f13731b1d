//! The server side of RaftService: each request becomes a core message for the Raft thread,
//! and the RPC answers with the response the core produced, which the thread releases only
//! after the Ready that produced it is durable.

use std::sync::Arc;
use std::time::Duration;

use dmq_proto::v1 as pb;
use dmq_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
use dmq_raft::{Message, NodeId};
use futures::StreamExt;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, ConvertError};
use super::snapshot::{ReceiveError, Receiver};
use crate::node::follower_view::FollowerView;
use crate::node::handle::{Inbox, InboxError, Input};
use crate::node::{ClusterId, NodeHandle, same_cluster};

/// RaftService backed by a node's Raft thread.
pub struct RaftServer {
    me: NodeId,
    driver: Inbox,
    follower_view: Arc<FollowerView>,
    busy_answer_after: Duration,
    faults: Arc<crate::faults::Faults>,
    cluster_id: Arc<ClusterId>,
    answer_timeout: Duration,
    snapshot_max_bytes: usize,
    data_dir: std::path::PathBuf,
    snapshot_min_rate_bytes_per_sec: u64,
    /// When the node's (test-only) snapshot receive rate next lets bytes in.
    receive_budget: Arc<tokio::sync::Mutex<tokio::time::Instant>>,
}

impl RaftServer {
    pub fn new(node: &NodeHandle, snapshot_max_bytes: usize) -> RaftServer {
        RaftServer {
            me: node.status().id,
            driver: node.inbox(),
            follower_view: node.follower_view.clone(),
            busy_answer_after: node.busy_answer_after,
            faults: node.faults.clone(),
            cluster_id: node.cluster_id.clone(),
            answer_timeout: Duration::from_secs(5),
            snapshot_max_bytes,
            data_dir: node.data_dir.clone(),
            snapshot_min_rate_bytes_per_sec: node.snapshot_min_rate_bytes_per_sec,
            receive_budget: Arc::new(tokio::sync::Mutex::new(tokio::time::Instant::now())),
        }
    }

    /// Test-only (`snapshot_receive_bytes_per_sec`): holds `bytes` back as a slow link would.
    async fn throttle(&self, bytes: usize) {
        let Some(rate) = self.faults.snapshot_receive_rate() else {
            return;
        };
        let wait_until = {
            let mut next = self.receive_budget.lock().await;
            let start = (*next).max(tokio::time::Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
            *next
        };
        tokio::time::sleep_until(wait_until).await;
    }

    pub fn into_service(self) -> RaftServiceServer<RaftServer> {
        RaftServiceServer::new(self)
            .max_decoding_message_size(super::peer::RPC_BYTES_MAX)
            .max_encoding_message_size(super::peer::RPC_BYTES_MAX)
    }

    /// Refuses a request of another cluster; says whether the sender's cluster is named.
    fn admit(&self, from: NodeId, theirs: &str) -> Result<bool, Status> {
        let ours = self.cluster_id.applied();
        if same_cluster(&ours, theirs) {
            Ok(!theirs.is_empty())
        } else {
            Err(Status::failed_precondition(format!(
                "cluster id mismatch: node {} belongs to cluster {ours}, node {from} to cluster \
                 {theirs}. A node of another cluster (or one restored into a new cluster) cannot \
                 join this one: check --peers, or give it a data dir of this cluster",
                self.me
            )))
        }
    }

    /// Hands `m` to the Raft thread and waits for the core's answer (`None` if it gave none).
    async fn exchange(&self, m: Message, named: bool) -> Result<Option<Message>, Status> {
        let rx = self.hand_over(m, named)?;
        Self::answer(rx, self.answer_timeout).await
    }

    fn hand_over(
        &self,
        m: Message,
        from_named_cluster: bool,
    ) -> Result<oneshot::Receiver<Option<Message>>, Status> {
        let (tx, rx) = oneshot::channel();
        self.driver
            .send_peer(Input::PeerRequest {
                message: m,
                reply: tx,
                from_named_cluster,
            })
            .map_err(inbox_error)?;
        Ok(rx)
    }

    async fn answer(
        rx: oneshot::Receiver<Option<Message>>,
        timeout: Duration,
    ) -> Result<Option<Message>, Status> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Status::unavailable("controller is shutting down")),
            Err(_) => Err(Status::unavailable(
                "the Raft thread did not answer in time",
            )),
        }
    }
}

impl RaftServer {
    /// An append answer, saying which feature levels this node supports.
    fn append_answer(
        &self,
        mut answer: pb::AppendEntriesResponse,
    ) -> Response<pb::AppendEntriesResponse> {
        answer.feature_level_max = crate::metadata::features::supported_max(&self.faults);
        Response::new(answer)
    }
}

fn inbox_error(e: InboxError) -> Status {
    match e {
        InboxError::Full => Status::resource_exhausted("raft inbox full; retry"),
        InboxError::Closed => Status::unavailable("controller is shutting down"),
    }
}

fn bad_request(e: ConvertError) -> Status {
    match e {
        ConvertError::WrongNode { .. } => Status::failed_precondition(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn request_vote(
        &self,
        request: Request<pb::RequestVoteRequest>,
    ) -> Answer<pb::RequestVoteResponse> {
        let request = request.into_inner();
        let named = self.admit(request.candidate_id, &request.cluster_id)?;
        let m = convert::vote_request_from_pb(request, self.me).map_err(bad_request)?;
        let answer = self.exchange(m, named).await?;
        Ok(Response::new(convert::vote_response_to_pb(answer.as_ref())))
    }

    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Answer<pb::AppendEntriesResponse> {
        let request = request.into_inner();
        let named = self.admit(request.leader_id, &request.cluster_id)?;
        let heartbeat = request.entries.is_empty().then(|| {
            let mut probe = request.clone();
            probe.cluster_id.clear();
            probe
        });
        let m = convert::append_request_from_pb(request, self.me).map_err(bad_request)?;
        let mut rx = self.hand_over(m, named)?;
        if let Some(request) = heartbeat {
            // A heartbeat is never kept waiting behind a slow sync: past a short bound it is
            // answered from what this node already promised (see `FollowerView`).
            match tokio::time::timeout(self.busy_answer_after, &mut rx).await {
                Ok(answer) => {
                    let answer =
                        answer.map_err(|_| Status::unavailable("controller is shutting down"))?;
                    return Ok(self.append_answer(convert::append_response_to_pb(answer.as_ref())));
                }
                Err(_) => {
                    if let Some(busy) = self.follower_view.heartbeat_answer(self.me, &request) {
                        return Ok(self.append_answer(busy));
                    }
                }
            }
        }
        let answer = Self::answer(rx, self.answer_timeout).await?;
        Ok(self.append_answer(convert::append_response_to_pb(answer.as_ref())))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::InstallSnapshotRequest>>,
    ) -> Answer<pb::InstallSnapshotResponse> {
        // Written to a file as it comes, one chunk in memory (see `snapshot.rs`).
        let mut stream = request.into_inner();
        let mut receiver = Receiver::create(&self.data_dir, self.snapshot_max_bytes)
            .await
            .map_err(receive_error)?;
        let mut named = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if named.is_none() {
                named = Some(self.admit(chunk.leader_id, &chunk.cluster_id)?);
            }
            self.throttle(chunk.data.len()).await;
            receiver.push(chunk).await.map_err(receive_error)?;
        }
        let bytes = receiver.received() as usize;
        let m = receiver.finish(self.me).await.map_err(receive_error)?;
        // Storing and installing a big snapshot takes the Raft thread a while.
        let timeout = super::snapshot::deadline(
            self.answer_timeout,
            bytes,
            self.snapshot_min_rate_bytes_per_sec,
        );
        let rx = self.hand_over(m, named.unwrap_or(false))?;
        let answer = Self::answer(rx, timeout).await?;
        Ok(Response::new(convert::snapshot_response_to_pb(
            answer.as_ref(),
        )))
    }

    async fn timeout_now(
        &self,
        request: Request<pb::TimeoutNowRequest>,
    ) -> Answer<pb::TimeoutNowResponse> {
        let request = request.into_inner();
        self.admit(request.leader_id, &request.cluster_id)?;
        let m = convert::timeout_now_from_pb(request, self.me).map_err(bad_request)?;
        self.driver.send_peer(Input::Peer(m)).map_err(inbox_error)?;
        Ok(Response::new(pb::TimeoutNowResponse {}))
    }
}

fn receive_error(e: ReceiveError) -> Status {
    match e {
        ReceiveError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        ReceiveError::Convert(c) => bad_request(c),
        ReceiveError::Io { .. } => Status::unavailable(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}
