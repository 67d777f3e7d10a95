//! `ctr-fetch-<size>`: the kubelet's path (issue 19). containerd's own client,
//! `ctr content fetch`, downloads one multi-layer image into a containerd the harness
//! started (`--ctr-address`), from the registry and from the reference in turns. Content
//! fetch stores the manifest, config and layers without unpacking them, so the registry
//! is not hidden behind decompression and snapshots; containerd still hashes every byte
//! and writes it to its content store, as it does for a kubelet.
//!
//! Between two fetches everything the fetch stored is removed (the image record, which
//! frees its content in a synchronous garbage collection, then each digest), and
//! containerd is asked that none of it is left and that no download is in progress, so
//! that every timed fetch downloads the whole image again. After each fetch containerd
//! is asked that all of it is there.
//!
//! A fetch is timed as the wall clock of the ctr process. ctr (1.6) redraws its progress
//! every 100 ms and exits on the first tick after the fetch ended, so every time is
//! rounded up to the next 100 ms step (about 5% of a 300 MiB fetch at 180 MB/s): single
//! fetches move in those steps, the ratio over the rounds in turns averages them out.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;

use crate::client::{Registry, image_manifest};
use crate::data::{Blob, sha256_digest, splitmix64};
use crate::scenarios::{Ctx, in_turns, size_name};
use crate::stats::{Done, Outcome};

/// The containerd namespace every fetch goes to (and the only one this module touches).
pub const NAMESPACE: &str = "berth-bench";
/// The repository the image is pushed to, on the registry and on the reference.
const REPO: &str = "bench/ctr";
/// Layers of the image: a large base layer and smaller ones above it.
pub const LAYERS: usize = 6;
/// Bound on a `ctr` command that moves no image (listing, removing, `version`).
const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(900);

/// `--ctr-address`: a containerd the harness started, and how ctr trusts https registries.
#[derive(Clone, Debug)]
pub struct Containerd {
    /// Its gRPC socket.
    pub address: PathBuf,
    /// The CA of https registry URLs (`--ca-file`), given to ctr as `--tlscacert`.
    pub ca_file: Option<PathBuf>,
}

/// Layer sizes summing to `total`: a half, a quarter, an eighth, ... of it, the last
/// two equal (the last takes the rounding), as a base layer with smaller ones on top.
pub fn layer_sizes(total: u64) -> Vec<u64> {
    const WEIGHTS: [u64; LAYERS] = [32, 16, 8, 4, 2, 2];
    let sum: u64 = WEIGHTS.iter().sum();
    let mut sizes: Vec<u64> = WEIGHTS[..LAYERS - 1]
        .iter()
        .map(|w| total / sum * w + total % sum * w / sum)
        .collect();
    let rest = total - sizes.iter().sum::<u64>();
    sizes.push(rest);
    sizes
}

/// `host:port` of a registry URL.
fn host_port(base: &str) -> Result<(reqwest::Url, String)> {
    let url = reqwest::Url::parse(base).with_context(|| format!("bad URL {base:?}"))?;
    let host = url.host_str().context("a registry URL without a host")?;
    let port = url
        .port_or_known_default()
        .context("a registry URL without a port")?;
    let hp = format!("{host}:{port}");
    Ok((url, hp))
}

/// For an `https://` registry: a `hosts.toml` under `hosts_dir` naming it as an https
/// server and host. Without one (or with only `server`), ctr (containerd 1.6) speaks
/// plain HTTP to loopback addresses whatever `--tlscacert` says.
pub fn write_hosts(hosts_dir: &Path, base: &str) -> Result<()> {
    let (url, hp) = host_port(base)?;
    if url.scheme() != "https" {
        return Ok(());
    }
    let dir = hosts_dir.join(&hp);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("hosts.toml");
    let toml = format!(
        "server = \"https://{hp}\"\n[host.\"https://{hp}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    std::fs::write(&file, toml).with_context(|| format!("writing {}", file.display()))
}

/// The arguments of `ctr content fetch` of `REPO:tag` from the registry at `base`:
/// plain HTTP for `http://`; for `https://` the CA and `hosts_dir` (see [`write_hosts`]);
/// and the credentials of `--login`.
pub fn fetch_args(
    base: &str,
    tag: &str,
    ca_file: Option<&Path>,
    hosts_dir: &Path,
    user: Option<&str>,
) -> Result<Vec<String>> {
    let (url, hp) = host_port(base)?;
    let mut args = vec!["content".to_string(), "fetch".to_string()];
    match url.scheme() {
        "http" => args.push("--plain-http".into()),
        "https" => {
            args.push("--hosts-dir".into());
            args.push(hosts_dir.display().to_string());
            if let Some(ca) = ca_file {
                args.push("--tlscacert".into());
                args.push(ca.display().to_string());
            }
        }
        s => bail!("ctr cannot fetch from a {s}:// URL"),
    }
    if let Some(u) = user {
        args.push("--user".into());
        args.push(u.to_string());
    }
    args.push(format!("{hp}/{REPO}:{tag}"));
    Ok(args)
}

/// The image: generated layers, a config and the manifest over them.
struct Image {
    tag: String,
    layers: Vec<(Blob, String)>,
    config: Bytes,
    config_digest: String,
    manifest: Bytes,
    digest: String,
}

impl Image {
    /// `LAYERS` layers of [`layer_sizes`]`(size)` from `seed` (hashed here, off the runtime).
    async fn generate(seed: u64, size: u64) -> Result<Image> {
        let layers = tokio::task::spawn_blocking(move || {
            layer_sizes(size)
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let b = Blob::new(seed.wrapping_add(i as u64 + 1), s);
                    (b, b.digest())
                })
                .collect::<Vec<_>>()
        })
        .await?;
        let config = Bytes::from(format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}},\"bench\":\"{seed:016x}\"}}"
        ));
        let config_digest = sha256_digest(&config);
        let ls: Vec<(String, u64)> = layers.iter().map(|(b, d)| (d.clone(), b.size)).collect();
        let manifest = image_manifest((&config_digest, config.len() as u64), &ls);
        let digest = sha256_digest(&manifest);
        Ok(Image {
            tag: format!("fetch-{}", size_name(size)),
            layers,
            config,
            config_digest,
            manifest,
            digest,
        })
    }

    async fn push(&self, reg: &Registry) -> Result<()> {
        for (blob, digest) in &self.layers {
            if !reg.blob_exists(REPO, digest).await? {
                reg.push_monolithic(REPO, *blob, digest).await?;
            }
        }
        reg.push_bytes(REPO, self.config.clone()).await?;
        reg.put_manifest(REPO, &self.tag, self.manifest.clone())
            .await
    }

    /// Every digest a fetch stores: the manifest, the config, the layers.
    fn digests(&self) -> Vec<String> {
        let mut v = vec![self.digest.clone(), self.config_digest.clone()];
        v.extend(self.layers.iter().map(|(_, d)| d.clone()));
        v
    }

    /// The bytes one fetch downloads.
    fn bytes(&self) -> u64 {
        self.layers.iter().map(|(b, _)| b.size).sum::<u64>()
            + self.config.len() as u64
            + self.manifest.len() as u64
    }
}

/// A server to fetch from: what it is, and ctr's arguments for it.
#[derive(Clone)]
struct Source {
    what: &'static str,
    args: Vec<String>,
}

/// Runs the fetches and the clean-ups between them.
struct Fetcher {
    ctr: Containerd,
    image: Image,
    /// A fetch finished since the last clean-up: the next one checks it stored the image.
    fetched: AtomicBool,
    /// Every timed fetch: from what, seconds.
    timed: std::sync::Mutex<Vec<(&'static str, f64)>>,
}

impl Fetcher {
    /// Runs `ctr --address SOCK --namespace berth-bench ARGS` for at most `limit`; its
    /// stdout, or an error with ctr's message when it fails.
    async fn ctr(&self, args: &[String], limit: Duration) -> Result<String> {
        run_ctr(&self.ctr.address, args, limit).await
    }

    /// Fetches the image from `source`; the seconds it took (wall clock of the ctr
    /// process). Timed fetches are recorded.
    async fn fetch(&self, source: &Source, timed: bool) -> Result<f64> {
        let t = Instant::now();
        let out = self
            .ctr(&source.args, FETCH_TIMEOUT)
            .await
            .with_context(|| format!("fetching the image from the {}", source.what))?;
        let secs = t.elapsed().as_secs_f64();
        // ctr marks what it found already stored "exists" instead of downloading it.
        if let Some(line) = out
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("exists"))
        {
            bail!(
                "the fetch from the {} found content already stored: {}",
                source.what,
                line.split_whitespace().next().unwrap_or_default()
            );
        }
        self.fetched.store(true, Ordering::SeqCst);
        if timed {
            self.timed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((source.what, secs));
        }
        Ok(secs)
    }

    /// The image's digests containerd holds in the namespace.
    async fn stored(&self) -> Result<Vec<String>> {
        let listed = self
            .ctr(&args(&["content", "ls", "-q"]), CTR_TIMEOUT)
            .await?;
        let ours = self.image.digests();
        Ok(listed
            .lines()
            .map(str::trim)
            .filter(|d| ours.iter().any(|o| o == d))
            .map(str::to_string)
            .collect())
    }

    /// Checks that the last fetch (if any) stored the whole image, then removes it and
    /// checks that none of it is left and no download is in progress.
    async fn clear(&self) -> Result<()> {
        let ours = self.image.digests();
        if self.fetched.swap(false, Ordering::SeqCst) {
            let stored = self.stored().await?;
            let missing: Vec<&String> = ours.iter().filter(|d| !stored.contains(d)).collect();
            if !missing.is_empty() {
                bail!("after a fetch containerd lacks {missing:?}");
            }
        }
        let images = self
            .ctr(&args(&["images", "ls", "-q"]), CTR_TIMEOUT)
            .await?;
        let images: Vec<String> = images
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if !images.is_empty() {
            // The garbage collection --sync waits for frees the image's content.
            let mut a = args(&["images", "rm", "--sync"]);
            a.extend(images);
            self.ctr(&a, CTR_TIMEOUT).await?;
        }
        let mut a = args(&["content", "rm"]);
        a.extend(ours);
        self.ctr(&a, CTR_TIMEOUT).await?;
        let left = self.stored().await?;
        if !left.is_empty() {
            bail!("containerd still holds {left:?} after removing them");
        }
        let active = self.ctr(&args(&["content", "active"]), CTR_TIMEOUT).await?;
        // A header line, then one line per download in progress.
        let ingests: Vec<&str> = active
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .collect();
        if !ingests.is_empty() {
            bail!("containerd has downloads in progress: {ingests:?}");
        }
        Ok(())
    }

    /// The timed fetches' MB/s from `what`, in order.
    fn mb_s(&self, what: &str) -> Vec<f64> {
        let bytes = self.image.bytes() as f64;
        self.timed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(w, _)| *w == what)
            .map(|(_, s)| bytes / s.max(1e-9) / 1e6)
            .collect()
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Runs `ctr --address SOCK --namespace berth-bench ARGS`, killed after `limit`.
async fn run_ctr(address: &Path, args: &[String], limit: Duration) -> Result<String> {
    let child = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(address)
        .args(["--namespace", NAMESPACE])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting ctr (containerd's client)")?;
    let shown = args.join(" ");
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("ctr {shown} ran for more than {} s", limit.as_secs()))?
        .with_context(|| format!("running ctr {shown}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // Its own message ("ctr: ..."), else the last lines (the log lines before it).
        let said: Vec<&str> = err.lines().filter(|l| l.starts_with("ctr: ")).collect();
        let said = if said.is_empty() {
            let lines: Vec<&str> = err.lines().collect();
            lines[lines.len().saturating_sub(3)..].join(" / ")
        } else {
            said.join(" / ")
        };
        bail!("ctr {shown} exited with {}: {said}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails unless a containerd answers on `address`.
async fn check_containerd(address: &Path) -> Result<()> {
    if !address.exists() {
        bail!(
            "no containerd socket at {} (--ctr-address)",
            address.display()
        );
    }
    run_ctr(address, &args(&["version"]), Duration::from_secs(20))
        .await
        .with_context(|| format!("containerd does not answer on {}", address.display()))?;
    Ok(())
}

/// `ctr-fetch-<size>`: pushes an image of `size` bytes of layers to the registry (and
/// the reference), fetches it once untimed from each, then `rounds` timed fetches from
/// the registry in turns with the reference's (reference, registry, reference, ...),
/// everything removed between two fetches.
pub async fn fetch(ctx: &Ctx, size: u64, rounds: u64) -> Result<Outcome> {
    let ctr = ctx
        .ctr
        .clone()
        .context("ctr-fetch-* needs --ctr-address SOCK (the socket of a containerd)")?;
    let reg = ctx
        .reg
        .clone()
        .context("this scenario needs a registry URL")?;
    check_containerd(&ctr.address).await?;
    let mut s = ctx.run_seed ^ 0xC7F0_5EED ^ size;
    let image = Image::generate(splitmix64(&mut s), size).await?;
    image
        .push(&reg)
        .await
        .context("pushing the image to the registry")?;
    let user = reg.login().map(|l| l.user_pass.clone());
    let ca = ctr.ca_file.as_deref();
    let hosts = std::env::temp_dir().join(format!("berth-bench-ctr-hosts-{}", std::process::id()));
    let mut sources = vec![Source {
        what: "registry",
        args: fetch_args(&reg.base, &image.tag, ca, &hosts, user.as_deref())?,
    }];
    if let Some(refr) = &ctx.reference {
        image
            .push(refr)
            .await
            .context("pushing the image to the reference")?;
        sources.push(Source {
            what: "reference",
            args: fetch_args(&refr.base, &image.tag, ca, &hosts, None)?,
        });
    }
    // The reference does not fsync what it stores: its dirty pages go to the disk now
    // rather than during the fetches.
    tokio::task::spawn_blocking(|| {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() }
    })
    .await?;
    if let Some(r) = &ctx.rss {
        r.reset();
    }
    let fetcher = Arc::new(Fetcher {
        ctr,
        image,
        fetched: AtomicBool::new(false),
        timed: std::sync::Mutex::new(Vec::new()),
    });
    // The hosts files live exactly as long as the fetches (removed whatever happened).
    let mut written = write_hosts(&hosts, &reg.base);
    if let (Ok(()), Some(refr)) = (&written, &ctx.reference) {
        written = write_hosts(&hosts, &refr.base);
    }
    let run = match written {
        Ok(()) => in_rounds(&fetcher, &sources, rounds).await,
        Err(e) => Err(e),
    };
    // Leave nothing behind, whatever happened.
    let cleared = fetcher.clear().await;
    let _ = std::fs::remove_dir_all(&hosts);
    let mut out = run?;
    cleared.context("removing the image from containerd after the fetches")?;
    let sizes: Vec<String> = fetcher
        .image
        .layers
        .iter()
        .map(|(b, _)| format!("{:.1}", b.size as f64 / (1 << 20) as f64))
        .collect();
    let list = |v: Vec<f64>| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.note = format!(
        "ctr content fetch of one image (config + {LAYERS} layers of {} MiB, {} in all), \
         {rounds} timed fetches after one untimed one, all content removed before each, \
         each timed to ctr's exit (a 100 ms progress tick); MB/s per fetch: {}",
        sizes.join(" + "),
        size_name(size),
        list(fetcher.mb_s("registry")),
    );
    if let Some(b) = out.beside.get("reference") {
        out.note += &format!(
            "; reference (in turns) {}; ratio per round {}",
            list(fetcher.mb_s("reference")),
            b.ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

/// The warm-up fetches and the timed rounds.
async fn in_rounds(fetcher: &Arc<Fetcher>, sources: &[Source], rounds: u64) -> Result<Outcome> {
    fetcher.clear().await?;
    for s in sources {
        fetcher.fetch(s, false).await?;
        fetcher.clear().await?;
    }
    let registry = sources[0].clone();
    let reference = sources.get(1).cloned();
    let requests = 2 + 1 + LAYERS as u64; // resolve (HEAD), manifest, config, layers
    // The reference's fetches are the baseline in_turns runs before and after each of
    // the registry's; each clears containerd before and after itself. Without a
    // reference the baseline only clears.
    let (load, beside) = in_turns(
        rounds,
        |_| {
            let (f, s) = (fetcher.clone(), registry.clone());
            move |_, _| {
                let (f, s) = (f.clone(), s.clone());
                async move {
                    f.fetch(&s, true).await?;
                    Ok(Done::new(f.image.bytes(), requests))
                }
            }
        },
        1,
        |_| {
            let (f, reference) = (fetcher.clone(), reference.clone());
            async move {
                f.clear().await?;
                let Some(r) = reference else {
                    return Ok(0.0);
                };
                let secs = f.fetch(&r, true).await?;
                f.clear().await?;
                Ok(f.image.bytes() as f64 / secs.max(1e-9) / 1e6)
            }
        },
    )
    .await?;
    let mut out = load.into_outcome("", "MB/s");
    if sources.len() > 1 {
        if let Some(b) = beside.into_iter().next() {
            out.beside.insert("reference", b);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layers_sum_to_the_image_size_base_layer_first() {
        for total in [60 << 20, 300 << 20, 64, 1000, (300 << 20) + 7] {
            let s = layer_sizes(total);
            assert_eq!(s.len(), LAYERS);
            assert_eq!(s.iter().sum::<u64>(), total, "{total}: {s:?}");
            assert!(s.iter().all(|n| *n > 0), "{total}: {s:?}");
            assert!(
                s[..LAYERS - 1].windows(2).all(|w| w[0] >= w[1]),
                "{total}: {s:?}"
            );
        }
        assert_eq!(
            layer_sizes(300 << 20),
            [150 << 20, 75 << 20, 75 << 19, 75 << 18, 75 << 17, 75 << 17]
        );
    }

    #[test]
    fn ctr_fetches_plain_http_or_trusts_the_ca_for_https() {
        let hosts = PathBuf::from("/tmp/hosts");
        let a = fetch_args("http://127.0.0.1:5000/", "fetch-60MiB", None, &hosts, None).unwrap();
        assert_eq!(
            a,
            [
                "content",
                "fetch",
                "--plain-http",
                "127.0.0.1:5000/bench/ctr:fetch-60MiB"
            ]
        );
        let ca = PathBuf::from("/tmp/ca.pem");
        let a = fetch_args(
            "https://169.254.7.2",
            "t",
            Some(&ca),
            &hosts,
            Some("robot:pw"),
        )
        .unwrap();
        assert_eq!(
            a,
            [
                "content",
                "fetch",
                "--hosts-dir",
                "/tmp/hosts",
                "--tlscacert",
                "/tmp/ca.pem",
                "--user",
                "robot:pw",
                "169.254.7.2:443/bench/ctr:t"
            ]
        );
        let a = fetch_args("https://127.0.0.1:8443", "t", None, &hosts, None).unwrap();
        assert_eq!(
            a,
            [
                "content",
                "fetch",
                "--hosts-dir",
                "/tmp/hosts",
                "127.0.0.1:8443/bench/ctr:t"
            ]
        );
        assert!(fetch_args("ftp://127.0.0.1:21", "t", None, &hosts, None).is_err());
    }
}
