//! A fake ControllerService: names itself the leader and serves scripted metadata.

use std::sync::{Arc, Mutex, MutexGuard};

use dmq_proto::v1 as pb;
use dmq_proto::v1::controller_service_server::{ControllerService, ControllerServiceServer};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use super::listen;

/// What the fake answers and what it was asked.
#[derive(Debug, Default)]
pub(crate) struct Script {
    pub node_id: u64,
    pub address: String,
    /// What GetMetadata returns.
    pub metadata: pb::GetMetadataResponse,
    /// Answers of the next admin calls (create/delete/describe/list/cluster/metadata) before
    /// they are served normally.
    pub failures: Vec<Status>,
    pub metadata_requests: usize,
    pub created: Vec<pb::CreateTopicRequest>,
    pub list_requests: Vec<pb::ListTopicsRequest>,
}

#[derive(Clone, Default)]
pub(crate) struct FakeController {
    script: Arc<Mutex<Script>>,
}

impl FakeController {
    /// Serves a fake controller `node_id` on a fresh loopback port.
    pub(crate) async fn start(node_id: u64) -> FakeController {
        let (incoming, address) = listen().await;
        let fake = FakeController::default();
        {
            let mut s = fake.script();
            s.node_id = node_id;
            s.address = address;
        }
        tokio::spawn(
            Server::builder()
                .add_service(ControllerServiceServer::new(fake.clone()))
                .serve_with_incoming(incoming),
        );
        fake
    }

    pub(crate) fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }

    pub(crate) fn address(&self) -> String {
        self.script().address.clone()
    }

    /// Sets the metadata: `brokers` as (id, address), and one topic `topic` whose partitions
    /// are led by `leaders` (broker id, leader epoch) in order.
    pub(crate) fn set_metadata(
        &self,
        brokers: &[(u64, &str)],
        topic: &str,
        leaders: &[(u64, u64)],
    ) {
        let brokers = brokers
            .iter()
            .map(|&(id, address)| {
                let (host, port) = address.rsplit_once(':').unwrap();
                pb::BrokerMetadata {
                    broker_id: id,
                    host: host.to_string(),
                    port: port.parse().unwrap(),
                    status: pb::BrokerStatus::Online as i32,
                    ..Default::default()
                }
            })
            .collect();
        let partitions = leaders
            .iter()
            .enumerate()
            .map(|(p, &(leader, leader_epoch))| pb::PartitionMetadata {
                partition: p as u32,
                leader,
                leader_epoch,
                replicas: vec![leader],
                isr: vec![leader],
                ..Default::default()
            })
            .collect();
        let mut s = self.script();
        s.metadata = pb::GetMetadataResponse {
            metadata_version: s.metadata.metadata_version + 1,
            brokers,
            topics: vec![pb::TopicMetadata {
                name: topic.to_string(),
                topic_id: 1,
                partitions,
                replication_factor: 1,
                config: None,
            }],
            term: 1,
            leader_id: s.node_id,
        };
    }

    fn next_failure(&self) -> Result<(), Status> {
        let mut s = self.script();
        if s.failures.is_empty() {
            Ok(())
        } else {
            Err(s.failures.remove(0))
        }
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ControllerService for FakeController {
    async fn get_controller_info(
        &self,
        _: Request<pb::GetControllerInfoRequest>,
    ) -> Answer<pb::GetControllerInfoResponse> {
        let s = self.script();
        Ok(Response::new(pb::GetControllerInfoResponse {
            node_id: s.node_id,
            role: pb::ControllerRole::Leader as i32,
            term: 1,
            leader_id: s.node_id,
            leader_address: s.address.clone(),
            address: s.address.clone(),
            ..Default::default()
        }))
    }

    async fn register_broker(
        &self,
        _: Request<pb::RegisterBrokerRequest>,
    ) -> Answer<pb::RegisterBrokerResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn broker_heartbeat(
        &self,
        _: Request<pb::BrokerHeartbeatRequest>,
    ) -> Answer<pb::BrokerHeartbeatResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn unregister_broker(
        &self,
        _: Request<pb::UnregisterBrokerRequest>,
    ) -> Answer<pb::UnregisterBrokerResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Answer<pb::CreateTopicResponse> {
        let request = request.into_inner();
        self.script().created.push(request.clone());
        self.next_failure()?;
        let mut s = self.script();
        if s.metadata.topics.iter().any(|t| t.name == request.name) {
            return Err(Status::already_exists(format!(
                "topic {:?} already exists",
                request.name
            )));
        }
        let topic = pb::TopicMetadata {
            name: request.name,
            topic_id: s.metadata.topics.len() as u64 + 1,
            partitions: (0..request.partitions)
                .map(|p| pb::PartitionMetadata {
                    partition: p,
                    ..Default::default()
                })
                .collect(),
            replication_factor: request.replication_factor,
            config: request.config,
        };
        s.metadata.topics.push(topic.clone());
        s.metadata.metadata_version += 1;
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(topic),
            metadata_version: s.metadata.metadata_version,
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Answer<pb::DeleteTopicResponse> {
        self.next_failure()?;
        let name = request.into_inner().name;
        let mut s = self.script();
        let before = s.metadata.topics.len();
        s.metadata.topics.retain(|t| t.name != name);
        if s.metadata.topics.len() == before {
            return Err(Status::not_found(format!("topic {name:?} does not exist")));
        }
        s.metadata.metadata_version += 1;
        Ok(Response::new(pb::DeleteTopicResponse {
            metadata_version: s.metadata.metadata_version,
        }))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Answer<pb::ListTopicsResponse> {
        self.next_failure()?;
        let request = request.into_inner();
        let mut s = self.script();
        s.list_requests.push(request.clone());
        // Pages of two topics; the token is the index of the next one.
        let start: usize = if request.page_token.is_empty() {
            0
        } else {
            request.page_token.parse().unwrap()
        };
        let topics: Vec<_> = s
            .metadata
            .topics
            .iter()
            .skip(start)
            .take(2)
            .cloned()
            .collect();
        let next = start + topics.len();
        Ok(Response::new(pb::ListTopicsResponse {
            topics,
            next_page_token: if next < s.metadata.topics.len() {
                next.to_string()
            } else {
                String::new()
            },
            metadata_version: s.metadata.metadata_version,
        }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Answer<pb::DescribeTopicResponse> {
        self.next_failure()?;
        let name = request.into_inner().name;
        let s = self.script();
        match s.metadata.topics.iter().find(|t| t.name == name) {
            Some(topic) => Ok(Response::new(pb::DescribeTopicResponse {
                topic: Some(topic.clone()),
                metadata_version: s.metadata.metadata_version,
            })),
            None => Err(Status::not_found(format!(
                "topic {name:?} does not exist; list the topics or create it first"
            ))),
        }
    }

    async fn alter_partition(
        &self,
        _: Request<pb::AlterPartitionRequest>,
    ) -> Answer<pb::AlterPartitionResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn add_controller(
        &self,
        _: Request<pb::AddControllerRequest>,
    ) -> Result<Response<pb::AddControllerResponse>, Status> {
        Err(Status::unimplemented("add_controller"))
    }

    async fn remove_controller(
        &self,
        _: Request<pb::RemoveControllerRequest>,
    ) -> Result<Response<pb::RemoveControllerResponse>, Status> {
        Err(Status::unimplemented("remove_controller"))
    }

    async fn describe_cluster(
        &self,
        _: Request<pb::DescribeClusterRequest>,
    ) -> Answer<pb::DescribeClusterResponse> {
        self.next_failure()?;
        let s = self.script();
        Ok(Response::new(pb::DescribeClusterResponse {
            controllers: vec![pb::ControllerNode {
                node_id: s.node_id,
                address: s.address.clone(),
                role: pb::ControllerRole::Leader as i32,
                match_index: 0,
                ..Default::default()
            }],
            brokers: s.metadata.brokers.clone(),
            leader_id: s.node_id,
            term: 1,
            metadata_version: s.metadata.metadata_version,
            commit_index: 0,
        }))
    }

    type GetSnapshotStream = std::pin::Pin<
        Box<
            dyn tonic::codegen::tokio_stream::Stream<Item = Result<pb::SnapshotChunk, Status>>
                + Send,
        >,
    >;

    async fn get_snapshot(
        &self,
        _: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<Self::GetSnapshotStream>, Status> {
        Err(Status::unimplemented("get_snapshot"))
    }

    async fn get_metadata(
        &self,
        _: Request<pb::GetMetadataRequest>,
    ) -> Answer<pb::GetMetadataResponse> {
        self.next_failure()?;
        let mut s = self.script();
        s.metadata_requests += 1;
        Ok(Response::new(s.metadata.clone()))
    }

    type WatchMetadataStream = std::pin::Pin<
        Box<
            dyn futures::Stream<Item = Result<dmq_proto::v1::WatchMetadataResponse, Status>> + Send,
        >,
    >;

    async fn watch_metadata(
        &self,
        _: Request<dmq_proto::v1::WatchMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        Err(Status::unimplemented(
            "this fake controller has no WatchMetadata",
        ))
    }
}
