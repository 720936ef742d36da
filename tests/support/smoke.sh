#!/usr/bin/env bash
# End-to-end smoke test of the test environment itself (no attestgate code):
# registry -> images -> containerd -> CRI pull/runp/create/start/exec/logs/
# streaming URLs/events -> ctr import (image on the node without a pull) ->
# teardown, asserting nothing is left running or mounted.
#
#   sudo tests/support/smoke.sh            # keep nothing
#   AG_KEEP=1 tests/support/smoke.sh       # leave DIR (logs, configs) behind
#
# Prints a timing line per step and ends with "N passed, N failed".
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"

ag_require
DIR="$(mktemp -d /tmp/ag.XXXXXX)"
passed=0 failed=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
now() { date +%s.%N; }
# out_has STRING CMD...: CMD succeeds and its stdout contains STRING (output is
# captured first, so no SIGPIPE/pipefail surprises); out_re: a grep regex.
out_has() { local p="$1" out; shift; out="$("$@")" || return 1; [[ "$out" == *"$p"* ]]; }
out_re() { local p="$1" out; shift; out="$("$@")" || return 1; grep -q -- "$p" <<<"$out"; }
T=$(now)
lap() { local t; t=$(now); awk -v a="$T" -v b="$t" -v w="$1" 'BEGIN { printf "time %-32s %6.2fs\n", w, b - a }'; T=$t; }

cleanup() {
  local rc=$?
  ag_containerd_stop "$DIR" || true
  ag_registry_stop "$DIR" || true
  if ag_assert_clean "$DIR"; then ok "teardown left no process, mount or bridge"; else bad "teardown left debris"; fi
  lap "teardown"
  if [[ -z "${AG_KEEP:-}" ]]; then rm -rf "$DIR"; else echo "kept $DIR"; fi
  echo "$passed passed, $failed failed"
  ((failed == 0 && rc == 0)) || exit 1
}
trap cleanup EXIT

echo "DIR=$DIR"
ag_versions | sed 's/^/version: /'

ag_registry_start "$DIR"; lap "registry start"

ag_image_build_pause "$DIR/oci" pause >/dev/null
ag_image_build_app "$DIR/oci" app >/dev/null; lap "build pause+app (umoci)"
PAUSE="$AG_REGISTRY/attestgate/pause:1"
APP="$AG_REGISTRY/attestgate/app:1"
pause_digest="$(ag_image_push "$DIR/oci" pause "$PAUSE")"
app_digest="$(ag_image_push "$DIR/oci" app "$APP")"; lap "push pause+app (skopeo)"
check "registry serves the pushed pause digest" test "$(ag_registry_digest "$PAUSE")" = "$pause_digest"
check "registry serves the pushed digest" test "$(ag_registry_digest "$APP")" = "$app_digest"
check "layout digest equals pushed digest" \
  test "$(ag_image_digest "$DIR/oci" app)" = "$app_digest"

ag_containerd_start "$DIR" "$PAUSE" "$AG_REGISTRY"; lap "containerd start (to CRI ready)"
c_version() { out_has '"runtimeName": "containerd"' ag_cri "$DIR" version; }
check "CRI version answers" c_version

ref="$(ag_cri "$DIR" pull "$APP")"; lap "CRI pull app (HTTP registry)"
check "pull returns an image id" test -n "$ref"
c_repodigest() { out_has "attestgate/app@$app_digest" ag_cri "$DIR" inspecti "$APP"; }
check "ImageStatus lists the repo digest" c_repodigest
c_pull_digest() { ag_cri "$DIR" pull "${APP%:1}@$app_digest" >/dev/null; }
check "pull by digest" c_pull_digest

ag_pod_config web ns1 uid-web >"$DIR/pod.json"
pod="$(ag_cri "$DIR" runp "$DIR/pod.json")"; lap "runp (pause pulled over HTTP)"
c_pod_ip() { out_re '"ip": "10\.' ag_cri "$DIR" inspectp "$pod"; }
check "pod has a bridge IP" c_pod_ip

ag_container_config app "$APP" >"$DIR/app.json"
ctr_id="$(ag_cri "$DIR" create "$pod" "$DIR/app.json" "$DIR/pod.json")"
ag_cri "$DIR" start "$ctr_id"; lap "create+start container"
c_running() { out_has CONTAINER_RUNNING ag_cri "$DIR" inspect "$ctr_id"; }
check "container running" c_running
c_exec() {
  local out rc=0
  out="$(ag_cri "$DIR" exec "$ctr_id" sh -c 'echo hi-from-exec; exit 3')" || rc=$?
  [[ "$rc" == 3 && "$out" == hi-from-exec ]]
}
check "exec sync (stdout + exit code)" c_exec
c_logs() { out_re ' stdout F hello$' ag_cri "$DIR" logs "$ctr_id"; }
check "logs show hello" ag_wait_until 10 "hello in logs" c_logs
c_exec_url() { out_re '^http://127.0.0.1:[0-9]*/exec/' ag_cri "$DIR" exec-url "$ctr_id" ls; }
check "exec URL" c_exec_url
c_attach_url() { out_has /attach/ ag_cri "$DIR" attach-url "$ctr_id"; }
check "attach URL" c_attach_url
c_pf_url() { out_has /portforward/ ag_cri "$DIR" port-forward-url "$pod" 8080; }
check "port-forward URL" c_pf_url
if "$AG_PYTHON" -c 'import websocket' 2>/dev/null; then
  c_ws_exec() { [[ "$(ag_stream_exec "$DIR" "$ctr_id" echo via-stream)" == via-stream ]]; }
  check "exec through the streaming URL (websocket)" c_ws_exec
fi
# containerd 1.6 has no GetContainerEvents (added in 1.7): expect UNIMPLEMENTED.
c_events() {
  local out rc=0
  out="$(ag_cri "$DIR" events --for 2 2>&1)" || rc=$?
  [[ "$rc" == 3 && "$out" == *"code = UNIMPLEMENTED"* ]]
}
check "GetContainerEvents is UNIMPLEMENTED on containerd 1.6" c_events
c_raw() { out_re '^[0-9a-f]\+$' ag_cri "$DIR" raw /runtime.v1.RuntimeService/Version ""; }
check "raw-bytes call of a method path" c_raw
c_unknown() {
  local out rc=0
  out="$(ag_cri "$DIR" raw /runtime.v1.RuntimeService/NoSuchMethodYet "" 2>&1)" || rc=$?
  [[ "$rc" == 3 && "$out" == *"code = UNIMPLEMENTED"* ]]
}
check "unknown method answers UNIMPLEMENTED" c_unknown
lap "exec/logs/urls/events"

# Image on the node without a pull: imported with ctr, never in the registry.
ag_image_build_app "$DIR/oci" local --label attestgate.test/variant=local >/dev/null
local_digest="$(ag_image_import "$DIR" "$DIR/oci" local attestgate.test/local/app:1)"
lap "build+ctr import"
c_import() { out_has "attestgate.test/local/app@$local_digest" ag_cri "$DIR" inspecti attestgate.test/local/app:1; }
check "imported image visible to CRI with repo digest" c_import
ag_container_config local attestgate.test/local/app:1 sh -c \
  'echo from-local; mkdir -p /www; echo hello-from-httpd >/www/index.html; exec httpd -f -p 8080 -h /www' \
  >"$DIR/local.json"
ctr2="$(ag_cri "$DIR" create "$pod" "$DIR/local.json" "$DIR/pod.json")"
ag_cri "$DIR" start "$ctr2"
c_local_logs() { out_has from-local ag_cri "$DIR" logs "$ctr2"; }
check "container from imported image runs" ag_wait_until 10 "from-local" c_local_logs
if "$AG_PYTHON" -c 'import websocket' 2>/dev/null; then
  c_pf() { out_has hello-from-httpd ag_port_forward "$DIR" "$pod" 8080; }
  check "port-forward to httpd in the pod (websocket)" ag_wait_until 10 "port-forward" c_pf
  lap "port-forward round trip"
fi
pod_ip="$(ag_cri "$DIR" inspectp "$pod" | sed -n 's/.*"ip": "\(10[.0-9]*\)".*/\1/p')"
c_pod_http() { out_has hello-from-httpd curl -fsS -m 3 "http://$pod_ip:8080/"; }
check "host reaches the pod over the bridge" c_pod_http

ag_cri "$DIR" stop "$ctr_id" -t 10
ag_cri "$DIR" stop "$ctr2" -t 2; lap "stop 2 containers"
c_exit0() {
  local s; s="$(ag_cri "$DIR" inspect "$ctr_id")"
  grep -q CONTAINER_EXITED <<<"$s" && ! grep -q '"exitCode":' <<<"$s"
}
check "app exited 0 on SIGTERM" c_exit0
ag_cri "$DIR" rm "$ctr_id"
ag_cri "$DIR" rm "$ctr2"
ag_cri "$DIR" stopp "$pod"
ag_cri "$DIR" rmp "$pod"; lap "rm containers, stopp+rmp"
c_no_pods() { ! out_has '"id"' ag_cri "$DIR" pods; }
check "no pods left" c_no_pods
ag_cri "$DIR" rmi "$APP"
c_rmi() { local out; out="$(ag_cri "$DIR" inspecti "$APP")" && [[ "$out" != *'"id"'* ]]; }
check "RemoveImage by tag removes the image (ImageStatus empty)" c_rmi
