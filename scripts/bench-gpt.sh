#!/usr/bin/env bash
# lockstep's GPT (configs/gpt_char.toml) against PyTorch-CPU running the same model and batch on
# this machine: tokens/s of each over the same number of training steps, and the ratio.
#   bash scripts/bench-gpt.sh [STEPS] [BACKEND] [ARITH]   (default 100 steps, flex, unfused;
#   ARITH = fma runs lockstep in the `train.arith = "fma"` profile)
# PyTorch comes from PyPI into a venv cached outside the clone ($LOCKSTEP_TORCH_VENV, default
# ~/.cache/lockstep-torch-venv); both use every core (`nproc`).
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-100}"
backend="${2:-flex}"
arith="${3:-unfused}"
threads="$(nproc)"
venv="${LOCKSTEP_TORCH_VENV:-$HOME/.cache/lockstep-torch-venv}"
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch numpy
fi
cargo build --release -q
out="$(mktemp -d)"
config=configs/gpt_char.toml
if [ "$arith" != unfused ]; then
    sed "s/^grad_clip = .*/&\narith = \"$arith\"/" configs/gpt_char.toml > "$out/gpt_char.toml"
    config="$out/gpt_char.toml"
fi
"${CARGO_TARGET_DIR:-target}/release/lockstep" train "$config" --out "$out/run" \
    --backend "$backend" --threads "$threads" --max-steps "$steps" >/dev/null
ours="$(tail -1 "$out/run/timing.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')"
theirs_line="$("$venv/bin/python" benches/gpt_torch.py --steps "$steps" --threads "$threads")"
theirs="$(echo "$theirs_line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')"
echo "$theirs_line"
python3 -c "print(f'lockstep ({\"$backend\"}, {\"$arith\"}, $threads threads): {$ours:.0f} tokens/s; PyTorch-CPU: {$theirs:.0f} tokens/s; lockstep / PyTorch = {$ours / $theirs:.2f}x')"
rm -rf "$out"
