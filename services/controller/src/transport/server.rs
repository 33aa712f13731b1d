//! The server side of RaftService: each request becomes a core message for the Raft thread,
//! and the RPC answers with the response the core produced, which the thread releases only
//! after the Ready that produced it is durable.

use std::sync::mpsc::TrySendError;
use std::time::Duration;

use dmq_proto::v1 as pb;
use dmq_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
use dmq_raft::{Message, NodeId};
use futures::StreamExt;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, AssembleError, ConvertError, SnapshotAssembler};
use crate::node::NodeHandle;
use crate::node::handle::{Inbox, Input};

/// RaftService backed by a node's Raft thread.
pub struct RaftServer {
    me: NodeId,
    driver: Inbox,
    answer_timeout: Duration,
    snapshot_max_bytes: usize,
}

impl RaftServer {
    pub fn new(node: &NodeHandle, snapshot_max_bytes: usize) -> RaftServer {
        RaftServer {
            me: node.status().id,
            driver: node.inbox(),
            answer_timeout: Duration::from_secs(5),
            snapshot_max_bytes,
        }
    }

    pub fn into_service(self) -> RaftServiceServer<RaftServer> {
        RaftServiceServer::new(self)
            .max_decoding_message_size(super::peer::RPC_BYTES_MAX)
            .max_encoding_message_size(super::peer::RPC_BYTES_MAX)
    }

    /// Hands `m` to the Raft thread and waits for the core's answer (`None` if it gave none).
    async fn exchange(&self, m: Message) -> Result<Option<Message>, Status> {
        let (tx, rx) = oneshot::channel();
        self.driver
            .send_peer(Input::PeerRequest(m, tx))
            .map_err(inbox_error)?;
        match tokio::time::timeout(self.answer_timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Status::unavailable("controller is shutting down")),
            Err(_) => Err(Status::unavailable(
                "the Raft thread did not answer in time",
            )),
        }
    }
}

fn inbox_error(e: TrySendError<Input>) -> Status {
    match e {
        TrySendError::Full(_) => Status::resource_exhausted("raft inbox full; retry"),
        TrySendError::Disconnected(_) => Status::unavailable("controller is shutting down"),
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
        let m =
            convert::vote_request_from_pb(request.into_inner(), self.me).map_err(bad_request)?;
        let answer = self.exchange(m).await?;
        Ok(Response::new(convert::vote_response_to_pb(answer.as_ref())))
    }

    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Answer<pb::AppendEntriesResponse> {
        let m =
            convert::append_request_from_pb(request.into_inner(), self.me).map_err(bad_request)?;
        let answer = self.exchange(m).await?;
        Ok(Response::new(convert::append_response_to_pb(
            answer.as_ref(),
        )))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::InstallSnapshotRequest>>,
    ) -> Answer<pb::InstallSnapshotResponse> {
        let mut stream = request.into_inner();
        let mut assembler = SnapshotAssembler::default();
        while let Some(chunk) = stream.next().await {
            assembler
                .push(chunk?, self.snapshot_max_bytes)
                .map_err(assemble_error)?;
        }
        let m = assembler.finish(self.me).map_err(assemble_error)?;
        let answer = self.exchange(m).await?;
        Ok(Response::new(convert::snapshot_response_to_pb(
            answer.as_ref(),
        )))
    }

    async fn timeout_now(
        &self,
        request: Request<pb::TimeoutNowRequest>,
    ) -> Answer<pb::TimeoutNowResponse> {
        let m = convert::timeout_now_from_pb(request.into_inner(), self.me).map_err(bad_request)?;
        self.driver.send_peer(Input::Peer(m)).map_err(inbox_error)?;
        Ok(Response::new(pb::TimeoutNowResponse {}))
    }
}

fn assemble_error(e: AssembleError) -> Status {
    match e {
        AssembleError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        AssembleError::Convert(c) => bad_request(c),
        _ => Status::invalid_argument(e.to_string()),
    }
}
