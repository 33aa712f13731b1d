//! Test-only fault points: a slow disk, failing writes, an older peer. Compiled in only with the
//! `fault-injection` cargo feature (which the process-test crate enables); without it
//! [`Faults`] is an empty value whose checks are constant no-ops, so release builds carry no
//! fault point.
//!
//! A process reads its faults from the file named by `DMQ_FAULT_FILE` (see
//! [`Faults::from_env`]) on every check, so a test can switch a fault on and off while the
//! controller runs; in-process tests use the setters. The file holds `key=value` lines:
//!
//! | key | effect |
//! |---|---|
//! | `sync_stall_ms=N` | every sync of the Raft storage first sleeps N ms (a slow disk) |
//! | `fail_writes=1` | the next Raft storage write fails as if the disk returned EIO |
//! | `feature_level_max=N` | the node claims to support metadata feature levels up to N only (an older version) |
//! | `snapshot_receive_bytes_per_sec=N` | InstallSnapshot streams into this node take at most N bytes/s together (a slow link or disk) |

use std::time::Duration;

#[cfg(feature = "fault-injection")]
pub use enabled::Faults;

#[cfg(not(feature = "fault-injection"))]
pub use disabled::Faults;

#[cfg(feature = "fault-injection")]
mod enabled {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

    use super::Duration;

    /// Faults of one node (see the module docs).
    #[derive(Debug, Default)]
    pub struct Faults {
        sync_stall_ms: AtomicU64,
        fail_writes: AtomicBool,
        /// `u32::MAX`: not set.
        feature_level_max: AtomicU32,
        file: Option<PathBuf>,
    }

    impl Faults {
        /// No fault, until a setter is called.
        pub fn none() -> Faults {
            Faults {
                feature_level_max: AtomicU32::new(u32::MAX),
                ..Faults::default()
            }
        }

        /// The faults named in the file `DMQ_FAULT_FILE` points at (re-read at every check);
        /// none when the variable is unset.
        pub fn from_env() -> Faults {
            Faults {
                file: std::env::var_os("DMQ_FAULT_FILE").map(PathBuf::from),
                ..Faults::none()
            }
        }

        pub fn set_sync_stall(&self, stall: Duration) {
            self.sync_stall_ms
                .store(stall.as_millis() as u64, Ordering::SeqCst);
        }

        pub fn set_fail_writes(&self, fail: bool) {
            self.fail_writes.store(fail, Ordering::SeqCst);
        }

        pub fn set_feature_level_max(&self, level: Option<u32>) {
            self.feature_level_max
                .store(level.unwrap_or(u32::MAX), Ordering::SeqCst);
        }

        fn read_file(&self, key: &str) -> Option<u64> {
            let text = std::fs::read_to_string(self.file.as_ref()?).ok()?;
            text.lines().find_map(|line| {
                let (k, v) = line.split_once('=')?;
                (k.trim() == key).then(|| v.trim().parse().ok())?
            })
        }

        pub(crate) fn sync_stall(&self) -> Duration {
            let ms = self
                .read_file("sync_stall_ms")
                .unwrap_or_else(|| self.sync_stall_ms.load(Ordering::SeqCst));
            Duration::from_millis(ms)
        }

        pub(crate) fn fail_write(&self) -> bool {
            self.read_file("fail_writes").is_some_and(|v| v != 0)
                || self.fail_writes.load(Ordering::SeqCst)
        }

        pub(crate) fn snapshot_receive_rate(&self) -> Option<u64> {
            self.read_file("snapshot_receive_bytes_per_sec")
                .filter(|&n| n > 0)
        }

        pub(crate) fn feature_level_max(&self) -> Option<u32> {
            if let Some(level) = self.read_file("feature_level_max") {
                return u32::try_from(level).ok();
            }
            match self.feature_level_max.load(Ordering::SeqCst) {
                u32::MAX => None,
                level => Some(level),
            }
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
mod disabled {
    use super::Duration;

    /// Without the `fault-injection` feature: no fault, ever.
    #[derive(Debug, Default)]
    pub struct Faults;

    impl Faults {
        pub fn none() -> Faults {
            Faults
        }

        pub fn from_env() -> Faults {
            Faults
        }

        #[inline(always)]
        pub(crate) fn sync_stall(&self) -> Duration {
            Duration::ZERO
        }

        #[inline(always)]
        pub(crate) fn fail_write(&self) -> bool {
            false
        }

        #[inline(always)]
        pub(crate) fn snapshot_receive_rate(&self) -> Option<u64> {
            None
        }

        #[inline(always)]
        pub(crate) fn feature_level_max(&self) -> Option<u32> {
            None
        }
    }
}
