#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs the whole suite with the
# one optimised profile the binary also uses, so Burn compiles once.
#
# Python reference checks (numpy interop, the MLflow client) run in a venv cached outside the
# clone, like the cargo target dir: $LOCKSTEP_VENV (default ~/.cache/lockstep-venv), created
# from PyPI on first use with the pinned versions below. With CI set, a test that cannot find
# what it needs (these packages, the wgpu adapter, the Fashion-MNIST files) fails; otherwise it
# is skipped and counted in the closing line: `N passed, N failed, N skipped`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The Vulkan loader complains on every adapter query when XDG_RUNTIME_DIR is unset.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

venv="${LOCKSTEP_VENV:-$HOME/.cache/lockstep-venv}"
py_pkgs=(numpy==2.4.6 safetensors==0.8.0 mlflow-skinny==3.17.2)
stamp="$venv/.lockstep-packages"
if [ "$(cat "$stamp" 2>/dev/null)" != "${py_pkgs[*]}" ]; then
    echo "test: creating the Python venv $venv (${py_pkgs[*]})" >&2
    if python3 -m venv --clear "$venv" && "$venv/bin/pip" install -q "${py_pkgs[@]}"; then
        echo "${py_pkgs[*]}" >"$stamp"
    else
        echo "test: could not create $venv (python3-venv and PyPI are needed); the Python checks will skip, or fail under CI" >&2
    fi
fi
if [ -x "$venv/bin/python" ]; then
    export LOCKSTEP_PYTHON="${LOCKSTEP_PYTHON:-$venv/bin/python}"
fi

log=$(mktemp)
skips=$(mktemp)
export LOCKSTEP_SKIP_LOG="$skips"
status=0
# `lockstep/mpi`: the binary the tests launch under `mpirun` (tests/suite/workers.rs).
cargo test --release --workspace --features lockstep/mpi "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo prints one `test result:` line per binary,
# the last of which is an empty doc-test run); skips are the checks that found something
# missing (tests/suite/harness.rs `require`), listed above the line.
if [ -s "$skips" ]; then
    echo "skipped (missing dependencies; CI=true turns these into failures):"
    sort "$skips" | uniq -c | sed 's/^/  /'
fi
awk -v skipped="$(wc -l <"$skips")" \
    '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, skipped }' "$log"
rm -f "$log" "$skips"
exit "$status"
