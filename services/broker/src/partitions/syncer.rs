//! [`Syncer`]: the broker's one group-commit task. Every append that must be durable before an
//! answer (acks=1 and acks=ALL produce, a follower's replicated batches before it reports its
//! new log end) asks it for a sync; requests that arrive while a sync runs are all served by the
//! next one, so appends from many requests and partitions share one fsync
//! ([`LogStore::sync`] covers the whole database).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::errors::DataError;
use crate::log::LogStore;
use crate::metrics;

/// Requests waiting for the syncer at most (senders wait beyond it).
const QUEUE_DEPTH: usize = 8192;

type Waiter = oneshot::Sender<Result<(), String>>;

/// A handle on the syncer task; clones share it. The task ends when every handle is dropped.
#[derive(Clone)]
pub(crate) struct Syncer {
    tx: mpsc::Sender<Waiter>,
    #[cfg_attr(not(test), allow(dead_code))]
    syncs: Arc<AtomicU64>,
}

impl Syncer {
    /// Starts the syncer of `store` (inside a tokio runtime).
    pub(crate) fn start(store: Arc<LogStore>) -> Syncer {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let syncs = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(store, rx, syncs.clone()));
        Syncer { tx, syncs }
    }

    /// Returns once every write to the store that completed before this call is durable.
    ///
    /// Errors: [`DataError::Storage`] when the sync failed (the store then refuses writes) or
    /// the syncer is gone (the broker is stopping).
    pub(crate) async fn sync(&self) -> Result<(), DataError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(reply)
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

async fn run(store: Arc<LogStore>, mut rx: mpsc::Receiver<Waiter>, syncs: Arc<AtomicU64>) {
    let mut waiters = Vec::new();
    while rx.recv_many(&mut waiters, QUEUE_DEPTH).await > 0 {
        let store = store.clone();
        let started = Instant::now();
        // Every waiter's writes completed before it queued, so before this sync starts.
        let result = match tokio::task::spawn_blocking(move || store.sync()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the sync task failed: {e}")),
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

    #[tokio::test(flavor = "current_thread")]
    async fn one_sync_serves_many_appends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LogStore::open(dir.path()).unwrap());
        let syncer = Syncer::start(store.clone());
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
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let syncs = syncer.syncs();
        assert!(
            (1..=2).contains(&syncs),
            "40 appends took {syncs} syncs; they should share one"
        );
        // A later request still gets its own sync.
        syncer.sync().await.unwrap();
        assert_eq!(syncer.syncs(), syncs + 1);
    }
}
