//! After the faults: heal, wait until the cluster is whole and quiet, read every partition in
//! full from its leader, then move each partition's leadership (SIGTERM its leader: a leaving
//! broker hands its leaderships over) and read it in full again from the new leader.
//!
//! "Whole and quiet" ([`settled`]): every broker ONLINE, every partition led with its ISR
//! equal to its replicas, and on every replica the log end equal to the leader's high
//! watermark (nothing is in flight, so a full read from the leader sees every committed
//! record: a new leader's high watermark may lag until its followers fetched).

use std::collections::BTreeMap;
use std::time::Duration;

use dmq_proto::v1 as pb;
use tonic::Code;

use super::history::{Clock, FullRead, value_text};
use super::layout::Node;
use super::meta::{CALL_TIMEOUT, Meta};
use super::nemesis::SharedCluster;
use super::say;
use crate::wait::{deadline, wait_until};

/// The leader of every partition once settled.
pub type Leaders = BTreeMap<u32, u64>;

/// The cluster is settled, `except` a broker that is down on purpose (then the ISR need not
/// be full: only the leader's high watermark must have reached its log end).
pub async fn settled(
    meta: &Meta,
    partitions: u32,
    brokers: u64,
    except: Option<u64>,
) -> Result<Leaders, String> {
    let cluster = meta
        .admin()
        .describe_cluster()
        .await
        .map_err(|e| format!("DescribeCluster: {e}"))?;
    let live: Vec<u64> = (1..=brokers).filter(|b| Some(*b) != except).collect();
    for &b in &live {
        let ok = cluster
            .brokers
            .iter()
            .any(|m| m.broker_id == b && m.status == pb::BrokerStatus::Online as i32);
        if !ok {
            return Err(format!("broker {b} is not ONLINE"));
        }
    }
    let (_, topic) = meta.topic().await?;
    let mut infos = BTreeMap::new();
    for &b in &live {
        infos.insert(b, meta.broker_info(b).await?);
    }
    let mut leaders = Leaders::new();
    for p in 0..partitions {
        let m = topic
            .partitions
            .get(p as usize)
            .ok_or_else(|| format!("no partition {p}"))?;
        if m.leader == 0 || Some(m.leader) == except {
            return Err(format!("partition {p} has leader {} (0: none)", m.leader));
        }
        let replica = |b: u64| {
            infos.get(&b).and_then(|i| {
                i.replicas
                    .iter()
                    .find(|r| r.topic == topic.name && r.partition == p)
            })
        };
        let l = replica(m.leader)
            .ok_or_else(|| format!("partition {p}: leader {} does not hold it", m.leader))?;
        if l.role() != pb::ReplicaRole::Leader || l.leader_epoch != m.leader_epoch {
            return Err(format!(
                "partition {p}: broker {} is {:?} at epoch {}, the metadata says leader at {}",
                m.leader,
                l.role(),
                l.leader_epoch,
                m.leader_epoch
            ));
        }
        if l.high_watermark != l.log_end_offset {
            return Err(format!(
                "partition {p}: leader {} has high watermark {} < log end {}",
                m.leader, l.high_watermark, l.log_end_offset
            ));
        }
        if except.is_none() {
            let mut isr = m.isr.clone();
            let mut replicas = m.replicas.clone();
            isr.sort_unstable();
            replicas.sort_unstable();
            if isr != replicas {
                return Err(format!(
                    "partition {p}: ISR {isr:?} of replicas {replicas:?}"
                ));
            }
            for &b in &replicas {
                let f =
                    replica(b).ok_or_else(|| format!("partition {p}: broker {b} holds none"))?;
                if f.log_end_offset != l.log_end_offset {
                    return Err(format!(
                        "partition {p}: broker {b} log end {} != leader's {}",
                        f.log_end_offset, l.log_end_offset
                    ));
                }
            }
        }
        leaders.insert(p, m.leader);
    }
    Ok(leaders)
}

/// Waits for [`settled`] within `timeout`, or says what was still wrong.
pub async fn wait_settled(
    meta: &Meta,
    partitions: u32,
    brokers: u64,
    except: Option<u64>,
    timeout: Duration,
) -> Result<Leaders, String> {
    wait_until(deadline(timeout), || {
        settled(meta, partitions, brokers, except)
    })
    .await
    .map_err(|e| format!("did not heal within {timeout:?}: {e}"))
}

/// Reads `partition` from `broker` from its log start to its high watermark.
pub async fn read_full(
    meta: &Meta,
    partition: u32,
    broker: u64,
    label: &str,
    timeout: Duration,
) -> Result<FullRead, String> {
    let address = Node::Broker(broker).service_addr().expect("a broker");
    let mut client = meta.broker_client(&address);
    let until = tokio::time::Instant::now() + timeout;
    let mut records: Vec<(u64, String)> = Vec::new();
    let mut offset = 0u64;
    let mut log_start = None;
    loop {
        if tokio::time::Instant::now() >= until {
            return Err(format!(
                "reading partition {partition} from broker {broker} took over {timeout:?} \
                 (at offset {offset})"
            ));
        }
        let request = pb::FetchRequest {
            topic: meta.topic.clone(),
            partition,
            offset,
            max_bytes: 1024 * 1024,
            max_wait_ms: 0,
            // The stored bytes themselves, decoded here: the check reads what the disk holds.
            raw_batches: true,
        };
        let answer = tokio::time::timeout(CALL_TIMEOUT * 2, client.fetch(request)).await;
        let r = match answer {
            Ok(Ok(r)) => {
                let mut r = dmq_client::decode_raw_fetch(r.into_inner()).map_err(|e| {
                    format!("Fetch of partition {partition} at {offset} from broker {broker}: {e}")
                })?;
                r.records.retain(|rec| rec.offset >= offset);
                r
            }
            Ok(Err(s))
                if s.code() == Code::OutOfRange && records.is_empty() && log_start.is_none() =>
            {
                let start = super::classify::info_number(&s, "log_start_offset")
                    .ok_or_else(|| format!("OUT_OF_RANGE without log_start_offset: {s:?}"))?;
                log_start = Some(start);
                offset = start;
                continue;
            }
            Ok(Err(s)) => {
                return Err(format!(
                    "Fetch of partition {partition} at {offset} from broker {broker}: {:?}: {}",
                    s.code(),
                    s.message()
                ));
            }
            Err(_) => {
                return Err(format!(
                    "Fetch of partition {partition} at {offset} from broker {broker}: no answer"
                ));
            }
        };
        let start = *log_start.get_or_insert(r.log_start_offset.min(offset));
        if r.records.is_empty() {
            if offset >= r.high_watermark {
                return Ok(FullRead {
                    label: label.to_string(),
                    partition,
                    broker,
                    log_start_offset: start,
                    high_watermark: r.high_watermark,
                    records,
                });
            }
            return Err(format!(
                "broker {broker} answered no records at {offset} below its high watermark {}",
                r.high_watermark
            ));
        }
        for rec in &r.records {
            records.push((rec.offset, value_text(&rec.value)));
        }
        offset = r.records.last().map_or(offset, |l| l.offset + 1);
    }
}

/// The full reads: every partition from its settled leader (`read 1`), then each from another
/// broker after its leader left (`read 2`). Restarts every broker it stopped.
pub async fn read_twice(
    cluster: &SharedCluster,
    meta: &Meta,
    partitions: u32,
    brokers: u64,
    heal_timeout: Duration,
    clock: &Clock,
) -> Result<Vec<FullRead>, String> {
    let log = |line: &str| say(clock, line);
    let read_timeout = Duration::from_secs(60);
    let mut reads = Vec::new();
    let mut first: BTreeMap<u32, u64> = BTreeMap::new();
    for p in 0..partitions {
        // A leadership change between settling and reading fails the read: settle again.
        let mut tries = 0;
        let (b, r) = loop {
            tries += 1;
            let leaders = wait_settled(meta, partitions, brokers, None, heal_timeout).await?;
            let b = leaders[&p];
            match read_full(meta, p, b, "read 1", read_timeout).await {
                Ok(r) => break (b, r),
                Err(e) if tries < 3 => log(&format!("read 1 of partition {p}: {e}; again")),
                Err(e) => return Err(e),
            }
        };
        log(&format!(
            "read 1: partition {p} from broker {b}: {} records, high watermark {}",
            r.records.len(),
            r.high_watermark
        ));
        first.insert(p, b);
        reads.push(r);
    }
    let mut pending: Vec<u32> = first.keys().copied().collect();
    for _round in 0..partitions + 2 {
        if pending.is_empty() {
            break;
        }
        let leaders = wait_settled(meta, partitions, brokers, None, heal_timeout).await?;
        // A partition whose leadership already moved is read from its new leader as it is.
        let mut still = Vec::new();
        for p in pending {
            if leaders[&p] != first[&p] {
                let r = read_full(meta, p, leaders[&p], "read 2", read_timeout).await?;
                log(&format!(
                    "read 2: partition {p} from broker {}: {} records",
                    leaders[&p],
                    r.records.len()
                ));
                reads.push(r);
            } else {
                still.push(p);
            }
        }
        pending = still;
        let Some(&p) = pending.first() else {
            break;
        };
        let leaving = first[&p];
        let how = cluster
            .lock()
            .await
            .terminate(Node::Broker(leaving), Duration::from_secs(15))
            .await?;
        log(&format!(
            "SIGTERM broker {leaving} (leads partition {p}): {how}"
        ));
        let moved = wait_settled(meta, partitions, brokers, Some(leaving), heal_timeout).await;
        let moved = match moved {
            Ok(m) => m,
            Err(e) => {
                let _ = cluster.lock().await.start(Node::Broker(leaving));
                return Err(format!("after SIGTERM of broker {leaving}: {e}"));
            }
        };
        let mut still = Vec::new();
        for p in pending {
            if moved[&p] != first[&p] {
                let r = read_full(meta, p, moved[&p], "read 2", read_timeout).await?;
                log(&format!(
                    "read 2: partition {p} from broker {} (broker {leaving} down): {} records",
                    moved[&p],
                    r.records.len()
                ));
                reads.push(r);
            } else {
                still.push(p);
            }
        }
        pending = still;
        cluster.lock().await.start(Node::Broker(leaving))?;
    }
    if !pending.is_empty() {
        return Err(format!(
            "leadership of partitions {pending:?} never moved off their first leaders"
        ));
    }
    wait_settled(meta, partitions, brokers, None, heal_timeout).await?;
    Ok(reads)
}
