# shellcheck shell=bash
# attestgate end-to-end test environment: a local OCI registry, a private
# containerd (CRI plugin, runc, CNI bridge) and tiny busybox images, all from
# Debian bookworm packages, each instance confined to a caller-given directory.
#
#   source tests/support/env.sh
#   ag_require                       # root + binaries (ag_install_deps installs)
#   d=$(mktemp -d /tmp/ag.XXXXXX)
#   ag_registry_start "$d"            # sets AG_REGISTRY=127.0.0.1:<port>
#   ag_image_build "$d/oci" pause -- /bin/sleep inf
#   ag_image_push  "$d/oci" pause "$AG_REGISTRY/pause:1"   # prints sha256:...
#   ag_containerd_start "$d" "$AG_REGISTRY/pause:1"        # sets AG_CONTAINERD_SOCK
#   ag_cri "$d" version
#   ...
#   ag_containerd_stop "$d"; ag_registry_stop "$d"; ag_assert_clean "$d"
#
# Contracts common to every function:
#   * safe under `set -euo pipefail`; errors go to stderr prefixed "env.sh:",
#     and the function returns non-zero (never exits the caller's shell).
#   * DIR must be an absolute path without whitespace, short enough for unix
#     socket paths (keep it under ~60 characters; mktemp -d /tmp/ag.XXXXXX).
#   * daemons are started as background children of the calling shell and
#     stopped by the PID recorded in DIR (never by name); a PID is signalled
#     only while its /proc/PID/cmdline still names DIR.
#   * functions that set AG_* variables must be called directly, not in $(...)
#     (the value is also written to a file in DIR, see each function).
#
# See tests/support/README.md for what was verified, timings and gotchas.

AG_SUPPORT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The CRI client: `agcri`, built from the attestgate-e2e crate (k8s-cri).
AG_CRI_BIN="${AG_CRI_BIN:-agcri}"
AG_CNI_BIN_DIR="${AG_CNI_BIN_DIR:-/usr/lib/cni}"
AG_BUSYBOX="${AG_BUSYBOX:-/bin/busybox}"
AG_DEBIAN_PACKAGES=(containerd runc containernetworking-plugins docker-registry
  skopeo umoci busybox-static iproute2 curl)

ag__err() { printf 'env.sh: %s\n' "$*" >&2; }
ag__log() { [[ -n "${AG_QUIET:-}" ]] || printf 'env.sh: %s\n' "$*" >&2; }

# ag__check_dir DIR: DIR is absolute, no whitespace, exists.
ag__check_dir() {
  local d="${1:-}"
  if [[ -z "$d" || "$d" != /* || "$d" =~ [[:space:]] ]]; then
    ag__err "DIR must be an absolute path without whitespace: '$d'"; return 1
  fi
  mkdir -p "$d"
}

# ag__need N USAGE ARGS...: at least N arguments, the first N non-empty.
ag__need() {
  local n="$1" usage="$2" i; shift 2
  for ((i = 1; i <= n; i++)); do
    if (($# < i)) || [[ -z "${!i}" ]]; then ag__err "usage: $usage"; return 1; fi
  done
}

# ag__hash DIR: 8 hex chars identifying DIR (bridge/network/cgroup names).
ag__hash() { printf '%s' "$1" | sha256sum | cut -c1-8; }

# ---------------------------------------------------------------- setup ----

# ag_install_deps: apt-get update + install everything this file uses.
ag_install_deps() {
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      "${AG_DEBIAN_PACKAGES[@]}" >/dev/null
}

# ag_require: fail (non-zero, message) unless root and every tool is present.
ag_require() {
  local missing=() b
  [[ "$(id -u)" == 0 ]] || { ag__err "must run as root"; return 1; }
  for b in containerd ctr runc containerd-shim-runc-v2 docker-registry skopeo umoci \
    ip curl sha256sum "$AG_BUSYBOX" "$AG_CRI_BIN" "$AG_CNI_BIN_DIR/bridge" \
    "$AG_CNI_BIN_DIR/host-local" "$AG_CNI_BIN_DIR/loopback"; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
  done
  if ((${#missing[@]})); then
    ag__err "missing: ${missing[*]} (run ag_install_deps)"; return 1
  fi
}

# ag_versions: print one line per component version.
ag_versions() {
  containerd --version
  runc --version | head -1
  printf 'containernetworking-plugins %s\n' \
    "$(dpkg-query -W -f '${Version}' containernetworking-plugins 2>/dev/null || echo '?')"
  printf 'docker-registry %s\n' "$(dpkg-query -W -f '${Version}' docker-registry 2>/dev/null || echo '?')"
  skopeo --version
  umoci --version
  "$AG_BUSYBOX" 2>&1 | head -1
}

# ----------------------------------------------------------- utilities -----

# ag_free_port: print a TCP port on 127.0.0.1 that was free a moment ago.
ag_free_port() {
  "$AG_CRI_BIN" free-port
}

# ag_wait_until [--pid PID] TIMEOUT_S DESCRIPTION CMD...: run CMD every 0.1 s
# until it succeeds; non-zero after TIMEOUT_S seconds, or as soon as PID (the
# daemon being waited for) has exited.
ag_wait_until() {
  local pid=""
  if [[ "${1:-}" == --pid ]]; then pid="${2:-}"; shift 2; fi
  ag__need 3 "ag_wait_until [--pid PID] TIMEOUT_S DESCRIPTION CMD..." "$@" || return 1
  local timeout="$1" what="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  # SECONDS has 1 s resolution; also bound the number of tries.
  local tries=$((timeout * 10 + 10))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$pid" ]] && ! ag__pid_alive "$pid"; then
      ag__err "pid $pid exited while waiting for $what"; return 1
    fi
    if ((SECONDS > deadline || --tries <= 0)); then
      ag__err "timed out after ${timeout}s waiting for $what"; return 1
    fi
    sleep 0.1
  done
}

ag__socket_connects() {
  [[ -S "$1" ]] && "$AG_CRI_BIN" probe-socket "$1" 2>/dev/null
}

# ag_wait_for_socket PATH [TIMEOUT_S=30] [PID]: wait until PATH is a unix
# socket that accepts a connection (give up early if PID exits).
ag_wait_for_socket() {
  ag__need 1 "ag_wait_for_socket PATH [TIMEOUT_S] [PID]" "$@" || return 1
  ag_wait_until ${3:+--pid "$3"} "${2:-30}" "unix socket $1" ag__socket_connects "$1"
}

# ag_wait_for_tcp HOST PORT [TIMEOUT_S=30]: wait until HOST:PORT accepts.
ag_wait_for_tcp() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  ag_wait_until "${3:-30}" "tcp $1:$2" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2"
}

# ag_wait_for_http URL [TIMEOUT_S=30] [PID]: wait until URL answers 2xx
# (give up early if PID exits).
ag_wait_for_http() {
  ag__need 1 "ag_wait_for_http URL [TIMEOUT_S] [PID]" "$@" || return 1
  ag_wait_until ${3:+--pid "$3"} "${2:-30}" "$1" curl -fsS -m 2 -o /dev/null "$1"
}

# ag__pid_alive PID: running and not a zombie (reaps a zombie child).
ag__pid_alive() {
  local pid="$1" state
  [[ -r "/proc/$pid/stat" ]] || return 1
  # field 3 of /proc/PID/stat, after the parenthesised command name
  state="$(sed -n 's/^.*) \(.\).*/\1/p' "/proc/$pid/stat" 2>/dev/null || true)"
  if [[ "$state" == Z || -z "$state" ]]; then
    wait "$pid" 2>/dev/null || true
    return 1
  fi
}

# ag__cmdline_has PID STRING: /proc/PID/cmdline contains STRING.
ag__cmdline_has() {
  [[ -r "/proc/$1/cmdline" ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# ag_stop_pid PID MUST_CONTAIN [TIMEOUT_S=20]: SIGTERM PID, wait, SIGKILL
# after TIMEOUT_S; only while its cmdline contains MUST_CONTAIN (guards
# against a recycled PID). Returns 0 once the PID is gone.
ag_stop_pid() {
  local pid="$1" mark="$2" timeout="${3:-20}"
  [[ "$pid" =~ ^[0-9]+$ ]] || { ag__err "bad pid '$pid'"; return 1; }
  ag__pid_alive "$pid" || return 0
  if ! ag__cmdline_has "$pid" "$mark"; then
    ag__err "pid $pid no longer looks like ours (no '$mark'); not signalling"; return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local tries=$((timeout * 10))
  while ag__pid_alive "$pid"; do
    if ((--tries <= 0)); then
      ag__err "pid $pid ignored SIGTERM for ${timeout}s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      tries=50
      while ag__pid_alive "$pid" && ((--tries > 0)); do sleep 0.1; done
      break
    fi
    sleep 0.1
  done
  wait "$pid" 2>/dev/null || true
  ! ag__pid_alive "$pid"
}

# ag_pids_mentioning STRING: PIDs (one a line) whose cmdline contains STRING,
# except this shell and its ancestors.
ag_pids_mentioning() {
  local s="$1" p mine=" " q="$BASHPID"
  while [[ -n "$q" && "$q" != 0 ]]; do
    mine+="$q "
    q="$(awk '{print $4}' "/proc/$q/stat" 2>/dev/null || true)"
  done
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [[ "$mine" == *" $p "* ]] && continue
    ag__cmdline_has "$p" "$s" && ag__pid_alive "$p" && echo "$p"
  done
  return 0
}

# ag_mounts_under DIR: mount points at or below DIR, deepest first.
ag_mounts_under() {
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo |
    awk '{print length($0) " " $0}' | sort -rn | cut -d' ' -f2-
}

# -------------------------------------------------------------- registry ---

# ag_registry_start DIR: start Debian's docker-registry (distribution 2.8)
# on 127.0.0.1:<free port>, plain HTTP, no auth, deletes enabled, storage in
# DIR/registry/data. Sets AG_REGISTRY=127.0.0.1:<port> (also in
# DIR/registry/addr); pid in DIR/registry/pid, log DIR/registry/registry.log.
# Returns once GET /v2/ answers 200 (timeout AG_REGISTRY_TIMEOUT=20 s).
ag_registry_start() {
  local dir="${1:-}"; ag__check_dir "$dir" || return 1
  local r="$dir/registry" port
  mkdir -p "$r/data"
  port="$(ag_free_port)" || return 1
  cat >"$r/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $r/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  docker-registry serve "$r/config.yml" >"$r/registry.log" 2>&1 </dev/null &
  echo $! >"$r/pid"
  AG_REGISTRY="127.0.0.1:$port"
  echo "$AG_REGISTRY" >"$r/addr"
  if ! ag_wait_for_http "http://$AG_REGISTRY/v2/" "${AG_REGISTRY_TIMEOUT:-20}" "$(cat "$r/pid")"; then
    tail -20 "$r/registry.log" >&2 || true
    return 1
  fi
  ag__log "registry up at $AG_REGISTRY (pid $(cat "$r/pid"))"
}

# ag_registry_stop DIR: stop the registry started in DIR by its pid.
ag_registry_stop() {
  ag__need 1 "ag_registry_stop DIR" "$@" || return 1
  local r="${1}/registry"
  [[ -f "$r/pid" ]] || return 0
  ag_stop_pid "$(cat "$r/pid")" "$r/config.yml" 20 && rm -f "$r/pid"
}

# ---------------------------------------------------------------- images ---

# ag_image_build LAYOUT TAG [--label K=V]... [--cmd ARG]... -- ENTRYPOINT...
# Build a one-layer image from busybox-static into the OCI layout LAYOUT (made
# if missing) under TAG: /bin/busybox plus a symlink for every applet,
# /etc/passwd and /etc/group for root, /tmp; PATH=/bin; entrypoint and cmd as
# given; labels to make otherwise identical images differ in digest.
# Prints the manifest digest in the layout (the registry digest after a push,
# which keeps the manifest byte for byte).
ag_image_build() {
  ag__need 2 "ag_image_build LAYOUT TAG [--label K=V]... [--cmd ARG]... -- ENTRYPOINT..." "$@" || return 1
  local layout="${1}" tag="${2}"; shift 2
  local cfg=() a
  while (($#)); do
    case "$1" in
      --label) cfg+=(--config.label "$2"); shift 2 ;;
      --cmd) cfg+=(--config.cmd "$2"); shift 2 ;;
      --) shift; break ;;
      *) ag__err "ag_image_build: unexpected '$1' (missing --?)"; return 1 ;;
    esac
  done
  for a in "$@"; do cfg+=(--config.entrypoint "$a"); done
  local rootfs
  rootfs="$(mktemp -d "${TMPDIR:-/tmp}/ag-rootfs.XXXXXX")" || return 1
  mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
  chmod 1777 "$rootfs/tmp"
  cp "$AG_BUSYBOX" "$rootfs/bin/busybox"
  for a in $("$AG_BUSYBOX" --list); do
    [[ "$a" == busybox ]] || ln -sf busybox "$rootfs/bin/$a"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
  echo 'root:x:0:' >"$rootfs/etc/group"
  (
    set -e
    [[ -f "$layout/index.json" ]] || umoci init --layout "$layout"
    umoci new --image "$layout:$tag"
    umoci insert --image "$layout:$tag" "$rootfs" /
    # umoci leaves PATH unset; without it the runtime cannot find sh/sleep.
    umoci config --image "$layout:$tag" --config.env PATH=/bin \
      --config.workingdir / "${cfg[@]}"
    umoci gc --layout "$layout"
  ) >/dev/null
  local rc=$?
  rm -rf "$rootfs"
  ((rc == 0)) || { ag__err "umoci failed building $layout:$tag"; return 1; }
  ag_image_digest "$layout" "$tag"
}

# ag_image_digest LAYOUT TAG: print the manifest digest of LAYOUT:TAG.
ag_image_digest() {
  skopeo inspect --raw "oci:$1:$2" | sha256sum | awk '{print "sha256:" $1}'
}

# ag_image_build_pause LAYOUT [TAG=pause]: a pause-like image: exits 0 on
# SIGTERM/SIGINT, otherwise sleeps forever. Prints its digest.
ag_image_build_pause() {
  ag_image_build "$1" "${2:-pause}" -- /bin/sh -c \
    'trap "exit 0" TERM INT; sleep inf & wait'
}

# ag_image_build_app LAYOUT [TAG=app] [--label K=V]...: prints "hello" then
# sleeps for an hour; exits 0 on SIGTERM. Prints its digest.
ag_image_build_app() {
  ag__need 1 "ag_image_build_app LAYOUT [TAG] [--label K=V]..." "$@" || return 1
  local layout="${1}" tag="${2:-app}"; shift $(($# >= 2 ? 2 : 1))
  ag_image_build "$layout" "$tag" "$@" -- /bin/sh -c \
    'trap "exit 0" TERM INT; echo hello; sleep 3600 & wait'
}

# ag_image_push LAYOUT TAG REF: skopeo-copy LAYOUT:TAG to docker://REF over
# plain HTTP; prints the pushed manifest digest (as the registry stores it).
ag_image_push() {
  ag__need 3 "ag_image_push LAYOUT TAG REF" "$@" || return 1
  local layout="${1}" tag="${2}" ref="${3}" df
  df="$(mktemp "${TMPDIR:-/tmp}/ag-digest.XXXXXX")" || return 1
  if ! skopeo copy -q --dest-tls-verify=false --digestfile "$df" \
    "oci:$layout:$tag" "docker://$ref" >/dev/null; then
    rm -f "$df"; ag__err "push of $layout:$tag to $ref failed"; return 1
  fi
  cat "$df"; echo
  rm -f "$df"
}

# ag_registry_digest REF: the digest the registry serves for REF.
ag_registry_digest() {
  skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$1"
}

# ag_image_archive LAYOUT TAG OUT.tar NAME: write an OCI archive of LAYOUT:TAG
# whose index annotates it org.opencontainers.image.ref.name=NAME. A full
# reference (example.test/app:1) makes plain `ctr images import OUT.tar` name
# it so; a bare tag suits `ctr images import --base-name REPO` (see
# ag_image_import). The manifest (and so its digest) is the layout's.
ag_image_archive() {
  ag__need 4 "ag_image_archive LAYOUT TAG OUT.tar NAME" "$@" || return 1
  local layout="${1}" tag="${2}" out="${3}" name="${4}"
  rm -f "$out"
  skopeo copy -q "oci:$layout:$tag" "oci-archive:$out:$name" >/dev/null
}

# ag_image_import DIR LAYOUT TAG REPO:NEWTAG [--no-digest]: put LAYOUT:TAG on
# DIR's node without a pull: `ctr -n k8s.io images import` of an OCI archive,
# named REPO:NEWTAG and (unless --no-digest) also REPO@<digest>, so the CRI's
# ImageStatus shows a repoDigest just as for a pulled image. With --no-digest
# the image has repoTags only and no repoDigests (like a plain `ctr import`).
# Prints the manifest digest. Archive kept in DIR/imports/.
ag_image_import() {
  ag__need 4 "ag_image_import DIR LAYOUT TAG REPO:TAG [--no-digest]" "$@" || return 1
  local dir="${1}" layout="${2}" tag="${3}" name="${4}"
  local repo="${name%:*}" newtag="${name##*:}" flags=(--digests) tar
  if [[ "$repo" == "$name" || "$newtag" == */* ]]; then
    ag__err "ag_image_import: NAME must be REPO:TAG, got '$name'"; return 1
  fi
  [[ "${5:-}" == --no-digest ]] && flags=()
  mkdir -p "$dir/imports"
  tar="$dir/imports/$(tr "/:" "__" <<<"$repo")_$newtag.tar"
  # The archive's ref name is just the tag; ctr prefixes --base-name.
  ag_image_archive "$layout" "$tag" "$tar" "$newtag" || return 1
  ag_ctr "$dir" images import --base-name "$repo" "${flags[@]}" "$tar" >/dev/null || return 1
  ag_image_digest "$layout" "$tag"
}

# ------------------------------------------------------------ containerd ---

# ag_containerd_config DIR SANDBOX_IMAGE [INSECURE_REGISTRY...]
# Write DIR/containerd/config.toml (config `version = 2`: Debian bookworm's
# containerd is 1.6.x) with root, state, sockets, runc root, netns mounts, CNI
# config and IPAM state all inside DIR; CRI plugin with
# restrict_oom_score_adj, cgroupfs (not systemd), SANDBOX_IMAGE as the pause
# image, CNI bridge network (bridge agbr<hash>, subnet AG_CNI_SUBNET or
# 10.99.<n>.0/24, no masquerade, no default route in pods) and a hosts.toml
# under DIR/containerd/certs.d making each INSECURE_REGISTRY (default
# $AG_REGISTRY) a plain-HTTP host.
# Hooks for later tests: AG_RUNTIME_TYPE replaces io.containerd.runc.v2 as the
# default runtime's runtime_type: io.containerd.NAME.VER makes containerd run
# the shim binary containerd-shim-NAME-VER found on its PATH, and
# ag_containerd_start puts AG_SHIM_DIR first on that PATH (how to slot in a
# wrapping shim; `runtime_path` is parsed by 1.6.20 but was not honoured);
# AG_CONTAINERD_CONFIG_HOOK names a command run with the config.toml path
# after it is written (to edit it); AG_CONTAINERD_LOG_LEVEL (default info).
ag_containerd_config() {
  ag__need 2 "ag_containerd_config DIR SANDBOX_IMAGE [INSECURE_REGISTRY...]" "$@" || return 1
  local dir="${1:-}"; ag__check_dir "$dir" || return 1
  local sandbox="${2}"; shift 2
  local regs=("$@")
  if ((${#regs[@]} == 0)) && [[ -n "${AG_REGISTRY:-}" ]]; then regs=("$AG_REGISTRY"); fi
  local c="$dir/containerd" h n subnet reg
  h="$(ag__hash "$dir")"
  n=$((16#${h:0:4} % 250 + 1))
  subnet="${AG_CNI_SUBNET:-10.99.$n.0/24}"
  mkdir -p "$c/root" "$c/state" "$c/net.d" "$c/certs.d" "$c/cni-ipam" "$c/opt"
  local runtime_block
  if [[ "${AG_RUNTIME_TYPE:-io.containerd.runc.v2}" == io.containerd.runc.v2 ]]; then
    runtime_block="        runtime_type = \"io.containerd.runc.v2\"
        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]
          BinaryName = \"$(command -v runc)\"
          # runc state under DIR (default /run/containerd/runc)
          Root = \"$c/runc\"
          # systemd is not PID 1 here: cgroupfs driver
          SystemdCgroup = false"
  else
    # For any other runtime_type the CRI plugin sends the options table as
    # runtimeoptions.v1.Options, which containerd-shim-runc-v2 cannot decode
    # ("type with url runtimeoptions.v1.Options: not found"): no options, so
    # runc runs with its defaults (root /run/containerd/runc, cgroupfs).
    # pod_annotations as packaging/containerd/attestgate-runtime-v2.toml ships it.
    runtime_block="        runtime_type = \"$AG_RUNTIME_TYPE\"
        pod_annotations = [\"alpha.image-policy.k8s.io/break-glass\"]"
  fi
  cat >"$c/config.toml" <<EOF
# generated by tests/support/env.sh for $dir
version = 2
root = "$c/root"
state = "$c/state"
# snapshotters that cannot work here; disabling them just quiets the log
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$c/containerd.sock"

[ttrpc]
  address = "$c/containerd.sock.ttrpc"

[debug]
  level = "${AG_CONTAINERD_LOG_LEVEL:-info}"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$c/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$sandbox"
    # The VM refuses to lower oom_score_adj; without this every sandbox fails.
    restrict_oom_score_adj = true
    # pod network namespaces under DIR instead of /var/run/netns
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
$runtime_block

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$AG_CNI_BIN_DIR"
      conf_dir = "$c/net.d"
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "$c/certs.d"
EOF
  cat >"$c/net.d/10-attestgate.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ag-$h",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "agbr$h",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$subnet"}]],
        "dataDir": "$c/cni-ipam"
      }
    }
  ]
}
EOF
  if [[ -n "${AG_CONTAINERD_CONFIG_HOOK:-}" ]]; then
    "$AG_CONTAINERD_CONFIG_HOOK" "$c/config.toml" || return 1
  fi
  for reg in ${regs[@]+"${regs[@]}"}; do
    mkdir -p "$c/certs.d/$reg"
    cat >"$c/certs.d/$reg/hosts.toml" <<EOF
server = "http://$reg"

[host."http://$reg"]
  capabilities = ["pull", "resolve", "push"]
EOF
  done
}

# ag_containerd_start DIR [SANDBOX_IMAGE [INSECURE_REGISTRY...]]: write the
# config (ag_containerd_config) unless SANDBOX_IMAGE is omitted and
# DIR/containerd/config.toml exists, start containerd, wait for its socket and
# for CRI Status RuntimeReady+NetworkReady (timeout AG_CONTAINERD_TIMEOUT=60 s).
# Sets AG_CONTAINERD_SOCK (also DIR/containerd/sock); pid in
# DIR/containerd/pid, log DIR/containerd/containerd.log.
ag_containerd_start() {
  local dir="${1:-}"; ag__check_dir "$dir" || return 1
  local c="$dir/containerd"
  if (($# >= 2)); then
    ag_containerd_config "$@" || return 1
  elif [[ ! -f "$c/config.toml" ]]; then
    ag__err "ag_containerd_start: no config in $c and no SANDBOX_IMAGE given"; return 1
  fi
  # pod configs from ag_pod_config put cgroups and logs under names of DIR
  AG_CGROUP_TAG="$(ag__hash "$dir")"
  AG_POD_LOG_ROOT="$dir/pod-logs"
  # bridge plugin's isGateway turns on ip_forward; remember to restore it.
  [[ -f "$c/ip_forward.orig" ]] || cat /proc/sys/net/ipv4/ip_forward >"$c/ip_forward.orig"
  PATH="${AG_SHIM_DIR:+$AG_SHIM_DIR:}$PATH" \
    containerd --config "$c/config.toml" >>"$c/containerd.log" 2>&1 </dev/null &
  echo $! >"$c/pid"
  AG_CONTAINERD_SOCK="$c/containerd.sock"
  echo "$AG_CONTAINERD_SOCK" >"$c/sock"
  local t="${AG_CONTAINERD_TIMEOUT:-60}"
  local pid; pid="$(cat "$c/pid")"
  if ! ag_wait_for_socket "$AG_CONTAINERD_SOCK" "$t" "$pid" ||
    ! ag_wait_until --pid "$pid" "$t" "CRI RuntimeReady and NetworkReady" ag__cri_ready "$dir"; then
    tail -30 "$c/containerd.log" >&2 || true
    return 1
  fi
  ag__log "containerd up at $AG_CONTAINERD_SOCK (pid $(cat "$c/pid"))"
}

ag__cri_ready() {
  local s
  s="$(ag_cri "$1" status)" || return 1
  [[ "$(grep -c '"status": true' <<<"$s")" -ge 2 ]]
}

# ag_cri DIR ARGS...: run the CRI client (agcri, a crictl stand-in built
# from k8s-cri) against DIR's containerd, or against AG_CRI_ENDPOINT when
# set (e.g. unix:///path/attestgate.sock, to go through the proxy). See
# `agcri --help` for commands; a gRPC error prints
# "rpc error: code = CODE desc = MESSAGE" on stderr and returns 3.
ag_cri() {
  ag__need 1 "ag_cri DIR ARGS..." "$@" || return 1
  local dir="${1}"; shift
  "$AG_CRI_BIN" --endpoint "${AG_CRI_ENDPOINT:-unix://$dir/containerd/containerd.sock}" "$@"
}

# ag_ctr DIR ARGS...: ctr against DIR's containerd, namespace AG_CTR_NS
# (default k8s.io, the CRI plugin's).
ag_ctr() {
  ag__need 1 "ag_ctr DIR ARGS..." "$@" || return 1
  local dir="${1}"; shift
  ctr --address "$dir/containerd/containerd.sock" -n "${AG_CTR_NS:-k8s.io}" "$@"
}

# ag_pod_config NAME [NAMESPACE=default] [UID=uid-NAME] [LOG_DIR]: print a
# PodSandboxConfig JSON: cgroup parent /attestgate/$AG_CGROUP_TAG/pod-UID and
# logs in LOG_DIR, default $AG_POD_LOG_ROOT/NAME (both set by
# ag_containerd_start, so call it after that in the same shell).
ag_pod_config() {
  ag__need 1 "ag_pod_config NAME [NAMESPACE] [UID] [LOG_DIR]" "$@" || return 1
  local name="${1}" ns="${2:-default}" uid="${3:-uid-$1}"
  local logdir="${4:-${AG_POD_LOG_ROOT:-/tmp/ag-pod-logs}/$name}"
  cat <<EOF
{
  "metadata": {"name": "$name", "namespace": "$ns", "uid": "$uid", "attempt": 0},
  "hostname": "$name",
  "log_directory": "$logdir",
  "labels": {"io.kubernetes.pod.name": "$name", "io.kubernetes.pod.namespace": "$ns", "io.kubernetes.pod.uid": "$uid"},
  "annotations": {"attestgate.test/pod": "$name"},
  "linux": {
    "cgroup_parent": "/attestgate/${AG_CGROUP_TAG:-default}/pod-$uid",
    "security_context": {"namespace_options": {"pid": "CONTAINER"}}
  }
}
EOF
}

# ag_container_config NAME IMAGE [ARG...]: print a ContainerConfig JSON; ARGs,
# when given, become `command` (replacing the image's ENTRYPOINT, as a k8s
# `command:` does; CRI `args` would be appended to it). Own PID namespace (as
# kubelet sets it); log file NAME.log in the pod's log_directory.
ag_container_config() {
  ag__need 2 "ag_container_config NAME IMAGE [ARG...]" "$@" || return 1
  local name="${1}" image="${2}"; shift 2
  local args="" a line=""
  for a in "$@"; do
    a="${a//\\/\\\\}"; a="${a//\"/\\\"}"
    args+="${args:+, }\"$a\""
  done
  (($# == 0)) || line='"command": ['"$args"'],'
  cat <<EOF
{
  "metadata": {"name": "$name", "attempt": 0},
  "image": {"image": "$image"},
  $line
  "log_path": "$name.log",
  "labels": {"io.kubernetes.container.name": "$name"},
  "linux": {"security_context": {"namespace_options": {"pid": "CONTAINER"}}}
}
EOF
}



# ag_cri_remove_all DIR: stop and remove every CRI pod sandbox (and so its
# containers) in DIR's containerd. Tolerates a dead containerd.
ag_cri_remove_all() {
  ag__need 1 "ag_cri_remove_all DIR" "$@" || return 1
  local dir="${1}" id
  ag__socket_connects "$dir/containerd/containerd.sock" || return 0
  for id in $(ag_cri "$dir" pods 2>/dev/null | sed -n 's/^ *"id": "\([0-9a-f]*\)".*/\1/p'); do
    ag_cri "$dir" stopp "$id" || ag__err "stopp $id failed"
    ag_cri "$dir" rmp "$id" || ag__err "rmp $id failed"
  done
}

# ag_containerd_stop DIR: tear DIR's containerd down and leave nothing behind:
# CRI pods stopped/removed (CNI DEL, netns), non-CRI tasks killed and deleted
# in every namespace, containerd SIGTERMed by pid, then leftovers by force:
# shims started for this socket, runc containers under DIR's runc root, mounts
# under DIR, the CNI bridge, IPAM/CNI cache files, our cgroups; ip_forward
# restored. Idempotent.
ag_containerd_stop() {
  ag__need 1 "ag_containerd_stop DIR" "$@" || return 1
  local dir="${1}" c="$1/containerd" ns id pid m h
  h="$(ag__hash "$dir")"
  if ag__socket_connects "$c/containerd.sock"; then
    ag_cri_remove_all "$dir"
    for ns in $(ctr --address "$c/containerd.sock" namespaces ls -q 2>/dev/null); do
      for id in $(ctr --address "$c/containerd.sock" -n "$ns" tasks ls -q 2>/dev/null); do
        ctr --address "$c/containerd.sock" -n "$ns" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
        # shellcheck disable=SC2016 # expanded by the inner bash
        ag_wait_until 10 "task $id to exit" bash -c \
          '! ctr --address "$0" -n "$1" tasks ls | grep -q "^$2 .*RUNNING"' \
          "$c/containerd.sock" "$ns" "$id" || true
        ctr --address "$c/containerd.sock" -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
      done
      [[ "$ns" == k8s.io ]] && continue
      for id in $(ctr --address "$c/containerd.sock" -n "$ns" containers ls -q 2>/dev/null); do
        ctr --address "$c/containerd.sock" -n "$ns" containers delete "$id" >/dev/null 2>&1 || true
      done
    done
  fi
  if [[ -f "$c/pid" ]]; then
    ag_stop_pid "$(cat "$c/pid")" "$c/config.toml" 30 && rm -f "$c/pid"
  fi
  # Force-clean whatever a crash or a failed test left: every task bundle
  # under our state dir. CRI tasks keep runc state in DIR (runtime option
  # Root); tasks made by plain `ctr run` use runc's default root under
  # /run/containerd/runc/NS, so look there too, but only act on a container
  # whose runc state names our bundle.
  local bundle root sock socks=()
  for bundle in "$c"/state/io.containerd.runtime.v2.task/*/*; do
    [[ -d "$bundle" ]] || continue
    id="${bundle##*/}"; ns="${bundle%/*}"; ns="${ns##*/}"
    for root in "$c/runc/$ns" "/run/containerd/runc/$ns"; do
      [[ -d "$root/$id" ]] || continue
      runc --root "$root" state "$id" 2>/dev/null | grep -qF "\"bundle\": \"$bundle\"" || continue
      ag__err "killing leftover container $ns/$id (runc root $root)"
      runc --root "$root" kill -a "$id" KILL >/dev/null 2>&1 || true
      # shellcheck disable=SC2016 # expanded by the inner bash
      ag_wait_until 10 "container $id to stop" bash -c \
        '! runc --root "$0" state "$1" 2>/dev/null | grep -q "\"status\": \"running\""' "$root" "$id" || true
      runc --root "$root" delete -f "$id" >/dev/null 2>&1 || true
    done
    # containerd 1.6 puts shim sockets in /run/containerd/s whatever `state` says
    if [[ -f "$bundle/address" ]]; then
      sock="$(sed 's|^unix://||' "$bundle/address")"
      [[ "$sock" == /run/containerd/s/* ]] && socks+=("$sock")
      # attestgate's forwarder in front of that runc shim (shim forward mode)
      socks+=("/run/containerd/s/$(printf 'attestgate-forward:unix://%s' "$sock" | sha256sum | cut -c1-64)")
    fi
  done
  local arg prev
  for pid in $(ag_pids_mentioning "$c/containerd.sock"); do
    ag__err "killing leftover pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)"
    # attestgate's shim forwarder: its socket is the argument after the action
    prev=""
    while IFS= read -r -d '' arg; do
      [[ "$prev" == attestgate-forward && "$arg" == /run/containerd/s/* ]] && socks+=("$arg")
      prev="$arg"
    done <"/proc/$pid/cmdline" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
  for sock in ${socks[@]+"${socks[@]}"}; do rm -f "$sock"; done
  while read -r m; do
    [[ -n "$m" ]] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || ag__err "cannot unmount $m"
  done < <(ag_mounts_under "$dir")
  if ip link show "agbr$h" >/dev/null 2>&1; then ip link del "agbr$h" 2>/dev/null || true; fi
  rm -f /var/lib/cni/results/"ag-$h"-* 2>/dev/null || true
  local cg
  for cg in /sys/fs/cgroup/*/attestgate/"$h"; do
    [[ -d "$cg" ]] || continue
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || ag__err "cgroup $cg not empty"
  done
  for cg in /sys/fs/cgroup/*/attestgate; do
    [[ -d "$cg" ]] || continue
    rmdir "$cg" 2>/dev/null || true # other environments may still use it
  done
  if [[ -f "$c/ip_forward.orig" ]] && ! ip -br link show type bridge 2>/dev/null | grep -q '^agbr'; then
    cat "$c/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward 2>/dev/null || true
    rm -f "$c/ip_forward.orig"
  fi
  return 0
}

# ag_assert_clean DIR: non-zero (and a list on stderr) if any process still
# mentions DIR, anything is mounted under DIR, or DIR's bridge exists.
ag_assert_clean() {
  ag__need 1 "ag_assert_clean DIR" "$@" || return 1
  local dir="${1}" bad=0 p h
  h="$(ag__hash "$dir")"
  for p in $(ag_pids_mentioning "$dir"); do
    ag__err "still running: $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-160)"; bad=1
  done
  if [[ -n "$(ag_mounts_under "$dir")" ]]; then
    ag__err "still mounted: $(ag_mounts_under "$dir" | tr '\n' ' ')"; bad=1
  fi
  if ip link show "agbr$h" >/dev/null 2>&1; then ag__err "bridge agbr$h still exists"; bad=1; fi
  return "$bad"
}

# ----------------------------------------------------------- one-shot -----

# ag_up DIR: registry + pause and app images pushed + containerd, in DIR.
# Sets AG_REGISTRY, AG_CONTAINERD_SOCK, AG_PAUSE_IMAGE, AG_PAUSE_DIGEST,
# AG_APP_IMAGE, AG_APP_DIGEST (also written to DIR/env as KEY=VALUE lines).
ag_up() {
  local dir="${1:-}"; ag__check_dir "$dir" || return 1
  ag_require || return 1
  ag_registry_start "$dir" || return 1
  ag_image_build_pause "$dir/oci" pause >/dev/null || return 1
  ag_image_build_app "$dir/oci" app >/dev/null || return 1
  AG_PAUSE_IMAGE="$AG_REGISTRY/attestgate/pause:1"
  AG_APP_IMAGE="$AG_REGISTRY/attestgate/app:1"
  AG_PAUSE_DIGEST="$(ag_image_push "$dir/oci" pause "$AG_PAUSE_IMAGE")" || return 1
  AG_APP_DIGEST="$(ag_image_push "$dir/oci" app "$AG_APP_IMAGE")" || return 1
  ag_containerd_start "$dir" "$AG_PAUSE_IMAGE" "$AG_REGISTRY" || return 1
  cat >"$dir/env" <<EOF
AG_REGISTRY=$AG_REGISTRY
AG_CONTAINERD_SOCK=$AG_CONTAINERD_SOCK
AG_PAUSE_IMAGE=$AG_PAUSE_IMAGE
AG_PAUSE_DIGEST=$AG_PAUSE_DIGEST
AG_APP_IMAGE=$AG_APP_IMAGE
AG_APP_DIGEST=$AG_APP_DIGEST
AG_CGROUP_TAG=$AG_CGROUP_TAG
EOF
}

# ag_down DIR: containerd then registry stopped; returns ag_assert_clean's
# verdict.
ag_down() {
  ag__need 1 "ag_down DIR" "$@" || return 1
  local dir="${1}"
  ag_containerd_stop "$dir"
  ag_registry_stop "$dir"
  ag_assert_clean "$dir"
}
