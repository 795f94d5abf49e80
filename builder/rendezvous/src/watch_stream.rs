//! A streaming watch's state between its lines (`watch?stream=true`,
//! `docs/rendezvous-protocol.md#watch`). Subscribed once for the stream's life, with a
//! keep-alive tick that is not re-armed per line: a line costs the wake-up, the shared
//! encoding's lookup and the write, not a timer and two subscriptions as a long-poll does
//! (issue 17: 10,000 watchers answered per change).

use crate::service::{ClusterCell, Service};
use axum::body::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// One stream's position and subscription.
#[derive(Debug)]
pub struct LineWatch {
    svc: Service,
    cell: Arc<ClusterCell>,
    /// The durable revision; a shutdown wakes it too ([`Service::begin_shutdown`]).
    committed: watch::Receiver<u64>,
    /// Ticks every half keep-alive interval: a tick after a tick with no line between
    /// sends a line without changes, so the stream is never silent longer than `idle`.
    tick: Interval,
    sent_since_tick: bool,
    /// The revision the last line reached: the next has the changes after it.
    after: u64,
    ends: Instant,
}

impl LineWatch {
    /// A stream of `cell`'s changes after `after`, a keep-alive line after `idle` of
    /// silence, ending after `lifetime`.
    pub fn new(
        svc: &Service,
        cell: Arc<ClusterCell>,
        after: u64,
        idle: Duration,
        lifetime: Duration,
    ) -> LineWatch {
        let half = idle / 2;
        let mut tick = tokio::time::interval_at(Instant::now() + half, half);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        LineWatch {
            svc: svc.clone(),
            committed: cell.subscribe(),
            cell,
            tick,
            sent_since_tick: false,
            after,
            ends: Instant::now() + lifetime,
        }
    }

    /// The next line: the changes after the last line's revision up to the durable one,
    /// or a keep-alive; `None` when the stream ends (its lifetime, or shutdown).
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            let revision = *self.committed.borrow_and_update();
            if revision != self.after {
                let json = self.cell.answer(self.after, revision);
                self.cell.answered(revision);
                self.after = revision;
                self.sent_since_tick = true;
                return Some(json);
            }
            if self.svc.shutting_down() {
                return None;
            }
            // The change first: a line then costs its one subscription, not a poll of the
            // tick as well.
            tokio::select! {
                biased;
                changed = self.committed.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.tick.tick() => {
                    if Instant::now() >= self.ends {
                        return None;
                    }
                    if !std::mem::take(&mut self.sent_since_tick) {
                        return Some(self.cell.answer(self.after, self.after));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use crate::service::tests::{CLUSTER, put, service};
    use protocol::WatchResponse;
    use std::time::Instant as StdInstant;

    fn decode(line: &Bytes) -> WatchResponse {
        assert_eq!(line.last(), Some(&b'\n'), "a line ends with its newline");
        serde_json::from_slice(line).unwrap()
    }

    fn names(w: &WatchResponse) -> Vec<&str> {
        w.changes.iter().map(|c| c.name.as_str()).collect()
    }

    #[tokio::test]
    async fn each_change_once_what_a_slow_reader_missed_in_one_line_and_keepalives() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), Limits::default());
        let cell = svc.cluster(CLUSTER).unwrap();
        let a = put(&cell, &svc, "a").await;
        let idle = Duration::from_millis(200);
        let mut lines = LineWatch::new(&svc, cell.clone(), 0, idle, Duration::from_secs(60));
        let first = decode(&lines.next().await.unwrap());
        assert_eq!((first.revision, names(&first)), (a, vec!["a"]));
        // Two changes while the reader is away: one line with both, in order.
        put(&cell, &svc, "b").await;
        let c = put(&cell, &svc, "c").await;
        let both = decode(&lines.next().await.unwrap());
        assert_eq!((both.revision, names(&both)), (c, vec!["b", "c"]));
        // Quiet: keep-alives (no changes, the same revision), between half the interval
        // and the interval apart.
        for _ in 0..3 {
            let quiet = StdInstant::now();
            let keepalive = decode(&lines.next().await.unwrap());
            let silent = quiet.elapsed();
            assert_eq!((keepalive.revision, keepalive.changes.len()), (c, 0));
            assert!(!keepalive.compacted);
            assert!(silent >= idle / 2 - Duration::from_millis(20), "{silent:?}");
            assert!(silent <= idle + Duration::from_millis(150), "{silent:?}");
        }
        // The stream goes on past keep-alives.
        let d = put(&cell, &svc, "d").await;
        let next = decode(&lines.next().await.unwrap());
        assert_eq!((next.revision, names(&next)), (d, vec!["d"]));
    }

    #[tokio::test]
    async fn the_stream_ends_at_shutdown_and_after_its_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), Limits::default());
        let cell = svc.cluster(CLUSTER).unwrap();
        let a = put(&cell, &svc, "a").await;
        let idle = Duration::from_millis(100);
        let started = StdInstant::now();
        let mut short = LineWatch::new(&svc, cell.clone(), a, idle, Duration::from_millis(300));
        let mut keepalives = 0;
        while let Some(line) = short.next().await {
            assert_eq!(decode(&line).revision, a);
            keepalives += 1;
        }
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(keepalives >= 2, "{keepalives} keep-alives before the end");

        // Keep-alives a minute apart: only the shutdown's wake-up ends it within 5 s.
        let mut long = LineWatch::new(
            &svc,
            cell.clone(),
            a,
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        let waiting = tokio::spawn(async move {
            let mut lines = 0;
            while long.next().await.is_some() {
                lines += 1;
            }
            lines
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        svc.begin_shutdown();
        let ended = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(ended.is_ok(), "the stream did not end at shutdown");
    }
}
