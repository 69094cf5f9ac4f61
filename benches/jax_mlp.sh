#!/usr/bin/env bash
# lockstep vs JAX on the CPU: the Fashion-MNIST MLP (784-256-128-10, Adam 1e-3, batch 128),
# same batch size and threads, epoch time and samples/s, ratio printed. Sets up its own venv
# (jax[cpu] from PyPI) under .bench-venv/, builds lockstep in release, needs
# dataset-fashion-mnist. Usage: benches/jax_mlp.sh [EPOCHS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-3}"
venv="${JAX_VENV:-.bench-venv}"
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q "jax[cpu]" numpy; }
cargo build --release -q
tmp=$(mktemp -d)
sed -e "s/^epochs = 10/epochs = $epochs/" -e "s/^eval_every = 0/eval_every = 0\ndrop_last = true/" configs/fashion_mlp.toml > "$tmp/mlp.toml"
bin="${CARGO_TARGET_DIR:-target}/release/lockstep"
for kernels in burn lockstep; do
    sed "s/^\[train\]/[train]\nkernels = \"$kernels\"/" "$tmp/mlp.toml" > "$tmp/$kernels.toml"
    /usr/bin/time -f "%M" -o "$tmp/$kernels.rss" "$bin" train "$tmp/$kernels.toml" --out "$tmp/run-$kernels" --backend flex >/dev/null
done
jax=$(/usr/bin/time -f "%M" -o "$tmp/jax.rss" "$venv/bin/python" benches/jax_mlp.py "$epochs")
python3 - "$tmp" "$jax" <<'PY'
import json, sys
tmp, jax = sys.argv[1], json.loads(sys.argv[2])
spe = 60000 // 128
print(f"JAX-CPU        : {jax['median_epoch_s']:.3f} s/epoch, {jax['samples_per_s']:.0f} samples/s, test acc {jax['test_accuracy']:.4f}, peak RSS {int(open(tmp + '/jax.rss').read()) // 1024} MB")
for k in ("burn", "lockstep"):
    t = [json.loads(l) for l in open(f"{tmp}/run-{k}/timing.jsonl")][-1]
    acc = json.load(open(f"{tmp}/run-{k}/scores.json"))["splits"]["test"]["accuracy"]
    sps = t["samples_per_s"]
    print(f"lockstep {k:<8}: {spe * 128 / sps:.3f} s/epoch, {sps:.0f} samples/s, test acc {acc:.4f}, peak RSS {int(open(f'{tmp}/{k}.rss').read()) // 1024} MB, throughput ratio vs JAX {sps / jax['samples_per_s']:.2f}x")
PY
rm -rf "$tmp"
