#!/usr/bin/env bash
# Builds the Debian package, target/debian/attestgate_<version>_<arch>.deb
# (SPEC §13), the way a distribution builds it: every crate vendored into the
# target directory, then an offline build (--frozen, and a CARGO_HOME that
# holds nothing but the vendored source) with the distribution's protoc.
# The man pages and completions come from the programs just built.
#
# Usage: bash scripts/package.sh [--deb-version VERSION]
#   --deb-version   the package's version instead of Cargo's (e.g. 0.1.0-2)
# Environment: CARGO_TARGET_DIR (default target), ATTESTGATE_VENDORED=DIR
#   to build from a vendored tree made elsewhere (nothing is downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."

deb_version=()
while [ $# -gt 0 ]; do
  case "$1" in
    --deb-version) deb_version=(--deb-version "$2"); shift 2 ;;
    *) echo "package.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"

# The CRI crate compiles cri-api's protos at build time: with Debian's
# protoc, as a Debian build would, not one downloaded by a build script.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v protoc >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
fi
PROTOC="$(command -v protoc)" || { echo "package.sh: protoc is required (apt-get install protobuf-compiler)" >&2; exit 1; }
export PROTOC

cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
  echo "==> installing cargo-deb $cargo_deb_version"
  cargo install --locked --quiet cargo-deb --version "$cargo_deb_version"
fi

vendor="${ATTESTGATE_VENDORED:-$target/vendor}"
if [ -z "${ATTESTGATE_VENDORED:-}" ]; then
  # Re-vendoring rewrites every file, and cargo then rebuilds every crate:
  # only when Cargo.lock changed.
  lock_sum="$(sha256sum Cargo.lock | cut -d' ' -f1)"
  if [ ! -d "$vendor" ] || [ "$(cat "$target/vendored-from" 2>/dev/null)" != "$lock_sum" ]; then
    echo "==> cargo vendor $vendor"
    cargo vendor --locked --quiet "$vendor" >/dev/null
    echo "$lock_sum" >"$target/vendored-from"
  fi
fi
vendor="$(cd "$vendor" && pwd)"

# The packager's cargo home: no registry cache, no credentials, only the
# vendored crates, so a crate missing from the tree fails the build here
# rather than being fetched.
offline_home="$target/package-cargo-home"
rm -rf "$offline_home"
mkdir -p "$offline_home"
cat >"$offline_home/config.toml" <<EOF
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "$vendor"

[net]
offline = true
EOF

echo "==> cargo build --release --frozen (vendored, offline)"
# Line tables only: the dbgsym package keeps backtraces and symbols; the
# binaries in the package are stripped.
CARGO_HOME="$offline_home" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --release --frozen --workspace --bins

manual="$target/release/manual"
rm -rf "$manual"
"$target/release/attestgate" write-manual "$manual"
"$target/release/attestgate-proxy" --write-manual "$manual"
"$target/release/attestgate-sync" --write-manual "$manual"
# Debian policy wants man pages compressed; cargo-deb compresses only
# assets it did not see built, which these are to it.
gzip -9n "$manual"/man/*.1

echo "==> cargo deb"
rm -f "$target"/debian/attestgate_*.deb "$target"/debian/attestgate-dbgsym_*.ddeb
CARGO_HOME="$offline_home" cargo deb --package attestgate --no-build --frozen \
  --dbgsym --compress-debug-symbols=zlib "${deb_version[@]}" --output "$target/debian/" >/dev/null
deb="$(ls "$target"/debian/attestgate_*.deb)"

# cargo-deb writes no md5sums, without which `dpkg --verify` checks nothing
# on the node: added here, over every file but the conffiles (dpkg tracks
# those in its own database).
unpacked="$target/debian/unpacked"
rm -rf "$unpacked"
dpkg-deb -R "$deb" "$unpacked"
(cd "$unpacked" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' |
  sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$unpacked/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz -b "$unpacked" "$deb" >/dev/null
rm -rf "$unpacked"
echo "$deb"
