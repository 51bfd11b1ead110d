//! Coalescing and the memory of misses, both bounded.
//!
//! [`Flights`]: the first request for a missing thing (a blob, a manifest, a tag's re-check)
//! becomes the *leader* and makes the one upstream request; requests for the same thing that
//! arrive while it runs are *followers*: they wait for the leader to finish and then read
//! what it stored from storage (or get its failure). They do not share the leader's byte
//! stream: a follower's first byte waits for the whole fetch, and in exchange every byte a
//! follower gets comes from storage, verified. At most [`MAX_FLIGHTS`] things are fetched at
//! once; past it a new fetch is refused (503) rather than held.
//!
//! [`Misses`]: an upstream 404 is remembered for [`MISS_TTL`], so a client retrying a name
//! that does not exist does not turn into as many upstream requests; at most [`MAX_MISSES`]
//! are remembered (the oldest make room).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Fetches in flight at once, in all.
pub const MAX_FLIGHTS: usize = 256;
/// Upstream 404s remembered.
pub const MAX_MISSES: usize = 10_000;
/// How long an upstream 404 is remembered.
pub const MISS_TTL: Duration = Duration::from_secs(30);

/// How a fetch ended, as its followers learn it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landed {
    /// Stored (or found current): read it from storage.
    Done,
    /// The upstream does not have it.
    NotFound,
    /// Anything else, with the reason.
    Failed(String),
    /// The leader went away before it finished (its request was cancelled): a follower may
    /// join again and lead.
    Abandoned,
}

type Slot = watch::Receiver<Option<Landed>>;

/// The fetches in flight, by key.
pub struct Flights {
    max: usize,
    map: Arc<Mutex<HashMap<String, Slot>>>,
}

/// What joining a flight gives.
pub enum Joined {
    /// Make the fetch, then [`Leader::land`] it.
    Leader(Leader),
    /// Wait for the leader: [`Follower::wait`].
    Follower(Follower),
    /// Too many fetches in flight.
    Busy,
}

/// The one fetch of a key. Dropped without landing (the request was cancelled, a task
/// panicked): its followers learn it failed, and the key is free again.
pub struct Leader {
    key: String,
    tx: watch::Sender<Option<Landed>>,
    map: Arc<Mutex<HashMap<String, Slot>>>,
    landed: bool,
}

pub struct Follower(Slot);

impl Flights {
    pub fn new(max: usize) -> Flights {
        Flights { max, map: Arc::default() }
    }

    pub fn join(&self, key: String) -> Joined {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(&key) {
            return Joined::Follower(Follower(rx.clone()));
        }
        if map.len() >= self.max {
            return Joined::Busy;
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Joined::Leader(Leader { key, tx, map: self.map.clone(), landed: false })
    }

    /// Fetches in flight now.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Leader {
    /// Ends the flight: followers wake with `outcome`, the key is free.
    pub fn land(mut self, outcome: Landed) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Landed) {
        if self.landed {
            return;
        }
        self.landed = true;
        // Removed first: a request arriving after this starts afresh (and finds the content
        // stored), never joins a finished flight.
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
        self.tx.send_replace(Some(outcome));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.finish(Landed::Abandoned);
    }
}

impl Follower {
    pub async fn wait(mut self) -> Landed {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Landed::Failed("the fetch ended without an outcome".into())),
            Err(_) => Landed::Abandoned,
        }
    }
}

/// Upstream 404s, remembered briefly.
pub struct Misses {
    max: usize,
    ttl: Duration,
    inner: Mutex<(HashMap<String, Instant>, VecDeque<String>)>,
}

impl Misses {
    pub fn new(max: usize, ttl: Duration) -> Misses {
        Misses { max, ttl, inner: Mutex::default() }
    }

    /// Remembers that `key` was not found upstream.
    pub fn remember(&self, key: String) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *inner;
        if map.insert(key.clone(), Instant::now() + self.ttl).is_none() {
            order.push_back(key);
        }
        while map.len() > self.max {
            match order.pop_front() {
                Some(oldest) => {
                    map.remove(&oldest);
                }
                None => break,
            }
        }
    }

    /// Whether `key` was found missing upstream within the last `ttl`.
    pub fn recent(&self, key: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *inner;
        match map.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(key);
                order.retain(|k| k != key);
                false
            }
            None => false,
        }
    }

    /// Forgets `key` (it was stored since).
    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.0.remove(key).is_some() {
            inner.1.retain(|k| k != key);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_per_key_and_followers_get_its_outcome() {
        let flights = Flights::new(2);
        let Joined::Leader(leader) = flights.join("a".into()) else { panic!("the first is the leader") };
        let Joined::Follower(f1) = flights.join("a".into()) else { panic!("the second follows") };
        let Joined::Follower(f2) = flights.join("a".into()) else { panic!("the third follows") };
        let Joined::Leader(other) = flights.join("b".into()) else { panic!("another key leads") };
        assert!(matches!(flights.join("c".into()), Joined::Busy), "bounded");
        let waiting = tokio::spawn(f1.wait());
        leader.land(Landed::NotFound);
        assert_eq!(waiting.await.unwrap(), Landed::NotFound);
        assert_eq!(f2.wait().await, Landed::NotFound);
        assert!(matches!(flights.join("a".into()), Joined::Leader(_)), "a landed key starts afresh");
        drop(other);
        assert!(flights.is_empty() || flights.len() == 1);
    }

    #[tokio::test]
    async fn a_dropped_leader_fails_its_followers_and_frees_the_key() {
        let flights = Flights::new(8);
        let Joined::Leader(leader) = flights.join("k".into()) else { panic!() };
        let Joined::Follower(f) = flights.join("k".into()) else { panic!() };
        drop(leader);
        assert_eq!(f.wait().await, Landed::Abandoned);
        assert!(flights.is_empty());
    }

    #[test]
    fn misses_expire_and_are_bounded() {
        let misses = Misses::new(2, Duration::from_secs(60));
        misses.remember("a".into());
        misses.remember("b".into());
        misses.remember("c".into());
        assert_eq!(misses.len(), 2);
        assert!(!misses.recent("a"), "the oldest made room");
        assert!(misses.recent("b") && misses.recent("c"));
        misses.forget("b");
        assert!(!misses.recent("b"));
        let expired = Misses::new(2, Duration::ZERO);
        expired.remember("x".into());
        assert!(!expired.recent("x"));
        assert!(expired.is_empty());
    }
}
