//! One child process of the program under test, with its output in a log file.
//!
//! The child gets stdout and stderr appended to one log file (a marker line before each start),
//! is killed by its own PID only, and is killed when this value is dropped (also on panic). On
//! Linux it also gets SIGKILL if the thread that started it exits (`PR_SET_PDEATHSIG`), so a
//! test process killed by a timeout leaves no controller behind: start children from the test's
//! own thread or a runtime worker, not from `spawn_blocking` (whose threads come and go).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// How to start the program, and the child while it runs.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    bin: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log_path: PathBuf,
    child: Option<Child>,
    /// Status of the last run once reaped.
    last_status: Option<ExitStatus>,
    starts: u32,
}

/// `DMQ_*` variables of the test's own environment must not configure the child.
fn inherited_dmq_vars() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k.to_string_lossy().starts_with("DMQ_"))
        .collect()
}

impl ChildProcess {
    pub fn new(
        name: impl Into<String>,
        bin: impl Into<PathBuf>,
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        log_path: impl Into<PathBuf>,
    ) -> ChildProcess {
        ChildProcess {
            name: name.into(),
            bin: bin.into(),
            args,
            env,
            log_path: log_path.into(),
            child: None,
            last_status: None,
            starts: 0,
        }
    }

    /// Starts the program (again). Panics if it is running.
    pub fn spawn(&mut self) -> io::Result<u32> {
        assert!(
            !self.is_running(),
            "{} is already running (pid {:?})",
            self.name,
            self.pid()
        );
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        writeln!(
            log,
            "===== harness: start #{} of {}: {} {} =====",
            self.starts,
            self.name,
            self.bin.display(),
            self.args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        )?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for k in inherited_dmq_vars() {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        die_with_parent_thread(&mut cmd);
        let child = cmd.spawn()?;
        let pid = child.id();
        self.child = Some(child);
        self.last_status = None;
        Ok(pid)
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

    /// Whether the child runs (reaping it if it exited by itself).
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none() && self.child.is_some()
    }

    /// The exit status if the child has exited (reaping it), else `None`.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            self.last_status = Some(st);
            self.child = None;
        }
        self.last_status
    }

    /// SIGKILL to exactly this PID, then reap it. Returns the exit status (`None` if it was not
    /// started).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            self.last_status = c.wait().ok();
        }
        self.last_status
    }

    /// Sends `sig` to exactly this PID (no-op if it does not run).
    pub fn signal(&mut self, sig: libc::c_int) -> io::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let pid = self.pid().expect("running") as libc::pid_t;
        // SAFETY: kill(2) has no memory-safety preconditions; the PID is our unreaped child, so it
        // cannot have been reused by another process.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit. On timeout the child is killed and an
    /// error says so.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if !self.is_running() {
            return self
                .last_status
                .ok_or_else(|| format!("{} was never started", self.name));
        }
        self.signal(libc::SIGTERM)
            .map_err(|e| format!("SIGTERM to {}: {e}", self.name))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exit_status() {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                let st = self.kill();
                return Err(format!(
                    "{} did not exit within {timeout:?} of SIGTERM; killed it ({st:?})",
                    self.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The tail of the log that a failed test prints: `DMQ_TEST_LOG_LINES` lines (default 200,
    /// 0 = all).
    pub fn log_tail_for_dump(&self) -> String {
        let lines = std::env::var("DMQ_TEST_LOG_LINES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        self.log_tail(lines)
    }

    /// The last `lines` lines of the log (all of it when `lines` is 0).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = match std::fs::read(&self.log_path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => return format!("(no log at {}: {e})", self.log_path.display()),
        };
        if lines == 0 {
            return text;
        }
        let all: Vec<&str> = text.lines().collect();
        let skip = all.len().saturating_sub(lines);
        let mut out = String::new();
        if skip > 0 {
            out.push_str(&format!(
                "... ({skip} earlier lines in {})\n",
                self.log_path.display()
            ));
        }
        for l in &all[skip..] {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(target_os = "linux")]
fn die_with_parent_thread(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent_thread(_cmd: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn sleeper(dir: &Path) -> ChildProcess {
        ChildProcess::new(
            "sleeper",
            "sleep",
            vec!["30".into()],
            vec![],
            dir.join("sleeper.log"),
        )
    }

    #[tokio::test]
    async fn terminate_kill_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sleeper(dir.path());
        let pid = p.spawn().unwrap();
        assert!(p.is_running());
        assert_eq!(p.pid(), Some(pid));
        let st = p.terminate(Duration::from_secs(5)).await.unwrap();
        assert_eq!(st.signal(), Some(libc::SIGTERM));
        assert!(!p.is_running());
        assert_eq!(p.exit_status(), Some(st));

        let pid2 = p.spawn().unwrap();
        assert_ne!(pid, pid2);
        p.signal(libc::SIGSTOP).unwrap();
        assert_eq!(p.kill().unwrap().signal(), Some(libc::SIGKILL));
        assert!(!p.is_running());
        let log = p.log_tail(0);
        assert!(
            log.contains("start #1 of sleeper") && log.contains("start #2"),
            "{log}"
        );
    }

    #[test]
    fn drop_kills_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sleeper(dir.path());
        let pid = p.spawn().unwrap() as libc::pid_t;
        drop(p);
        // Reaped, so the PID no longer exists.
        // SAFETY: signal 0 only checks for existence.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1);
    }
}
