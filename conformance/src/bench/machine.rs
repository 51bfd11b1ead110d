//! The machine and software a benchmark ran on, printed with every result.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// CPU, memory and kernel, from `/proc`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// Cores this process may use.
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
}

impl Machine {
    /// Reads what `/proc` offers; unknown fields say "unknown".
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".to_owned()),
            mem_total_mib: field(&meminfo, "MemTotal")
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned()),
        }
    }

    /// `2 cores, AMD EPYC …, 23.4 GiB RAM, Linux 6.1`.
    pub fn summary(&self) -> String {
        format!(
            "{} cores, {}, {:.1} GiB RAM, Linux {}",
            self.nproc,
            self.cpu_model,
            self.mem_total_mib as f64 / 1024.0,
            self.kernel
        )
    }
}

/// The value of the first `key: value` line of a `/proc` file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// The first line `bin --version` prints, or why there is none.
pub fn version_of(bin: &Path) -> String {
    match Command::new(bin).arg("--version").output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_owned()
        }
        Err(err) => format!("unknown ({}: {err})", bin.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t: sse\n";
        assert_eq!(field(text, "model name").as_deref(), Some("AMD EPYC 9R14"));
        assert_eq!(field("MemTotal:       24576000 kB\n", "MemTotal").as_deref(), Some("24576000 kB"));
        assert_eq!(field(text, "nope"), None);
        let m = Machine::probe();
        assert!(m.nproc >= 1);
        assert!(m.summary().contains("cores"));
    }
}
