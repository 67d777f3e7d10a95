//! What the berth-bench test files share: running the binary, showing what it did, and
//! the private containerd's configuration.
#![allow(dead_code)] // each test file uses a part

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs this crate's `berth-bench` binary (no stdin, no backtraces in its errors).
pub fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-bench"))
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run berth-bench")
}

/// A fresh directory under the system temp dir, removed when dropped.
pub fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("berth-bench-test-{what}-"))
        .tempdir()
        .expect("temp dir")
}

/// An exit status and both outputs, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The configuration of a containerd whose root, state, socket and plugins live in `dir`
/// (the one the root package's tests and the scripts use too).
pub fn containerd_config(dir: &Path) -> String {
    include_str!("../../../scripts/lib/containerd.toml")
        .replace("@DIR@", &dir.display().to_string())
}
