#!/usr/bin/env bash
# shellcheck disable=SC2015  # `[[ cond ]] && ok ... || bad ...`: ok never fails
# Runs the verified client recipes of docs/testing-clients.md against a registry:
#   a. buildah build from scratch -> podman push -> rmi -> podman pull, same digest
#   b. skopeo: containers-storage -> oci: layout -> push -> copy back -> compare,
#      list-tags, inspect --raw, delete by digest
#   c. oras (Python): tests/clients/oras_referrers.py (the referrers step fails on
#      distribution 2.8, which has no referrers API)
#   d. containerd: ctr images pull --plain-http by tag
#
# usage: tests/clients/client_recipes.sh [--registry HOST:PORT] [--creds USER:PASS] [--skip a,b,c,d]
# Without --registry it starts Debian's docker-registry (distribution 2.8) itself
# on a free 127.0.0.1 port. Root, vfs storage, no Docker engine. Everything it
# creates lives in one temp dir, removed on exit; the processes it starts are
# stopped by PID.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REGISTRY=""
CREDS=""
SKIP=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --registry) REGISTRY=$2; shift 2 ;;
    --creds) CREDS=$2; shift 2 ;;
    --skip) SKIP=$2; shift 2 ;;
    *) echo "usage: $0 [--registry HOST:PORT] [--creds USER:PASS] [--skip a,b,c,d]" >&2; exit 2 ;;
  esac
done
PYTHON=${BERTH_TEST_PYTHON:-python3}

T0=$(date +%s%N)
log() { printf '[%6.2fs] %s\n' "$(echo "($(date +%s%N) - $T0) / 1000000000" | bc -l)" "$*"; }
PASSED=0
FAILED=0
ok() { log "  ok: $*"; PASSED=$((PASSED + 1)); }
bad() { log "  FAIL: $*"; FAILED=$((FAILED + 1)); }
skip() { [[ ",$SKIP," == *",$1,"* ]]; }

W=$(mktemp -d /tmp/berth-recipes.XXXXXX)
REG_PID=""
CTRD_PID=""
stop_pid() { # PID [seconds]
  local pid=$1 n=$((${2:-10} * 10))
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && [[ $n -gt 0 ]]; do sleep 0.1; n=$((n - 1)); done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  stop_pid "$CTRD_PID" 10
  stop_pid "$REG_PID" 10
  # containerd's overlayfs snapshotter leaves no mounts without running
  # containers, but be safe before rm -rf.
  grep -o " ${W}[^ ]*" /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  chmod -R u+w "$W" 2>/dev/null || true
  rm -rf "$W"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL
  local _
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  return 1
}

if [[ -z $REGISTRY ]]; then
  PORT=$(free_port)
  REGISTRY=127.0.0.1:$PORT
  mkdir -p "$W/registry"
  cat >"$W/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
  secret: berth-test-secret
EOF
  # distribution treats every REGISTRY_* variable as a config override (and
  # dies on REGISTRY_AUTH_FILE, which podman/skopeo use): start it without them.
  mapfile -t reg_vars < <(compgen -e | grep '^REGISTRY_' || true)
  env "${reg_vars[@]/#/--unset=}" docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 &
  REG_PID=$!
  wait_http "http://$REGISTRY/v2/" || { cat "$W/registry/log"; echo "registry did not start" >&2; exit 1; }
  log "started docker-registry $(docker-registry --version | awk '{print $3}') on $REGISTRY (pid $REG_PID)"
fi

# Private containers state: storage, libpod tmp, auth file, registries.conf.
C=$W/containers
mkdir -p "$C"
cat >"$C/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$C/storage"
runroot = "$C/runroot"
EOF
cat >"$C/containers.conf" <<EOF
[engine]
tmp_dir = "$C/libpod-tmp"
image_copy_tmp_dir = "$C/tmp"
lock_type = "file"
events_logger = "none"
cgroup_manager = "cgroupfs"
[network]
network_config_dir = "$C/networks"
EOF
printf 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n' >"$C/registries.conf"
mkdir -p "$C/tmp"
# buildah/podman fail ("checking authfile: stat ...") if REGISTRY_AUTH_FILE names a missing file.
echo '{"auths":{}}' >"$C/auth.json"
export STORAGE_DRIVER=vfs CONTAINERS_STORAGE_CONF=$C/storage.conf CONTAINERS_CONF=$C/containers.conf
export CONTAINERS_REGISTRIES_CONF=$C/registries.conf REGISTRY_AUTH_FILE=$C/auth.json

CREDS_ARGS=()
DEST_CREDS=()
SRC_CREDS=()
CTR_USER=()
ORAS_USER=()
if [[ -n $CREDS ]]; then
  CREDS_ARGS=(--creds "$CREDS")
  DEST_CREDS=(--dest-creds "$CREDS")
  SRC_CREDS=(--src-creds "$CREDS")
  CTR_USER=(--user "$CREDS")
  ORAS_USER=(--user "$CREDS")
fi
TAG=t$RANDOM
ID=$(date +%s%N)

# --- a. buildah + podman ------------------------------------------------------
if ! skip a; then
  log "a. buildah build from scratch, podman push/rmi/pull ($REGISTRY/project/podman:$TAG)"
  mkdir -p "$W/ctx"
  echo "hello from berth $ID" >"$W/ctx/hello.txt"
  ctr=$(buildah from scratch)
  buildah copy -q "$ctr" "$W/ctx/hello.txt" /hello.txt >/dev/null
  buildah config --cmd '["/hello.txt"]' --label "berth.test=$ID" "$ctr"
  image_id=$(buildah commit -q --format oci "$ctr" "localhost/berth-recipe:$TAG")
  buildah rm "$ctr" >/dev/null
  ok "built image $image_id"
  REF=$REGISTRY/project/podman:$TAG
  if podman push -q --tls-verify=false "${CREDS_ARGS[@]}" --digestfile "$W/podman.digest" \
    "localhost/berth-recipe:$TAG" "$REF"; then
    ok "podman push -> $(cat "$W/podman.digest")"
  else
    bad "podman push"
  fi
  podman rmi "localhost/berth-recipe:$TAG" >/dev/null
  [[ -z $(podman images -q) ]] && ok "local storage empty after rmi" || bad "images left after rmi"
  if podman pull -q --tls-verify=false "${CREDS_ARGS[@]}" "$REF" >/dev/null; then
    read -r pulled_id pulled_digest < <(podman image inspect --format '{{.Id}} {{.Digest}}' "$REF")
    [[ $pulled_id == "$image_id" ]] && ok "pulled image id == built image id" || bad "image id $pulled_id != $image_id"
    [[ $pulled_digest == "$(cat "$W/podman.digest")" ]] && ok "pulled manifest digest == pushed digest" ||
      bad "digest $pulled_digest != $(cat "$W/podman.digest")"
  else
    bad "podman pull"
  fi
  podman rmi -a -f >/dev/null 2>&1 || true
fi

# --- b. skopeo ----------------------------------------------------------------
if ! skip b; then
  log "b. skopeo: oci layout -> $REGISTRY/project/skopeo:$TAG -> oci layout"
  ctr=$(buildah from scratch)
  echo "skopeo $ID" >"$W/skopeo.txt"
  buildah copy -q "$ctr" "$W/skopeo.txt" /skopeo.txt >/dev/null
  buildah config --cmd '["/skopeo.txt"]' "$ctr"
  buildah commit -q --format oci "$ctr" "localhost/berth-skopeo:$TAG" >/dev/null
  buildah rm "$ctr" >/dev/null
  skopeo copy -q "containers-storage:localhost/berth-skopeo:$TAG" "oci:$W/layout1:$TAG"
  L1=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$W/layout1/index.json")
  ok "oci layout 1 manifest $L1"
  REF=docker://$REGISTRY/project/skopeo
  if skopeo copy -q --dest-tls-verify=false "${DEST_CREDS[@]}" --digestfile "$W/skopeo.digest" \
    "oci:$W/layout1:$TAG" "$REF:$TAG"; then
    [[ $(cat "$W/skopeo.digest") == "$L1" ]] && ok "pushed digest == layout digest" || bad "pushed $(cat "$W/skopeo.digest") != $L1"
  else
    bad "skopeo copy oci: -> docker://"
  fi
  skopeo copy -q --src-tls-verify=false "${SRC_CREDS[@]}" "$REF:$TAG" "oci:$W/layout2:$TAG" || bad "skopeo copy back"
  L2=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$W/layout2/index.json" 2>/dev/null || echo none)
  [[ $L2 == "$L1" ]] && ok "copied-back layout digest == original" || bad "layout2 $L2 != $L1"
  diff -r "$W/layout1/blobs" "$W/layout2/blobs" >/dev/null && ok "blobs identical" || bad "blobs differ"
  raw_digest=sha256:$(skopeo inspect --raw --tls-verify=false "${CREDS_ARGS[@]}" "$REF:$TAG" | sha256sum | cut -d' ' -f1)
  [[ $raw_digest == "$L1" ]] && ok "inspect --raw bytes hash to $L1" || bad "inspect --raw hash $raw_digest"
  tags=$(skopeo list-tags --tls-verify=false "${CREDS_ARGS[@]}" "$REF" | "$PYTHON" -c 'import json,sys; print(" ".join(json.load(sys.stdin)["Tags"] or []))')
  [[ " $tags " == *" $TAG "* ]] && ok "list-tags shows $TAG" || bad "list-tags: '$tags'"
  if skopeo delete --tls-verify=false "${CREDS_ARGS[@]}" "$REF@$L1"; then
    ok "delete by digest"
    if skopeo inspect --raw --tls-verify=false "${CREDS_ARGS[@]}" "$REF@$L1" >/dev/null 2>&1; then
      bad "manifest still there after delete"
    else
      ok "manifest gone after delete"
    fi
  else
    bad "skopeo delete (registry needs storage.delete.enabled)"
  fi
  podman rmi -a -f >/dev/null 2>&1 || true
fi

# --- c. oras ------------------------------------------------------------------
if ! skip c; then
  log "c. oras (python): tests/clients/oras_referrers.py $REGISTRY project/oras"
  if "$PYTHON" "$HERE/oras_referrers.py" "$REGISTRY" project/oras "${ORAS_USER[@]}" >"$W/oras.log" 2>&1; then
    ok "oras pushes and referrers API"
  else
    sed 's/^/      /' "$W/oras.log" | grep -E 'FAIL|pushes done' || true
    if grep -q '^pushes done' "$W/oras.log" && grep -q 'referrers API: GET .* HTTP 404' "$W/oras.log"; then
      if [[ -n $REG_PID ]]; then
        ok "oras pushes (referrers API absent: expected on distribution 2.8)"
      else
        bad "referrers API missing"
      fi
    else
      bad "oras script (see output above)"
    fi
  fi
fi

# --- d. containerd ------------------------------------------------------------
if ! skip d; then
  log "d. containerd: ctr images pull --plain-http"
  if skip a; then
    # needs an image in the registry: push the skopeo layout if a was skipped
    skopeo copy -q --dest-tls-verify=false "${DEST_CREDS[@]}" "oci:$W/layout1:$TAG" "docker://$REGISTRY/project/podman:$TAG"
  fi
  D=$W/containerd
  mkdir -p "$D"
  sed "s|@DIR@|$D|g" "$HERE/../../scripts/lib/containerd.toml" >"$D/config.toml"
  containerd --config "$D/config.toml" --root "$D/root" --state "$D/state" --address "$D/c.sock" >"$D/log" 2>&1 &
  CTRD_PID=$!
  for _ in $(seq 1 100); do ctr --address "$D/c.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr --address "$D/c.sock" version >/dev/null 2>&1 && ok "containerd up (pid $CTRD_PID)" || bad "containerd did not start"
  REF=$REGISTRY/project/podman:$TAG
  if timeout 120 ctr --address "$D/c.sock" -n berth images pull --plain-http "${CTR_USER[@]}" "$REF" >"$D/pull.log" 2>&1; then
    got=$(ctr --address "$D/c.sock" -n berth images ls | awk -v r="$REF" '$1 == r {print $3}')
    want=$(skopeo inspect --raw --tls-verify=false "${CREDS_ARGS[@]}" "docker://$REF" | sha256sum | cut -d' ' -f1)
    [[ $got == "sha256:$want" ]] && ok "ctr pulled $REF as $got" || bad "ctr digest $got != sha256:$want"
  else
    cat "$D/pull.log"
    bad "ctr pull"
  fi
  stop_pid "$CTRD_PID" 10
  CTRD_PID=""
fi

echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
