//! What must hold before a run (root, `ip netns`, loop devices, the lock), and removing
//! everything a run made: at the start (leftovers of an earlier run with the same prefix that
//! crashed or was killed) and at the end (success, failure, Ctrl-C or panic).
//!
//! Removal finds its objects rather than remembering them, so a crashed run's leftovers and
//! this run's are removed the same way: processes are those in this prefix's namespaces (`ip
//! netns pids`, killed by PID: whatever is in our namespace is ours), mounts are those under
//! the work dir (`/proc/self/mountinfo`), loop devices are those backed by a file under it
//! (`/sys/block/loop*/loop/backing_file`), namespaces are the exact names of the
//! [`Layout`].
//!
//! # To ensure correctness
//! A lock file per prefix (`flock`, held for the whole run) keeps a second run with the same
//! prefix from "cleaning up" a live one: it fails with exit status 2 instead.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::disk::{detach_loop, loop_devices_under, mounts_under, umount_path};
use super::layout::Layout;
use super::net::ip;

/// A reason the suite cannot run here (exit status 2).
#[derive(Debug)]
pub struct Unsupported(pub String);

/// Root, `ip netns`, the disk tools, loop devices, and the program under test.
pub fn check_environment(layout: &Layout, bin: &Path) -> Result<(), Unsupported> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Unsupported(
            "dmq-faults must run as root: it creates network namespaces, loop devices and \
             mounts (try `sudo tests/faults/run.sh`)"
                .into(),
        ));
    }
    for (tool, args) in [
        ("ip", &["-V"][..]),
        ("losetup", &["--version"][..]),
        ("mkfs.ext4", &["-V"][..]),
    ] {
        let ok = Command::new(tool)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err(Unsupported(format!(
                "`{tool}` is missing or does not run: install iproute2 / util-linux / e2fsprogs"
            )));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err(Unsupported(
            "no /dev/loop-control: loop devices are not available (in a container, run it \
             privileged)"
                .into(),
        ));
    }
    let probe = format!("{}-probe", layout.prefix);
    let _ = ip(&["netns", "del", &probe]);
    ip(&["netns", "add", &probe]).map_err(|e| {
        Unsupported(format!(
            "cannot create a network namespace ({e}): `ip netns` needs root and \
             CAP_SYS_ADMIN"
        ))
    })?;
    let _ = ip(&["netns", "del", &probe]);
    if !bin.is_file() {
        return Err(Unsupported(format!(
            "{} does not exist: build it with `cargo build -p dmq-tests --bin dmq-under-test` \
             or pass --bin PATH",
            bin.display()
        )));
    }
    Ok(())
}

/// The run's lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Takes the prefix's lock, or says who holds it.
pub fn lock(layout: &Layout) -> Result<RunLock, Unsupported> {
    let path = layout.lock_file();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Unsupported(format!("opening {}: {e}", path.display())))?;
    // SAFETY: flock on an open descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(Unsupported(format!(
            "another dmq-faults run with prefix {:?} is running (pid {}); wait for it or use \
             --prefix NAME",
            layout.prefix,
            holder.trim()
        )));
    }
    let _ = file.set_len(0);
    let _ = std::fs::write(&path, std::process::id().to_string());
    Ok(RunLock { _file: file })
}

/// What [`remove_all`] did, for the log.
#[derive(Debug, Default)]
pub struct Removed {
    pub processes: usize,
    pub mounts: usize,
    pub loop_devices: usize,
    pub namespaces: usize,
    pub errors: Vec<String>,
}

impl Removed {
    pub fn anything(&self) -> bool {
        self.processes + self.mounts + self.loop_devices + self.namespaces > 0
    }
}

/// Removes every process, mount, loop device and namespace of `layout`'s prefix, and the work
/// dir (its `logs/` too unless `keep_logs`).
pub fn remove_all(layout: &Layout, keep_logs: bool) -> Removed {
    let mut removed = Removed::default();
    let existing: Vec<String> = layout
        .all_ns()
        .into_iter()
        .filter(|ns| layout.ns_path(ns).exists())
        .collect();
    // 1. Processes in our namespaces.
    let mut pids = Vec::new();
    for ns in &existing {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
            pids.extend(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<libc::pid_t>().ok()),
            );
        }
    }
    for &pid in &pids {
        // SAFETY: kill(2); the PID is a process inside a namespace of this run.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, libc::SIGKILL);
        }
    }
    removed.processes = pids.len();
    let until = Instant::now() + Duration::from_secs(10);
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    // 2. Mounts under the work dir, then 3. loop devices backed by its images.
    for m in mounts_under(&layout.work_dir) {
        match umount_path(&m, true) {
            Ok(()) => removed.mounts += 1,
            Err(e) => removed.errors.push(e),
        }
    }
    for dev in loop_devices_under(&layout.work_dir) {
        match detach_loop(&dev) {
            Ok(()) => removed.loop_devices += 1,
            Err(e) => removed.errors.push(e),
        }
    }
    // 4. Namespaces (their veths and the bridge go with them).
    for ns in &existing {
        match ip(&["netns", "del", ns]) {
            Ok(()) => removed.namespaces += 1,
            Err(e) => removed.errors.push(e),
        }
    }
    // 5. Files.
    for dir in [layout.img_dir(), layout.mnt_dir()] {
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            removed
                .errors
                .push(format!("removing {}: {e}", dir.display()));
        }
    }
    if !keep_logs {
        let _ = std::fs::remove_dir_all(layout.log_dir());
        // Gone unless an earlier failed run's logs.previous is still there.
        let _ = std::fs::remove_dir(&layout.work_dir);
    }
    removed
}

fn is_zombie(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(after == 'Z')
        })
        .unwrap_or(false)
}
