#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs the whole suite with the
# one optimised profile the binary also uses, so Burn compiles once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The Vulkan loader complains on every adapter query when XDG_RUNTIME_DIR is unset.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
log=$(mktemp)
status=0
cargo test --release --workspace "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo prints one `test result:` line per binary,
# the last of which is an empty doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
