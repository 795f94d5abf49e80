//! The client's streaming watch (`watch?stream=true`): one request answered by one
//! [`WatchResponse`] per line as changes become durable, instead of one request per change
//! (issue 17: the request per change — its parse, signature check and response head on
//! both sides — was most of the server's work per watcher beyond one TLS write).
//!
//! A reader task reads the stream as fast as it comes into a [`Mirror`] of the changes
//! after the caller's position, so [`crate::Client::watch`] answers with every change
//! received so far, as a long-poll would, never a backlog of stale lines one at a time (a
//! caller busy elsewhere for seconds would otherwise wake on each old line in turn).

use crate::wire::{Change, WatchResponse};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Keep-alive interval asked of the server: a line without changes after at most this
/// long of silence, so a dead stream is told from a quiet cluster.
pub const IDLE: Duration = Duration::from_secs(30);
/// A stream silent for [`IDLE`] plus this long is taken for dead.
pub const SILENCE_GRACE: Duration = Duration::from_secs(10);
/// A line longer than this is refused (the change log's 20,000 changes encode to ~2 MB).
const MAX_LINE: usize = 16 << 20;
/// Changes a mirror keeps for a caller that does not come back; past it the oldest
/// callers' positions are given up (they long-poll, and the server says what is lost).
const MAX_KEPT: usize = 50_000;

/// One open stream: the response being read and what of it is not yet a whole line.
#[derive(Debug)]
pub struct OpenStream {
    response: reqwest::Response,
    lines: LineBuffer,
}

/// Why reading a line failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading the watch stream: {0}")]
    Read(#[from] reqwest::Error),
    #[error("a watch stream line is not a watch answer: {0}")]
    Line(#[from] serde_json::Error),
    #[error("a watch stream line is longer than {MAX_LINE} bytes")]
    TooLong,
}

impl OpenStream {
    /// A stream whose response head arrived.
    pub fn new(response: reqwest::Response) -> OpenStream {
        OpenStream {
            response,
            lines: LineBuffer::default(),
        }
    }

    /// The next line (`None`: the server ended the stream).
    async fn next(&mut self) -> Result<Option<WatchResponse>, StreamError> {
        loop {
            if let Some(line) = self.lines.take_line()? {
                return Ok(Some(serde_json::from_slice(&line)?));
            }
            match self.response.chunk().await? {
                Some(bytes) => self.lines.push(&bytes),
                None => return Ok(None),
            }
        }
    }
}

/// What a stream has told so far: the changes after `from` up to `revision`.
#[derive(Debug)]
struct Log {
    from: u64,
    revision: u64,
    changes: Vec<Change>,
    /// The stream ended, failed or went silent: no more will come.
    ended: bool,
}

/// What the mirror holds for a caller watching from `after`.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    /// Changes past `after` arrived: the answer, as a long-poll's.
    Answer(WatchResponse),
    /// Nothing past `after` yet: wait for the mirror's next revision.
    Wait,
    /// The mirror cannot answer (`after` is before what it kept, or it ended): ask the
    /// server.
    Unknown,
}

impl Log {
    /// Takes in one line of the stream.
    fn apply(&mut self, line: WatchResponse) {
        if line.compacted {
            // Changes were lost on the server's side (or the stream was opened from a
            // revision the service never reached: a new or restored one). What came
            // before still answers; past it callers ask the server, which tells each
            // of them it must re-read.
            self.ended = true;
            return;
        }
        self.changes.extend(line.changes);
        if self.changes.len() > MAX_KEPT {
            self.changes.clear();
            self.from = line.revision;
        }
        self.revision = self.revision.max(line.revision);
    }

    /// The answer for a caller from `after`; a caller at the oldest position kept moves
    /// it on (what it was answered is dropped).
    fn lookup(&mut self, after: u64) -> Lookup {
        if after < self.from {
            return Lookup::Unknown;
        }
        if self.revision <= after {
            return if self.ended {
                Lookup::Unknown
            } else {
                Lookup::Wait
            };
        }
        let changes: Vec<Change> = self
            .changes
            .iter()
            .filter(|c| c.revision > after)
            .cloned()
            .collect();
        if after == self.from {
            self.changes.clear();
            self.from = self.revision;
        }
        Lookup::Answer(WatchResponse {
            revision: self.revision,
            changes,
            compacted: false,
        })
    }
}

/// The changes a streaming watch has delivered, kept by its reader task; callers wait on
/// `revision`. Dropping the mirror stops the reader (and closes the stream).
#[derive(Debug)]
pub struct Mirror {
    log: Arc<Mutex<Log>>,
    revision: watch::Receiver<u64>,
    reader: JoinHandle<()>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Mirror {
    /// Starts reading `stream`, opened from `after`.
    pub fn start(stream: OpenStream, after: u64) -> Mirror {
        let log = Arc::new(Mutex::new(Log {
            from: after,
            revision: after,
            changes: Vec::new(),
            ended: false,
        }));
        let (tx, revision) = watch::channel(after);
        let reader = tokio::spawn(read(stream, log.clone(), tx));
        Mirror {
            log,
            revision,
            reader,
        }
    }

    /// Whether the reader stopped (the stream ended, failed or went silent).
    pub fn ended(&self) -> bool {
        lock(&self.log).ended
    }

    /// Every change after `after` once one has arrived, waiting until `deadline` (then an
    /// answer without changes); `None` when the mirror cannot answer it (ask the server).
    pub async fn watch(&self, after: u64, deadline: Instant) -> Option<WatchResponse> {
        let mut revision = self.revision.clone();
        loop {
            revision.borrow_and_update();
            match lock(&self.log).lookup(after) {
                Lookup::Answer(answer) => return Some(answer),
                Lookup::Unknown => return None,
                Lookup::Wait => {}
            }
            match tokio::time::timeout_at(deadline, revision.changed()).await {
                Ok(Ok(())) => {}
                // The reader is gone: what it left is looked up once more, then the server.
                Ok(Err(_)) => {
                    return match lock(&self.log).lookup(after) {
                        Lookup::Answer(answer) => Some(answer),
                        Lookup::Wait | Lookup::Unknown => None,
                    };
                }
                Err(_) => {
                    return Some(WatchResponse {
                        revision: after,
                        changes: Vec::new(),
                        compacted: false,
                    });
                }
            }
        }
    }
}

/// The reader task: every line into the log as it comes, until the stream ends, fails or
/// is silent past its keep-alive.
async fn read(mut stream: OpenStream, log: Arc<Mutex<Log>>, revision: watch::Sender<u64>) {
    loop {
        match tokio::time::timeout(IDLE + SILENCE_GRACE, stream.next()).await {
            Ok(Ok(Some(line))) => {
                let (now, ended) = {
                    let mut log = lock(&log);
                    log.apply(line);
                    (log.revision, log.ended)
                };
                if ended {
                    tracing::debug!("the watch stream says changes were lost");
                    // Wakes the waiters: they ask the server.
                    return;
                }
                revision.send_replace(now);
                continue;
            }
            Ok(Ok(None)) => tracing::debug!("the watch stream ended"),
            Ok(Err(e)) => tracing::debug!("{e}"),
            Err(_) => tracing::debug!("the watch stream went silent"),
        }
        lock(&log).ended = true;
        // Wakes the waiters (their `changed` fails): they ask the server.
        drop(revision);
        return;
    }
}

/// The log holds plain values; a panic elsewhere cannot leave it half-written.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes read so far, split into lines.
#[derive(Debug, Default)]
struct LineBuffer {
    buf: Vec<u8>,
}

impl LineBuffer {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The first whole line without its newline, when one has arrived (empty lines are
    /// skipped).
    fn take_line(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        loop {
            let Some(end) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_LINE {
                    return Err(StreamError::TooLong);
                }
                return Ok(None);
            };
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            line.pop();
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(line));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ChangeKind;

    #[test]
    fn lines_are_split_across_and_within_chunks() {
        let mut b = LineBuffer::default();
        b.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(b.take_line().unwrap().unwrap(), b"{\"a\":1}");
        assert!(b.take_line().unwrap().is_none());
        b.push(b":2}\n\n{\"c\":3}\n");
        assert_eq!(b.take_line().unwrap().unwrap(), b"{\"b\":2}");
        assert_eq!(b.take_line().unwrap().unwrap(), b"{\"c\":3}");
        assert!(b.take_line().unwrap().is_none());
    }

    #[test]
    fn a_line_without_end_past_the_limit_is_refused() {
        let mut b = LineBuffer::default();
        b.push(&vec![b'x'; MAX_LINE + 1]);
        assert!(matches!(b.take_line(), Err(StreamError::TooLong)));
    }

    fn log(from: u64) -> Log {
        Log {
            from,
            revision: from,
            changes: Vec::new(),
            ended: false,
        }
    }

    fn line(revisions: std::ops::RangeInclusive<u64>) -> WatchResponse {
        WatchResponse {
            revision: *revisions.end(),
            changes: revisions
                .map(|revision| Change {
                    revision,
                    kind: ChangeKind::RecordPut,
                    name: format!("r{revision}"),
                })
                .collect(),
            compacted: false,
        }
    }

    fn revisions(l: &Lookup) -> Vec<u64> {
        match l {
            Lookup::Answer(a) => a.changes.iter().map(|c| c.revision).collect(),
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn lines_that_came_while_the_caller_was_away_are_one_answer() {
        let mut l = log(10);
        assert_eq!(l.lookup(10), Lookup::Wait);
        l.apply(line(11..=11));
        l.apply(line(12..=13));
        l.apply(line(14..=14));
        let a = l.lookup(10);
        assert_eq!(revisions(&a), [11, 12, 13, 14]);
        assert!(matches!(
            a,
            Lookup::Answer(WatchResponse { revision: 14, .. })
        ));
        // The caller moved on: what it was answered is dropped, and it waits.
        assert_eq!((l.from, l.changes.len()), (14, 0));
        assert_eq!(l.lookup(14), Lookup::Wait);
    }

    #[test]
    fn a_caller_ahead_of_the_oldest_position_gets_what_follows_its_own() {
        let mut l = log(10);
        l.apply(line(11..=13));
        // From 12 (learned elsewhere): only 13; the log is kept for a caller at 10.
        assert_eq!(revisions(&l.lookup(12)), [13]);
        assert_eq!(revisions(&l.lookup(10)), [11, 12, 13]);
        // Behind what is kept: the server must answer.
        assert_eq!(l.lookup(9), Lookup::Unknown);
        // Ahead of what arrived: wait for it.
        assert_eq!(l.lookup(15), Lookup::Wait);
    }

    #[test]
    fn overflow_gives_up_older_positions() {
        let mut l = log(40);
        l.apply(line(41..=(41 + MAX_KEPT as u64)));
        assert_eq!(l.lookup(40), Lookup::Unknown);
        assert_eq!(l.lookup(l.revision), Lookup::Wait);
    }

    /// A compacted line (changes lost, or a stream from a revision the service never
    /// reached) ends the log: what came before it still answers, past it the server.
    #[test]
    fn a_compacted_line_ends_the_log() {
        let mut l = log(10);
        l.apply(line(11..=12));
        l.apply(WatchResponse {
            revision: 3,
            changes: Vec::new(),
            compacted: true,
        });
        assert!(l.ended);
        assert_eq!(l.lookup(12), Lookup::Unknown);
        assert_eq!(revisions(&l.lookup(10)), [11, 12]);
        assert_eq!(l.lookup(12), Lookup::Unknown);
        let mut ahead = log(1000);
        ahead.apply(WatchResponse {
            revision: 5,
            changes: Vec::new(),
            compacted: true,
        });
        assert_eq!(ahead.lookup(1000), Lookup::Unknown);
    }
}
