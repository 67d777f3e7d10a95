#!/usr/bin/env bash
# How long other requests wait while blobs are pulled from disk rather than from the page
# cache (docs/performance.md, fix 12).
#
#   scripts/cold-pull-stall.sh [BERTH_BINARY]     (default: target/release/berth)
#
# Starts Berth on a fresh SQLite data directory on loopback, pushes a 1 GiB blob, drops it
# from the page cache, then starts two concurrent pulls of it while one client sends
# `GET /v2/` every 2 ms for 3 s, and prints that client's p50/p99/max latency and the pull
# rates. BERTH_SERVER__SENDFILE=false in the environment measures the buffered path instead.
# Needs curl and python3. Bounded: one 1 GiB push, two pulls, 3 s of probe requests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BERTH=${1:-target/release/berth}
[[ -x $BERTH ]] || { echo "no $BERTH: cargo build --release first" >&2; exit 2; }
WORK=$(mktemp -d /tmp/berth-stall.XXXXXX)
PID=""
cleanup() {
  [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$BERTH" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/log" 2>&1 &
PID=$!
URL=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -fs -o /dev/null "$URL/v2/" && break; sleep 0.1; done

head -c $((1 << 30)) /dev/urandom >"$WORK/blob"
DIGEST=sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)
LOC=$(curl -fs -D - -o /dev/null -X POST "$URL/v2/stall/blob/blobs/uploads/" | tr -d '\r' |
  sed -n 's/^[Ll]ocation: //p')
[[ $LOC == http* ]] || LOC=$URL$LOC
curl -fs -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$WORK/blob" "$LOC?digest=$DIGEST"
rm -f "$WORK/blob"

FILE=$(find "$WORK/data" -path '*blobs/sha256/*' -type f -name "${DIGEST#sha256:}")
python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$FILE"

python3 - "$PORT" <<'PY' &
import http.client, sys, time
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
lat, end = [], time.time() + 3.0
while time.time() < end:
    t = time.perf_counter()
    c.request("GET", "/v2/")
    c.getresponse().read()
    lat.append((time.perf_counter() - t) * 1000)
    time.sleep(0.002)
lat.sort()
print(f"GET /v2/ beside two cold 1 GiB pulls: n={len(lat)} p50={lat[len(lat)//2]:.2f} "
      f"p99={lat[int(len(lat)*0.99)]:.2f} max={lat[-1]:.2f} ms")
PY
PROBE=$!
sleep 0.2
curl -fs -o /dev/null -w "pull %{speed_download} B/s\n" "$URL/v2/stall/blob/blobs/$DIGEST" & P1=$!
curl -fs -o /dev/null -w "pull %{speed_download} B/s\n" "$URL/v2/stall/blob/blobs/$DIGEST" & P2=$!
wait "$PROBE" "$P1" "$P2"
