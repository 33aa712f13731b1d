//! [`Syncer`]: the broker's one group-commit thread. Every append that must be durable before
//! an answer (acks=1 and acks=ALL produce, a follower's replicated batches before it reports
//! its new log end) asks it for a sync; requests that arrive while a sync runs are all served
//! by the next one, so appends from many requests and partitions share one fsync
//! ([`LogStore::sync`] covers the whole database).
//!
//! It is an OS thread rather than a task that hands each sync to the blocking pool: a request
//! then costs one wakeup each way. A follower also hands it the append itself
//! ([`Syncer::write_then_sync`]), so replicated batches are written and synced in one trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::BrokerConfig;
use crate::errors::DataError;
use crate::log::LogStore;
use crate::metrics;

/// Requests waiting for the syncer at most (senders wait beyond it).
const QUEUE_DEPTH: usize = 8192;

type Waiter = oneshot::Sender<Result<(), String>>;

/// A write to run on the syncer thread right before the sync that covers it.
type Write = Box<dyn FnOnce() + Send>;

struct Request {
    write: Option<Write>,
    waiter: Waiter,
}

/// A handle on the syncer thread; clones share it. The thread ends when every handle is
/// dropped.
#[derive(Clone)]
pub(crate) struct Syncer {
    tx: mpsc::Sender<Request>,
    #[cfg_attr(not(test), allow(dead_code))]
    syncs: Arc<AtomicU64>,
}

impl Syncer {
    /// Starts the syncer thread of `store`.
    ///
    /// Errors: the OS refused a new thread.
    pub(crate) fn start(store: Arc<LogStore>, cfg: &BrokerConfig) -> std::io::Result<Syncer> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let syncs = Arc::new(AtomicU64::new(0));
        let counter = syncs.clone();
        #[cfg(any(test, feature = "fault-injection"))]
        let faults = cfg.faults.clone();
        #[cfg(not(any(test, feature = "fault-injection")))]
        let _ = cfg;
        std::thread::Builder::new()
            .name("log-syncer".into())
            .spawn(move || {
                run(
                    store,
                    rx,
                    counter,
                    #[cfg(any(test, feature = "fault-injection"))]
                    faults,
                )
            })?;
        Ok(Syncer { tx, syncs })
    }

    /// Returns once every write to the store that completed before this call is durable.
    ///
    /// Errors: [`DataError::Storage`] when the sync failed (the store then refuses writes) or
    /// the syncer is gone (the broker is stopping).
    pub(crate) async fn sync(&self) -> Result<(), DataError> {
        self.request(None).await
    }

    /// Runs `write` on the syncer thread and returns its result once everything it wrote is
    /// durable, even when it failed part way (what it wrote before failing is synced too).
    ///
    /// Errors: the outer one as for [`sync`](Self::sync); the inner one is the write's own (a
    /// write that panicked reports [`DataError::Storage`]).
    pub(crate) async fn write_then_sync<T: Send + 'static>(
        &self,
        write: impl FnOnce() -> Result<T, DataError> + Send + 'static,
    ) -> Result<Result<T, DataError>, DataError> {
        let (result_tx, result_rx) = oneshot::channel();
        let job: Write = Box::new(move || {
            let _ = result_tx.send(write());
        });
        self.request(Some(job)).await?;
        Ok(result_rx
            .await
            .unwrap_or_else(|_| Err(DataError::Storage("the log write panicked".into()))))
    }

    async fn request(&self, write: Option<Write>) -> Result<(), DataError> {
        let (waiter, answer) = oneshot::channel();
        self.tx
            .send(Request { write, waiter })
            .await
            .map_err(|_| DataError::Storage("the syncer stopped".into()))?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DataError::Storage(e)),
            Err(_) => Err(DataError::Storage("the syncer stopped".into())),
        }
    }

    /// How many syncs ran so far.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

fn run(
    store: Arc<LogStore>,
    mut rx: mpsc::Receiver<Request>,
    syncs: Arc<AtomicU64>,
    #[cfg(any(test, feature = "fault-injection"))] faults: crate::FaultPoints,
) {
    let mut requests = Vec::new();
    let mut waiters = Vec::new();
    while rx.blocking_recv_many(&mut requests, QUEUE_DEPTH) > 0 {
        for request in requests.drain(..) {
            if let Some(write) = request.write {
                // A panicking write drops its result sender: its caller gets an error, and the
                // thread goes on serving the others.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(write));
            }
            waiters.push(request.waiter);
        }
        let started = Instant::now();
        #[cfg(any(test, feature = "fault-injection"))]
        if faults.fails("log.sync") {
            store.inject_failure();
        }
        // Every waiter's writes completed before it queued or just above, so before this sync.
        // A panic fails this round's waiters like a failed sync, rather than ending the thread
        // and with it every later sync.
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.sync())) {
            Ok(synced) => synced.map_err(|e| e.to_string()),
            Err(_) => {
                // What the sync made durable is unknown, as after a failed fdatasync.
                let why = "the log store sync panicked".to_string();
                store.mark_failed(why.clone());
                Err(why)
            }
        };
        syncs.fetch_add(1, Ordering::Relaxed);
        metrics::log_synced(waiters.len(), started.elapsed());
        if let Err(e) = &result {
            tracing::error!(error = %e, "log store sync failed");
        }
        for waiter in waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Record;

    fn test_config() -> BrokerConfig {
        BrokerConfig::new(
            1,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:1",
            vec!["127.0.0.1:2".into()],
            "/unused",
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn requests_queued_during_a_sync_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LogStore::open(dir.path()).unwrap());
        let syncer = Syncer::start(store.clone(), &test_config()).unwrap();
        // Hold the thread inside a write so the requests below queue behind it.
        let (entered_tx, entered_rx) = oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let syncer = syncer.clone();
            async move {
                syncer
                    .write_then_sync(move || {
                        let _ = entered_tx.send(());
                        let _ = release_rx.recv();
                        Ok(())
                    })
                    .await
            }
        });
        entered_rx.await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..40u32 {
            let log = store.partition("t", 1, i % 4).unwrap();
            let syncer = syncer.clone();
            tasks.push(tokio::spawn(async move {
                log.append_as_leader(vec![Record::new(format!("r{i}"))], 0, 1)
                    .unwrap();
                syncer.sync().await
            }));
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while syncer.tx.max_capacity() - syncer.tx.capacity() < 40 {
            assert!(Instant::now() < deadline, "the 40 requests never queued");
            tokio::task::yield_now().await;
        }
        release_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap().unwrap();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            syncer.syncs(),
            2,
            "one sync for the held write, one shared by the 40 appends queued meanwhile"
        );
        // A later request still gets its own sync.
        syncer.sync().await.unwrap();
        assert_eq!(syncer.syncs(), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_write_runs_on_the_thread_and_is_synced_with_its_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LogStore::open(dir.path()).unwrap());
        let syncer = Syncer::start(store.clone(), &test_config()).unwrap();
        let log = store.partition("t", 1, 0).unwrap();
        let writer = log.clone();
        let info = syncer
            .write_then_sync(move || Ok(writer.append_as_leader(vec![Record::new("a")], 0, 1)?))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 0));
        assert_eq!(syncer.syncs(), 1, "the write was synced before the answer");
        assert_eq!(log.log_end_offset(), 1);

        let refused = syncer
            .write_then_sync(|| Err::<(), _>(DataError::InvalidRequest("no".into())))
            .await
            .expect("the sync itself succeeded");
        assert!(matches!(refused, Err(DataError::InvalidRequest(_))));

        let panicked = syncer
            .write_then_sync(|| -> Result<(), DataError> { panic!("a bug in a write") })
            .await
            .expect("the sync itself succeeded");
        assert!(matches!(panicked, Err(DataError::Storage(_))));
        syncer.sync().await.expect("the thread survived the panic");
    }
}
