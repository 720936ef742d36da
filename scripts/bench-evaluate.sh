#!/usr/bin/env bash
# Wall time of `attestgate evaluate` on a bundle with many attestations of
# other images, with the node's index beside the bundle and without it:
#   bash scripts/bench-evaluate.sh [RUNS]        (AG_BENCH_ATTESTATIONS=50000)
# The index is written the way the node writes it: the proxy loads the
# bundle at start. No containerd is needed; the proxy is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-20}"
N="${AG_BENCH_ATTESTATIONS:-50000}"
cargo build --release --locked --bins -q
BIN="$PWD/target/release"
DIR="$(mktemp -d /tmp/ag-evalb.XXXXXX)"
PROXY_PID=""
cleanup() {
  [ -n "$PROXY_PID" ] && kill -TERM "$PROXY_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
REPO=reg.test/app
DIGEST="sha256:$(printf app | sha256sum | cut -d' ' -f1)"
bench_two_attestor_bundle "$BIN" "$DIR" "$REPO" "$DIGEST"
B="$DIR/bundle"
bench_other_attestations "$B/attestations/others.json" "$N"
INDEX="$DIR/.bundle.attestgate-index"
echo "bundle: $(du -sh "$B" | cut -f1), $N attestations of other images"

evaluate() {
  "$BIN/attestgate" evaluate --bundle "$B" --image "$REPO@$DIGEST" --output json >/dev/null
}

# measure LABEL: RUNS timed runs after two that warm the page cache.
measure() {
  local i t0 t1
  : > "$DIR/times"
  evaluate; evaluate
  for i in $(seq "$RUNS"); do
    t0=$(date +%s%N); evaluate; t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000 )) >> "$DIR/times"
  done
  sort -n "$DIR/times" | awk -v label="$1" '{a[NR] = $1; s += $1} END {
    printf "%-9s n=%d median %.1f ms, mean %.1f, min %.1f, max %.1f\n", label, NR,
      (a[int((NR + 1) / 2)] + a[int(NR / 2) + 1]) / 2000, s / NR / 1000, a[1] / 1000, a[NR] / 1000 }'
}

write_index() {
  "$BIN/attestgate-proxy" --config /dev/null --listen "$DIR/proxy.sock" \
    --runtime-endpoint "$DIR/no-containerd.sock" --bundle "$B" \
    --audit-log "$DIR/audit.jsonl" > "$DIR/proxy.log" 2>&1 &
  PROXY_PID=$!
  # The bundle is loaded, and its index written, before the proxy listens.
  rm -f "$DIR/proxy.sock"
  for _ in $(seq 600); do
    [ -S "$DIR/proxy.sock" ] && break
    sleep 0.1
  done
  kill -TERM "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
  [ -s "$INDEX" ] || { echo "the proxy wrote no index" >&2; cat "$DIR/proxy.log" >&2; exit 1; }
}

for round in 1 2; do
  echo "round $round"
  rm -f "$INDEX"
  measure "no index"
  [ ! -e "$INDEX" ] || { echo "evaluate wrote an index" >&2; exit 1; }
  write_index
  echo "index: $(du -h "$INDEX" | cut -f1)"
  measure "index"
done
