//! Cutting a partition's queue into batches by size and linger time.
//!
//! A partition's queue carries records and flush markers in `send` order. A batch starts with
//! the first waiting record and closes when the next record would not fit in
//! `batch_max_bytes` (that record starts the next batch), when `linger` has passed since its
//! first record was *enqueued* (records that waited while the previous batch was in flight
//! have lingered already, so a busy partition sends back to back), at a flush marker, or when
//! the queue is closed.

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::{Duration, Instant};

use dmq_proto::v1 as pb;

use crate::{ClientError, RecordMetadata};

/// Bytes counted per record on top of its encoded size (field tag, length, bookkeeping), so
/// that empty records are not free.
pub(crate) const RECORD_OVERHEAD_BYTES: usize = 16;

/// What a partition's queue carries.
pub(crate) enum Msg {
    Record(Pending),
    /// Answer once every record queued before it is delivered or failed.
    Flush(oneshot::Sender<()>),
}

/// A record waiting for its batch to be acknowledged.
pub(crate) struct Pending {
    pub record: pb::Record,
    pub size_bytes: usize,
    pub enqueued_at: Instant,
    pub reply: oneshot::Sender<Result<RecordMetadata, ClientError>>,
    /// Its share of the producer's memory budget, given back when it is dropped (after the
    /// delivery is reported).
    pub memory: Option<OwnedSemaphorePermit>,
}

/// Records to send together, and the flush markers to answer after them.
#[derive(Default)]
pub(crate) struct Batch {
    pub records: Vec<Pending>,
    pub size_bytes: usize,
    pub flush: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn push(&mut self, pending: Pending) {
        self.size_bytes += pending.size_bytes;
        self.records.push(pending);
    }
}

/// One partition's batcher; owns what it has read from the queue but not yet batched.
pub(crate) struct Accumulator {
    linger: Duration,
    max_bytes: usize,
    /// A record that did not fit in the previous batch: the first of the next.
    carry: Option<Pending>,
    /// Flush markers met while topping up a closed batch: answered after it.
    flush: Vec<oneshot::Sender<()>>,
}

impl Accumulator {
    pub(crate) fn new(linger: Duration, max_bytes: usize) -> Accumulator {
        Accumulator {
            linger,
            max_bytes,
            carry: None,
            flush: Vec::new(),
        }
    }

    /// The next batch (possibly only flush markers), by the rules in the module
    /// documentation; `None` once the queue is closed and drained. Cancel-safe only between
    /// calls.
    pub(crate) async fn next_batch(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Msg>,
    ) -> Option<Batch> {
        let mut batch = Batch::default();
        if !self.flush.is_empty() {
            batch.flush = std::mem::take(&mut self.flush);
            return Some(batch);
        }
        let first = match self.carry.take() {
            Some(pending) => pending,
            None => match rx.recv().await? {
                Msg::Record(pending) => pending,
                Msg::Flush(marker) => {
                    batch.flush.push(marker);
                    return Some(batch);
                }
            },
        };
        let deadline = first.enqueued_at + self.linger;
        batch.push(first);
        while batch.size_bytes < self.max_bytes {
            let msg = if Instant::now() >= deadline {
                // Lingered enough (always, with no linger): take only what is already queued.
                // Awaiting the elapsed deadline instead would cost up to a millisecond, since
                // tokio's timer rounds deadlines up to its next millisecond tick.
                match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            } else {
                tokio::select! {
                    biased;
                    msg = rx.recv() => msg,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            };
            match msg {
                None => break,
                Some(Msg::Flush(marker)) => {
                    batch.flush.push(marker);
                    break;
                }
                Some(Msg::Record(pending)) => {
                    if batch.size_bytes + pending.size_bytes > self.max_bytes {
                        self.carry = Some(pending);
                        break;
                    }
                    batch.push(pending);
                }
            }
        }
        Some(batch)
    }

    /// Adds the records already waiting in the queue while they fit, without waiting: called
    /// after the batch waited for a free in-flight slot. Stops at a flush marker, kept for the
    /// next call; does nothing to a batch that carries flush markers (it must end there).
    pub(crate) fn top_up(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>, batch: &mut Batch) {
        if self.carry.is_some() || !batch.flush.is_empty() || !self.flush.is_empty() {
            return;
        }
        while batch.size_bytes < self.max_bytes {
            match rx.try_recv() {
                Ok(Msg::Record(pending)) => {
                    if batch.size_bytes + pending.size_bytes > self.max_bytes {
                        self.carry = Some(pending);
                        return;
                    }
                    batch.push(pending);
                }
                Ok(Msg::Flush(marker)) => {
                    self.flush.push(marker);
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Reply = oneshot::Receiver<Result<RecordMetadata, ClientError>>;

    fn record(n: u8, size_bytes: usize) -> (Msg, Reply) {
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            record: pb::Record {
                value: vec![n],
                ..Default::default()
            },
            size_bytes,
            enqueued_at: Instant::now(),
            reply,
            memory: None,
        };
        (Msg::Record(pending), rx)
    }

    fn values(batch: &Batch) -> Vec<u8> {
        batch.records.iter().map(|p| p.record.value[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once_and_the_rest_waits_for_linger() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut acc = Accumulator::new(Duration::from_millis(5), 100);
        let mut replies = Vec::new();
        for n in 0..5 {
            let (msg, reply) = record(n, 40);
            tx.send(msg).ok().unwrap();
            replies.push(reply);
        }
        let start = Instant::now();
        let first = acc.next_batch(&mut rx).await.unwrap();
        assert_eq!(
            values(&first),
            [0, 1],
            "a third 40-byte record would pass 100 bytes"
        );
        assert_eq!(first.size_bytes, 80);
        assert_eq!(start.elapsed(), Duration::ZERO, "full: no linger");
        let second = acc.next_batch(&mut rx).await.unwrap();
        assert_eq!(
            values(&second),
            [2, 3],
            "the carried record starts the next batch"
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
        let third = acc.next_batch(&mut rx).await.unwrap();
        assert_eq!(values(&third), [4]);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(5),
            "not full: sent when the linger since its enqueue is over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_linger_a_batch_takes_what_is_queued_and_goes_at_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut acc = Accumulator::new(Duration::ZERO, 1000);
        // Off a millisecond boundary, where a zero-length tokio sleep would wait for the next.
        tokio::time::advance(Duration::from_micros(300)).await;
        let mut replies = Vec::new();
        for n in 0..2 {
            let (msg, reply) = record(n, 10);
            tx.send(msg).ok().unwrap();
            replies.push(reply);
        }
        let start = Instant::now();
        let first = acc.next_batch(&mut rx).await.unwrap();
        assert_eq!(values(&first), [0, 1], "everything already queued");
        assert_eq!(start.elapsed(), Duration::ZERO, "no linger: no wait");
        let (msg, _r2) = record(2, 10);
        tx.send(msg).ok().unwrap();
        let second = acc.next_batch(&mut rx).await.unwrap();
        assert_eq!(values(&second), [2]);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn records_arriving_during_linger_join_the_batch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut acc = Accumulator::new(Duration::from_millis(10), 1000);
        let (msg, _r0) = record(0, 10);
        tx.send(msg).ok().unwrap();
        let start = Instant::now();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(4)).await;
            let (msg, r1) = record(1, 10);
            tx.send(msg).ok().unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let (msg, r2) = record(2, 10);
            tx.send(msg).ok().unwrap();
            (tx, r1, r2)
        });
        let batch = acc.next_batch(&mut rx).await.unwrap();
        assert_eq!(values(&batch), [0, 1]);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(10),
            "linger counts from the first record"
        );
        let batch = acc.next_batch(&mut rx).await.unwrap();
        assert_eq!(values(&batch), [2]);
        assert_eq!(start.elapsed(), Duration::from_millis(34));
        let (tx, _r1, _r2) = late.await.unwrap();
        drop(tx);
        assert!(
            acc.next_batch(&mut rx).await.is_none(),
            "closed and drained"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_marker_ends_the_batch_without_linger() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut acc = Accumulator::new(Duration::from_secs(60), 1000);
        let (msg, _r0) = record(0, 10);
        tx.send(msg).ok().unwrap();
        let (marker, flushed) = oneshot::channel();
        tx.send(Msg::Flush(marker)).ok().unwrap();
        let (msg, _r1) = record(1, 10);
        tx.send(msg).ok().unwrap();
        let start = Instant::now();
        let batch = acc.next_batch(&mut rx).await.unwrap();
        assert_eq!(
            values(&batch),
            [0],
            "records after the marker are not in its batch"
        );
        assert_eq!(batch.flush.len(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
        batch.flush.into_iter().for_each(|m| m.send(()).unwrap());
        flushed.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn top_up_takes_waiting_records_and_stops_at_a_marker() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut acc = Accumulator::new(Duration::ZERO, 1000);
        let (msg, _r0) = record(0, 10);
        tx.send(msg).ok().unwrap();
        let mut batch = acc.next_batch(&mut rx).await.unwrap();
        assert_eq!(values(&batch), [0]);
        let (msg, _r1) = record(1, 10);
        tx.send(msg).ok().unwrap();
        let (marker, _flushed) = oneshot::channel();
        tx.send(Msg::Flush(marker)).ok().unwrap();
        let (msg, _r2) = record(2, 10);
        tx.send(msg).ok().unwrap();
        acc.top_up(&mut rx, &mut batch);
        assert_eq!(values(&batch), [0, 1]);
        let markers = acc.next_batch(&mut rx).await.unwrap();
        assert!(markers.records.is_empty() && markers.flush.len() == 1);
        assert_eq!(values(&acc.next_batch(&mut rx).await.unwrap()), [2]);
    }
}
