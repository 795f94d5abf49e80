//! Group commit: one writer task takes every batch queued while the previous
//! transaction was syncing and makes them durable with a single fsync (on the blocking
//! pool, which also keeps tokio's paused test clock from jumping during a commit).
//! Batches are committed in the order they were queued, so a later write is never
//! durable before an earlier one it may depend on.

use crate::store::{Batch, Store, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// At most this many batches share one transaction.
const MAX_GROUP: usize = 4096;

type Ack = oneshot::Sender<Result<(), StoreError>>;

#[derive(Debug, Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<(Batch, Ack)>,
}

impl Committer {
    /// Starts the writer task; call from within a tokio runtime.
    pub fn spawn(store: Arc<dyn Store>) -> Committer {
        let (queue, rx) = mpsc::unbounded_channel::<(Batch, Ack)>();
        tokio::spawn(writer(store, rx));
        Committer { queue }
    }

    /// Queues `batch`; the receiver resolves once it is durable (or failed). Call this
    /// while holding the cluster's lock so queue order is revision order.
    pub fn enqueue(&self, batch: Batch) -> oneshot::Receiver<Result<(), StoreError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, ack))) = self.queue.send((batch, tx)) {
            let _ = ack.send(Err(StoreError {
                backend: "committer".into(),
                message: "the commit task is not running".into(),
            }));
        }
        rx
    }
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<(Batch, Ack)>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (batches, acks): (Vec<Batch>, Vec<Ack>) = group.into_iter().unzip();
        let store = store.clone();
        let count = batches.len();
        let result = tokio::task::spawn_blocking(move || store.commit(&batches))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError {
                    backend: "committer".into(),
                    message: format!("commit task failed: {e}"),
                })
            });
        if let Err(e) = &result {
            tracing::error!("commit of {count} batch(es) failed: {e}");
        }
        for ack in acks {
            // The requester may have gone away (client disconnected); nothing to tell.
            let _ = ack.send(result.clone());
        }
    }
}
