#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs the whole suite with the
# one optimised profile the binary also uses, so Burn compiles once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --release --workspace "$@"
