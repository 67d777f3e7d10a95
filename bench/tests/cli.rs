//! The `berth-bench` command line on its own: what it refuses before sending a request,
//! and the scenario names it lists. Its runs against a real Berth are in the root
//! package's `tests/bench_harness.rs` (they start the server binary).

mod common;
use common::{bench, text};

/// Runs berth-bench with `args`, expecting exit status 1 and `needle` in its stderr.
fn fails_saying(args: &[&str], needle: &str) {
    let out = bench(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(needle),
        "{args:?}: {}",
        text(&out)
    );
}

#[test]
fn refuses_anything_but_loopback_and_bad_arguments_before_sending_a_request() {
    for url in [
        "http://192.0.2.1:5000",
        "http://example.invalid:5000",
        "http://127.0.0.2:5000",
    ] {
        fails_saying(
            &[url, "--scenario", "manifest-get-tag-c1"],
            "berth-bench only drives 127.0.0.1",
        );
    }
    // The file server beside the pulls too.
    fails_saying(
        &[
            "http://127.0.0.1:1",
            "--scenario",
            "manifest-get-tag-c1",
            "--disk-dir",
            "/tmp",
            "--file-url",
            "http://192.0.2.1:80",
        ],
        "berth-bench only drives 127.0.0.1",
    );
    // The reference beside the pulls too; and it must answer before anything is sent
    // to the registry.
    for (reference, said) in [
        ("http://192.0.2.1:5000", "berth-bench only drives 127.0.0.1"),
        ("http://127.0.0.1:1", "the reference does not answer"),
    ] {
        let args = ["http://127.0.0.1:1", "--scenario", "pull-1GiB"];
        fails_saying(&[&args[..], &["--reference-url", reference]].concat(), said);
    }
    fails_saying(
        &["http://127.0.0.1:1", "--scenario", "no-such-scenario"],
        "no scenario matches",
    );
    fails_saying(
        &["http://127.0.0.1:1", "--listing", "0"],
        "--listing must be 1..=99999",
    );
    // Nothing listens on port 1: the first request fails, and says so.
    fails_saying(
        &["http://127.0.0.1:1", "--scenario", "manifest-get-tag-c1"],
        "the registry does not answer",
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
