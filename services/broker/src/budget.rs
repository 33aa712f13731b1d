//! [`MemoryBudget`]: one broker-wide bound, in bytes, on the memory that requests in flight
//! hold: Produce requests until they are answered (acks=ALL waiters included), acks=NONE
//! appends running in the background, Fetch answers being built and the responses queued on
//! Consume streams. A request that cannot get its share is refused at once with
//! RESOURCE_EXHAUSTED / BROKER_OVERLOADED (nothing done, safe to retry), so an overload costs
//! clients a retry instead of costing the broker its memory.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::DataError;

/// What every request is charged beyond its payload (headers, bookkeeping, the task), so that
/// floods of tiny requests are bounded too.
pub(crate) const REQUEST_OVERHEAD_BYTES: usize = 1024;

/// The broker's budget; clones share it.
#[derive(Clone, Debug)]
pub(crate) struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_bytes: usize,
}

/// A share of the budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    /// A budget of `total_bytes` (at least one maximal request must fit: see the config).
    pub(crate) fn new(total_bytes: usize) -> MemoryBudget {
        let total_bytes = total_bytes.min(u32::MAX as usize);
        MemoryBudget {
            permits: Arc::new(Semaphore::new(total_bytes)),
            total_bytes,
        }
    }

    /// Bytes not held by any request now.
    pub(crate) fn available_bytes(&self) -> usize {
        self.permits.available_permits()
    }

    fn charge(&self, payload_bytes: usize) -> u32 {
        (payload_bytes.saturating_add(REQUEST_OVERHEAD_BYTES)).min(self.total_bytes) as u32
    }

    /// Takes `payload_bytes` (plus the per-request overhead) now, or refuses.
    ///
    /// Errors: [`DataError::Overloaded`] when that much is not available.
    pub(crate) fn try_reserve(&self, payload_bytes: usize) -> Result<Reservation, DataError> {
        let needed = self.charge(payload_bytes);
        match self.permits.clone().try_acquire_many_owned(needed) {
            Ok(permit) => Ok(Reservation {
                _permit: Some(permit),
            }),
            Err(_) => Err(DataError::Overloaded {
                needed: needed as usize,
                budget: self.total_bytes,
            }),
        }
    }

    /// Waits until `payload_bytes` (plus the overhead) are available and takes them: for work
    /// already accepted (a Consume stream's next response), which waits rather than fails.
    pub(crate) async fn reserve(&self, payload_bytes: usize) -> Reservation {
        let needed = self.charge(payload_bytes);
        Reservation {
            // The semaphore is never closed.
            _permit: self.permits.clone().acquire_many_owned(needed).await.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_hold_their_share_until_done_and_are_refused_beyond_it() {
        let budget = MemoryBudget::new(10 * 1024);
        let a = budget.try_reserve(4 * 1024).unwrap();
        let b = budget.try_reserve(4 * 1024).unwrap();
        assert_eq!(budget.available_bytes(), 10 * 1024 - 2 * (4 * 1024 + 1024));
        let refused = budget.try_reserve(1024).unwrap_err();
        assert!(
            matches!(
                refused,
                DataError::Overloaded {
                    needed: 2048,
                    budget: 10240
                }
            ),
            "{refused:?}"
        );
        drop(a);
        let c = budget.try_reserve(1024).unwrap();
        drop((b, c));
        assert_eq!(budget.available_bytes(), 10 * 1024);
        // A request larger than the whole budget is charged the whole budget, not refused
        // forever.
        let all = budget.try_reserve(1 << 20).unwrap();
        assert_eq!(budget.available_bytes(), 0);
        drop(all);
        let waited = budget.reserve(100).await;
        drop(waited);
        assert_eq!(budget.available_bytes(), 10 * 1024);
    }
}
