//! The consumer against fake brokers: leader hints, out-of-range offsets, several partitions.

use std::time::Duration;

use super::*;
use crate::testing::fake_broker::FakeBroker;
use crate::testing::fake_controller::FakeController;
use crate::testing::{fast_admin_options, fast_retry, within};
use crate::{Admin, MetadataView};

async fn setup(leaders: &[(u64, u64)]) -> (FakeController, FakeBroker, FakeBroker, MetadataView) {
    let controller = FakeController::start(1).await;
    let a = FakeBroker::start(1).await;
    let b = FakeBroker::start(2).await;
    controller.set_metadata(&[(1, &a.address()), (2, &b.address())], "t", leaders);
    let admin = Admin::new(vec![controller.address()], fast_admin_options()).unwrap();
    (controller, a, b, MetadataView::from(admin))
}

fn config() -> ConsumerConfig {
    ConsumerConfig {
        max_wait: Duration::from_millis(100),
        retry: fast_retry(),
        ..ConsumerConfig::default()
    }
}

fn values(records: &[ConsumedRecord]) -> Vec<(u32, u64, String)> {
    records
        .iter()
        .map(|r| {
            let value = String::from_utf8(r.value.clone()).unwrap();
            (r.partition, r.offset, value)
        })
        .collect()
}

/// Polls until `n` records came (or 10 s pass).
async fn poll_n(consumer: &mut Consumer, n: usize) -> Vec<ConsumedRecord> {
    within("records", async {
        let mut all = Vec::new();
        while all.len() < n {
            all.extend(consumer.poll().await.unwrap());
        }
        all
    })
    .await
}

#[tokio::test]
async fn follows_a_not_leader_hint_to_another_broker() {
    let (controller, a, b, metadata) = setup(&[(1, 1)]).await;
    a.script().not_leader = Some((2, b.address(), 2));
    b.append(&["x", "y", "z"]);
    let mut consumer = Consumer::new(metadata, config()).unwrap();
    assert_eq!(consumer.assign("t", 0, Start::Beginning).await.unwrap(), 0);
    let records = poll_n(&mut consumer, 3).await;
    assert_eq!(
        values(&records),
        [(0, 0, "x".into()), (0, 1, "y".into()), (0, 2, "z".into())]
    );
    assert_eq!(consumer.position("t", 0), Some(3));
    assert_eq!(consumer.high_watermark("t", 0), Some(3));
    assert_eq!(
        controller.script().metadata_requests,
        1,
        "the hint sufficed"
    );

    // Long poll: a record appended later is returned by a later poll.
    assert!(consumer.poll().await.unwrap().is_empty());
    b.append(&["late"]);
    assert_eq!(
        values(&poll_n(&mut consumer, 1).await),
        [(0, 3, "late".into())]
    );
    assert!(b.script().fetches >= 2);
}

#[tokio::test]
async fn an_offset_out_of_range_surfaces_the_valid_range_until_a_seek() {
    let (_controller, a, _b, metadata) = setup(&[(1, 1)]).await;
    {
        let mut s = a.script();
        s.log_start = 10;
    }
    a.append(&["r10", "r11"]);
    let mut consumer = Consumer::new(metadata.clone(), config()).unwrap();
    consumer.assign("t", 0, Start::Offset(5)).await.unwrap();
    let error = within("poll", consumer.poll()).await.unwrap_err();
    match &error {
        ClientError::OffsetOutOfRange {
            offset,
            log_start,
            high_watermark,
            ..
        } => assert_eq!((*offset, *log_start, *high_watermark), (5, 10, 12)),
        other => panic!("unexpected {other}"),
    }
    assert!(!error.is_retryable());
    assert!(
        error.to_string().contains("valid offsets are 10 to 12"),
        "{error}"
    );
    let fetches = a.script().fetches;
    assert!(
        within("paused poll", consumer.poll())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(a.script().fetches, fetches, "paused until a seek");
    consumer.seek("t", 0, 10).unwrap();
    assert_eq!(
        values(&poll_n(&mut consumer, 2).await)[0],
        (0, 10, "r10".into())
    );

    // With auto-reset to the earliest offset the consumer goes on by itself.
    let mut resetting = Consumer::new(
        metadata,
        ConsumerConfig {
            offset_reset: OffsetReset::Earliest,
            ..config()
        },
    )
    .unwrap();
    resetting.assign("t", 0, Start::Offset(99)).await.unwrap();
    let records = poll_n(&mut resetting, 2).await;
    assert_eq!(values(&records)[1], (0, 11, "r11".into()));
    assert_eq!(resetting.position("t", 0), Some(12));
}

#[tokio::test]
async fn reads_several_partitions_concurrently_in_order_each() {
    let (_controller, a, b, metadata) = setup(&[(1, 1), (2, 1)]).await;
    a.append(&["a0", "a1", "a2"]);
    b.append(&["b0", "b1"]);
    let mut consumer = Consumer::new(metadata, config()).unwrap();
    consumer.assign("t", 0, Start::Beginning).await.unwrap();
    assert_eq!(consumer.assign("t", 1, Start::End).await.unwrap(), 2);
    consumer.seek("t", 1, 0).unwrap();
    let mut records = poll_n(&mut consumer, 5).await;
    records.sort_by_key(|r| (r.partition, r.offset));
    assert_eq!(
        values(&records),
        [
            (0, 0, "a0".into()),
            (0, 1, "a1".into()),
            (0, 2, "a2".into()),
            (1, 0, "b0".into()),
            (1, 1, "b1".into()),
        ]
    );
    assert_eq!(
        consumer.offsets("t", 0).await.unwrap(),
        PartitionOffsets {
            log_start: 0,
            high_watermark: 3
        }
    );
    assert!(consumer.unassign("t", 0));
    assert_eq!(consumer.assignment().len(), 1);
    let unknown = consumer.assign("t", 7, Start::Offset(0)).await.unwrap_err();
    assert!(matches!(unknown, ClientError::NotFound { .. }), "{unknown}");
}
