//! Running the external tools of an image build (debootstrap, chroot, mkfs.ext4, qemu-img)
//! as named steps: output is kept (the tail goes into the error), and a long step shows a
//! heartbeat with its elapsed time and latest output line.

use super::ImageError;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TAIL_LINES: usize = 25;
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Runs `cmd` to completion as part of `step`; returns its standard output.
pub fn run(step: &str, cmd: &mut Command) -> Result<String, ImageError> {
    let command = describe(cmd);
    tracing::debug!(step, %command, "running");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ImageError::Spawn {
            step: step.to_string(),
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let stdout_text = Arc::new(Mutex::new(String::new()));
    let readers = [
        child
            .stdout
            .take()
            .map(|s| collect(s, tail.clone(), Some(stdout_text.clone()))),
        child.stderr.take().map(|s| collect(s, tail.clone(), None)),
    ];
    let started = Instant::now();
    let mut last_beat = started;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(ImageError::Spawn {
                    step: step.to_string(),
                    program: command,
                    source,
                });
            }
        }
        if last_beat.elapsed() >= HEARTBEAT {
            last_beat = Instant::now();
            let latest = lock(&tail).back().cloned().unwrap_or_default();
            eprintln!(
                "      … {:>4.0}s  {latest}",
                started.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for reader in readers.into_iter().flatten() {
        // A reader thread only ends when its pipe closes; a panic there lost output only.
        let _ = reader.join();
    }
    if !status.success() {
        let tail = lock(&tail).iter().cloned().collect::<Vec<_>>().join("\n");
        return Err(ImageError::Failed {
            step: step.to_string(),
            command,
            status: status.to_string(),
            tail,
        });
    }
    let out = std::mem::take(&mut *lock(&stdout_text));
    Ok(out)
}

fn collect(
    stream: impl Read + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
    whole: Option<Arc<Mutex<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(whole) = &whole {
                let mut w = lock(whole);
                w.push_str(&line);
                w.push('\n');
            }
            let mut t = lock(&tail);
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    })
}

/// A poisoned lock only means a reader thread panicked mid-push; the text is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `program arg arg …`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Step names, their elapsed time, and the total, on stderr; kept for the JSON report.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    total: usize,
    done: usize,
    pub timings: Vec<super::StepTiming>,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Progress {
            started: Instant::now(),
            total,
            done: 0,
            timings: Vec::new(),
        }
    }

    /// Runs one step, printing its name before and its elapsed time after.
    pub fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        self.done += 1;
        eprintln!("==> [{}/{}] {name}", self.done, self.total);
        let t = Instant::now();
        let out = f();
        let seconds = t.elapsed().as_secs_f64();
        match &out {
            Ok(_) => eprintln!(
                "    done in {seconds:.1}s (total {:.1}s)",
                self.started.elapsed().as_secs_f64()
            ),
            Err(_) => eprintln!("    FAILED after {seconds:.1}s"),
        }
        self.timings.push(super::StepTiming {
            step: name.to_string(),
            seconds: round1(seconds),
        });
        out
    }

    pub fn elapsed(&self) -> f64 {
        round1(self.started.elapsed().as_secs_f64())
    }
}

pub fn round1(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}
