//! Registry processes the compare mode starts: Berth and CNCF Distribution,
//! each on a loopback port and a fresh data directory of its own, and what
//! `/proc` says about their memory.
//!
//! Only processes started here are ever signalled, by their PID: SIGTERM
//! first, SIGKILL after a deadline. A [`ServerProcess`] dropped without
//! [`ServerProcess::stop`] (a panic, an early return) is killed on drop, so
//! no server outlives the tool.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Serialize;

use super::{BenchError, Target};

/// How to install Distribution when `docker-registry` is missing.
pub const DISTRIBUTION_INSTALL_HINT: &str =
    "install CNCF Distribution 2.8 with: apt-get update && apt-get install -y --no-install-recommends docker-registry";

/// Which registry a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    Berth,
    Distribution,
}

impl ServerKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Berth => "Berth",
            Self::Distribution => "Distribution",
        }
    }
}

/// A registry process this tool started.
#[derive(Debug)]
pub struct ServerProcess {
    kind: ServerKind,
    child: Child,
    url: Url,
    log: PathBuf,
    /// The data directory and config; removed when the process is gone.
    dir: tempfile::TempDir,
}

/// A port on 127.0.0.1 that was free a moment ago: bound to port 0, read,
/// released. (A process we start cannot be handed our socket; the race with
/// other programs is accepted, and a lost race shows up as a failed start.)
pub fn free_port() -> Result<u16, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Peak resident set size (`VmHWM`) of process `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// CPU time (user + system, all threads) process `pid` has used, in
/// seconds, from `/proc/PID/stat` (clock ticks of 1/100 s, the Linux
/// `USER_HZ` on every architecture this runs on).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    parse_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|ticks| ticks as f64 / 100.0)
}

/// CPU time this process has used, in seconds.
pub fn own_cpu_secs() -> Option<f64> {
    cpu_secs(std::process::id())
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces; the
    // fields after it start with the state (field 3), so utime (field 14) and
    // stime (field 15) are at positions 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()
}

/// Resets the peak RSS of `pid` to its current RSS (`echo 5 >
/// /proc/PID/clear_refs`), so the next [`peak_rss_kib`] covers only what ran
/// since. Needs the right to ptrace the process (same user, or root).
pub fn reset_peak_rss(pid: u32) -> Result<(), BenchError> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .map_err(|e| BenchError::new(format!("cannot reset the peak RSS of pid {pid}: {e}")))
}

/// One core kept busy: a `sh` busy loop in a child process, for as long as
/// this value lives (dropping it kills the child by its PID and reaps it).
/// It stands for the other work a registry node does next to serving pulls.
#[derive(Debug)]
pub struct CpuBurner {
    child: std::process::Child,
}

impl CpuBurner {
    /// Starts the loop.
    pub fn start() -> Result<Self, BenchError> {
        let child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::new(format!("cannot start the CPU burner (sh): {e}")))?;
        Ok(Self { child })
    }

    /// The burner's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for CpuBurner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Distribution configuration the compare mode uses: filesystem storage,
/// deletes on, errors-only logging, no access log.
pub fn distribution_config(root: &Path, port: u16) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n",
        root.display()
    )
}

/// Removes from `cmd`'s environment every inherited variable whose name
/// starts with `prefix` (Berth reads every `BERTH_*` as configuration and
/// refuses unknown keys; Distribution reads `REGISTRY_*` as overrides).
fn strip_env(cmd: &mut Command, prefix: &str) {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with(prefix)) {
            cmd.env_remove(&name);
        }
    }
}

impl ServerProcess {
    /// Starts `bin serve --listen 127.0.0.1:PORT --data-dir DIR` with
    /// `BERTH_LOG__LEVEL=warn` and `BERTH_AUTH__ENABLED=false` (Distribution runs
    /// without auth too) plus `extra_env`, which may turn auth back on, in a fresh
    /// directory under `data_root`, and waits until `/v2/` answers.
    pub async fn start_berth(
        bin: &Path,
        data_root: &Path,
        extra_env: &[(String, String)],
    ) -> Result<ServerProcess, BenchError> {
        let dir = tempdir_in(data_root, "berth-bench-berth-")?;
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        strip_env(&mut cmd, "BERTH_");
        cmd.env_remove("RUST_LOG").env("BERTH_LOG__LEVEL", "warn").env("BERTH_AUTH__ENABLED", "false");
        for (key, value) in extra_env {
            cmd.env(key, value);
        }
        Self::spawn(ServerKind::Berth, cmd, dir, port).await
    }

    /// Starts `bin serve CONFIG` ([`distribution_config`]) in a fresh
    /// directory under `data_root`, and waits until `/v2/` answers.
    pub async fn start_distribution(bin: &Path, data_root: &Path) -> Result<ServerProcess, BenchError> {
        if !bin.exists() {
            return Err(BenchError::new(format!("{} not found; {DISTRIBUTION_INSTALL_HINT}", bin.display())));
        }
        let dir = tempdir_in(data_root, "berth-bench-distribution-")?;
        let port = free_port()?;
        let config = dir.path().join("config.yml");
        std::fs::write(&config, distribution_config(&dir.path().join("data"), port))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&config);
        strip_env(&mut cmd, "REGISTRY_");
        Self::spawn(ServerKind::Distribution, cmd, dir, port).await
    }

    async fn spawn(kind: ServerKind, mut cmd: Command, dir: tempfile::TempDir, port: u16) -> Result<Self, BenchError> {
        let log = dir.path().join("server.log");
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let program = cmd.get_program().to_owned();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| BenchError::new(format!("cannot start {}: {e}", Path::new(&program).display())))?;
        let url = Url::parse(&format!("http://127.0.0.1:{port}"))
            .map_err(|e| BenchError::new(format!("bad server URL: {e}")))?;
        let mut server = Self { kind, child, url, log, dir };
        server.wait_ready(Duration::from_secs(30)).await?;
        Ok(server)
    }

    /// Polls `GET /v2/` every 50 ms until it answers, the process exits, or
    /// `deadline` passes.
    async fn wait_ready(&mut self, deadline: Duration) -> Result<(), BenchError> {
        let target = Target::new(self.url.clone(), None)?;
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::new(format!(
                    "{} exited during startup ({status}); log:\n{}",
                    self.kind.label(),
                    self.log_tail()
                )));
            }
            if target.ping().await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > deadline {
                return Err(BenchError::new(format!(
                    "{} not ready on {} after {} s; log:\n{}",
                    self.kind.label(),
                    self.url,
                    deadline.as_secs(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last 2 KB of the server's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// The server's log lines that report errors (at most `max`), to explain failed requests.
    pub fn error_lines(&self, max: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter(|l| l.contains("ERROR") || l.contains("level=error")).take(max).map(str::to_owned).collect()
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the server keeps its data.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Peak RSS of the process since it started, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid())
    }

    /// SIGTERM, up to 10 s for the process to exit, then SIGKILL. Removes
    /// the data directory. Returns a sentence about how it ended.
    pub async fn stop(mut self) -> Result<String, BenchError> {
        let pid = self.pid().to_string();
        // std can only SIGKILL; `kill -TERM` asks for a graceful exit.
        let termed = Command::new("kill")
            .args([OsStr::new("-TERM"), OsStr::new(&pid)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let started = Instant::now();
        while termed && started.elapsed() < Duration::from_secs(10) {
            if let Some(status) = self.child.try_wait()? {
                return Ok(format!("{} exited after SIGTERM ({status})", self.kind.label()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        Ok(format!("{} killed ({status}){}", self.kind.label(), if termed { " after SIGTERM timed out" } else { "" }))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tempdir_in(root: &Path, prefix: &str) -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(root)
        .map_err(|e| BenchError::new(format!("cannot create a data directory in {}: {e}", root.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_burner_burns_until_dropped() {
        let burner = CpuBurner::start().unwrap();
        let pid = burner.pid();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(burner);
        // Killed and reaped: the PID is gone (or reused by an unrelated process that is
        // not our shell loop).
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!cmdline.contains("while :"), "{cmdline}");
    }

    #[test]
    fn vm_hwm_parsing() {
        let status = "Name:\tberth\nVmPeak:\t  900 kB\nVmHWM:\t   12345 kB\nVmRSS:\t  100 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(12345));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        assert!(peak_rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn cpu_ticks_parsing() {
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert!(own_cpu_secs().is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn distribution_config_has_the_required_keys() {
        let yaml = distribution_config(Path::new("/tmp/x/data"), 5123);
        for needle in [
            "version: 0.1",
            "rootdirectory: /tmp/x/data",
            "delete:\n    enabled: true",
            "addr: 127.0.0.1:5123",
            "level: error",
            "accesslog:\n    disabled: true",
        ] {
            assert!(yaml.contains(needle), "{needle:?} missing from\n{yaml}");
        }
    }

    #[test]
    fn free_ports_are_nonzero() -> Result<(), BenchError> {
        assert_ne!(free_port()?, 0);
        Ok(())
    }
}
