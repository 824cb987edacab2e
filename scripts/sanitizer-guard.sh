#!/usr/bin/env bash
# Runs one test command so that a sanitizer report from ANY process it starts
# (the test binary, membraned, membrane-proxy, every membrane CLI call, a
# Python test's children) fails the test and is printed in its output.
#
# Usage: scripts/sanitizer-guard.sh COMMAND [ARGS...]
#
# ctest runs every test of a sanitized build (-DMEMBRANE_SANITIZE=address or
# thread) through this script. It points ASan/LSan, UBSan and TSan at one log
# directory per test run (log_path=<dir>/report, the runtime appends .<pid>),
# so a report from a daemon whose stderr goes to a log file nobody reads is
# still caught, then fails the test when any report was written. The
# environment is inherited by every child, so processes started through
# fork/exec (the agent's proxy, pods' own helpers) are covered too.
#
# Options a caller sets in ASAN_OPTIONS / UBSAN_OPTIONS / TSAN_OPTIONS are
# kept; log_path is always ours. Suppressions: tests/sanitizers/*.supp (only
# third-party code, one reason each).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
logs=$(mktemp -d "${TMPDIR:-/tmp}/membrane-sanitizer.XXXXXX")
trap 'rm -rf "$logs"' EXIT

supp="$here/tests/sanitizers"
# detect_leaks: LSan at every process exit. abort_on_error=0 + exitcode: the
# process exits non-zero, the report is in the log, and the test harness sees
# both. halt_on_error for UBSan: the build uses -fno-sanitize-recover, this
# keeps a runtime-only check (e.g. from a library) from going unnoticed.
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:check_initialization_order=1:${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$logs/report"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0:${LSAN_OPTIONS:+$LSAN_OPTIONS:}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}log_path=$logs/report"
# TSan: second_deadlock_stack for readable lock-order reports; die_after_fork=0
# because the agent forks children (pods, the proxy) that exec at once.
export TSAN_OPTIONS="second_deadlock_stack=1:die_after_fork=0:suppressions=$supp/tsan.supp:${TSAN_OPTIONS:+$TSAN_OPTIONS:}log_path=$logs/report"

"$@"
rc=$?

# A report file exists only when a runtime wrote to it (the file is opened on
# the first write). Every file is shown; the ones with a report fail the test.
shopt -s nullglob
files=("$logs"/*)
reports=0
for f in "${files[@]}"; do
  [ -s "$f" ] || continue
  if grep -qE 'ERROR: (Address|Leak|Thread|Memory)Sanitizer|WARNING: ThreadSanitizer|runtime error:|ERROR: libFuzzer|SUMMARY: [A-Za-z]+Sanitizer' "$f"; then
    reports=$((reports + 1))
    echo "==== sanitizer report from pid ${f##*.} ====" >&2
  else
    echo "==== sanitizer runtime output (not a report) from pid ${f##*.} ====" >&2
  fi
  cat "$f" >&2
done
if [ "$reports" -gt 0 ]; then
  echo "sanitizer-guard: $reports process(es) wrote a sanitizer report while running: $*" >&2
  [ "$rc" -eq 0 ] && rc=1
fi
exit "$rc"
