//! Password checks are argon2id: about 19 MiB of memory and tens of milliseconds of CPU
//! each, by design. Unbounded, a flood of sign-ins with made-up passwords (no account
//! needed) would hold one blocking thread and 19 MiB per request, up to tokio's 512 blocking
//! threads (about 10 GiB), and queue the rest. The gate runs at most one check per core at
//! a time, lets a bounded number wait, and refuses the rest at once: they cost nothing.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

/// How many checks may wait for a slot, per running slot.
const WAITING_PER_SLOT: usize = 16;

#[derive(Debug)]
pub struct Argon2Gate {
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Too many password checks are in progress; the caller answers 503 and the client retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Argon2Gate {
    pub fn new(slots: usize) -> Argon2Gate {
        let slots = slots.max(1);
        Argon2Gate { slots: Semaphore::new(slots), waiting: AtomicUsize::new(0), max_waiting: slots * WAITING_PER_SLOT }
    }

    /// One slot per core of this machine.
    pub fn per_core() -> Argon2Gate {
        Argon2Gate::new(std::thread::available_parallelism().map_or(2, usize::from))
    }

    /// Runs `check` on the blocking pool once a slot is free; `Err(Busy)` at once when too
    /// many are already waiting.
    pub async fn run<T: Send + 'static>(&self, check: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        let permit = self.slots.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|_| Busy)?;
        tokio::task::spawn_blocking(check).await.map_err(|_| Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn runs_a_bounded_number_and_refuses_past_the_queue() {
        let gate = Arc::new(Argon2Gate::new(1));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(std::sync::Mutex::new(hold));
        let mut tasks = Vec::new();
        // One running (blocked on `hold`) and 16 waiting fill the gate.
        for _ in 0..=WAITING_PER_SLOT {
            let (gate, hold) = (gate.clone(), hold.clone());
            tasks.push(tokio::spawn(async move {
                gate.run(move || {
                    let _ = hold.lock().unwrap().recv();
                })
                .await
            }));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while gate.waiting.load(Ordering::Acquire) < WAITING_PER_SLOT {
            assert!(std::time::Instant::now() < deadline, "the waiters queue");
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.run(|| ()).await, Err(Busy), "the next one is refused at once");
        for _ in 0..=WAITING_PER_SLOT {
            release.send(()).unwrap();
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(()));
        }
        assert_eq!(gate.run(|| 7).await, Ok(7), "room again");
    }
}
