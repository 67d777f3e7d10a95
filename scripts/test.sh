#!/usr/bin/env bash
# Berth's test command (CI runs it through .ci/run).
#
#   scripts/test.sh                 install what is missing, start a private PostgreSQL,
#                                   then cargo fmt --check, clippy -D warnings, nextest
#                                   (each over the whole workspace: berth and bench/)
#   scripts/test.sh --setup-only    steps 1-3 only: install, start PostgreSQL, print the
#                                   exported environment, tear everything down
#   scripts/test.sh --run CMD ARGS  steps 1-3, then run CMD ARGS in that environment
#                                   (e.g. --run cargo nextest run -E 'test(podman)')
#
# Environment knobs: BERTH_TEST_THREADS (nextest --test-threads, default: nproc),
# BERTH_TEST_TIMEOUT (seconds for the nextest phase, default 3000),
# BERTH_SKIP_INSTALL=1 (never apt-get / pip / npm / cargo install: fail if something is missing).
#
# Needs root: it installs system packages and starts PostgreSQL as the `postgres` user. Its logs and scratch files live in one temp dir,
# removed on exit (the tail of a failing step's log is printed first). Node packages go to
# tests/oidc/node_modules (npm ci from tests/oidc/package-lock.json; git-ignored).
#
# Exported to the tests (see docs/testing-clients.md):
#   BERTH_TEST_POSTGRES_URL   postgres://postgres@127.0.0.1:PORT/berth_test (trust auth)
#   BERTH_TEST_TMPDIR         per-run scratch dir, removed on exit
#   BERTH_TEST_PYTHON         python3 interpreter that has the `oras` package
#   BERTH_TEST_S3_ENDPOINT    http://127.0.0.1:PORT, a moto S3 server (any key/secret; tests
#                             create their own buckets)
#   BERTH_TEST_OIDC_ISSUER    http://127.0.0.1:PORT, the test OpenID Connect provider
#                             (tests/oidc/provider.mjs: users, login form, admin routes)
#   BERTH_TEST_OIDC_ADMIN     $BERTH_TEST_OIDC_ISSUER/__test, its admin routes
#   BERTH_TEST_OIDC_CLIENT_ID, BERTH_TEST_OIDC_CLIENT_SECRET   its default client (redirect URI
#                             http://127.0.0.1:ANY_PORT/c/oidc/callback)
#   BERTH_TEST_OIDC_DIR       absolute path of tests/oidc (browser.mjs, the Chromium driver)
#   BERTH_TEST_NODE           the node binary (>= 20) that runs those scripts
#   BERTH_TEST_CHROMIUM       /usr/bin/chromium (Debian's), for playwright-core
#   BERTH_TEST_ARTIFACTS      a directory kept after the run (screenshots for reviewers);
#                             default target/test-artifacts, or the caller's value
#   STORAGE_DRIVER=vfs, CONTAINERS_STORAGE_CONF, CONTAINERS_CONF,
#   CONTAINERS_REGISTRIES_CONF   (podman/buildah/skopeo state kept inside BERTH_TEST_TMPDIR;
#   REGISTRY_AUTH_FILE is deliberately not set: it breaks docker-registry)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODE=full
RUN_CMD=()
case "${1:-}" in
  "") ;;
  --setup-only) MODE=setup ;;
  --run)
    MODE=run
    shift
    RUN_CMD=("$@")
    if [[ ${#RUN_CMD[@]} -eq 0 ]]; then
      echo "usage: $0 --run CMD [ARGS...]" >&2
      exit 2
    fi
    ;;
  -h | --help)
    sed -n '2,38p' "$0"
    exit 0
    ;;
  *)
    echo "unknown argument: $1 (try --help)" >&2
    exit 2
    ;;
esac

START_EPOCH=$(date +%s)
log() { printf '[%s +%4ss] %s\n' "$(date -u +%H:%M:%S)" "$(($(date +%s) - START_EPOCH))" "$*"; }
phase() { log "=== $*"; }
die() {
  log "ERROR: $*"
  exit 1
}

# Root: apt-get, and PostgreSQL is started as the `postgres` user (runuser).
[[ $(id -u) -eq 0 ]] || die "run as root: this installs system packages and starts PostgreSQL as the postgres user"

# ---------------------------------------------------------------------------
# 1. Install what the tests need.
# ---------------------------------------------------------------------------
PG_VERSION=15
PGBIN=/usr/lib/postgresql/$PG_VERSION/bin
# podman/buildah/skopeo as root with the vfs driver need nothing beyond their
# Depends (conmon, crun/runc, containers-common, uidmap come with them);
# fuse-overlayfs, slirp4netns, catatonit are only for overlay, rootless or
# `run --init`, which the tests do not use.
# chromium: the browser the web UI tests drive through playwright-core (tests/oidc/browser.mjs).
APT_PACKAGES=(skopeo podman buildah containerd docker-registry openssl ca-certificates curl python3 chromium iproute2)
# moto: the S3-compatible server for the S3 blob store tests (see docs/s3.md for why).
# 5.2.5 exactly: 5.2.1 answers CompleteMultipartUpload with a root element the AWS SDK
# refuses.
# harbor-api-client: a client generated from Harbor's own OpenAPI document, for the API
# compatibility test (tests/clients/harbor_api.py).
PIP_PACKAGES=("oras>=0.2.43,<0.3" "moto[server]==5.2.5" "harbor-api-client==2.12.2")
# helm-sdkpy: Helm 4's own library for the Helm test (tests/clients/helm_chart.py); Debian
# has no helm. It asks for Python 3.12 and works on 3.11, hence its own pip call with
# --ignore-requires-python (kept apart so the packages above install as they always did).
PIP_IGNORE_PYTHON_PACKAGES=("helm-sdkpy==0.1.32")

pkg_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

install_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    pkg_installed "$p" || missing+=("$p")
  done
  [[ -x $PGBIN/initdb ]] || missing+=("postgresql-$PG_VERSION")
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "apt: all present (${APT_PACKAGES[*]}, postgresql-$PG_VERSION binaries)"
    return
  fi
  [[ ${BERTH_SKIP_INSTALL:-0} == 1 ]] && die "missing packages and BERTH_SKIP_INSTALL=1: ${missing[*]}"
  log "apt: installing ${missing[*]}"
  # Keep package maintainer scripts from starting services (docker-registry,
  # containerd) on machines that have an init: a policy-rc.d that says no.
  local added_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | tee /usr/sbin/policy-rc.d >/dev/null
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  local rc=1 apt_log attempt
  apt_log=$RUN_LOGS/apt.log
  # Up to 3 tries: a package mirror can fail transiently.
  for attempt in 1 2 3; do
    rc=0
    env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >>"$apt_log" 2>&1 || rc=$?
    if [[ $rc -eq 0 ]]; then
      env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null >>"$apt_log" 2>&1 || rc=$?
    fi
    [[ $rc -eq 0 ]] && break
    log "apt: attempt $attempt failed (rc=$rc)"
    sleep $((attempt * 5))
  done
  [[ $added_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
  if [[ $rc -ne 0 ]]; then
    tail -n 40 "$apt_log" || true
    die "apt-get failed (rc=$rc); the last lines of its log are above"
  fi
  log "apt: done"
}

PYTHON=""
install_pip() {
  PYTHON=$(command -v python3 || true)
  [[ -n $PYTHON ]] || die "python3 not found"
  if "$PYTHON" -c 'import oras, moto, flask, harbor_client, helm_sdkpy, sys; sys.exit(moto.__version__ != "5.2.5")' >/dev/null 2>&1; then
    log "pip: oras and moto present ($("$PYTHON" -c 'import oras.version as v, moto; print(v.__version__, moto.__version__)' 2>/dev/null || echo '?'))"
  else
    [[ ${BERTH_SKIP_INSTALL:-0} == 1 ]] && die "python package oras missing and BERTH_SKIP_INSTALL=1"
    log "pip: installing ${PIP_PACKAGES[*]} ${PIP_IGNORE_PYTHON_PACKAGES[*]} for $PYTHON"
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
      # Debian's own python3 has no pip until python3-pip is installed.
      env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip </dev/null >/dev/null
    fi
    local pip=("$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore)
    # Debian's /usr/bin/python3 is "externally managed" (PEP 668); a pyenv one is not.
    if ! "${pip[@]}" "${PIP_PACKAGES[@]}" </dev/null; then
      "${pip[@]}" --break-system-packages "${PIP_PACKAGES[@]}" </dev/null || die "pip install oras failed"
    fi
    pip+=(--ignore-requires-python)
    if ! "${pip[@]}" "${PIP_IGNORE_PYTHON_PACKAGES[@]}" </dev/null; then
      "${pip[@]}" --break-system-packages "${PIP_IGNORE_PYTHON_PACKAGES[@]}" </dev/null || die "pip install helm-sdkpy failed"
    fi
    "$PYTHON" -c 'import oras, moto.server, harbor_client, helm_sdkpy' || die "oras, moto, harbor-api-client or helm-sdkpy still not importable by $PYTHON"
  fi
  PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')
}

# Node.js runs the test OpenID Connect provider and the browser driver (tests/oidc). The
# machines have Node 20 (oidc-provider 9 needs >= 20.19, and warns that it prefers 22); when
# node is missing, Debian's nodejs + npm are installed, and the version check below says
# whether that one is new enough. The npm packages are pinned by tests/oidc/package-lock.json
# and installed with `npm ci` into tests/oidc/node_modules, again only when the lock file
# changed since the last install (a stamp file in node_modules records its hash).
OIDC_DIR=$PWD/tests/oidc
NODE=""
install_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    [[ ${BERTH_SKIP_INSTALL:-0} == 1 ]] && die "node or npm missing and BERTH_SKIP_INSTALL=1"
    log "apt: installing nodejs npm"
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Lock::Timeout=300 nodejs npm </dev/null >>"$RUN_LOGS/apt.log" 2>&1 || die "apt-get install nodejs npm failed"
  fi
  NODE=$(command -v node)
  local major
  major=$("$NODE" -p 'process.versions.node.split(".")[0]')
  [[ $major -ge 20 ]] || die "Node.js >= 20 is needed for tests/oidc (oidc-provider 9), found $("$NODE" --version)"
  local want have=""
  want=$(sha256sum "$OIDC_DIR/package-lock.json" | cut -d' ' -f1)
  [[ -f $OIDC_DIR/node_modules/.berth-lock-sha256 ]] && have=$(cat "$OIDC_DIR/node_modules/.berth-lock-sha256")
  if [[ $want == "$have" ]]; then
    log "npm: tests/oidc/node_modules up to date (node $("$NODE" --version))"
    return
  fi
  [[ ${BERTH_SKIP_INSTALL:-0} == 1 ]] && die "tests/oidc/node_modules missing or stale and BERTH_SKIP_INSTALL=1"
  log "npm: npm ci in tests/oidc (oidc-provider, playwright-core)"
  local npm_log=$RUN_LOGS/npm.log attempt rc=1
  # Up to 3 tries, like apt: the package registry can fail transiently.
  for attempt in 1 2 3; do
    rc=0
    run_child timeout 600 env -C "$OIDC_DIR" PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
      npm ci --no-audit --no-fund --loglevel=error </dev/null >>"$npm_log" 2>&1 || rc=$?
    [[ $rc -eq 0 ]] && break
    log "npm: attempt $attempt failed (rc=$rc)"
    sleep $((attempt * 5))
  done
  if [[ $rc -ne 0 ]]; then
    tail -n 40 "$npm_log" || true
    die "npm ci in tests/oidc failed; the last lines of its log are above"
  fi
  echo "$want" >"$OIDC_DIR/node_modules/.berth-lock-sha256"
}

ensure_containers_policy() {
  # containers/image refuses to copy without a policy. The containers-common
  # package ships /etc/containers/policy.json; recreate it if someone removed it.
  if [[ ! -f /etc/containers/policy.json ]]; then
    log "writing /etc/containers/policy.json (insecureAcceptAnything)"
    mkdir -p /etc/containers
    printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' | tee /etc/containers/policy.json >/dev/null
  fi
}

# The test runner: the S3 pass below selects its tests with a nextest filter, so there is
# no fallback to `cargo test` (it would quietly run less). Installed from source when
# missing, into cargo's bin directory (or $CARGO_INSTALL_ROOT/bin); this version builds
# with the Rust the project uses (its rust-version is 1.91).
NEXTEST_VERSION=0.9.151
check_rust_tools() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"
  if ! cargo nextest --version >/dev/null 2>&1; then
    [[ ${BERTH_SKIP_INSTALL:-0} == 1 ]] && die "cargo-nextest missing and BERTH_SKIP_INSTALL=1"
    log "cargo-nextest missing: cargo install --locked cargo-nextest@$NEXTEST_VERSION (a few minutes)"
    local install_log=$RUN_LOGS/cargo-install-nextest.log
    # Built in the run's temp dir, so nothing is left behind if it fails.
    if ! run_child env CARGO_TARGET_DIR="$BERTH_TEST_TMPDIR/cargo-install-nextest" \
      cargo install --locked "cargo-nextest@$NEXTEST_VERSION" </dev/null >"$install_log" 2>&1; then
      tail -n 40 "$install_log" || true
      die "cargo install cargo-nextest failed; the last lines of its log are above"
    fi
    rm -rf "$BERTH_TEST_TMPDIR/cargo-install-nextest"
    [[ -n ${CARGO_INSTALL_ROOT:-} ]] && export PATH="$CARGO_INSTALL_ROOT/bin:$PATH"
    cargo nextest --version >/dev/null 2>&1 ||
      die "cargo-nextest was installed but cargo does not find it (is cargo's bin directory on PATH?)"
  fi
  log "cargo-nextest: $(cargo nextest --version 2>/dev/null | head -n1)"
}

# ---------------------------------------------------------------------------
# 2. Private PostgreSQL; 3. environment for the client tests.
# ---------------------------------------------------------------------------
# The run's temp dir: scratch space for the tests and the logs of this script (apt, the S3
# server, cargo install); cleanup removes it.
BERTH_TEST_TMPDIR=""
RUN_LOGS=""
# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh
S3_PID=""
OIDC_PID=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_private_postgres
  if [[ -n $S3_PID ]]; then
    log "stopping the S3 server"
    kill -TERM "$S3_PID" 2>/dev/null || true
    wait "$S3_PID" 2>/dev/null || true
  fi
  if [[ -n $OIDC_PID ]]; then
    log "stopping the OpenID Connect provider"
    kill -TERM "$OIDC_PID" 2>/dev/null || true
    wait "$OIDC_PID" 2>/dev/null || true
  fi
  if [[ -n $BERTH_TEST_TMPDIR && -d $BERTH_TEST_TMPDIR ]]; then
    # vfs layers can be read-only directories: make them removable first.
    chmod -R u+w "$BERTH_TEST_TMPDIR" 2>/dev/null || true
    rm -rf "$BERTH_TEST_TMPDIR" 2>/dev/null || log "WARNING: could not remove $BERTH_TEST_TMPDIR"
  fi
  log "exit $rc"
  exit "$rc"
}
# Long commands run in the background and are waited for, so that a signal to
# this script is handled at once (bash defers traps while a foreground child runs).
CHILD=""
run_child() {
  "$@" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}
on_signal() {
  if [[ -n $CHILD ]]; then
    kill -TERM "$CHILD" 2>/dev/null || true
    local _
    for _ in $(seq 1 100); do
      kill -0 "$CHILD" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$CHILD" 2>/dev/null || true
  fi
  exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_postgres() {
  # Disposable: durability off, for speed.
  start_private_postgres berth-pg \
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" --no-sync
  (cd / && runuser -u postgres -- "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres berth_test) ||
    die "createdb failed"
  "$PGBIN/psql" -X -q -t -A -h 127.0.0.1 -p "$PG_PORT" -U postgres -d berth_test -c 'select 1' >/dev/null ||
    die "cannot connect to berth_test"
  export BERTH_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/berth_test"
  export BERTH_TEST_POSTGRES_ADMIN_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
}

start_s3() {
  local port attempt log_file=$RUN_LOGS/s3.log
  for attempt in 1 2 3; do
    port=$(free_port)
    "$PYTHON" -m moto.server -H 127.0.0.1 -p "$port" >"$log_file" 2>&1 &
    S3_PID=$!
    local _
    for _ in $(seq 1 100); do
      if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
        export BERTH_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
        log "moto S3 server on 127.0.0.1:$port (pid $S3_PID, log $log_file)"
        return
      fi
      kill -0 "$S3_PID" 2>/dev/null || break
      sleep 0.1
    done
    log "S3 server did not come up on port $port (attempt $attempt)"
    tail -n 5 "$log_file" || true
    kill -TERM "$S3_PID" 2>/dev/null || true
    wait "$S3_PID" 2>/dev/null || true
    S3_PID=""
  done
  die "the S3 server would not start"
}

# One field of the JSON line the provider printed.
oidc_field() {
  "$NODE" -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(j[process.argv[2]])' \
    "$RUN_LOGS/oidc.json" "$1"
}

# The provider listens on a port of its own choosing (no race for a free port) and prints
# {"issuer":...,"admin":...,"client_id":...,"client_secret":...} as its first stdout line.
start_oidc() {
  local log_file=$RUN_LOGS/oidc.log out=$RUN_LOGS/oidc.json _
  "$NODE" "$OIDC_DIR/provider.mjs" --port 0 >"$out" 2>"$log_file" </dev/null &
  OIDC_PID=$!
  for _ in $(seq 1 300); do
    grep -q '}' "$out" 2>/dev/null && break
    kill -0 "$OIDC_PID" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q '}' "$out" 2>/dev/null || ! BERTH_TEST_OIDC_ISSUER=$(oidc_field issuer); then
    tail -n 20 "$log_file" || true
    die "the OpenID Connect provider did not start within 30 s (its log is above)"
  fi
  export BERTH_TEST_OIDC_ISSUER BERTH_TEST_OIDC_ADMIN BERTH_TEST_OIDC_CLIENT_ID BERTH_TEST_OIDC_CLIENT_SECRET
  BERTH_TEST_OIDC_ADMIN=$(oidc_field admin)
  BERTH_TEST_OIDC_CLIENT_ID=$(oidc_field client_id)
  BERTH_TEST_OIDC_CLIENT_SECRET=$(oidc_field client_secret)
  curl -sf --max-time 5 -o /dev/null "$BERTH_TEST_OIDC_ISSUER/.well-known/openid-configuration" ||
    die "the OpenID Connect provider at $BERTH_TEST_OIDC_ISSUER does not answer discovery"
  export BERTH_TEST_OIDC_DIR=$OIDC_DIR BERTH_TEST_NODE=$NODE BERTH_TEST_CHROMIUM=/usr/bin/chromium
  [[ -x $BERTH_TEST_CHROMIUM ]] || die "$BERTH_TEST_CHROMIUM not found (Debian package chromium)"
  log "OpenID Connect provider at $BERTH_TEST_OIDC_ISSUER (pid $OIDC_PID, log $log_file)"
}

make_run_dir() {
  BERTH_TEST_TMPDIR=$(mktemp -d /tmp/berth-test.XXXXXX)
  export BERTH_TEST_TMPDIR
  RUN_LOGS=$BERTH_TEST_TMPDIR/logs
  mkdir -p "$RUN_LOGS"
}

setup_client_env() {
  local c=$BERTH_TEST_TMPDIR/containers
  mkdir -p "$c/tmp"
  # Run-wide defaults so nothing lands in /var/lib/containers/storage or
  # /run/libpod. Tests that run podman/buildah in parallel should still give
  # each test its own CONTAINERS_STORAGE_CONF (see docs/testing-clients.md).
  cat >"$c/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$c/storage"
runroot = "$c/runroot"
EOF
  cat >"$c/containers.conf" <<EOF
[engine]
tmp_dir = "$c/libpod-tmp"
image_copy_tmp_dir = "$c/tmp"
lock_type = "file"
events_logger = "none"
cgroup_manager = "cgroupfs"
[network]
network_config_dir = "$c/networks"
EOF
  cat >"$c/registries.conf" <<EOF
unqualified-search-registries = []
short-name-mode = "disabled"
EOF
  export STORAGE_DRIVER=vfs
  export CONTAINERS_STORAGE_CONF=$c/storage.conf
  export CONTAINERS_CONF=$c/containers.conf
  export CONTAINERS_REGISTRIES_CONF=$c/registries.conf
  # Not exported: REGISTRY_AUTH_FILE. Debian's docker-registry (distribution)
  # reads every REGISTRY_* variable as a config override and refuses to start
  # with REGISTRY_AUTH_FILE set. Tests pass --creds, or --authfile / a
  # per-command REGISTRY_AUTH_FILE under their own temp dir.
  export BERTH_TEST_PYTHON=$PYTHON
  export BERTH_TEST_ARTIFACTS=${BERTH_TEST_ARTIFACTS:-$PWD/target/test-artifacts}
  mkdir -p "$BERTH_TEST_ARTIFACTS"
  export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
}

print_env() {
  log "test environment:"
  local v
  for v in BERTH_TEST_POSTGRES_URL BERTH_TEST_POSTGRES_ADMIN_URL BERTH_TEST_S3_ENDPOINT BERTH_TEST_TMPDIR BERTH_TEST_PYTHON \
    BERTH_TEST_OIDC_ISSUER BERTH_TEST_OIDC_ADMIN BERTH_TEST_OIDC_CLIENT_ID BERTH_TEST_OIDC_CLIENT_SECRET \
    BERTH_TEST_OIDC_DIR BERTH_TEST_NODE BERTH_TEST_CHROMIUM BERTH_TEST_ARTIFACTS \
    STORAGE_DRIVER CONTAINERS_STORAGE_CONF CONTAINERS_CONF CONTAINERS_REGISTRIES_CONF; do
    printf '  export %s=%q\n' "$v" "${!v}"
  done
  printf '  tools: %s\n' \
    "$(podman --version 2>&1 | head -n1)" \
    "$(buildah --version 2>&1 | head -n1)" \
    "$(skopeo --version 2>&1 | head -n1)" \
    "$(containerd --version 2>&1 | head -n1)" \
    "$(docker-registry --version 2>&1 | head -n1)" \
    "oras (python) $("$PYTHON" -c 'import oras.version as v; print(v.__version__)' 2>&1)" \
    "node $("$NODE" --version 2>&1)" \
    "$("$BERTH_TEST_CHROMIUM" --version 2>/dev/null | head -n1)"
}

make_run_dir
phase "1. install prerequisites"
install_apt
ensure_containers_policy
install_pip
install_node
check_rust_tools

phase "2. PostgreSQL $PG_VERSION"
start_postgres

phase "2b. S3-compatible server (moto)"
start_s3

phase "2c. OpenID Connect provider (tests/oidc/provider.mjs)"
start_oidc

phase "3. client environment"
setup_client_env
print_env

if [[ $MODE == setup ]]; then
  phase "setup only: tearing down"
  exit 0
fi

if [[ $MODE == run ]]; then
  phase "running: ${RUN_CMD[*]}"
  rc=0
  run_child "${RUN_CMD[@]}" || rc=$?
  exit "$rc"
fi

# ---------------------------------------------------------------------------
# 4. Checks.
# ---------------------------------------------------------------------------
FAILED=()

phase "4a. cargo fmt --all -- --check"
if run_child cargo fmt --all -- --check; then log "fmt: ok"; else FAILED+=(fmt); fi

phase "4b. cargo clippy --workspace --all-targets -- -D warnings"
if run_child cargo clippy --workspace --all-targets --locked -- -D warnings; then log "clippy: ok"; else FAILED+=(clippy); fi

THREADS=${BERTH_TEST_THREADS:-$(nproc)}
TEST_TIMEOUT=${BERTH_TEST_TIMEOUT:-3000}
phase "4c. cargo nextest run --workspace --no-fail-fast --test-threads $THREADS"
if run_child timeout --kill-after=60 "$TEST_TIMEOUT" \
  cargo nextest run --workspace --locked --no-fail-fast --test-threads "$THREADS" --no-tests=warn; then
  log "tests: ok"
else
  FAILED+=(tests)
fi

# The registry's integration and real-client tests again, with blobs in S3 (moto). Left
# out: the blob-store and metadata suites (they run every backend already), the server
# process tests (configuration, logs), and five tests that watch the filesystem store's
# upload files to time their requests (each in both auth modes: `name::auth_none`,
# `name::auth_builtin`).
S3_FILTER='(binary(client_cli) | binary(client_oci_client) | binary(spec_blobs) | binary(spec_manifests)
  | binary(spec_uploads) | binary(spec_errors) | binary(spec_listing) | binary(spec_referrers)
  | binary(replicas) | test(a_large_blob_streams_through_without_raising_memory)
  | test(=gc_collects_exactly_the_garbage_on_the_default_stores)
  | test(=whole_blob_pulls_copy_the_body_and_the_splice_one_is_labelled))
  & not test(/^chunk_whose_content_range_is_not_at_the_session_offset_is_416(::|$)/)
  & not test(/^a_client_that_hangs_up_mid_patch_does_not_lock_the_session(::|$)/)
  & not test(/^chunk_that_overlaps_is_416_and_leaves_the_session_unchanged(::|$)/)
  & not test(/^concurrent_patches_to_one_session_cannot_corrupt_the_blob(::|$)/)
  & not test(/^post_opens_a_session_with_location_and_upload_uuid(::|$)/)'
phase "4d. the same with the S3 blob store (BERTH_TEST_BACKEND=s3)"
if run_child timeout --kill-after=60 "$TEST_TIMEOUT" env BERTH_TEST_BACKEND=s3 \
  cargo nextest run --workspace --locked --no-fail-fast --test-threads "$THREADS" -E "$S3_FILTER"; then
  log "tests on S3: ok"
else
  FAILED+=(tests-s3)
fi

if [[ ${#FAILED[@]} -gt 0 ]]; then
  phase "FAILED: ${FAILED[*]}"
  exit 1
fi
phase "all checks passed"
