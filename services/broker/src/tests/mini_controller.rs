//! An in-process controller with a small metadata model, for data-plane tests with several
//! brokers: registration (new epochs), heartbeats, GetMetadata, AlterPartition, and test hooks
//! to create and delete topics and fence brokers. Leadership follows the real controller's
//! rules (`services/controller/src/metadata/apply.rs`): a fenced, leaving or re-registered
//! broker gives up its leaderships and ISR places (the last ISR member stays, leaderless), an
//! ONLINE broker leads the leaderless partitions whose ISR holds it, and every leader change
//! bumps the leader epoch. There is no liveness timer: tests fence brokers themselves.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use dmq_proto::v1 as pb;
use dmq_proto::v1::controller_service_server::{ControllerService, ControllerServiceServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Debug, Default)]
pub struct Model {
    pub version: u64,
    pub brokers: BTreeMap<u64, pb::BrokerMetadata>,
    pub topics: BTreeMap<String, pb::TopicMetadata>,
    next_topic_id: u64,
    /// A broker's leaving heartbeat changes nothing (as if it was killed).
    pub ignore_leaving: bool,
    pub alter_requests: Vec<pb::AlterPartitionRequest>,
    /// AlterPartition applies the change but answers UNAVAILABLE, as a controller whose
    /// answer was lost would (the outcome is unknown to the broker).
    pub lose_alter_answers: bool,
    /// The session timeout answered to brokers (0: none, no lease).
    pub session_timeout_ms: u64,
    /// Brokers cut off from the controllers: their calls fail UNAVAILABLE.
    pub cut_off: std::collections::BTreeSet<u64>,
}

impl Model {
    fn online(&self, id: u64) -> bool {
        self.brokers
            .get(&id)
            .is_some_and(|b| b.status == pb::BrokerStatus::Online as i32)
    }

    fn bump(&mut self) {
        self.version += 1;
    }

    /// The real controller's `relieve`: moves leadership away from `broker` and takes it out
    /// of every ISR it is not the last member of.
    fn relieve(&mut self, broker: u64) {
        let online: Vec<u64> = self
            .brokers
            .keys()
            .copied()
            .filter(|&b| self.online(b))
            .collect();
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                if p.leader != broker && !(p.isr.len() > 1 && p.isr.contains(&broker)) {
                    continue;
                }
                if p.leader == broker {
                    p.leader = p
                        .replicas
                        .iter()
                        .copied()
                        .find(|r| *r != broker && p.isr.contains(r) && online.contains(r))
                        .unwrap_or(0);
                    p.leader_epoch += 1;
                }
                if p.isr.len() > 1 {
                    p.isr.retain(|&r| r != broker);
                }
                p.partition_epoch += 1;
            }
        }
    }

    fn elect_leaderless(&mut self, broker: u64) {
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                if p.leader == 0 && p.isr.contains(&broker) {
                    p.leader = broker;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// Marks `broker` OFFLINE (as after missed heartbeats).
    pub fn fence(&mut self, broker: u64) {
        if let Some(b) = self.brokers.get_mut(&broker) {
            b.status = pb::BrokerStatus::Offline as i32;
        }
        self.relieve(broker);
        self.bump();
    }

    /// A topic whose partition `i` has the replicas `assignment[i]` (leader: the first).
    pub fn create_topic(&mut self, name: &str, assignment: &[&[u64]], min_insync_replicas: u32) {
        self.next_topic_id += 1;
        let partitions = assignment
            .iter()
            .enumerate()
            .map(|(i, replicas)| pb::PartitionMetadata {
                partition: i as u32,
                leader: replicas[0],
                leader_epoch: 0,
                replicas: replicas.to_vec(),
                isr: replicas.to_vec(),
                ..Default::default()
            })
            .collect();
        self.topics.insert(
            name.to_string(),
            pb::TopicMetadata {
                name: name.to_string(),
                topic_id: self.next_topic_id,
                partitions,
                replication_factor: assignment[0].len() as u32,
                config: Some(pb::TopicConfig {
                    min_insync_replicas,
                    ..Default::default()
                }),
            },
        );
        self.bump();
    }

    pub fn delete_topic(&mut self, name: &str) {
        self.topics.remove(name);
        self.bump();
    }

    /// Makes `to` (an ISR member) the leader of `topic`-`partition`, as a controlled move
    /// would: new leader epoch, the old leader stays in the ISR.
    pub fn move_leader(&mut self, topic: &str, partition: u32, to: u64) {
        let p = &mut self.topics.get_mut(topic).unwrap().partitions[partition as usize];
        assert!(p.isr.contains(&to), "{to} is not in the ISR {:?}", p.isr);
        p.leader = to;
        p.leader_epoch += 1;
        p.partition_epoch += 1;
        self.bump();
    }

    pub fn partition(&self, topic: &str, partition: u32) -> pb::PartitionMetadata {
        self.topics[topic].partitions[partition as usize].clone()
    }

    fn metadata(&self) -> pb::GetMetadataResponse {
        pb::GetMetadataResponse {
            metadata_version: self.version,
            brokers: self.brokers.values().cloned().collect(),
            topics: self.topics.values().cloned().collect(),
            term: 1,
            leader_id: 1,
        }
    }
}

#[derive(Clone, Default)]
pub struct MiniController {
    model: Arc<Mutex<Model>>,
    address: Arc<Mutex<String>>,
}

impl MiniController {
    pub async fn start() -> MiniController {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let controller = MiniController::default();
        *controller.address.lock().unwrap() = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            Server::builder()
                .add_service(ControllerServiceServer::new(controller.clone()))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        controller
    }

    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap()
    }

    pub fn address(&self) -> String {
        self.address.lock().unwrap().clone()
    }
}

type Answer<T> = Result<Response<T>, Status>;

/// A FAILED_PRECONDITION refusal with the real controller's ErrorInfo reason.
fn refused(reason: &str) -> Status {
    Status::with_error_details(
        tonic::Code::FailedPrecondition,
        reason.to_lowercase().replace('_', " "),
        ErrorDetails::with_error_info(reason, "dmq.v1", HashMap::new()),
    )
}

#[tonic::async_trait]
impl ControllerService for MiniController {
    async fn get_controller_info(
        &self,
        _: Request<pb::GetControllerInfoRequest>,
    ) -> Answer<pb::GetControllerInfoResponse> {
        let address = self.address();
        Ok(Response::new(pb::GetControllerInfoResponse {
            node_id: 1,
            role: pb::ControllerRole::Leader as i32,
            term: 1,
            leader_id: 1,
            leader_address: address.clone(),
            address,
            ..Default::default()
        }))
    }

    async fn register_broker(
        &self,
        request: Request<pb::RegisterBrokerRequest>,
    ) -> Answer<pb::RegisterBrokerResponse> {
        let r = request.into_inner();
        let mut m = self.model();
        if m.cut_off.contains(&r.broker_id) {
            return Err(Status::unavailable("cut off (test)"));
        }
        m.relieve(r.broker_id);
        m.bump();
        let epoch = m.version;
        m.brokers.insert(
            r.broker_id,
            pb::BrokerMetadata {
                broker_id: r.broker_id,
                host: r.host,
                port: r.port,
                rack: r.rack,
                broker_epoch: epoch,
                status: pb::BrokerStatus::Online as i32,
                incarnation_id: r.incarnation_id,
                storage_id: r.storage_id,
            },
        );
        m.elect_leaderless(r.broker_id);
        m.bump();
        Ok(Response::new(pb::RegisterBrokerResponse {
            broker_epoch: epoch,
            metadata_version: m.version,
            term: 1,
            session_timeout_ms: m.session_timeout_ms,
        }))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<pb::BrokerHeartbeatRequest>,
    ) -> Answer<pb::BrokerHeartbeatResponse> {
        let r = request.into_inner();
        let mut m = self.model();
        if m.cut_off.contains(&r.broker_id) {
            return Err(Status::unavailable("cut off (test)"));
        }
        let current = m.brokers.get(&r.broker_id).map(|b| b.broker_epoch);
        if current != Some(r.broker_epoch) {
            return Ok(Response::new(pb::BrokerHeartbeatResponse {
                status: pb::BrokerStatus::Fenced as i32,
                metadata_version: m.version,
                term: 1,
                ..Default::default()
            }));
        }
        if r.leaving && !m.ignore_leaving {
            m.fence(r.broker_id);
        }
        let status = m.brokers[&r.broker_id].status;
        Ok(Response::new(pb::BrokerHeartbeatResponse {
            status,
            metadata_version: m.version,
            term: 1,
            session_timeout_ms: m.session_timeout_ms,
            controller_addresses: Vec::new(),
        }))
    }

    async fn unregister_broker(
        &self,
        _: Request<pb::UnregisterBrokerRequest>,
    ) -> Answer<pb::UnregisterBrokerResponse> {
        Err(Status::unimplemented("mini controller"))
    }

    async fn create_topic(
        &self,
        _: Request<pb::CreateTopicRequest>,
    ) -> Answer<pb::CreateTopicResponse> {
        Err(Status::unimplemented("mini controller: use the model"))
    }

    async fn delete_topic(
        &self,
        _: Request<pb::DeleteTopicRequest>,
    ) -> Answer<pb::DeleteTopicResponse> {
        Err(Status::unimplemented("mini controller: use the model"))
    }

    async fn list_topics(
        &self,
        _: Request<pb::ListTopicsRequest>,
    ) -> Answer<pb::ListTopicsResponse> {
        Err(Status::unimplemented("mini controller"))
    }

    async fn describe_topic(
        &self,
        _: Request<pb::DescribeTopicRequest>,
    ) -> Answer<pb::DescribeTopicResponse> {
        Err(Status::unimplemented("mini controller"))
    }

    async fn alter_partition(
        &self,
        request: Request<pb::AlterPartitionRequest>,
    ) -> Answer<pb::AlterPartitionResponse> {
        let r = request.into_inner();
        let mut m = self.model();
        m.alter_requests.push(r.clone());
        if m.brokers.get(&r.broker_id).map(|b| b.broker_epoch) != Some(r.broker_epoch) {
            return Err(refused("STALE_BROKER_EPOCH"));
        }
        let all_online = r.new_isr.iter().all(|&b| m.online(b));
        let lose_answer = m.lose_alter_answers;
        let Some(p) = m
            .topics
            .get_mut(&r.topic)
            .and_then(|t| t.partitions.get_mut(r.partition as usize))
        else {
            return Err(Status::not_found("no such partition"));
        };
        if p.leader != r.broker_id {
            return Err(refused("NOT_PARTITION_LEADER"));
        }
        if p.leader_epoch != r.leader_epoch {
            return Err(refused("STALE_LEADER_EPOCH"));
        }
        if p.partition_epoch != r.partition_epoch {
            return Err(refused("STALE_PARTITION_EPOCH"));
        }
        if r.new_isr.is_empty()
            || !r.new_isr.contains(&r.broker_id)
            || !r.new_isr.iter().all(|b| p.replicas.contains(b))
        {
            return Err(Status::with_error_details(
                tonic::Code::InvalidArgument,
                "invalid ISR",
                ErrorDetails::with_error_info("INVALID_ISR", "dmq.v1", HashMap::new()),
            ));
        }
        if !all_online {
            return Err(refused("INELIGIBLE_REPLICA"));
        }
        let isr: Vec<u64> = p
            .replicas
            .iter()
            .copied()
            .filter(|b| r.new_isr.contains(b))
            .collect();
        if isr != p.isr {
            p.isr = isr;
            p.partition_epoch += 1;
        }
        let partition = p.clone();
        m.bump();
        if lose_answer {
            return Err(Status::unavailable("the answer was lost (test)"));
        }
        Ok(Response::new(pb::AlterPartitionResponse {
            partition: Some(partition),
            metadata_version: m.version,
        }))
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
        Err(Status::unimplemented("mini controller"))
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
        Ok(Response::new(self.model().metadata()))
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
