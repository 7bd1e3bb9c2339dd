#!/usr/bin/env bash
# Bounded loopback load test of central-hub (release build).
#
# Measures requests/s of GET /health and of an authorized, proxied
# GET /api/whatsapp/status (against examples/fake-session-manager), and the
# hub's resident memory (VmRSS) sampled every 0.2 s during each run.
#
# Needs: wrk, python3 (to sign the HS256 token). Env knobs:
#   DURATION (default 8s, at most ~10s), THREADS (2), CONNECTIONS (64)
#   CARGO_TARGET_DIR (default /work/target-hub)
set -euo pipefail

DURATION=${DURATION:-8s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-hub}

command -v wrk >/dev/null || { echo "load.sh: wrk not found; apt-get install -y wrk" >&2; exit 1; }

(cd "$ROOT" && cargo build --release -q -p central-hub --bin central-hub --example fake-session-manager)
HUB_BIN="$CARGO_TARGET_DIR/release/central-hub"
SM_BIN="$CARGO_TARGET_DIR/release/examples/fake-session-manager"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

SM_PORT=$(free_port)
HUB_PORT=$(free_port)
SECRET=bench-secret-at-least-32-bytes-long  # the hub refuses shorter ones

"$SM_BIN" "$SM_PORT" >/dev/null 2>&1 &
PIDS+=($!)
(cd "$WORK" && PORT=$HUB_PORT SESSION_MANAGER_BASE_URL=http://127.0.0.1:$SM_PORT JWT_SECRET=$SECRET \
    exec "$HUB_BIN" >"$WORK/hub.log" 2>&1) &
HUB_PID=$!
PIDS+=($HUB_PID)

for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$HUB_PORT/health" >/dev/null 2>&1 && break
    sleep 0.05
done
curl -sf "http://127.0.0.1:$HUB_PORT/health" >/dev/null || { echo "hub did not start"; cat "$WORK/hub.log"; exit 1; }

token() {
    python3 - "$SECRET" "$1" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret, claims = sys.argv[1].encode(), json.loads(sys.argv[2])
claims["exp"] = int(time.time()) + 3600
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps(claims).encode())
sig = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
}
ADMIN=$(token '{"sub":"bench","role":"admin"}')
CUSTOMER=$(token '{"sub":"c1","cliente_id":1}')
curl -sf -X POST -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:$HUB_PORT/api/admin/whatsapp-qr/1/enable" >/dev/null
test "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $CUSTOMER" "http://127.0.0.1:$HUB_PORT/api/whatsapp/status")" = 200

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$HUB_PID/status"; }

run() {
    local name=$1; shift
    local peak=0 r
    "$@" >"$WORK/wrk.out" 2>&1 &
    local wrk_pid=$!
    while kill -0 "$wrk_pid" 2>/dev/null; do
        r=$(rss_kb); [ "${r:-0}" -gt "$peak" ] && peak=$r
        sleep 0.2
    done
    wait "$wrk_pid"
    local rps lat non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
    lat=$(awk '/Latency/ {print $2; exit}' "$WORK/wrk.out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.out")
    printf '%-28s %10s req/s   avg latency %-8s  non-2xx %-4s  peak RSS %d KiB\n' \
        "$name" "$rps" "$lat" "${non2xx:-0}" "$peak"
}

echo "central-hub load test: wrk -t$THREADS -c$CONNECTIONS -d$DURATION on $(nproc) cores"
echo "idle RSS: $(rss_kb) KiB"
run "GET /health" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$HUB_PORT/health"
run "GET /api/whatsapp/status" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
    -H "Authorization: Bearer $CUSTOMER" "http://127.0.0.1:$HUB_PORT/api/whatsapp/status"
echo "RSS after load: $(rss_kb) KiB"
