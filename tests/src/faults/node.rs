//! One node process inside its network namespace.
//!
//! The child joins the namespace itself, between fork and exec (`setns(fd, CLONE_NEWNET)` in a
//! `pre_exec` hook), rather than through `ip netns exec`: the PID we hold is the `dmq` process
//! itself (no wrapper to signal through), and it shares the harness's mount namespace, so the
//! loop mounts it writes to are the ones the harness shuts down and remounts.
//!
//! Like [`ChildProcess`](crate::ChildProcess): stdout and stderr append to one log file with a
//! marker line per start, signals go to exactly our PID, the child gets SIGKILL if the thread
//! that started it exits (`PR_SET_PDEATHSIG`), and dropping the value kills it. It runs in
//! its own process group, so terminal signals (Ctrl-C) go to the harness only.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// What a node process is doing, as far as the harness made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Not started, or stopped by the harness (kill, power loss, SIGTERM).
    Down,
    Running,
    /// SIGSTOPped by the harness.
    Paused,
}

#[derive(Debug)]
pub struct NodeProcess {
    name: String,
    netns: PathBuf,
    bin: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log_path: PathBuf,
    child: Option<Child>,
    state: RunState,
    starts: u32,
}

impl NodeProcess {
    pub fn new(
        name: impl Into<String>,
        netns: impl Into<PathBuf>,
        bin: impl Into<PathBuf>,
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        log_path: impl Into<PathBuf>,
    ) -> NodeProcess {
        NodeProcess {
            name: name.into(),
            netns: netns.into(),
            bin: bin.into(),
            args,
            env,
            log_path: log_path.into(),
            child: None,
            state: RunState::Down,
            starts: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn state(&self) -> RunState {
        self.state
    }

    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Starts the process in its namespace. Errors if it runs.
    pub fn spawn(&mut self) -> io::Result<u32> {
        if self.child.is_some() {
            return Err(io::Error::other(format!(
                "{} is already running",
                self.name
            )));
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        writeln!(
            log,
            "===== dmq-faults: start #{} of {} in {} =====",
            self.starts,
            self.name,
            self.netns.display()
        )?;
        let ns = File::open(&self.netns)?;
        let ns_fd = ns.as_raw_fd();
        let parent = std::process::id() as libc::pid_t;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("DMQ_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
        // system calls; `ns` outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Its own process group: a Ctrl-C in the terminal reaches the harness, which
                // cleans up, not the servers (which would stop and look like crashes).
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(ns);
        let pid = child.id();
        self.child = Some(child);
        self.state = RunState::Running;
        Ok(pid)
    }

    /// The exit status if the process exited by itself (reaping it); `None` while it runs or
    /// when it is not started.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                self.state = RunState::Down;
                Some(status)
            }
            _ => None,
        }
    }

    /// SIGKILL to exactly our PID, then reap it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        self.state = RunState::Down;
        child.wait().ok()
    }

    /// Sends `sig` to our PID (no-op when not running).
    pub fn signal(&mut self, sig: libc::c_int) -> io::Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the PID is our unreaped child.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
        match sig {
            libc::SIGSTOP => self.state = RunState::Paused,
            libc::SIGCONT => self.state = RunState::Running,
            _ => {}
        }
        Ok(())
    }

    /// SIGTERM, then waits (polling) up to `timeout` for the exit; kills it after that.
    /// Returns the exit status and whether it exited by itself.
    /// `None` at once when it is not running.
    pub async fn terminate(&mut self, timeout: std::time::Duration) -> Option<(ExitStatus, bool)> {
        self.child.as_ref()?;
        if self.state == RunState::Paused {
            let _ = self.signal(libc::SIGCONT);
        }
        self.signal(libc::SIGTERM).ok()?;
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some((status, true));
            }
            if tokio::time::Instant::now() >= until {
                return self.kill().map(|s| (s, false));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = match std::fs::read(&self.log_path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => return format!("(no log at {}: {e})", self.log_path.display()),
        };
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if self.state == RunState::Paused {
            let _ = self.signal(libc::SIGCONT);
        }
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that is not running is terminated at once, not after the whole timeout
    /// (a compound fault may SIGTERM a node an earlier step killed).
    #[tokio::test]
    async fn terminating_a_stopped_process_returns_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = NodeProcess::new(
            "sleeper",
            "/proc/self/ns/net",
            "sleep",
            vec!["30".into()],
            vec![],
            dir.path().join("sleeper.log"),
        );
        let t = tokio::time::Instant::now();
        assert!(
            p.terminate(std::time::Duration::from_secs(5))
                .await
                .is_none()
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }
}
