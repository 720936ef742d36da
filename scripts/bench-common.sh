# shellcheck shell=bash
# Shared by the bench scripts: a bundle in DIR/bundle whose policy requires
# two ECDSA P-256 attestors (ci, qa), both attesting REPO@DIGEST.
#   bench_two_attestor_bundle BIN DIR REPO DIGEST
bench_two_attestor_bundle() {
  local bin="$1" dir="$2" repo="$3" digest="$4" a
  local b="$dir/bundle"; mkdir -p "$b/attestors" "$b/attestations"
  for a in ci qa; do
    "$bin/attestgate" keygen --algorithm ECDSA_P256_SHA256 --private "$dir/$a.key" --public "$dir/$a.pub" 2>/dev/null
    "$bin/attestgate" attestor create --name "projects/bench/attestors/$a" --note "projects/bench/notes/$a" \
      --public-key "$dir/$a.pub" --algorithm ECDSA_P256_SHA256 > "$b/attestors/$a.yaml"
    "$bin/attestgate" sign --artifact-url "$repo@$digest" --key "$dir/$a.key" --algorithm ECDSA_P256_SHA256 \
      --note "projects/bench/notes/$a" --out "$b/attestations/$a.json"
  done
  cat > "$b/policy.yaml" <<POLICY
defaultAdmissionRule:
  evaluationMode: REQUIRE_ATTESTATION
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
  requireAttestationsBy: [projects/bench/attestors/ci, projects/bench/attestors/qa]
POLICY
}
