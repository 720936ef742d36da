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

# bench_other_attestations FILE N: N attestations of other images in FILE,
# shaped as gcloud exports them (their signatures are never checked: no
# decision here is for their images).
bench_other_attestations() {
  python3 - "$1" "$2" <<'PY'
import base64, hashlib, json, os, sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as out:
    out.write("[")
    for i in range(n):
        digest = "sha256:" + hashlib.sha256(b"other-%d" % i).hexdigest()
        payload = base64.b64encode(json.dumps({"critical": {"identity": {"docker-reference": "reg.test/other"},
            "image": {"docker-manifest-digest": digest}, "type": "Google cloud binauthz container signature"}}).encode()).decode()
        out.write(("," if i else "") + json.dumps({
            "name": "projects/bench/occurrences/%d" % i, "kind": "ATTESTATION",
            "noteName": "projects/bench/notes/ci", "resourceUri": "https://reg.test/other@" + digest,
            "attestation": {"serializedPayload": payload, "signatures": [{"publicKeyId": "ni:///sha-256;x",
                "signature": base64.b64encode(os.urandom(72)).decode()}]}}))
    out.write("]")
PY
}
