//! A fake BrokerService: a one-partition-per-topic log in memory, with scripted refusals.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dmq_proto::v1 as pb;
use dmq_proto::v1::broker_service_server::{BrokerService, BrokerServiceServer};
use tokio::sync::{Notify, Semaphore};
use tonic::metadata::MetadataMap;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::listen;
use crate::{
    PARTITION_LEADER_METADATA_KEY, REASON_NOT_ENOUGH_REPLICAS, REASON_NOT_LEADER_FOR_PARTITION,
    REASON_OFFSET_OUT_OF_RANGE,
};

/// What the fake answers and what it was asked.
#[derive(Debug, Default)]
pub(crate) struct Script {
    pub id: u64,
    pub address: String,
    /// Answers of the next Produce attempts, before anything is appended.
    pub produce_failures: VecDeque<Status>,
    /// When set, every data-plane call is refused NOT_LEADER_FOR_PARTITION naming this leader
    /// (id, address, leader epoch).
    pub not_leader: Option<(u64, String, u64)>,
    /// Produce calls received (counted before the gate).
    pub produce_received: usize,
    /// Produce calls past the gate, refused ones included.
    pub produce_attempts: usize,
    /// Appended batches in order.
    pub batches: Vec<Vec<pb::Record>>,
    /// The log (every partition shares it); offsets start at `log_start`.
    pub log: Vec<pb::Record>,
    pub log_start: u64,
    pub fetches: usize,
}

#[derive(Clone, Default)]
pub(crate) struct FakeBroker {
    script: Arc<Mutex<Script>>,
    /// When set, each Produce takes a permit before it is answered.
    gate: Arc<Mutex<Option<Arc<Semaphore>>>>,
    appended: Arc<Notify>,
}

impl FakeBroker {
    /// Serves fake broker `id` on a fresh loopback port.
    pub(crate) async fn start(id: u64) -> FakeBroker {
        let (incoming, address) = listen().await;
        let fake = FakeBroker::default();
        {
            let mut s = fake.script();
            s.id = id;
            s.address = address;
        }
        tokio::spawn(
            Server::builder()
                .add_service(BrokerServiceServer::new(fake.clone()))
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

    /// From now on each Produce waits for a permit of the returned semaphore.
    pub(crate) fn close_gate(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    /// The values of the appended records, in log order.
    pub(crate) fn values(&self) -> Vec<Vec<u8>> {
        self.script().log.iter().map(|r| r.value.clone()).collect()
    }

    /// Appends records with these values (as a producer would).
    pub(crate) fn append(&self, values: &[&str]) {
        let mut s = self.script();
        s.log.extend(values.iter().map(|v| pb::Record {
            value: v.as_bytes().to_vec(),
            ..Default::default()
        }));
        drop(s);
        self.appended.notify_waiters();
    }

    fn refuse_if_not_leader(&self) -> Result<(), Status> {
        match &self.script().not_leader {
            Some((id, address, epoch)) => Err(not_leader(*id, address, *epoch)),
            None => Ok(()),
        }
    }
}

/// NOT_LEADER_FOR_PARTITION naming `id` at `address` in `epoch`, the way broker.proto says.
pub(crate) fn not_leader(id: u64, address: &str, epoch: u64) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(PARTITION_LEADER_METADATA_KEY, address.parse().unwrap());
    Status::with_error_details_and_metadata(
        Code::FailedPrecondition,
        format!("not the leader; the leader is broker {id} at {address}"),
        ErrorDetails::with_error_info(
            REASON_NOT_LEADER_FOR_PARTITION,
            "dmq.v1",
            HashMap::from([
                ("leader_id".to_string(), id.to_string()),
                ("leader_address".to_string(), address.to_string()),
                ("leader_epoch".to_string(), epoch.to_string()),
            ]),
        ),
        metadata,
    )
}

/// acks=ALL refused: the ISR is below min_insync_replicas.
pub(crate) fn not_enough_replicas() -> Status {
    Status::with_error_details(
        Code::Unavailable,
        "ISR 1 below min_insync_replicas 2",
        ErrorDetails::with_error_info(REASON_NOT_ENOUGH_REPLICAS, "dmq.v1", HashMap::new()),
    )
}

/// acks=ALL appended, then the ISR shrank below min_insync_replicas: outcome unknown.
pub(crate) fn not_enough_replicas_after_append() -> Status {
    Status::with_error_details(
        Code::Unavailable,
        "appended, then the ISR shrank below min_insync_replicas",
        ErrorDetails::with_error_info("NOT_ENOUGH_REPLICAS_AFTER_APPEND", "dmq.v1", HashMap::new()),
    )
}

fn out_of_range(offset: u64, log_start: u64, high_watermark: u64) -> Status {
    Status::with_error_details(
        Code::OutOfRange,
        format!("offset {offset} is outside [{log_start}, {high_watermark}]"),
        ErrorDetails::with_error_info(
            REASON_OFFSET_OUT_OF_RANGE,
            "dmq.v1",
            HashMap::from([
                ("log_start_offset".to_string(), log_start.to_string()),
                ("high_watermark".to_string(), high_watermark.to_string()),
            ]),
        ),
    )
}

type Answer<T> = Result<Response<T>, Status>;
type ConsumeStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::ConsumeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl BrokerService for FakeBroker {
    async fn controller_changed(
        &self,
        _: Request<pb::ControllerChangedRequest>,
    ) -> Answer<pb::ControllerChangedResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_broker_info(
        &self,
        _: Request<pb::GetBrokerInfoRequest>,
    ) -> Answer<pb::GetBrokerInfoResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn produce(&self, request: Request<pb::ProduceRequest>) -> Answer<pb::ProduceResponse> {
        self.script().produce_received += 1;
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
        let request = request.into_inner();
        let mut s = self.script();
        s.produce_attempts += 1;
        if let Some((id, address, epoch)) = &s.not_leader {
            return Err(not_leader(*id, address, *epoch));
        }
        if let Some(failure) = s.produce_failures.pop_front() {
            return Err(failure);
        }
        let base_offset = s.log_start + s.log.len() as u64;
        let count = request.records.len() as u64;
        s.log.extend(request.records.iter().cloned());
        s.batches.push(request.records);
        drop(s);
        self.appended.notify_waiters();
        Ok(Response::new(pb::ProduceResponse {
            base_offset,
            last_offset: base_offset + count - 1,
            leader_epoch: 1,
        }))
    }

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Answer<pb::FetchResponse> {
        self.refuse_if_not_leader()?;
        let request = request.into_inner();
        self.script().fetches += 1;
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.into());
        loop {
            let appended = self.appended.notified();
            {
                let s = self.script();
                let hw = s.log_start + s.log.len() as u64;
                if request.offset < s.log_start || request.offset > hw {
                    return Err(out_of_range(request.offset, s.log_start, hw));
                }
                if request.offset < hw || tokio::time::Instant::now() >= deadline {
                    let records: Vec<_> = (request.offset..hw)
                        .take(100)
                        .map(|offset| {
                            let r = &s.log[(offset - s.log_start) as usize];
                            pb::FetchedRecord {
                                offset,
                                timestamp_ms: 1,
                                key: r.key.clone(),
                                value: r.value.clone(),
                                headers: r.headers.clone(),
                            }
                        })
                        .collect();
                    let next_offset = request.offset + records.len() as u64;
                    // A client asking for raw batches gets them as a broker stores them: one
                    // RecordBatch v2 of the same records.
                    let (records, batches) = if request.raw_batches && !records.is_empty() {
                        (Vec::new(), vec![raw_batch(request.offset, &records)])
                    } else {
                        (records, Vec::new())
                    };
                    return Ok(Response::new(pb::FetchResponse {
                        records,
                        high_watermark: hw,
                        log_start_offset: s.log_start,
                        next_offset,
                        batches,
                    }));
                }
            }
            let _ = tokio::time::timeout_at(deadline, appended).await;
        }
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Answer<pb::ListOffsetsResponse> {
        self.refuse_if_not_leader()?;
        let request = request.into_inner();
        let s = self.script();
        let hw = s.log_start + s.log.len() as u64;
        let offset = match pb::OffsetSpec::try_from(request.spec) {
            Ok(pb::OffsetSpec::Earliest) => s.log_start,
            _ => hw,
        };
        Ok(Response::new(pb::ListOffsetsResponse {
            offset,
            log_start_offset: s.log_start,
            high_watermark: hw,
        }))
    }

    type ConsumeStream = ConsumeStream;

    async fn consume(&self, _: Request<pb::ConsumeRequest>) -> Answer<ConsumeStream> {
        Err(Status::unimplemented("fake"))
    }

    async fn replica_fetch(
        &self,
        _: Request<pb::ReplicaFetchRequest>,
    ) -> Answer<pb::ReplicaFetchResponse> {
        Err(Status::unimplemented("fake"))
    }
}

/// `records` (consecutive offsets from `base`) as one RecordBatch v2.
fn raw_batch(base: u64, records: &[pb::FetchedRecord]) -> bytes::Bytes {
    use dmq_recordbatch::{HeaderV2, NewRecord, ProducerFields, encode};
    let records: Vec<NewRecord> = records
        .iter()
        .map(|r| NewRecord {
            timestamp_ms: r.timestamp_ms,
            key: Some(bytes::Bytes::from(r.key.clone())).filter(|k| !k.is_empty()),
            value: Some(bytes::Bytes::from(r.value.clone())),
            headers: r
                .headers
                .iter()
                .map(|h| HeaderV2 {
                    key: h.key.clone(),
                    value: Some(bytes::Bytes::from(h.value.clone())),
                })
                .collect(),
        })
        .collect();
    bytes::Bytes::from(encode(base as i64, 0, ProducerFields::NONE, &records).expect("encodes"))
}
