#!/usr/bin/env bash
# Benchmark of attestgate-proxy against containerd directly and a plain
# socat byte relay, on a real node set up here (as root):
#   bash scripts/bench-proxy.sh [ROUNDS] [SECONDS_PER_CELL]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
ROUNDS="${1:-5}"; SECONDS_PER_CELL="${2:-2}"
command -v socat >/dev/null || { apt-get update -qq && apt-get install -y -qq socat >/dev/null; }
cargo build --release --locked --bins -q
BIN="$ROOT/target/release"
export AG_CRI_BIN="$BIN/agcri"
# shellcheck source=tests/support/env.sh
source tests/support/env.sh
DIR="$(mktemp -d /tmp/ag-bench.XXXXXX)"
cleanup() {
  [ -n "${PROXY_PID:-}" ] && kill -TERM "$PROXY_PID" 2>/dev/null || true
  [ -n "${RELAY_PID:-}" ] && kill -TERM "$RELAY_PID" 2>/dev/null || true
  sleep 0.5
  ag_down "$DIR" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
ag_up "$DIR"
set -a; source "$DIR/env"; set +a
APP_REPO="${AG_APP_IMAGE%:*}"

# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
bench_two_attestor_bundle "$BIN" "$DIR" "$APP_REPO" "$AG_APP_DIGEST"
B="$DIR/bundle"

ATTESTGATE_WORKER_THREADS="${ATTESTGATE_WORKER_THREADS:-}" "$BIN/attestgate-proxy" --config /dev/null --listen "$DIR/proxy.sock" --runtime-endpoint "$AG_CONTAINERD_SOCK" \
  --bundle "$B" --audit-log "$DIR/audit.jsonl" > "$DIR/proxy.log" 2>&1 &
PROXY_PID=$!
socat "UNIX-LISTEN:$DIR/relay.sock,fork" "UNIX-CONNECT:$AG_CONTAINERD_SOCK" &
RELAY_PID=$!
ag_wait_for_socket "$DIR/proxy.sock" 20 "$PROXY_PID"
ag_wait_for_socket "$DIR/relay.sock" 20 "$RELAY_PID"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(containerd --version | cut -d' ' -f3)"
"$BIN/cri-bench" --direct "$AG_CONTAINERD_SOCK" --relay "$DIR/relay.sock" --proxy "$DIR/proxy.sock" \
  --rounds "$ROUNDS" --seconds "$SECONDS_PER_CELL" --image "$AG_APP_IMAGE" --log-dir "$DIR/pod-logs" \
  --cgroup-parent "/attestgate/$AG_CGROUP_TAG/bench" --relay-pid "$RELAY_PID" --proxy-pid "$PROXY_PID"
