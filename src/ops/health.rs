//! Readiness: whether this process can serve requests that need its stores. A list of named
//! checks, each a short async question ("does the database answer?"); `/readyz` is 200 when
//! every one says yes and 503 naming those that did not, with their reasons.
//!
//! Probes may come every second from several sources (kubelet, a load balancer), so one
//! round of checks serves every probe for [`FRESH_FOR`], and concurrent probes wait for the
//! round in flight instead of starting their own: the stores see at most one round at a
//! time, whatever the probe rate. Each check is bounded by a timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Serialize;

/// How long one round of checks answers probes.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// How long a check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFn = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// One named readiness condition.
#[derive(Clone)]
pub struct Check {
    name: &'static str,
    run: Arc<CheckFn>,
    /// Reported, but a failure does not make the process unready.
    advisory: bool,
}

impl Check {
    /// A check named `name` (as `/readyz` reports it) that runs `run`; `Err` carries the
    /// reason shown to the operator.
    pub fn new<F, Fut>(name: &'static str, run: F) -> Check
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Check {
            name,
            run: Arc::new(move || Box::pin(run())),
            advisory: false,
        }
    }

    /// A check whose failure `/readyz` reports (`"advisory": true`) while staying 200: a
    /// state worth an alert that does not stop this replica from serving.
    pub fn advisory<F, Fut>(name: &'static str, run: F) -> Check
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Check {
            advisory: true,
            ..Check::new(name, run)
        }
    }
}

/// What one check said.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub name: &'static str,
    pub ok: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub advisory: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One round of checks.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    pub checks: Vec<Outcome>,
}

impl Report {
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|c| c.ok || c.advisory)
    }
}

pub struct Readiness {
    checks: Vec<Check>,
    timeout: Duration,
    /// The last round and when it finished; the lock is held while a round runs, so
    /// concurrent probes share it.
    last: tokio::sync::Mutex<Option<(Instant, Arc<Report>)>>,
}

impl Readiness {
    pub fn new(checks: Vec<Check>) -> Readiness {
        Readiness {
            checks,
            timeout: CHECK_TIMEOUT,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Adds a check (for the states other parts of Berth watch: a disk low on space...).
    pub fn with(mut self, check: Check) -> Readiness {
        self.checks.push(check);
        self
    }

    /// The latest report, running the checks when the last round is older than
    /// [`FRESH_FOR`].
    pub async fn report(&self) -> Arc<Report> {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref() {
            if at.elapsed() < FRESH_FOR {
                return report.clone();
            }
        }
        let rounds = self.checks.iter().map(|c| {
            let run = (c.run)();
            let timeout = self.timeout;
            async move {
                let result = match tokio::time::timeout(timeout, run).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {} s", timeout.as_secs_f32())),
                };
                Outcome {
                    name: c.name,
                    ok: result.is_ok(),
                    advisory: c.advisory,
                    reason: result.err(),
                }
            }
        });
        let checks = futures::future::join_all(rounds).await;
        let ready = checks.iter().all(|c| c.ok || c.advisory);
        let report = Arc::new(Report {
            status: if ready { "ready" } else { "unavailable" },
            checks,
        });
        // Logged when readiness changes, not at every probe.
        let was_ready = last.as_ref().is_none_or(|(_, r)| r.ready());
        if was_ready && !ready {
            for failed in report.checks.iter().filter(|c| !c.ok) {
                tracing::warn!(check = failed.name, reason = ?failed.reason, "not ready");
            }
        } else if !was_ready && ready {
            tracing::info!("ready again");
        }
        *last = Some((Instant::now(), report.clone()));
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting(name: &'static str, runs: Arc<AtomicUsize>, ok: bool) -> Check {
        Check::new(name, move || {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if ok { Ok(()) } else { Err("broken".into()) }
            }
        })
    }

    #[tokio::test]
    async fn concurrent_probes_share_one_round_and_a_round_answers_for_a_second() {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Readiness::new(vec![counting("a", runs.clone(), true)]);
        let reports = futures::future::join_all((0..50).map(|_| r.report())).await;
        assert!(reports.iter().all(|x| x.ready()));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one round for 50 probes");
        tokio::time::sleep(FRESH_FOR + Duration::from_millis(100)).await;
        r.report().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "a new round after a second");
    }

    #[tokio::test]
    async fn a_failing_or_hanging_check_makes_the_report_unavailable_with_reasons() {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Readiness::new(vec![counting("fine", runs.clone(), true)])
            .with(counting("broken", runs.clone(), false))
            .with(Check::new("hangs", std::future::pending));
        let started = Instant::now();
        let report = r.report().await;
        assert!(started.elapsed() < CHECK_TIMEOUT + Duration::from_secs(1));
        assert!(!report.ready());
        assert_eq!(report.status, "unavailable");
        let by_name = |n: &str| report.checks.iter().find(|c| c.name == n).cloned();
        assert!(by_name("fine").is_some_and(|c| c.ok && c.reason.is_none()));
        assert_eq!(
            by_name("broken").and_then(|c| c.reason),
            Some("broken".into())
        );
        assert!(
            by_name("hangs")
                .and_then(|c| c.reason)
                .is_some_and(|m| m.contains("no answer within 2"))
        );
    }
}
