//! What one token costs to verify and to sign, as the registry does it: an access token for
//! one repository, checked by [`Verifier::verify`] with the registry's 30 s leeway.
//!
//! ```text
//! cargo run --release -p berth-auth --example token_verify [verifies [runs]]
//! ```
//! Defaults: 10,000 verifies per run, 5 runs; signing is timed over a tenth as many. Each line
//! gives one run's mean per operation, wall clock and (on Linux) time on the CPU, which a
//! busy shared machine disturbs less; the last lines give min–max over the runs. The
//! registry's cache of verified tokens (`registry::auth::VerifiedTokens`) is not exercised
//! here: it answers a token it has seen from a SHA-256 of its text, without the verifier.

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_auth::token::{Claims, ResourceActions, SigningKey, TokenUse, Verifier};

const ISSUER: &str = "berth-token-service";
const AUDIENCE: &str = "registry.example";

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let verifies: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let runs: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let signs = (verifies / 10).max(1);

    let key = SigningKey::generate()?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let access = vec![ResourceActions {
        resource_type: "repository".into(),
        name: "team/service-api".into(),
        actions: vec!["pull".into(), "push".into()],
    }];
    let claims = Claims::new(TokenUse::Access, ISSUER, "alice", AUDIENCE, now, Duration::from_secs(300), access);
    let token = key.sign(&claims)?;
    let verifier = Verifier::new(ISSUER, std::slice::from_ref(&key), Duration::from_secs(30));
    assert_eq!(verifier.verify(&token, AUDIENCE, TokenUse::Access, now)?, claims);
    println!("token: {} bytes; {verifies} verifies and {signs} signs per run, {runs} runs", token.len());

    let (mut verify_us, mut verify_cpu, mut sign_us, mut sign_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let (start, cpu) = (Instant::now(), on_cpu_ns());
        for _ in 0..verifies {
            black_box(verifier.verify(black_box(&token), AUDIENCE, TokenUse::Access, now)?);
        }
        let v = start.elapsed().as_secs_f64() * 1e6 / f64::from(verifies);
        let vc = on_cpu_ns().zip(cpu).map(|(end, start)| (end - start) as f64 / 1e3 / f64::from(verifies));
        let (start, cpu) = (Instant::now(), on_cpu_ns());
        for _ in 0..signs {
            black_box(key.sign(black_box(&claims))?);
        }
        let s = start.elapsed().as_secs_f64() * 1e6 / f64::from(signs);
        let sc = on_cpu_ns().zip(cpu).map(|(end, start)| (end - start) as f64 / 1e3 / f64::from(signs));
        let cpu = |c: Option<f64>| c.map(|c| format!(" ({c:.2} on CPU)")).unwrap_or_default();
        println!("run {run}: verify {v:.2} µs{}, sign {s:.2} µs{}", cpu(vc), cpu(sc));
        verify_us.push(v);
        sign_us.push(s);
        verify_cpu.extend(vc);
        sign_cpu.extend(sc);
    }
    let range = |xs: &[f64]| {
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(0.0, f64::max);
        format!("{min:.2}–{max:.2} µs")
    };
    println!("verify: {} wall, {} on CPU", range(&verify_us), range(&verify_cpu));
    println!("sign:   {} wall, {} on CPU", range(&sign_us), range(&sign_cpu));
    Ok(())
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`, first field),
/// where Linux offers it.
fn on_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}
