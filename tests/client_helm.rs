//! Helm pushing a chart into a private project with a robot account, over HTTPS.
//!
//! Debian has no helm binary: the test drives Helm 4's own Go library through the PyPI
//! package `helm-sdkpy` (tests/clients/helm_chart.py), and pulls the chart back with the
//! Python ORAS client, since helm-sdkpy's Pull crashes inside the library. Both come with
//! the test command: `scripts/test.sh --run cargo nextest run --test client_helm`.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const ADMIN_PASSWORD: &str = "helm-admin-pass-1";
const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// The helper script with `args`, trusting `ca`, with a home and Helm directories of its own
/// (Helm's login writes its registry config there, nowhere else).
fn helm_script(home: &Path, ca: &Path, args: &[&str]) -> Output {
    let python = std::env::var("BERTH_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/helm_chart.py");
    Command::new(python)
        .arg(script)
        .args(args)
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("HELM_CONFIG_HOME", home.join("helm/config"))
        .env("HELM_CACHE_HOME", home.join("helm/cache"))
        .env("HELM_DATA_HOME", home.join("helm/data"))
        .env("HELM_REGISTRY_CONFIG", home.join("helm/registry.json"))
        .env("KUBECONFIG", home.join("kubeconfig"))
        .env("SSL_CERT_FILE", ca)
        .env("TMPDIR", home)
        .stdin(Stdio::null())
        .output()
        .expect("run python3 tests/clients/helm_chart.py")
}

/// The script's last output line as JSON; panics with its output when it failed.
fn last_json(b: &Berth, what: &str, out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let parsed = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<Value>(l).ok());
    match parsed {
        Some(v) if out.status.success() => v,
        _ => panic!(
            "{what} failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{}",
            out.status,
            b.log_text()
        ),
    }
}

#[tokio::test]
async fn helm_pushes_a_chart_with_a_robot_over_https_and_oras_pulls_it_back() {
    let tls = TestCert::generate();
    let b = Berth::start_with(Options {
        tls: Some((tls.cert.clone(), tls.key.clone())),
        env: vec![
            ("BERTH_AUTH__MODE".into(), "builtin".into()),
            ("BERTH_AUTH__ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
        ],
        ..Default::default()
    });
    assert!(b.base.starts_with("https://"), "{}", b.base);
    b.cli_ok(&["project", "create", "charts"]);
    let (robot, secret) = b.create_robot(&[
        "helm",
        "--project",
        "charts",
        "--access",
        "repository:pull",
        "--access",
        "repository:push",
    ]);

    // A tiny chart.
    let work = tempfile::tempdir().expect("temp dir");
    let chart = work.path().join("berth-demo");
    std::fs::create_dir_all(chart.join("templates")).expect("chart dir");
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: berth-demo\ndescription: a chart pushed by the Berth tests\ntype: application\nversion: 0.1.0\nappVersion: \"1.0\"\n",
    )
    .expect("Chart.yaml");
    std::fs::write(chart.join("values.yaml"), "greeting: hello\n").expect("values.yaml");
    std::fs::write(
        chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-demo\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )
    .expect("template");
    let dist = work.path().join("dist");
    std::fs::create_dir_all(&dist).expect("dist dir");
    let (chart_s, dist_s) = (chart.to_string_lossy(), dist.to_string_lossy());
    let host = b.host();

    // Without logging in, the push into the private project is refused.
    let anon_home = tempfile::tempdir().expect("temp dir");
    let out = helm_script(
        anon_home.path(),
        &tls.ca,
        &["push", &host, &chart_s, &dist_s, "charts"],
    );
    let anon = last_json(&b, "the anonymous helm push", &out);
    assert!(
        anon["error"].as_str().is_some_and(|e| e.contains("401")),
        "an anonymous helm push into a private project was not refused with 401: {anon}"
    );
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&tls.ca).expect("read CA")).expect("CA"),
        )
        .build()
        .expect("https client");
    let manifest_url = b.url("/v2/charts/berth-demo/manifests/0.1.0");
    let r = http
        .get(&manifest_url)
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(r.status(), 404, "the refused push left a manifest");

    // Logged in as the robot, the push goes through.
    let home = tempfile::tempdir().expect("temp dir");
    let out = helm_script(
        home.path(),
        &tls.ca,
        &["push", &host, &chart_s, &dist_s, "charts", &robot, &secret],
    );
    let pushed = last_json(&b, "helm login + push", &out);
    assert!(
        pushed["error"].is_null(),
        "helm push with the robot: {pushed}"
    );
    let package = pushed["package"]
        .as_str()
        .expect("package path")
        .to_string();
    assert!(package.ends_with("berth-demo-0.1.0.tgz"), "{package}");
    let packaged = std::fs::read(&package).expect("read the packaged chart");

    // The manifest as Helm writes a chart.
    let r = http
        .get(&manifest_url)
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(r.status(), 200, "no manifest for berth-demo:0.1.0");
    let manifest: Value = r.json().await.expect("manifest JSON");
    assert_eq!(manifest["config"]["mediaType"], HELM_CONFIG, "{manifest}");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(layers[0]["mediaType"], HELM_LAYER, "{manifest}");
    assert_eq!(
        layers[0]["digest"],
        sha256(&packaged).as_str(),
        "{manifest}"
    );
    assert_eq!(layers[0]["size"], packaged.len() as u64, "{manifest}");

    // Pulled back with oras as the robot: the same bytes as packaged.
    let pulled_dir = work.path().join("pulled");
    std::fs::create_dir_all(&pulled_dir).expect("pull dir");
    let out = helm_script(
        home.path(),
        &tls.ca,
        &[
            "pull",
            &host,
            "charts/berth-demo:0.1.0",
            &pulled_dir.to_string_lossy(),
            &robot,
            &secret,
        ],
    );
    let pulled = last_json(&b, "the oras pull", &out);
    let files = pulled["files"].as_array().expect("pulled files");
    assert_eq!(files.len(), 1, "{pulled}");
    let got = std::fs::read(files[0].as_str().expect("path")).expect("read the pulled chart");
    assert!(
        got == packaged,
        "the pulled chart differs from the packaged one"
    );

    // A person's CLI secret works for `helm registry login` too: set through Harbor's API
    // (PUT /users/{id}/cli_secret), then a login and push as that user.
    b.cli_ok(&[
        "user",
        "create",
        "helm-user",
        "--password",
        "Helm-user-pass-1",
    ]);
    b.cli_ok(&["project", "member", "charts", "helm-user", "developer"]);
    let users: Value = http
        .get(b.url("/api/v2.0/users?q=username%3D~helm-user"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("list users")
        .json()
        .await
        .expect("users JSON");
    let id = users[0]["user_id"].as_i64().expect("the user's id");
    let cli_secret = "Helm-Cli-Secret-0042";
    let r = http
        .put(b.url(&format!("/api/v2.0/users/{id}/cli_secret")))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .json(&serde_json::json!({ "secret": cli_secret }))
        .send()
        .await
        .expect("set the CLI secret");
    assert_eq!(r.status(), 200);
    let user_home = tempfile::tempdir().expect("temp dir");
    let out = helm_script(
        user_home.path(),
        &tls.ca,
        &[
            "push",
            &host,
            &chart_s,
            &dist_s,
            "charts",
            "helm-user",
            cli_secret,
        ],
    );
    let pushed = last_json(&b, "helm login + push with a CLI secret", &out);
    assert!(
        pushed["error"].is_null(),
        "helm push with the CLI secret: {pushed}"
    );
    let wrong_home = tempfile::tempdir().expect("temp dir");
    let out = helm_script(
        wrong_home.path(),
        &tls.ca,
        &[
            "push",
            &host,
            &chart_s,
            &dist_s,
            "charts",
            "helm-user",
            "Not-The-Secret-1",
        ],
    );
    let refused = last_json(&b, "helm push with a wrong secret", &out);
    assert!(
        refused["error"].as_str().is_some_and(|e| e.contains("401")),
        "a wrong CLI secret was not refused: {refused}"
    );
}
