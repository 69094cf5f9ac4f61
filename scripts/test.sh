#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs the whole suite with the
# one optimised profile the binary also uses, so Burn compiles once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The Vulkan loader complains on every adapter query when XDG_RUNTIME_DIR is unset.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo test --release --workspace "$@"
