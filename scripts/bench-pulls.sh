#!/usr/bin/env bash
# Pulls as real clients see them (issue 19; docs/performance.md explains the results).
#
#   scripts/bench-pulls.sh            full run (1 GiB blob, 300 MiB image for ctr)
#   scripts/bench-pulls.sh --quick    100 MiB blob, 60 MiB image
#
# For each link (loopback; a veth pair between two network namespaces this script creates)
# and each transport (plain HTTP; TLS with one certificate, made here, for every server):
#   the reference (Debian's docker-registry 2.8) and nginx (sendfile on) serving the same
#   bytes, and two Berth servers one after the other, each on a fresh data dir:
#     berth              its default configuration (SQLite, filesystem, auth none)
#     berth-nosendfile   the same with server.sendfile = false
#   berth-bench runs on each Berth, in turns with the reference and nginx (same bytes):
#     pull-<big>          whole-blob GETs with a copying client (the checks hold on it)
#     pull-<big>-splice   the splice-to-/dev/null receiver (plain HTTP only; informational)
#     pull-<big>-cold     every GET of each server after evicting the blob's bytes from
#                         the page cache (--evict-dir: each server's data dir)
#     push-mono-<big>     (TLS only; also run on the reference) pushes over HTTPS
#     ctr-fetch-<size>    containerd's `ctr content fetch` of a multi-layer image, in turns
#                         with the reference (a containerd started here, on the client's side)
# Servers run in the server namespace bound to its veth address, the client (and
# containerd) in the client namespace. Where the namespaces cannot be set up (not root,
# no netns support, `ip netns add` refused), the veth part runs on loopback instead and
# the report says so. Everything this script starts is stopped by PID, and the namespaces,
# the veth pair and the temp dir (certificates included) are removed, on every exit path.
#
# Options:
#   --quick               100 MiB instead of 1 GiB (60 MiB instead of 300 MiB for ctr)
#   --links L[,L]         loopback,veth (default: both)
#   --tls T[,T]           plain,tls (default: both)
#   --no-netns            no namespaces: the veth part runs on loopback (said in the report)
#   --no-build            use target/release/{berth,berth-bench} as they are
#   --berth-bin PATH      benchmark this berth binary
#   --bench-bin PATH      use this berth-bench binary
#   --out DIR             where results go (default target/bench): bench-pulls-<stamp>.md
#                         and the JSON of every run in pulls-<stamp>/
#   --selftest            set up the certificates, the namespaces and the veth pair, serve
#                         one TLS answer across it (openssl s_server), check it, tear down
#                         (bench/tests/pulls_harness.rs); no build, no benchmark
#   --selftest-pause STEP     (with --selftest) wait up to 60 s after STEP (tls, netns,
#                             veth, server), e.g. for a signal
#   --selftest-fail-at STEP   (with --selftest) fail right after STEP
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

QUICK=0
BUILD=1
OUT=$ROOT/target/bench
BERTH_BIN=""
BENCH_BIN=""
NETNS=1
LINKS=loopback,veth
TLS_MODES=plain,tls
SELFTEST=0
PAUSE_AT=""
FAIL_AT=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1; shift ;;
    --links) LINKS=$2; shift 2 ;;
    --tls) TLS_MODES=$2; shift 2 ;;
    --no-netns) NETNS=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --berth-bin) BERTH_BIN=$2; shift 2 ;;
    --bench-bin) BENCH_BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --selftest) SELFTEST=1; shift ;;
    --selftest-pause) PAUSE_AT=$2; shift 2 ;;
    --selftest-fail-at) FAIL_AT=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
for l in ${LINKS//,/ }; do
  [[ $l == loopback || $l == veth ]] || { echo "--links: loopback or veth, not $l" >&2; exit 2; }
done
for t in ${TLS_MODES//,/ }; do
  [[ $t == plain || $t == tls ]] || { echo "--tls: plain or tls, not $t" >&2; exit 2; }
done

START_EPOCH=$(date +%s)
# ---------------------------------------------------------------------------
# What we start and create, removed on every exit: processes (by PID), the namespaces and
# the veth pair (names unique to this run), the temp dir (certificates, data dirs).
# ---------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/berth-pulls.XXXXXX)
chmod 711 "$WORK" # nginx's workers (not root) read the beside dir
PIDS=()
# shellcheck source=scripts/lib/bench-common.sh
. scripts/lib/bench-common.sh
NS_SRV=berth-pulls-$$-srv NS_CLI=berth-pulls-$$-cli
VETH_SRV=bp$$s VETH_CLI=bp$$c # (interface names: 15 characters at most)
ADDR_SRV=169.254.19.1 ADDR_CLI=169.254.19.2 # a /30 of their own, inside the namespaces
VETH_NOTE=""
log "work dir $WORK"

teardown_netns() { # (the names are this run's: whatever exists of them is ours)
  local ns p
  for ns in "$NS_SRV" "$NS_CLI"; do
    [[ -e /run/netns/$ns ]] || continue
    # Anything still running in our namespace was started by this run.
    for p in $(ip netns pids "$ns" 2>/dev/null); do stop_pid "$p" 50; done
  done
  # The pair is created inside the namespaces; deleting one end deletes both.
  [[ -e /run/netns/$NS_SRV ]] && { ip -n "$NS_SRV" link del "$VETH_SRV" 2>/dev/null || true; }
  ip link del "$VETH_SRV" 2>/dev/null || true # (never in the root namespace; in case)
  for ns in "$NS_SRV" "$NS_CLI"; do
    [[ -e /run/netns/$ns ]] || continue
    ip netns del "$ns" 2>/dev/null || log "WARNING: ip netns del $ns failed"
  done
  return 0
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  teardown_netns
  rm -rf "$WORK"
  log "cleaned up (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A pause (for the harness's signals) and a forced failure at a named step of --selftest.
step_done() { # STEP
  log "selftest: step $1 done"
  [[ $FAIL_AT == "$1" ]] && die "selftest: failing after $1 (--selftest-fail-at)"
  if [[ $PAUSE_AT == "$1" ]]; then
    sleep 60 &
    local p=$!
    PIDS+=("$p")
    log "selftest: started pid $p (sleep, the pause)"
    log "selftest: paused after $1 (pid $$)"
    wait "$p" || true
    forget_pid "$p"
  fi
  return 0
}

# ---------------------------------------------------------------------------
# Prerequisites (Debian 12).
# ---------------------------------------------------------------------------
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v ip >/dev/null || missing+=(iproute2)
command -v python3 >/dev/null || missing+=(python3)
command -v free >/dev/null || missing+=(procps)
if [[ $SELFTEST -eq 0 ]]; then
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v containerd >/dev/null || missing+=(containerd)
fi
apt_install "${missing[@]}"

# ---------------------------------------------------------------------------
# TLS: a CA and one server certificate (127.0.0.1 and the veth server address) for every
# server; clients trust the CA (berth-bench --ca-file, ctr --tlscacert, curl --cacert).
# ---------------------------------------------------------------------------
make_certs() {
  local d=$WORK/tls
  mkdir -p "$d"
  chmod 755 "$d"
  {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj "/CN=berth-bench CA $$" -keyout "$d/ca.key" -out "$d/ca.pem" &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=berth-bench server" -keyout "$d/server.key" -out "$d/server.csr" &&
      printf 'subjectAltName = IP:127.0.0.1, IP:%s\nextendedKeyUsage = serverAuth\n' "$ADDR_SRV" >"$d/ext.cnf" &&
      openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -extfile "$d/ext.cnf" -out "$d/server.pem"
  } >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "openssl could not make the certificates"; }
  chmod 644 "$d/server.key" # nginx and the registries read it; the dir goes at exit
  CA=$d/ca.pem TLS_CERT=$d/server.pem TLS_KEY=$d/server.key
  log "TLS: CA and server certificate (IP:127.0.0.1, IP:$ADDR_SRV) in $d"
}

# ---------------------------------------------------------------------------
# The link: two namespaces, a veth pair between them, link-local addresses.
# ---------------------------------------------------------------------------
refuse_veth() { # REASON
  VETH_NOTE="veth link unavailable: $1; measured on loopback only"
  log "NOTE: $VETH_NOTE"
  teardown_netns
}
setup_veth() { # sets up the link, or returns 1 with VETH_NOTE said
  [[ $NETNS -eq 1 ]] || { refuse_veth "--no-netns given"; return 1; }
  [[ $(id -u) -eq 0 ]] || { refuse_veth "not root"; return 1; }
  [[ -e /proc/self/ns/net ]] || { refuse_veth "no network namespaces in this kernel"; return 1; }
  local err=$WORK/ip.err ns
  for ns in "$NS_SRV" "$NS_CLI"; do
    if ! ip netns add "$ns" 2>"$err"; then
      refuse_veth "ip netns add failed: $(head -n1 "$err")"
      return 1
    fi
    log "namespace $ns"
  done
  step_done netns
  if ! { ip -n "$NS_SRV" link add "$VETH_SRV" type veth peer name "$VETH_CLI" netns "$NS_CLI" &&
    ip -n "$NS_SRV" addr add "$ADDR_SRV/30" dev "$VETH_SRV" &&
    ip -n "$NS_CLI" addr add "$ADDR_CLI/30" dev "$VETH_CLI" &&
    ip -n "$NS_SRV" link set lo up && ip -n "$NS_CLI" link set lo up &&
    ip -n "$NS_SRV" link set "$VETH_SRV" up && ip -n "$NS_CLI" link set "$VETH_CLI" up; } 2>"$err"; then
    refuse_veth "veth set-up failed: $(head -n1 "$err")"
    return 1
  fi
  log "veth $VETH_SRV ($NS_SRV, $ADDR_SRV) <-> $VETH_CLI ($NS_CLI, $ADDR_CLI)"
  step_done veth
}

# How servers and the client run on LINK with TLS (plain|tls): SRV_HOST, SRV_EXEC,
# SRV_SCHEME, CURL (lib), CLI_EXEC and CLIENT_ARGS (berth-bench's --ca-file, --link-host).
use_link() { # LINK TLS
  CLIENT_ARGS=()
  if [[ $1 == veth ]]; then
    SRV_HOST=$ADDR_SRV SRV_EXEC=(ip netns exec "$NS_SRV") CLI_EXEC=(ip netns exec "$NS_CLI")
    CLIENT_ARGS+=(--link-host "$ADDR_SRV")
  else
    SRV_HOST=127.0.0.1 SRV_EXEC=() CLI_EXEC=()
  fi
  CURL=("${CLI_EXEC[@]}" curl)
  if [[ $2 == tls ]]; then
    SRV_SCHEME=https
    CURL+=(--cacert "$CA")
    CLIENT_ARGS+=(--ca-file "$CA")
  else
    SRV_SCHEME=http
  fi
}

# ---------------------------------------------------------------------------
# --selftest: the set-up and the teardown, one TLS answer across the link, no benchmark.
# ---------------------------------------------------------------------------
if [[ $SELFTEST -eq 1 ]]; then
  log "selftest: namespaces $NS_SRV $NS_CLI veth $VETH_SRV $VETH_CLI"
  make_certs
  step_done tls
  link=loopback
  setup_veth && link=veth
  use_link "$link" tls
  port=$(free_port)
  "${SRV_EXEC[@]}" openssl s_server -quiet -www -cert "$TLS_CERT" -key "$TLS_KEY" \
    -accept "$SRV_HOST:$port" </dev/null >"$WORK/s_server.log" 2>&1 &
  PIDS+=("$!")
  log "selftest: started pid $! (openssl s_server on $SRV_HOST:$port, $link)"
  wait_http "https://$SRV_HOST:$port/" "$!" || { cat "$WORK/s_server.log" >&2; die "selftest: no TLS answer from $SRV_HOST:$port"; }
  log "selftest: TLS answer from https://$SRV_HOST:$port/ over $link"
  step_done server
  log "selftest: ok ($link)"
  exit 0
fi

# ---------------------------------------------------------------------------
# The benchmark.
# ---------------------------------------------------------------------------
if [[ $BUILD -eq 1 ]]; then
  log "cargo build --release (berth, berth-bench)"
  cargo build --release --locked -p berth -p berth-bench >&2
fi
BERTH=${BERTH_BIN:-$ROOT/target/release/berth}
BENCH=${BENCH_BIN:-$ROOT/target/release/berth-bench}
[[ -x $BERTH && -x $BENCH ]] || die "missing $BERTH or $BENCH (build first)"

BIG=1GiB CTR_SIZE=300MiB QUICK_ARGS=()
[[ $QUICK -eq 1 ]] && BIG=100MiB CTR_SIZE=60MiB QUICK_ARGS=(--quick)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RES=$WORK/results
mkdir -p "$OUT" "$RES"
: >"$RES/notes.txt"

make_certs
WANT_VETH=0
[[ ,$LINKS, == *,veth,* ]] && WANT_VETH=1
if [[ $WANT_VETH -eq 1 ]] && ! setup_veth; then
  echo "$VETH_NOTE" >>"$RES/notes.txt"
  # The veth part is measured on loopback instead (once, if loopback is asked for too).
  LINKS=loopback
fi

bench() { # NAME URL PID [ARGS...]: berth-bench in the client's namespace, JSON to RES
  local name=$1 url=$2 pid=$3
  shift 3
  log "berth-bench: $name"
  "${CLI_EXEC[@]}" "$BENCH" "$url" --name "$name" --pid "$pid" --json "$RES/$name.json" \
    "${QUICK_ARGS[@]}" "${CLIENT_ARGS[@]}" "$@" >&2 &
  local p=$! rc=0
  PIDS+=("$p")
  wait "$p" || rc=$?
  forget_pid "$p"
  [[ $rc -eq 0 ]] || log "WARNING: berth-bench reported failures for $name (rc=$rc)"
}

# A private containerd (scripts/lib/containerd.toml, as the tests use) in the client's
# namespace: sets CTR_SOCK.
CTRD_PID=""
start_containerd() {
  local d=$WORK/containerd _
  mkdir -p "$d"
  sed "s|@DIR@|$d|g" "$ROOT/scripts/lib/containerd.toml" >"$d/config.toml"
  "${CLI_EXEC[@]}" containerd --config "$d/config.toml" --root "$d/root" --state "$d/state" \
    --address "$d/c.sock" </dev/null >"$d/log" 2>&1 &
  CTRD_PID=$!
  PIDS+=("$CTRD_PID")
  for _ in $(seq 1 150); do
    ctr --address "$d/c.sock" version >/dev/null 2>&1 && break
    kill -0 "$CTRD_PID" 2>/dev/null || break
    sleep 0.1
  done
  ctr --address "$d/c.sock" version >/dev/null 2>&1 || { tail -n 20 "$d/log" >&2; die "containerd did not start"; }
  CTR_SOCK=$d/c.sock
  log "containerd on $CTR_SOCK (pid $CTRD_PID)"
}
stop_containerd() {
  [[ -n $CTRD_PID ]] || return 0
  forget_pid "$CTRD_PID"
  CTRD_PID=""
  # No container ran, so nothing is mounted under its root.
  rm -rf "$WORK/containerd"
}

BERTHS=(
  "berth|BERTH_AUTH__MODE=none"
  "berth-nosendfile|BERTH_AUTH__MODE=none BERTH_SERVER__SENDFILE=false"
)
run_combination() { # LINK TLS
  local link=$1 tls=$2 combo=$1-$2
  local shown=$link
  [[ $link == loopback && -n $VETH_NOTE && $WANT_VETH -eq 1 ]] && shown="loopback (veth unavailable)"
  log "=== $combo: $shown, $tls"
  echo "$combo" >>"$RES/combinations.txt"
  use_link "$link" "$tls"
  local d=$WORK/$combo
  mkdir -p "$d/beside"
  chmod 755 "$d" "$d/beside"
  echo '{}' >"$d/beside/small.json" # what start_nginx waits for
  start_nginx "$d/beside" "$d/nginx"
  local file_url=$SRV_SCHEME://$SRV_HOST:$NG_PORT ng_pid=$NG_PID
  start_distribution "$d/distribution"
  local ref_url=$REF_URL ref_pid=$REF_PID
  # ctr fetch: containerd on the client's side (ctr has --tlscacert, so over TLS too).
  local ctr_args=()
  start_containerd
  ctr_args=(--scenario "ctr-fetch-$CTR_SIZE" --ctr-address "$CTR_SOCK")
  local b name envs
  for b in "${BERTHS[@]}"; do
    name=${b%%|*}
    read -r -a envs <<<"${b#*|}"
    start_berth "$combo-$name" "$d/$name" "${envs[@]}"
    local scen=(--scenario "pull-$BIG" --scenario "pull-$BIG-cold")
    [[ $tls == plain ]] && scen+=(--scenario "pull-$BIG-splice")
    [[ $tls == tls ]] && scen+=(--scenario "push-mono-$BIG")
    bench "${combo}_$name" "$SRV_SCHEME://$SRV_ADDR" "$SRV_PID" "${scen[@]}" "${ctr_args[@]}" \
      --reference-url "$ref_url" --file-url "$file_url" --disk-dir "$d/beside" \
      --evict-dir "$d/$name/data" --evict-dir "$d/distribution/data" --evict-dir "$d/beside"
    forget_pid "$SRV_PID"
    rm -rf "${d:?}/$name"
    sync
  done
  # Pushes over HTTPS on the reference too (Berth's are in its runs above).
  [[ $tls == tls ]] && bench "${combo}_distribution" "$ref_url" "$ref_pid" --scenario "push-mono-$BIG" --disk-dir "$d/beside"
  stop_containerd
  forget_pid "$ref_pid"
  forget_pid "$ng_pid"
  rm -rf "$d"
  sync
}

for link in ${LINKS//,/ }; do
  for tls in ${TLS_MODES//,/ }; do
    run_combination "$link" "$tls"
  done
done

# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------
MACHINE_DESC="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
BERTH_DESC="$("$BERTH" --version 2>/dev/null | head -n1), $BERTH"
if [[ -z $BERTH_BIN ]]; then
  BERTH_DESC="$BERTH_DESC, built from commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && BERTH_DESC="$BERTH_DESC + uncommitted changes"
fi
REPORT=$OUT/bench-pulls-$STAMP.md
# The results are kept before the report is made: a report that fails loses no run.
mkdir -p "$OUT/pulls-$STAMP"
cp "$RES"/* "$OUT/pulls-$STAMP/"
python3 "$ROOT/scripts/bench_pulls_report.py" "$RES" "$REPORT" "$MACHINE_DESC" "$QUICK" "$BERTH_DESC" \
  "$(docker-registry --version 2>/dev/null | awk '{print $3}')"
log "report: $REPORT"
log "done in $(($(date +%s) - START_EPOCH)) s"
