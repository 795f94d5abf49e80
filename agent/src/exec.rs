//! Running commands: a `CommandRunner` trait, the real runner on tokio::process and a
//! scripted fake for tests. Invoking is kept apart from parsing (see `distro::parse`).

use std::path::PathBuf;
#[cfg(any(test, feature = "testkit"))]
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` exited with {status}: {stderr_tail}")]
    Failed {
        command: String,
        status: i32,
        stderr_tail: String,
        /// The whole of its stderr (stdout when stderr is empty), for the parsers that
        /// find the distribution's reason in it (`distro::parse`); not in the message.
        output: String,
    },
}

#[allow(
    async_fn_in_trait,
    reason = "driven from one task; no Send bound needed"
)]
pub trait CommandRunner {
    /// Runs `program args`; returns its output whatever the exit status.
    async fn run(&self, program: &str, args: &[&str]) -> Result<Output, ExecError>;

    /// Runs and fails on a non-zero exit, naming the command (`redact` hides secret args).
    async fn run_ok(&self, program: &str, args: &[&str]) -> Result<Output, ExecError> {
        let out = self.run(program, args).await?;
        if out.status != 0 {
            return Err(ExecError::Failed {
                command: display_command(program, args),
                status: out.status,
                stderr_tail: tail(&out.stderr, 400),
                output: if out.stderr.trim().is_empty() {
                    out.stdout
                } else {
                    out.stderr
                },
            });
        }
        Ok(out)
    }
}

/// The command line as logged: values following `--certificate-key`/`--token` are hidden.
pub fn display_command(program: &str, args: &[&str]) -> String {
    let mut out = program.to_string();
    let mut hide = false;
    for a in args {
        out.push(' ');
        if hide {
            out.push_str("<redacted>");
        } else {
            out.push_str(a);
        }
        hide = matches!(*a, "--certificate-key" | "--token");
    }
    out
}

fn tail(s: &str, n: usize) -> String {
    let s = s.trim();
    if s.len() <= n {
        return s.to_string();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// Runs commands for real. `path_prefix` lets a lab put stand-in programs first on PATH.
#[derive(Debug, Clone, Default)]
pub struct RealRunner {
    pub path_prefix: Option<PathBuf>,
}

impl CommandRunner for RealRunner {
    async fn run(&self, program: &str, args: &[&str]) -> Result<Output, ExecError> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).kill_on_drop(true);
        if let Some(prefix) = &self.path_prefix {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", prefix.display()));
        }
        tracing::debug!(command = %display_command(program, args), "running");
        let out = cmd.output().await.map_err(|source| ExecError::Spawn {
            program: program.to_string(),
            source,
        })?;
        Ok(Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[cfg(any(test, feature = "testkit"))]
/// A scripted runner: answers by the first matching prefix of the command line and records
/// every call, for tests of the distro implementations.
#[derive(Debug, Clone, Default)]
pub struct FakeRunner {
    inner: Arc<Mutex<FakeInner>>,
}

#[cfg(any(test, feature = "testkit"))]
#[derive(Debug, Default)]
struct FakeInner {
    rules: Vec<(String, Output)>,
    calls: Vec<String>,
}

#[cfg(any(test, feature = "testkit"))]
impl FakeRunner {
    pub fn new() -> Self {
        FakeRunner::default()
    }

    /// Commands starting with `prefix` (program and args joined by spaces) get `output`.
    pub fn on(&self, prefix: &str, status: i32, stdout: &str) -> &Self {
        if let Ok(mut g) = self.inner.lock() {
            g.rules.push((
                prefix.to_string(),
                Output {
                    status,
                    stdout: stdout.to_string(),
                    stderr: if status == 0 {
                        String::new()
                    } else {
                        format!("{prefix}: failed")
                    },
                },
            ));
        }
        self
    }

    pub fn calls(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|g| g.calls.clone())
            .unwrap_or_default()
    }
}

#[cfg(any(test, feature = "testkit"))]
impl CommandRunner for FakeRunner {
    async fn run(&self, program: &str, args: &[&str]) -> Result<Output, ExecError> {
        let line = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let mut g = self.inner.lock().map_err(|_| ExecError::Spawn {
            program: program.to_string(),
            source: std::io::Error::other("fake runner poisoned"),
        })?;
        g.calls.push(line.clone());
        let found = g
            .rules
            .iter()
            .find(|(p, _)| line.starts_with(p.as_str()))
            .map(|(_, o)| o.clone());
        Ok(found.unwrap_or(Output {
            status: 127,
            stdout: String::new(),
            stderr: format!("{program}: not scripted"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let s = display_command(
            "kubeadm",
            &["init", "phase", "upload-certs", "--certificate-key", "abc"],
        );
        assert_eq!(
            s,
            "kubeadm init phase upload-certs --certificate-key <redacted>"
        );
    }

    #[tokio::test]
    async fn fake_answers_by_prefix_and_fails_named() {
        let f = FakeRunner::new();
        f.on("kubeadm reset", 0, "ok");
        assert_eq!(
            f.run("kubeadm", &["reset", "-f"]).await.unwrap().stdout,
            "ok"
        );
        let e = f.run_ok("kubeadm", &["join"]).await.unwrap_err();
        assert!(e.to_string().contains("kubeadm join"), "{e}");
        assert_eq!(f.calls(), vec!["kubeadm reset -f", "kubeadm join"]);
    }

    #[tokio::test]
    async fn real_runner_reports_status() {
        let r = RealRunner::default();
        let out = r.run("sh", &["-c", "echo hi; exit 3"]).await.unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout.trim(), "hi");
    }
}
