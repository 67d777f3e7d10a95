//! Garbage collection while the registry serves: blobs no manifest references any more
//! (after tag, manifest and repository deletes), and optionally manifests nothing keeps
//! (`untagged`). One run at a time across replicas, through the `gc` lease; the protocol
//! with pushes and mounts is in docs/architecture.md, "Garbage collection".
//!
//! A run: take the lease; (untagged) per repository, delete the manifests no tag keeps;
//! then page through the unreferenced blobs older than the grace period in digest order,
//! a batch at a time: mark them (checked again under lock), delete their bytes, forget
//! their rows; bytes the store refuses to delete lose their mark and wait for the next run.
//! Memory holds one batch of blobs, and one repository's manifests for `untagged`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::content::Content;
use crate::metadata::gc::{GC_LEASE, GcRun};
use crate::metadata::{MetaError, MetadataStore, now_millis};
use crate::oci::{Digest, RepoName};
use crate::storage::BlobStore;

/// How a run goes.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Report what would be deleted; change nothing.
    pub dry_run: bool,
    /// Also delete manifests that no tag keeps (directly, as an index's child, or as the
    /// subject of a kept referrer).
    pub untagged: bool,
    /// Blobs touched (pushed, mounted, linked) more recently than this are spared: a push
    /// has this long between sending a layer and the manifest that references it.
    pub grace: Duration,
    /// Blobs per batch (one transaction to mark, one store call to delete, one to forget).
    pub batch: usize,
    /// `cli`, `schedule` or `api`.
    pub started_by: String,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            untagged: false,
            grace: Duration::from_secs(3600),
            batch: 1000,
            started_by: "cli".into(),
        }
    }
}

/// How long the lease lasts without renewal. A live run renews it before every batch and,
/// from a task of its own, every [`LEASE_HEARTBEAT`] (so a slow batch keeps it); a run that
/// was killed stops renewing, and the next run may start this long after its last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// How often a live run renews its lease, whatever its batches are doing.
pub const LEASE_HEARTBEAT: Duration = Duration::from_secs(5);

/// What a run did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub run: String,
    pub dry_run: bool,
    pub blobs: u64,
    pub bytes: u64,
    pub manifests: u64,
    /// Blobs the store refused to delete (kept; the next run tries again).
    pub failed: Vec<(Digest, String)>,
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(
        "another garbage collection holds the lease (run {holder}, until {until} ms since the epoch); try again when it has finished"
    )]
    Busy { holder: String, until: i64 },
    #[error(
        "the collection lost its lease (it stalled for longer than {0:?}); nothing more was deleted; run it again"
    )]
    LeaseLost(Duration),
    #[error(transparent)]
    Store(#[from] MetaError),
}

/// Progress, for a terminal's bar or periodic log lines.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub phase: &'static str,
    pub blobs: u64,
    pub bytes: u64,
    pub manifests: u64,
}

/// Progress as log lines, at most one every few seconds (and the last).
pub fn log_progress() -> impl Fn(&Progress) + Send + Sync {
    let last = std::sync::Mutex::new(None::<Instant>);
    move |p: &Progress| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
            return;
        }
        *last = Some(Instant::now());
        tracing::info!(
            phase = p.phase,
            blobs = p.blobs,
            bytes = p.bytes,
            manifests = p.manifests,
            "garbage collection under way"
        );
    }
}

/// Runs one collection over `content`'s stores.
pub async fn collect(
    content: &Content,
    options: &GcOptions,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<GcReport, GcError> {
    let meta = content.metadata().clone();
    let blobs = content.blob_store().clone();
    let run = format!("gc-{}", uuid::Uuid::new_v4());
    let started = Instant::now();
    if let Err((holder, until)) = meta
        .take_lease(GC_LEASE, &run, LEASE_TTL.as_millis() as i64)
        .await?
    {
        return Err(GcError::Busy { holder, until });
    }
    let heartbeat = Heartbeat::start(meta.clone(), run.clone());
    let mut record = GcRun {
        id: run.clone(),
        started_at: now_millis(),
        started_by: options.started_by.clone(),
        dry_run: options.dry_run,
        untagged: options.untagged,
        status: "running".into(),
        ..GcRun::default()
    };
    meta.record_gc_run(&record).await?;
    let mut report = GcReport {
        run: run.clone(),
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    let outcome = sweep(&meta, &blobs, options, &run, &mut report, progress).await;
    report.took = started.elapsed();
    record.finished_at = Some(now_millis());
    record.blobs_deleted = report.blobs;
    record.bytes_freed = report.bytes;
    record.manifests_deleted = report.manifests;
    record.failed = report.failed.len() as u64;
    match &outcome {
        Ok(()) => record.status = "done".into(),
        Err(e) => {
            record.status = "failed".into();
            record.error = Some(e.to_string());
        }
    }
    if let Err(e) = meta.record_gc_run(&record).await {
        tracing::warn!(run = %run, error = %e, "cannot record the collection's result");
    }
    // Stopped (and waited for) first, so no renewal takes the lease again after it is given up.
    heartbeat.stop().await;
    if let Err(e) = meta.release_lease(GC_LEASE, &run).await {
        tracing::warn!(run = %run, error = %e, "cannot release the collection's lease; it lapses by itself");
    }
    if !options.dry_run {
        crate::ops::metrics::record_gc_run(report.blobs, report.bytes, report.took);
    }
    outcome.map(|()| report)
}

async fn sweep(
    meta: &Arc<dyn MetadataStore>,
    blobs: &Arc<dyn BlobStore>,
    options: &GcOptions,
    run: &str,
    report: &mut GcReport,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<(), GcError> {
    let mut shown = Progress::default();
    if options.untagged {
        shown.phase = "manifests";
        let mut last: Option<String> = None;
        loop {
            let names = meta.list_repositories(last.as_deref(), 100).await?;
            for name in &names {
                renew(meta, run).await?;
                let Ok(repo) = RepoName::parse(name) else {
                    continue;
                };
                let doomed = untagged_garbage(meta, &repo).await?;
                if doomed.is_empty() {
                    continue;
                }
                let gone = if options.dry_run {
                    doomed.len() as u64
                } else {
                    meta.delete_untagged(&repo, &doomed).await?.len() as u64
                };
                report.manifests += gone;
                shown.manifests = report.manifests;
                progress(&shown);
            }
            if names.len() < 100 {
                break;
            }
            last = names.last().cloned();
        }
    }

    shown.phase = "blobs";
    let cutoff = now_millis() - options.grace.as_millis() as i64;
    let batch = options.batch.clamp(1, 10_000) as i64;
    let mut after: Option<String> = None;
    loop {
        renew(meta, run).await?;
        let page = meta.garbage_blobs(cutoff, after.as_deref(), batch).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.digest.to_string());
        if options.dry_run {
            report.blobs += page.len() as u64;
            report.bytes += page.iter().map(|b| b.size).sum::<u64>();
        } else {
            let digests: Vec<Digest> = page.into_iter().map(|b| b.digest).collect();
            let marked = meta.mark_garbage(run, &digests, cutoff).await?;
            // A run that lost its lease must not delete: a push may have cleared its marks.
            // Nor may one whose renewal is old news (the process stalled after sending it).
            let held_until = renew(meta, run).await?;
            if Instant::now() + LEASE_TTL / 2 > held_until {
                return Err(GcError::LeaseLost(LEASE_TTL / 2));
            }
            let doomed: Vec<Digest> = marked.iter().map(|b| b.digest.clone()).collect();
            let refused = blobs.delete_many(&doomed).await;
            let refused_set: HashSet<&Digest> = refused.iter().map(|(d, _)| d).collect();
            let deleted: Vec<Digest> = doomed
                .iter()
                .filter(|d| !refused_set.contains(d))
                .cloned()
                .collect();
            meta.forget_blobs(run, &deleted).await?;
            let kept: Vec<Digest> = refused.iter().map(|(d, _)| d.clone()).collect();
            meta.unmark_blobs(run, &kept).await?;
            for (d, e) in &refused {
                tracing::warn!(run = %run, digest = %d, error = %e, "the blob store refused to delete a blob; the next run tries again");
            }
            report.blobs += deleted.len() as u64;
            report.bytes += marked
                .iter()
                .filter(|b| !refused_set.contains(&b.digest))
                .map(|b| b.size)
                .sum::<u64>();
            report
                .failed
                .extend(refused.into_iter().map(|(d, e)| (d, e.to_string())));
        }
        shown.blobs = report.blobs;
        shown.bytes = report.bytes;
        progress(&shown);
    }
    Ok(())
}

/// Renews a run's lease every [`LEASE_HEARTBEAT`] until stopped. A renewal that fails (the
/// database is unreachable, or the lease went to another run) is not fatal here: the run
/// checks its lease itself before every batch, and stops there when it has lost it.
struct Heartbeat {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    fn start(meta: Arc<dyn MetadataStore>, run: String) -> Heartbeat {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(LEASE_HEARTBEAT) => {}
                }
                // Not cancelled half-way: a stop waits for the renewal to finish.
                match meta
                    .renew_lease(GC_LEASE, &run, LEASE_TTL.as_millis() as i64)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(run = %run, "the collection lost its lease");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(run = %run, error = %e, "cannot renew the collection's lease")
                    }
                }
            }
        });
        Heartbeat { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Extends the run's lease; a lease that lapsed is lost for good (pushes may have cleared
/// the run's marks since), even if nobody else took it. Returns until when, on this
/// process's clock, the run holds it: counted from before the request was sent, so a reply
/// read late (the process stalled) is not trusted for longer than it was true.
async fn renew(meta: &Arc<dyn MetadataStore>, run: &str) -> Result<Instant, GcError> {
    let asked = Instant::now();
    if meta
        .renew_lease(GC_LEASE, run, LEASE_TTL.as_millis() as i64)
        .await?
    {
        Ok(asked + LEASE_TTL)
    } else {
        Err(GcError::LeaseLost(LEASE_TTL / 2))
    }
}

/// The manifests of `repo` nothing keeps: kept are the tagged ones, the children of kept
/// indexes, the referrers of kept manifests, and the subjects of kept referrers.
async fn untagged_garbage(
    meta: &Arc<dyn MetadataStore>,
    repo: &RepoName,
) -> Result<Vec<Digest>, GcError> {
    let nodes = meta.manifest_nodes(repo).await?;
    let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for n in &nodes {
        if let Some(s) = &n.subject {
            referrers.entry(s).or_default().push(&n.digest);
        }
    }
    let by_digest: HashMap<&Digest, &crate::metadata::gc::ManifestNode> =
        nodes.iter().map(|n| (&n.digest, n)).collect();
    let mut kept: HashSet<&Digest> = HashSet::new();
    let mut todo: Vec<&Digest> = nodes
        .iter()
        .filter(|n| n.tagged)
        .map(|n| &n.digest)
        .collect();
    while let Some(d) = todo.pop() {
        if !kept.insert(d) {
            continue;
        }
        if let Some(n) = by_digest.get(d) {
            todo.extend(n.children.iter());
            if let Some(s) = &n.subject {
                todo.push(s);
            }
        }
        if let Some(r) = referrers.get(d) {
            todo.extend(r.iter().copied());
        }
    }
    Ok(nodes
        .iter()
        .filter(|n| !kept.contains(&n.digest))
        .map(|n| n.digest.clone())
        .collect())
}
