#!/usr/bin/env bash
# The attestgate demo on this machine: a local registry, real containerd,
# attestgate-proxy in front of it with a bundle that requires a CI
# attestation; a signed pod is admitted, an unsigned one refused, and the
# audit lines are shown. Everything stays running for you to poke at.
#
#   bash scripts/demo.sh          # set up and run (as root)
#   bash scripts/demo.sh stop     # tear it all down
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DIR=/tmp/attestgate-demo

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it starts containerd)" >&2; exit 1; }

export AG_CRI_BIN="$ROOT/target/release/agcri"
stop() {
  if [ -d "$DIR" ]; then
    if [ -f "$DIR/proxy.pid" ] && grep -q attestgate-proxy "/proc/$(cat "$DIR/proxy.pid")/cmdline" 2>/dev/null; then
      kill -TERM "$(cat "$DIR/proxy.pid")" 2>/dev/null || true
      sleep 1
    fi
    # shellcheck source=tests/support/env.sh
    source tests/support/env.sh
    ag_down "$DIR" || true
    rm -rf "$DIR"
  fi
}
if [ "${1:-}" = stop ]; then stop; echo "demo stopped"; exit 0; fi

say "installing what the demo needs (Debian packages)"
# shellcheck source=tests/support/env.sh
source tests/support/env.sh
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  protobuf-compiler openssl "${AG_DEBIAN_PACKAGES[@]}" >/dev/null

say "building attestgate (release)"
cargo build --release --locked --bins -q
BIN="$ROOT/target/release"

stop
mkdir -p "$DIR/shim-bin"
# containerd finds containerd-shim-attestgate-v2 (runtime io.containerd.attestgate.v2)
# on its PATH; the shim reads the configuration ATTESTGATE_CONFIG names.
ln -sf "$BIN/containerd-shim-attestgate-v2" "$DIR/shim-bin/"
export AG_SHIM_DIR="$DIR/shim-bin" ATTESTGATE_CONFIG="$DIR/attestgate.toml"
say "starting a local registry and containerd in $DIR"
ag_up "$DIR"
set -a; source "$DIR/env"; set +a
APP_REPO="${AG_APP_IMAGE%:*}"

say "making a bundle: CI attestor, policy requiring it, and an attestation for the app image"
B="$DIR/bundle"; mkdir -p "$B/attestors" "$B/attestations"
"$BIN/attestgate" keygen --algorithm ECDSA_P256_SHA256 --private "$DIR/ci.key" --public "$DIR/ci.pub"
"$BIN/attestgate" attestor create --name projects/demo/attestors/built-by-ci \
  --note projects/demo/notes/built-by-ci --public-key "$DIR/ci.pub" --algorithm ECDSA_P256_SHA256 \
  > "$B/attestors/built-by-ci.yaml"
"$BIN/attestgate" sign --artifact-url "$APP_REPO@$AG_APP_DIGEST" --key "$DIR/ci.key" \
  --algorithm ECDSA_P256_SHA256 --note projects/demo/notes/built-by-ci --out "$B/attestations/app.json"
cat > "$B/policy.yaml" <<POLICY
globalPolicyEvaluationMode: ENABLE
defaultAdmissionRule:
  evaluationMode: REQUIRE_ATTESTATION
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
  requireAttestationsBy:
  - projects/demo/attestors/built-by-ci
POLICY
"$BIN/attestgate" policy check "$B"
cat > "$ATTESTGATE_CONFIG" <<CONFIG
bundle = "$B"
audit_log = "$DIR/audit.jsonl"
system_images = ["$AG_REGISTRY/attestgate/pause*"]
CONFIG

say "starting attestgate-proxy on $DIR/attestgate.sock"
nohup "$BIN/attestgate-proxy" --config /dev/null --listen "$DIR/attestgate.sock" \
  --runtime-endpoint "$AG_CONTAINERD_SOCK" --bundle "$B" --audit-log "$DIR/audit.jsonl" \
  --system-image "$AG_REGISTRY/attestgate/pause*" --metrics-listen 127.0.0.1:9464 \
  > "$DIR/proxy.log" 2>&1 &
echo $! > "$DIR/proxy.pid"
ag_wait_for_socket "$DIR/attestgate.sock" 20 "$(cat "$DIR/proxy.pid")"

say "an unsigned image is pushed to the same registry"
UNSIGNED="$AG_REGISTRY/attestgate/unsigned:1"
ag_image_build "$DIR/oci" unsigned --label demo=unsigned -- /bin/sh -c 'echo unsigned; sleep 3600' >/dev/null
UNSIGNED_DIGEST="$(ag_image_push "$DIR/oci" unsigned "$UNSIGNED")"
echo "$UNSIGNED ($UNSIGNED_DIGEST)"

CRI=("$BIN/agcri" --endpoint "unix://$DIR/attestgate.sock")
CG="/attestgate/$AG_CGROUP_TAG"
say "running the signed app through the proxy (admitted)"
"${CRI[@]}" run --namespace prod --name signed-app --image "$AG_APP_IMAGE" --log-dir "$DIR/pod-logs" --cgroup-parent "$CG/signed"

say "running the unsigned image through the proxy (refused)"
if "${CRI[@]}" run --namespace prod --name unsigned-app --image "$UNSIGNED" --log-dir "$DIR/pod-logs" --cgroup-parent "$CG/unsigned"; then
  echo "demo.sh: the unsigned image was admitted — this should not happen" >&2
  exit 1
fi

say "going around the proxy: ctr straight to containerd, runtime io.containerd.attestgate.v2"
CTR=(ctr --address "$AG_CONTAINERD_SOCK" -n default)
"${CTR[@]}" images pull --plain-http "$AG_APP_IMAGE" >/dev/null
"${CTR[@]}" images pull --plain-http "$UNSIGNED" >/dev/null
"${CTR[@]}" run --rm --runtime io.containerd.attestgate.v2 "$AG_APP_IMAGE" demo-signed echo "signed image ran through the shim"
if "${CTR[@]}" run --rm --runtime io.containerd.attestgate.v2 "$UNSIGNED" demo-unsigned true; then
  echo "demo.sh: the shim admitted the unsigned image — this should not happen" >&2
  exit 1
fi
"${CTR[@]}" containers delete demo-unsigned >/dev/null 2>&1 || true

say "audit log ($DIR/audit.jsonl)"
cat "$DIR/audit.jsonl"

say "the demo keeps running"
cat <<NOTE
  proxy socket:  unix://$DIR/attestgate.sock   (kubelet's --container-runtime-endpoint)
  containerd:    unix://$AG_CONTAINERD_SOCK
  CRI client:    $BIN/agcri --endpoint unix://$DIR/attestgate.sock ps
                 (or: crictl --runtime-endpoint unix://$DIR/attestgate.sock ps)
  shim:          ctr --address $AG_CONTAINERD_SOCK -n default run --rm --runtime io.containerd.attestgate.v2 IMAGE ID CMD
  decide by hand: $BIN/attestgate evaluate --bundle $B --image $UNSIGNED
  metrics:       curl -s 127.0.0.1:9464/metrics | grep attestgate_
  logs:          $DIR/proxy.log
  stop:          bash scripts/demo.sh stop
NOTE
