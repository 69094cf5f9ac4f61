#!/usr/bin/env bash
# lockstep vs JAX on the CPU: the Fashion-MNIST MLP, Adam 1e-3, same batch and threads, samples/s
# and the ratio to JAX printed for burn's stock ops and lockstep's kernels in both arithmetic
# profiles (`train.arith = "unfused" | "fma"`). Sets up its own venv (jax[cpu] from PyPI) under
# .bench-venv/ (or $JAX_VENV), builds lockstep in release, needs dataset-fashion-mnist.
#
#   benches/jax_mlp.sh [EPOCHS] [SIZE]
#     SIZE small (default): 784-256-128-10, batch 128, EPOCHS epochs (default 3) of 468 steps
#     SIZE large          : 784-2048-2048-10, batch 512, EPOCHS epochs of 40 steps each
#
# Both sides are timed in the steady state, in `reps` interleaved rounds (a drift in the
# machine's speed then moves both sides of a ratio). JAX: the median epoch after the first
# (which compiles), then the median over the rounds. lockstep: runs stopped after 1 and after
# EPOCHS epochs (`--max-steps`, the same start-up, first steps and final checkpoint write in
# each), one of each per round, and the rate over the difference of their medians — the
# EPOCHS - 1 epochs after the first. The long runs' median whole-run rate (start-up and
# checkpoint included) is printed too.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-3}"
size="${2:-small}"
venv="${JAX_VENV:-.bench-venv}"
[ "$epochs" -ge 2 ] || { echo "jax_mlp.sh: EPOCHS is at least 2 (the first epoch is not timed), not '$epochs'" >&2; exit 2; }
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q "jax[cpu]" numpy; }
cargo build --release -q
tmp=$(mktemp -d)
case "$size" in
    small) hidden="256,128"; batch=128; steps=0; per_epoch=$((60000 / 128)) ;;
    large) hidden="2048,2048"; batch=512; steps=40; per_epoch=40 ;;
    *) echo "jax_mlp.sh: SIZE is small or large, not '$size'" >&2; exit 2 ;;
esac
# One epoch more than the runs take, so that both stop at --max-steps the same way; no
# checkpoint but the one each run writes where it stops.
sed -e "s/^epochs = 10/epochs = $((epochs + 1))/" -e "s/^eval_every = 0/eval_every = 0\ndrop_last = true/" \
    -e "s/^checkpoint_every = .*/checkpoint_every = 0/" \
    -e "s/^hidden = .*/hidden = [$hidden]/" -e "s/^batch_size = .*/batch_size = $batch/" \
    configs/fashion_mlp.toml > "$tmp/mlp.toml"
bin="${CARGO_TARGET_DIR:-target}/release/lockstep"
reps=3  # rounds; each runs every lockstep configuration at both lengths, then JAX
runs="burn lockstep lockstep-fma"
for run in $runs; do
    case "$run" in
        burn) set_train='kernels = "burn"' ;;
        lockstep) set_train='kernels = "lockstep"' ;;
        lockstep-fma) set_train='kernels = "lockstep"\narith = "fma"' ;;
    esac
    sed "s/^\[train\]/[train]\n$set_train/" "$tmp/mlp.toml" > "$tmp/$run.toml"
done
# Interleaved rounds, so that a drift in the machine's speed moves both sides of every ratio.
for rep in $(seq "$reps"); do
    for run in $runs; do
        "$bin" train "$tmp/$run.toml" --out "$tmp/short-$run-$rep" --backend flex --max-steps "$per_epoch" >/dev/null
        /usr/bin/time -f "%M" -o "$tmp/$run.rss" "$bin" train "$tmp/$run.toml" --out "$tmp/run-$run-$rep" --backend flex --max-steps "$((per_epoch * epochs))" >/dev/null
    done
    HIDDEN="$hidden" BATCH="$batch" MAX_STEPS="$steps" /usr/bin/time -f "%M" -o "$tmp/jax.rss" "$venv/bin/python" benches/jax_mlp.py "$epochs" > "$tmp/jax-$rep.json"
done
python3 - "$tmp" "$hidden" "$batch" "$reps" "$runs" <<'PY'
import json, sys
tmp, hidden, batch, reps, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split()
median = lambda xs: sorted(xs)[len(xs) // 2]
jaxes = [json.load(open(f"{tmp}/jax-{r}.json")) for r in range(1, reps + 1)]
jax = median([j["samples_per_s"] for j in jaxes])
rounds = ", ".join("%.0f" % j["samples_per_s"] for j in jaxes)
print(f"MLP 784-{hidden.replace(',', '-')}-10, batch {batch}, flex backend for lockstep; steady-state samples/s (after the first epoch), medians of {reps} interleaved rounds")
print(f"JAX-CPU             : {jax:8.0f} samples/s (rounds: {rounds}), test acc {jaxes[0]['test_accuracy']:.4f}, peak RSS {int(open(tmp + '/jax.rss').read()) // 1024} MB")
for k in runs:
    last = lambda run: [[json.loads(l) for l in open(f"{tmp}/{run}-{k}-{r}/timing.jsonl")][-1] for r in range(1, reps + 1)]
    short, full = last("short"), last("run")
    wall = median([f["wall_s"] for f in full]) - median([s["wall_s"] for s in short])
    sps = (full[0]["step"] - short[0]["step"]) * batch / wall
    print(f"lockstep {k:<12}: {sps:8.0f} samples/s (whole run {median([f['samples_per_s'] for f in full]):.0f}), peak RSS {int(open(f'{tmp}/{k}.rss').read()) // 1024} MB, throughput ratio vs JAX {sps / jax:.2f}x")
PY
rm -rf "$tmp"
