//! The producer against a fake controller and fake brokers: retries keep the order and do not
//! duplicate refused batches, NOT_LEADER hints are followed, memory is bounded.

use std::time::Duration;

use futures::FutureExt;
use tonic::Status;

use super::*;
use crate::testing::fake_broker::{
    FakeBroker, not_enough_replicas, not_enough_replicas_after_append,
};
use crate::testing::fake_controller::FakeController;
use crate::testing::{eventually, fast_admin_options, fast_retry, within};
use crate::{Admin, ClientError, MetadataView, Record};

struct Cluster {
    controller: FakeController,
    brokers: Vec<FakeBroker>,
    metadata: MetadataView,
}

/// A fake controller and `brokers` fake brokers; topic "t" with one partition per entry of
/// `leaders` (leader broker id, leader epoch).
async fn cluster(brokers: u64, leaders: &[(u64, u64)]) -> Cluster {
    let controller = FakeController::start(1).await;
    let mut fakes = Vec::new();
    for id in 1..=brokers {
        fakes.push(FakeBroker::start(id).await);
    }
    let addresses: Vec<(u64, String)> = fakes
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u64 + 1, b.address()))
        .collect();
    let refs: Vec<(u64, &str)> = addresses.iter().map(|(id, a)| (*id, a.as_str())).collect();
    controller.set_metadata(&refs, "t", leaders);
    let admin = Admin::new(vec![controller.address()], fast_admin_options()).unwrap();
    Cluster {
        controller,
        brokers: fakes,
        metadata: MetadataView::from(admin),
    }
}

fn config() -> ProducerConfig {
    ProducerConfig {
        linger: Duration::from_millis(1),
        retry: fast_retry(),
        request_timeout: Duration::from_secs(5),
        ..ProducerConfig::default()
    }
}

fn value(i: usize) -> Vec<u8> {
    format!("record-{i:04}").into_bytes()
}

fn expected(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(value).collect()
}

/// Sends `n` records to partition 0 one after the other and awaits every delivery.
async fn send_all(producer: &Producer, n: usize) -> Vec<Result<RecordMetadata, ClientError>> {
    let mut deliveries = Vec::new();
    for i in 0..n {
        deliveries.push(
            producer
                .send("t", Some(0), Record::new(value(i)))
                .await
                .unwrap(),
        );
    }
    within("deliveries", futures::future::join_all(deliveries)).await
}

#[tokio::test]
async fn refused_batches_are_retried_in_order_without_duplicates() {
    let c = cluster(1, &[(1, 1)]).await;
    let broker = &c.brokers[0];
    broker.script().produce_failures = [
        Status::unavailable("leader starting"),
        not_enough_replicas(),
        Status::unavailable("leader starting"),
    ]
    .into();
    let producer = Producer::new(
        c.metadata.clone(),
        ProducerConfig {
            batch_max_bytes: 400,
            max_record_bytes: 100,
            ..config()
        },
    )
    .unwrap();
    let results = send_all(&producer, 100).await;
    let offsets: Vec<Option<u64>> = results.into_iter().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, (0..100).map(Some).collect::<Vec<_>>());
    assert_eq!(broker.values(), expected(100), "in order, each once");
    let s = broker.script();
    assert!(s.batches.len() > 5, "several batches: {}", s.batches.len());
    assert!(s.batches.iter().all(|b| b.len() <= 400 / 30));
    assert_eq!(s.produce_attempts, s.batches.len() + 3, "three refusals");
}

#[tokio::test]
async fn a_not_leader_hint_moves_the_partition_without_asking_the_controller() {
    let c = cluster(2, &[(1, 1)]).await;
    let (a, b) = (&c.brokers[0], &c.brokers[1]);
    a.script().not_leader = Some((2, b.address(), 2));
    let producer = Producer::new(c.metadata.clone(), config()).unwrap();
    for r in send_all(&producer, 50).await {
        r.unwrap();
    }
    assert_eq!(b.values(), expected(50));
    assert!(a.values().is_empty());
    assert_eq!(a.script().produce_attempts, 1, "the hint is cached");
    assert_eq!(
        c.controller.script().metadata_requests,
        1,
        "no refresh needed"
    );

    // A refresh that still names the old leader (epoch 1) does not undo the hint (epoch 2).
    b.script().produce_failures = [Status::unavailable("blip")].into();
    producer
        .send_and_wait("t", Some(0), Record::new(value(50)))
        .await
        .unwrap();
    assert_eq!(c.controller.script().metadata_requests, 2);
    assert_eq!(b.values(), expected(51));
    assert_eq!(a.script().produce_attempts, 1);
}

/// Issue 10, path 9: a failure after the append (NOT_ENOUGH_REPLICAS_AFTER_APPEND) was
/// retried as if nothing had been appended, and a batch that then failed for good was
/// reported as refused although its first attempt may have written it.
#[tokio::test]
async fn an_unknown_outcome_is_never_reported_as_a_refusal() {
    let c = cluster(1, &[(1, 1)]).await;
    let broker = &c.brokers[0];
    // Not retried when the producer is told not to: the caller gets the unknown outcome.
    broker.script().produce_failures = [not_enough_replicas_after_append()].into();
    let once = Producer::new(
        c.metadata.clone(),
        ProducerConfig {
            retry_unknown_outcomes: false,
            ..config()
        },
    )
    .unwrap();
    let error = once
        .send_and_wait("t", Some(0), Record::new(value(0)))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::OutcomeUnknown { .. }) && error.outcome_unknown(),
        "{error:?}"
    );
    assert_eq!(broker.script().produce_attempts, 1, "not retried");

    // Retried by default (at least once), but when the retries end in plain refusals the
    // error still says the outcome is unknown: the first attempt may have appended.
    let retry = crate::RetryPolicy {
        retries: 2,
        ..fast_retry()
    };
    broker.script().produce_failures = [
        not_enough_replicas_after_append(),
        not_enough_replicas(),
        not_enough_replicas(),
    ]
    .into();
    let again = Producer::new(c.metadata.clone(), ProducerConfig { retry, ..config() }).unwrap();
    let error = again
        .send_and_wait("t", Some(0), Record::new(value(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::OutcomeUnknown { .. }),
        "{error:?}"
    );
    assert_eq!(broker.script().produce_attempts, 4);
    // A batch refused every time is a plain refusal.
    broker.script().produce_failures = (0..3).map(|_| not_enough_replicas()).collect();
    let error = again
        .send_and_wait("t", Some(0), Record::new(value(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::NotEnoughReplicas { .. }) && !error.outcome_unknown(),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_refusal_that_retrying_cannot_fix_fails_only_its_batch() {
    let c = cluster(1, &[(1, 1)]).await;
    let broker = &c.brokers[0];
    broker.script().produce_failures = [Status::invalid_argument("record too large")].into();
    let producer = Producer::new(c.metadata.clone(), config()).unwrap();
    let first = producer
        .send_and_wait("t", Some(0), Record::new(value(0)))
        .await
        .unwrap_err();
    assert!(
        matches!(first, ClientError::InvalidArgument { .. }),
        "{first}"
    );
    assert_eq!(broker.script().produce_attempts, 1, "not retried");
    let second = producer
        .send_and_wait("t", Some(0), Record::new(value(1)))
        .await
        .unwrap();
    assert_eq!(second.offset, Some(0));

    let unknown = producer.send("nope", None, Record::new("x")).await;
    assert!(matches!(unknown, Err(ClientError::NotFound { .. })));
    let bad_partition = producer.send("t", Some(1), Record::new("x")).await;
    assert!(matches!(bad_partition, Err(ClientError::NotFound { .. })));
    let huge = producer
        .send("t", None, Record::new(vec![0u8; 64 * 1024]))
        .await;
    assert!(matches!(huge, Err(ClientError::TooLarge { .. })));
}

#[tokio::test]
async fn a_full_buffer_makes_send_wait_until_deliveries_free_memory() {
    let c = cluster(1, &[(1, 1)]).await;
    let broker = &c.brokers[0];
    let gate = broker.close_gate();
    let buffer_max_bytes = 1000;
    let producer = Producer::new(
        c.metadata.clone(),
        ProducerConfig {
            batch_max_bytes: 300,
            max_record_bytes: 300,
            buffer_max_bytes,
            ..config()
        },
    )
    .unwrap();
    c.metadata.refresh().await.unwrap();
    let mut deliveries = Vec::new();
    let mut blocked = None;
    for i in 0..100 {
        let mut send = Box::pin(producer.send("t", Some(0), Record::new(value(i))));
        match (&mut send).now_or_never() {
            Some(delivery) => deliveries.push(delivery.unwrap()),
            None => {
                blocked = Some(send);
                break;
            }
        }
        assert!(producer.buffered_bytes() <= buffer_max_bytes);
    }
    let mut blocked = blocked.expect("send waits once the buffer is full");
    let queued = deliveries.len();
    assert!(
        queued < 50,
        "{queued} records fit in {buffer_max_bytes} bytes"
    );
    eventually("the first batch reaches the broker", || {
        broker.script().produce_received == 1
    })
    .await;
    assert!(
        futures::poll!(&mut blocked).is_pending(),
        "still waiting: the batch in flight holds the memory"
    );
    gate.add_permits(1000);
    let last = within("the waiting send", blocked).await.unwrap();
    deliveries.push(last);
    let results = within("deliveries", futures::future::join_all(deliveries)).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(broker.values(), expected(queued + 1));
    producer.flush().await;
    assert_eq!(producer.buffered_bytes(), 0, "memory given back");
}

#[tokio::test]
async fn flush_skips_the_linger_and_close_refuses_new_records() {
    let c = cluster(1, &[(1, 1)]).await;
    let producer = Producer::new(
        c.metadata.clone(),
        ProducerConfig {
            linger: Duration::from_secs(3600),
            ..config()
        },
    )
    .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..3 {
        deliveries.push(
            producer
                .send("t", None, Record::new(value(i)))
                .await
                .unwrap(),
        );
    }
    within("flush", producer.flush()).await;
    assert_eq!(c.brokers[0].values(), expected(3));
    for d in deliveries {
        assert!(
            d.now_or_never()
                .expect("delivered before flush returned")
                .is_ok()
        );
    }
    let queued = producer
        .send("t", None, Record::new(value(3)))
        .await
        .unwrap();
    within("close", producer.close()).await;
    assert!(queued.now_or_never().expect("close delivers").is_ok());
    assert!(matches!(
        producer.send("t", None, Record::new("late")).await,
        Err(ClientError::Closed)
    ));
}

#[tokio::test]
async fn keyed_records_land_on_their_hash_partition() {
    let c = cluster(1, &[(1, 1), (1, 1), (1, 1)]).await;
    let producer = Producer::new(c.metadata.clone(), config()).unwrap();
    for key in ["alpha", "beta", "gamma", "delta"] {
        let landed = producer
            .send_and_wait("t", None, Record::new("v").with_key(key))
            .await
            .unwrap();
        assert_eq!(landed.partition, crate::key_partition(key.as_bytes(), 3));
    }
}
