//! Real container clients in tests: running their commands with a time limit, one test's
//! private podman / buildah / skopeo state ([`Containers`]) and a private containerd
//! ([`Containerd`]) (docs/testing-clients.md). The binaries come from `scripts/test.sh`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Berth;

/// How long one client command may take before it is killed and the test fails.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// A finished client command.
pub struct Ran {
    pub line: String,
    /// `None`: killed after [`COMMAND_LIMIT`].
    pub status: Option<ExitStatus>,
    /// stdout, lossily decoded; `out` has the bytes.
    pub stdout: String,
    pub out: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after the {COMMAND_LIMIT:?} limit"),
        };
        format!(
            "command: {}\nstatus: {status} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.line, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// `cmd` as a shell line, quoting what needs it (for messages).
pub fn command_line(cmd: &Command) -> String {
    let quote = |s: &OsStr| {
        let s = s.to_string_lossy();
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "'\"$[]".contains(c)) {
            format!("'{s}'")
        } else {
            s.into_owned()
        }
    };
    std::iter::once(quote(cmd.get_program()))
        .chain(cmd.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion, killing it (by its PID) after [`COMMAND_LIMIT`]. Output goes
/// to anonymous temp files, so a grandchild holding a pipe open cannot hang the test.
pub fn run(cmd: &mut Command) -> Ran {
    let line = command_line(cmd);
    let mut out = tempfile::tempfile().expect("temp file for stdout");
    let mut err = tempfile::tempfile().expect("temp file for stderr");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone stdout file"))
        .stderr(err.try_clone().expect("clone stderr file"));
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{line}`: {e} (is the client installed? run `bash scripts/test.sh --setup-only`)"));
    let status = loop {
        match child.try_wait().expect("wait for client command") {
            Some(s) => break Some(s),
            None if start.elapsed() < COMMAND_LIMIT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let elapsed = start.elapsed();
    let read = |f: &mut File| {
        let mut v = Vec::new();
        let _ = f.rewind();
        let _ = f.read_to_end(&mut v);
        v
    };
    let stdout = read(&mut out);
    Ran {
        line,
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        out: stdout,
        stderr: String::from_utf8_lossy(&read(&mut err)).into_owned(),
        elapsed,
    }
}

/// Runs `cmd` and panics, with everything needed to see why, unless it exits 0.
#[track_caller]
pub fn must(b: &Berth, cmd: &mut Command) -> Ran {
    must_also(b, cmd, "")
}

/// [`must`], adding `extra` (another process's log) to the panic message.
#[track_caller]
pub fn must_also(b: &Berth, cmd: &mut Command, extra: &str) -> Ran {
    let ran = run(cmd);
    if !ran.success() {
        panic!(
            "client command failed\n{}\n{extra}\n--- berth log ---\n{}",
            ran.describe(),
            b.log_text()
        );
    }
    ran
}

/// Panics with the server log when `cond` is false.
#[track_caller]
pub fn check(b: &Berth, cond: bool, msg: impl std::fmt::Display) {
    if !cond {
        panic!("{msg}\n--- berth log ---\n{}", b.log_text());
    }
}

/// A short random suffix for repository, tag and image names.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Makes everything under `dir` writable (vfs layers can be read-only) so it can be removed.
pub fn make_writable(dir: &Path) {
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// One test's containers directory `C` (docs/testing-clients.md, "Isolating podman /
/// buildah / skopeo state"): storage.conf, containers.conf, registries.conf and auth.json,
/// passed as environment to every podman/buildah/skopeo command; `tmp/` and `ctx/` (a
/// build context) are made too.
pub struct Containers {
    dir: tempfile::TempDir,
}

impl Containers {
    pub fn new() -> Containers {
        let dir = tempfile::Builder::new()
            .prefix("berth-containers-")
            .tempdir()
            .expect("temp dir");
        let c = dir.path().display().to_string();
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text)
                .unwrap_or_else(|e| panic!("write {name}: {e}"))
        };
        write(
            "storage.conf",
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{c}/storage\"\nrunroot = \"{c}/runroot\"\n"
            ),
        );
        write(
            "containers.conf",
            format!(
                "[engine]\ntmp_dir = \"{c}/libpod-tmp\"\nimage_copy_tmp_dir = \"{c}/tmp\"\n\
                 lock_type = \"file\"\n\
                 events_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n\
                 [network]\nnetwork_config_dir = \"{c}/networks\"\n"
            ),
        );
        write(
            "registries.conf",
            "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n".to_string(),
        );
        write("auth.json", "{\"auths\":{}}\n".to_string());
        for d in ["tmp", "ctx"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        Containers { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `prog` with this directory's containers environment.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut cmd = Command::new(prog);
        cmd.current_dir(self.dir.path())
            .env("STORAGE_DRIVER", "vfs")
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .env("TMPDIR", self.path("tmp"));
        cmd
    }

    /// skopeo's name for an image in this directory's storage.
    pub fn storage_ref(&self, image: &str) -> String {
        format!(
            "containers-storage:[vfs@{}+{}]{image}",
            self.p("storage"),
            self.p("runroot")
        )
    }

    /// buildah: from scratch, one file with `content`, a Cmd and a label, committed as
    /// `image` in `format` (`oci` or `docker`). Returns the image ID (its config digest).
    pub fn build_image(&self, b: &Berth, image: &str, content: &str, format: &str) -> String {
        let file = self.path("ctx/hello.txt");
        std::fs::write(&file, content).expect("write build context");
        let working = must(b, self.cmd("buildah").args(["from", "scratch"]));
        let working = working.stdout.trim().to_string();
        check(
            b,
            !working.is_empty(),
            "buildah from scratch printed no container name",
        );
        let mut copy = self.cmd("buildah");
        copy.args(["copy", "-q", &working])
            .arg(&file)
            .arg("/hello.txt");
        must(b, &mut copy);
        must(
            b,
            self.cmd("buildah").args([
                "config",
                "--cmd",
                r#"["/hello.txt"]"#,
                "--label",
                &format!("berth.test={content}"),
                &working,
            ]),
        );
        let id = must(
            b,
            self.cmd("buildah")
                .args(["commit", "-q", "--format", format, &working, image]),
        )
        .stdout
        .trim()
        .to_string();
        check(
            b,
            id.len() == 64 && id.bytes().all(|c| c.is_ascii_hexdigit()),
            format!("buildah commit printed {id:?}, not an image ID"),
        );
        must(b, self.cmd("buildah").args(["rm", &working]));
        id
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        make_writable(self.dir.path());
    }
}

/// A private containerd (config, root, state and socket in its own temp dir), stopped by
/// PID when dropped (docs/testing-clients.md, recipe d).
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts it and waits (15 s at most) until `ctr version` answers.
    pub fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("berth-ctrd-")
            .tempdir()
            .expect("temp dir");
        // The one private-containerd configuration the tests and scripts share.
        let config = include_str!("../../scripts/lib/containerd.toml")
            .replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(dir.path().join("config.toml"), config).expect("write containerd config");
        let log = File::create(dir.path().join("log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--address")
            .arg(dir.path().join("c.sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start containerd (run `bash scripts/test.sh --setup-only` to install it)");
        let mut c = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if run(&mut c.ctr(&["version"])).success() {
                return c;
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!("containerd exited with {status}:\n{}", c.log());
            }
            if Instant::now() > deadline {
                panic!("containerd did not answer within 15 s:\n{}", c.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ctr` on this containerd's socket, in the `berth` namespace.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.dir.path().join("c.sock"))
            .args(["--namespace", "berth"])
            .args(args);
        cmd
    }

    /// Its log, headed for a panic message.
    pub fn log(&self) -> String {
        format!(
            "--- containerd log ---\n{}",
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        )
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // No container ran, so no mount should be left; unmount any anyway before removal.
        let prefix = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        make_writable(self.dir.path());
    }
}

/// The Python ORAS client, `tests/clients/oras_referrers.py HOST REPO` (run by
/// `$BERTH_TEST_PYTHON`, `python3` by default), with `home` as its HOME, Docker config
/// directory and TMPDIR: oras-py reads (never writes, without login)
/// ~/.docker/config.json, so an empty home keeps the machine's out.
pub fn oras_script(home: &Path, host: &str, repo: &str) -> Command {
    let python = std::env::var("BERTH_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/oras_referrers.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg(host)
        .arg(repo)
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env("TMPDIR", home);
    cmd
}
