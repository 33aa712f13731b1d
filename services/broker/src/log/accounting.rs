//! [`Accounting`]: how many bytes a partition log holds, and its recovery point, kept without
//! ever scanning the whole log.
//!
//! The log is split at the recovery point (Kafka's recovery-point checkpoint): batches below it
//! were durable and verified when the point was last checkpointed, so opening the log trusts
//! them and reads (and CRC-checks) only the batches from it on. Below the point only their
//! total size is kept (`bytes_below`, persisted with the point); from it on, each batch's end
//! and size is kept in memory (the tail), because appends and truncations change it. The tail
//! holds only what is above the last checkpoint — the uncommitted part of the log and at most
//! one checkpoint interval of committed batches — about 24 bytes per batch.
//!
//! # To ensure correctness
//! - The recovery point is always a batch boundary (the base offset of the first tail batch,
//!   or the log end when the tail is empty) and never above the high watermark, so every
//!   batch below it is durable here and is never truncated.
//! - `bytes_below + Σ tail bytes` is the size of the stored batches at all times.

use std::collections::VecDeque;

/// One batch above the recovery point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TailBatch {
    base: u64,
    end: u64,
    bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Accounting {
    /// The base offset of the first batch not counted in `bytes_below`.
    recovery_point: u64,
    bytes_below: u64,
    tail: VecDeque<TailBatch>,
    tail_bytes: u64,
}

impl Accounting {
    /// A log whose batches below `recovery_point` hold `bytes_below` bytes, with no batch
    /// known above it yet ([`push`](Self::push) them in order).
    pub fn new(recovery_point: u64, bytes_below: u64) -> Accounting {
        Accounting {
            recovery_point,
            bytes_below,
            ..Accounting::default()
        }
    }

    pub fn recovery_point(&self) -> u64 {
        self.recovery_point
    }

    pub fn bytes_below_recovery_point(&self) -> u64 {
        self.bytes_below
    }

    /// Bytes of every stored batch.
    pub fn size_bytes(&self) -> u64 {
        self.bytes_below + self.tail_bytes
    }

    /// A batch `base..end` of `bytes` was appended at the log end.
    pub fn push(&mut self, base: u64, end: u64, bytes: u64) {
        debug_assert!(self.tail.back().is_none_or(|b| b.end == base));
        self.tail.push_back(TailBatch { base, end, bytes });
        self.tail_bytes += bytes;
    }

    /// The log was truncated to `offset`; `rewritten` is the size of the batch that now ends
    /// at `offset` if one straddled it and was rewritten shorter.
    pub fn truncate(&mut self, offset: u64, rewritten: Option<u64>) {
        while let Some(last) = self.tail.back().copied() {
            if last.base >= offset {
                self.tail.pop_back();
                self.tail_bytes -= last.bytes;
            } else {
                if last.end > offset
                    && let Some(bytes) = rewritten
                {
                    self.tail_bytes = self.tail_bytes - last.bytes + bytes;
                    *self.tail.back_mut().expect("just read") = TailBatch {
                        end: offset,
                        bytes,
                        ..last
                    };
                }
                break;
            }
        }
    }

    /// Moves the recovery point up to `high_watermark` (at a batch boundary at or below it):
    /// what is below is durable and will not change. Returns whether it moved.
    pub fn checkpoint(&mut self, high_watermark: u64) -> bool {
        let mut moved = false;
        while let Some(first) = self.tail.front().copied()
            && first.end <= high_watermark
        {
            self.tail.pop_front();
            self.tail_bytes -= first.bytes;
            self.bytes_below += first.bytes;
            self.recovery_point = first.end;
            moved = true;
        }
        moved
    }

    /// Retention removed the batches below `new_log_start`, `removed_bytes` in all.
    pub fn remove_front(&mut self, new_log_start: u64, removed_bytes: u64) {
        let mut from_tail = 0;
        while let Some(first) = self.tail.front().copied()
            && first.end <= new_log_start
        {
            self.tail.pop_front();
            self.tail_bytes -= first.bytes;
            from_tail += first.bytes;
        }
        self.bytes_below = self
            .bytes_below
            .saturating_sub(removed_bytes.saturating_sub(from_tail));
        if self.recovery_point < new_log_start {
            self.recovery_point = new_log_start;
            self.bytes_below = 0;
        }
    }

    /// The log was emptied and restarts at `offset`.
    pub fn reset(&mut self, offset: u64) {
        *self = Accounting::new(offset, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_follows_appends_truncation_checkpoints_and_retention() {
        let mut a = Accounting::new(0, 0);
        a.push(0, 10, 100);
        a.push(10, 20, 110);
        a.push(20, 30, 120);
        assert_eq!(a.size_bytes(), 330);
        // Only whole batches at or below the high watermark move below the point.
        assert!(a.checkpoint(15));
        assert_eq!(
            (a.recovery_point(), a.bytes_below_recovery_point()),
            (10, 100)
        );
        assert!(!a.checkpoint(15));
        // Truncation at 25 rewrites the straddling batch, removing 5 records.
        a.truncate(25, Some(60));
        assert_eq!(a.size_bytes(), 100 + 110 + 60);
        a.truncate(20, None);
        assert_eq!(a.size_bytes(), 210);
        a.push(20, 40, 200);
        assert!(a.checkpoint(40));
        assert_eq!((a.recovery_point(), a.size_bytes()), (40, 410));
        // Retention of the first two batches (below the point).
        a.remove_front(20, 210);
        assert_eq!((a.recovery_point(), a.size_bytes()), (40, 200));
        // Retention past the point (batches committed but not checkpointed yet).
        a.push(40, 50, 50);
        a.remove_front(50, 250);
        assert_eq!((a.recovery_point(), a.size_bytes()), (50, 0));
        a.reset(90);
        assert_eq!((a.recovery_point(), a.size_bytes()), (90, 0));
    }
}
