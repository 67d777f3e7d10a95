#!/usr/bin/env bash
# Proves the container image (Dockerfile) end to end, with no image pulled from anywhere:
#
#   scripts/container-image.sh               make the bases, build, run, push, pull, report
#   scripts/container-image.sh --bases-only  make and check the two base images, then stop
#   scripts/container-image.sh --fresh       debootstrap the bases again (drops the caches)
#
# Opt-in, not part of scripts/test.sh: a first run takes minutes (see README.md, "Container
# image", for the times measured). Needs root (debootstrap, podman, buildah), Debian's
# package mirror (the one apt is configured with) and the Rust crate registry.
#
# 1. Installs debootstrap, podman, buildah, skopeo and curl with apt-get when missing.
# 2. Debootstraps bookworm (minbase) once into target/container/rootfs-runtime and imports
#    it as the local image `debian:bookworm-slim`, the Dockerfile's runtime base. It has no
#    ca-certificates: the Dockerfile's apt-get step installs them, as it would on Docker
#    Hub's image (the build container gets the host's network for that; see below).
# 3. Debootstraps bookworm again with gcc, libc6-dev, pkg-config and ca-certificates into
#    target/container/rootfs-build, adds the host's Rust toolchain ($BERTH_IMAGE_TOOLCHAIN,
#    default `stable`, from $RUSTUP_HOME/toolchains) at /usr/local/rustup with cargo and
#    rustc in /usr/local/cargo/bin, as the official Rust image lays them out, and imports
#    it as `rust:1-bookworm`, the build stage's base; checks `rustc --version` inside.
# 4. `buildah build` of the Dockerfile as berth:test, with the host's crate registry
#    ($CARGO_HOME/registry) mounted at the image's /usr/local/cargo/registry (overlay: the
#    host's copy is never written) and target/container/cargo-target at /src/target, so a
#    second run compiles only what changed. --network host: the build's apt-get and cargo
#    reach the mirror and the crate registry the way the host does.
# 5. Runs berth:test with podman (port 5000 published on 127.0.0.1 at a free port, a named
#    volume at /var/lib/berth), waits for /healthz and /readyz, reads the generated admin
#    password from the log, pushes a small image built from scratch with skopeo, pulls it
#    back and compares digests and bytes, checks the server runs as `berth` (not root), and
#    that `podman stop` (SIGTERM) stops it within the shutdown grace period.
# 6. Prints how long each step took.
#
# Everything podman and buildah make lives in a private storage under a temp dir (nothing in
# /var/lib/containers), removed on every exit with the containers, volume and images in it.
# Kept between runs: target/container/rootfs-* and target/container/cargo-target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUITE=bookworm
RUNTIME_BASE=debian:bookworm-slim
BUILD_BASE=rust:1-bookworm
IMAGE=berth:test
BUILD_PACKAGES=gcc,libc6-dev,pkg-config,ca-certificates
TOOLCHAIN=${BERTH_IMAGE_TOOLCHAIN:-stable}
RUSTUP_DIR=${RUSTUP_HOME:-$HOME/.rustup}
CARGO_DIR=${CARGO_HOME:-$HOME/.cargo}
CACHE=$PWD/target/container
# Seconds `podman stop` waits before SIGKILL; above the image's shutdown_grace_seconds (30).
STOP_TIMEOUT=40

BASES_ONLY=0
FRESH=0
for arg in "$@"; do
  case $arg in
    --bases-only) BASES_ONLY=1 ;;
    --fresh) FRESH=1 ;;
    -h | --help)
      sed -n '2,36p' "$0"
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (see --help)" >&2
      exit 2
      ;;
  esac
done

log() { printf '[container-image] %s\n' "$*" >&2; }
die() {
  log "FAILED: $*"
  exit 1
}

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, podman and buildah as root)"

WORK=""
CONTAINER=""
VOLUME=""
cleanup() {
  local rc=$?
  set +e
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ -n $CONTAINER ]]; then
      if [[ $rc -ne 0 ]]; then
        log "last lines of the server's log:"
        podman logs --tail 30 "$CONTAINER" 2>&1 | sed 's/^/    /' >&2
      fi
      podman rm -f -t 0 "$CONTAINER" >/dev/null 2>&1
    fi
    [[ -n $VOLUME ]] && podman volume rm -f "$VOLUME" >/dev/null 2>&1
    buildah rm --all >/dev/null 2>&1
    # Every image in this storage was made by this run.
    podman rmi --all --force >/dev/null 2>&1
    local m
    # Overlay mounts left behind by an interrupted buildah or podman.
    while read -r m; do
      umount -l "$m" 2>/dev/null
    done < <(findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r)
    chmod -R u+w "$WORK" 2>/dev/null
    rm -rf "$WORK" || log "WARNING: could not remove $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. tools --------------------------------------------------------------------------
missing=()
for tool in debootstrap podman buildah skopeo curl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ ! -f /etc/containers/policy.json ]]; then
  # containers/image refuses to copy without a policy (containers-common ships this one).
  mkdir -p /etc/containers
  printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >/etc/containers/policy.json
fi

# The mirror apt uses here: the first bookworm source of main in /etc/apt (deb822 .sources
# or one-line .list), unless BERTH_IMAGE_MIRROR names one.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v suite="$SUITE" '
      function flush() {
        if (uris != "" && (" " suites " ") ~ (" " suite " ") && (" " comps " ") ~ / main /) {
          split(uris, u, " "); print u[1]; found = 1; exit
        }
        uris = suites = comps = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0 }
      /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
      /^Components:/ { sub(/^Components:[ \t]*/, ""); comps = $0 }
      END { if (!found) flush() }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2 }'
  done
}
MIRROR=${BERTH_IMAGE_MIRROR:-$(apt_mirror | head -n1)}
[[ -n $MIRROR ]] || die "no $SUITE source in /etc/apt; set BERTH_IMAGE_MIRROR"

TOOLCHAIN_DIR=$(find "$RUSTUP_DIR/toolchains" -maxdepth 1 -name "$TOOLCHAIN-*" -type d 2>/dev/null | sort | head -n1)
[[ -n $TOOLCHAIN_DIR && -x $TOOLCHAIN_DIR/bin/cargo ]] ||
  die "no Rust toolchain $TOOLCHAIN under $RUSTUP_DIR/toolchains"
[[ -d $CARGO_DIR/registry ]] || die "no crate registry at $CARGO_DIR/registry"

# runc when installed: crun refuses to create containers on a host whose cgroup v1
# hierarchies sit beside a cgroup v2 one with controllers ("hybrid mode"), as here.
RUNTIME=crun
command -v runc >/dev/null 2>&1 && RUNTIME=runc
export BUILDAH_RUNTIME=$RUNTIME

# Private container storage and configuration, like scripts/test.sh's.
mkdir -p "$CACHE"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-image.XXXXXX")
mkdir -p "$WORK/containers/tmp"
cat >"$WORK/containers/storage.conf" <<EOF
[storage]
driver = "${BERTH_IMAGE_STORAGE_DRIVER:-overlay}"
graphroot = "$WORK/containers/storage"
runroot = "$WORK/containers/runroot"
EOF
# Containers get the host's open-file limit and at most 32768 processes: podman's defaults
# (2^20 files, 4194304 processes) are above what a root without CAP_SYS_RESOURCE, as here,
# may set, and runc then refuses to start the container.
NOFILE=$(ulimit -Hn)
[[ $NOFILE == unlimited ]] && NOFILE=1048576
NPROC=$(ulimit -Hu)
[[ $NPROC == unlimited || $NPROC -gt 32768 ]] && NPROC=32768
cat >"$WORK/containers/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$NOFILE:$NOFILE", "nproc=$NPROC:$NPROC"]
[engine]
tmp_dir = "$WORK/containers/libpod-tmp"
image_copy_tmp_dir = "$WORK/containers/tmp"
lock_type = "file"
events_logger = "none"
cgroup_manager = "cgroupfs"
runtime = "$RUNTIME"
volume_path = "$WORK/containers/volumes"
[network]
network_config_dir = "$WORK/containers/networks"
EOF
cat >"$WORK/containers/registries.conf" <<EOF
unqualified-search-registries = []
short-name-mode = "disabled"
EOF
export CONTAINERS_STORAGE_CONF=$WORK/containers/storage.conf
export CONTAINERS_CONF=$WORK/containers/containers.conf
export CONTAINERS_REGISTRIES_CONF=$WORK/containers/registries.conf
export REGISTRY_AUTH_FILE=$WORK/auth.json
echo "{}" >"$REGISTRY_AUTH_FILE"
export TMPDIR=$WORK/containers/tmp

declare -A TOOK
timed() {
  local name=$1 start=$SECONDS
  shift
  "$@"
  TOOK[$name]=$((SECONDS - start))
}

# --- 2, 3. the bases -----------------------------------------------------------------------
# Debootstraps DIR (minbase) with the comma-separated INCLUDE packages, once: the result is
# reused until --fresh. Built beside its final name and renamed when complete, so an
# interrupted run never leaves a half rootfs to reuse.
debootstrap_once() {
  local dir=$1 include=$2
  [[ $FRESH -eq 1 && -d $dir ]] && rm -rf "$dir"
  if [[ -d $dir ]]; then
    log "reusing $dir"
    return
  fi
  rm -rf "$dir.partial"
  log "debootstrap $SUITE (minbase${include:+, $include}) into $dir"
  debootstrap --variant=minbase ${include:+--include="$include"} "$SUITE" "$dir.partial" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 20 "$WORK/debootstrap.log" >&2
    rm -rf "$dir.partial"
    die "debootstrap $SUITE"
  }
  # The host's apt settings on how to reach the mirror go with it (e.g. a snapshot
  # mirror's Release files outlive their Valid-Until), so apt-get in a build works as here.
  apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' \
    >"$dir.partial/etc/apt/apt.conf.d/99host-mirror" || true
  rm -rf "$dir.partial"/var/cache/apt/archives/*.deb "$dir.partial"/var/lib/apt/lists/*
  mv "$dir.partial" "$dir"
}

make_rootfs() {
  debootstrap_once "$CACHE/rootfs-runtime" ""
  debootstrap_once "$CACHE/rootfs-build" "$BUILD_PACKAGES"
}

import_bases() {
  log "importing $RUNTIME_BASE"
  tar -C "$CACHE/rootfs-runtime" -c . |
    podman import --quiet --change 'CMD ["bash"]' - "$RUNTIME_BASE" >/dev/null

  log "importing $BUILD_BASE (with $(basename "$TOOLCHAIN_DIR") from $RUSTUP_DIR)"
  # One layer: the rootfs, the toolchain where rustup would put it, and cargo, rustc & co.
  # linked from CARGO_HOME/bin (rustup's proxies in the official image; no rustup here).
  local toolchain bin links=()
  toolchain=$(basename "$TOOLCHAIN_DIR")
  mkdir -p "$WORK/cargo-home/usr/local/cargo/bin"
  for bin in "$TOOLCHAIN_DIR"/bin/*; do
    ln -s "/usr/local/rustup/toolchains/$toolchain/bin/${bin##*/}" \
      "$WORK/cargo-home/usr/local/cargo/bin/${bin##*/}"
    links+=("./usr/local/cargo/bin/${bin##*/}")
  done
  # The toolchain's names are rewritten, not its symbolic links' targets (S); the paths
  # added last are only those the rootfs lacks (tar refuses duplicates).
  tar -c -C "$CACHE/rootfs-build" . \
    --transform "s,^$toolchain,./usr/local/rustup/toolchains/$toolchain,S" \
    -C "$(dirname "$TOOLCHAIN_DIR")" "$toolchain" \
    -C "$WORK/cargo-home" --no-recursion ./usr/local/cargo ./usr/local/cargo/bin "${links[@]}" |
    podman import --quiet \
      --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
      --change 'ENV CARGO_HOME=/usr/local/cargo' \
      --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' \
      - "$BUILD_BASE" >/dev/null
}

check_bases() {
  local v
  RUSTC_VERSION=$(podman run --rm --network none "$BUILD_BASE" rustc --version) ||
    die "rustc in $BUILD_BASE"
  log "$BUILD_BASE: $RUSTC_VERSION, $(podman run --rm --network none "$BUILD_BASE" cargo --version)"
  podman run --rm --network none "$BUILD_BASE" gcc --version >/dev/null || die "gcc in $BUILD_BASE"
  v=$(podman run --rm --network none "$RUNTIME_BASE" cat /etc/debian_version) || die "run $RUNTIME_BASE"
  log "$RUNTIME_BASE: Debian $v"
}

RUSTC_VERSION=""
timed debootstrap make_rootfs
timed import import_bases
check_bases
if [[ $BASES_ONLY -eq 1 ]]; then
  log "bases made and checked (debootstrap ${TOOK[debootstrap]} s, import ${TOOK[import]} s)"
  exit 0
fi

# --- 4. build ------------------------------------------------------------------------------
build_image() {
  mkdir -p "$CACHE/cargo-target"
  # The build takes about 5 GB: the build base and its container (2 GB), the release
  # target directory (2 GB), the runtime image.
  local free_gb
  free_gb=$(df --output=avail -BG "$CACHE" | tail -n1 | tr -dc 0-9)
  [[ $free_gb -ge ${BERTH_IMAGE_MIN_FREE_GB:-6} ]] ||
    die "only ${free_gb} GB free under $CACHE; the build needs about 5 (BERTH_IMAGE_MIN_FREE_GB)"
  # Two passes, because a --volume applies to every RUN of every stage and leaves its mount
  # point (an empty /src/target, /usr/local/cargo) in the runtime image: the build stage
  # alone with the caches mounted, then the whole Dockerfile without them, which takes the
  # build stage from the first pass's layers (--layers; volumes are not part of the key).
  log "buildah build --target build (the release build; a first run compiles every crate)"
  buildah build --pull=never --network host --layers --target build \
    --ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC" \
    --volume "$CARGO_DIR/registry:/usr/local/cargo/registry:O" \
    --volume "$CACHE/cargo-target:/src/target" \
    -f Dockerfile . >"$WORK/build-stage.log" 2>&1 || {
    tail -n 40 "$WORK/build-stage.log" >&2
    die "buildah build --target build"
  }
  log "buildah build -t $IMAGE"
  buildah build --pull=never --network host --layers \
    --ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC" \
    -t "$IMAGE" -f Dockerfile . >"$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log" >&2
    die "buildah build"
  }
  grep -q 'cargo build' "$WORK/build.log" && ! grep -A1 'cargo build' "$WORK/build.log" | grep -q 'Using cache' &&
    die "the second pass compiled again instead of reusing the first pass's build stage"
  # The runtime image holds the binary, not the build's mount points or sources.
  podman run --rm --network none --entrypoint sh "$IMAGE" -c \
    'test -x /usr/local/bin/berth && test ! -e /src && test ! -e /usr/local/cargo' ||
    die "$IMAGE holds build leftovers (/src or /usr/local/cargo) or no berth binary"
  log "built $IMAGE: $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"
}

timed build build_image

# --- 5. run, push, pull, stop -------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run_and_check() {
  local port url password="" user digest pulled n
  port=$(free_port)
  url=http://127.0.0.1:$port
  VOLUME=berth-image-test-$$
  podman volume create "$VOLUME" >/dev/null
  CONTAINER=berth-image-test-$$
  podman run -d --name "$CONTAINER" -p "127.0.0.1:$port:5000" -v "$VOLUME:/var/lib/berth" \
    "$IMAGE" >/dev/null
  log "started $CONTAINER on $url"

  for n in $(seq 120); do
    curl -fsS -o /dev/null "$url/healthz" 2>/dev/null && break
    [[ $(podman inspect --format '{{.State.Running}}' "$CONTAINER") == true ]] ||
      die "the container exited before answering /healthz"
    [[ $n -eq 120 ]] && die "no answer from /healthz within 60 s"
    sleep 0.5
  done
  curl -fsS -o /dev/null "$url/readyz" || die "/readyz is not ready"
  log "/healthz and /readyz answer 200"

  # First start on an empty database: `admin` gets a generated password, printed once.
  for n in $(seq 20); do
    password=$(podman logs "$CONTAINER" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' |
      sed -n 's/.*with the generated password \([^ ]*\) .*/\1/p' | head -n1)
    [[ -n $password ]] && break
    sleep 0.5
  done
  [[ -n $password ]] || die "no generated admin password in the log"
  log "the log shows the generated password of admin"

  user=$(podman exec "$CONTAINER" id -un)
  [[ $user == berth ]] || die "the server runs as $user, not berth"
  user=$(podman top "$CONTAINER" user comm | awk '$2 == "berth" { print $1 }')
  [[ $user == berth ]] || die "process berth runs as '$user', not berth"
  # docs/deploy/kubernetes.yaml runs the pod as uid 999 (runAsUser, fsGroup): the first
  # system user Debian's useradd makes on the slim image.
  user=$(podman exec "$CONTAINER" id -u)
  [[ $user == 999 ]] || die "berth has uid $user, not the 999 docs/deploy/kubernetes.yaml runs as"
  log "the server process runs as user berth (uid 999)"

  # A small image from scratch: one layer with a file, OCI format.
  printf 'pushed into Berth by %s at %s\n' "$0" "$(date -u +%FT%TZ)" >"$WORK/hello.txt"
  local ctr
  ctr=$(buildah from scratch)
  buildah copy "$ctr" "$WORK/hello.txt" /hello.txt >/dev/null
  buildah config --cmd '["/hello.txt"]' "$ctr"
  buildah commit --quiet --format oci "$ctr" localhost/small:1 >/dev/null
  buildah rm "$ctr" >/dev/null

  local target=127.0.0.1:$port/library/small:1
  skopeo login --tls-verify=false -u admin --password-stdin "127.0.0.1:$port" <<<"$password" >/dev/null
  skopeo copy --quiet --dest-tls-verify=false --digestfile "$WORK/pushed.digest" \
    containers-storage:localhost/small:1 "docker://$target"
  digest=$(cat "$WORK/pushed.digest")
  log "pushed $target ($digest)"

  skopeo copy --quiet --src-tls-verify=false --preserve-digests \
    "docker://$target" "oci:$WORK/pulled:1"
  pulled=$(skopeo inspect --raw "oci:$WORK/pulled:1" | sha256sum | cut -d' ' -f1)
  [[ sha256:$pulled == "$digest" ]] || die "pulled manifest sha256:$pulled, pushed $digest"
  [[ $(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$target") == "$digest" ]] ||
    die "the registry reports another digest for $target"
  # The pulled layer holds the file byte for byte.
  local layer
  layer=$(skopeo inspect --raw "oci:$WORK/pulled:1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"].split(":")[1])')
  mkdir -p "$WORK/layer"
  tar -C "$WORK/layer" -xf "$WORK/pulled/blobs/sha256/$layer"
  cmp -s "$WORK/hello.txt" "$WORK/layer/hello.txt" || die "the pulled layer's file differs"
  log "pulled it back: same manifest digest, same layer content"

  local started=$SECONDS code
  podman stop -t "$STOP_TIMEOUT" "$CONTAINER" >/dev/null
  STOP_SECONDS=$((SECONDS - started))
  code=$(podman inspect --format '{{.State.ExitCode}}' "$CONTAINER")
  STOP_CODE=$code
  [[ $code == 0 || $code == 143 ]] || die "stopped with exit code $code (SIGKILL after ${STOP_TIMEOUT} s is 137)"
  podman logs "$CONTAINER" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -q 'stopped' ||
    die "the log does not show a graceful stop"
  log "podman stop (SIGTERM): exit code $code after ${STOP_SECONDS} s, the log says stopped"
}
STOP_SECONDS=""
STOP_CODE=""
timed run run_and_check

# --- 6. summary --------------------------------------------------------------------------
printf '\ncontainer image proven: %s from %s + %s (%s)\n' "$IMAGE" "$RUNTIME_BASE" "$BUILD_BASE" \
  "$RUSTC_VERSION"
printf '  %-34s %5s s\n' \
  "debootstrap (0 when cached)" "${TOOK[debootstrap]}" \
  "base imports" "${TOOK[import]}" \
  "buildah build" "${TOOK[build]}" \
  "run + push + pull + stop" "${TOOK[run]}"
printf '  podman stop: exit code %s after %s s\n' "$STOP_CODE" "$STOP_SECONDS"
