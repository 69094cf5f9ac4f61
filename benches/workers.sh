#!/usr/bin/env bash
# Data-parallel scaling: steps/s of one sharded job without MPI and on 1, 2 and 4 MPI workers
# (4 oversubscribed on a 2-core machine), against the named baseline measured in the same run:
# the same job with shards = 1 in one process. Also where a sharded step's time goes (the
# shards' forward/backward, the all-gather, the tree) and the bytes each worker sends per step,
# from the run's timing.jsonl.
#
#   benches/workers.sh [STEPS] [CONFIG]      (default: 300 steps of configs/fashion_mlp.toml)
#
# Needs Open MPI (scripts/setup.sh) and builds the binary with the `mpi` feature.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-300}"
config="${2:-configs/fashion_mlp.toml}"
shards=4
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lockstep-target}"
cargo build --release --features mpi -q
bin="$CARGO_TARGET_DIR/release/lockstep"
cores=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none LOCKSTEP_LOG=warn

sed "s/^\[train\]/[train]\nmax_steps = $steps/" "$config" >"$work/s1.toml"
sed "s/^\[train\]/[train]\nshards = $shards/" "$work/s1.toml" >"$work/s4.toml"

run() { # NAME WORKERS CONFIG: WORKERS = 0 runs without mpirun; each worker gets cores/N threads
    local name=$1 n=$2 cfg=$3 threads
    local cmd=("$bin" train "$cfg" --out "$work/$name" --threads "$cores")
    if [ "$n" != 0 ]; then
        threads=$(((cores + n - 1) / n))
        cmd=(mpirun --oversubscribe -n "$n" "$bin" train "$cfg" --out "$work/$name" --threads "$threads")
    fi
    "${cmd[@]}" >/dev/null 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
}

echo "workers bench: $(basename "$config") for $steps steps, shards = $shards, $cores cores"
run base 0 "$work/s1.toml"
run s4-none 0 "$work/s4.toml"
for n in 1 2 4; do run "s4-n$n" "$n" "$work/s4.toml"; done
for n in none n1 n2 n4; do
    cmp -s "$work/s4-none/final.safetensors" "$work/s4-$n/final.safetensors" \
        || { echo "FAIL: s4-$n differs from s4-none" >&2; exit 1; }
done
python3 - "$work" <<'EOF'
import json, sys, os
work = sys.argv[1]
def last(name):
    with open(os.path.join(work, name, "timing.jsonl")) as f:
        return json.loads(f.read().splitlines()[-1])
base = last("base")
print(f"{'job':<34}{'steps/s':>9}{'vs base':>9}{'shards s':>10}{'gather s':>10}{'tree s':>8}{'sent/step':>12}")
print(f"{'baseline: 1 process, shards = 1':<34}{base['steps_per_s']:>9.1f}{1.0:>9.2f}")
for name, label in [("s4-none", "1 process, shards = 4, no MPI"), ("s4-n1", "mpirun -n 1, shards = 4"),
                    ("s4-n2", "mpirun -n 2, shards = 4"), ("s4-n4", "mpirun -n 4 (oversubscribed)")]:
    t = last(name)
    print(f"{label:<34}{t['steps_per_s']:>9.1f}{t['steps_per_s'] / base['steps_per_s']:>9.2f}"
          f"{t['shards_s']:>10.2f}{t['exchange_s']:>10.2f}{t['combine_s']:>8.2f}{t['bytes_sent_per_step']:>12,}")
print("every sharded run gave the same final.safetensors bytes")
EOF
