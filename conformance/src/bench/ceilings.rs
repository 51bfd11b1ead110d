//! This machine's physical limits, measured in the same run as the
//! benchmark so each throughput can be read as a fraction of what is possible:
//!
//! - SHA-256 on one core (`sha2`, which uses SHA-NI when the CPU has it):
//!   every pushed byte is hashed once by the server.
//! - AES-256-GCM on one core (`aws-lc-rs`, seal in place): the cost of
//!   encryption at rest, should a registry do it.
//! - Loopback TCP between two threads: every pulled byte crosses it.
//! - Sustained disk write: ~1 GiB of random data then `fdatasync`, in the
//!   directory where the servers keep their data.
//!
//! All figures are MB/s (10^6 bytes/s). Each runs on the calling thread (the
//! loopback test adds one reader thread); call from a blocking context.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::BenchError;
use super::payload::SplitMix64;
use super::stats;

const BUF: usize = 1 << 20;

/// How long and how much to measure.
#[derive(Debug, Clone)]
pub struct CeilingParams {
    /// Duration of each CPU test (SHA-256, AES-256-GCM), split in three runs.
    pub cpu: Duration,
    /// Duration of the loopback test, split in three runs.
    pub loopback: Duration,
    /// Bytes written for the disk test.
    pub disk_bytes: u64,
    /// Where the disk test writes (its file is removed afterwards).
    pub disk_dir: PathBuf,
}

impl CeilingParams {
    /// About 8 s: 1.5 s per CPU test, 3 s of loopback, 1 GiB of disk.
    pub fn full(disk_dir: PathBuf) -> Self {
        Self { cpu: Duration::from_millis(1500), loopback: Duration::from_secs(3), disk_bytes: 1 << 30, disk_dir }
    }

    /// Well under a second, for smoke runs.
    pub fn quick(disk_dir: PathBuf) -> Self {
        Self { cpu: Duration::from_millis(100), loopback: Duration::from_millis(200), disk_bytes: 16 << 20, disk_dir }
    }
}

/// The measured limits, in MB/s.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ceilings {
    pub sha256_mbps: f64,
    pub aes256gcm_mbps: f64,
    pub loopback_mbps: f64,
    pub disk_write_mbps: f64,
    /// Where the disk was measured.
    pub disk_dir: String,
    /// Bytes written for the disk figure (the disk absorbs bursts of 1–2 GiB
    /// faster than it sustains larger writes).
    pub disk_bytes: u64,
}

impl Ceilings {
    /// What bounds a push: the server hashes and writes every byte.
    pub fn push(&self) -> f64 {
        self.sha256_mbps.min(self.disk_write_mbps)
    }

    /// What bounds a pull: every byte crosses loopback.
    pub fn pull(&self) -> f64 {
        self.loopback_mbps
    }

    /// The ceiling for a throughput of this kind.
    pub fn for_kind(&self, kind: super::CeilingKind) -> f64 {
        match kind {
            super::CeilingKind::Push => self.push(),
            super::CeilingKind::Pull => self.pull(),
        }
    }
}

fn rate(bytes: u64, elapsed: Duration) -> Result<f64, BenchError> {
    stats::megabytes_per_sec(bytes, elapsed.as_secs_f64()).ok_or_else(|| BenchError::new("no time elapsed"))
}

fn random_buffer() -> Vec<u8> {
    let mut buf = vec![0; BUF];
    SplitMix64::from_entropy().fill(&mut buf);
    buf
}

/// Single-core SHA-256 over 1 MiB updates for `duration`.
pub fn sha256(duration: Duration) -> Result<f64, BenchError> {
    let buf = random_buffer();
    let mut hasher = Sha256::new();
    hasher.update(&buf); // warm-up
    let (started, mut bytes) = (Instant::now(), 0u64);
    while started.elapsed() < duration {
        hasher.update(&buf);
        bytes += BUF as u64;
    }
    let elapsed = started.elapsed();
    std::hint::black_box(hasher.finalize());
    rate(bytes, elapsed)
}

/// Single-core AES-256-GCM sealing 1 MiB messages in place for `duration`.
pub fn aes256gcm(duration: Duration) -> Result<f64, BenchError> {
    let mut key_bytes = [0u8; 32];
    SplitMix64::from_entropy().fill(&mut key_bytes);
    let key = UnboundKey::new(&AES_256_GCM, &key_bytes).map_err(|_| BenchError::new("AES-256-GCM key rejected"))?;
    let key = LessSafeKey::new(key);
    let mut buf = random_buffer();
    let mut seal = |counter: u64| -> Result<(), BenchError> {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .map_err(|_| BenchError::new("AES-256-GCM seal failed"))?;
        let _ = std::hint::black_box(tag);
        Ok(())
    };
    seal(0)?; // warm-up
    let (started, mut bytes, mut counter) = (Instant::now(), 0u64, 1u64);
    while started.elapsed() < duration {
        seal(counter)?;
        counter += 1;
        bytes += BUF as u64;
    }
    rate(bytes, started.elapsed())
}

/// One TCP connection over 127.0.0.1: this thread writes 1 MiB buffers for
/// `duration`, a second thread reads and discards them.
pub fn loopback(duration: Duration) -> Result<f64, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0; BUF];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let buf = random_buffer();
    let started = Instant::now();
    let written = (|| -> std::io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        while started.elapsed() < duration {
            stream.write_all(&buf)?;
        }
        stream.shutdown(std::net::Shutdown::Write)
    })();
    let read = reader.join().map_err(|_| BenchError::new("loopback reader thread panicked"))?;
    let elapsed = started.elapsed();
    written?;
    rate(read?, elapsed)
}

/// Writes `bytes` of random data in 1 MiB writes to a new file in `dir`,
/// then `fdatasync`s it; the time includes the sync. The file is removed.
pub fn disk_write(dir: &Path, bytes: u64) -> Result<f64, BenchError> {
    let mut buf = random_buffer();
    let mut file = tempfile::Builder::new()
        .prefix("berth-bench-disk-")
        .tempfile_in(dir)
        .map_err(|e| BenchError::new(format!("cannot create a file in {}: {e}", dir.display())))?;
    let started = Instant::now();
    let mut written = 0u64;
    let mut block = 0u64;
    while written < bytes {
        buf[..8].copy_from_slice(&block.to_le_bytes());
        block += 1;
        let n = (bytes - written).min(BUF as u64) as usize;
        file.as_file_mut().write_all(&buf[..n])?;
        written += n as u64;
    }
    file.as_file().sync_data()?;
    let elapsed = started.elapsed();
    drop(file);
    rate(written, elapsed)
}

/// The best of three runs of `measure`, each a third of `total` long: a
/// ceiling is what the machine can do, and a neighbour's burst of work only
/// ever lowers a figure.
fn best_of_three(total: Duration, measure: fn(Duration) -> Result<f64, BenchError>) -> Result<f64, BenchError> {
    let mut best: f64 = 0.0;
    for _ in 0..3 {
        best = best.max(measure(total / 3)?);
    }
    Ok(best)
}

/// Runs all four measurements: SHA-256, AES-256-GCM and loopback as the best
/// of three runs, the disk once (its size is the point).
pub fn measure(params: &CeilingParams) -> Result<Ceilings, BenchError> {
    Ok(Ceilings {
        sha256_mbps: best_of_three(params.cpu, sha256).map_err(|e| e.context("SHA-256"))?,
        aes256gcm_mbps: best_of_three(params.cpu, aes256gcm).map_err(|e| e.context("AES-256-GCM"))?,
        loopback_mbps: best_of_three(params.loopback, loopback).map_err(|e| e.context("loopback"))?,
        disk_write_mbps: disk_write(&params.disk_dir, params.disk_bytes).map_err(|e| e.context("disk"))?,
        disk_dir: params.disk_dir.display().to_string(),
        disk_bytes: params.disk_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_ceilings_are_positive() -> Result<(), BenchError> {
        let dir = tempfile::tempdir()?;
        let mut params = CeilingParams::quick(dir.path().to_owned());
        params.cpu = Duration::from_millis(20);
        params.loopback = Duration::from_millis(50);
        params.disk_bytes = (2 << 20) + 123;
        let c = measure(&params)?;
        for v in [c.sha256_mbps, c.aes256gcm_mbps, c.loopback_mbps, c.disk_write_mbps] {
            assert!(v > 0.0 && v.is_finite(), "{c:?}");
        }
        assert_eq!(c.push(), c.sha256_mbps.min(c.disk_write_mbps));
        assert_eq!(c.pull(), c.loopback_mbps);
        // The disk test leaves nothing behind.
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        Ok(())
    }
}
