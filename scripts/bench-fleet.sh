#!/usr/bin/env bash
# Fleet sync benchmark (SPEC §10): a Debian docker-registry on 127.0.0.1
# (free port, storage in a temporary directory, stopped by its PID at exit)
# and K simulated nodes in one process (sync/benches/fleet.rs), each a real
# syncer with its own state and bundle. Version 1 is published and synced
# everywhere, the fleet polls unchanged for an interval, then version 2
# (one attestor changed) is pushed and the switch timed.
#   bash scripts/bench-fleet.sh [FLEET ARGS...]
#   e.g. bash scripts/bench-fleet.sh --nodes 1000 --interval 30
# Arguments go to the benchmark (--nodes, --interval, --unchanged-polls,
# --attestors, --verify-samples); the registry's access log is passed for
# the request count cross-check.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-registry >/dev/null; then
  echo "bench-fleet: docker-registry is missing (apt-get install -y docker-registry)" >&2
  exit 1
fi
# shellcheck source=tests/support/env.sh
source tests/support/env.sh
# env.sh asks agcri (the e2e crate) for a free port; this needs nothing built
# but the benchmark.
ag_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Built before the registry starts, so compiling is not in its log.
cargo bench --locked -q -p attestgate-sync --bench fleet --no-run
DIR="$(mktemp -d /tmp/ag-fleet.XXXXXX)"
cleanup() { ag_registry_stop "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
# A thousand nodes mid-poll hold a socket and a few files each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ag_registry_start "$DIR"
# env.sh sends the registry's stdout (its access log, one line per request)
# and stderr to the same file; the benchmark counts only access lines.
cargo bench --locked -q -p attestgate-sync --bench fleet -- \
  --registry "$AG_REGISTRY" --access-log "$DIR/registry/registry.log" --work "$DIR/work" "$@"
