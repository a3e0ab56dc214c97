#!/bin/sh
# The whole suite: the type check (counted as one test), then every ava test
# with the TAP reporter. Prints ava's output as it runs and ends with exactly
# one line "N passed, N failed, N skipped"; exits non-zero if anything failed.
# Arguments go to ava (e.g. `npm test -- test/e2e/harness.test.ts`).
set -u
cd "$(dirname "$0")/.." || exit 2
# Node 24 and the tools come from node_modules/.bin (npm scripts add it too).
PATH="$PWD/node_modules/.bin:$PATH"
export PATH

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
skipped=0

# The kernel and DNS tests need the Debian packages in .ci/debian-packages.
# On a fresh Debian machine, as root, the missing ones are installed here, so
# `npm ci && npm test` is enough (elsewhere those tests name what is missing).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
  missing=""
  for pkg in $(sed -e 's/#.*//' .ci/debian-packages); do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    echo "# apt-get install$missing"
    # shellcheck disable=SC2086
    { DEBIAN_FRONTEND=noninteractive apt-get update -q && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; } </dev/null ||
      echo "# could not install$missing; the tests that need them will say so"
  fi
fi

# One command counted as one test: "check TITLE COMMAND...".
check() {
  title=$1
  shift
  echo "# $*"
  if "$@"; then
    passed=$((passed + 1))
    echo "ok - $title"
  else
    failed=$((failed + 1))
    echo "not ok - $title"
  fi
}

check "type check" tsc --noEmit -p .

echo "# ava --tap $*"
{ ava --tap "$@" 2>&1; echo $? >"$work/status"; } | tee "$work/tap"
status=$(cat "$work/status")

# TAP: "ok N - title", "not ok N - title", "... # SKIP", "... # TODO".
counts=$(awk '
  /^ok [0-9]+/     { if ($0 ~ /# (SKIP|TODO)/) s++; else p++; next }
  /^not ok [0-9]+/ { if ($0 ~ /# (SKIP|TODO)/) s++; else f++; next }
  END { printf "%d %d %d\n", p, f, s }
' "$work/tap")
set -- $counts
passed=$((passed + $1))
failed=$((failed + $2))
skipped=$((skipped + $3))
# ava failing without a failed test (a crash, a timeout, no test files) still fails the run.
if [ "$status" -ne 0 ] && [ "$2" -eq 0 ]; then
  echo "not ok - ava exited with status $status"
  failed=$((failed + 1))
fi

# In CI (or on request) every benchmark runs once at its small size, so its
# code cannot rot; it counts as one test. Its figures are not judged here:
# the full-size runs (`npm run bench`) are for measuring.
if [ "${CI:-}" = true ] || [ "${KPROXY_BENCH_SMOKE:-}" = 1 ]; then
  check "benchmarks at their small sizes" node bench/run.ts --quick
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
