//! Failed sign-ins, counted so that guessing stops paying while an attacker cannot lock a
//! legitimate user out.
//!
//! Three counts, each with `max_failed_logins` free failures and then a back-off (a refusal
//! window that doubles with each further failure, from [`FIRST_BACKOFF`] up to `lockout`):
//!
//! - per client **address** (IPv6: per /64, what one host usually holds): spraying many
//!   user names from one place;
//! - per **user from one address**: guessing one password from one place;
//! - per **user**, counting only failures from addresses where that user has not signed in
//!   lately: guessing one password from many places. Only for passwords: an access key's
//!   secret and a login token cannot be guessed, so a count per key id (or for `AWS`, every
//!   login token) would only let anyone lock them out.
//!
//! An address where the user signed in successfully within [`GOOD_FOR`] is *known-good* for
//! that user: its attempts are refused only by the user-from-that-address count, so the
//! real admin at its usual address still signs in while `admin` is guessed from elsewhere,
//! and users already known at a shared address (a NAT, an untrusted proxy) keep signing in
//! while someone there sprays names.
//!
//! Everything is decided before any password is checked: a refused attempt costs no argon2
//! run and is not counted as a failure. Attempts in flight count against the free failures
//! of unknown addresses (a burst of parallel guesses is not all let through before the
//! first failure is recorded).
//!
//! Counts live in this process only (with replicas, each keeps its own), in maps of bounded
//! size: a flood of new addresses or names evicts the least significant entries, never
//! grows memory beyond the caps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// Most failure counts kept; beyond it the least significant are evicted.
const MAX_ENTRIES: usize = 65_536;
/// Most (user, address) successes remembered.
const MAX_GOOD: usize = 65_536;
/// How long a successful sign-in makes its address known-good for the user.
pub const GOOD_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// The first back-off, doubled with each failure after the free ones.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Which count refused or backed off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Address,
    UserAddress,
    User,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::Address, Reason::UserAddress, Reason::User];

    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Address => "address",
            Reason::UserAddress => "user_address",
            Reason::User => "user",
        }
    }

    fn index(self) -> usize {
        match self {
            Reason::Address => 0,
            Reason::UserAddress => 1,
            Reason::User => 2,
        }
    }
}

/// A user name as the maps hold it: a digest, so an entry has a fixed size whatever the
/// name sent.
type Name = [u8; 16];

fn name(user: &str) -> Name {
    let d = sha2::Sha256::digest(user.as_bytes());
    let mut n = [0u8; 16];
    n.copy_from_slice(&d[..16]);
    n
}

/// The address as counted: IPv4 (also when mapped into IPv6), or an IPv6 /64.
pub fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    UserAddress(Name, IpAddr),
    User(Name),
}

impl Key {
    fn reason(&self) -> Reason {
        match self {
            Key::Address(_) => Reason::Address,
            Key::UserAddress(..) => Reason::UserAddress,
            Key::User(_) => Reason::User,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// Attempts admitted and not yet decided.
    pending: u32,
    last: Instant,
    /// Refused until then.
    until: Option<Instant>,
}

impl Entry {
    /// Forgotten once a whole `window` passed after its last failure and its back-off.
    fn expired(&self, now: Instant, window: Duration) -> bool {
        self.pending == 0 && now >= self.until.map_or(self.last, |u| u.max(self.last)) + window
    }
}

/// What kind of secret a sign-in presents: only passwords are counted per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    Password,
    /// An access key's secret or a login token: random, not guessable.
    Random,
}

/// One sign-in attempt, as the throttle sees it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    user: Name,
    net: IpAddr,
    secret: Secret,
}

impl Attempt {
    pub fn new(user: &str, ip: IpAddr, secret: Secret) -> Attempt {
        Attempt { user: name(user), net: network(ip), secret }
    }
}

/// Why an attempt was refused, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub wait: Duration,
}

/// A back-off that a failure started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub reason: Reason,
    pub failures: u32,
    pub wait: Duration,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    good: HashMap<(Name, IpAddr), Instant>,
}

#[derive(Default)]
struct Counters {
    refused: [AtomicU64; 3],
    backoffs: [AtomicU64; 3],
}

/// Counters for `/metrics`, by reason (in [`Reason::ALL`] order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Sign-ins refused before their secret was checked.
    pub refused: [u64; 3],
    /// Back-offs started.
    pub backoffs: [u64; 3],
}

pub struct Throttle {
    max_failures: u32,
    window: Duration,
    state: Mutex<State>,
    counters: Counters,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").field("max_failures", &self.max_failures).field("window", &self.window).finish()
    }
}

/// An admitted attempt: holds its place among the attempts in flight until it is decided
/// (or dropped, when the client went away mid-check).
#[must_use]
pub struct Admission<'a> {
    throttle: &'a Throttle,
    attempt: Attempt,
    known_good: bool,
    /// Keys whose `pending` this attempt raised.
    pending: Vec<Key>,
}

impl Throttle {
    /// `max_failures` free failures per count, then back-offs up to `window`, which is also
    /// how long a count is kept after its last failure.
    pub fn new(max_failures: u32, window: Duration) -> Throttle {
        Throttle {
            max_failures: max_failures.max(1),
            window,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counts that may refuse `a`: at a known-good address only the user's count there.
    fn keys(a: &Attempt, known_good: bool) -> Vec<Key> {
        let mut keys = vec![Key::UserAddress(a.user, a.net)];
        if !known_good {
            keys.push(Key::Address(a.net));
            if a.secret == Secret::Password {
                keys.push(Key::User(a.user));
            }
        }
        keys
    }

    /// Admits the attempt, or refuses it (before any secret is checked) with the longest
    /// wait among the counts that refuse.
    pub fn admit(&self, a: Attempt, now: Instant) -> Result<Admission<'_>, Refusal> {
        let mut state = self.lock();
        let known_good = state.good.get(&(a.user, a.net)).is_some_and(|t| now < *t + GOOD_FOR);
        let keys = Self::keys(&a, known_good);
        let mut refusal: Option<Refusal> = None;
        for key in &keys {
            let Some(e) = state.entries.get(key) else { continue };
            if e.expired(now, self.window) {
                continue;
            }
            let wait = match e.until {
                Some(until) if until > now => until - now,
                // Free failures left: each attempt in flight may still fail, so it holds
                // one of them (not for known-good addresses, whose parallel requests are
                // the user's own; their count still backs off after failures).
                _ if !known_good && e.failures.saturating_add(e.pending) >= self.max_failures.max(e.failures + 1) => {
                    FIRST_BACKOFF.min(self.window)
                }
                _ => continue,
            };
            if refusal.is_none_or(|r| wait > r.wait) {
                refusal = Some(Refusal { reason: key.reason(), wait });
            }
        }
        if let Some(r) = refusal {
            self.counters.refused[r.reason.index()].fetch_add(1, Ordering::Relaxed);
            return Err(r);
        }
        let pending = if known_good { Vec::new() } else { keys };
        for key in &pending {
            let e = self.entry(&mut state, *key, now);
            e.pending = e.pending.saturating_add(1);
        }
        Ok(Admission { throttle: self, attempt: a, known_good, pending })
    }

    /// The entry of `key`, made (within the cap) when missing, reset when expired.
    fn entry<'s>(&self, state: &'s mut State, key: Key, now: Instant) -> &'s mut Entry {
        if !state.entries.contains_key(&key) && state.entries.len() >= MAX_ENTRIES {
            self.make_room(state, now);
        }
        let window = self.window;
        let e = state.entries.entry(key).or_insert(Entry { failures: 0, pending: 0, last: now, until: None });
        if e.expired(now, window) {
            *e = Entry { failures: 0, pending: 0, last: now, until: None };
        }
        e
    }

    /// Drops expired counts; if that frees too little, the least significant ones (no
    /// back-off running, fewest failures, oldest) down to three quarters of the cap, so a
    /// flood of new addresses evicts its own entries first and pays the sort rarely.
    fn make_room(&self, state: &mut State, now: Instant) {
        let window = self.window;
        let mut kept: Vec<(Key, Entry)> =
            std::mem::take(&mut state.entries).into_iter().filter(|(_, e)| !e.expired(now, window)).collect();
        if kept.len() >= MAX_ENTRIES * 7 / 8 {
            // Most significant first: backing off or in flight, most failures, latest.
            let rank = |e: &Entry| (e.until.is_some_and(|u| u > now) || e.pending > 0, e.failures, e.last);
            kept.sort_unstable_by_key(|(_, e)| std::cmp::Reverse(rank(e)));
            kept.truncate(MAX_ENTRIES * 3 / 4);
        }
        // A new map rather than removals in place: a table left full of deleted slots makes
        // every later lookup of a missing key probe far.
        state.entries = kept.into_iter().collect();
    }

    /// Counters for `/metrics`.
    pub fn counts(&self) -> Counts {
        let read = |c: &[AtomicU64; 3]| [0, 1, 2].map(|i| c[i].load(Ordering::Relaxed));
        Counts { refused: read(&self.counters.refused), backoffs: read(&self.counters.backoffs) }
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let s = self.lock();
        (s.entries.len(), s.good.len())
    }
}

impl Admission<'_> {
    /// Whether the address was known-good for the user when admitted.
    pub fn known_good(&self) -> bool {
        self.known_good
    }

    /// The secret was wrong: one failure for each count of the attempt; returns the
    /// back-offs this started.
    pub fn failed(mut self, now: Instant) -> Vec<Backoff> {
        let t = self.throttle;
        let mut state = t.lock();
        release(&mut state, &std::mem::take(&mut self.pending));
        let mut keys = Throttle::keys(&self.attempt, self.known_good);
        if self.known_good {
            // A typo at a known-good address still counts against the address.
            keys.push(Key::Address(self.attempt.net));
        }
        let mut started = Vec::new();
        for key in keys {
            let e = t.entry(&mut state, key, now);
            e.failures = e.failures.saturating_add(1);
            e.last = now;
            if e.failures >= t.max_failures {
                let doublings = (e.failures - t.max_failures).min(30);
                let wait = FIRST_BACKOFF.saturating_mul(1 << doublings).min(t.window);
                e.until = Some(now + wait);
                t.counters.backoffs[key.reason().index()].fetch_add(1, Ordering::Relaxed);
                started.push(Backoff { reason: key.reason(), failures: e.failures, wait });
            }
        }
        started
    }

    /// The secret was right: the address becomes known-good for the user, and the user's
    /// count at that address starts again. The address and user counts stay (signing in
    /// as oneself must not buy guesses against others).
    pub fn succeeded(mut self, now: Instant) {
        let t = self.throttle;
        let mut state = t.lock();
        let pending = std::mem::take(&mut self.pending);
        release(&mut state, &pending);
        let a = self.attempt;
        state.entries.remove(&Key::UserAddress(a.user, a.net));
        // Counts this attempt made only to hold its place go with it.
        for key in &pending {
            if state.entries.get(key).is_some_and(|e| e.pending == 0 && e.failures == 0) {
                state.entries.remove(key);
            }
        }
        if !state.good.contains_key(&(a.user, a.net)) && state.good.len() >= MAX_GOOD {
            state.good.retain(|_, t| now < *t + GOOD_FOR);
            if state.good.len() >= MAX_GOOD {
                // Forget the oldest quarter: the least recently seen users and places.
                let mut by_age: Vec<(Instant, (Name, IpAddr))> = state.good.iter().map(|(k, t)| (*t, *k)).collect();
                by_age.sort_unstable();
                for (_, k) in by_age.into_iter().take(MAX_GOOD / 4) {
                    state.good.remove(&k);
                }
            }
        }
        state.good.insert((a.user, a.net), now);
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            release(&mut self.throttle.lock(), &self.pending);
        }
    }
}

/// Gives back the places of an attempt in flight.
fn release(state: &mut State, keys: &[Key]) {
    for key in keys {
        if let Some(e) = state.entries.get_mut(key) {
            e.pending = e.pending.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN_HOME: &str = "192.0.2.10";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pw(user: &str, addr: &str) -> Attempt {
        Attempt::new(user, ip(addr), Secret::Password)
    }

    /// Runs one attempt to its end: `Ok(true)` signed in, `Ok(false)` wrong secret.
    fn run(t: &Throttle, a: Attempt, right: bool, now: Instant) -> Result<bool, Refusal> {
        let adm = t.admit(a, now)?;
        if right {
            adm.succeeded(now);
        } else {
            let _ = adm.failed(now);
        }
        Ok(right)
    }

    #[test]
    fn decisions() {
        struct Case {
            name: &'static str,
            /// (user, address, right password) attempts made first, results ignored.
            before: Vec<(&'static str, String, bool)>,
            /// Then this attempt with the right password.
            then: (&'static str, &'static str),
            admitted: bool,
            reason: Option<Reason>,
        }
        let many = |user: &'static str, n: usize| -> Vec<(&'static str, String, bool)> {
            (0..n).map(|i| (user, format!("198.51.100.{}", i % 250), false)).collect()
        };
        let at = |user: &'static str, addr: &'static str, n: usize| -> Vec<(&'static str, String, bool)> {
            (0..n).map(|_| (user, addr.to_owned(), false)).collect()
        };
        let home = |user: &'static str, addr: &'static str| vec![(user, addr.to_owned(), true)];
        let cases = vec![
            Case {
                name: "attacker from many addresses, admin at its known-good address",
                before: [home("admin", ADMIN_HOME), many("admin", 200)].concat(),
                then: ("admin", ADMIN_HOME),
                admitted: true,
                reason: None,
            },
            Case {
                name: "attacker from many addresses, admin from a new address waits",
                before: [home("admin", ADMIN_HOME), many("admin", 200)].concat(),
                then: ("admin", "203.0.113.7"),
                admitted: false,
                reason: Some(Reason::User),
            },
            Case {
                name: "attacker at admin's own address guessing admin",
                before: [home("admin", ADMIN_HOME), at("admin", ADMIN_HOME, 10)].concat(),
                then: ("admin", ADMIN_HOME),
                admitted: false,
                reason: Some(Reason::UserAddress),
            },
            Case {
                name: "one address, users a..j fail; k known there still signs in",
                before: [
                    home("k", "203.0.113.1"),
                    ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
                        .iter()
                        .map(|u| (*u, "203.0.113.1".to_owned(), false))
                        .collect(),
                ]
                .concat(),
                then: ("k", "203.0.113.1"),
                admitted: true,
                reason: None,
            },
            Case {
                name: "one address, users a..j fail; k new there backs off",
                before: ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
                    .iter()
                    .map(|u| (*u, "203.0.113.1".to_owned(), false))
                    .collect(),
                then: ("k", "203.0.113.1"),
                admitted: false,
                reason: Some(Reason::Address),
            },
            Case {
                name: "nine failures are free",
                before: at("alice", "203.0.113.2", 9),
                then: ("alice", "203.0.113.2"),
                admitted: true,
                reason: None,
            },
            Case {
                name: "another address of the same IPv6 /64 is the same address",
                before: (0..10).map(|i| ("bob", format!("2001:db8::{i:x}"), false)).collect(),
                then: ("carol", "2001:db8::ffff"),
                admitted: false,
                reason: Some(Reason::Address),
            },
            Case {
                name: "an IPv4 client mapped into IPv6 is the IPv4 address",
                before: at("dave", "::ffff:203.0.113.3", 10),
                then: ("erin", "203.0.113.3"),
                admitted: false,
                reason: Some(Reason::Address),
            },
        ];
        for c in cases {
            let t = Throttle::new(10, Duration::from_secs(300));
            let now = Instant::now();
            for (user, addr, right) in &c.before {
                let _ = run(&t, pw(user, addr), *right, now);
            }
            let got = t.admit(pw(c.then.0, c.then.1), now).map(|adm| adm.succeeded(now));
            assert_eq!(got.is_ok(), c.admitted, "{}: {got:?}", c.name);
            assert_eq!(got.err().map(|r| r.reason), c.reason, "{}", c.name);
        }
    }

    #[test]
    fn random_secrets_have_no_user_count() {
        // Failures of a key id (or of `AWS`, every login token) from many addresses must
        // not refuse the key from a new address: its secret cannot be guessed.
        let t = Throttle::new(3, Duration::from_secs(300));
        let now = Instant::now();
        for i in 0..50 {
            let a = Attempt::new("BKIAEXAMPLE", ip(&format!("198.51.100.{i}")), Secret::Random);
            let _ = run(&t, a, false, now);
        }
        assert!(t.admit(Attempt::new("BKIAEXAMPLE", ip("203.0.113.9"), Secret::Random), now).is_ok());
    }

    #[test]
    fn backoff_doubles_up_to_the_window_and_only_failures_count() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let a = pw("alice", "203.0.113.4");
        let mut now = Instant::now();
        for _ in 0..2 {
            assert_eq!(t.admit(a, now).unwrap().failed(now), []);
        }
        let mut waits = Vec::new();
        for _ in 0..10 {
            let adm = t.admit(a, now).unwrap();
            let started = adm.failed(now);
            let wait = started.iter().map(|b| b.wait).max().unwrap();
            // Refused (all counts agree) until the back-off ends; refusals do not count.
            for _ in 0..5 {
                assert_eq!(t.admit(a, now + wait / 2).err().map(|r| r.wait), Some(wait - wait / 2));
            }
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        let counts = t.counts();
        // Every count backs off alike; the refusal names the first (user at address).
        assert_eq!(counts.refused, [0, 50, 0]);
        assert_eq!(counts.backoffs, [10, 10, 10]);
        // A whole quiet window after the last back-off and the count starts again.
        now += Duration::from_secs(60);
        assert!(t.admit(a, now).unwrap().failed(now).is_empty());
    }

    #[test]
    fn attempts_in_flight_hold_the_free_failures() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let now = Instant::now();
        let a = pw("alice", "203.0.113.5");
        let held: Vec<_> = (0..3).map(|_| t.admit(a, now).unwrap()).collect();
        assert!(t.admit(a, now).is_err(), "a fourth parallel guess waits");
        drop(held);
        assert!(t.admit(a, now).is_ok(), "dropped attempts give their places back");
        // At a known-good address the user's own parallel requests are not held back.
        run(&t, a, true, now).unwrap();
        let held: Vec<_> = (0..20).map(|_| t.admit(a, now).unwrap()).collect();
        assert!(held.iter().all(Admission::known_good));
    }

    #[test]
    fn signing_in_as_oneself_does_not_reset_the_address() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let now = Instant::now();
        run(&t, pw("mallory", "203.0.113.6"), true, now).unwrap();
        for u in ["a", "b", "c"] {
            let _ = run(&t, pw(u, "203.0.113.6"), false, now);
        }
        // mallory has an account and is known there: her sign-in passes but buys nothing.
        run(&t, pw("mallory", "203.0.113.6"), true, now).unwrap();
        assert_eq!(t.admit(pw("d", "203.0.113.6"), now).err().map(|r| r.reason), Some(Reason::Address));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let t = Throttle::new(3, Duration::from_secs(300));
        let now = Instant::now();
        // The admin's name under attack: its count is backing off and must survive.
        for i in 0..10 {
            let _ = run(&t, pw("admin", &format!("198.51.100.{i}")), false, now);
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..60_000u32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let addr = IpAddr::from((seed as u32).to_be_bytes());
            let user = format!("u{seed:x}");
            let _ = run(&t, Attempt::new(&user, addr, Secret::Password), false, now);
            if i % 1000 == 0 {
                let _ = run(&t, Attempt::new(&user, addr, Secret::Password), true, now);
            }
        }
        let (entries, good) = t.sizes();
        assert!(entries <= MAX_ENTRIES, "{entries} failure counts");
        assert!(good <= MAX_GOOD, "{good} good addresses");
        assert_eq!(t.admit(pw("admin", "203.0.113.8"), now).err().map(|r| r.reason), Some(Reason::User));
        // The good history is bounded too.
        for i in 0..(MAX_GOOD as u32 + 1000) {
            let _ = run(&t, Attempt::new("x", IpAddr::from(i.to_be_bytes()), Secret::Random), true, now);
        }
        assert!(t.sizes().1 <= MAX_GOOD);
    }
}
