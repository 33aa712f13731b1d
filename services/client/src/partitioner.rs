//! [`Partitioner`]: which partition a record without an explicit one goes to.

use std::sync::atomic::{AtomicU32, Ordering};

/// How the producer picks a partition when `send` is given none (an explicit partition always
/// wins).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Partitioner {
    /// Keyed records: `murmur2(key) & 0x7fffffff % partitions`, the same function and seed as
    /// Kafka's default partitioner, so a key maps to the same partition number as it would in
    /// Kafka (and stays there while the partition count does not change). Records without a key
    /// go round-robin.
    #[default]
    KeyHash,
    /// Every record to the next partition in turn, keys ignored.
    RoundRobin,
}

/// Chooses partitions; shared by every `send` of a producer.
#[derive(Debug, Default)]
pub(crate) struct Chooser {
    kind: Partitioner,
    next: AtomicU32,
}

impl Chooser {
    pub(crate) fn new(kind: Partitioner) -> Chooser {
        Chooser {
            kind,
            next: AtomicU32::new(0),
        }
    }

    /// The partition for a record with `key` among `partitions` (at least 1).
    pub(crate) fn choose(&self, key: Option<&[u8]>, partitions: u32) -> u32 {
        let partitions = partitions.max(1);
        match (self.kind, key) {
            (Partitioner::KeyHash, Some(key)) => key_partition(key, partitions),
            _ => self.next.fetch_add(1, Ordering::Relaxed) % partitions,
        }
    }
}

/// Kafka's `toPositive(murmur2(key)) % partitions`.
pub fn key_partition(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// MurmurHash2, 32-bit, with Kafka's seed `0x9747b28c` (Kafka's `Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // The vectors of Kafka's UtilsTest.testMurmur2 (Java ints).
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as i32,
                expected,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn keys_stick_to_a_partition_and_spread() {
        let chooser = Chooser::new(Partitioner::KeyHash);
        let mut used = [0u32; 8];
        for i in 0..1000 {
            let key = format!("key-{i}");
            let p = chooser.choose(Some(key.as_bytes()), 8);
            assert_eq!(p, chooser.choose(Some(key.as_bytes()), 8), "stable");
            assert_eq!(p, key_partition(key.as_bytes(), 8));
            used[p as usize] += 1;
        }
        assert!(used.iter().all(|&n| n > 60), "roughly uniform: {used:?}");
    }

    #[test]
    fn keyless_and_round_robin_rotate() {
        let chooser = Chooser::new(Partitioner::KeyHash);
        let picks: Vec<u32> = (0..6).map(|_| chooser.choose(None, 3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let rr = Chooser::new(Partitioner::RoundRobin);
        let picks: Vec<u32> = (0..4).map(|_| rr.choose(Some(b"same"), 2)).collect();
        assert_eq!(picks, [0, 1, 0, 1], "keys ignored");
        assert_eq!(rr.choose(None, 0), 0, "zero partitions count as one");
    }
}
