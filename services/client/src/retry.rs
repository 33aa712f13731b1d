//! [`RetryPolicy`]: how many times, and how patiently, a client call is tried again.

use std::time::Duration;

use crate::discovery::Backoff;

/// Bounded retries with exponential backoff: after the n-th failed attempt the caller waits
/// `backoff_initial · 2^(n-1)`, capped at `backoff_max`, each pause shortened by up to 20 %
/// (jitter, so clients that failed together do not retry in lockstep). A redirect to a named
/// leader is retried at once and still counts as an attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts after the first (default 10). 0: never retry.
    pub retries: u32,
    /// The first pause (default 50 ms).
    pub backoff_initial: Duration,
    /// The longest pause (default 1 s).
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            retries: 10,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// A fresh pause sequence for one call.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_initial, self.backoff_max, 0.2, None)
    }
}
