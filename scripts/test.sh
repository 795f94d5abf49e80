#!/usr/bin/env bash
# The project's test command: installs what the tests need, then format, lint and test.
#   scripts/test.sh          fast suite (unit, integration, namespace lab)
#   scripts/test.sh --vms    also the VM end-to-end tier (slow under TCG; CI always runs it)
#   scripts/test.sh --e2e    also the lab end-to-end suite (lab_suite.rs, lab_k3s.rs; CI runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
vms=0
e2e=0
for arg in "$@"; do
  case "$arg" in
    --vms) vms=1 ;;
    --e2e) e2e=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -eq 0 ]; then
  scripts/install-test-deps.sh
else
  echo "test.sh: not root; skipping package installs (tests needing namespaces or system tools will say what is missing)" >&2
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
if [ "$vms" = 1 ]; then export MUSTER_VM_TESTS=1; fi
if [ "$e2e" = 1 ]; then export MUSTER_E2E_TESTS=1; fi
# Measured figures (VM boot and assembly times, image builds): printed after the run,
# since libtest hides a passing test's output; also when a test failed (they help there).
# --no-fail-fast: one failing test binary does not hide the results of the others.
measured=${CARGO_TARGET_DIR:-target}/tmp/measured.txt
rm -f "$measured"
status=0
cargo test --workspace --no-fail-fast || status=$?
if [ -s "$measured" ]; then
  echo "== measured"
  cat "$measured"
fi
exit "$status"
