//! Group commit: one writer thread takes every batch queued while the previous
//! transaction was syncing and makes them durable with a single fsync. Batches are
//! committed in the order they were queued, so a later write is never durable before an
//! earlier one it may depend on.

use super::store::{Batch, Store, StoreError};
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// At most this many batches share one transaction.
const MAX_GROUP: usize = 4096;

type Ack = oneshot::Sender<Result<(), StoreError>>;

#[derive(Debug, Clone)]
pub struct Committer {
    queue: mpsc::Sender<(Batch, Ack)>,
}

impl Committer {
    pub fn spawn(store: Arc<dyn Store>) -> Committer {
        let (queue, rx) = mpsc::channel::<(Batch, Ack)>();
        std::thread::Builder::new()
            .name("rdv-commit".into())
            .spawn(move || writer(store, rx))
            .map(drop)
            .unwrap_or_else(|e| tracing::error!("cannot start the commit thread: {e}"));
        Committer { queue }
    }

    /// Queues `batch`; the receiver resolves once it is durable (or failed). Call this
    /// while holding the cluster's lock so queue order is revision order.
    pub fn enqueue(&self, batch: Batch) -> oneshot::Receiver<Result<(), StoreError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::SendError((_, ack))) = self.queue.send((batch, tx)) {
            let _ = ack.send(Err(StoreError {
                backend: "committer".into(),
                message: "the commit thread is not running".into(),
            }));
        }
        rx
    }
}

fn writer(store: Arc<dyn Store>, rx: mpsc::Receiver<(Batch, Ack)>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (batches, acks): (Vec<Batch>, Vec<Ack>) = group.into_iter().unzip();
        let result = store.commit(&batches);
        if let Err(e) = &result {
            tracing::error!("commit of {} batch(es) failed: {e}", batches.len());
        }
        for ack in acks {
            // The requester may have gone away (client disconnected); nothing to tell.
            let _ = ack.send(result.clone());
        }
    }
}
