//! The broker's metadata cache under a metadata flood (issue 12, "no false failovers").
//!
//! Seen with release binaries (`dmq bench meta --brokers 3 --duration-s 120`): thousands of
//! registrations per second, each streamed to every broker as a delta, and each delta copied
//! the broker's whole image (20,000 brokers) to make the next snapshot. The brokers spent their
//! CPU copying, fell behind the stream, missed heartbeats, and partitions moved 54 times in 2
//! minutes. A delta must cost what it changes, not what the cluster holds: counted here in
//! allocations (deterministic, unlike time).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use dmq_broker::MetadataSnapshot;
use dmq_proto::v1 as pb;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn broker(broker_id: u64) -> pb::BrokerMetadata {
    pb::BrokerMetadata {
        broker_id,
        host: "127.0.0.1".into(),
        port: 9,
        ..Default::default()
    }
}

#[test]
fn t10_a_delta_to_a_big_image_allocates_for_what_it_changes_only() {
    let brokers = 20_000u64;
    let mut snapshot = MetadataSnapshot::from_response(pb::GetMetadataResponse {
        metadata_version: 1,
        brokers: (1..=brokers).map(broker).collect(),
        ..Default::default()
    });
    let deltas = 100u64;
    let mut kept = Vec::with_capacity(deltas as usize);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..deltas {
        let delta = pb::MetadataDelta {
            previous_version: snapshot.version(),
            version: snapshot.version() + 1,
            brokers: vec![broker(1 + i * 97 % brokers)],
            ..Default::default()
        };
        let next = snapshot.with_delta(&delta).expect("the delta follows");
        // Readers may keep the old snapshot: it must stay as it was.
        kept.push(snapshot);
        snapshot = next;
    }
    let per_delta = (ALLOCATIONS.load(Ordering::Relaxed) - before) / deltas;
    assert!(
        per_delta <= 64,
        "{per_delta} allocations per one-broker delta to an image of {brokers} brokers: the \
         delta copies the image"
    );
    assert_eq!(snapshot.version(), 1 + deltas);
    assert_eq!(snapshot.brokers().count() as u64, brokers);
    assert_eq!(kept[0].version(), 1);
    assert_eq!(kept[0].broker(1), Some(&broker(1)));
}
