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

# Two attestors, both attesting the app image.
B="$DIR/bundle"; mkdir -p "$B/attestors" "$B/attestations"
for a in ci qa; do
  "$BIN/attestgate" keygen --algorithm ECDSA_P256_SHA256 --private "$DIR/$a.key" --public "$DIR/$a.pub" 2>/dev/null
  "$BIN/attestgate" attestor create --name "projects/bench/attestors/$a" --note "projects/bench/notes/$a" \
    --public-key "$DIR/$a.pub" --algorithm ECDSA_P256_SHA256 > "$B/attestors/$a.yaml"
  "$BIN/attestgate" sign --artifact-url "$APP_REPO@$AG_APP_DIGEST" --key "$DIR/$a.key" --algorithm ECDSA_P256_SHA256 \
    --note "projects/bench/notes/$a" --out "$B/attestations/$a.json"
done
cat > "$B/policy.yaml" <<POLICY
defaultAdmissionRule:
  evaluationMode: REQUIRE_ATTESTATION
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
  requireAttestationsBy: [projects/bench/attestors/ci, projects/bench/attestors/qa]
POLICY

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
  --cgroup-parent "/attestgate/$AG_CGROUP_TAG/bench"
