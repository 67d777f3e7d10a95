//! The benchmark client (`berth-bench`, issue 4) against a real Berth: it runs its
//! scenarios, reports what it did in its JSON, leaves in the registry what it pushed, and
//! fails loudly (non-zero exit, the failing scenario named) instead of reporting numbers
//! for requests that did not succeed. Nothing here asserts a speed: the benchmark is a
//! separate command (`scripts/bench.sh`), and these tests only keep it runnable.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// Runs the `berth-bench` binary built with this package.
fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-bench"))
        .args(args)
        .output()
        .expect("run berth-bench")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("the --json file")).expect("JSON report")
}

/// The result of `scenario` in a report.
fn result<'a>(report: &'a Value, scenario: &str) -> &'a Value {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["scenario"] == scenario)
        .unwrap_or_else(|| panic!("no result for {scenario} in {report:#}"))
}

fn f64_of(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v:#}"))
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {v:#}"))
}

#[tokio::test]
async fn runs_each_kind_of_scenario_against_berth_and_reports_what_it_did() {
    let b = Berth::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let pid = b.pid().to_string();
    let out = bench(&[
        &b.url(""),
        "--quick",
        "--load-secs",
        "0.3",
        "--listing",
        "150",
        "--verify",
        "--seed",
        "7",
        "--name",
        "berth-under-test",
        "--pid",
        &pid,
        "--json",
        json.to_str().expect("utf-8 path"),
        "--scenario",
        "push-mono-1MiB",
        "--scenario",
        "push-chunked",
        "--scenario",
        "push-stream-10MiB",
        "--scenario",
        "pull-small",
        "--scenario",
        "pull-range",
        "--scenario",
        "manifest-get-tag-c1",
        "--scenario",
        "manifest-head-digest-c16",
        "--scenario",
        "mixed",
        "--scenario",
        "tags-list-n100",
        "--scenario",
        "catalog-n100",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(", 0 failed"), "{}", text(&out));

    let report = read_json(&json);
    assert_eq!(report["target"], "berth-under-test");
    assert_eq!(report["quick"], true);
    assert_eq!(report["seed"], 7);
    let names: Vec<&str> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["scenario"].as_str().expect("scenario name"))
        .collect();
    assert_eq!(
        names,
        [
            "push-mono-1MiB",
            "push-chunked-100MiB",
            "push-stream-10MiB",
            "pull-small-1MiB",
            "pull-range-1MiB",
            "manifest-get-tag-c1",
            "manifest-head-digest-c16",
            "mixed-kubelet-c64",
            "setup-tags-150",
            "tags-list-n100",
            "setup-catalog-150",
            "catalog-n100",
        ]
    );
    // The server's memory was sampled through its PID, at rest and per scenario.
    let idle = f64_of(&report, "idle_rss_mib");
    assert!(idle > 1.0 && idle < 1024.0, "idle RSS {idle} MiB");
    assert!(f64_of(&report, "hwm_rss_mib") >= idle);
    for r in report["results"].as_array().expect("results") {
        assert_eq!(r["ok"], true, "{r:#}");
        assert_eq!(r["errors"], 0, "{r:#}");
        assert!(u64_of(r, "ops") > 0, "{r:#}");
        assert!(u64_of(r, "requests") >= u64_of(r, "ops"), "{r:#}");
        let (p50, p99, max) = (
            f64_of(r, "p50_ms"),
            f64_of(r, "p99_ms"),
            f64_of(r, "max_ms"),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{r:#}");
        if !r["scenario"].as_str().unwrap_or("").starts_with("setup-") {
            assert!(f64_of(r, "rss_peak_mib") > 1.0, "{r:#}");
        }
    }

    // What each push moved, in requests and bytes.
    let mono = result(&report, "push-mono-1MiB");
    assert_eq!(
        (
            mono["ops"].clone(),
            mono["requests"].clone(),
            mono["bytes"].clone()
        ),
        (json!(30), json!(60), json!(30 * MIB))
    );
    // POST, ten 10 MiB PATCHes, PUT.
    let chunked = result(&report, "push-chunked-100MiB");
    assert_eq!(
        (chunked["requests"].clone(), chunked["bytes"].clone()),
        (json!(12), json!(100 * MIB))
    );
    let stream = result(&report, "push-stream-10MiB");
    assert_eq!(
        (stream["ops"].clone(), stream["bytes"].clone()),
        (json!(2), json!(20 * MIB))
    );
    assert_eq!(result(&report, "pull-small-1MiB")["bytes"], 30 * MIB);
    let range = result(&report, "pull-range-1MiB");
    assert_eq!(u64_of(range, "bytes"), u64_of(range, "ops") * MIB);
    assert!(
        range["note"]
            .as_str()
            .is_some_and(|n| n.contains("content verified")),
        "{range:#}"
    );
    // 150 tags at 100 a page: 2 pages a pass, 2 passes.
    let tags = result(&report, "tags-list-n100");
    assert_eq!(tags["ops"], 4, "{tags:#}");
    assert!(f64_of(tags, "listing_ms") > 0.0);
    assert_eq!(result(&report, "catalog-n100")["ops"], 4);
    assert_eq!(
        result(&report, "manifest-head-digest-c16")["concurrency"],
        16
    );

    // The registry holds what the benchmark pushed.
    let c = client();
    let want_tags: Vec<String> = (0..150).map(|i| format!("t{i:05}")).collect();
    assert_eq!(tags_of(&c, &b, "bench/tags").await, Some(want_tags));
    let catalog = catalog_of(&c, &b).await;
    for i in 0..150 {
        assert!(
            catalog.contains(&format!("bench/cat/r{i:05}")),
            "bench/cat/r{i:05} missing from {catalog:?}"
        );
    }
    for i in 0..20 {
        assert!(catalog.contains(&format!("bench/kube/app{i:03}")));
    }
    assert_eq!(
        manifest_status(&c, &b, "bench/manifest", "latest").await,
        200
    );
    // Every blob of 1 MiB and up: 30 of 1 MiB, 2 streamed of 10 MiB, the chunked push and
    // the pull fixture of 100 MiB (the images' layers are all under 1 MiB).
    let mut sizes: Vec<u64> = b
        .blob_files()
        .iter()
        .map(|p| std::fs::metadata(p).expect("blob file").len())
        .filter(|n| *n >= MIB)
        .collect();
    sizes.sort_unstable();
    let mut want = vec![MIB; 30];
    want.extend([10 * MIB, 10 * MIB, 100 * MIB, 100 * MIB]);
    assert_eq!(sizes, want);
    assert!(b.upload_files().is_empty(), "{:?}", b.upload_files());
}

#[tokio::test]
async fn a_scenario_the_registry_refuses_fails_the_run_and_names_the_error() {
    // Manifests over 256 bytes are refused, so the manifest fixture cannot be pushed.
    let b = Berth::start_with(Options {
        env: vec![("BERTH_LIMITS__MAX_MANIFEST_BYTES".into(), "256".into())],
        ..Options::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let out = bench(&[
        &b.url(""),
        "--quick",
        "--load-secs",
        "0.2",
        "--json",
        json.to_str().expect("utf-8 path"),
        "--scenario",
        "push-mono-1MiB",
        "--scenario",
        "manifest-get-tag-c1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("manifest-get-tag-c1") && stdout.contains("FAILED"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("1 failed"), "{}", text(&out));
    let report = read_json(&json);
    assert_eq!(result(&report, "push-mono-1MiB")["ok"], true);
    let failed = result(&report, "manifest-get-tag-c1");
    assert_eq!(failed["ok"], false);
    let error = failed["error"].as_str().expect("error text");
    assert!(
        error.contains("setup") && error.contains("413"),
        "error: {error}"
    );
    let c = client();
    assert_eq!(
        manifest_status(&c, &b, "bench/manifest", "latest").await,
        404
    );
}

#[tokio::test]
async fn skip_setup_fails_on_missing_fixtures_and_creates_none() {
    let b = Berth::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let out = bench(&[
        &b.url(""),
        "--quick",
        "--listing",
        "50",
        "--skip-setup",
        "--json",
        json.to_str().expect("utf-8 path"),
        "--scenario",
        "tags-list-n100",
        "--scenario",
        "catalog-n100",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = read_json(&json);
    let tags = result(&report, "tags-list-n100");
    assert_eq!(tags["ok"], false);
    assert!(
        tags["error"]
            .as_str()
            .is_some_and(|e| e.contains("bench/tags lacks its 50 tags")),
        "{tags:#}"
    );
    assert_eq!(result(&report, "catalog-n100")["ok"], false);
    let c = client();
    assert_eq!(catalog_of(&c, &b).await, Vec::<String>::new());
    assert!(b.blob_files().is_empty(), "{:?}", b.blob_files());
}

#[test]
fn refuses_anything_but_loopback_and_bad_arguments_before_sending_a_request() {
    for url in [
        "http://192.0.2.1:5000",
        "http://example.invalid:5000",
        "http://127.0.0.2:5000",
    ] {
        let out = bench(&[url, "--scenario", "manifest-get-tag-c1"]);
        assert_eq!(out.status.code(), Some(1), "{url}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("berth-bench only drives 127.0.0.1"),
            "{url}: {}",
            text(&out)
        );
    }
    let out = bench(&["http://127.0.0.1:1", "--scenario", "no-such-scenario"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no scenario matches"),
        "{}",
        text(&out)
    );
    let out = bench(&["http://127.0.0.1:1", "--listing", "0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--listing must be 1..=99999"),
        "{}",
        text(&out)
    );
    // Nothing listens on port 1: the first request fails, and says so.
    let out = bench(&["http://127.0.0.1:1", "--scenario", "manifest-get-tag-c1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the registry does not answer"),
        "{}",
        text(&out)
    );
    // The names it lists are the ones it runs.
    let out = bench(&["--list"]);
    assert!(out.status.success(), "{}", text(&out));
    let list = String::from_utf8_lossy(&out.stdout);
    for name in [
        "push-mono-1GiB",
        "push-chunked-1GiB",
        "push-stream-100MiB",
        "pull-1GiB",
        "pull-range-1MiB",
        "manifest-head-digest-c256",
        "mixed-kubelet-c64",
        "tags-list-n1000",
        "catalog-n1000",
    ] {
        assert!(list.lines().any(|l| l == name), "{name} not in:\n{list}");
    }
}

/// An RSA key pair made with openssl, and a token signed with it granting `repo`.
fn key_and_token(dir: &Path, repo: &str) -> (std::path::PathBuf, String) {
    let key = dir.join("key.pem");
    let public = dir.join("pub.pem");
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            key.to_str().expect("utf-8 path"),
        ],
        vec![
            "pkey",
            "-in",
            key.to_str().expect("utf-8 path"),
            "-pubout",
            "-out",
            public.to_str().expect("utf-8 path"),
        ],
    ] {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({
        "iss": "bench-test", "aud": "bench-test", "sub": "bench",
        "iat": now, "nbf": now - 5, "exp": now + 600,
        "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}],
    });
    let pem = std::fs::read(&key).expect("private key");
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
    )
    .expect("sign token");
    (public, token)
}

#[tokio::test]
async fn with_token_auth_on_it_needs_and_sends_a_bearer_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (public, token) = key_and_token(dir.path(), "bench/manifest");
    let b = Berth::start_with(Options {
        env: vec![
            ("BERTH_AUTH__MODE".into(), "token".into()),
            (
                "BERTH_AUTH__TOKEN__REALM".into(),
                "http://127.0.0.1:1/service/token".into(),
            ),
            ("BERTH_AUTH__TOKEN__SERVICE".into(), "bench-test".into()),
            ("BERTH_AUTH__TOKEN__ISSUER".into(), "bench-test".into()),
            (
                "BERTH_AUTH__TOKEN__PUBLIC_KEYS".into(),
                public.to_str().expect("utf-8 path").into(),
            ),
        ],
        ..Options::default()
    });
    let scenario = ["--scenario", "manifest-get-tag-c1"];
    let out = bench(
        &[
            &[b.url("").as_str(), "--load-secs", "0.2"][..],
            &scenario[..],
        ]
        .concat(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("answered 401 Unauthorized: pass --token"),
        "{}",
        text(&out)
    );

    let json = dir.path().join("report.json");
    let out = bench(
        &[
            &[
                b.url("").as_str(),
                "--load-secs",
                "0.2",
                "--token",
                &token,
                "--json",
                json.to_str().expect("utf-8 path"),
            ][..],
            &scenario[..],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let report = read_json(&json);
    let r = result(&report, "manifest-get-tag-c1");
    assert_eq!(
        (r["ok"].clone(), r["errors"].clone()),
        (json!(true), json!(0))
    );
    assert!(u64_of(r, "requests") > 0);
    // The fixture went in with the token; without one the registry still says 401.
    let c = client();
    assert_eq!(
        manifest_status(&c, &b, "bench/manifest", "latest").await,
        401
    );
    let authed = c
        .head(b.url("/v2/bench/manifest/manifests/latest"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("HEAD with token");
    assert_eq!(authed.status(), 200);
}
