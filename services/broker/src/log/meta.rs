//! The persisted per-partition state beside the segment files: log start offset, high
//! watermark, recovery checkpoint and leader-epoch history, one small checksummed value per
//! partition in the shared `log_meta` sled tree (key: [`super::PartitionId::meta_key`]).
//!
//! Value layout (big-endian):
//! ```text
//! u32  CRC32C of key || payload
//! payload:
//!   u8   format version = 3
//!   u64  log start offset
//!   u64  high watermark
//!   u64  checkpoint segment: the base offset of the segment the checkpoint falls in
//!   u64  checkpoint bytes: that segment's bytes below the checkpoint (durable, trusted at open)
//!   u64  checkpoint offset: the offset of the first batch at or after the checkpoint
//!   u32  epoch entry count n
//!   n x (u64 leader epoch, u64 start offset)
//! ```
//! Versions 1 and 2 described record data stored in sled (before segment files); such a value
//! is refused, as the store refuses that layout ([`super::LogError::OldLayout`]).
//! The log end offset is not a field: the segments are its record, so it can never disagree
//! with the data. None of these fields has to be durable before an acknowledgement: a lost
//! update costs a longer recovery scan (an older checkpoint) or a high watermark that moves
//! back, and open re-derives epochs from the batches past the checkpoint.

use super::epochs::{EpochEntry, EpochHistory};

const META_FORMAT_V3: u8 = 3;
const FIXED_LEN: usize = 4 + 1 + 8 * 5 + 4;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionMeta {
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub checkpoint_segment: u64,
    pub checkpoint_bytes: u64,
    pub checkpoint_offset: u64,
    pub epochs: EpochHistory,
}

impl PartitionMeta {
    /// The stored value for `key`.
    pub fn encode(&self, key: &[u8]) -> Vec<u8> {
        let entries = self.epochs.entries();
        let mut out = Vec::with_capacity(FIXED_LEN + 16 * entries.len());
        out.extend_from_slice(&[0; 4]);
        out.push(META_FORMAT_V3);
        for v in [
            self.log_start_offset,
            self.high_watermark,
            self.checkpoint_segment,
            self.checkpoint_bytes,
            self.checkpoint_offset,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
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
        if value.len() < 5 {
            return Err(format!("the value is {} bytes, too short", value.len()));
        }
        let stored = u32::from_be_bytes(value[..4].try_into().unwrap());
        let computed = crc32c::crc32c_append(crc32c::crc32c(key), &value[4..]);
        if stored != computed {
            return Err(format!(
                "CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        match value[4] {
            META_FORMAT_V3 if value.len() >= FIXED_LEN => {}
            META_FORMAT_V3 => return Err("a version-3 value is too short".into()),
            v @ (1 | 2) => {
                return Err(format!(
                    "format version {v} belongs to the old layout (record data in sled), which \
                     this broker does not read"
                ));
            }
            v => return Err(format!("unknown format version {v}")),
        }
        let u64_at = |at: usize| u64::from_be_bytes(value[at..at + 8].try_into().unwrap());
        let count =
            u32::from_be_bytes(value[FIXED_LEN - 4..FIXED_LEN].try_into().unwrap()) as usize;
        if value.len() != FIXED_LEN + 16 * count {
            return Err(format!(
                "{count} epoch entries need {} bytes, the value is {}",
                FIXED_LEN + 16 * count,
                value.len()
            ));
        }
        let entries = (0..count)
            .map(|i| EpochEntry {
                epoch: u64_at(FIXED_LEN + 16 * i),
                start_offset: u64_at(FIXED_LEN + 16 * i + 8),
            })
            .collect();
        let epochs = EpochHistory::from_entries(entries)
            .ok_or("the leader-epoch history is not strictly increasing")?;
        Ok(PartitionMeta {
            log_start_offset: u64_at(5),
            high_watermark: u64_at(13),
            checkpoint_segment: u64_at(21),
            checkpoint_bytes: u64_at(29),
            checkpoint_offset: u64_at(37),
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
            checkpoint_segment: 0,
            checkpoint_bytes: 999,
            checkpoint_offset: 15,
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
    fn a_value_of_the_sled_layout_is_refused_with_the_reason() {
        let mut v2 = vec![0u8; 4];
        v2.push(2);
        v2.extend_from_slice(&[0; 36]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(b"k"), &v2[4..]);
        v2[..4].copy_from_slice(&crc.to_be_bytes());
        let err = PartitionMeta::decode(b"k", &v2).unwrap_err();
        assert!(err.contains("old layout"), "{err}");
    }
}
