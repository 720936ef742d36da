#!/usr/bin/env bash
# Benchmark of containerd-shim-attestgate-v2 against the plain runc shim on a
# real containerd set up here (as root), in the same run, alternating:
#   bash scripts/bench-shim.sh [ROUNDS] [RUNS_PER_ROUND]
# Per runtime: container create + start (`ctr run -d`, image decided under a
# two-attestor policy by the attestgate shim) and exec (`ctr task exec`) in
# the running container. "attestgate" is the shim as containerd 1.x runs it
# (decide in start, become the runc shim); "forward" is the forwarder mode
# containerd 2.x gets (a ttrpc hop in front of the runc shim, deciding at
# Task.Create). "attestgate-big" is the first under a bundle that also holds
# AG_BENCH_ATTESTATIONS (default 100000) attestations of other images: a
# decision must cost the same whatever the bundle's size. Medians and p90 in
# milliseconds, and the ratios to runc.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
ROUNDS="${1:-3}"; RUNS="${2:-20}"
cargo build --release --locked --bins -q
BIN="$ROOT/target/release"
export AG_CRI_BIN="$BIN/agcri"
# shellcheck source=tests/support/env.sh
source tests/support/env.sh
DIR="$(mktemp -d /tmp/ag-shimb.XXXXXX)"
cleanup() { ag_down "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT

mkdir -p "$DIR/shim-bin"
ln -s "$BIN/containerd-shim-attestgate-v2" "$DIR/shim-bin/"
export AG_SHIM_DIR="$DIR/shim-bin" ATTESTGATE_CONFIG="$DIR/attestgate.toml"
ag_up "$DIR"
set -a; source "$DIR/env"; set +a
APP_REPO="${AG_APP_IMAGE%:*}"

# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
bench_two_attestor_bundle "$BIN" "$DIR" "$APP_REPO" "$AG_APP_DIGEST"
B="$DIR/bundle"
BIG="$DIR/big"
cp -r "$B" "$BIG"
bench_other_attestations "$BIG/attestations/others.json" "${AG_BENCH_ATTESTATIONS:-100000}"
echo "big bundle: $(du -sh "$BIG" | cut -f1), $(grep -o '"kind"' "$BIG/attestations/others.json" | wc -l) extra attestations"
config() { printf 'bundle = "%s"\naudit_log = "%s"\nshim_mode = "%s"\n' "${2:-$B}" "$DIR/audit.jsonl" "$1" > "$ATTESTGATE_CONFIG"; }
config exec

c() { ctr --address "$AG_CONTAINERD_SOCK" -n default "$@"; }
c images pull --plain-http "$AG_APP_IMAGE" >/dev/null
now() { date +%s%N; }

declare -A RUNTIME=([runc]=io.containerd.runc.v2 [attestgate]=io.containerd.attestgate.v2 [attestgate-big]=io.containerd.attestgate.v2 [forward]=io.containerd.attestgate.v2)
declare -A MODE=([runc]=exec [attestgate]=exec [attestgate-big]=exec [forward]=forward)
declare -A BUNDLE=([runc]="$B" [attestgate]="$B" [attestgate-big]="$BIG" [forward]="$B")
: >"$DIR/samples"
one() { # NAME ID: create+start, exec, then tear down (untimed)
  local name="$1" id="$2" t0 t1 t2
  config "${MODE[$name]}" "${BUNDLE[$name]}"
  t0=$(now)
  c run -d --runtime "${RUNTIME[$name]}" "$AG_APP_IMAGE" "$id" >/dev/null
  t1=$(now)
  c task exec --exec-id e "$id" true
  t2=$(now)
  echo "$name create_start $(((t1 - t0) / 1000))" >>"$DIR/samples"
  echo "$name exec $(((t2 - t1) / 1000))" >>"$DIR/samples"
  c task kill -s SIGKILL "$id" >/dev/null
  c task delete -f "$id" >/dev/null 2>&1 || { sleep 0.1; c task delete -f "$id" >/dev/null; }
  c containers delete "$id" >/dev/null
}
# warm-up: page cache, snapshot, both binaries
# (the big bundle's first decision reads it whole and writes its index)
one runc warm-runc; one attestgate warm-ag; one attestgate-big warm-big; one forward warm-fw; : >"$DIR/samples"
n=0
for ((r = 1; r <= ROUNDS; r++)); do
  case $((r % 3)) in
    1) order=(runc attestgate attestgate-big forward) ;;
    2) order=(attestgate-big forward runc attestgate) ;;
    *) order=(forward runc attestgate attestgate-big) ;;
  esac
  for ((i = 0; i < RUNS; i++)); do
    for name in "${order[@]}"; do one "$name" "b$((n++))"; done
  done
done
denied=$(grep -c '"decision":"deny"' "$DIR/audit.jsonl" || true)
allowed=$(grep -c '"decision":"allow"' "$DIR/audit.jsonl" || true)
((denied == 0)) || { echo "bench: $denied containers were denied" >&2; exit 1; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(containerd --version | cut -d' ' -f3)"
echo "runs per runtime: $((ROUNDS * RUNS)) (alternating, $ROUNDS rounds); attestgate decisions audited: $allowed"
stat() { # NAME METRIC -> "median p90" in ms
  grep "^$1 $2 " "$DIR/samples" | awk '{print $3}' | sort -n |
    awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; p=v[int(NR*0.9+0.5)]; printf "%.2f %.2f", m/1000, p/1000}'
}
printf '%-26s %10s %10s %8s\n' "metric (ms)" p50 p90 "p50/runc"
for metric in create_start exec; do
  read -r rm _ <<<"$(stat runc $metric)"
  for name in runc attestgate attestgate-big forward; do
    read -r m p <<<"$(stat "$name" "$metric")"
    printf '%-26s %10s %10s %8s\n' "$metric $name" "$m" "$p" \
      "$(awk -v a="$m" -v b="$rm" 'BEGIN {printf "%.3f", a / b}')"
  done
done
read -r small _ <<<"$(stat attestgate create_start)"
read -r big _ <<<"$(stat attestgate-big create_start)"
echo "create_start with $((${AG_BENCH_ATTESTATIONS:-100000} + 2)) attestations / with 2: $(awk -v a="$big" -v b="$small" 'BEGIN {printf "%.3f", a / b}')"
