//! Measurement: latency samples, a bounded concurrent load loop, the server's RSS.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

/// One scenario's result, as printed and written to `--json`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Outcome {
    pub scenario: String,
    /// What the primary number is: "MB/s" (throughput), "req/s", or "ms" (latency).
    pub unit: &'static str,
    pub ok: bool,
    pub error: Option<String>,
    /// Payload bytes moved (request or response bodies).
    pub bytes: u64,
    /// HTTP requests completed.
    pub requests: u64,
    /// Timed operations (a push, a pull, a page, ...; one op may be several requests).
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Decimal megabytes (10^6 bytes) per second.
    pub mb_s: f64,
    pub req_s: f64,
    /// Latency of one timed operation.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub concurrency: usize,
    /// The server's peak RSS during the scenario (MiB), when its PID was given.
    pub rss_peak_mib: Option<f64>,
    /// Listings: the whole listing, page after page (median pass), in ms.
    pub listing_ms: Option<f64>,
    /// Baselines measured in turns with the scenario's operations (see [`Beside`]), by
    /// what they are: "disk" (pushes of 100 MiB and up, `--disk-dir`), "file" (the big
    /// pull, `--file-url`), "reference" (the big pull, `--reference-url`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub beside: BTreeMap<&'static str, Beside>,
    /// A count per operation, for units that are one (`tokens/pull`: token requests per
    /// image pull).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<f64>,
    /// token-basic-*: the first requests with a credential, sent at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_wave: Option<FirstWave>,
    /// gc-*: the registry that was filled and what the collector did with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcFigures>,
    /// The scenario did not run with these arguments (`ok` stays true; `note` says why).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    pub note: String,
}

/// A garbage collection timed on a filled registry (the gc-* scenarios).
#[derive(Debug, Clone, Serialize)]
pub struct GcFigures {
    /// Blobs in the registry before the collection, and how many of them no manifest
    /// references any more.
    pub blobs: u64,
    pub garbage: u64,
    /// Untimed setup: the fill (blobs and manifests over HTTP) and the manifest deletes.
    pub fill_seconds: f64,
    pub delete_seconds: f64,
    /// The collector's `--dry-run`, then the collection itself (wall clock of the command).
    pub dry_run_seconds: f64,
    pub seconds: f64,
    /// Blobs the collection freed (from its summary line), and per second of its run.
    pub freed: u64,
    pub blobs_per_s: f64,
    /// The largest peak RSS of the collector's processes so far (`getrusage` of children).
    pub peak_rss_mib: Option<f64>,
    /// The collector's summary lines (dry run, run).
    pub summary: Vec<String>,
}

/// The first requests with a credential the server has not seen, sent at once, and one
/// check of that credential on its own.
#[derive(Debug, Clone, Serialize)]
pub struct FirstWave {
    pub clients: usize,
    pub p50_ms: f64,
    pub max_ms: f64,
    /// One password check at the token endpoint (which checks afresh every time): the
    /// fastest of three.
    pub password_check_ms: f64,
}

impl Outcome {
    pub fn failed(scenario: &str, unit: &'static str, err: &anyhow::Error) -> Outcome {
        Outcome {
            scenario: scenario.to_string(),
            unit,
            ok: false,
            error: Some(format!("{err:#}")),
            ..Outcome::default()
        }
    }

    /// A scenario that did not run, and why (`note`): not a failure.
    pub fn skipped(scenario: &str, unit: &'static str, why: String) -> Outcome {
        Outcome {
            scenario: scenario.to_string(),
            unit,
            ok: true,
            skipped: true,
            note: why,
            ..Outcome::default()
        }
    }

    /// Appends to the note how the operations compared with each baseline beside them.
    pub fn describe_beside(&mut self) {
        for (key, b) in &self.beside {
            let (what, per) = match *key {
                "disk" => ("write+fsync", "push"),
                "file" => ("the file server", "GET"),
                "reference" => ("the reference", "round"),
                other => (other, "operation"),
            };
            self.note += &format!(
                "; {:.0}% of {what} beside it (median per {per}; {:.0} MB/s)",
                b.ratio * 100.0,
                b.mb_s
            );
        }
    }
}

/// Latency samples in microseconds.
#[derive(Default, Clone)]
pub struct Lat(pub Vec<u32>);

impl Lat {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u32::MAX as u128) as u32);
    }

    pub fn merge(&mut self, other: Lat) {
        self.0.extend(other.0);
    }

    /// (p50, p99, max) in milliseconds.
    pub fn summary(&mut self) -> (f64, f64, f64) {
        if self.0.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        self.0.sort_unstable();
        let q = |p: f64| {
            let i = ((self.0.len() as f64 * p).ceil() as usize).clamp(1, self.0.len()) - 1;
            self.0[i] as f64 / 1000.0
        };
        (
            q(0.50),
            q(0.99),
            *self.0.last().unwrap_or(&0) as f64 / 1000.0,
        )
    }
}

/// What one operation reports: payload bytes and HTTP requests it made.
#[derive(Default, Clone, Copy)]
pub struct Done {
    pub bytes: u64,
    pub requests: u64,
}

impl Done {
    pub fn new(bytes: u64, requests: u64) -> Done {
        Done { bytes, requests }
    }
}

/// A finished load run.
#[derive(Default)]
pub struct Load {
    pub lat: Lat,
    pub ops: u64,
    pub bytes: u64,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub concurrency: usize,
}

impl Load {
    /// Adds a later run's operations to this one (one scenario run in parts).
    pub fn absorb(&mut self, other: Load) {
        self.lat.0.extend(other.lat.0);
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.requests += other.requests;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.seconds += other.seconds;
        self.concurrency = self.concurrency.max(other.concurrency);
    }

    pub fn into_outcome(mut self, scenario: &str, unit: &'static str) -> Outcome {
        let (p50, p99, max) = self.lat.summary();
        let secs = self.seconds.max(1e-9);
        Outcome {
            scenario: scenario.to_string(),
            unit,
            ok: self.errors == 0 && self.ops > 0,
            error: self
                .first_error
                .clone()
                .or_else(|| (self.ops == 0).then(|| "no operation completed".to_string())),
            bytes: self.bytes,
            requests: self.requests,
            ops: self.ops,
            errors: self.errors,
            seconds: self.seconds,
            mb_s: self.bytes as f64 / secs / 1e6,
            req_s: self.requests as f64 / secs,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
            concurrency: self.concurrency,
            rss_peak_mib: None,
            listing_ms: None,
            beside: BTreeMap::new(),
            count: None,
            first_wave: None,
            gc: None,
            skipped: false,
            note: String::new(),
        }
    }
}

/// Runs `op(worker, i)` from `concurrency` workers until `max_ops` operations started or
/// `duration` passed, whichever comes first. Each worker first runs `warmup` untimed
/// operations (connection set-up). Stops early after 20 errors.
pub async fn run_load<F, Fut>(
    concurrency: usize,
    duration: Duration,
    max_ops: u64,
    warmup: u64,
    op: F,
) -> Load
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Done>> + Send + 'static,
{
    let op = Arc::new(op);
    // Warm-up: untimed, all workers at once.
    if warmup > 0 {
        let mut ws = Vec::new();
        for w in 0..concurrency {
            let op = op.clone();
            ws.push(tokio::spawn(async move {
                for i in 0..warmup {
                    let _ = op(w, u64::MAX - i).await;
                }
            }));
        }
        for w in ws {
            let _ = w.await;
        }
    }
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let deadline = start + duration;
    let mut handles = Vec::new();
    for w in 0..concurrency {
        let (op, next, stop, errors, first_error) = (
            op.clone(),
            next.clone(),
            stop.clone(),
            errors.clone(),
            first_error.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut lat = Lat::default();
            let (mut ops, mut bytes, mut requests) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_ops {
                    break;
                }
                let t = Instant::now();
                let left = deadline.saturating_duration_since(t) + Duration::from_secs(30);
                match tokio::time::timeout(left, op(w, i)).await {
                    Ok(Ok(done)) => {
                        lat.push(t.elapsed());
                        ops += 1;
                        bytes += done.bytes;
                        requests += done.requests;
                    }
                    Ok(Err(e)) => {
                        if errors.fetch_add(1, Ordering::Relaxed) >= 20 {
                            stop.store(true, Ordering::Relaxed);
                        }
                        first_error.lock().await.get_or_insert(format!("{e:#}"));
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .await
                            .get_or_insert("an operation overran the scenario's time".into());
                    }
                }
            }
            (lat, ops, bytes, requests)
        }));
    }
    let mut load = Load {
        lat: Lat::default(),
        ops: 0,
        bytes: 0,
        requests: 0,
        errors: 0,
        first_error: None,
        seconds: 0.0,
        concurrency,
    };
    for h in handles {
        match h.await {
            Ok((lat, ops, bytes, requests)) => {
                load.lat.merge(lat);
                load.ops += ops;
                load.bytes += bytes;
                load.requests += requests;
            }
            Err(e) => {
                load.errors += 1;
                load.first_error
                    .get_or_insert(format!("worker panicked: {e}"));
            }
        }
    }
    load.seconds = start.elapsed().as_secs_f64();
    load.errors += errors.load(Ordering::Relaxed);
    if let Some(e) = first_error.lock().await.take() {
        load.first_error.get_or_insert(e);
    }
    load
}

/// Samples a process's `VmRSS` every 20 ms and keeps the peak since the last reset.
pub struct RssSampler {
    pid: u32,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    pub fn start(pid: u32) -> anyhow::Result<RssSampler> {
        read_status_kib(pid, "VmRSS:")
            .ok_or_else(|| anyhow::anyhow!("cannot read /proc/{pid}/status"))?;
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak_kib.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match read_status_kib(pid, "VmRSS:") {
                    Some(kib) => {
                        p.fetch_max(kib, Ordering::Relaxed);
                    }
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Ok(RssSampler {
            pid,
            peak_kib,
            stop,
        })
    }

    /// Starts a new peak window at the current RSS.
    pub fn reset(&self) {
        let now = read_status_kib(self.pid, "VmRSS:").unwrap_or(0);
        self.peak_kib.store(now, Ordering::Relaxed);
    }

    pub fn peak_mib(&self) -> f64 {
        let now = read_status_kib(self.pid, "VmRSS:").unwrap_or(0);
        self.peak_kib.fetch_max(now, Ordering::Relaxed);
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    pub fn current_mib(&self) -> f64 {
        read_status_kib(self.pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0
    }

    /// The kernel's high-water mark (`VmHWM`) over the process's life.
    pub fn hwm_mib(&self) -> f64 {
        read_status_kib(self.pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Operations measured in turns with a baseline doing the same work (pushes with
/// write+fsyncs of the same size to the same disk, pulls with GETs of the same bytes from
/// a static file server or from the reference registry): `bases[i]` ran just before
/// `ops[i]` and `bases[i + 1]` just after it (MB/s). Each operation is divided by the mean
/// of those two, so it is compared with the baseline as the host was at that moment.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Beside {
    /// The baselines' mean (MB/s), for display.
    pub mb_s: f64,
    /// Each operation's ratio, in order.
    pub ratios: Vec<f64>,
    /// Their median.
    pub ratio: f64,
}

impl Beside {
    pub fn new(ops: &[f64], bases: &[f64]) -> Beside {
        let ratios: Vec<f64> = ops
            .iter()
            .zip(bases.windows(2))
            .map(|(p, d)| p / ((d[0] + d[1]) / 2.0).max(1e-9))
            .collect();
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let ratio = match n {
            0 => 0.0,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Beside {
            mb_s: bases.iter().sum::<f64>() / bases.len().max(1) as f64,
            ratios,
            ratio,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Beside;

    #[test]
    fn each_push_is_held_to_the_disk_measured_on_either_side_of_it() {
        // Disk 400, then 600, then 200 MB/s; pushes at 400 and 300.
        let b = Beside::new(&[400.0, 300.0], &[400.0, 600.0, 200.0]);
        assert_eq!(b.ratios, vec![0.8, 0.75]);
        assert!((b.ratio - 0.775).abs() < 1e-9);
        assert!((b.mb_s - 400.0).abs() < 1e-9);
        // An odd count takes the middle ratio, not the mean.
        let b = Beside::new(&[100.0, 500.0, 450.0], &[500.0; 4]);
        assert!((b.ratio - 0.9).abs() < 1e-9);
    }
}
