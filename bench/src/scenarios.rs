//! The scenarios. Every one is bounded in operations and in time, checks status codes and
//! byte counts, and pushes content unique to this run unless it says otherwise.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, StatusCode, header};
use tokio::sync::Mutex;

use crate::client::{
    ACCEPT_MANIFESTS, Auth, LARGE_TIMEOUT, Login, Registry, SMALL_TIMEOUT, expect, header_str,
    image_manifest, next_link,
};
use crate::data::{BLOCK, Blob, Checker, splitmix64};
use crate::fetch::Receiver;
use crate::stats::{Beside, Done, GcFigures, Lat, Load, Outcome, RssSampler, run_load};

const MIB: u64 = 1 << 20;
/// Seed of the file the machine baselines write and nginx serves.
pub const FILE_SEED: u64 = 0xF11E_F11E;
/// Seed of fixtures that may be reused across runs (listing data).
const FIXTURE_SEED: u64 = 0xB3B7_0001;

/// Sizes and counts: the full run, or `--quick`.
#[derive(Clone, Copy)]
pub struct Plan {
    pub small: u64,
    pub mid: u64,
    pub big: u64,
    pub chunk: u64,
    pub small_pushes: u64,
    pub mid_pushes: u64,
    pub big_pushes: u64,
    pub big_pulls: u64,
    pub x64_push: u64,
    /// Time per load scenario (manifests, ranges, mixed).
    pub load_secs: f64,
    /// Time for the 64 concurrent pulls.
    pub x64_pull_secs: f64,
    pub listing: u64,
    pub listing_passes: u64,
    pub kube_images: u64,
    /// Blobs in the gc-* registry (a tenth of them garbage).
    pub gc_blobs: u64,
    /// ctr-fetch-*: the image's layer bytes, and the timed fetches from each server.
    pub ctr_image: u64,
    pub ctr_rounds: u64,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            small: MIB,
            mid: 100 * MIB,
            big: 1024 * MIB,
            chunk: 10 * MIB,
            small_pushes: 200,
            mid_pushes: 3,
            big_pushes: 2,
            big_pulls: 10,
            x64_push: 32 * MIB,
            load_secs: 3.0,
            x64_pull_secs: 15.0,
            listing: 10_000,
            listing_passes: 3,
            kube_images: 100,
            gc_blobs: 100_000,
            ctr_image: 300 * MIB,
            ctr_rounds: 5,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            small: MIB,
            mid: 10 * MIB,
            big: 100 * MIB,
            chunk: 10 * MIB,
            small_pushes: 30,
            mid_pushes: 2,
            big_pushes: 1,
            big_pulls: 3,
            x64_push: 4 * MIB,
            load_secs: 1.0,
            x64_pull_secs: 4.0,
            listing: 1_000,
            listing_passes: 2,
            kube_images: 20,
            gc_blobs: 10_000,
            ctr_image: 60 * MIB,
            ctr_rounds: 3,
        }
    }
}

pub fn size_name(n: u64) -> String {
    if n >= 1 << 30 && n % (1 << 30) == 0 {
        format!("{}GiB", n >> 30)
    } else if n >= MIB && n % MIB == 0 {
        format!("{}MiB", n >> 20)
    } else if n % 1024 == 0 {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

/// Every scenario name for a plan, in run order. `machine-*` and `file-*` are not
/// registry scenarios: they run only when named.
pub fn names(p: &Plan) -> Vec<String> {
    let s = size_name;
    let mut v = vec![
        format!("push-mono-{}", s(p.small)),
        format!("push-mono-{}", s(p.mid)),
        format!("push-mono-{}", s(p.big)),
        format!("push-chunked-{}", s(p.big)),
        format!("push-stream-{}", s(p.mid)),
        format!("push-stream-{}", s(p.big)),
        format!("push-x64-{}", s(p.x64_push)),
        format!("pull-small-{}", s(p.small)),
        format!("pull-{}", s(p.big)),
        format!("pull-{}-splice", s(p.big)),
        format!("pull-{}-cold", s(p.big)),
        "pull-range-1MiB".to_string(),
        format!("pull-x64-{}", s(p.big)),
    ];
    for verb in ["get", "head"] {
        for by in ["tag", "digest"] {
            for c in [1, 16, 64, 256] {
                v.push(format!("manifest-{verb}-{by}-c{c}"));
            }
        }
    }
    v.push("mixed-kubelet-c64".to_string());
    v.push("tags-list-n100".to_string());
    v.push("tags-list-n1000".to_string());
    v.push("catalog-n100".to_string());
    v.push("catalog-n1000".to_string());
    v.push("token-issue-c1".to_string());
    v.push("token-issue-c16".to_string());
    v.push("token-basic-manifest-c16".to_string());
    v.push("token-pull-10layers".to_string());
    v.push("ui-project-page".to_string());
    v.push("ui-repository-page".to_string());
    v.push(gc_name(p.gc_blobs));
    v.push(format!("ctr-fetch-{}", s(p.ctr_image)));
    v.push(format!("machine-sha256-{}", s(p.big)));
    v.push(format!("machine-disk-{}", s(p.big)));
    v.push(format!("file-get-{}", s(p.big)));
    v.push("file-small-c64".to_string());
    v
}

/// `gc-100k` for 100,000 blobs, `gc-250` for 250.
pub fn gc_name(blobs: u64) -> String {
    if blobs % 1000 == 0 {
        format!("gc-{}k", blobs / 1000)
    } else {
        format!("gc-{blobs}")
    }
}

pub fn is_local(name: &str) -> bool {
    name.starts_with("machine-") || name.starts_with("file-")
}

pub struct Ctx {
    pub reg: Option<Registry>,
    pub plan: Plan,
    pub run_seed: u64,
    pub verify: bool,
    pub disk_dir: Option<PathBuf>,
    /// A static file server (nginx with sendfile) whose root is `disk_dir`: the big pull
    /// is measured in turns with its GETs of the same bytes.
    pub files: Option<Registry>,
    /// The reference registry (anonymous): the big pull pushes its blob there too and is
    /// measured in turns with GETs of it there.
    pub reference: Option<Registry>,
    pub rss: Option<RssSampler>,
    pub skip_setup: bool,
    /// `--basic-user`: a user's `USER:PASS` for token-basic-*.
    pub basic_user: Option<String>,
    /// `--server-log`: the server's access log, for token-pull-*.
    pub server_log: Option<PathBuf>,
    /// `--gc-command`: the registry's garbage collector, for gc-*.
    pub gc_command: Option<String>,
    /// `--evict-dir`: where the servers keep the big blob, for pull-<big>-cold.
    pub evict_dirs: Vec<PathBuf>,
    /// `--ctr-address`: a containerd, for ctr-fetch-*.
    pub ctr: Option<crate::ctr::Containerd>,
    /// A pushed big blob (for the pull scenarios).
    big_blob: Mutex<Option<Blob>>,
    /// The small blobs `push-mono-<small>` pushed, for `pull-small-*`.
    small_blobs: Mutex<Vec<(Blob, String)>>,
    manifest: Mutex<Option<Arc<ManifestFixture>>>,
    /// Setup outcomes to report (tags and catalog fixtures).
    pub setups: Mutex<Vec<Outcome>>,
}

const PUSH_REPO: &str = "bench/push";
const MANIFEST_REPO: &str = "bench/manifest";
const TAGS_REPO: &str = "bench/tags";
const CAT_SRC: &str = "bench/catalog-src";

impl Ctx {
    pub fn new(
        reg: Option<Registry>,
        plan: Plan,
        run_seed: u64,
        verify: bool,
        disk_dir: Option<PathBuf>,
        rss: Option<RssSampler>,
        skip_setup: bool,
    ) -> Ctx {
        Ctx {
            reg,
            plan,
            run_seed,
            verify,
            disk_dir,
            files: None,
            reference: None,
            rss,
            skip_setup,
            basic_user: None,
            server_log: None,
            gc_command: None,
            evict_dirs: Vec::new(),
            ctr: None,
            big_blob: Mutex::new(None),
            small_blobs: Mutex::new(Vec::new()),
            manifest: Mutex::new(None),
            setups: Mutex::new(Vec::new()),
        }
    }

    /// Sets the static file server of [`Ctx::files`] and the registry of
    /// [`Ctx::reference`].
    pub fn with_beside(mut self, files: Option<Registry>, reference: Option<Registry>) -> Ctx {
        self.files = files;
        self.reference = reference;
        self
    }

    /// Sets [`Ctx::basic_user`] and [`Ctx::server_log`].
    pub fn with_auth_scenarios(
        mut self,
        basic_user: Option<String>,
        server_log: Option<PathBuf>,
    ) -> Ctx {
        self.basic_user = basic_user;
        self.server_log = server_log;
        self
    }

    /// Sets [`Ctx::gc_command`].
    pub fn with_gc_command(mut self, gc_command: Option<String>) -> Ctx {
        self.gc_command = gc_command;
        self
    }

    /// Sets [`Ctx::evict_dirs`].
    pub fn with_evict_dirs(mut self, dirs: Vec<PathBuf>) -> Ctx {
        self.evict_dirs = dirs;
        self
    }

    /// Sets [`Ctx::ctr`].
    pub fn with_ctr(mut self, ctr: Option<crate::ctr::Containerd>) -> Ctx {
        self.ctr = ctr;
        self
    }

    fn reg(&self) -> Result<&Registry> {
        self.reg
            .as_ref()
            .context("this scenario needs a registry URL")
    }

    /// A seed unique to this run, scenario and index.
    fn seed(&self, scenario: &str, i: u64) -> u64 {
        let mut s = self.run_seed;
        for b in scenario.bytes() {
            s = s.rotate_left(5) ^ b as u64;
            splitmix64(&mut s);
        }
        s ^= i;
        splitmix64(&mut s)
    }

    /// Runs one scenario, measuring the server's peak RSS around it.
    pub async fn run(&self, name: &str) -> Outcome {
        if let Some(why) = self.skip_reason(name) {
            return Outcome::skipped(name, "MB/s", why);
        }
        // Fixtures are set up before the RSS window opens.
        if let Err(e) = self.prepare(name).await {
            return Outcome::failed(name, "", &e.context("setup"));
        }
        if let Some(r) = &self.rss {
            r.reset();
        }
        let mut out = match self.dispatch(name).await {
            Ok(o) => o,
            Err(e) => Outcome::failed(name, "", &e),
        };
        out.scenario = name.to_string();
        if let Some(r) = &self.rss {
            out.rss_peak_mib = Some(r.peak_mib());
        }
        out
    }

    /// For the pushes issue 4 holds to the disk (monolithic, chunked and streamed, 100 MiB
    /// and up), when `--disk-dir` is given: where to measure the disk, and how many bytes.
    fn disk_beside(&self, name: &str) -> Option<(PathBuf, u64)> {
        let dir = self.disk_dir.clone()?;
        let parts: Vec<&str> = name.split('-').collect();
        let ["push", "mono" | "chunked" | "stream", size] = parts.as_slice() else {
            return None;
        };
        [self.plan.mid, self.plan.big]
            .into_iter()
            .find(|s| size_name(*s) == *size)
            .map(|s| (dir, s))
    }

    /// Why scenario `name` cannot run with these arguments (a skip, not a failure).
    fn skip_reason(&self, name: &str) -> Option<String> {
        let https =
            |r: &Option<Registry>| r.as_ref().is_some_and(|r| r.base.starts_with("https://"));
        if name.starts_with("pull-") && name.ends_with("-splice") {
            if https(&self.reg) || https(&self.reference) || https(&self.files) {
                return Some(
                    "the splice receiver takes plain http only (over https the body is \
                     decrypted in user space, so only the copying receiver of pull-<size> applies)"
                        .into(),
                );
            }
        } else if name.starts_with("pull-") && name.ends_with("-cold") && self.evict_dirs.is_empty()
        {
            return Some(
                "a cold pull needs --evict-dir (the directories where the servers keep \
                 the blob)"
                    .into(),
            );
        }
        None
    }

    async fn prepare(&self, name: &str) -> Result<()> {
        if name.starts_with("pull-") {
            self.big_blob().await?;
        } else if name.starts_with("manifest-") || name == "token-basic-manifest-c16" {
            self.manifest_fixture().await?;
        } else if name.starts_with("tags-list") {
            self.tags_fixture().await?;
        } else if name.starts_with("catalog-") {
            self.catalog_fixture().await?;
        }
        Ok(())
    }

    async fn dispatch(&self, name: &str) -> Result<Outcome> {
        let p = self.plan;
        let parts: Vec<&str> = name.split('-').collect();
        match parts.as_slice() {
            ["push", "mono", _] if *name == format!("push-mono-{}", size_name(p.small)) => {
                self.push(name, Mode::Mono, p.small, p.small_pushes, 1)
                    .await
            }
            ["push", "mono", _] if *name == format!("push-mono-{}", size_name(p.mid)) => {
                self.push(name, Mode::Mono, p.mid, p.mid_pushes, 1).await
            }
            ["push", "mono", _] => self.push(name, Mode::Mono, p.big, p.big_pushes, 1).await,
            ["push", "chunked", _] => self.push(name, Mode::Chunked, p.big, p.big_pushes, 1).await,
            ["push", "stream", _] if *name == format!("push-stream-{}", size_name(p.mid)) => {
                self.push(name, Mode::Stream, p.mid, p.mid_pushes, 1).await
            }
            ["push", "stream", _] => self.push(name, Mode::Stream, p.big, p.big_pushes, 1).await,
            ["push", "x64", _] => self.push(name, Mode::Stream, p.x64_push, 64, 64).await,
            ["pull", "range", _] => self.pull_ranges(8).await,
            ["pull", "small", _] => self.pull_small().await,
            ["pull", "x64", _] => self.pull_concurrent(64).await,
            ["pull", _, "splice"] => self.pull_whole(Temperature::Warm, true).await,
            ["pull", _, "cold"] => self.pull_whole(Temperature::Cold, false).await,
            ["pull", _] => self.pull_whole(Temperature::Warm, false).await,
            ["manifest", verb, by, c] => {
                let c: usize = c.trim_start_matches('c').parse().context("concurrency")?;
                self.manifests(verb == &"head", by == &"digest", c).await
            }
            ["mixed", "kubelet", _] => self.kubelet(64).await,
            ["token", "issue", c] => {
                let c: usize = c.trim_start_matches('c').parse().context("concurrency")?;
                self.token_issue(c).await
            }
            ["token", "basic", "manifest", _] => self.basic_manifest(16).await,
            ["token", "pull", _] => self.token_pull(10).await,
            ["ui", "project", "page"] => self.ui_page(false).await,
            ["ui", "repository", "page"] => self.ui_page(true).await,
            ["gc", _] => self.gc(p.gc_blobs).await,
            ["ctr", "fetch", _] => crate::ctr::fetch(self, p.ctr_image, p.ctr_rounds).await,
            ["tags", "list", n] => {
                let n: u64 = n.trim_start_matches('n').parse().context("page size")?;
                let url = format!("/v2/{TAGS_REPO}/tags/list?n={n}");
                self.listing(&url, "tags", "", p.listing).await
            }
            ["catalog", n] => {
                let n: u64 = n.trim_start_matches('n').parse().context("page size")?;
                let url = format!("/v2/_catalog?n={n}");
                self.listing(&url, "repositories", "bench/cat/", p.listing)
                    .await
            }
            ["machine", "sha256", _] => self.machine_sha256().await,
            ["machine", "disk", _] => self.machine_disk().await,
            ["file", "get", _] => self.file_get().await,
            ["file", "small", _] => self.file_small(64).await,
            _ => bail!("unknown scenario {name:?} (try --list)"),
        }
    }

    // ---------------------------------------------------------------- pushes

    async fn push(
        &self,
        name: &str,
        mode: Mode,
        size: u64,
        count: u64,
        concurrency: usize,
    ) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        // Digests first (untimed): one hashing pass over each generated blob.
        let blobs: Vec<(Blob, String)> = {
            let seeds: Vec<u64> = (0..count).map(|i| self.seed(name, i)).collect();
            tokio::task::spawn_blocking(move || {
                seeds
                    .into_iter()
                    .map(|s| {
                        let b = Blob::new(s, size);
                        (b, b.digest())
                    })
                    .collect()
            })
            .await?
        };
        let blobs = Arc::new(blobs);
        let chunk = self.plan.chunk;
        let one_push = |blobs: Arc<Vec<(Blob, String)>>, first: u64| {
            let reg = reg.clone();
            move |_, i: u64| {
                let reg = reg.clone();
                let blobs = blobs.clone();
                async move {
                    let (blob, digest) = blobs
                        .get((first + i) as usize)
                        .cloned()
                        .context("push index out of range")?;
                    let requests = push_one(&reg, mode, blob, &digest, chunk).await?;
                    Ok(Done::new(blob.size, requests))
                }
            }
        };
        let beside = self.disk_beside(name).filter(|_| concurrency == 1);
        let mut disk = None;
        let load = match &beside {
            None => {
                run_load(
                    concurrency,
                    Duration::from_secs(1800),
                    count,
                    0,
                    one_push(blobs.clone(), 0),
                )
                .await
            }
            // One push at a time between write+fsyncs of its size to the same disk, each
            // push compared with the two beside it.
            Some((dir, _)) => {
                let (load, mut beside) = in_turns(
                    count,
                    |i| one_push(blobs.clone(), i),
                    1,
                    |_| async {
                        write_fsync_mb_s(dir, size)
                            .await
                            .context("write+fsync beside the push")
                    },
                )
                .await?;
                disk = beside.pop();
                load
            }
        };
        if load.errors == 0 && size == self.plan.big && mode == Mode::Mono {
            *self.big_blob.lock().await = blobs.first().map(|b| b.0);
        }
        if load.errors == 0 && size == self.plan.small && mode == Mode::Mono {
            *self.small_blobs.lock().await = blobs.to_vec();
        }
        let mut out = load.into_outcome(name, "MB/s");
        if let Some(d) = disk {
            out.beside.insert("disk", d);
        }
        out.note = format!(
            "{count} x {} {}; latency = one whole push",
            size_name(size),
            match mode {
                Mode::Mono => "POST+PUT",
                Mode::Chunked => "POST+PATCH(Content-Range)xN+PUT",
                Mode::Stream => "POST+PATCH(chunked TE)+PUT",
            }
        );
        Ok(out)
    }

    // ---------------------------------------------------------------- pulls

    /// The big blob the pull scenarios read: the one push-mono pushed, or a new one.
    async fn big_blob(&self) -> Result<Blob> {
        let mut g = self.big_blob.lock().await;
        if let Some(b) = *g {
            return Ok(b);
        }
        let reg = self.reg()?;
        let blob = Blob::new(self.seed("pull-fixture", 0), self.plan.big);
        let digest = tokio::task::spawn_blocking(move || blob.digest()).await?;
        reg.push_monolithic(PUSH_REPO, blob, &digest).await?;
        *g = Some(blob);
        Ok(blob)
    }

    /// `pull-<big>` (copying receiver, warm), `pull-<big>-splice` (`splice`) and
    /// `pull-<big>-cold` (copying, the blob evicted from the page cache before every GET).
    async fn pull_whole(&self, temperature: Temperature, splice: bool) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        let blob = self.big_blob().await?;
        let digest = blob_digest(blob).await?;
        let url = reg.url(&format!("/v2/{PUSH_REPO}/blobs/{digest}"));
        // The same bytes from other servers, to take turns with.
        let mut sources = Vec::new();
        if let Some(refr) = &self.reference {
            if !refr.blob_exists(PUSH_REPO, &digest).await? {
                refr.push_monolithic(PUSH_REPO, blob, &digest)
                    .await
                    .context("pushing the big blob to the reference")?;
            }
            // The reference does not fsync what it stores: its dirty pages go to the disk
            // now rather than during the GETs.
            tokio::task::spawn_blocking(|| {
                // SAFETY: sync(2) takes no arguments and cannot fail.
                unsafe { libc::sync() }
            })
            .await?;
            let refr_url = refr.url(&format!("/v2/{PUSH_REPO}/blobs/{digest}"));
            sources.push(("reference", refr.clone(), refr_url));
        }
        let file = self.file_beside(blob).await?;
        if let Some((files, file_url, _)) = &file {
            sources.push(("file", files.clone(), file_url.clone()));
        }
        let how = PullHow {
            splice,
            verify: self.verify && !splice,
            evict: (temperature == Temperature::Cold).then(|| {
                Arc::new(EvictLog {
                    dirs: self.evict_dirs.clone(),
                    done: std::sync::Mutex::new(Vec::new()),
                })
            }),
        };
        let tls = reg.base.starts_with("https://");
        let got = self.gets_in_turns(reg, url, &sources, blob, &how).await;
        if let Some((_, _, path)) = file {
            let _ = std::fs::remove_file(&path);
        }
        let mut out = got?;
        let cache = match &how.evict {
            Some(log) => format!("cold: {}", log.describe()),
            None => "warm cache".to_string(),
        };
        out.note = format!(
            "{} sequential GETs of one {} blob{}, {cache}, {}",
            self.plan.big_pulls,
            size_name(blob.size),
            if tls { " over TLS" } else { "" },
            how.receiver_note(),
        );
        Ok(out)
    }

    /// With `--file-url` and `--disk-dir`: the bytes of `blob` written to a file the file
    /// server serves, for the big pull to be measured beside; the server, the file's URL
    /// and its path.
    async fn file_beside(&self, blob: Blob) -> Result<Option<(Registry, String, PathBuf)>> {
        let (Some(files), Some(dir)) = (&self.files, &self.disk_dir) else {
            return Ok(None);
        };
        let name = format!("pull-beside-{}.bin", size_name(blob.size));
        let path = dir.join(&name);
        write_fsync(path.clone(), blob)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Some((files.clone(), files.url(&format!("/{name}")), path)))
    }

    /// `big_pulls` GETs of `url` (which serves `blob`), after one untimed GET that warms
    /// the page cache. With `sources` (other servers' URLs of the same bytes, by what
    /// they are), each registry GET runs after one GET from each of them, and a last
    /// round of theirs follows, after one untimed GET of each; every registry GET is
    /// compared with each source's GETs on either side of it (the host's speed moves by
    /// 2x within a minute here, so a server measured at another time says little).
    /// Each GET receives its body as `how` says ([`crate::fetch`]: read into a 1 MiB
    /// buffer, or spliced away), after evicting the blob from the page cache when `how`
    /// is cold; with `--verify` every byte is hashed and the digest compared.
    async fn gets_in_turns(
        &self,
        reg: Registry,
        url: String,
        sources: &[(&'static str, Registry, String)],
        blob: Blob,
        how: &PullHow,
    ) -> Result<Outcome> {
        let source_get = |k: usize| async move {
            let (what, server, url) = &sources[k];
            how.before_get(blob.size)?;
            let t = Instant::now();
            let n = pull_once(server, url, blob, how)
                .await
                .with_context(|| format!("GET from {what} beside the pull"))?;
            Ok::<f64, anyhow::Error>(n as f64 / t.elapsed().as_secs_f64().max(1e-9) / 1e6)
        };
        how.before_get(blob.size)?;
        pull_once(&reg, &url, blob, how).await?;
        for k in 0..sources.len() {
            source_get(k).await?;
        }
        let (load, beside) = in_turns(
            self.plan.big_pulls,
            |_| {
                let (reg, url, how) = (reg.clone(), url.clone(), how.clone());
                // Untimed: the eviction happens before the GET's clock starts.
                let evicted = how.before_get(blob.size).map_err(|e| format!("{e:#}"));
                move |_, _| {
                    let (reg, url, how, evicted) =
                        (reg.clone(), url.clone(), how.clone(), evicted.clone());
                    async move {
                        if let Err(e) = evicted {
                            bail!("{e}");
                        }
                        let n = pull_once(&reg, &url, blob, &how).await?;
                        Ok(Done::new(n, 1))
                    }
                }
            },
            sources.len(),
            source_get,
        )
        .await?;
        let mut out = load.into_outcome("", "MB/s");
        for ((what, _, _), b) in sources.iter().zip(beside) {
            out.beside.insert(what, b);
        }
        Ok(out)
    }

    /// GETs each small blob `push-mono-<small>` pushed, one after another.
    async fn pull_small(&self) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        let blobs = Arc::new(self.small_blobs.lock().await.clone());
        if blobs.is_empty() {
            bail!(
                "pull-small needs the blobs of push-mono-{} (run that scenario first)",
                size_name(self.plan.small)
            );
        }
        let verify = self.verify;
        let count = blobs.len() as u64;
        let b2 = blobs.clone();
        let load = run_load(1, Duration::from_secs(600), count, 0, move |_, i| {
            let (reg, blobs) = (reg.clone(), b2.clone());
            async move {
                let (blob, digest) = blobs
                    .get(i as usize)
                    .cloned()
                    .context("pull index out of range")?;
                let url = reg.url(&format!("/v2/{PUSH_REPO}/blobs/{digest}"));
                let n = get_whole(&reg, &url, blob, verify, None).await?;
                Ok(Done::new(n, 1))
            }
        })
        .await;
        let mut out = load.into_outcome("", "MB/s");
        out.note = format!(
            "{count} sequential GETs of {} blobs, reqwest (copies the body into user space){}",
            size_name(self.plan.small),
            if verify { ", content verified" } else { "" }
        );
        Ok(out)
    }

    async fn pull_ranges(&self, concurrency: usize) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        let blob = self.big_blob().await?;
        let url = reg.url(&format!(
            "/v2/{PUSH_REPO}/blobs/{}",
            blob_digest(blob).await?
        ));
        let seed = self.seed("ranges", 0);
        let len = MIB.min(blob.size);
        let load = run_load(
            concurrency,
            Duration::from_secs_f64(self.plan.load_secs),
            1_000_000,
            1,
            move |_, i| {
                let (reg, url) = (reg.clone(), url.clone());
                async move {
                    let mut s = seed ^ i;
                    let start = splitmix64(&mut s) % (blob.size - len + 1);
                    let r = reg
                        .req(Method::GET, &url, SMALL_TIMEOUT)
                        .await?
                        .header(
                            header::RANGE,
                            format!("bytes={}-{}", start, start + len - 1),
                        )
                        .send()
                        .await
                        .context("GET range")?;
                    let r = expect(r, StatusCode::PARTIAL_CONTENT, "GET range").await?;
                    let body = r.bytes().await.context("reading a range")?;
                    if body.len() as u64 != len || !blob.matches(start, &body) {
                        bail!(
                            "range {start}+{len}: got {} bytes, or wrong content",
                            body.len()
                        );
                    }
                    Ok(Done::new(len, 1))
                }
            },
        )
        .await;
        let mut out = load.into_outcome("", "MB/s");
        out.note = format!(
            "random 1 MiB ranges of a {} blob, {concurrency} clients, reqwest (copies the body \
             into user space), content verified",
            size_name(blob.size)
        );
        Ok(out)
    }

    async fn pull_concurrent(&self, concurrency: usize) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        let blob = self.big_blob().await?;
        let url = reg.url(&format!(
            "/v2/{PUSH_REPO}/blobs/{}",
            blob_digest(blob).await?
        ));
        let deadline = Instant::now() + Duration::from_secs_f64(self.plan.x64_pull_secs);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (reg, url) = (reg.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let n = get_whole(&reg, &url, blob, false, Some(deadline)).await?;
                anyhow::Ok((n, t.elapsed()))
            }));
        }
        let (mut bytes, mut lat, mut done, mut errors, mut first) =
            (0u64, Lat::default(), 0u64, 0u64, None);
        for t in tasks {
            match t.await {
                Ok(Ok((n, d))) => {
                    bytes += n;
                    if n == blob.size {
                        done += 1;
                        lat.push(d);
                    }
                }
                Ok(Err(e)) => {
                    errors += 1;
                    first.get_or_insert(format!("{e:#}"));
                }
                Err(e) => {
                    errors += 1;
                    first.get_or_insert(format!("task: {e}"));
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let (p50, p99, max) = lat.summary();
        Ok(Outcome {
            unit: "MB/s",
            ok: errors == 0 && bytes > 0,
            error: first,
            bytes,
            requests: concurrency as u64,
            ops: done,
            errors,
            seconds: secs,
            mb_s: bytes as f64 / secs / 1e6,
            req_s: done as f64 / secs,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
            concurrency,
            note: format!(
                "{concurrency} concurrent GETs of one {} blob, reqwest (copies the body into user \
                 space), cut at {:.0} s; {done} finished",
                size_name(blob.size),
                self.plan.x64_pull_secs
            ),
            ..Outcome::default()
        })
    }

    // ---------------------------------------------------------------- manifests

    async fn manifest_fixture(&self) -> Result<Arc<ManifestFixture>> {
        let mut g = self.manifest.lock().await;
        if let Some(f) = &*g {
            return Ok(f.clone());
        }
        let reg = self.reg()?;
        let f =
            Arc::new(push_image(reg, MANIFEST_REPO, "latest", self.seed("manifest", 0), 3).await?);
        *g = Some(f.clone());
        Ok(f)
    }

    async fn manifests(&self, head: bool, by_digest: bool, c: usize) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        let f = self.manifest_fixture().await?;
        let reference = if by_digest { &f.digest } else { &f.tag };
        let url = reg.url(&format!("/v2/{}/manifests/{reference}", f.repo));
        let f2 = f.clone();
        let load = run_load(
            c,
            Duration::from_secs_f64(self.plan.load_secs),
            10_000_000,
            1,
            move |_, _| {
                let (reg, url, f) = (reg.clone(), url.clone(), f2.clone());
                async move { manifest_request(&reg, &url, head, &f).await }
            },
        )
        .await;
        let mut out = load.into_outcome("", "req/s");
        out.note = format!(
            "{} bytes manifest, {c} clients, keep-alive",
            f.manifest.len()
        );
        Ok(out)
    }

    // ---------------------------------------------------------------- token service

    /// `GET <realm>?service=&scope=repository:bench/manifest:pull,push` with the `--login`
    /// credentials, from `c` clients: tokens per second. Each answer must be a JWT granting
    /// pull and push on that repository.
    async fn token_issue(&self, c: usize) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        let login = reg
            .login()
            .cloned()
            .context("token-* scenarios need --login USER:PASS")?;
        let url = reg
            .token_url(&login, &format!("repository:{MANIFEST_REPO}:pull,push"))
            .await?;
        let load = run_load(
            c,
            Duration::from_secs_f64(self.plan.load_secs),
            10_000_000,
            1,
            move |_, _| {
                let (reg, url, login) = (reg.clone(), url.clone(), login.clone());
                async move {
                    let r = reg
                        .http
                        .get(&url)
                        .header(header::AUTHORIZATION, login.basic.clone())
                        .timeout(SMALL_TIMEOUT)
                        .send()
                        .await
                        .context("GET token")?;
                    let r = expect(r, StatusCode::OK, "GET token").await?;
                    let body = r.bytes().await.context("token body")?;
                    check_token_grants(&body, MANIFEST_REPO, &["pull", "push"])?;
                    Ok(Done::new(body.len() as u64, 1))
                }
            },
        )
        .await;
        let mut out = load.into_outcome("", "req/s");
        out.note = format!(
            "token requests with Basic credentials (--login) for repository:{MANIFEST_REPO}:pull,push, \
             {c} clients, keep-alive; req/s = tokens/s, each checked to grant pull and push"
        );
        Ok(out)
    }

    /// The web UI's first page of a project with `plan.listing` repositories (the catalog
    /// fixture, under project `bench`) or of a repository with `plan.listing` tags (the
    /// tags fixture), as a signed-in user (`--basic-user`, through the sign-in form, with
    /// its CSRF cookie and field): one browser, page after page, the whole HTML read.
    async fn ui_page(&self, repository: bool) -> Result<Outcome> {
        if repository {
            self.tags_fixture().await?;
        } else {
            self.catalog_fixture().await?;
        }
        let reg = self.reg()?.clone();
        let creds = self
            .basic_user
            .clone()
            .context("ui-* scenarios need --basic-user USER:PASS (a member of project bench)")?;
        let (user, password) = creds.split_once(':').context("--basic-user is USER:PASS")?;
        let session = web_sign_in(&reg, user, password).await?;
        let path = if repository {
            format!("/c/repositories/{TAGS_REPO}")
        } else {
            "/c/projects/bench".to_string()
        };
        let url = reg.url(&path);
        let marker = if repository {
            "class=\"artifact\""
        } else {
            "class=\"repository\""
        };
        let load = run_load(
            1,
            Duration::from_secs_f64(self.plan.load_secs),
            10_000_000,
            3,
            move |_, _| {
                let (reg, url, session) = (reg.clone(), url.clone(), session.clone());
                async move {
                    let r = reg
                        .http
                        .get(&url)
                        .header(header::COOKIE, format!("berth_session={session}"))
                        .timeout(SMALL_TIMEOUT)
                        .send()
                        .await
                        .with_context(|| format!("GET {url}"))?;
                    let r = expect(r, StatusCode::OK, "UI page").await?;
                    let body = r.bytes().await.context("page body")?;
                    if !String::from_utf8_lossy(&body).contains(marker) {
                        bail!("the page lists nothing ({marker} missing)");
                    }
                    Ok(Done::new(body.len() as u64, 1))
                }
            },
        )
        .await;
        let mut out = load.into_outcome("", "req/s");
        out.note = format!(
            "GET {path} (first page of {} {}), signed in, 1 browser; p99 = one page",
            self.plan.listing,
            if repository { "tags" } else { "repositories" }
        );
        Ok(out)
    }

    /// A user's password sent as Basic straight to `/v2` (`--basic-user`), the first use
    /// of that credential on the server: `c` clients send their first manifest GET at
    /// once (the server checks the password with argon2 only once if concurrent checks of
    /// one credential wait for each other), then `load_secs` of GETs (the credential
    /// cache). One password check on its own is timed at the token endpoint, which checks
    /// afresh on every request.
    async fn basic_manifest(&self, c: usize) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        let user = self
            .basic_user
            .clone()
            .context("token-basic-* needs --basic-user USER:PASS (a user, with a password)")?;
        let f = self.manifest_fixture().await?;
        let user_login = Arc::new(Login::new(&user)?);
        let basic = Registry::new(&reg.base, Auth::Fixed(user_login.basic.clone()), 1024)?;
        let url = basic.url(&format!("/v2/{}/manifests/{}", f.repo, f.tag));
        // The first requests, all at once, on fresh connections.
        let mut wave = Vec::new();
        for _ in 0..c {
            let (basic, url, f) = (basic.clone(), url.clone(), f.clone());
            wave.push(tokio::spawn(async move {
                let t = Instant::now();
                manifest_request(&basic, &url, false, &f).await?;
                anyhow::Ok(t.elapsed())
            }));
        }
        let mut first = Lat::default();
        for w in wave {
            first.push(w.await.context("first-wave task")??);
        }
        let (first_p50, _, first_max) = first.summary();
        let load = {
            let (basic, url, f) = (basic.clone(), url.clone(), f.clone());
            run_load(
                c,
                Duration::from_secs_f64(self.plan.load_secs),
                10_000_000,
                0,
                move |_, _| {
                    let (basic, url, f) = (basic.clone(), url.clone(), f.clone());
                    async move { manifest_request(&basic, &url, false, &f).await }
                },
            )
            .await
        };
        // One password check: the fastest of 3 token requests with the user's password.
        let token_url = basic
            .token_url(&user_login, &format!("repository:{}:pull", f.repo))
            .await?;
        let mut check_ms = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let r = basic
                .http
                .get(&token_url)
                .header(header::AUTHORIZATION, user_login.basic.clone())
                .timeout(SMALL_TIMEOUT)
                .send()
                .await
                .context("GET token with the user's password")?;
            let r = expect(r, StatusCode::OK, "GET token with the user's password").await?;
            r.bytes().await.context("token body")?;
            check_ms = check_ms.min(t.elapsed().as_secs_f64() * 1000.0);
        }
        let mut out = load.into_outcome("", "req/s");
        out.first_wave = Some(crate::stats::FirstWave {
            clients: c,
            p50_ms: first_p50,
            max_ms: first_max,
            password_check_ms: check_ms,
        });
        out.note = format!(
            "manifest GET by tag with a user's password as Basic on every request, {c} clients; \
             first {c} requests at once (cold credential cache): p50 {first_p50:.1} ms, max {first_max:.1} ms; \
             one password check (token endpoint, best of 3): {check_ms:.1} ms"
        );
        Ok(out)
    }

    /// `skopeo copy` of an image of `layers` layers (pushed first, untimed) from the
    /// registry with the `--login` credentials, twice; counts the token requests the
    /// server logged (`--server-log`, access log on) during each pull.
    async fn token_pull(&self, layers: u64) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        let login = reg
            .login()
            .cloned()
            .context("token-pull needs --login USER:PASS")?;
        let log = self
            .server_log
            .clone()
            .context("token-pull needs --server-log (the server's log, access log on)")?;
        let skopeo = tokio::process::Command::new("skopeo")
            .arg("--version")
            .output()
            .await;
        if !skopeo.is_ok_and(|o| o.status.success()) {
            bail!("token-pull runs skopeo, which is not installed here (apt-get install skopeo)");
        }
        let repo = format!("bench/pull{layers}");
        let f = push_image(&reg, &repo, "v1", self.seed("token-pull", 0), layers).await?;
        let host = reg
            .base
            .split_once("://")
            .map(|(_, h)| h.to_string())
            .context("registry URL without a scheme")?;
        let pulls = 2u64;
        let mut lat = Lat::default();
        let mut tokens = Vec::new();
        let mut v2 = Vec::new();
        let start = Instant::now();
        for i in 0..pulls {
            let before = served_counts(&log)?;
            let dir =
                std::env::temp_dir().join(format!("berth-bench-pull-{}-{i}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let t = Instant::now();
            let run = tokio::process::Command::new("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false", "--src-creds"])
                .arg(&login.user_pass)
                .arg(format!("docker://{host}/{repo}:v1"))
                .arg(format!("dir:{}", dir.display()))
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(Duration::from_secs(120), run)
                .await
                .context("skopeo copy took over 120 s")?
                .context("running skopeo")?;
            let took = t.elapsed();
            let files = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
            let _ = std::fs::remove_dir_all(&dir);
            if !out.status.success() {
                bail!(
                    "skopeo copy failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            // The config and layers, manifest.json and version.
            if files as u64 != f.blobs.len() as u64 + 2 {
                bail!("skopeo wrote {files} files, expected {}", f.blobs.len() + 2);
            }
            // The access log line is written as the response goes out.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = served_counts(&log)?;
            lat.push(took);
            tokens.push(after.0 - before.0);
            v2.push(after.1 - before.1);
        }
        let secs = start.elapsed().as_secs_f64();
        let (p50, p99, max) = lat.summary();
        let per_pull = tokens.iter().sum::<u64>() as f64 / pulls as f64;
        Ok(Outcome {
            unit: "tokens/pull",
            ok: true,
            requests: v2.iter().sum::<u64>() + tokens.iter().sum::<u64>(),
            ops: pulls,
            seconds: secs,
            req_s: pulls as f64 / secs,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
            concurrency: 1,
            count: Some(per_pull),
            note: format!(
                "skopeo copy docker://{repo}:v1 (config + {layers} layers) to a directory with --src-creds, \
                 {pulls} pulls: token requests per pull {tokens:?}, /v2 requests per pull {v2:?}; latency = one pull"
            ),
            ..Outcome::default()
        })
    }

    // ---------------------------------------------------------------- kubelet

    async fn kubelet(&self, c: usize) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        // Setup (untimed): many small images, each a config and 3 small layers.
        let n = self.plan.kube_images;
        let seeds: Vec<u64> = (0..n).map(|i| self.seed("kubelet", i)).collect();
        let setup = {
            let reg = reg.clone();
            let seeds = Arc::new(seeds);
            run_load(16, Duration::from_secs(600), n, 0, move |_, i| {
                let (reg, seeds) = (reg.clone(), seeds.clone());
                async move {
                    let repo = format!("bench/kube/app{i:03}");
                    push_image(&reg, &repo, "v1", seeds[i as usize], 3).await?;
                    Ok(Done::new(0, 1))
                }
            })
            .await
        };
        if setup.errors > 0 {
            bail!(
                "setting up images: {}",
                setup.first_error.unwrap_or_default()
            );
        }
        if let Some(r) = &self.rss {
            r.reset();
        }
        let seed = self.seed("kubelet-pick", 0);
        let load = run_load(
            c,
            Duration::from_secs_f64(self.plan.load_secs * 2.0),
            10_000_000,
            0,
            move |_, i| {
                let reg = reg.clone();
                async move {
                    let mut s = seed ^ i;
                    let img = splitmix64(&mut s) % n;
                    pull_image(&reg, &format!("bench/kube/app{img:03}"), "v1").await
                }
            },
        )
        .await;
        let images = load.ops;
        let secs = load.seconds;
        let mut out = load.into_outcome("", "req/s");
        out.note = format!(
            "{n} images (config + 3 layers of 4-256 KiB), {c} clients; {:.0} image pulls/s; \
             latency = one image pull (HEAD tag, GET manifest by digest, GET config and layers)",
            images as f64 / secs.max(1e-9)
        );
        Ok(out)
    }

    // ---------------------------------------------------------------- listings

    async fn tags_fixture(&self) -> Result<()> {
        let reg = self.reg()?.clone();
        let n = self.plan.listing;
        let last = format!("t{:05}", n - 1);
        let first = "t00000";
        if reg.head_manifest(TAGS_REPO, &last).await?.is_some()
            && reg.head_manifest(TAGS_REPO, first).await?.is_some()
        {
            return Ok(());
        }
        if self.skip_setup {
            bail!("{TAGS_REPO} lacks its {n} tags and --skip-setup was given");
        }
        // One tiny manifest, fixed across runs so that the fixture can be reused.
        let f = Arc::new(push_image(&reg, TAGS_REPO, first, FIXTURE_SEED, 1).await?);
        let load = run_load(16, Duration::from_secs(1200), n, 0, move |_, i| {
            let (reg, f) = (reg.clone(), f.clone());
            async move {
                reg.put_manifest(TAGS_REPO, &format!("t{i:05}"), f.manifest.clone())
                    .await?;
                Ok(Done::new(f.manifest.len() as u64, 1))
            }
        })
        .await;
        let mut out = load.into_outcome("setup-tags", "req/s");
        out.scenario = format!("setup-tags-{n}");
        out.note = format!("PUT one manifest by {n} tags, 16 clients (untimed fixture)");
        let ok = out.ok;
        let err = out.error.clone();
        self.setups.lock().await.push(out);
        if !ok {
            bail!("tag setup failed: {}", err.unwrap_or_default());
        }
        Ok(())
    }

    async fn catalog_fixture(&self) -> Result<()> {
        let reg = self.reg()?.clone();
        let n = self.plan.listing;
        let name = |i: u64| format!("bench/cat/r{i:05}");
        if reg.head_manifest(&name(n - 1), "v1").await?.is_some()
            && reg.head_manifest(&name(0), "v1").await?.is_some()
        {
            return Ok(());
        }
        if self.skip_setup {
            bail!("the catalog lacks its {n} repositories and --skip-setup was given");
        }
        // One tiny image in a source repository; every catalog repository mounts its
        // blobs (deduplication is the point here) and gets the same manifest.
        let f = Arc::new(push_image(&reg, CAT_SRC, "v1", FIXTURE_SEED + 1, 1).await?);
        let load = run_load(16, Duration::from_secs(1200), n, 0, move |_, i| {
            let (reg, f) = (reg.clone(), f.clone());
            async move {
                let repo = format!("bench/cat/r{i:05}");
                for d in &f.blobs {
                    reg.mount(&repo, d, CAT_SRC).await?;
                }
                reg.put_manifest(&repo, "v1", f.manifest.clone()).await?;
                Ok(Done::new(0, 1 + f.blobs.len() as u64))
            }
        })
        .await;
        let mut out = load.into_outcome("", "req/s");
        out.scenario = format!("setup-catalog-{n}");
        out.note = format!(
            "{n} repositories: mount 2 blobs + PUT manifest each, 16 clients (untimed fixture)"
        );
        let ok = out.ok;
        let err = out.error.clone();
        self.setups.lock().await.push(out);
        if !ok {
            bail!("catalog setup failed: {}", err.unwrap_or_default());
        }
        Ok(())
    }

    /// Pages through a listing (following `Link`) `listing_passes` times; latency is per page.
    async fn listing(&self, first: &str, field: &str, prefix: &str, want: u64) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        let passes = self.plan.listing_passes;
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut lat = Lat::default();
        let (mut pages, mut bytes) = (0u64, 0u64);
        let start = Instant::now();
        let mut pass_ms = Vec::new();
        let mut unordered = false;
        for _ in 0..passes {
            let t_pass = Instant::now();
            let mut url = reg.url(first);
            let mut seen = std::collections::HashSet::new();
            let mut last_item = String::new();
            // Enough pages for the listing at one item per page, plus slack.
            for _page in 0..want + 1000 {
                if Instant::now() > deadline {
                    bail!("listing took longer than 300 s");
                }
                let t = Instant::now();
                let r = reg
                    .req(Method::GET, &url, SMALL_TIMEOUT)
                    .await?
                    .send()
                    .await
                    .with_context(|| format!("GET {url}"))?;
                let r = expect(r, StatusCode::OK, "listing").await?;
                let next = next_link(r.headers());
                let body = r.bytes().await.context("listing body")?;
                lat.push(t.elapsed());
                pages += 1;
                bytes += body.len() as u64;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).context("listing is not JSON")?;
                let items = v[field]
                    .as_array()
                    .with_context(|| format!("listing has no {field:?} array"))?;
                for it in items {
                    let s = it.as_str().unwrap_or_default();
                    // The spec wants lexical order; distribution 2.8 lists tags unordered.
                    unordered |= s <= last_item.as_str();
                    if s.starts_with(prefix) && !seen.insert(s.to_string()) {
                        bail!("{s:?} listed twice");
                    }
                    last_item = s.to_string();
                }
                match next {
                    Some(n) => url = reg.resolve(&n)?,
                    None => break,
                }
            }
            if (seen.len() as u64) < want {
                bail!(
                    "listing returned {} of the {want} expected entries",
                    seen.len()
                );
            }
            pass_ms.push(t_pass.elapsed().as_secs_f64() * 1000.0);
        }
        let secs = start.elapsed().as_secs_f64();
        let (p50, p99, max) = lat.summary();
        pass_ms.sort_by(f64::total_cmp);
        Ok(Outcome {
            unit: "ms",
            ok: true,
            bytes,
            requests: pages,
            ops: pages,
            seconds: secs,
            mb_s: bytes as f64 / secs / 1e6,
            req_s: pages as f64 / secs,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
            concurrency: 1,
            listing_ms: pass_ms.get(pass_ms.len() / 2).copied(),
            note: format!(
                "{want} entries, {} page(s) per pass, whole listing {:.1} ms (median of {passes}){}",
                pages / passes.max(1),
                pass_ms.get(pass_ms.len() / 2).copied().unwrap_or(0.0),
                if unordered {
                    "; NOT in lexical order"
                } else {
                    ""
                }
            ),
            ..Outcome::default()
        })
    }

    // ---------------------------------------------------------------- garbage collection

    /// A registry of `blobs` small unique layers (a tenth of as many manifests, 10 layers
    /// each, one shared config), filled over HTTP; a tenth of the manifests deleted, which
    /// leaves a tenth of the layers referenced by nothing; then the collector
    /// (`--gc-command`, through `sh -c`): once with ` --dry-run` appended, once as given,
    /// each timed on the wall clock. The fill is setup. The run must free exactly the
    /// garbage (its summary line says `freed N blobs`).
    async fn gc(&self, blobs: u64) -> Result<Outcome> {
        const LAYERS: u64 = 10;
        const LAYER_SIZE: u64 = 1024;
        let command = self
            .gc_command
            .clone()
            .context("gc-* needs --gc-command (the registry's collector, run with sh -c)")?;
        let reg = self.reg()?.clone();
        let images = (blobs / LAYERS).max(10);
        let name = gc_name(blobs);
        let repo = format!("bench/gc-{:08x}", self.seed(&name, 0) as u32);
        let config = Bytes::from(format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}},\"bench\":\"{repo}\"}}"
        ));
        let config = Arc::new((
            reg.post_whole(&repo, config.clone()).await?,
            config.len() as u64,
        ));

        // Fill: 16 images at a time, each its layers one after another, then its manifest.
        let manifests: Arc<std::sync::Mutex<Vec<Option<String>>>> =
            Arc::new(std::sync::Mutex::new(vec![None; images as usize]));
        let seeds: Arc<Vec<u64>> = Arc::new(
            (0..images * LAYERS)
                .map(|i| self.seed(&name, i + 1))
                .collect(),
        );
        let load = {
            let (reg, repo, config, manifests, seeds) = (
                reg.clone(),
                repo.clone(),
                config.clone(),
                manifests.clone(),
                seeds.clone(),
            );
            run_load(16, Duration::from_secs(3600), images, 0, move |_, i| {
                let (reg, repo, config, manifests, seeds) = (
                    reg.clone(),
                    repo.clone(),
                    config.clone(),
                    manifests.clone(),
                    seeds.clone(),
                );
                async move {
                    let mut layers = Vec::with_capacity(LAYERS as usize);
                    for l in 0..LAYERS {
                        let data =
                            Blob::new(seeds[(i * LAYERS + l) as usize], LAYER_SIZE).to_bytes();
                        layers.push((reg.post_whole(&repo, data).await?, LAYER_SIZE));
                    }
                    let manifest = image_manifest((&config.0, config.1), &layers);
                    reg.put_manifest(&repo, &format!("m{i:06}"), manifest.clone())
                        .await?;
                    let digest = crate::data::sha256_digest(&manifest);
                    manifests.lock().unwrap_or_else(|e| e.into_inner())[i as usize] = Some(digest);
                    Ok(Done::new(
                        LAYERS * LAYER_SIZE + manifest.len() as u64,
                        LAYERS + 1,
                    ))
                }
            })
            .await
        };
        let fill_seconds = load.seconds;
        let mut fill = load.into_outcome("", "req/s");
        fill.scenario = format!("setup-{name}");
        fill.note = format!(
            "{} blobs ({images} images of {LAYERS} {LAYER_SIZE}-byte layers, one shared config): \
             one POST ?digest= per blob, PUT manifest per image, 16 clients (untimed fixture)",
            images * LAYERS + 1
        );
        let (ok, err) = (fill.ok, fill.error.clone());
        self.setups.lock().await.push(fill);
        if !ok || load_incomplete(&manifests) {
            bail!(
                "filling the registry failed: {}",
                err.unwrap_or_else(|| "not every image was pushed".into())
            );
        }

        // A tenth of the images deleted: their layers become garbage.
        let doomed: Arc<Vec<String>> = Arc::new(
            manifests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .step_by(10)
                .flatten()
                .cloned()
                .collect(),
        );
        let garbage = doomed.len() as u64 * LAYERS;
        let deletes = {
            let (reg, repo, doomed) = (reg.clone(), repo.clone(), doomed.clone());
            run_load(
                16,
                Duration::from_secs(1200),
                doomed.len() as u64,
                0,
                move |_, i| {
                    let (reg, repo, doomed) = (reg.clone(), repo.clone(), doomed.clone());
                    async move {
                        reg.delete_manifest(&repo, &doomed[i as usize]).await?;
                        Ok(Done::new(0, 1))
                    }
                },
            )
            .await
        };
        if deletes.errors > 0 || deletes.ops != doomed.len() as u64 {
            bail!(
                "deleting {} manifests failed: {}",
                doomed.len(),
                deletes.first_error.unwrap_or_default()
            );
        }
        let delete_seconds = deletes.seconds;

        let dry = run_collector(&format!("{command} --dry-run")).await?;
        let dry_freed = freed_blobs(&dry.stdout, "would free")?;
        let run = run_collector(&command).await?;
        let freed = freed_blobs(&run.stdout, "freed")?;
        if dry_freed != garbage || freed != garbage {
            bail!(
                "the registry held {garbage} unreferenced blobs; the dry run reported {dry_freed}, \
                 the collection freed {freed}: {} / {}",
                summary_line(&dry.stdout),
                summary_line(&run.stdout)
            );
        }
        let total = images * LAYERS + 1;
        let blobs_per_s = freed as f64 / run.seconds.max(1e-9);
        Ok(Outcome {
            unit: "s",
            ok: true,
            ops: freed,
            requests: 0,
            seconds: run.seconds,
            req_s: blobs_per_s,
            p50_ms: run.seconds * 1000.0,
            p99_ms: run.seconds * 1000.0,
            max_ms: run.seconds * 1000.0,
            concurrency: 1,
            gc: Some(GcFigures {
                blobs: total,
                garbage,
                fill_seconds,
                delete_seconds,
                dry_run_seconds: dry.seconds,
                seconds: run.seconds,
                freed,
                blobs_per_s,
                peak_rss_mib: children_peak_rss_mib(),
                summary: vec![summary_line(&dry.stdout), summary_line(&run.stdout)],
            }),
            note: format!(
                "{total} blobs, {garbage} garbage ({} manifests deleted): collected in {:.1} s \
                 ({blobs_per_s:.0} blobs/s; dry run {:.1} s); fill {fill_seconds:.0} s, deletes {delete_seconds:.1} s (untimed); \
                 req/s = blobs freed per second, latency = the collection",
                doomed.len(),
                run.seconds,
                dry.seconds
            ),
            ..Outcome::default()
        })
    }

    // ---------------------------------------------------------------- machine baselines

    async fn machine_sha256(&self) -> Result<Outcome> {
        let blob = Blob::new(FILE_SEED, self.plan.big);
        let t = Instant::now();
        let d = tokio::task::spawn_blocking(move || blob.digest()).await?;
        let secs = t.elapsed().as_secs_f64();
        Ok(Outcome {
            unit: "MB/s",
            ok: true,
            bytes: blob.size,
            ops: 1,
            seconds: secs,
            mb_s: blob.size as f64 / secs / 1e6,
            note: format!(
                "SHA-256 of the generated {} on one core ({d})",
                size_name(blob.size)
            ),
            ..Outcome::default()
        })
    }

    /// Writes the generated big file (and a small one) to `--disk-dir`, fsynced: the disk
    /// baseline, and the files the `file-*` scenarios fetch from a plain HTTP server.
    async fn machine_disk(&self) -> Result<Outcome> {
        let dir = self
            .disk_dir
            .clone()
            .context("machine-disk needs --disk-dir")?;
        let blob = Blob::new(FILE_SEED, self.plan.big);
        let path = dir.join(format!("bench-{}.bin", size_name(blob.size)));
        let secs = write_fsync(path, blob).await?;
        std::fs::write(dir.join("small.json"), small_file()).context("writing small.json")?;
        Ok(Outcome {
            unit: "MB/s",
            ok: true,
            bytes: blob.size,
            ops: 1,
            seconds: secs,
            mb_s: blob.size as f64 / secs / 1e6,
            note: format!(
                "sequential write + fsync of the generated {} to {}",
                size_name(blob.size),
                dir.display()
            ),
            ..Outcome::default()
        })
    }

    async fn file_get(&self) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        let blob = Blob::new(FILE_SEED, self.plan.big);
        let url = reg.url(&format!("/bench-{}.bin", size_name(blob.size)));
        let how = PullHow {
            splice: false,
            verify: self.verify,
            evict: None,
        };
        let mut out = self.gets_in_turns(reg, url, &[], blob, &how).await?;
        out.note = format!(
            "{} sequential GETs of a static {} file, warm cache, {}",
            self.plan.big_pulls,
            size_name(blob.size),
            how.receiver_note()
        );
        Ok(out)
    }

    async fn file_small(&self, c: usize) -> Result<Outcome> {
        let reg = self.reg()?.clone();
        let url = reg.url("/small.json");
        let want = small_file().len();
        let load = run_load(
            c,
            Duration::from_secs_f64(self.plan.load_secs),
            10_000_000,
            1,
            move |_, _| {
                let (reg, url) = (reg.clone(), url.clone());
                async move {
                    let r = reg
                        .req(Method::GET, &url, SMALL_TIMEOUT)
                        .await?
                        .send()
                        .await
                        .context("GET small file")?;
                    let r = expect(r, StatusCode::OK, "GET small file").await?;
                    let body = r.bytes().await.context("small file body")?;
                    if body.len() != want {
                        bail!("small file of {} bytes, expected {want}", body.len());
                    }
                    Ok(Done::new(want as u64, 1))
                }
            },
        )
        .await;
        let mut out = load.into_outcome("", "req/s");
        out.note = format!("static {want}-byte file, {c} clients, keep-alive");
        Ok(out)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Mono,
    Chunked,
    Stream,
}

/// One push; returns the number of HTTP requests it made.
async fn push_one(reg: &Registry, mode: Mode, blob: Blob, digest: &str, chunk: u64) -> Result<u64> {
    match mode {
        Mode::Mono => {
            reg.push_monolithic(PUSH_REPO, blob, digest).await?;
            Ok(2)
        }
        Mode::Chunked => {
            let mut loc = reg.start_upload(PUSH_REPO).await?;
            let mut off = 0;
            let mut requests = 1;
            while off < blob.size {
                let end = (off + chunk).min(blob.size);
                loc = reg.patch(&loc, blob, off..end, true).await?;
                off = end;
                requests += 1;
            }
            reg.finish(&loc, digest, blob, 0..0).await?;
            Ok(requests + 1)
        }
        Mode::Stream => {
            let loc = reg.start_upload(PUSH_REPO).await?;
            let loc = reg.patch(&loc, blob, 0..blob.size, false).await?;
            reg.finish(&loc, digest, blob, 0..0).await?;
            Ok(3)
        }
    }
}

async fn blob_digest(blob: Blob) -> Result<String> {
    // Cached per blob: hashing 1 GiB takes most of a second.
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Vec<(u64, u64, String)>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(c) = cache.lock() {
        if let Some((_, _, d)) = c
            .iter()
            .find(|(s, z, _)| *s == blob.seed && *z == blob.size)
        {
            return Ok(d.clone());
        }
    }
    let d = tokio::task::spawn_blocking(move || blob.digest()).await?;
    if let Ok(mut c) = cache.lock() {
        c.push((blob.seed, blob.size, d.clone()));
    }
    Ok(d)
}

/// Whether a whole-blob pull finds the blob in the page cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Temperature {
    Warm,
    /// Evicted before every GET (`--evict-dir`).
    Cold,
}

/// How the whole-blob GETs of `pull-<big>*` and `file-get-*` receive the body.
#[derive(Clone)]
struct PullHow {
    /// The splice receiver (else the copying one).
    splice: bool,
    /// The copying receiver hashes the body and checks its digest.
    verify: bool,
    /// Cold pulls: the directories to evict the blob from before every GET, and what
    /// each eviction did.
    evict: Option<Arc<EvictLog>>,
}

struct EvictLog {
    dirs: Vec<PathBuf>,
    done: std::sync::Mutex<Vec<crate::evict::Evicted>>,
}

impl EvictLog {
    /// Files evicted per GET and what stayed cached, for the note.
    fn describe(&self) -> String {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let lo = done.iter().map(|e| e.files).min().unwrap_or(0);
        let hi = done.iter().map(|e| e.files).max().unwrap_or(0);
        let left = done.iter().map(|e| e.left).fold(0.0, f64::max);
        let files = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo}-{hi}")
        };
        format!(
            "before each of the {} GETs (every server's) {files} file(s) of the blob's size \
             under --evict-dir synced and dropped (fdatasync + POSIX_FADV_DONTNEED; at most \
             {:.1}% of a file's pages left cached)",
            done.len(),
            left * 100.0
        )
    }
}

impl PullHow {
    /// Before a GET: a cold pull's eviction (blocking the worker thread it runs on, so
    /// that nothing else of the benchmark runs meanwhile).
    fn before_get(&self, size: u64) -> Result<()> {
        let Some(log) = &self.evict else {
            return Ok(());
        };
        let e = tokio::task::block_in_place(|| crate::evict::evict(&log.dirs, size))?;
        log.done.lock().unwrap_or_else(|e| e.into_inner()).push(e);
        Ok(())
    }

    /// The note's words for the receiver.
    fn receiver_note(&self) -> &'static str {
        match (self.splice, self.verify) {
            (true, _) => {
                "body spliced to /dev/null in the kernel (never copied to user space, as no \
                 client does; size checked only)"
            }
            (false, true) => "body read into a 1 MiB buffer, SHA-256 and size verified",
            (false, false) => "body read into a 1 MiB buffer (as containerd does)",
        }
    }
}

/// One whole-blob GET of a sequential pull, with the receiver `how` says
/// ([`crate::fetch`]).
async fn pull_once(reg: &Registry, url: &str, blob: Blob, how: &PullHow) -> Result<u64> {
    let receiver = if how.splice {
        Receiver::Splice
    } else {
        Receiver::Copy {
            digest: if how.verify {
                Some(blob_digest(blob).await?)
            } else {
                None
            },
        }
    };
    crate::fetch::get(reg, url, blob.size, &receiver).await
}

/// GETs a whole blob with reqwest (which copies the body into user space, in pieces of
/// its own) and counts its bytes; with `verify`, compares them with the generator. With
/// a `deadline`, stops reading there (a partial read is not an error).
async fn get_whole(
    reg: &Registry,
    url: &str,
    blob: Blob,
    verify: bool,
    deadline: Option<Instant>,
) -> Result<u64> {
    let r = reg
        .req(Method::GET, url, LARGE_TIMEOUT)
        .await?
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let r = expect(r, StatusCode::OK, "GET blob").await?;
    if let Some(len) = r.content_length() {
        if len != blob.size {
            bail!("Content-Length {len}, expected {}", blob.size);
        }
    }
    let mut stream = r.bytes_stream();
    let mut n = 0u64;
    let mut checker = verify.then(|| Checker::new(blob, 0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("reading the blob body")?;
        n += chunk.len() as u64;
        if let Some(c) = checker.as_mut() {
            c.feed(&chunk);
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Ok(n);
        }
    }
    if n != blob.size {
        bail!("read {n} bytes, expected {}", blob.size);
    }
    if checker.is_some_and(|c| !c.ok) {
        bail!("pulled content differs from what was pushed");
    }
    Ok(n)
}

/// The small static file of `file-small-*`: about the size of a manifest.
fn small_file() -> Bytes {
    let layers: Vec<(String, u64)> = (0..3)
        .map(|i| (format!("sha256:{:064x}", i), 1000 + i))
        .collect();
    image_manifest((&format!("sha256:{:064x}", 9), 100), &layers)
}

pub struct ManifestFixture {
    pub repo: String,
    pub tag: String,
    pub digest: String,
    pub manifest: Bytes,
    /// Config and layer digests.
    pub blobs: Vec<String>,
}

/// Pushes an image (config + `layers` small layers, sizes 4-256 KiB) and tags it.
async fn push_image(
    reg: &Registry,
    repo: &str,
    tag: &str,
    seed: u64,
    layers: u64,
) -> Result<ManifestFixture> {
    let config = Bytes::from(format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}},\"bench\":\"{seed:016x}\"}}"
    ));
    let config_digest = reg.push_bytes(repo, config.clone()).await?;
    let mut s = seed;
    let mut ls = Vec::new();
    for i in 0..layers {
        let size = 4096 + splitmix64(&mut s) % (252 * 1024);
        let data = Blob::new(seed.wrapping_add(i + 1), size).to_bytes();
        let d = reg.push_bytes(repo, data).await?;
        ls.push((d, size));
    }
    let manifest = image_manifest((&config_digest, config.len() as u64), &ls);
    reg.put_manifest(repo, tag, manifest.clone()).await?;
    let digest = crate::data::sha256_digest(&manifest);
    let mut blobs = vec![config_digest];
    blobs.extend(ls.iter().map(|(d, _)| d.clone()));
    Ok(ManifestFixture {
        repo: repo.to_string(),
        tag: tag.to_string(),
        digest,
        manifest,
        blobs,
    })
}

/// A kubelet-like pull: HEAD the tag, GET the manifest by digest, then its blobs.
async fn pull_image(reg: &Registry, repo: &str, tag: &str) -> Result<Done> {
    let digest = reg
        .head_manifest(repo, tag)
        .await?
        .with_context(|| format!("{repo}:{tag} not found"))?;
    let url = reg.url(&format!("/v2/{repo}/manifests/{digest}"));
    let r = reg
        .req(Method::GET, &url, SMALL_TIMEOUT)
        .await?
        .header(header::ACCEPT, ACCEPT_MANIFESTS)
        .send()
        .await
        .context("GET manifest")?;
    let r = expect(r, StatusCode::OK, "GET manifest").await?;
    let body = r.bytes().await.context("manifest body")?;
    if crate::data::sha256_digest(&body) != digest {
        bail!("manifest of {repo}@{digest} does not match its digest");
    }
    let m: serde_json::Value = serde_json::from_slice(&body).context("manifest JSON")?;
    let mut descs = vec![m["config"].clone()];
    descs.extend(m["layers"].as_array().cloned().unwrap_or_default());
    let mut bytes = body.len() as u64;
    let mut requests = 2;
    for d in descs {
        let (Some(dg), Some(size)) = (d["digest"].as_str(), d["size"].as_u64()) else {
            bail!("manifest descriptor without digest or size");
        };
        let url = reg.url(&format!("/v2/{repo}/blobs/{dg}"));
        let r = reg
            .req(Method::GET, &url, SMALL_TIMEOUT)
            .await?
            .send()
            .await
            .context("GET blob")?;
        let r = expect(r, StatusCode::OK, "GET blob").await?;
        let b = r.bytes().await.context("blob body")?;
        if b.len() as u64 != size {
            bail!("blob {dg}: {} bytes, expected {size}", b.len());
        }
        bytes += size;
        requests += 1;
    }
    Ok(Done::new(bytes, requests))
}

/// One `GET` or `HEAD` of the fixture's manifest at `url`: 200, its digest, its length.
async fn manifest_request(
    reg: &Registry,
    url: &str,
    head: bool,
    f: &ManifestFixture,
) -> Result<Done> {
    let method = if head { Method::HEAD } else { Method::GET };
    let r = reg
        .req(method, url, SMALL_TIMEOUT)
        .await?
        .header(header::ACCEPT, ACCEPT_MANIFESTS)
        .send()
        .await
        .context("manifest request")?;
    let r = expect(r, StatusCode::OK, "manifest").await?;
    let d = header_str(r.headers(), "docker-content-digest")?;
    if d != f.digest {
        bail!("Docker-Content-Digest {d}, expected {}", f.digest);
    }
    if head {
        return Ok(Done::new(0, 1));
    }
    let body = r.bytes().await.context("manifest body")?;
    if body.len() != f.manifest.len() {
        bail!(
            "manifest of {} bytes, expected {}",
            body.len(),
            f.manifest.len()
        );
    }
    Ok(Done::new(body.len() as u64, 1))
}

/// Fails unless `body` (a token endpoint's answer) holds a JWT granting `actions` on
/// repository `repo`.
fn check_token_grants(body: &[u8], repo: &str, actions: &[&str]) -> Result<()> {
    use base64::Engine as _;
    let v: serde_json::Value = serde_json::from_slice(body).context("token response JSON")?;
    let token = v["token"]
        .as_str()
        .context("token response without a token")?;
    let claims = token.split('.').nth(1).context("the token is not a JWT")?;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .context("the token's claims are not base64url")?;
    let claims: serde_json::Value =
        serde_json::from_slice(&claims).context("the token's claims are not JSON")?;
    let granted = claims["access"].as_array().is_some_and(|a| {
        a.iter().any(|e| {
            e["type"] == "repository"
                && e["name"] == repo
                && actions.iter().all(|want| {
                    e["actions"]
                        .as_array()
                        .is_some_and(|acts| acts.iter().any(|x| x == want))
                })
        })
    });
    if !granted {
        bail!("the token does not grant {actions:?} on {repo}: {claims}");
    }
    Ok(())
}

/// Requests the server logged as served (text log, access log on): to the token
/// endpoint, and under `/v2/`.
fn served_counts(log: &std::path::Path) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(log)
        .with_context(|| format!("reading the server log {}", log.display()))?;
    let served = text.lines().filter(|l| l.contains(" served "));
    let (mut token, mut v2) = (0, 0);
    for l in served {
        if l.contains("path=/service/token") {
            token += 1;
        } else if l.contains("path=/v2/") {
            v2 += 1;
        }
    }
    Ok((token, v2))
}

/// Writes `blob` to a new file at `path` and fsyncs it; returns the seconds it took.
async fn write_fsync(path: PathBuf, blob: Blob) -> Result<f64> {
    let t = Instant::now();
    tokio::task::spawn_blocking(move || -> Result<()> {
        use std::io::Write;
        let f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = std::io::BufWriter::with_capacity(4 * BLOCK as usize, f);
        for p in blob.pieces(0..blob.size) {
            w.write_all(&p)?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    })
    .await??;
    Ok(t.elapsed().as_secs_f64())
}

/// Runs `count` operations one at a time (`op(i)` makes the i-th, as [`run_load`] takes
/// it), each after one run of every baseline (`base(k)` for `k < bases`, the same work
/// done another way, in MB/s), and the baselines once more at the end: base, op, base,
/// ..., op, base. Each operation is compared with each baseline's runs beside it.
pub(crate) async fn in_turns<F, Fut, B, BFut>(
    count: u64,
    op: impl Fn(u64) -> F,
    bases: usize,
    base: B,
) -> Result<(Load, Vec<Beside>)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Done>> + Send + 'static,
    B: Fn(usize) -> BFut,
    BFut: std::future::Future<Output = Result<f64>>,
{
    let mut measured = vec![Vec::new(); bases];
    for (k, m) in measured.iter_mut().enumerate() {
        m.push(base(k).await?);
    }
    let mut ops = Vec::new();
    let mut load = Load::default();
    for i in 0..count {
        let l = run_load(1, Duration::from_secs(1800), 1, 0, op(i)).await;
        ops.push(l.bytes as f64 / l.seconds.max(1e-9) / 1e6);
        load.absorb(l);
        for (k, m) in measured.iter_mut().enumerate() {
            m.push(base(k).await?);
        }
    }
    let beside = measured.iter().map(|m| Beside::new(&ops, m)).collect();
    Ok((load, beside))
}

/// A write+fsync of `size` generated bytes into `dir`, in MB/s; the file is removed after.
async fn write_fsync_mb_s(dir: &std::path::Path, size: u64) -> Result<f64> {
    let path = dir.join(format!("beside-{}.bin", size_name(size)));
    let secs = write_fsync(path.clone(), Blob::new(FILE_SEED, size)).await;
    let _ = std::fs::remove_file(&path);
    Ok(size as f64 / secs? / 1e6)
}

/// Signs in through the web UI's form as a browser does (the pre-session CSRF cookie and
/// field, then the form POST); the `berth_session` cookie's value.
async fn web_sign_in(reg: &Registry, user: &str, password: &str) -> Result<String> {
    let r = reg
        .http
        .get(reg.url("/c/login"))
        .timeout(SMALL_TIMEOUT)
        .send()
        .await
        .context("GET /c/login")?;
    let r = expect(r, StatusCode::OK, "sign-in page").await?;
    let pre = set_cookie(r.headers(), "berth_csrf").context("no berth_csrf cookie")?;
    let page = r.text().await.context("sign-in page body")?;
    let marker = "name=\"csrf\" value=\"";
    let at = page
        .find(marker)
        .context("no csrf field on the sign-in page")?
        + marker.len();
    let csrf = page[at..]
        .split('"')
        .next()
        .context("csrf field")?
        .to_string();
    let form = [
        ("csrf", csrf.as_str()),
        ("username", user),
        ("password", password),
        ("return_to", "/c/projects"),
    ];
    // The answer is a redirect whose Set-Cookie is the point: not followed.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("HTTP client")?;
    let r = http
        .post(reg.url("/c/login"))
        .header(header::COOKIE, format!("berth_csrf={pre}"))
        .form(&form)
        .timeout(SMALL_TIMEOUT)
        .send()
        .await
        .context("POST /c/login")?;
    if r.status() != StatusCode::SEE_OTHER {
        bail!("signing in as {user} answered {}", r.status());
    }
    set_cookie(r.headers(), "berth_session").context("signing in set no session cookie")
}

/// The value a response's `Set-Cookie` gives cookie `name`.
fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().to_string())
}

/// Whether an image of the gc fill has no manifest digest (it was not pushed).
fn load_incomplete(manifests: &std::sync::Mutex<Vec<Option<String>>>) -> bool {
    manifests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(Option::is_none)
}

/// What one run of the collector printed, and how long it took.
struct Collected {
    stdout: String,
    seconds: f64,
}

/// Runs `command` with `sh -c` (at most 30 minutes; killed after that), timed on the wall
/// clock; fails unless it exits 0.
async fn run_collector(command: &str) -> Result<Collected> {
    let t = Instant::now();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting sh -c {command:?}"))?;
    let out = tokio::time::timeout(Duration::from_secs(1800), child.wait_with_output())
        .await
        .with_context(|| format!("{command:?} ran for more than 30 minutes"))?
        .with_context(|| format!("running {command:?}"))?;
    let seconds = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        bail!(
            "{command:?} exited with {}: {}; stderr: {}",
            out.status,
            stdout.trim(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(Collected { stdout, seconds })
}

/// The collector's summary line (`garbage collection RUN: freed N blobs ...`).
fn summary_line(stdout: &str) -> String {
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("garbage collection"))
        .unwrap_or_default()
        .to_string()
}

/// N of "`verb` N blobs" in the collector's summary line.
fn freed_blobs(stdout: &str, verb: &str) -> Result<u64> {
    let line = summary_line(stdout);
    let n = line
        .split_once(&format!(": {verb} "))
        .and_then(|(_, rest)| rest.split_once(" blobs"))
        .and_then(|(n, _)| n.parse().ok());
    n.with_context(|| {
        format!(
            "no \"{verb} N blobs\" in the collector's output: {:?}",
            stdout.trim()
        )
    })
}

/// The largest peak RSS among the child processes waited for so far (and theirs), in MiB.
fn children_peak_rss_mib() -> Option<f64> {
    // SAFETY: getrusage writes into the struct it is given and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    (rc == 0 && u.ru_maxrss > 0).then(|| u.ru_maxrss as f64 / 1024.0)
}
