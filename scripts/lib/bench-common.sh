# shellcheck shell=bash
# What scripts/bench.sh and scripts/bench-pulls.sh share (sourced): logging, stopping what
# they started, prerequisites via apt, and starting nginx, the reference registry and Berth.
#
# The caller sets WORK (its temp dir), PIDS (an array: the processes it started, stopped on
# exit) and, before start_berth, BERTH. The servers listen on 127.0.0.1 over plain HTTP
# unless the caller sets, before starting one:
#   SRV_HOST     the address servers bind to (default 127.0.0.1)
#   SRV_EXEC     an array: the prefix that runs a server (e.g. ip netns exec NS)
#   SRV_SCHEME   http or https (https: TLS_CERT and TLS_KEY, PEM, for every server)
#   CURL         an array: how wait_http reaches a server (default: curl; e.g. with
#                ip netns exec and --cacert)

START_EPOCH=${START_EPOCH:-$(date +%s)}
SRV_HOST=${SRV_HOST:-127.0.0.1}
SRV_SCHEME=${SRV_SCHEME:-http}
[[ -v SRV_EXEC ]] || SRV_EXEC=()
[[ -v CURL ]] || CURL=(curl)
TLS_CERT=${TLS_CERT:-}
TLS_KEY=${TLS_KEY:-}

log() { printf '[%s +%4ss] %s\n' "$(date -u +%H:%M:%S)" "$(($(date +%s) - START_EPOCH))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stop_pid() { # PID [TENTHS]: TERM, wait up to TENTHS/10 s (default 15 s), KILL
  local pid=$1 n=${2:-150}
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && [[ $n -gt 0 ]]; do sleep 0.1; n=$((n - 1)); done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
forget_pid() { # PID: stop it and drop it from PIDS
  stop_pid "$1"
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
free_port() { # a port free on SRV_HOST (in SRV_EXEC's network namespace)
  "${SRV_EXEC[@]}" python3 -c 'import socket, sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$SRV_HOST"
}
wait_http() { # URL PID
  local _
  for _ in $(seq 1 200); do
    "${CURL[@]}" -s -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# apt_install PKG...: installs them (Debian 12), keeping maintainer scripts from starting
# services (nginx, docker-registry); its output goes to $WORK/apt.log.
apt_install() {
  [[ $# -eq 0 ]] && return
  [[ ${BERTH_SKIP_INSTALL:-0} == 1 ]] && die "missing $* and BERTH_SKIP_INSTALL=1"
  log "apt: installing $*"
  local sudo=()
  [[ $(id -u) -ne 0 ]] && sudo=(sudo -n)
  local added_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  local rc=0
  { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Lock::Timeout=300 "$@"; } </dev/null >"$WORK/apt.log" 2>&1 || rc=$?
  [[ $added_policy -eq 1 ]] && "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
  [[ $rc -eq 0 ]] || { tail -n 20 "$WORK/apt.log" >&2; die "apt-get failed"; }
}

# ---------------------------------------------------------------------------
# nginx (sendfile on) serving a directory: the machine's pull ceiling.
# ---------------------------------------------------------------------------
start_nginx() { # ROOT DIR: nginx serving ROOT, its files in DIR; sets NG_PORT and NG_PID
  local root=$1 ng=$2 ssl="" tls_conf=""
  NG_PORT=$(free_port)
  mkdir -p "$ng/logs" "$ng/tmp"
  if [[ $SRV_SCHEME == https ]]; then
    ssl=" ssl"
    tls_conf="ssl_certificate $TLS_CERT; ssl_certificate_key $TLS_KEY;"
  fi
  cat >"$ng/nginx.conf" <<EOF
worker_processes auto;
pid $ng/nginx.pid;
error_log $ng/logs/error.log warn;
events { worker_connections 4096; }
http {
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  access_log off;
  client_body_temp_path $ng/tmp/body;
  proxy_temp_path $ng/tmp/proxy;
  fastcgi_temp_path $ng/tmp/fastcgi;
  uwsgi_temp_path $ng/tmp/uwsgi;
  scgi_temp_path $ng/tmp/scgi;
  types { application/octet-stream bin; application/json json; }
  server {
    listen $SRV_HOST:$NG_PORT$ssl;
    $tls_conf
    root $root;
  }
}
EOF
  "${SRV_EXEC[@]}" nginx -c "$ng/nginx.conf" -p "$ng" -g 'daemon off;' >"$ng/logs/stdout" 2>&1 &
  NG_PID=$!
  PIDS+=("$NG_PID")
  wait_http "$SRV_SCHEME://$SRV_HOST:$NG_PORT/small.json" "$NG_PID" || { cat "$ng/logs/error.log" >&2; die "nginx did not start"; }
}

# ---------------------------------------------------------------------------
# The reference: distribution 2.8 (Debian's docker-registry), delete enabled.
# ---------------------------------------------------------------------------
start_distribution() { # DIR: a fresh one with its root in DIR/data; sets REF_URL and REF_PID
  local d=$1 port tls_conf=""
  port=$(free_port)
  mkdir -p "$d"
  [[ $SRV_SCHEME == https ]] && tls_conf="
  tls:
    certificate: $TLS_CERT
    key: $TLS_KEY"
  cat >"$d/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $d/data
  delete:
    enabled: true
http:
  addr: $SRV_HOST:$port
  secret: berth-bench-secret$tls_conf
EOF
  # distribution reads every REGISTRY_* variable as a config override: start it without.
  local reg_vars
  mapfile -t reg_vars < <(compgen -e | grep '^REGISTRY_' || true)
  "${SRV_EXEC[@]}" env "${reg_vars[@]/#/--unset=}" docker-registry serve "$d/config.yml" >"$d/log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_http "$SRV_SCHEME://$SRV_HOST:$port/v2/" "$pid" || { cat "$d/log" >&2; die "docker-registry did not start"; }
  log "docker-registry $(docker-registry --version | awk '{print $3}') on $SRV_SCHEME://$SRV_HOST:$port (pid $pid)"
  # shellcheck disable=SC2034 # (the callers read them)
  REF_URL=$SRV_SCHEME://$SRV_HOST:$port REF_PID=$pid
}

# ---------------------------------------------------------------------------
# Berth.
# ---------------------------------------------------------------------------
start_berth() { # NAME DIR [BERTH_*=...]: a fresh server; sets SRV_ADDR and SRV_PID
  local name=$1 d=$2
  shift 2
  mkdir -p "$d/data"
  # The log exists before the server opens it: the loop below reads it straight away, and
  # under `set -e -o pipefail` a sed that cannot open it ended the whole run.
  : >"$d/log"
  # Only this target's BERTH_* settings (the server refuses unknown keys).
  local unset_vars tls_env=()
  mapfile -t unset_vars < <(compgen -e | grep '^BERTH_' || true)
  [[ $SRV_SCHEME == https ]] && tls_env=("BERTH_TLS__CERT=$TLS_CERT" "BERTH_TLS__KEY=$TLS_KEY")
  # Access logs off, as for the reference (unless SRV_LOG says otherwise); the "listening"
  # line stays.
  "${SRV_EXEC[@]}" env "${unset_vars[@]/#/--unset=}" RUST_LOG="${SRV_LOG:-warn,berth::server=info}" "${tls_env[@]}" "$@" \
    "$BERTH" serve --listen "$SRV_HOST:0" --data-dir "$d/data" >"$d/log" 2>&1 &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
  SRV_ADDR=""
  local _
  for _ in $(seq 1 300); do
    SRV_ADDR=$(sed -n 's/.*listening.*addr=\([^ ]*\).*/\1/p' "$d/log" | head -n1) || SRV_ADDR=""
    [[ -n $SRV_ADDR ]] && break
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $SRV_ADDR ]] || { cat "$d/log" >&2; die "$name did not start"; }
  # Any answer will do (401 in builtin mode).
  wait_http "$SRV_SCHEME://$SRV_ADDR/v2/" "$SRV_PID" || die "$name does not answer on $SRV_ADDR"
  log "$name on $SRV_SCHEME://$SRV_ADDR (pid $SRV_PID)"
}
