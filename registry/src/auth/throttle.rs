//! Failed sign-ins, counted per client address and per user name: past the limit, sign-ins
//! from that address (or as that user) are refused for a while, before any password is
//! checked, so guessing stops paying.
//!
//! Counts live in this process only: with replicas behind a load balancer an attacker gets
//! the limit once per replica, which still bounds guessing to a handful of tries a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// More tracked keys than this and the expired ones are dropped at once (a scan of
/// random source addresses must not grow memory without bound).
const MAX_ENTRIES: usize = 65_536;

#[derive(Debug)]
pub struct Throttle {
    max_failures: u32,
    window: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

impl Throttle {
    /// `max_failures` within `window`, then locked out for `window`.
    pub fn new(max_failures: u32, window: Duration) -> Throttle {
        Throttle { max_failures, window, entries: Mutex::new(HashMap::new()) }
    }

    /// `Err(retry_after)` when any of `keys` is locked out.
    pub fn check(&self, keys: &[String]) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let wait = keys
            .iter()
            .filter_map(|k| entries.get(k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(w) => Err(w),
            None => Ok(()),
        }
    }

    /// Counts one failure against each of `keys`.
    pub fn failed(&self, keys: &[String]) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let window = self.window;
            entries.retain(|_, e| e.locked_until.is_some_and(|u| u > now) || now - e.since < window);
        }
        for key in keys {
            let e = entries.entry(key.clone()).or_insert(Entry { failures: 0, since: now, locked_until: None });
            if now - e.since >= self.window || e.locked_until.is_some_and(|u| u <= now) {
                *e = Entry { failures: 0, since: now, locked_until: None };
            }
            e.failures += 1;
            if e.failures >= self.max_failures {
                e.locked_until = Some(now + self.window);
                tracing::warn!(auth.throttle = %key, failures = e.failures,
                    lockout_s = self.window.as_secs(), "too many failed sign-ins: locked out");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_limit_and_only_that_key() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let ip = vec!["ip:10.0.0.1".to_owned()];
        let other = vec!["ip:10.0.0.2".to_owned()];
        t.failed(&ip);
        t.failed(&ip);
        assert!(t.check(&ip).is_ok());
        t.failed(&ip);
        let wait = t.check(&ip).unwrap_err();
        assert!(wait > Duration::from_secs(50));
        assert!(t.check(&other).is_ok());
        // Any locked key in the list refuses.
        assert!(t.check(&[other[0].clone(), ip[0].clone()]).is_err());
    }

    #[test]
    fn failures_age_out_of_the_window() {
        let t = Throttle::new(2, Duration::from_millis(30));
        let k = vec!["user:alice".to_owned()];
        t.failed(&k);
        std::thread::sleep(Duration::from_millis(40));
        t.failed(&k);
        assert!(t.check(&k).is_ok(), "the first failure is outside the window");
    }
}
