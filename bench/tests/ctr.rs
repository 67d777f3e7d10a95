//! `ctr-fetch-*` against a private containerd and two private reference registries
//! (distribution's `docker-registry`, one as the registry under test, one as the
//! reference), all on loopback and stopped by PID. Not timed: these check that the
//! scenario fetches, counts and cleans up, and that it fails clearly without containerd.

mod common;
use common::{bench, temp_dir, text};

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A server process, stopped by its PID on drop (SIGTERM, then SIGKILL after 10 s).
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Daemon {
        let out = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Daemon { child, log }
    }

    /// Waits (15 s at most) until `ready` holds; panics with the log otherwise.
    fn wait_until(&mut self, what: &str, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ready() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what} exited with {status}:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!("{what} did not answer within 15 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `bin` is on the PATH.
fn installed(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// Fails, saying what to run, when a tool the test needs is not installed (as the root
/// package's tests do: a test that passes without running hides a broken set-up).
fn require_tools(tools: &[&str]) {
    let missing: Vec<&&str> = tools.iter().filter(|t| !installed(t)).collect();
    assert!(
        missing.is_empty(),
        "{missing:?} not installed (run `bash scripts/test.sh --setup-only` to install them)"
    );
}

/// `ctr --address SOCK --namespace NS ARGS`.
fn ctr(sock: &Path, ns: &str, args: &[&str]) -> Output {
    Command::new("ctr")
        .arg("--address")
        .arg(sock)
        .args(["--namespace", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ctr")
}

/// A private containerd in `dir` (scripts/lib/containerd.toml: no CRI,
/// no snapshotters this machine lacks); its socket.
fn containerd(dir: &Path) -> (Daemon, PathBuf) {
    std::fs::create_dir_all(dir).expect("containerd dir");
    let sock = dir.join("c.sock");
    std::fs::write(dir.join("config.toml"), common::containerd_config(dir))
        .expect("containerd config");
    let mut daemon = Daemon::spawn(
        Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(&sock),
        dir.join("containerd.log"),
    );
    daemon.wait_until("containerd", || {
        sock.exists() && ctr(&sock, "default", &["version"]).status.success()
    });
    (daemon, sock)
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The status code of `METHOD path` on 127.0.0.1:`port` (HTTP/1.0, no body), or 0.
fn status(port: u16, method: &str, path: &str, accept: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).is_err() {
        return 0;
    }
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A private docker-registry in `dir` (configured as scripts/lib/bench-common.sh's
/// start_distribution does); its port.
fn docker_registry(dir: &Path) -> (Daemon, u16) {
    std::fs::create_dir_all(dir).expect("registry dir");
    let port = free_port();
    std::fs::write(
        dir.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: berth-bench-test\n",
            dir.display()
        ),
    )
    .expect("registry config");
    let mut cmd = Command::new("docker-registry");
    cmd.arg("serve").arg(dir.join("config.yml"));
    // It reads every REGISTRY_* variable as a config override.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REGISTRY_") {
            cmd.env_remove(k);
        }
    }
    let mut daemon = Daemon::spawn(&mut cmd, dir.join("log"));
    daemon.wait_until("docker-registry", || {
        status(port, "GET", "/v2/", "*/*") == 200
    });
    (daemon, port)
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn ctr_fetches_the_image_from_registry_and_reference_in_turns_and_leaves_nothing_in_containerd() {
    require_tools(&["containerd", "ctr", "docker-registry"]);
    let tmp = temp_dir("ctr");
    let (_containerd, sock) = containerd(&tmp.path().join("containerd"));
    let (_registry, port) = docker_registry(&tmp.path().join("registry"));
    let (_reference, ref_port) = docker_registry(&tmp.path().join("reference"));
    let json = tmp.path().join("out.json");
    let out = bench(&[
        &format!("http://127.0.0.1:{port}"),
        "--reference-url",
        &format!("http://127.0.0.1:{ref_port}"),
        "--scenario",
        "ctr-fetch-60MiB",
        "--quick",
        "--ctr-address",
        &sock.display().to_string(),
        "--json",
        &json.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON report"))
            .expect("JSON");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{report:#}");
    let r = &results[0];
    assert_eq!(r["scenario"], "ctr-fetch-60MiB");
    assert_eq!(r["ok"], true, "{r:#}");
    // Three timed fetches (--quick) of the whole image: 60 MiB of layers, a config and
    // a manifest of well under a KiB each.
    assert_eq!(r["ops"], 3, "{r:#}");
    let bytes = r["bytes"].as_u64().expect("bytes");
    assert!(
        bytes > 3 * (60 << 20) && bytes < 3 * ((60 << 20) + 2048),
        "{r:#}"
    );
    assert!(r["mb_s"].as_f64().is_some_and(|m| m > 0.0), "{r:#}");
    // Each held to the reference's fetches on either side of it.
    let beside = &r["beside"]["reference"];
    assert_eq!(beside["ratios"].as_array().map(Vec::len), Some(3), "{r:#}");
    assert!(beside["mb_s"].as_f64().is_some_and(|m| m > 0.0), "{r:#}");
    let note = r["note"].as_str().expect("note");
    assert!(
        note.contains("6 layers") && note.contains("ratio per round"),
        "{note}"
    );
    // The same image on both servers.
    for p in [port, ref_port] {
        assert_eq!(
            status(
                p,
                "HEAD",
                "/v2/bench/ctr/manifests/fetch-60MiB",
                OCI_MANIFEST
            ),
            200
        );
    }
    // And nothing left in containerd: no image, no content, no download in progress.
    for args in [&["images", "ls", "-q"][..], &["content", "ls", "-q"]] {
        let o = ctr(&sock, "berth-bench", args);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "",
            "ctr {args:?}"
        );
    }
    let o = ctr(&sock, "berth-bench", &["content", "active"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
}

#[test]
fn without_a_containerd_answering_the_scenario_fails_naming_the_socket_before_pushing() {
    require_tools(&["ctr", "docker-registry"]);
    let tmp = temp_dir("ctr-none");
    let (_registry, port) = docker_registry(&tmp.path().join("registry"));
    let url = format!("http://127.0.0.1:{port}");
    // A socket nobody listens on any more (connection refused), and no socket at all.
    let stale = tmp.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind a socket"));
    let missing = tmp.path().join("missing.sock");
    for (sock, said) in [
        (&stale, "containerd does not answer on"),
        (&missing, "no containerd socket at"),
    ] {
        let sock = sock.display().to_string();
        let args = [&url, "--scenario", "ctr-fetch-60MiB", "--quick"];
        let out = bench(&[&args[..], &["--ctr-address", &sock]].concat());
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let failed = stdout
            .lines()
            .find(|l| l.starts_with("ctr-fetch-60MiB") && l.contains("FAILED"))
            .unwrap_or_else(|| panic!("no FAILED line: {}", text(&out)));
        assert!(
            failed.contains(said) && failed.contains(&sock),
            "{}",
            text(&out)
        );
    }
    // Without --ctr-address it says what it needs.
    let out = bench(&[&url, "--scenario", "ctr-fetch-60MiB", "--quick"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ctr-fetch-* needs --ctr-address SOCK"),
        "{}",
        text(&out)
    );
    // Nothing was pushed.
    assert_eq!(
        status(
            port,
            "HEAD",
            "/v2/bench/ctr/manifests/fetch-60MiB",
            OCI_MANIFEST
        ),
        404
    );
}
