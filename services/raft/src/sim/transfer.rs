//! InstallSnapshot transfers as the controllers' transport makes them
//! (`services/controller/src/transport/snapshot.rs` and `peer.rs`): a stream of chunks over a
//! link of limited bandwidth, at most one per follower at a time on the sending side, given up
//! at a deadline that grows with the snapshot's size.
//!
//! # To ensure correctness
//! - A transfer takes the time its size needs at its link's bandwidth (drawn per seed and
//!   link; the sim's snapshots are tiny, so each has a simulated size that grows with its
//!   index). Chunks leave one after the other; any chunk can be lost (dropped, or its link cut
//!   by a partition, or its receiver down), which fails the transfer.
//! - The receiver steps the snapshot only once its last chunk arrived, as the real receiver
//!   assembles it in a file first.
//! - The sender reports each transfer's end to its core ([`crate::Raft::report_snapshot`]):
//!   failed on a lost chunk or at the deadline, which is `base + 2 * size / min_rate` as in
//!   the real transport; ok when the receiver's answer arrives first. A second snapshot to a
//!   follower while one is under way is not sent and is reported failed at once (the real
//!   sender's one snapshot permit per peer).
//! - A crash of the sender ends its transfers without a report (its core is gone).

use rand::Rng;

use super::world::*;
use crate::types::*;

/// Chunks per transfer at most: a bigger snapshot gets bigger chunks. Bounds the events one
/// transfer costs.
const CHUNKS_MAX: u64 = 16;

/// One InstallSnapshot under way from `from` to `to`.
pub(super) struct Transfer {
    pub(super) id: u64,
    generation: u64,
    message: Message,
    index: Index,
    chunks_left: u64,
    chunk_us: u64,
    /// The last chunk arrived and the receiver has the snapshot: waiting for its answer.
    delivered: bool,
}

/// The per-seed shape of snapshot transfers.
pub(super) struct SnapshotLinks {
    /// Simulated snapshot size: `base_bytes + bytes_per_entry * index`.
    base_bytes: u64,
    bytes_per_entry: u64,
    /// The slowest rate a transfer is expected to keep (the deadline's rate); every link is
    /// at least this fast, and up to 4 times faster.
    min_rate_bytes_per_sec: u64,
    /// Bytes per second of each directed link, `[from][to]`.
    link_bytes_per_sec: Vec<Vec<u64>>,
    chunk_bytes: u64,
}

impl SnapshotLinks {
    pub(super) fn draw(rng: &mut impl Rng, nodes: usize) -> SnapshotLinks {
        // Log-uniform sizes (1 KiB to 512 KiB) and rates (256 KiB/s to 32 MiB/s): most
        // transfers take milliseconds, and on a few seeds in a hundred several election
        // timeouts.
        let base_bytes = rng.random_range(10.0f64..19.0).exp2() as u64;
        let min_rate = rng.random_range(18.0f64..25.0).exp2() as u64;
        let link_bytes_per_sec = (0..nodes)
            .map(|_| {
                (0..nodes)
                    .map(|_| (min_rate as f64 * rng.random_range(1.0..4.0)) as u64)
                    .collect()
            })
            .collect();
        SnapshotLinks {
            base_bytes,
            bytes_per_entry: rng.random_range(8..=64),
            min_rate_bytes_per_sec: min_rate,
            link_bytes_per_sec,
            chunk_bytes: rng.random_range(4_096..=65_536),
        }
    }

    fn size_bytes(&self, index: Index) -> u64 {
        self.base_bytes + self.bytes_per_entry * index
    }
}

/// How a transfer of one size goes over one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timing {
    chunks: u64,
    /// Time on the wire per chunk, uncongested.
    chunk_us: u64,
    deadline_us: u64,
}

/// `size` bytes in chunks of about `chunk_bytes` (at most [`CHUNKS_MAX`] of them) at
/// `bandwidth` bytes per second, given up after the real transport's deadline: `base` (the
/// data lane's deadline) plus twice the time the bytes take at `min_rate` (sending, then
/// storing and installing; `transport::snapshot::deadline`).
fn timing(size: u64, bandwidth: u64, chunk_bytes: u64, min_rate: u64, base: u64) -> Timing {
    let chunks = size.div_ceil(chunk_bytes).clamp(1, CHUNKS_MAX);
    let chunk_us = (size.div_ceil(chunks) * 1_000_000)
        .div_ceil(bandwidth)
        .max(1);
    Timing {
        chunks,
        chunk_us,
        deadline_us: base + 2 * size * 1_000_000 / min_rate,
    }
}

impl World {
    /// Node `from` hands an InstallSnapshot to its transport.
    pub(super) fn start_transfer(&mut self, from: usize, m: Message) {
        let to = (m.to - 1) as usize;
        let MessageBody::InstallSnapshot { snapshot } = &m.body else {
            unreachable!("a snapshot transfer carries an InstallSnapshot");
        };
        let index = snapshot.meta.last_index;
        let generation = self.nodes[from].generation;
        if self.transfers.contains_key(&(from, to)) {
            self.log(|| {
                format!(
                    "node {}'s snapshot {index} to {}: one is under way, not sent",
                    from + 1,
                    to + 1
                )
            });
            self.schedule(
                0,
                Kind::SnapshotReport(from, m.to, index, false, generation),
            );
            return;
        }
        let links = &self.profile.snapshots;
        let size = links.size_bytes(index);
        let bandwidth = links.link_bytes_per_sec[from][to];
        let base = 2 * (1_000 + self.profile.delay_max_us) + TICK_US;
        let Timing {
            chunks,
            chunk_us,
            deadline_us: deadline,
        } = timing(
            size,
            bandwidth,
            links.chunk_bytes,
            links.min_rate_bytes_per_sec,
            base,
        );
        let took_us = chunks * chunk_us;
        self.counts.snapshot_transfers += 1;
        if took_us > ELECTION_MAX_TICKS as u64 * TICK_US {
            self.counts.slow_snapshot_transfers += 1;
        }
        self.log(|| {
            format!(
                "node {} sends snapshot {index} to {}: {size} bytes in {chunks} chunks at \
                 {} KiB/s, {} ms (deadline {} ms)",
                from + 1,
                to + 1,
                bandwidth / 1024,
                took_us / 1000,
                deadline / 1000
            )
        });
        self.next_transfer_id += 1;
        let id = self.next_transfer_id;
        self.transfers.insert(
            (from, to),
            Transfer {
                id,
                generation,
                message: m,
                index,
                chunks_left: chunks,
                chunk_us,
                delivered: false,
            },
        );
        let latency = self.rng.random_range(50..=1_000);
        let first = latency + self.chunk_time(chunk_us);
        self.schedule(first, Kind::SnapshotChunk(from, to, id));
        self.schedule(deadline, Kind::SnapshotDeadline(from, to, id));
    }

    /// How long one chunk takes on the wire: its share of the bandwidth, slowed by up to 3x
    /// by congestion while the faults run.
    fn chunk_time(&mut self, chunk_us: u64) -> u64 {
        if self.faults_on {
            chunk_us * self.rng.random_range(100..=300) / 100
        } else {
            chunk_us
        }
    }

    /// The next chunk of the transfer `id` from `from` to `to` arrives, or is lost.
    pub(super) fn on_snapshot_chunk(&mut self, from: usize, to: usize, id: u64) -> Step {
        let Some(t) = self.transfers.get(&(from, to)).filter(|t| t.id == id) else {
            return Ok(()); // given up at its deadline already
        };
        if self.nodes[from].generation != t.generation {
            self.transfers.remove(&(from, to));
            return Ok(());
        }
        let lost = self.nodes[to].raft.is_none()
            || (self.faults_on
                && (self.blocked.contains(&(from, to))
                    || self.rng.random_range(0..2000) < self.profile.drop_per_mille));
        if lost {
            let t = self.transfers.remove(&(from, to)).expect("checked");
            self.counts.snapshot_chunks_lost += 1;
            self.log(|| {
                format!(
                    "node {}'s snapshot {} to {}: a chunk is lost, the transfer fails",
                    from + 1,
                    t.index,
                    to + 1
                )
            });
            self.report_transfer(from, t, false);
            return Ok(());
        }
        let t = self.transfers.get_mut(&(from, to)).expect("checked");
        t.chunks_left -= 1;
        if t.chunks_left > 0 {
            let chunk_us = t.chunk_us;
            let next = self.chunk_time(chunk_us);
            self.schedule(next, Kind::SnapshotChunk(from, to, id));
            return Ok(());
        }
        t.delivered = true;
        let m = t.message.clone();
        self.receive(m)
    }

    /// The transfer `id` from `from` to `to` reached its deadline.
    pub(super) fn on_snapshot_deadline(&mut self, from: usize, to: usize, id: u64) -> Step {
        if self.transfers.get(&(from, to)).is_none_or(|t| t.id != id) {
            return Ok(());
        }
        let t = self.transfers.remove(&(from, to)).expect("checked");
        if self.nodes[from].generation != t.generation {
            return Ok(());
        }
        self.counts.snapshot_deadlines_missed += 1;
        self.log(|| {
            format!(
                "node {}'s snapshot {} to {}: past its deadline, given up",
                from + 1,
                t.index,
                to + 1
            )
        });
        self.report_transfer(from, t, false);
        Ok(())
    }

    /// `m`, an InstallSnapshotResponse, reached the sender: the transfer it answers is over.
    pub(super) fn on_snapshot_answer(&mut self, m: &Message) {
        let (from, to) = ((m.to - 1) as usize, (m.from - 1) as usize);
        if !self.transfers.get(&(from, to)).is_some_and(|t| t.delivered) {
            return;
        }
        let t = self.transfers.remove(&(from, to)).expect("checked");
        self.report_transfer(from, t, true);
    }

    /// The sender's transport tells its core how the transfer ended (as the next event).
    fn report_transfer(&mut self, from: usize, t: Transfer, ok: bool) {
        let to = t.message.to;
        self.schedule(0, Kind::SnapshotReport(from, to, t.index, ok, t.generation));
    }

    /// A node crashed: its transport and its transfers are gone.
    pub(super) fn drop_transfers_from(&mut self, i: usize) {
        self.transfers.retain(|&(from, _), _| from != i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_takes_its_size_over_the_bandwidth_in_chunks_within_its_deadline() {
        // 1 MiB at 1 MiB/s in 64 KiB chunks: 16 chunks of 1/16 s; deadline base + 2 s.
        let t = timing(1 << 20, 1 << 20, 64 << 10, 1 << 20, 1_000);
        assert_eq!(t.chunks, 16);
        assert_eq!(t.chunk_us, 62_500);
        assert_eq!(t.deadline_us, 2_001_000);
        // Twice the size: twice the time and twice the deadline's rate part, in bigger chunks.
        let t2 = timing(2 << 20, 1 << 20, 64 << 10, 1 << 20, 1_000);
        assert_eq!(t2.chunks, CHUNKS_MAX);
        assert_eq!(t2.chunks * t2.chunk_us, 2 * t.chunks * t.chunk_us);
        assert_eq!(t2.deadline_us, 4_001_000);
        // A link at the slowest rate expected needs, uncongested, half the deadline.
        let slow = timing(300_000, 256 << 10, 4_096, 256 << 10, 0);
        assert!(slow.chunks * slow.chunk_us * 2 <= slow.deadline_us + 2 * slow.chunks);
        // A tiny snapshot is one chunk.
        assert_eq!(timing(10, 1 << 20, 4_096, 1 << 20, 0).chunks, 1);
    }

    #[test]
    fn links_are_at_least_as_fast_as_the_rate_the_deadline_expects() {
        use rand::SeedableRng;
        for seed in 0..50 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let l = SnapshotLinks::draw(&mut rng, 5);
            assert!((1 << 18..1 << 25).contains(&l.min_rate_bytes_per_sec));
            for row in &l.link_bytes_per_sec {
                for &b in row {
                    assert!(b >= l.min_rate_bytes_per_sec && b < 4 * l.min_rate_bytes_per_sec);
                }
            }
            assert!(l.size_bytes(100) > l.size_bytes(0));
        }
    }
}
