//! WatchMetadata: the leader streams every metadata change to a watcher as it is applied
//! (controller.proto). A watcher names the version it holds; it gets the deltas after it from
//! the store's [`ChangeFeed`](crate::metadata::ChangeFeed), or a whole image when those are no
//! longer kept. The stream ends with NOT_LEADER as soon as this node stops leading the term it
//! was opened in (the watcher then follows the new leader).

use std::pin::Pin;
use std::sync::Arc;

use dmq_proto::v1::watch_metadata_response::Event;
use dmq_proto::v1::{GetMetadataResponse, WatchMetadataRequest, WatchMetadataResponse};
use dmq_raft::Role;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::consensus::Consensus;
use super::status::node_error_status;
use crate::metadata::{MetadataStore, Since};

/// Responses queued ahead of a slow watcher (then the stream waits; changes pile up in the
/// feed, bounded there, and a watcher that falls behind it gets an image).
const WATCH_QUEUE: usize = 16;

/// The stream WatchMetadata answers with.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchMetadataResponse, Status>> + Send>>;

/// How a watch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WatchEnd {
    /// The watcher went away: its connection closed (a dead process) or it hung up.
    WatcherGone,
    /// This node ended it (it stopped leading the term, or it is stopping).
    Ended,
}

/// Opens a watch for `request` on a leader of `term`. Returns the stream and the task that
/// feeds it, which ends with how the watch ended.
pub(super) fn open<N: Consensus>(
    node: N,
    store: Arc<MetadataStore>,
    term: u64,
    request: WatchMetadataRequest,
) -> (WatchStream, tokio::task::JoinHandle<WatchEnd>) {
    let (tx, rx) = mpsc::channel(WATCH_QUEUE);
    let task = tokio::spawn(async move {
        match stream(&node, &store, term, request.from_version, &tx).await {
            Ok(end) => end,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                WatchEnd::Ended
            }
        }
    });
    (Box::pin(ReceiverStream::new(rx)), task)
}

async fn stream<N: Consensus>(
    node: &N,
    store: &MetadataStore,
    term: u64,
    mut from: u64,
    tx: &mpsc::Sender<Result<WatchMetadataResponse, Status>>,
) -> Result<WatchEnd, Status> {
    let mut changes = store.feed().subscribe();
    let mut status = node.watch_status();
    loop {
        changes.borrow_and_update();
        let (role, now_term, id) = {
            let s = status.borrow_and_update();
            (s.role, s.term, s.id)
        };
        if role != Role::Leader || now_term != term {
            return Err(node_error_status(&node.not_leader()));
        }
        let events = match store.feed().since(from) {
            Since::UpToDate => Vec::new(),
            Since::Changes(changes) => changes
                .into_iter()
                .map(|c| Event::Delta(c.as_ref().clone()))
                .collect(),
            Since::TooOld => {
                let (version, brokers, topics) = store.get_metadata();
                vec![Event::Image(GetMetadataResponse {
                    metadata_version: version,
                    brokers,
                    topics,
                    term,
                    leader_id: id,
                })]
            }
        };
        for event in events {
            from = match &event {
                Event::Image(i) => i.metadata_version,
                Event::Delta(d) => d.version,
            };
            let response = WatchMetadataResponse {
                event: Some(event),
                term,
            };
            if tx.send(Ok(response)).await.is_err() {
                return Ok(WatchEnd::WatcherGone);
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Ok(WatchEnd::Ended) },
            changed = status.changed() => if changed.is_err() { return Ok(WatchEnd::Ended) },
            _ = tx.closed() => return Ok(WatchEnd::WatcherGone),
        }
    }
}
