#!/usr/bin/env bash
# Benchmark of registry signatures (SPEC §11) on a real node set up here (as
# root): PullImage of a signed image direct to containerd, through the proxy
# with the image attested in the bundle, and through the proxy with its
# cosign signature in the registry; then CreateContainer with a warm
# attestation cache against bundle attestations.
#   bash scripts/bench-signatures.sh [ROUNDS] [CREATES]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
ROUNDS="${1:-24}"; CREATES="${2:-40}"
cargo build --release --locked --bins -q
BIN="$ROOT/target/release"
export AG_CRI_BIN="$BIN/agcri"
# shellcheck source=tests/support/env.sh
source tests/support/env.sh
DIR="$(mktemp -d /tmp/ag-bench.XXXXXX)"
cleanup() {
  [ -n "${PROXY_PID:-}" ] && kill -TERM "$PROXY_PID" 2>/dev/null || true
  sleep 0.5
  ag_down "$DIR" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
ag_up "$DIR"
set -a; source "$DIR/env"; set +a

# Two images alike but for a label: one signed in the registry, one in the bundle.
for name in registry-signed bundle-signed; do
  ag_image_build "$DIR/oci" "$name" --label "attestgate.bench/name=$name" -- /bin/sleep inf >/dev/null
  ag_image_push "$DIR/oci" "$name" "$AG_REGISTRY/bench/$name:1" > "$DIR/$name.digest"
done
B="$DIR/bundle"; mkdir -p "$B/attestors" "$B/attestations"
"$BIN/attestgate" keygen --algorithm ECDSA_P256_SHA256 --private "$DIR/ci.key" --public "$DIR/ci.pub" 2>/dev/null
"$BIN/attestgate" attestor create --name projects/bench/attestors/ci --note projects/bench/notes/ci \
  --public-key "$DIR/ci.pub" --algorithm ECDSA_P256_SHA256 > "$B/attestors/ci.yaml"
"$BIN/attestgate" sign --cosign --artifact-url "$AG_REGISTRY/bench/registry-signed@$(cat "$DIR/registry-signed.digest")" \
  --key "$DIR/ci.key" --algorithm ECDSA_P256_SHA256 --plain-http >/dev/null
"$BIN/attestgate" sign --artifact-url "$AG_REGISTRY/bench/bundle-signed@$(cat "$DIR/bundle-signed.digest")" \
  --key "$DIR/ci.key" --algorithm ECDSA_P256_SHA256 --note projects/bench/notes/ci --out "$B/attestations/ci.json"
cat > "$B/policy.yaml" <<POLICY
globalPolicyEvaluationMode: ENABLE
defaultAdmissionRule:
  evaluationMode: REQUIRE_ATTESTATION
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
  requireAttestationsBy: [projects/bench/attestors/ci]
POLICY

"$BIN/attestgate-proxy" --config /dev/null --listen "$DIR/proxy.sock" --runtime-endpoint "$AG_CONTAINERD_SOCK" \
  --bundle "$B" --audit-log "$DIR/audit.jsonl" --system-image "$AG_REGISTRY/attestgate/pause*" \
  --registry-attestor '*' --plain-http "$AG_REGISTRY" --attestation-cache "$DIR/attestations" > "$DIR/proxy.log" 2>&1 &
PROXY_PID=$!
ag_wait_for_socket "$DIR/proxy.sock" 20 "$PROXY_PID"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(containerd --version | cut -d' ' -f3)"
# Registry requests per pull, from the registry's own log.
requests() { grep -c '"GET /v2/\|"HEAD /v2/\|http.request.method=GET\|http.request.method=HEAD' "$DIR/registry/registry.log" || true; }
for path in direct proxy; do
  sock="$AG_CONTAINERD_SOCK"; [ "$path" = proxy ] && sock="$DIR/proxy.sock"
  "$BIN/agcri" --endpoint "$sock" rmi "$AG_REGISTRY/bench/registry-signed:1" >/dev/null 2>&1 || true
  rm -f "$DIR"/attestations/*
  before=$(requests)
  "$BIN/agcri" --endpoint "$sock" pull "$AG_REGISTRY/bench/registry-signed:1" >/dev/null
  echo "registry requests for one pull by tag, $path: $(( $(requests) - before ))"
done
"$BIN/pull-bench" --direct "$AG_CONTAINERD_SOCK" --proxy "$DIR/proxy.sock" \
  --registry-signed "$AG_REGISTRY/bench/registry-signed:1" --bundle-signed "$AG_REGISTRY/bench/bundle-signed:1" \
  --cache "$DIR/attestations" --rounds "$ROUNDS" --create-iterations "$CREATES" \
  --log-dir "$DIR/pod-logs" --cgroup-parent "/attestgate/$AG_CGROUP_TAG/bench"
grep -c '"decision":"allow"' "$DIR/audit.jsonl" | sed 's/^/allowed decisions: /'
! grep -q '"decision":"deny"' "$DIR/audit.jsonl" || { echo "a decision was a denial: the bench measured refusals" >&2; exit 1; }
