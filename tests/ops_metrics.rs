//! `/metrics`: Prometheus text a parser reads, whose series move with requests, labelled by
//! route template and never by repository name; served unauthenticated on the main port,
//! or only on `metrics.listen`, or not at all.

mod common;

use common::*;
use prometheus_parse::{LineInfo, Sample, Scrape, Value};

/// Scrapes `/metrics` at `base`, checking every line is a comment, a sample, or empty, and
/// parses it.
async fn scrape(c: &reqwest::Client, base: &str) -> Scrape {
    let r = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    let ct = header_str(&r, "content-type");
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = r.text().await.expect("body");
    assert!(text.trim_end().ends_with("# EOF"), "no # EOF: {text}");
    for line in text.lines() {
        let ok = match LineInfo::parse(line) {
            LineInfo::Sample { .. } | LineInfo::Doc { .. } | LineInfo::Type { .. } => true,
            LineInfo::Empty => true,
            LineInfo::Ignored => line.starts_with("# EOF") || line.starts_with("# UNIT"),
        };
        assert!(ok, "line does not parse as Prometheus text: {line:?}");
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses")
}

fn value_of(s: &Sample) -> f64 {
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(h) => h.last().map(|b| b.count).unwrap_or(0.0),
        Value::Summary(_) => 0.0,
    }
}

/// The value of `metric` with exactly these labels (0 when the series does not exist yet).
fn series(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(value_of)
        .unwrap_or(0.0)
}

fn has_metric(s: &Scrape, metric: &str) -> bool {
    s.samples.iter().any(|x| x.metric == metric)
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_never_by_repository() {
    let b = Berth::start();
    let c = client();
    let repo = "metrics-secret-team/app";
    let (digest, manifest) = push_image(&c, &b, repo, "v1", b"layer of the metrics test").await;
    let before = scrape(&c, &b.base).await;
    let manifest_get = [
        ("route", "/v2/<name>/manifests/<reference>"),
        ("method", "GET"),
        ("status", "200"),
    ];
    for _ in 0..3 {
        let r = c
            .get(b.url(&format!("/v2/{repo}/manifests/v1")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("get manifest");
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.expect("body").as_ref(), manifest.as_slice());
    }
    let r = c
        .get(b.url(&format!("/v2/{repo}/manifests/sha256:{}", "0".repeat(64))))
        .send()
        .await
        .expect("get missing manifest");
    assert_eq!(r.status(), 404);
    let after = scrape(&c, &b.base).await;

    let total = "berth_http_requests_total";
    assert_eq!(
        series(&after, total, &manifest_get) - series(&before, total, &manifest_get),
        3.0,
        "three manifest GETs counted under the route template"
    );
    assert_eq!(
        series(
            &after,
            total,
            &[
                ("route", "/v2/<name>/manifests/<reference>"),
                ("method", "GET"),
                ("status", "404")
            ]
        ) - series(
            &before,
            total,
            &[
                ("route", "/v2/<name>/manifests/<reference>"),
                ("method", "GET"),
                ("status", "404")
            ]
        ),
        1.0
    );
    // The pushes: blob uploads (monolithic POSTs) and the manifest PUT.
    assert!(
        series(
            &after,
            total,
            &[
                ("route", "/v2/<name>/blobs/uploads/"),
                ("method", "POST"),
                ("status", "201")
            ]
        ) >= 2.0
    );
    assert!(
        series(
            &after,
            total,
            &[
                ("route", "/v2/<name>/manifests/<reference>"),
                ("method", "PUT"),
                ("status", "201")
            ]
        ) >= 1.0
    );
    // The latency histogram has the three GETs too.
    let latency = "berth_http_request_duration_seconds";
    let lat = |s: &Scrape| {
        series(
            s,
            latency,
            &[
                ("route", "/v2/<name>/manifests/<reference>"),
                ("method", "GET"),
            ],
        )
    };
    assert_eq!(
        lat(&after) - lat(&before),
        4.0,
        "3 hits and 1 miss observed"
    );
    // No label anywhere names the repository or the digest.
    for s in &after.samples {
        for part in ["metrics-secret-team", &digest[7..]] {
            assert!(
                !format!("{:?}", s.labels).contains(part),
                "series {} has a label naming {part}: {:?}",
                s.metric,
                s.labels
            );
        }
    }
    // Bytes: the manifest bodies went out, the pushed blobs came in.
    let sent = |s: &Scrape| series(s, "berth_http_sent_bytes_total", &[]);
    assert!(sent(&after) - sent(&before) >= 3.0 * manifest.len() as f64);
    assert!(
        series(&after, "berth_http_received_bytes_total", &[])
            >= (IMAGE_CONFIG.len() + manifest.len()) as f64
    );
    // The probes and the scrapes themselves are not counted (nor logged).
    assert!(
        !after
            .samples
            .iter()
            .any(|s| s.labels.get("route") == Some("/metrics")),
        "scrapes counted as requests"
    );
    // Registered now, recorded by garbage collection later.
    for m in [
        "berth_gc_runs_total",
        "berth_gc_blobs_freed_total",
        "berth_gc_bytes_freed_total",
        "berth_gc_duration_seconds",
        "berth_storage_errors_total",
        "berth_database_errors_total",
        "berth_connections_open",
    ] {
        assert!(has_metric(&after, m), "{m} missing");
    }
    assert!(series(&after, "berth_connections_open", &[]) >= 1.0);
    for pool in ["read", "write"] {
        assert!(
            series(&after, "berth_database_connections_max", &[("pool", pool)]) >= 1.0,
            "{pool} pool's size"
        );
    }
}

#[tokio::test]
async fn metrics_gauge_counts_open_upload_sessions() {
    let b = Berth::start();
    let c = client();
    let open = |s: &Scrape| series(s, "berth_uploads_open", &[]);
    assert_eq!(open(&scrape(&c, &b.base).await), 0.0);
    let first = open_upload(&c, &b, "library/uploading").await;
    open_upload(&c, &b, "library/uploading").await;
    assert_eq!(open(&scrape(&c, &b.base).await), 2.0);
    let r = c.delete(&first).send().await.expect("cancel upload");
    assert_eq!(r.status(), 204);
    assert_eq!(open(&scrape(&c, &b.base).await), 1.0);
}

#[tokio::test]
async fn metrics_are_unauthenticated_on_the_main_port_in_builtin_mode() {
    let b = Berth::start_with(Options {
        env: vec![("BERTH_AUTH__MODE".into(), "builtin".into())],
        ..Options::default()
    });
    let c = client();
    let r = c.get(b.url("/v2/")).send().await.expect("v2");
    assert_eq!(r.status(), 401, "the registry itself asks for credentials");
    let s = scrape(&c, &b.base).await;
    assert_eq!(
        series(
            &s,
            "berth_http_requests_total",
            &[("route", "/v2/"), ("method", "GET"), ("status", "401")]
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_listen_serves_them_on_their_own_port_only() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let b = Berth::start_with(Options {
        env: vec![("BERTH_METRICS__LISTEN".into(), format!("127.0.0.1:{port}"))],
        ..Options::default()
    });
    let c = client();
    let r = c.get(b.url("/metrics")).send().await.expect("main port");
    assert_eq!(r.status(), 404, "not on the main port");
    let s = scrape(&c, &format!("http://127.0.0.1:{port}")).await;
    assert!(has_metric(&s, "berth_uploads_open"));
    assert!(
        b.log_text().contains("metrics endpoint"),
        "{}",
        b.log_text()
    );
}

#[tokio::test]
async fn metrics_enabled_false_serves_none() {
    let b = Berth::start_with(Options {
        env: vec![("BERTH_METRICS__ENABLED".into(), "false".into())],
        ..Options::default()
    });
    let r = client().get(b.url("/metrics")).send().await.expect("get");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn blob_store_failures_are_counted() {
    let b = Berth::start();
    let c = client();
    let errors = |s: &Scrape| series(s, "berth_storage_errors_total", &[]);
    assert_eq!(errors(&scrape(&c, &b.base).await), 0.0);
    let root = b.storage_root();
    let away = root.with_file_name("storage-away");
    std::fs::rename(&root, &away).expect("move the store away");
    let r = c
        .post(b.url("/v2/library/app/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .expect("open upload");
    assert_eq!(r.status(), 500, "{:?}", r.text().await);
    std::fs::rename(&away, &root).expect("move it back");
    assert_eq!(errors(&scrape(&c, &b.base).await), 1.0);
}
