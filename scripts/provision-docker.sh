#!/usr/bin/env bash
# Gets a real Docker engine and qwex's test image on a Debian machine, as
# root, with no registry reachable. Used by .ci/run; a developer can run it
# too. Idempotent: it installs, starts and builds only what is missing.
#
#   1. apt-get install docker.io busybox-static (if missing);
#   2. start dockerd in the background (if `docker info` does not answer) and wait for it;
#   3. build qwex-test/busybox:latest by `docker import` of a busybox-static tree.
#
# Exits non-zero, saying why, when an engine cannot be had.
set -euo pipefail

IMAGE=${QWEX_TEST_IMAGE:-qwex-test/busybox:latest}
LOG=${DOCKERD_LOG:-/var/log/qwex-dockerd.log}

say() { printf 'provision-docker: %s\n' "$*" >&2; }

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
[ -x /bin/busybox ] || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then say "need ${missing[*]} and am not root: install them, or run this as root"; exit 1; fi
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then say "no Docker engine answers and only root can start one here"; exit 1; fi
  say "starting dockerd (log: $LOG)"
  setsid nohup dockerd >"$LOG" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then say "dockerd did not answer within 30 s; its log:"; tail -20 "$LOG" >&2; exit 1; fi
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "building $IMAGE from busybox-static"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root/bin" "$root/tmp" "$root/etc"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for tool in $(/bin/busybox --list); do
    [ "$tool" = busybox ] || ln -s busybox "$root/bin/$tool"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' - "$IMAGE" >/dev/null
fi
say "ready: $(docker version --format '{{.Server.Version}}') with $IMAGE"
