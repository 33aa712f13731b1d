//! The persisted per-partition state beside the batches: log start offset, high watermark and
//! leader-epoch history, one small checksummed value per partition in the shared `log_meta` tree
//! (key = the partition's tree name, see [`super::store`]).
//!
//! Value layout (big-endian):
//! ```text
//! u32  CRC32C of key || payload
//! payload:
//!   u8   format version = 2 (1: without the two recovery fields)
//!   u64  log start offset
//!   u64  high watermark
//!   u64  recovery point: batches below it were durable and checked (open trusts them)
//!   u64  bytes of the stored batches below the recovery point
//!   u32  epoch entry count n
//!   n x (u64 leader epoch, u64 start offset)
//! ```
//! A version-1 value reads as a recovery point at the log start (the next open checks the
//! whole log once, and the next checkpoint writes version 2).
//! The log end offset is not a field: the batches are its record (the end of the last stored
//! batch, or the log start offset when none is stored), so it can never disagree with the data
//! and an append is one insert.

use super::epochs::{EpochEntry, EpochHistory};

const META_FORMAT_V1: u8 = 1;
const META_FORMAT_V2: u8 = 2;
const FIXED_LEN_V1: usize = 4 + 1 + 8 + 8 + 4;
const FIXED_LEN: usize = FIXED_LEN_V1 + 16;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionMeta {
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub recovery_point: u64,
    pub bytes_below_recovery_point: u64,
    pub epochs: EpochHistory,
}

impl PartitionMeta {
    /// The stored value for `key`.
    pub fn encode(&self, key: &[u8]) -> Vec<u8> {
        let entries = self.epochs.entries();
        let mut out = Vec::with_capacity(FIXED_LEN + 16 * entries.len());
        out.extend_from_slice(&[0; 4]);
        out.push(META_FORMAT_V2);
        out.extend_from_slice(&self.log_start_offset.to_be_bytes());
        out.extend_from_slice(&self.high_watermark.to_be_bytes());
        out.extend_from_slice(&self.recovery_point.to_be_bytes());
        out.extend_from_slice(&self.bytes_below_recovery_point.to_be_bytes());
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for e in entries {
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.start_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c_append(crc32c::crc32c(key), &out[4..]);
        out[..4].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a value stored under `key`, or says why it cannot be trusted.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<PartitionMeta, String> {
        if value.len() < FIXED_LEN_V1 {
            return Err(format!(
                "the value is {} bytes, shorter than the {FIXED_LEN_V1}-byte minimum",
                value.len()
            ));
        }
        let stored = u32::from_be_bytes(value[..4].try_into().unwrap());
        let computed = crc32c::crc32c_append(crc32c::crc32c(key), &value[4..]);
        if stored != computed {
            return Err(format!(
                "CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        let fixed = match value[4] {
            META_FORMAT_V1 => FIXED_LEN_V1,
            META_FORMAT_V2 if value.len() >= FIXED_LEN => FIXED_LEN,
            META_FORMAT_V2 => return Err("a version-2 value is too short".into()),
            v => return Err(format!("unknown format version {v}")),
        };
        let u64_at = |at: usize| u64::from_be_bytes(value[at..at + 8].try_into().unwrap());
        let log_start_offset = u64_at(5);
        let (recovery_point, bytes_below_recovery_point) = if fixed == FIXED_LEN {
            (u64_at(21), u64_at(29))
        } else {
            (log_start_offset, 0)
        };
        let count = u32::from_be_bytes(value[fixed - 4..fixed].try_into().unwrap()) as usize;
        if value.len() != fixed + 16 * count {
            return Err(format!(
                "{count} epoch entries need {} bytes, the value is {}",
                fixed + 16 * count,
                value.len()
            ));
        }
        let entries = (0..count)
            .map(|i| EpochEntry {
                epoch: u64_at(fixed + 16 * i),
                start_offset: u64_at(fixed + 16 * i + 8),
            })
            .collect();
        let epochs = EpochHistory::from_entries(entries)
            .ok_or("the leader-epoch history is not strictly increasing")?;
        Ok(PartitionMeta {
            log_start_offset,
            high_watermark: u64_at(13),
            recovery_point,
            bytes_below_recovery_point,
            epochs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_checksum() {
        let mut epochs = EpochHistory::default();
        epochs.assign(1, 0);
        epochs.assign(3, 17);
        let meta = PartitionMeta {
            log_start_offset: 5,
            high_watermark: 20,
            recovery_point: 15,
            bytes_below_recovery_point: 999,
            epochs,
        };
        let value = meta.encode(b"p/t/1/0");
        assert_eq!(PartitionMeta::decode(b"p/t/1/0", &value), Ok(meta));
        // Under another key, or with a flipped bit, it is refused.
        assert!(PartitionMeta::decode(b"p/t/1/1", &value).is_err());
        for i in 0..value.len() {
            let mut bad = value.clone();
            bad[i] ^= 0x10;
            assert!(PartitionMeta::decode(b"p/t/1/0", &bad).is_err(), "byte {i}");
        }
        assert!(PartitionMeta::decode(b"p/t/1/0", &value[..10]).is_err());
    }

    #[test]
    fn a_version_1_value_reads_with_the_recovery_point_at_the_log_start() {
        // Written by the previous layout: no recovery fields.
        let mut v1 = vec![0u8; 4];
        v1.push(1);
        v1.extend_from_slice(&7u64.to_be_bytes());
        v1.extend_from_slice(&9u64.to_be_bytes());
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&3u64.to_be_bytes());
        v1.extend_from_slice(&7u64.to_be_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(b"k"), &v1[4..]);
        v1[..4].copy_from_slice(&crc.to_be_bytes());
        let meta = PartitionMeta::decode(b"k", &v1).unwrap();
        assert_eq!(
            (
                meta.log_start_offset,
                meta.high_watermark,
                meta.recovery_point,
                meta.bytes_below_recovery_point
            ),
            (7, 9, 7, 0)
        );
        assert_eq!(meta.epochs.latest_epoch(), Some(3));
    }
}
