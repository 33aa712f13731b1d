//! One node's disk: a small ext4 image on a loop device, mounted where its data dir lives, so
//! a power loss can be played: `FS_IOC_SHUTDOWN` with `FS_GOING_DOWN_NOLOGFLUSH` makes the
//! file system fail every further I/O without writing its journal, and unmounting and
//! mounting again replays the journal as it was on disk. What was not synced is gone, as after
//! a power cut.
//!
//! # To ensure correctness
//! - The node process is killed (and reaped) after the shutdown and before the unmount, so no
//!   write of it lands after the "power cut" and the unmount does not fail busy.
//! - The data dir is created and the file system synced before the node first starts, so the
//!   directory itself survives the first power loss.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `FS_IOC_SHUTDOWN` = `_IOR('X', 125, __u32)`.
const FS_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
/// Shut down without flushing the journal: a power cut.
const FS_GOING_DOWN_NOLOGFLUSH: u32 = 2;

/// Runs a program, blocking; the error names it and what it printed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("`{program} {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

/// A loop-mounted ext4 image.
#[derive(Debug)]
pub struct Disk {
    pub image: PathBuf,
    pub mount_point: PathBuf,
    /// `/dev/loopN`.
    pub device: String,
    pub mounted: bool,
}

impl Disk {
    /// Creates a sparse image of `size_mib`, attaches a loop device, makes an ext4 on it,
    /// mounts it at `mount_point` and creates `data_dir` inside (synced).
    pub fn create(
        image: &Path,
        mount_point: &Path,
        data_dir: &Path,
        size_mib: u64,
    ) -> Result<Disk, String> {
        let file = std::fs::File::create(image)
            .map_err(|e| format!("creating {}: {e}", image.display()))?;
        file.set_len(size_mib * 1024 * 1024)
            .map_err(|e| format!("sizing {}: {e}", image.display()))?;
        drop(file);
        let image_s = image.to_string_lossy().into_owned();
        let device = run("losetup", &["--find", "--show", &image_s])?;
        let mut disk = Disk {
            image: image.to_path_buf(),
            mount_point: mount_point.to_path_buf(),
            device,
            mounted: false,
        };
        run("mkfs.ext4", &["-q", "-F", &disk.device])?;
        std::fs::create_dir_all(mount_point)
            .map_err(|e| format!("creating {}: {e}", mount_point.display()))?;
        disk.mount()?;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
        disk.sync()?;
        Ok(disk)
    }

    /// Mounts the device (ext4 replays its journal here after a shutdown).
    pub fn mount(&mut self) -> Result<(), String> {
        if self.mounted {
            return Ok(());
        }
        let dev = CString::new(self.device.as_str()).expect("no NUL");
        let target = cpath(&self.mount_point);
        let fstype = CString::new("ext4").expect("no NUL");
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; no
        // mount data is passed.
        let rc = unsafe {
            libc::mount(
                dev.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "mount {} on {}: {}",
                self.device,
                self.mount_point.display(),
                std::io::Error::last_os_error()
            ));
        }
        self.mounted = true;
        Ok(())
    }

    /// Unmounts; with `force`, detaches lazily when a normal unmount fails.
    pub fn umount(&mut self, force: bool) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        umount_path(&self.mount_point, force)?;
        self.mounted = false;
        Ok(())
    }

    /// The power cut: the file system stops at once, its journal unwritten.
    pub fn shutdown(&self) -> Result<(), String> {
        let fd = open_dir(&self.mount_point)?;
        let flag: u32 = FS_GOING_DOWN_NOLOGFLUSH;
        // SAFETY: FS_IOC_SHUTDOWN reads one u32 through the pointer, which is valid for the
        // call; fd is an open directory of the file system.
        let rc = unsafe { libc::ioctl(fd, FS_IOC_SHUTDOWN as _, &flag as *const u32) };
        let err = std::io::Error::last_os_error();
        // SAFETY: fd was opened above and is closed once.
        unsafe { libc::close(fd) };
        if rc != 0 {
            return Err(format!(
                "FS_IOC_SHUTDOWN on {}: {err}",
                self.mount_point.display()
            ));
        }
        Ok(())
    }

    /// syncfs of the mounted file system.
    pub fn sync(&self) -> Result<(), String> {
        let fd = open_dir(&self.mount_point)?;
        // SAFETY: fd is an open directory; syncfs only reads it.
        let rc = unsafe { libc::syncfs(fd) };
        let err = std::io::Error::last_os_error();
        // SAFETY: closed once.
        unsafe { libc::close(fd) };
        if rc != 0 {
            return Err(format!("syncfs {}: {err}", self.mount_point.display()));
        }
        Ok(())
    }

    /// Unmounts and detaches the loop device (best effort; the first error is returned).
    pub fn destroy(&mut self) -> Result<(), String> {
        let unmounted = self.umount(true);
        let detached = run("losetup", &["-d", &self.device]).map(|_| ());
        unmounted.and(detached)
    }
}

fn open_dir(path: &Path) -> Result<libc::c_int, String> {
    let c = cpath(path);
    // SAFETY: c is a valid NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!(
            "open {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(fd)
}

/// Unmounts `path`; with `force`, falls back to a lazy detach.
pub fn umount_path(path: &Path, force: bool) -> Result<(), String> {
    let c = cpath(path);
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: as above.
    if force && unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    Err(format!("umount {}: {err}", path.display()))
}

/// Mount points under `dir` (from /proc/self/mountinfo), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Loop devices whose backing file is under `dir` (from /sys/block/loop*/loop/backing_file).
pub fn loop_devices_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let backing = e.path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(&backing) {
            let file = file.trim().trim_end_matches(" (deleted)");
            if Path::new(file).starts_with(dir) {
                found.push(format!("/dev/{name}"));
            }
        }
    }
    found.sort();
    found
}

/// Detaches loop device `device`.
pub fn detach_loop(device: &str) -> Result<(), String> {
    run("losetup", &["-d", device]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
