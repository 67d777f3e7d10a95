//! Garbage collection is safe while the registry serves and when it is interrupted: pushes,
//! mounts and pulls go on beside scheduled collections on two replicas and never lose what
//! was acknowledged; a collection killed (SIGKILL) mid-sweep or between marking and
//! deleting, or frozen past its lease, deletes nothing referenced, and the next run
//! finishes the job; a second run at once, a database at another schema and `--dry-run`
//! change nothing.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sqlx::{Connection, Row};

/// An image the test pushed and the registry acknowledged.
#[derive(Clone)]
struct Image {
    repo: String,
    digest: String,
    manifest: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

/// Pushes `config` and `layers` and the manifest over them under `tag` (no collection runs
/// meanwhile in the tests that use this); returns the acknowledged image.
async fn push_plain(
    c: &reqwest::Client,
    b: &Berth,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[&[u8]],
) -> Image {
    let (digest, manifest) = push_layered(c, b, repo, tag, config, layers).await;
    let mut blobs = vec![config.to_vec()];
    blobs.extend(layers.iter().map(|l| l.to_vec()));
    Image {
        repo: repo.into(),
        digest,
        manifest,
        blobs,
    }
}

async fn delete_manifest(c: &reqwest::Client, b: &Berth, img: &Image) {
    let r = c
        .delete(b.url(&format!("/v2/{}/manifests/{}", img.repo, img.digest)))
        .send()
        .await
        .expect("delete manifest");
    assert_eq!(r.status(), 202, "deleting {}@{}", img.repo, img.digest);
}

/// The image pulls byte for byte: its manifest by digest, and every blob with the bytes
/// its digest names.
async fn assert_pulls(c: &reqwest::Client, b: &Berth, img: &Image, context: &str) {
    let r = c
        .get(b.url(&format!("/v2/{}/manifests/{}", img.repo, img.digest)))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("get manifest");
    assert_eq!(
        r.status(),
        200,
        "{context}: manifest {}@{}",
        img.repo,
        img.digest
    );
    assert_eq!(
        r.bytes().await.expect("manifest body").as_ref(),
        img.manifest.as_slice(),
        "{context}: manifest {}@{}",
        img.repo,
        img.digest
    );
    for blob in &img.blobs {
        let d = sha256(blob);
        let r = c
            .get(b.url(&format!("/v2/{}/blobs/{d}", img.repo)))
            .send()
            .await
            .expect("get blob");
        assert_eq!(
            r.status(),
            200,
            "{context}: blob {d} of {}@{}",
            img.repo,
            img.digest
        );
        let got = r.bytes().await.expect("blob body");
        assert_eq!(
            sha256(&got),
            d,
            "{context}: blob {d} of {}@{}",
            img.repo,
            img.digest
        );
    }
}

/// Which of `digests` still have bytes in the store.
fn stored(b: &Berth, digests: &[String]) -> Vec<String> {
    let files: HashSet<PathBuf> = b.blob_files().into_iter().collect();
    digests
        .iter()
        .filter(|d| files.contains(&b.blob_path(d)))
        .cloned()
        .collect()
}

/// `berth gc ARGS` started in the background, its output piped.
fn spawn_gc(b: &Berth, args: &[&str]) -> Child {
    let mut all = vec!["gc"];
    all.extend_from_slice(args);
    b.cli_command(&all)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start berth gc")
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{sig} {}", child.id());
}

/// Waits (bounded) for a background run to exit; returns its output.
fn wait_exit(mut child: Child, within: Duration) -> std::process::Output {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("poll berth gc").is_some() {
            return child.wait_with_output().expect("berth gc output");
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("berth gc did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The numbers of `garbage collection RUN: freed N blobs (B bytes), M manifests`.
fn freed(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("garbage collection "))
        .unwrap_or_else(|| panic!("no result line in {stdout:?}"));
    let after = line
        .split_once("free ")
        .or_else(|| line.split_once("freed "))
        .unwrap_or_else(|| panic!("no count in {line:?}"))
        .1;
    let blobs = after.split_whitespace().next().expect("count");
    let bytes = after
        .split_once('(')
        .and_then(|(_, r)| r.split_whitespace().next())
        .expect("bytes");
    (
        blobs.parse().expect("blob count"),
        bytes.parse().expect("byte count"),
    )
}

/// Runs `berth gc ARGS` until it is not refused for a held lease (bounded); returns its
/// stdout and how long that took.
fn gc_when_free(b: &Berth, args: &[&str], within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut all = vec!["gc"];
    all.extend_from_slice(args);
    loop {
        let out = b.cli(&all);
        if out.status.success() {
            return (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                started.elapsed(),
            );
        }
        let said = text(&out);
        assert!(
            said.contains("another garbage collection holds the lease"),
            "berth gc failed otherwise: {said}"
        );
        assert!(
            started.elapsed() < within,
            "the lease of a dead run still blocks collections after {within:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Freezes a run (SIGSTOP) at a moment it has no statement or transaction open: a frozen
/// transaction would hold row locks every other writer waits on.
async fn freeze_outside_transaction(child: &Child, db: &mut sqlx::PgConnection) {
    for _ in 0..300 {
        signal(child, "STOP");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let open: i64 = sqlx::query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND (state LIKE 'idle in transaction%' OR state = 'active')",
        )
        .fetch_one(&mut *db)
        .await
        .expect("sessions")
        .get("n");
        if open == 0 {
            return;
        }
        signal(child, "CONT");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("could not freeze the run where the test wants it");
}

async fn pg(b: &Berth) -> sqlx::PgConnection {
    let url = b.options.database_url.as_deref().expect("PostgreSQL URL");
    sqlx::PgConnection::connect(url).await.expect("connect")
}

/// Unreferenced garbage: `images` images in `junk/app` whose manifests are then deleted
/// (their layers and configs are garbage) and `bare` blobs in `junk/bare` no manifest ever
/// named. Returns the garbage digests.
async fn make_garbage(
    c: &reqwest::Client,
    b: &Berth,
    images: u64,
    bare: u64,
    seed: u64,
) -> Vec<String> {
    let mut garbage = Vec::new();
    for i in 0..images {
        let config = format!(r#"{{"os":"linux","junk":{}}}"#, seed + i).into_bytes();
        let layer = pattern(700 + i as usize, seed + i);
        let img = push_plain(c, b, "junk/app", &format!("j{i}"), &config, &[&layer]).await;
        delete_manifest(c, b, &img).await;
        garbage.push(sha256(&config));
        garbage.push(sha256(&layer));
    }
    for i in 0..bare {
        let bytes = pattern(300 + i as usize, seed + 10_000 + i);
        garbage.push(push_blob(c, b, "junk/bare", &bytes).await);
    }
    garbage
}

/// Kept images: three in `keep/app`, one of whose layers a garbage image also used.
async fn make_kept(c: &reqwest::Client, b: &Berth, seed: u64) -> Vec<Image> {
    let mut kept = Vec::new();
    for i in 0..3u64 {
        let config = format!(r#"{{"os":"linux","keep":{}}}"#, seed + i).into_bytes();
        let layer = pattern(5000 + i as usize, seed + 500 + i);
        let shared = pattern(4096, seed + 999);
        kept.push(
            push_plain(
                c,
                b,
                "keep/app",
                &format!("v{i}"),
                &config,
                &[&layer, &shared],
            )
            .await,
        );
    }
    // Garbage that shared a kept layer: deleting it frees only what is its own.
    let shared = pattern(4096, seed + 999);
    let own = pattern(123, seed + 998);
    let gone = push_plain(
        c,
        b,
        "junk/shared",
        "x",
        b"{\"os\":\"linux\"}",
        &[&shared, &own],
    )
    .await;
    delete_manifest(c, b, &gone).await;
    kept
}

// ---------------------------------------------------------------------------------------
// 1. Pushes, mounts, deletes and pulls beside scheduled collections on another replica.
// ---------------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Counts {
    acknowledged: u64,
    deleted: u64,
    blob_503_retries: u64,
    manifest_retries: u64,
    mounted: u64,
    mount_refused: u64,
    skipped_by_head: u64,
    pulls: u64,
}

/// Uploads a blob monolithically, retrying while the registry answers 503 (a collection is
/// deleting those bytes).
async fn upload_retrying(c: &reqwest::Client, b: &Berth, repo: &str, bytes: &[u8], n: &mut Counts) {
    let d = sha256(bytes);
    for _ in 0..100 {
        let r = c
            .post(b.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("push blob");
        match r.status().as_u16() {
            201 => return,
            503 => {
                n.blob_503_retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            s => panic!("pushing {d} to {repo}: {s} {:?}", r.text().await),
        }
    }
    panic!("pushing {d} to {repo}: still 503 after 100 tries");
}

/// Puts a blob into `repo` the way the loop's client `style` does: 0 uploads it, 1 asks
/// first and skips what the repository has (as docker does), 2 mounts it from `from`
/// (uploading through the session a refused mount opens).
async fn send_blob(
    c: &reqwest::Client,
    b: &Berth,
    repo: &str,
    bytes: &[u8],
    style: u64,
    from: Option<&str>,
    n: &mut Counts,
) {
    let d = sha256(bytes);
    match (style, from) {
        (1, _) => {
            let r = c
                .head(b.url(&format!("/v2/{repo}/blobs/{d}")))
                .send()
                .await
                .expect("head blob");
            if r.status() == 200 {
                n.skipped_by_head += 1;
                return;
            }
        }
        (2, Some(from)) if from != repo => {
            let r = c
                .post(b.url(&format!("/v2/{repo}/blobs/uploads/?mount={d}&from={from}")))
                .send()
                .await
                .expect("mount");
            match r.status().as_u16() {
                201 => {
                    n.mounted += 1;
                    return;
                }
                202 => {
                    n.mount_refused += 1;
                    let location = header_str(&r, "location");
                    let r = c
                        .put(with_query(
                            &location_url(b, &location),
                            &format!("digest={d}"),
                        ))
                        .header("content-type", "application/octet-stream")
                        .body(bytes.to_vec())
                        .send()
                        .await
                        .expect("finish upload");
                    match r.status().as_u16() {
                        201 => return,
                        503 => n.blob_503_retries += 1,
                        s => panic!(
                            "finishing the upload of {d} to {repo}: {s} {:?}",
                            r.text().await
                        ),
                    }
                }
                s => panic!(
                    "mounting {d} into {repo} from {from}: {s} {:?}",
                    r.text().await
                ),
            }
        }
        _ => {}
    }
    upload_retrying(c, b, repo, bytes, n).await;
}

/// Pushes an image as a client would, retrying what the registry says to retry: a
/// manifest refused for a blob it does not have (collected since the client checked) is
/// sent again after uploading its blobs. Returns the acknowledged image.
#[allow(clippy::too_many_arguments)]
async fn push_as_client(
    c: &reqwest::Client,
    b: &Berth,
    repo: &str,
    tag: &str,
    blobs: &[Vec<u8>],
    style: u64,
    whence: &HashMap<String, String>,
    n: &mut Counts,
) -> Image {
    for blob in blobs {
        let from = whence.get(&sha256(blob)).map(String::as_str);
        send_blob(c, b, repo, blob, style, from, n).await;
    }
    let layers: Vec<&[u8]> = blobs[1..].iter().map(Vec::as_slice).collect();
    let manifest = layered_manifest(&blobs[0], &layers);
    for attempt in 0..5 {
        let r = c
            .put(b.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .expect("push manifest");
        match r.status().as_u16() {
            201 => {
                n.acknowledged += 1;
                return Image {
                    repo: repo.into(),
                    digest: sha256(&manifest),
                    manifest,
                    blobs: blobs.to_vec(),
                };
            }
            400 if attempt < 4 => {
                let code = error_code(r).await;
                assert_eq!(code, "MANIFEST_BLOB_UNKNOWN", "pushing {repo}:{tag}");
                n.manifest_retries += 1;
                for blob in blobs {
                    upload_retrying(c, b, repo, blob, n).await;
                }
            }
            s => panic!("pushing {repo}:{tag}: {s} {:?}", r.text().await),
        }
    }
    unreachable!("the loop returns or panics")
}

/// The blobs freed by the scheduled runs a server's log reports.
fn freed_by_schedule(log: &str) -> (u64, u64) {
    let mut runs = 0;
    let mut blobs = 0;
    for line in log
        .lines()
        .filter(|l| l.contains("garbage collection finished"))
    {
        runs += 1;
        if let Some(n) = line
            .split(" blobs=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
        {
            blobs += n;
        }
    }
    (runs, blobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_mounts_and_pulls_beside_scheduled_collections_lose_nothing_acknowledged() {
    let (options, _dir) = replica_options().await;
    let mut collecting = options.clone();
    collecting.env = vec![
        ("BERTH_GC__INTERVAL_HOURS".into(), "0.0003".into()),
        ("BERTH_GC__GRACE_SECONDS".into(), "2".into()),
    ];
    // Fields drop in order: servers before the shared directory.
    let a = Berth::start_with(collecting);
    let b = Berth::start_with(options);
    let c = client();

    let mut n = Counts::default();
    let mut kept: Vec<Image> = Vec::new();
    let mut deleted: Vec<Image> = Vec::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    // Where each blob was last pushed (the repository a mount names).
    let mut whence: HashMap<String, String> = HashMap::new();
    let started = Instant::now();
    let mut i = 0u64;
    while i < 40 && started.elapsed() < Duration::from_secs(60) {
        let repo = format!("team/app{}", i % 3);
        // A config shared by four images in a row; a new layer; a layer from an earlier
        // push (perhaps of an image since deleted, its bytes perhaps being collected).
        let config = format!(r#"{{"os":"linux","generation":{}}}"#, i / 4).into_bytes();
        let new = pattern(3000 + (i as usize) * 37, 7000 + i);
        let mut blobs = vec![config, new.clone()];
        if !pool.is_empty() {
            blobs.push(pool[(i as usize * 7) % pool.len()].clone());
        }
        pool.push(new);
        let img = push_as_client(
            &c,
            &b,
            &repo,
            &format!("t{i}"),
            &blobs,
            i % 3,
            &whence,
            &mut n,
        )
        .await;
        for blob in &blobs {
            whence.insert(sha256(blob), repo.clone());
        }
        kept.push(img);
        // Every third push, the oldest kept image goes (its tag with it).
        if i % 3 == 2 && kept.len() > 2 {
            let gone = kept.remove(0);
            delete_manifest(&c, &b, &gone).await;
            n.deleted += 1;
            deleted.push(gone);
        }
        // A pull through the collecting replica.
        let pick = &kept[(i as usize * 5) % kept.len()];
        assert_pulls(&c, &a, pick, &format!("pull {i} during the loop")).await;
        n.pulls += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
        i += 1;
    }
    eprintln!("after {i} iterations in {:?}: {n:?}", started.elapsed());
    assert!(i >= 20, "only {i} iterations ran in 60 s");

    // Every acknowledged image that was not deleted is complete, through either replica.
    for img in &kept {
        assert_pulls(&c, &b, img, "after the loop (pushing replica)").await;
        assert_pulls(&c, &a, img, "after the loop (collecting replica)").await;
    }
    let (runs, blobs_freed) = freed_by_schedule(&a.log_text());
    eprintln!("scheduled collections: {runs} runs freed {blobs_freed} blobs");
    assert!(
        runs >= 3,
        "the schedule ran only {runs} collections:\n{}",
        a.log_text()
    );
    assert!(
        blobs_freed > 0,
        "the scheduled collections freed nothing while images were deleted"
    );

    // With nothing running, a last collection leaves exactly what the kept images use.
    let out = b.cli_ok(&["gc", "--grace-seconds", "0"]);
    eprintln!("final run: {out}");
    let needed: HashSet<String> = kept
        .iter()
        .flat_map(|i| i.blobs.iter().map(|b| sha256(b)))
        .collect();
    let unneeded: Vec<String> = deleted
        .iter()
        .flat_map(|i| i.blobs.iter().map(|b| sha256(b)))
        .filter(|d| !needed.contains(d))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    assert!(
        !unneeded.is_empty(),
        "the deleted images had no blobs of their own"
    );
    assert_eq!(
        stored(&b, &unneeded),
        Vec::<String>::new(),
        "garbage left after the final run"
    );
    let needed: Vec<String> = needed.into_iter().collect();
    assert_eq!(
        stored(&b, &needed).len(),
        needed.len(),
        "a kept blob is gone"
    );
    for img in &kept {
        assert_pulls(&c, &a, img, "after the final run").await;
    }
    for img in &deleted {
        assert_eq!(manifest_status(&c, &b, &img.repo, &img.digest).await, 404);
    }
}

// ---------------------------------------------------------------------------------------
// 2. Killed with SIGKILL, then run again.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_killed_mid_sweep_loses_nothing_and_the_next_run_finishes() {
    let b = Berth::start();
    let c = client();
    let kept = make_kept(&c, &b, 1).await;
    let garbage = make_garbage(&c, &b, 40, 60, 100).await;
    assert_eq!(stored(&b, &garbage).len(), garbage.len());

    let mut child = spawn_gc(&b, &["--grace-seconds", "0", "--batch", "1"]);
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll") {
            panic!("the run finished ({status}) before the test could kill it");
        }
        if stored(&b, &garbage).len() <= garbage.len() - 10 {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run deleted nothing in 30 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let left = stored(&b, &garbage).len();
    eprintln!(
        "killed after deleting {} of {}",
        garbage.len() - left,
        garbage.len()
    );
    assert!(left > 0, "the run deleted everything before it was killed");
    for img in &kept {
        assert_pulls(&c, &b, img, "after the kill").await;
    }

    // The dead run's lease holds the next run off for a while, not for long.
    let out = b.cli(&["gc", "--grace-seconds", "0"]);
    assert!(
        !out.status.success(),
        "a run started while the dead one's lease holds: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("another garbage collection holds the lease"),
        "{}",
        text(&out)
    );
    let (out, waited) = gc_when_free(&b, &["--grace-seconds", "0"], Duration::from_secs(60));
    eprintln!("the next run started after {waited:?}: {out}");
    let (blobs, _) = freed(&out);
    assert!(
        blobs as usize >= left,
        "the second run freed {blobs}, {left} were left"
    );
    assert_eq!(
        stored(&b, &garbage),
        Vec::<String>::new(),
        "garbage left after the second run"
    );
    for d in &garbage {
        for repo in ["junk/app", "junk/bare"] {
            assert_eq!(blob_status(&c, &b, repo, d).await, 404, "{repo}@{d}");
        }
    }
    for img in &kept {
        assert_pulls(&c, &b, img, "after the second run").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_killed_between_mark_and_delete_lets_pushes_through_and_the_next_run_finishes()
{
    let (options, _dir) = replica_options().await;
    let b = Berth::start_with(options);
    let c = client();
    let kept = make_kept(&c, &b, 2).await;
    let garbage = make_garbage(&c, &b, 10, 300, 200).await;
    let mut db = pg(&b).await;

    // One batch for everything: one transaction marks it all, then the bytes go.
    let mut child = spawn_gc(&b, &["--grace-seconds", "0", "--batch", "10000"]);
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll") {
            panic!("the run finished ({status}) before the test could kill it");
        }
        let marked: i64 = sqlx::query("SELECT count(*) AS n FROM blobs WHERE gc_mark IS NOT NULL")
            .fetch_one(&mut db)
            .await
            .expect("count marks")
            .get("n");
        if marked > 0 {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run marked nothing in 30 s"
        );
    }
    let run: String = sqlx::query("SELECT holder FROM leases WHERE name = 'gc'")
        .fetch_one(&mut db)
        .await
        .expect("the dead run's lease")
        .get("holder");
    let marked: Vec<String> =
        sqlx::query("SELECT digest FROM blobs WHERE gc_mark = $1 ORDER BY digest")
            .bind(&run)
            .fetch_all(&mut db)
            .await
            .expect("marked rows")
            .iter()
            .map(|r| r.get("digest"))
            .collect();
    let with_bytes = stored(&b, &marked);
    eprintln!(
        "killed with {} rows marked, {} of them with their bytes",
        marked.len(),
        with_bytes.len()
    );
    assert!(!marked.is_empty());
    // Nothing a kept image uses was marked.
    let referenced_marks: i64 = sqlx::query(
        "SELECT count(*) AS n FROM blobs b WHERE gc_mark IS NOT NULL \
         AND EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = b.digest)",
    )
    .fetch_one(&mut db)
    .await
    .expect("count")
    .get("n");
    assert_eq!(referenced_marks, 0);
    for img in &kept {
        assert_pulls(&c, &b, img, "after the kill").await;
    }

    // Both states a kill leaves (marked with bytes; marked, bytes gone) for blobs a client
    // pushes again. Where the kill did not leave one, the test makes it as the run would.
    let bare: Vec<Vec<u8>> = (0..300u64)
        .map(|i| pattern(300 + i as usize, 200 + 10_000 + i))
        .collect();
    let by_digest: HashMap<String, Vec<u8>> = bare.iter().map(|b| (sha256(b), b.clone())).collect();
    let marked_bare: Vec<&String> = marked
        .iter()
        .filter(|d| by_digest.contains_key(*d))
        .collect();
    let mut kept_bytes = marked_bare
        .iter()
        .find(|d| with_bytes.contains(d))
        .map(|d| (*d).clone());
    let mut lost_bytes = marked_bare
        .iter()
        .find(|d| !with_bytes.contains(d))
        .map(|d| (*d).clone());
    if kept_bytes.is_none() || lost_bytes.is_none() {
        // Bare garbage the kill left unmarked, or a new one.
        let extra = pattern(77, 31_337);
        let d = push_blob(&c, &b, "junk/bare", &extra).await;
        sqlx::query("UPDATE blobs SET gc_mark = $1, touched_at = 0 WHERE digest = $2")
            .bind(&run)
            .bind(&d)
            .execute(&mut db)
            .await
            .expect("mark");
        let extra2 = pattern(78, 31_338);
        let d2 = push_blob(&c, &b, "junk/bare", &extra2).await;
        sqlx::query("UPDATE blobs SET gc_mark = $1, touched_at = 0 WHERE digest = $2")
            .bind(&run)
            .bind(&d2)
            .execute(&mut db)
            .await
            .expect("mark");
        std::fs::remove_file(b.blob_path(&d2)).expect("delete the bytes as the run would");
        kept_bytes.get_or_insert(d.clone());
        lost_bytes.get_or_insert(d2.clone());
        let mut all = by_digest;
        all.insert(d, extra);
        all.insert(d2, extra2);
        return finish_after_mark(
            &c, &b, &mut db, &run, kept_bytes, lost_bytes, &all, &kept, &garbage,
        )
        .await;
    }
    finish_after_mark(
        &c, &b, &mut db, &run, kept_bytes, lost_bytes, &by_digest, &kept, &garbage,
    )
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn finish_after_mark(
    c: &reqwest::Client,
    b: &Berth,
    db: &mut sqlx::PgConnection,
    run: &str,
    kept_bytes: Option<String>,
    lost_bytes: Option<String>,
    bytes_of: &HashMap<String, Vec<u8>>,
    kept: &[Image],
    garbage: &[String],
) {
    let (kept_bytes, lost_bytes) = (kept_bytes.expect("marked"), lost_bytes.expect("marked"));
    // A client asking whether the repository has a blob a collection is deleting is told
    // no, so it uploads the blob rather than name it in a manifest the registry refuses.
    for d in [&kept_bytes, &lost_bytes] {
        let r = c
            .head(b.url(&format!("/v2/junk/bare/blobs/{d}")))
            .send()
            .await
            .expect("head");
        assert_eq!(r.status(), 404, "HEAD of marked blob {d}");
    }
    // Once the dead run's lease lapses, pushing them again goes straight through.
    let started = Instant::now();
    loop {
        let live: i64 = sqlx::query(
            "SELECT count(*) AS n FROM leases WHERE name = 'gc' AND holder = $1 AND expires_at >= $2",
        )
        .bind(run)
        .bind(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64)
        .fetch_one(&mut *db)
        .await
        .expect("lease")
        .get("n");
        if live == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the dead run's lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("the dead run's lease lapsed after {:?}", started.elapsed());
    let config = b"{\"os\":\"linux\",\"again\":1}".to_vec();
    let (a, z) = (bytes_of[&kept_bytes].clone(), bytes_of[&lost_bytes].clone());
    let pushed = Instant::now();
    let again = push_plain(c, b, "keep/again", "v1", &config, &[&a, &z]).await;
    assert!(
        pushed.elapsed() < Duration::from_secs(10),
        "pushing blobs a dead run marked waited {:?}",
        pushed.elapsed()
    );
    for d in [&kept_bytes, &lost_bytes] {
        let mark: Option<String> = sqlx::query("SELECT gc_mark FROM blobs WHERE digest = $1")
            .bind(d)
            .fetch_one(&mut *db)
            .await
            .expect("row")
            .get("gc_mark");
        assert_eq!(mark, None, "{d} is still marked after a push");
    }
    assert_pulls(c, b, &again, "pushed again after the kill").await;

    // The next run finishes the job.
    let out = b.cli_ok(&["gc", "--grace-seconds", "0"]);
    eprintln!("the next run: {out}");
    let left: Vec<String> = stored(b, garbage)
        .into_iter()
        .filter(|d| *d != kept_bytes && *d != lost_bytes)
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "garbage left after the next run"
    );
    let marks: i64 = sqlx::query("SELECT count(*) AS n FROM blobs WHERE gc_mark IS NOT NULL")
        .fetch_one(&mut *db)
        .await
        .expect("count")
        .get("n");
    assert_eq!(marks, 0);
    for img in kept.iter().chain([&again]) {
        assert_pulls(c, b, img, "after the next run").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_frozen_past_its_lease_deletes_nothing_more() {
    let (options, _dir) = replica_options().await;
    let b = Berth::start_with(options);
    let c = client();
    let kept = make_kept(&c, &b, 3).await;
    let garbage = make_garbage(&c, &b, 0, 600, 300).await;
    let bytes_of: HashMap<String, Vec<u8>> = (0..600u64)
        .map(|i| pattern(300 + i as usize, 300 + 10_000 + i))
        .map(|b| (sha256(&b), b))
        .collect();
    let mut db = pg(&b).await;

    let child = spawn_gc(&b, &["--grace-seconds", "0", "--batch", "1"]);
    let started = Instant::now();
    while stored(&b, &garbage).len() > garbage.len() - 5 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run deleted nothing in 30 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Frozen between marking a batch and deleting it, with the renewal it sent before
    // deleting answered only after the lease has lapsed: the test holds the lease row until
    // the run waits for it there, freezes the run, then lets the renewal through.
    let lock_wait = "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
                     AND wait_event_type = 'Lock'";
    let mut holder = pg(&b).await;
    let mut caught = false;
    for _ in 0..200 {
        let mut tx = holder.begin().await.expect("begin");
        sqlx::query("SELECT holder FROM leases WHERE name = 'gc' FOR UPDATE")
            .fetch_optional(&mut *tx)
            .await
            .expect("lock the lease");
        let waiting = Instant::now();
        while waiting.elapsed() < Duration::from_secs(2) {
            let n: i64 = sqlx::query(lock_wait)
                .fetch_one(&mut db)
                .await
                .expect("waits")
                .get("n");
            if n > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Waiting at the renewal between marking and deleting: the batch is marked.
        let marks: i64 = sqlx::query(
            "SELECT count(*) AS n FROM blobs b JOIN leases l ON l.holder = b.gc_mark WHERE l.name = 'gc'",
        )
        .fetch_one(&mut db)
        .await
        .expect("marks")
        .get("n");
        if marks > 0 {
            signal(&child, "STOP");
            tx.commit().await.expect("let the renewal through");
            caught = true;
            break;
        }
        tx.rollback().await.expect("rollback");
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    assert!(
        caught,
        "the run never waited at its renewal before deleting"
    );
    let run: String = sqlx::query("SELECT holder FROM leases WHERE name = 'gc'")
        .fetch_one(&mut db)
        .await
        .expect("the frozen run's lease")
        .get("holder");
    // What it had marked when it froze (if it froze between marking and forgetting).
    let marked: Vec<String> = sqlx::query("SELECT digest FROM blobs WHERE gc_mark = $1")
        .bind(&run)
        .fetch_all(&mut db)
        .await
        .expect("marks")
        .iter()
        .map(|r| r.get("digest"))
        .collect();
    eprintln!("frozen with {} blobs marked", marked.len());
    assert!(!marked.is_empty());

    // Another run takes over once the lease lapses, and finishes the job.
    let (out, waited) = gc_when_free(&b, &["--grace-seconds", "0"], Duration::from_secs(60));
    eprintln!("a second run started after {waited:?}: {out}");
    assert_eq!(stored(&b, &garbage), Vec::<String>::new());

    // Clients push what the frozen run had decided to delete (and more of the old garbage).
    let mut layers: Vec<Vec<u8>> = marked
        .iter()
        .filter_map(|d| bytes_of.get(d).cloned())
        .collect();
    let mut rest: Vec<&String> = bytes_of.keys().filter(|d| !marked.contains(d)).collect();
    rest.sort();
    layers.extend(rest.iter().take(5).map(|d| bytes_of[*d].clone()));
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    let back = push_plain(
        &c,
        &b,
        "keep/back",
        "v1",
        b"{\"os\":\"linux\",\"back\":1}",
        &refs,
    )
    .await;

    // Thawed, the old run finds its lease gone and stops: it deletes nothing more.
    signal(&child, "CONT");
    let out = wait_exit(child, Duration::from_secs(60));
    assert!(
        !out.status.success(),
        "a run that lost its lease went on: {}",
        text(&out)
    );
    assert!(text(&out).contains("lost its lease"), "{}", text(&out));
    assert_pulls(&c, &b, &back, "after the frozen run thawed").await;
    for img in &kept {
        assert_pulls(&c, &b, img, "after the frozen run thawed").await;
    }
    let leases: i64 = sqlx::query("SELECT count(*) AS n FROM leases")
        .fetch_one(&mut db)
        .await
        .expect("count")
        .get("n");
    assert_eq!(leases, 0, "the thawed run took the lease again");
}

// ---------------------------------------------------------------------------------------
// 3. What must change nothing.
// ---------------------------------------------------------------------------------------

async fn sqlite(b: &Berth) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", b.data_dir.join("berth.db").display());
    sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open SQLite")
}

/// Rows per table garbage collection touches, and the marks.
async fn db_counts(db: &mut sqlx::PgConnection) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for table in ["blobs", "repository_blobs", "manifests", "tags", "gc_runs"] {
        let n: i64 = sqlx::query(&format!("SELECT count(*) AS n FROM {table}"))
            .fetch_one(&mut *db)
            .await
            .expect("count")
            .get("n");
        out.push((table, n));
    }
    let marks: i64 = sqlx::query("SELECT count(*) AS n FROM blobs WHERE gc_mark IS NOT NULL")
        .fetch_one(&mut *db)
        .await
        .expect("count")
        .get("n");
    out.push(("marks", marks));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing_and_a_second_run_at_once_is_refused() {
    let (options, _dir) = replica_options().await;
    let b = Berth::start_with(options);
    let c = client();
    let kept = make_kept(&c, &b, 4).await;
    let garbage = make_garbage(&c, &b, 10, 300, 400).await;
    let own = pattern(123, 4 + 998);
    let mut all_garbage = garbage.clone();
    // What the deleted image in junk/shared had of its own.
    all_garbage.push(sha256(&own));
    all_garbage.push(sha256(b"{\"os\":\"linux\"}"));
    let garbage_bytes: u64 = {
        let mut db = pg(&b).await;
        let mut total = 0u64;
        for d in &all_garbage {
            let size: i64 = sqlx::query("SELECT size FROM blobs WHERE digest = $1")
                .bind(d)
                .fetch_one(&mut db)
                .await
                .expect("row")
                .get("size");
            total += size as u64;
        }
        total
    };

    let mut db = pg(&b).await;
    let files = b.blob_files();
    let before = db_counts(&mut db).await;
    let out = b.cli_ok(&["gc", "--dry-run", "--grace-seconds", "0"]);
    assert!(out.contains("would free"), "{out}");
    assert_eq!(
        freed(&out),
        (all_garbage.len() as u64, garbage_bytes),
        "{out}"
    );
    assert_eq!(b.blob_files(), files, "a dry run deleted bytes");
    let after = db_counts(&mut db).await;
    // The run itself is recorded; nothing else moved.
    let changed: Vec<_> = before.iter().zip(&after).filter(|(x, y)| x != y).collect();
    assert_eq!(
        changed,
        vec![(&("gc_runs", before[4].1), &("gc_runs", before[4].1 + 1))],
        "a dry run changed the database"
    );

    // A second run while the first holds the lease is refused (the first is frozen with
    // SIGSTOP once it has begun deleting, so it still holds it), and the first finishes.
    let child = spawn_gc(&b, &["--grace-seconds", "0", "--batch", "1"]);
    let started = Instant::now();
    while stored(&b, &all_garbage).len() == all_garbage.len() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run deleted nothing in 30 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    freeze_outside_transaction(&child, &mut db).await;
    let second = b.cli(&["gc", "--grace-seconds", "0"]);
    signal(&child, "CONT");
    assert!(
        !second.status.success(),
        "two runs at once: {}",
        text(&second)
    );
    assert!(
        String::from_utf8_lossy(&second.stderr)
            .contains("another garbage collection holds the lease"),
        "{}",
        text(&second)
    );
    let first = wait_exit(child, Duration::from_secs(60));
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(stored(&b, &all_garbage), Vec::<String>::new());
    for img in &kept {
        assert_pulls(&c, &b, img, "after the runs").await;
    }
}

#[tokio::test]
async fn berth_gc_refuses_a_database_at_another_schema() {
    let mut b = Berth::start();
    let c = client();
    let garbage = make_garbage(&c, &b, 0, 3, 500).await;
    b.terminate();
    let mut db = sqlite(&b).await;
    let latest: i64 = sqlx::query("SELECT max(version) AS v FROM _sqlx_migrations")
        .fetch_one(&mut db)
        .await
        .expect("migrations")
        .get("v");

    // Older: the last migration not applied (its row set aside).
    for sql in [
        "CREATE TABLE hidden_migration AS SELECT * FROM _sqlx_migrations WHERE version = $1",
        "DELETE FROM _sqlx_migrations WHERE version = $1",
    ] {
        sqlx::query(sql)
            .bind(latest)
            .execute(&mut db)
            .await
            .expect("hide the last migration");
    }
    let out = b.cli(&["gc", "--grace-seconds", "0"]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("older than this berth needs"), "{said}");
    assert!(said.contains("run `berth migrate` first"), "{said}");
    for sql in [
        "INSERT INTO _sqlx_migrations SELECT * FROM hidden_migration",
        "DROP TABLE hidden_migration",
    ] {
        sqlx::query(sql).execute(&mut db).await.expect("restore it");
    }

    // Newer: a migration this berth does not know.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         SELECT 99, 'from the future', installed_on, success, checksum, execution_time FROM _sqlx_migrations WHERE version = $1",
    )
    .bind(latest)
    .execute(&mut db)
    .await
    .expect("add a migration");
    let out = b.cli(&["gc", "--grace-seconds", "0"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("newer than this berth knows"),
        "{}",
        text(&out)
    );
    assert_eq!(
        stored(&b, &garbage).len(),
        garbage.len(),
        "a refused run deleted bytes"
    );

    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 99")
        .execute(&mut db)
        .await
        .expect("remove it");
    let out = b.cli_ok(&["gc", "--grace-seconds", "0"]);
    assert_eq!(freed(&out).0, garbage.len() as u64, "{out}");
    assert_eq!(stored(&b, &garbage), Vec::<String>::new());
}
