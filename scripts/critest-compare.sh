#!/usr/bin/env bash
# Runs the upstream CRI validation suite (cri-tools' critest, which you
# build or download yourself) twice on a node set up here, as root: directly
# against containerd, then through attestgate-proxy. Prints the specs whose
# outcome differs; any difference is the proxy failing to be transparent.
#   bash scripts/critest-compare.sh /path/to/critest [critest flags...]
# Works with critest 1.23 and later (CRI v1) and with earlier ones (v1alpha2).
# The proxy's bundle admits everything, or with AG_CRITEST_POLICY=attest
# requires an attestation, which only the suite's own images have.
# The suite's images are built here and served by a local registry, so no
# network is needed; specs that pull public images fail on both paths.
set -euo pipefail
CRITEST="${1:?usage: critest-compare.sh /path/to/critest [critest flags...]}"
shift
CRITEST="$(realpath "$CRITEST")"
cd "$(dirname "$0")/.."
ROOT="$PWD"
cargo build --release --locked --bins -q
BIN="$ROOT/target/release"
export AG_CRI_BIN="$BIN/agcri"
# shellcheck source=tests/support/env.sh
source tests/support/env.sh
DIR="$(mktemp -d /tmp/ag-critest.XXXXXX)"
cleanup() {
  [ -n "${PROXY_PID:-}" ] && ag_stop_pid "$PROXY_PID" attestgate-proxy || true
  ag_down "$DIR" >/dev/null 2>&1 || true
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$KEEP_LOGS" && cp "$DIR"/*.log "$DIR"/*.fails "$DIR/audit.jsonl" "$KEEP_LOGS"/ 2>/dev/null || true
    echo "logs kept in $KEEP_LOGS"
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT
ag_up "$DIR"
set -a; source "$DIR/env"; set +a

# critest's default container image needs a shell and coreutils (busybox
# gives them); its web server image must answer HTTP on port 80.
ag_image_build "$DIR/oci" busybox --cmd sh -- >/dev/null
ag_image_build "$DIR/oci" web -- /bin/sh -c \
  'mkdir -p /www && echo critest > /www/index.html && exec httpd -f -p 80 -h /www' >/dev/null
BUSYBOX_DIGEST="$(ag_image_push "$DIR/oci" busybox "$AG_REGISTRY/critest/busybox:1")"
WEB_DIGEST="$(ag_image_push "$DIR/oci" web "$AG_REGISTRY/critest/web:1")"
SUITE_IMAGES=("$AG_REGISTRY/critest/busybox@$BUSYBOX_DIGEST" "$AG_REGISTRY/critest/web@$WEB_DIGEST")
cat > "$DIR/images.yaml" <<EOF
defaultTestContainerImage: $AG_REGISTRY/critest/busybox:1
webServerTestImage: $AG_REGISTRY/critest/web:1
EOF
CRITEST_FLAGS=(--test-images-file "$DIR/images.yaml" --ginkgo.no-color)
CRITEST_HELP="$("$CRITEST" --help 2>&1 || true)"
if [[ "$CRITEST_HELP" != *-test-images-file* ]]; then
  # critest before 1.23 (CRI v1alpha2) has its images built in: Docker
  # Hub's busybox:1.28 and nginx, served here through a mirror.
  CRITEST_FLAGS=(--ginkgo.noColor)
  ag_image_push "$DIR/oci" busybox "$AG_REGISTRY/library/busybox:1.28" >/dev/null
  ag_image_push "$DIR/oci" web "$AG_REGISTRY/library/nginx:latest" >/dev/null
  SUITE_IMAGES+=("docker.io/library/busybox@$BUSYBOX_DIGEST" "docker.io/library/nginx@$WEB_DIGEST")
  mkdir -p "$DIR/containerd/certs.d/docker.io"
  cat > "$DIR/containerd/certs.d/docker.io/hosts.toml" <<EOF
server = "https://registry-1.docker.io"

[host."http://$AG_REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
fi

mkdir -p "$DIR/bundle/attestors" "$DIR/bundle/attestations"
if [[ "${AG_CRITEST_POLICY:-allow}" == attest ]]; then
  # The suite's own images attested, everything else refused: the
  # decisions themselves must not change an outcome either.
  "$BIN/attestgate" keygen --algorithm ECDSA_P256_SHA256 --private "$DIR/ci.key" --public "$DIR/ci.pub" 2>/dev/null
  "$BIN/attestgate" attestor create --name projects/critest/attestors/ci --note projects/critest/notes/ci \
    --public-key "$DIR/ci.pub" --algorithm ECDSA_P256_SHA256 > "$DIR/bundle/attestors/ci.yaml"
  n=0
  for image in "${SUITE_IMAGES[@]}"; do
    "$BIN/attestgate" sign --artifact-url "$image" --key "$DIR/ci.key" --algorithm ECDSA_P256_SHA256 \
      --note projects/critest/notes/ci --out "$DIR/bundle/attestations/$((n++)).json"
  done
  cat > "$DIR/bundle/policy.yaml" <<EOF
defaultAdmissionRule:
  evaluationMode: REQUIRE_ATTESTATION
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
  requireAttestationsBy: [projects/critest/attestors/ci]
EOF
else
  cat > "$DIR/bundle/policy.yaml" <<EOF
defaultAdmissionRule:
  evaluationMode: ALWAYS_ALLOW
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
EOF
fi
"$BIN/attestgate-proxy" --config /dev/null --listen "$DIR/proxy.sock" --runtime-endpoint "$AG_CONTAINERD_SOCK" \
  --bundle "$DIR/bundle" --audit-log "$DIR/audit.jsonl" > "$DIR/proxy.log" 2>&1 &
PROXY_PID=$!
ag_wait_for_socket "$DIR/proxy.sock" 20 "$PROXY_PID"

run_suite() {
  local name="$1" socket="$2"; shift 2
  echo "critest $name ($socket)..."
  (cd "$DIR" && "$CRITEST" --runtime-endpoint "unix://$socket" --image-endpoint "unix://$socket" \
    "${CRITEST_FLAGS[@]}" "$@" > "$DIR/critest-$name.log" 2>&1) || true
  grep -E '^(Ran|FAIL!|SUCCESS!)' "$DIR/critest-$name.log" | sed 's/^/  /' || true
  if ! grep -qE '^Ran [1-9]' "$DIR/critest-$name.log"; then
    echo "critest ran no spec ($name); its output:"; tail -20 "$DIR/critest-$name.log"; exit 1
  fi
  # ginkgo v2 lists failures as "  [FAIL] ...", v1 as "[Fail] ...".
  grep -E '^(  \[FAIL\]|\[Fail\]) ' "$DIR/critest-$name.log" | sed 's/ *$//' | sort > "$DIR/$name.fails" || true
}
run_suite direct "$AG_CONTAINERD_SOCK" "$@"
run_suite proxy "$DIR/proxy.sock" "$@"

if diff -u "$DIR/direct.fails" "$DIR/proxy.fails" > "$DIR/difference"; then
  echo "same outcome for every spec, directly and through the proxy ($(grep -c '"decision":"allow"' "$DIR/audit.jsonl") admitted and $(grep -c '"decision":"deny"' "$DIR/audit.jsonl") refused in the audit log)"
else
  echo "outcomes differ (- direct only, + proxy only):"
  grep -E '^[-+][^-+]' "$DIR/difference" || true
  echo "proxy log:"; tail -20 "$DIR/proxy.log"
  KEEP_LOGS="${KEEP_LOGS:-$(mktemp -d /tmp/ag-critest-logs.XXXXXX)}"
  exit 1
fi
