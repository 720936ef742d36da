#!/usr/bin/env bash
# Runs every test of attestgate: formatting, lints, unit, interop (openssl,
# gpg) and end-to-end suites. Installs the Debian packages the tests use
# when run as root. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Interop (openssl, gpg), the CRI protos' compiler, and the real node the
# end-to-end scenarios run: containerd, runc, CNI plugins, a registry, and
# the tools that build and push images; systemd for systemd-analyze and
# systemd-socket-activate (it need not be PID 1); Go and its x/net, for the
# HPACK differential test's helper (scripts/build-go-hpack.sh); htpasswd
# (apache2-utils) for registries behind basic auth; the Debian package's
# build and checks (dpkg-dev, binutils for the dbgsym split, lintian) and
# promtool (prometheus) for its alerting rules.
packages=(openssl gnupg ca-certificates protobuf-compiler containerd runc
  containernetworking-plugins docker-registry skopeo umoci busybox-static
  iproute2 curl systemd golang-go golang-golang-x-net-dev apache2-utils
  logrotate dpkg-dev binutils lintian prometheus)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

for tool in openssl gpg cargo protoc; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is required" >&2; exit 1; }
done

# python-tuf and oras-py (pip only, not in Debian) for the interop tests
# (cli/tests/repo.rs, tests/tests/sync.rs, tests/tests/bundle_oci.rs): an
# independent TUF implementation, and an `oras pull` of our artifacts. A
# venv under the ignored target directory.
pytuf_venv="${CARGO_TARGET_DIR:-target}/pytuf-venv"
if [ ! -x "$pytuf_venv/bin/python" ] || ! "$pytuf_venv/bin/python" -c 'import tuf, oras' 2>/dev/null; then
  echo "==> python-tuf and oras-py venv at $pytuf_venv"
  python3 -m venv "$pytuf_venv"
  "$pytuf_venv/bin/pip" install -q 'tuf==7.0.1' 'securesystemslib[crypto]==1.6.0' 'oras==0.2.43'
fi
ATTESTGATE_PYTUF_PYTHON="$(cd "$pytuf_venv" && pwd)/bin/python"
ATTESTGATE_ORAS_PYTHON="$ATTESTGATE_PYTUF_PYTHON"
export ATTESTGATE_PYTUF_PYTHON ATTESTGATE_ORAS_PYTHON

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo build (the end-to-end scenarios run the binaries)"
cargo build --workspace --bins --locked
# The Debian package, built as a packager would (vendored, offline), for
# tests/tests/debian.rs to install, upgrade and purge; lintian must find
# nothing that packaging/debian/lintian-overrides does not explain.
if [ "$(id -u)" = 0 ] && command -v dpkg-deb >/dev/null; then
  echo "==> bash scripts/package.sh"
  ATTESTGATE_DEB="$(bash scripts/package.sh | tail -n 1)"
  export ATTESTGATE_DEB
  echo "==> lintian $ATTESTGATE_DEB"
  lintian --fail-on error,warning "$ATTESTGATE_DEB"
  # CI builds once: the release tree and the vendored sources are only disk
  # from here on (the package is in target/debian).
  if [ -n "${ATTESTGATE_CI_FREE_DISK:-}" ]; then
    rm -rf "${CARGO_TARGET_DIR:-target}/release" "${CARGO_TARGET_DIR:-target}/vendor" \
      "${CARGO_TARGET_DIR:-target}/package-cargo-home"
  fi
fi
echo "==> cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
# cargo ends on the doc-test binary (often "0 passed"); say the total last.
passed=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$log")
failed=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$log")
echo "tests: $passed passed, $failed failed"

