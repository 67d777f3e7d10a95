//! berth-bench: drives any OCI distribution registry over HTTP on loopback and reports,
//! per scenario, throughput, requests per second, latency percentiles and (given the
//! server's PID) its peak RSS. See docs/performance.md.
//!
//! ```text
//! cargo run --release -p berth-bench -- http://127.0.0.1:5000 --pid 1234 --json out.json
//! berth-bench --list                      # scenario names
//! berth-bench URL --scenario manifest     # every scenario whose name starts with "manifest"
//! berth-bench fetch URL --size N --digest sha256:...   # one whole-blob GET, checked
//! ```

mod client;
mod ctr;
mod data;
mod evict;
mod fetch;
mod scenarios;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use reqwest::header::HeaderValue;
use serde::Serialize;

use scenarios::{Ctx, Plan, is_local, names};
use stats::{Outcome, RssSampler};

/// Scenario groups run when no --scenario is given (machine-*, file-*, token-*, ui-*,
/// gc-* and ctr-* must be named).
const DEFAULT_GROUPS: &[&str] = &["push", "pull", "manifest", "mixed", "tags", "catalog"];

#[derive(Parser)]
#[command(
    name = "berth-bench",
    about = "Benchmark an OCI distribution registry on 127.0.0.1 (or a --link-host)",
    after_help = "A scenario filter is a whole name (--scenario manifest-get-tag-c1 runs that one) \
                  or a prefix (--scenario push runs every push-* scenario). \
                  Without --scenario every registry scenario runs; machine-* (SHA-256, disk), \
                  file-* (a static file server such as nginx), token-* (a registry's token \
                  service: --login, --basic-user, --server-log), ui-* (Berth's web UI: \
                  --basic-user), gc-* (a garbage collection: --gc-command) and ctr-* \
                  (containerd's ctr content fetch: --ctr-address) run only when named. \
                  pull-<size> reads each body into a 1 MiB buffer (as containerd does); \
                  pull-<size>-splice splices it to /dev/null (plain http only, skipped over \
                  https); pull-<size>-cold evicts the blob from the page cache before every \
                  GET (needs --evict-dir, skipped without). `berth-bench fetch URL --size N \
                  [--digest D]` makes one such GET and prints its figures."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Registry base URL, e.g. http://127.0.0.1:5000 (loopback only). Not needed for
    /// machine-* scenarios.
    url: Option<String>,
    /// The server's PID: sample its RSS (peak per scenario, idle, VmHWM).
    #[arg(long)]
    pid: Option<u32>,
    /// Scenario name, or a prefix of names (repeatable).
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Bearer token sent with every request.
    #[arg(long, conflicts_with = "basic")]
    token: Option<String>,
    /// USER:PASS sent as HTTP basic auth with every request.
    #[arg(long, conflicts_with = "login")]
    basic: Option<String>,
    /// USER:PASS for the registry's token service (the realm of its Bearer challenge): a
    /// token per repository scope is fetched on first use and sent until it is about to
    /// expire, as docker does.
    #[arg(long, conflicts_with = "token")]
    login: Option<String>,
    /// USER:PASS of a user (a password, so the server checks it with argon2) sent as
    /// Basic straight to /v2 by the token-basic-* scenarios.
    #[arg(long)]
    basic_user: Option<String>,
    /// The server's log (access log on): token-pull-* counts the token requests in it.
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// The registry's garbage collector, run with `sh -c` by gc-* after it filled the
    /// registry and deleted a tenth of the manifests: once with ` --dry-run` appended, then
    /// as given; its stdout must have a line `garbage collection ...: freed N blobs ...`
    /// (`would free` for the dry run), e.g. `BERTH_DATA_DIR=/srv/berth berth gc
    /// --grace-seconds 0`.
    #[arg(long)]
    gc_command: Option<String>,
    /// The socket of a containerd (started for the benchmark) for ctr-fetch-*: `ctr
    /// --address SOCK content fetch` of an image from the registry, in turns with the
    /// reference.
    #[arg(long, value_name = "SOCK")]
    ctr_address: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Smaller sizes and shorter runs (100 MiB instead of 1 GiB, 1,000 tags/repositories).
    #[arg(long)]
    quick: bool,
    /// Label for this target in the output.
    #[arg(long, default_value = "registry")]
    name: String,
    /// Seed of the generated content (default: from the clock; unique per run).
    #[arg(long)]
    seed: Option<u64>,
    /// Compare every pulled byte with what was pushed (costs client CPU).
    #[arg(long)]
    verify: bool,
    /// Directory for machine-disk (the write+fsync baseline and the file-* files); with a
    /// registry URL, pushes of 100 MiB and up are also measured against a write+fsync of
    /// the same size there, just before and after each.
    #[arg(long)]
    disk_dir: Option<PathBuf>,
    /// A static file server (nginx, sendfile on) whose root is `--disk-dir`: with it, the
    /// big pull writes its blob's bytes there and takes turns with GETs of that file,
    /// each registry GET compared with the file GETs just before and after it.
    #[arg(long)]
    file_url: Option<String>,
    /// The reference registry (anonymous, loopback): with it, the big pull pushes its blob
    /// there too and takes turns with GETs of it there, each GET compared with the
    /// reference's GETs just before and after it.
    #[arg(long)]
    reference_url: Option<String>,
    /// Seconds per load scenario (manifests, ranges; mixed runs twice this).
    #[arg(long)]
    load_secs: Option<f64>,
    /// Entries in the tags-list and catalog fixtures.
    #[arg(long)]
    listing: Option<u64>,
    /// Blobs in the gc-* registry (a multiple of 100; a tenth become garbage).
    #[arg(long)]
    gc_blobs: Option<u64>,
    /// Fail instead of creating missing listing fixtures.
    #[arg(long)]
    skip_setup: bool,
    /// Print the scenario names and exit.
    #[arg(long)]
    list: bool,
    /// PEM file of the CA trusted for every https URL (the registry, --reference-url,
    /// --file-url; the copying receiver and reqwest alike).
    #[arg(long, global = true, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Besides 127.0.0.1, a host berth-bench may drive (repeatable): an IPv4 link-local
    /// address (169.254.0.0/16), e.g. a server on the far side of a veth pair.
    #[arg(long = "link-host", global = true, value_name = "ADDR")]
    link_hosts: Vec<String>,
    /// A directory where a server keeps the big blob (repeatable: Berth's data dir, the
    /// reference's root, the file server's root): pull-<size>-cold syncs and drops from
    /// the page cache every regular file of the blob's size under them before every GET.
    #[arg(long = "evict-dir", global = true, value_name = "DIR")]
    evict_dirs: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// One whole-blob GET of URL (anonymous, redirects followed) with the copying receiver
    /// (read into a 1 MiB buffer) or --splice; prints bytes, seconds and MB/s. Fails,
    /// naming the URL, when the size or the digest is not the expected one.
    Fetch {
        /// The blob's URL, e.g. http://127.0.0.1:5000/v2/REPO/blobs/sha256:...
        url: String,
        /// The expected size in bytes (Content-Length and body).
        #[arg(long)]
        size: u64,
        /// The expected digest (sha256:<hex>): the body is hashed and compared.
        #[arg(long, conflicts_with = "splice")]
        digest: Option<String>,
        /// Splice the body to /dev/null instead of reading it (plain http only).
        #[arg(long)]
        splice: bool,
    },
}

#[derive(Serialize)]
struct Report {
    target: String,
    url: Option<String>,
    quick: bool,
    seed: u64,
    started: String,
    seconds: f64,
    idle_rss_mib: Option<f64>,
    final_rss_mib: Option<f64>,
    hwm_rss_mib: Option<f64>,
    /// `/proc/loadavg` before and after: other work on the machine skews the numbers.
    loadavg_start: String,
    loadavg_end: String,
    results: Vec<Outcome>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    // Before anything is sent: where requests may go, and which CA https trusts.
    client::Net::install(client::Net::new(&args.link_hosts, args.ca_file.as_deref())?)?;
    if let Some(Command::Fetch {
        url,
        size,
        digest,
        splice,
    }) = &args.command
    {
        return fetch_once(url, *size, digest.clone(), *splice, &args.evict_dirs).await;
    }
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(s) = args.load_secs {
        plan.load_secs = s;
    }
    if let Some(n) = args.listing {
        if n == 0 || n > 99_999 {
            bail!("--listing must be 1..=99999");
        }
        plan.listing = n;
    }
    if let Some(n) = args.gc_blobs {
        if n < 100 || n % 100 != 0 || n > 10_000_000 {
            bail!("--gc-blobs must be a multiple of 100 in 100..=10000000");
        }
        plan.gc_blobs = n;
    }
    let all = names(&plan);
    if args.list {
        for n in &all {
            println!("{n}");
        }
        return Ok(());
    }
    let filters: Vec<String> = if args.scenarios.is_empty() {
        DEFAULT_GROUPS.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    let selected = select(&all, &filters);
    if selected.is_empty() {
        bail!("no scenario matches {filters:?} (try --list)");
    }
    let needs_url = selected.iter().any(|n| !n.starts_with("machine-"));
    let auth = match (&args.token, &args.basic, &args.login) {
        (Some(t), _, _) => client::Auth::Fixed(
            HeaderValue::from_str(&format!("Bearer {t}")).context("token is not a header value")?,
        ),
        (None, Some(b), _) => client::Auth::Fixed(
            HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b)
            ))
            .context("credentials are not a header value")?,
        ),
        (None, None, Some(l)) => client::Auth::Login(std::sync::Arc::new(client::Login::new(l)?)),
        _ => client::Auth::None,
    };
    let reg = match &args.url {
        Some(u) => Some(client::Registry::new(u, auth, 1024)?),
        None if needs_url => bail!("a registry URL is needed for {selected:?}"),
        None => None,
    };
    let files = match &args.file_url {
        Some(u) if args.disk_dir.is_some() => {
            Some(client::Registry::new(u, client::Auth::None, 4)?)
        }
        Some(_) => bail!("--file-url needs --disk-dir (the directory it serves)"),
        None => None,
    };
    let reference = match &args.reference_url {
        Some(u) => Some(client::Registry::new(u, client::Auth::None, 4)?),
        None => None,
    };
    if let Some(refr) = &reference {
        let s = refr.ping().await.context("the reference does not answer")?;
        if !s.is_success() {
            bail!("the reference answered {s} to GET /v2/ (it must take anonymous pushes)");
        }
    }
    if let Some(reg) = &reg {
        if selected.iter().any(|n| !is_local(n)) {
            let s = reg.ping().await.context("the registry does not answer")?;
            if !s.is_success() {
                bail!("GET /v2/ answered {s}: pass --token, --basic or --login");
            }
        }
    }
    let rss = match args.pid {
        Some(pid) => Some(RssSampler::start(pid)?),
        None => None,
    };
    let idle = rss.as_ref().map(|r| r.current_mib());
    let seed = args.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
    });
    let started = chrono_like_now();
    let loadavg_start = loadavg();
    let ctx = Ctx::new(
        reg,
        plan,
        seed,
        args.verify,
        args.disk_dir.clone(),
        rss,
        args.skip_setup,
    )
    .with_beside(files, reference)
    .with_auth_scenarios(args.basic_user.clone(), args.server_log.clone())
    .with_gc_command(args.gc_command.clone())
    .with_evict_dirs(args.evict_dirs.clone())
    .with_ctr(args.ctr_address.clone().map(|address| ctr::Containerd {
        address,
        ca_file: args.ca_file.clone(),
    }));
    println!(
        "berth-bench: target {} ({}), seed {seed:#x}, {} scenario(s){}",
        args.name,
        args.url.as_deref().unwrap_or("no URL"),
        selected.len(),
        if args.quick { ", quick" } else { "" }
    );
    if let Some(i) = idle {
        println!("idle RSS: {i:.1} MiB");
    }
    print_header();
    let t0 = Instant::now();
    let mut results = Vec::new();
    for name in &selected {
        // Hard bound on every scenario, whatever happens inside.
        let out = match tokio::time::timeout(Duration::from_secs(1800), ctx.run(name)).await {
            Ok(o) => o,
            Err(_) => Outcome::failed(name, "", &anyhow::anyhow!("scenario exceeded 30 minutes")),
        };
        for s in ctx.setups.lock().await.drain(..) {
            print_row(&s);
            results.push(s);
        }
        let mut out = out;
        out.describe_beside();
        print_row(&out);
        results.push(out);
    }
    // Let the server settle before the last RSS reading.
    let (final_rss, hwm) = match &ctx.rss {
        Some(r) => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            (Some(r.current_mib()), Some(r.hwm_mib()))
        }
        None => (None, None),
    };
    if let (Some(f), Some(h)) = (final_rss, hwm) {
        println!("RSS after the run: {f:.1} MiB; peak (VmHWM): {h:.1} MiB");
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    let report = Report {
        target: args.name.clone(),
        url: args.url.clone(),
        quick: args.quick,
        seed,
        started,
        seconds: t0.elapsed().as_secs_f64(),
        idle_rss_mib: idle,
        final_rss_mib: final_rss,
        hwm_rss_mib: hwm,
        loadavg_start,
        loadavg_end: loadavg(),
        results,
    };
    if let Some(path) = &args.json {
        let s = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{} scenario(s) in {:.0} s, {failed} failed",
        report.results.len(),
        report.seconds
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `berth-bench fetch`: one GET of `url` with the copying receiver (or the splice one),
/// after evicting the blob's files under `evict_dirs` when there are any.
async fn fetch_once(
    url: &str,
    size: u64,
    digest: Option<String>,
    splice: bool,
    evict_dirs: &[PathBuf],
) -> Result<()> {
    let u = reqwest::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    let origin = u.origin().ascii_serialization();
    let reg = client::Registry::new(&origin, client::Auth::None, 1)?;
    let evicted = if evict_dirs.is_empty() {
        None
    } else {
        let dirs = evict_dirs.to_vec();
        Some(tokio::task::spawn_blocking(move || evict::evict(&dirs, size)).await??)
    };
    let verified = digest.is_some();
    let receiver = if splice {
        fetch::Receiver::Splice
    } else {
        fetch::Receiver::Copy { digest }
    };
    let t = Instant::now();
    let n = fetch::get(&reg, url, size, &receiver).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "fetch {url}: {n} bytes in {secs:.3} s, {:.1} MB/s, {}{}{}",
        n as f64 / secs.max(1e-9) / 1e6,
        if splice {
            "spliced to /dev/null"
        } else {
            "read into a 1 MiB buffer"
        },
        if verified { ", SHA-256 verified" } else { "" },
        evicted.map_or_else(String::new, |e| format!(
            ", cold ({} file(s) evicted, at most {:.1}% left cached)",
            e.files,
            e.left * 100.0
        )),
    );
    Ok(())
}

/// The scenarios `filters` name, in run order: a filter that is a scenario's whole name
/// selects that one (`manifest-get-tag-c1`, not `-c16` too); any other filter is a prefix
/// (`push` selects every push).
fn select(all: &[String], filters: &[String]) -> Vec<String> {
    all.iter()
        .filter(|n| {
            filters
                .iter()
                .any(|f| *n == f || (n.starts_with(f.as_str()) && !all.iter().any(|m| m == f)))
        })
        .cloned()
        .collect()
}

fn print_header() {
    println!(
        "{:<26} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8} {:>7}  note",
        "scenario", "MB/s", "req/s", "p50 ms", "p99 ms", "max ms", "ops", "RSS MiB"
    );
}

fn print_row(o: &Outcome) {
    if o.skipped {
        println!("{:<26} skipped: {}", o.scenario, o.note);
        return;
    }
    if !o.ok {
        println!(
            "{:<26} FAILED: {}",
            o.scenario,
            o.error.as_deref().unwrap_or("?")
        );
        return;
    }
    println!(
        "{:<26} {:>10.1} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>7}  {}",
        o.scenario,
        o.mb_s,
        o.req_s,
        o.p50_ms,
        o.p99_ms,
        o.max_ms,
        o.ops,
        o.rss_peak_mib
            .map_or_else(|| "-".to_string(), |r| format!("{r:.1}")),
        o.note
    );
}

/// UTC time as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_name_selects_one_scenario_and_a_prefix_selects_all_it_starts() {
        let all = names(&Plan::full());
        let pick = |f: &[&str]| select(&all, &f.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(pick(&["manifest-get-tag-c1"]), ["manifest-get-tag-c1"]);
        assert_eq!(pick(&["tags-list-n100"]), ["tags-list-n100"]);
        assert_eq!(
            pick(&["manifest-get-tag"]),
            [
                "manifest-get-tag-c1",
                "manifest-get-tag-c16",
                "manifest-get-tag-c64",
                "manifest-get-tag-c256"
            ]
        );
        // Run order, not the order of the filters.
        assert_eq!(
            pick(&["catalog-n100", "pull-1GiB", "push-mono-1MiB"]),
            ["push-mono-1MiB", "pull-1GiB", "catalog-n100"]
        );
        assert_eq!(pick(&["push"]).len(), 7);
        assert!(pick(&["nothing"]).is_empty());
    }
}
