#!/usr/bin/env bash
# Runs every test tier of membrane with ctest:
#   unit        no root, in parallel
#   bpf         BPF_PROG_TEST_RUN on the real kernel (root)
#   privileged  real network namespaces, veths and traffic (root)
#   integration membraned + membrane CLI processes, real pods (root)
# Usage: scripts/run-tests.sh [BUILD_DIR] [extra ctest args]
set -uo pipefail
build=${1:-build}
shift || true
if [ "$(id -u)" != 0 ]; then
  echo "make test: the bpf, privileged and integration tiers need root (they load BPF programs and create network namespaces)." >&2
  echo "Run as root, or 'make test-unit' for the unit tier only." >&2
  exit 1
fi
# bpffs is needed for pinned maps; systemd mounts it on most machines.
if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf || { echo "cannot mount bpffs on /sys/fs/bpf" >&2; exit 1; }
fi
# Say which build and sanitizer the tiers run under (the summary names the labels).
san=$(sed -n 's/^MEMBRANE_SANITIZE:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null)
case "$san" in
  address|ON) what="ASan+UBSan (every process a test starts; reports fail the test)" ;;
  thread) what="TSan (every process a test starts; reports fail the test)" ;;
  *) what="no sanitizer" ;;
esac
echo "== membrane tests: build $build, $what; ctest ${*:-(all tiers)}"
echo "== the Label Time Summary at the end lists the tiers (labels) that ran"
# Unit tests in parallel, then the tiers that touch the kernel one at a time
# (ctest RUN_SERIAL), in one ctest run so that its summary covers every test.
exec ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "$@"
