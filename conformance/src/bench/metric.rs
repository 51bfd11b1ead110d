//! What a scenario round measures: named metrics with units, and what went
//! wrong, collected by a [`Recorder`] so no failure panics or aborts the run.

use std::time::Duration;

use serde::Serialize;

use super::Scenario;
use super::stats::{self, LatencySummary};

/// The unit of a metric, which also says which direction is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Unit {
    /// 10^6 bytes per second.
    #[serde(rename = "MB/s")]
    MegabytesPerSec,
    #[serde(rename = "req/s")]
    RequestsPerSec,
    #[serde(rename = "images/s")]
    ImagesPerSec,
    /// Repositories or tags created per second (listing setup).
    #[serde(rename = "items/s")]
    ItemsPerSec,
    #[serde(rename = "ms")]
    Millis,
    #[serde(rename = "s")]
    Seconds,
    /// Memory, 2^20 bytes.
    #[serde(rename = "MiB")]
    Mebibytes,
    /// Server CPU seconds (user + system, all threads) per GiB moved in a
    /// timed section: what a byte costs, stable where throughput is not.
    #[serde(rename = "CPU-s/GiB")]
    CpuSecsPerGib,
    /// The same for this benchmark client (it shares the cores): shown in
    /// the notes, to tell whether the client bounded a figure.
    #[serde(rename = "client CPU-s/GiB")]
    ClientCpuSecsPerGib,
}

impl Unit {
    /// The label printed in tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::MegabytesPerSec => "MB/s",
            Self::RequestsPerSec => "req/s",
            Self::ImagesPerSec => "images/s",
            Self::ItemsPerSec => "items/s",
            Self::Millis => "ms",
            Self::Seconds => "s",
            Self::Mebibytes => "MiB",
            Self::CpuSecsPerGib => "CPU-s/GiB",
            Self::ClientCpuSecsPerGib => "client CPU-s/GiB",
        }
    }

    /// Rates are better high; times and memory are better low.
    pub fn higher_is_better(self) -> bool {
        match self {
            Self::MegabytesPerSec | Self::RequestsPerSec | Self::ImagesPerSec | Self::ItemsPerSec => true,
            Self::Millis | Self::Seconds | Self::Mebibytes | Self::CpuSecsPerGib | Self::ClientCpuSecsPerGib => false,
        }
    }
}

/// Which physical limit a throughput is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CeilingKind {
    /// A push must hash and write every byte: min(single-core SHA-256, disk write).
    Push,
    /// A pull moves every byte over loopback TCP.
    Pull,
}

/// One measured quantity of one round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Name within its scenario, e.g. `monolithic 64 MiB`; with the unit, it
    /// identifies the metric across rounds and registries.
    pub name: String,
    pub unit: Unit,
    /// The value; `None` when it could not be measured (see `unavailable`).
    pub value: Option<f64>,
    /// Why there is no value ("registry ignores n on tags/list", "failed: …").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// The per-iteration values behind `value` (MB/s of each push, ms of each
    /// page), where there is a handful of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
    /// The latency distribution behind a request-rate metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<CeilingKind>,
}

impl Metric {
    /// A measured value.
    pub fn new(name: impl Into<String>, unit: Unit, value: f64) -> Self {
        Self {
            name: name.into(),
            unit,
            value: value.is_finite().then_some(value),
            unavailable: (!value.is_finite()).then(|| "no finite value".to_owned()),
            samples: Vec::new(),
            latency: None,
            ceiling: None,
        }
    }

    /// A metric that could not be measured, and why.
    pub fn unavailable(name: impl Into<String>, unit: Unit, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            unit,
            value: None,
            unavailable: Some(reason.into()),
            samples: Vec::new(),
            latency: None,
            ceiling: None,
        }
    }

    #[must_use]
    pub fn with_samples(mut self, samples: Vec<f64>) -> Self {
        self.samples = samples;
        self
    }

    #[must_use]
    pub fn with_ceiling(mut self, ceiling: CeilingKind) -> Self {
        self.ceiling = Some(ceiling);
        self
    }

    #[must_use]
    pub fn with_latency(mut self, latency: LatencySummary) -> Self {
        self.latency = Some(latency);
        self
    }
}

/// Everything one round of one scenario against one registry produced.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioRun {
    pub scenario: Scenario,
    /// 0-based round number.
    pub round: usize,
    pub metrics: Vec<Metric>,
    /// Failed requests and checks, one sentence each. Empty on a clean run.
    pub errors: Vec<String>,
    /// Facts worth knowing that are not failures (which upload mode the
    /// registry needed, how many entries a listing returned, …).
    pub notes: Vec<String>,
    /// Time spent preparing content on the server (first round only), not
    /// part of any metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup_secs: Option<f64>,
    /// Wall time of the round, setup included.
    pub elapsed_secs: f64,
    /// CPU time spent during the round, setup included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUse>,
}

/// CPU seconds the benchmark client and the server used during a round: on
/// a small machine they share the cores, and this says who had them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuUse {
    /// This process (requests, and hashing of fresh content outside the timed sections).
    pub client_secs: f64,
    /// The server process, when its PID is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_secs: Option<f64>,
}

/// CPU seconds used so far by the server (`/proc/PID/stat`, all threads)
/// and by this process, read together at the start of a timed section.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSnapshot {
    server_pid: Option<u32>,
    server: Option<f64>,
    client: Option<f64>,
}

impl CpuSnapshot {
    /// Reads both counters now.
    pub fn take(server_pid: Option<u32>) -> Self {
        Self { server_pid, server: server_pid.and_then(super::server::cpu_secs), client: super::server::own_cpu_secs() }
    }

    /// CPU spent since this snapshot (`None` where a counter could not be read).
    pub fn spent(&self) -> CpuSpent {
        let later = Self::take(self.server_pid);
        CpuSpent {
            server: self.server.zip(later.server).map(|(a, b)| (b - a).max(0.0)),
            client: self.client.zip(later.client).map(|(a, b)| (b - a).max(0.0)),
        }
    }
}

/// CPU seconds spent by the server and the client in timed sections.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSpent {
    pub server: Option<f64>,
    pub client: Option<f64>,
}

impl CpuSpent {
    /// Adds another section's CPU (a counter unknown in either stays unknown).
    pub fn add(&mut self, other: CpuSpent, first: bool) {
        if first {
            *self = other;
        } else {
            self.server = self.server.zip(other.server).map(|(a, b)| a + b);
            self.client = self.client.zip(other.client).map(|(a, b)| a + b);
        }
    }
}

/// The result of a fixed-duration request loop.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Latency of every successful request.
    pub latencies: Vec<Duration>,
    /// Bytes received by successful requests.
    pub bytes: u64,
    /// Requests that failed.
    pub failures: u64,
    /// The first failure, as an example.
    pub first_failure: Option<String>,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
}

/// Collects a round's metrics, errors and notes.
#[derive(Debug, Default)]
pub struct Recorder {
    pub metrics: Vec<Metric>,
    pub errors: Vec<String>,
    pub notes: Vec<String>,
    pub setup_secs: Option<f64>,
    /// The server's process, when known: its CPU per GiB is recorded with
    /// every transfer metric.
    pub server_pid: Option<u32>,
}

impl Recorder {
    pub fn metric(&mut self, metric: Metric) {
        self.metrics.push(metric);
    }

    pub fn error(&mut self, error: impl Into<String>) {
        self.errors.push(error.into());
    }

    /// Adds a note unless the same note is already there.
    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// Adds setup time to the round's total.
    pub fn add_setup(&mut self, secs: f64) {
        *self.setup_secs.get_or_insert(0.0) += secs;
    }

    /// A transfer metric from timed iterations: MB/s over all of them, each
    /// iteration's MB/s as samples. A failure makes the metric n/a and is
    /// recorded as an error.
    pub fn throughput(&mut self, name: &str, timed: &Timed, failure: Option<super::BenchError>, ceiling: CeilingKind) {
        if let Some(err) = failure {
            self.error(format!("{name}: {err}"));
            self.metric(Metric::unavailable(name, Unit::MegabytesPerSec, format!("failed: {err}")));
            return;
        }
        match stats::megabytes_per_sec(timed.bytes, timed.secs) {
            Some(rate) => {
                self.metric(
                    Metric::new(name, Unit::MegabytesPerSec, rate)
                        .with_samples(timed.samples.clone())
                        .with_ceiling(ceiling),
                );
                self.cpu_per_gib(name, timed.bytes, timed.cpu);
            }
            None => self.metric(Metric::unavailable(name, Unit::MegabytesPerSec, "nothing was measured")),
        }
    }

    /// Server CPU-s/GiB and client CPU-s/GiB of `bytes` moved, both named
    /// `name`. A counter that moved less than one clock tick (10 ms) is not
    /// a measurement: no metric then, and a note says so.
    pub fn cpu_per_gib(&mut self, name: &str, bytes: u64, cpu: CpuSpent) {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        if gib <= 0.0 {
            return;
        }
        for (secs, unit) in [(cpu.server, Unit::CpuSecsPerGib), (cpu.client, Unit::ClientCpuSecsPerGib)] {
            match secs {
                Some(secs) if secs > 0.0 => self.metric(Metric::new(name, unit, secs / gib)),
                Some(_) => self.note(format!("{name}: {} below the 10 ms clock tick, not reported", unit.label())),
                None => {}
            }
        }
    }

    /// Metrics of a fixed-duration loop named `name`: requests/s (with the
    /// latency summary attached) and MB/s when `ceiling` is given, both named
    /// `name`, then `name p50` and `name p99` in ms. (A metric is known by its
    /// name and unit together.)
    pub fn load(&mut self, name: &str, result: &LoadResult, ceiling: Option<CeilingKind>) {
        let total = result.latencies.len() as u64 + result.failures;
        if result.failures > 0 {
            self.error(format!(
                "{name}: {} of {total} requests failed, first: {}",
                result.failures,
                result.first_failure.as_deref().unwrap_or("?")
            ));
        }
        let secs = result.elapsed.as_secs_f64();
        let (Some(rate), Some(summary)) =
            (stats::per_sec(result.latencies.len() as u64, secs), LatencySummary::from_durations(&result.latencies))
        else {
            let reason = match &result.first_failure {
                Some(err) => format!("failed: {err}"),
                None => "no request completed".to_owned(),
            };
            self.metric(Metric::unavailable(name, Unit::RequestsPerSec, reason.clone()));
            if ceiling.is_some() {
                self.metric(Metric::unavailable(name, Unit::MegabytesPerSec, reason.clone()));
            }
            self.metric(Metric::unavailable(format!("{name} p50"), Unit::Millis, reason.clone()));
            self.metric(Metric::unavailable(format!("{name} p99"), Unit::Millis, reason));
            return;
        };
        self.metric(Metric::new(name, Unit::RequestsPerSec, rate).with_latency(summary));
        if let Some(ceiling) = ceiling
            && let Some(mbps) = stats::megabytes_per_sec(result.bytes, secs)
        {
            self.metric(Metric::new(name, Unit::MegabytesPerSec, mbps).with_ceiling(ceiling));
        }
        self.metric(Metric::new(format!("{name} p50"), Unit::Millis, summary.p50_ms));
        self.metric(Metric::new(format!("{name} p99"), Unit::Millis, summary.p99_ms));
    }
}

/// Accumulates timed transfers.
#[derive(Debug, Clone, Default)]
pub struct Timed {
    pub bytes: u64,
    pub secs: f64,
    /// MB/s of each transfer.
    pub samples: Vec<f64>,
    /// CPU spent during the transfers (see [`Timed::add_cpu`]).
    pub cpu: CpuSpent,
    cpu_sections: usize,
}

impl Timed {
    /// Records one transfer of `bytes` that took `elapsed`.
    pub fn add(&mut self, bytes: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        self.bytes += bytes;
        self.secs += secs;
        if let Some(rate) = stats::megabytes_per_sec(bytes, secs) {
            self.samples.push(rate);
        }
    }

    /// Records the CPU of one timed transfer (from a [`CpuSnapshot`] taken
    /// just before it started).
    pub fn add_cpu(&mut self, spent: CpuSpent) {
        self.cpu.add(spent, self.cpu_sections == 0);
        self.cpu_sections += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_know_which_way_is_better() {
        assert!(Unit::MegabytesPerSec.higher_is_better());
        assert!(Unit::RequestsPerSec.higher_is_better());
        assert!(!Unit::Millis.higher_is_better());
        assert!(!Unit::Mebibytes.higher_is_better());
    }

    #[test]
    fn load_metrics_and_failures() {
        let mut rec = Recorder::default();
        let result = LoadResult {
            latencies: vec![Duration::from_millis(1), Duration::from_millis(3)],
            bytes: 2_000_000,
            failures: 1,
            first_failure: Some("boom".into()),
            elapsed: Duration::from_secs(1),
        };
        rec.load("GET c=1", &result, Some(CeilingKind::Pull));
        let names: Vec<(&str, Unit)> = rec.metrics.iter().map(|m| (m.name.as_str(), m.unit)).collect();
        assert_eq!(
            names,
            [
                ("GET c=1", Unit::RequestsPerSec),
                ("GET c=1", Unit::MegabytesPerSec),
                ("GET c=1 p50", Unit::Millis),
                ("GET c=1 p99", Unit::Millis)
            ]
        );
        assert_eq!(rec.metrics[0].value, Some(2.0));
        assert_eq!(rec.metrics[1].value, Some(2.0));
        assert_eq!(rec.metrics[2].value, Some(1.0));
        assert_eq!(rec.metrics[3].value, Some(3.0));
        assert_eq!(rec.errors.len(), 1);
        assert!(rec.errors[0].contains("1 of 3 requests failed"));

        let mut rec = Recorder::default();
        rec.load("HEAD", &LoadResult::default(), None);
        assert_eq!(rec.metrics.len(), 3);
        assert!(rec.metrics.iter().all(|m| m.value.is_none() && m.unavailable.is_some()));
    }

    #[test]
    fn cpu_per_gib_from_timed_sections() {
        let mut timed = Timed::default();
        timed.add_cpu(CpuSpent { server: Some(0.2), client: Some(0.1) });
        timed.add_cpu(CpuSpent { server: Some(0.1), client: Some(0.0) });
        timed.add(1 << 30, Duration::from_secs(1));
        timed.add(1 << 29, Duration::from_secs(1));
        let mut rec = Recorder::default();
        rec.throughput("GET", &timed, None, CeilingKind::Pull);
        let got: Vec<(Unit, f64)> = rec.metrics.iter().map(|m| (m.unit, m.value.unwrap_or(f64::NAN))).collect();
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            [Unit::MegabytesPerSec, Unit::CpuSecsPerGib, Unit::ClientCpuSecsPerGib]
        );
        assert!((got[1].1 - 0.3 / 1.5).abs() < 1e-9, "{got:?}");
        assert!((got[2].1 - 0.1 / 1.5).abs() < 1e-9, "{got:?}");

        // Below one clock tick: no figure, a note.
        let mut rec = Recorder::default();
        rec.cpu_per_gib("tiny", 1000, CpuSpent { server: Some(0.0), client: None });
        assert!(rec.metrics.is_empty());
        assert_eq!(rec.notes.len(), 1);
        // An unknown counter stays unknown.
        let mut spent = CpuSpent { server: Some(1.0), client: Some(1.0) };
        spent.add(CpuSpent { server: None, client: Some(1.0) }, false);
        assert_eq!(spent, CpuSpent { server: None, client: Some(2.0) });
    }

    #[test]
    fn cpu_snapshots_see_this_process_work() {
        let snap = CpuSnapshot::take(Some(std::process::id()));
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spent = snap.spent();
        assert!(spent.server.is_some() && spent.client.is_some(), "{spent:?}");
        assert!(spent.server >= Some(0.0));
    }

    #[test]
    fn throughput_failures_are_errors_not_values() {
        let mut rec = Recorder::default();
        let mut timed = Timed::default();
        timed.add(1_000_000, Duration::from_millis(500));
        timed.add(1_000_000, Duration::from_millis(500));
        rec.throughput("push", &timed, None, CeilingKind::Push);
        assert_eq!(rec.metrics[0].value, Some(2.0));
        assert_eq!(rec.metrics[0].samples, vec![2.0, 2.0]);
        rec.throughput("push2", &timed, Some(super::super::BenchError::new("503")), CeilingKind::Push);
        assert_eq!(rec.metrics[1].value, None);
        assert_eq!(rec.errors, vec!["push2: 503".to_owned()]);
        rec.note("x");
        rec.note("x");
        assert_eq!(rec.notes.len(), 1);
    }
}
