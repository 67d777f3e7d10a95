//! scripts/bench-pulls.sh's harness (issue 19), not timed: its `--selftest` sets up the TLS
//! certificates, two network namespaces and the veth pair between them, serves one TLS
//! answer across it and tears everything down. These tests check that nothing of it is
//! left (namespaces, veth ends, temp dir, processes) after a normal exit, a forced error,
//! SIGTERM and SIGINT mid-set-up, and that a refused namespace set-up falls back to
//! loopback with the note the report carries; and what the report makes of its results.
//! The script's tests need root (namespaces); they skip, saying why, without it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// False (and says why) when this process cannot set up namespaces.
fn can_run() -> bool {
    if !is_root() {
        eprintln!("skipped: bench-pulls.sh's namespace set-up needs root");
        return false;
    }
    true
}

/// The selftest command: `prefix` (e.g. unshare), then bash scripts/bench-pulls.sh ARGS.
fn selftest(prefix: &[&str], args: &[&str]) -> Command {
    let (prog, pre) = match prefix.split_first() {
        Some((p, rest)) => (*p, rest.to_vec()),
        None => ("bash", Vec::new()),
    };
    let mut cmd = Command::new(prog);
    cmd.args(pre);
    if !prefix.is_empty() {
        cmd.arg("bash");
    }
    cmd.arg(scripts().join("bench-pulls.sh"))
        .arg("--selftest")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What a run said it made, from its log.
struct Made {
    names: Vec<String>,
    work: String,
    pids: Vec<u32>,
}

fn made(log: &str) -> Made {
    let after = |key: &str| {
        log.lines()
            .filter_map(|l| l.split_once(key).map(|(_, rest)| rest.to_string()))
            .collect::<Vec<_>>()
    };
    let names: Vec<String> = after("selftest: namespaces ")
        .first()
        .unwrap_or_else(|| panic!("no namespace names in the log:\n{log}"))
        .split_whitespace()
        .filter(|w| *w != "veth")
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 4, "two namespaces and two veth ends:\n{log}");
    let work = after("work dir ")
        .first()
        .unwrap_or_else(|| panic!("no work dir in the log:\n{log}"))
        .trim()
        .to_string();
    assert!(work.starts_with("/tmp/berth-pulls."), "{work}");
    let pids = after("selftest: started pid ")
        .iter()
        .map(|r| {
            r.split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("bad pid line {r}"))
        })
        .collect();
    Made { names, work, pids }
}

/// Nothing of the run is left: its namespaces, veth ends, temp dir and processes.
fn assert_clean(m: &Made, log: &str) {
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let netns = String::from_utf8_lossy(&netns.stdout);
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    for n in &m.names {
        assert!(
            !netns.split_whitespace().any(|w| w == n),
            "namespace {n} left:\n{netns}\n{log}"
        );
        assert!(
            !links.contains(&format!(" {n}:")) && !links.contains(&format!(" {n}@")),
            "link {n} left:\n{links}\n{log}"
        );
        assert!(
            !Path::new("/run/netns").join(n).exists(),
            "/run/netns/{n} left"
        );
    }
    assert!(!Path::new(&m.work).exists(), "{} left:\n{log}", m.work);
    for p in &m.pids {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists(),
            "process {p} still lives:\n{log}"
        );
    }
}

/// Waits (120 s at most) for the child; its exit code and stderr (read by `lines`).
fn finish(mut child: Child, lines: mpsc::Receiver<String>, mut log: String) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bench-pulls.sh --selftest did not end within 120 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The reader thread ends at EOF (every writer of the pipe gone).
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(10)) {
        log.push_str(&l);
        log.push('\n');
    }
    (status.code().unwrap_or(-1), log)
}

fn spawn(mut cmd: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd.spawn().expect("start bash scripts/bench-pulls.sh");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn run(cmd: Command) -> (i32, String) {
    let (child, rx) = spawn(cmd);
    finish(child, rx, String::new())
}

/// Starts the selftest paused after `step`, sends `signal` once it says so, and returns
/// its exit code and log.
fn signalled(step: &str, signal: &str) -> (i32, String) {
    let (child, rx) = spawn(selftest(&[], &["--selftest-pause", step]));
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let paused = l.contains(&format!("selftest: paused after {step}"));
                log.push_str(&l);
                log.push('\n');
                if paused {
                    break;
                }
            }
            Err(_) => panic!("never paused after {step}:\n{log}"),
        }
    }
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    finish(child, rx, log)
}

#[test]
fn a_normal_exit_serves_tls_across_the_link_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let (code, log) = run(selftest(&[], &[]));
    assert_eq!(code, 0, "{log}");
    // Across the veth pair, from the client's namespace to the server's address with the
    // certificate made for it; or, where this machine refuses namespaces even to root,
    // on loopback with the note.
    assert!(
        log.contains("selftest: TLS answer from https://169.254.19.1:")
            && log.contains("selftest: ok (veth)")
            || log.contains("measured on loopback only") && log.contains("selftest: ok (loopback)"),
        "{log}"
    );
    let m = made(&log);
    assert!(!m.pids.is_empty(), "{log}");
    assert_clean(&m, &log);
}

#[test]
fn a_forced_error_after_the_veth_set_up_leaves_nothing() {
    if !can_run() {
        return;
    }
    let (code, log) = run(selftest(&[], &["--selftest-fail-at", "server"]));
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("selftest: failing after server"), "{log}");
    assert_clean(&made(&log), &log);
    let (code, log) = run(selftest(&[], &["--selftest-fail-at", "veth"]));
    assert_eq!(code, 1, "{log}");
    assert_clean(&made(&log), &log);
}

#[test]
fn sigterm_with_everything_up_leaves_nothing() {
    if !can_run() {
        return;
    }
    let (code, log) = signalled("server", "TERM");
    assert_eq!(code, 143, "{log}");
    let m = made(&log);
    // The TLS server and the pause were running when the signal came.
    assert!(m.pids.len() >= 2, "{log}");
    assert_clean(&m, &log);
}

#[test]
fn sigint_mid_set_up_leaves_nothing() {
    if !can_run() {
        return;
    }
    // After the namespaces exist, before the veth pair.
    let (code, log) = signalled("netns", "INT");
    assert_eq!(code, 130, "{log}");
    assert!(!log.contains("selftest: step veth done"), "{log}");
    assert_clean(&made(&log), &log);
}

#[test]
fn a_refused_namespace_set_up_falls_back_to_loopback_with_a_note() {
    if !can_run() {
        return;
    }
    // In a user namespace of its own the script is uid 0, but `ip netns add` is refused
    // (it cannot make /run/netns a shared mount there).
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!("skipped: unshare --user --map-root-user is not allowed here");
        return;
    }
    let (code, log) = run(selftest(&["unshare", "--user", "--map-root-user"], &[]));
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("NOTE: veth link unavailable: ip netns add failed: ")
            && log.contains("; measured on loopback only"),
        "{log}"
    );
    assert!(
        log.contains("selftest: TLS answer from https://127.0.0.1:")
            && log.contains("selftest: ok (loopback)"),
        "{log}"
    );
    assert_clean(&made(&log), &log);
}

/// One berth-bench result as bench-pulls.sh's runs write it.
fn result(scenario: &str, mb_s: f64, beside: &[(&str, f64, &[f64])]) -> serde_json::Value {
    let mut b = serde_json::Map::new();
    for (what, base, ratios) in beside {
        let mut sorted = ratios.to_vec();
        sorted.sort_by(f64::total_cmp);
        b.insert(
            what.to_string(),
            serde_json::json!({"mb_s": base, "ratios": ratios, "ratio": sorted[sorted.len() / 2]}),
        );
    }
    serde_json::json!({"scenario": scenario, "unit": "MB/s", "ok": true, "error": null,
        "mb_s": mb_s, "beside": b})
}

#[test]
fn the_report_holds_the_copying_client_to_the_targets_and_carries_the_note() {
    let dir = std::env::temp_dir().join(format!("berth-pulls-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("results dir");
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write");
    write("combinations.txt", "loopback-plain\nloopback-tls\n".into());
    write(
        "notes.txt",
        "veth link unavailable: not root; measured on loopback only\n".into(),
    );
    let runs = serde_json::json!({"results": [
        result("pull-1GiB", 3000.0, &[("reference", 2400.0, &[1.3, 1.25, 1.1]), ("file", 2900.0, &[1.05, 0.98, 1.02])]),
        result("pull-1GiB-splice", 5000.0, &[("reference", 2400.0, &[2.0, 2.1, 2.2])]),
        result("pull-1GiB-cold", 900.0, &[("reference", 1000.0, &[0.9, 0.85, 0.95])]),
        result("ctr-fetch-300MiB", 700.0, &[("reference", 650.0, &[1.08, 1.02, 1.1])]),
    ]});
    write("loopback-plain_berth.json", runs.to_string());
    let mut skipped = result("pull-1GiB-cold", 0.0, &[]);
    skipped["skipped"] = serde_json::json!(true);
    skipped["note"] = serde_json::json!("no --evict-dir given");
    let tls = serde_json::json!({"results": [
        result("pull-1GiB", 1500.0, &[("reference", 1600.0, &[0.9, 0.95, 0.97])]),
        result("push-mono-1GiB", 800.0, &[]),
        skipped,
    ]});
    write("loopback-tls_berth-nosendfile.json", tls.to_string());
    write(
        "loopback-tls_distribution.json",
        serde_json::json!({"results": [result("push-mono-1GiB", 400.0, &[])]}).to_string(),
    );
    let report = dir.join("report.md");
    let out = Command::new("python3")
        .arg(scripts().join("bench_pulls_report.py"))
        .arg(&dir)
        .arg(&report)
        .args(["2 cores", "0", "berth test", "2.8.2"])
        .output()
        .expect("run bench_pulls_report.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("report");
    let _ = std::fs::remove_dir_all(&dir);
    for line in [
        "**Note:** veth link unavailable: not root; measured on loopback only",
        "| pull-1GiB | copying client (read into a 1 MiB buffer) | berth | 3000 | 1.25x (2400) | 102% (2900) |",
        "| pull-1GiB-splice | splice to /dev/null (informational) | berth | 5000 | 2.10x (2400) | - |",
        "| loopback-plain | berth | pull-1GiB >= 1.2x reference (warm, loopback; median of 3) | 1.25x (each 1.30, 1.25, 1.10; 3000 vs 2400 MB/s) | met |",
        "| loopback-plain | berth | pull-1GiB >= nginx (warm, loopback; median of 3) | 102% (3000 vs 2900 MB/s) | met |",
        "| loopback-plain | berth | pull-1GiB-cold >= 1x reference (cold; median of 3) | 0.90x (each 0.90, 0.85, 0.95; 900 vs 1000 MB/s) | **missed** |",
        "| loopback-plain | berth | ctr-fetch-300MiB >= 1x reference (ctr content fetch; median of 3) | 1.08x (each 1.08, 1.02, 1.10; 700 vs 650 MB/s) | met |",
        "| loopback-tls | berth-nosendfile | pull-1GiB >= 1x reference (warm, over TLS; median of 3) | 0.95x (each 0.90, 0.95, 0.97; 1500 vs 1600 MB/s) | **missed** |",
        "| push-mono-1GiB | monolithic push | berth-nosendfile | 800 | 2.00x (400, its own run) | - |",
        // A skipped scenario is no figure: said so, and its target counted as missed.
        "| pull-1GiB-cold | cold: page cache evicted before every GET | berth-nosendfile | skipped: no --evict-dir given | - | - |",
        "| loopback-tls | berth-nosendfile | pull-1GiB-cold measured | skipped: no --evict-dir given | **missed** |",
        "3 of 6 checks met.",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The splice receiver is shown, never held to a target.
    assert!(
        !text.contains("| pull-1GiB-splice >="),
        "splice checked:\n{text}"
    );
}
