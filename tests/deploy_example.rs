//! The example deployment in docs/deploy/ stays true: the Berth configuration its ConfigMap
//! carries is accepted by this binary (every key known, every value valid), and its probes
//! and metrics port point where the server serves them.

use std::process::{Command, Stdio};

const EXAMPLE: &str = include_str!("../docs/deploy/kubernetes.yaml");

/// The `berth.toml: |` block of the ConfigMap, unindented.
fn embedded_config() -> String {
    let mut lines = EXAMPLE
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("berth.toml: |"));
    let header = lines.next().expect("the ConfigMap has berth.toml");
    let outer = header.len() - header.trim_start().len();
    let mut out = String::new();
    let mut indent = None;
    for line in lines {
        if line.trim().is_empty() {
            out.push('\n');
            continue;
        }
        let depth = line.len() - line.trim_start().len();
        if depth <= outer {
            break;
        }
        let cut = *indent.get_or_insert(depth);
        out.push_str(&line[cut.min(depth)..]);
        out.push('\n');
    }
    out
}

#[test]
fn the_example_configuration_is_accepted() {
    let config = embedded_config();
    assert!(
        config.contains("[gc]") && config.contains("[metrics]"),
        "{config}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, &config).expect("write config");
    // Everything as the example says, except the blob store (no S3 here) and the database.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["migrate", "--config"])
        .arg(&file)
        .env("BERTH_DATA_DIR", dir.path())
        .env("BERTH_STORAGE__BACKEND", "fs")
        .env_remove("BERTH_CONFIG")
        .env_remove("BERTH_DATABASE__URL")
        .stdin(Stdio::null())
        .output()
        .expect("run berth migrate");
    assert!(
        out.status.success(),
        "the example's berth.toml is refused: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_example_probes_and_scrapes_what_the_server_serves() {
    for wanted in [
        "path: /readyz",
        "path: /healthz",
        "listen = \"0.0.0.0:9090\"",
        "containerPort: 9090",
        "prometheus.io/path: /metrics",
    ] {
        assert!(EXAMPLE.contains(wanted), "the example lacks {wanted}");
    }
}
