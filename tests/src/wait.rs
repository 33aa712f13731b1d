//! Polling with a deadline, instead of sleeps: a condition is retried until it holds or the
//! deadline passes, and the timeout says what the condition last reported.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// `now + d`, for readability: `wait_until(deadline(Duration::from_secs(10)), ...)`.
pub fn deadline(d: Duration) -> Instant {
    Instant::now() + d
}

/// A condition still did not hold at its deadline.
#[derive(Debug, Clone)]
pub struct WaitTimeout {
    pub waited: Duration,
    pub attempts: u32,
    /// What the last attempt reported, when one finished.
    pub last: Option<String>,
}

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "condition still false after {:.1?} ({} attempts); last: {}",
            self.waited,
            self.attempts,
            self.last.as_deref().unwrap_or("no attempt finished")
        )
    }
}

impl std::error::Error for WaitTimeout {}

/// Calls `f` until it returns `Ok`, at most until `deadline`, and returns that value. `Err(why)`
/// means "not yet"; the last `why` is kept for the timeout error. An attempt still running at the
/// deadline is cancelled. Between attempts it sleeps 10 ms, growing to 100 ms.
pub async fn wait_until<T, E, F, Fut>(deadline: Instant, mut f: F) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: fmt::Display,
{
    let start = Instant::now();
    let mut attempts = 0;
    let mut last = None;
    let mut pause = Duration::from_millis(10);
    loop {
        attempts += 1;
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(why)) => last = Some(why.to_string()),
            Err(_) => {
                last = Some(format!(
                    "attempt {attempts} still running at the deadline (previous: {})",
                    last.as_deref().unwrap_or("none")
                ))
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitTimeout {
                waited: now - start,
                attempts,
                last,
            });
        }
        tokio::time::sleep_until((now + pause).min(deadline)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_first_ok() {
        let n = AtomicU32::new(0);
        let v = wait_until(deadline(Duration::from_secs(5)), || async {
            let i = n.fetch_add(1, Ordering::SeqCst);
            if i >= 3 {
                Ok(i)
            } else {
                Err(format!("only {i}"))
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_reason() {
        let e = wait_until(deadline(Duration::from_millis(100)), || async {
            Err::<(), _>("never")
        })
        .await
        .unwrap_err();
        assert!(e.attempts >= 2);
        assert!(e.to_string().contains("last: never"), "{e}");
    }

    #[tokio::test]
    async fn cancels_a_hung_attempt_at_the_deadline() {
        let t = Instant::now();
        let e = wait_until(deadline(Duration::from_millis(100)), || async {
            std::future::pending::<Result<(), String>>().await
        })
        .await
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(e.to_string().contains("still running"), "{e}");
    }
}
