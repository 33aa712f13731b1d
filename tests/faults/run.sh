#!/usr/bin/env bash
# The fault-injection suite (README.md, "Fault injection"): builds dmq-faults and the dmq program
# under test (debug), then runs dmq-faults with the arguments given. Needs root.
#
#   tests/faults/run.sh --short                 # the CI run: ~120 s of faults, random seed
#   tests/faults/run.sh --duration-s 1800       # a long run
#   tests/faults/run.sh --seed 1234 --short     # replay a seed (the output prints this line)
#   tests/faults/run.sh --self-check            # a planted loss: passes only if the suite FAILS
#   tests/faults/run.sh --self-check --short    # both, as CI runs them
#
# Exit status: dmq-faults' own (0 pass, 1 violation or failure, 2 cannot run here, e.g. not
# root, 130 interrupted); with --self-check, 1 if the planted loss was not reported as LOST.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=${CARGO_TARGET_DIR:-target}
FAULTS=$TARGET/debug/dmq-faults
self_check=0
args=()
for a in "$@"; do
  if [ "$a" = --self-check ]; then self_check=1; else args+=("$a"); fi
done

# dmq-faults itself refuses to run without root (exit status 2) but plans without it
# (--plan-only).
cargo build -q -p dmq-tests --bin dmq-faults --bin dmq-under-test

if [ "$self_check" = 1 ]; then
  echo "== fault suite self-check: every broker's disk rewound, so acked writes vanish; the run must fail with LOST"
  out=$(mktemp)
  set +e
  "$FAULTS" --prefix dmqf-self --seed 7 --duration-s 12 --faults sabotage-rewind-broker-disks >"$out" 2>&1
  rc=$?
  set -e
  if [ "$rc" = 2 ]; then
    cat "$out"
    rm -f "$out"
    exit 2
  fi
  if [ "$rc" = 1 ] && grep -q '^  LOST *FAILED' "$out"; then
    grep -E '^  (LOST|DIVERGED|UNCOMMITTED_READ) ' "$out"
    echo "== self-check ok: the planted loss was caught (exit status 1)"
    rm -f "$out"
  else
    cat "$out"
    echo "== self-check FAILED: dmq-faults exited $rc without reporting LOST for a planted loss" >&2
    rm -f "$out"
    exit 1
  fi
  [ "${#args[@]}" = 0 ] && exit 0
fi

exec "$FAULTS" "${args[@]}"
