#!/usr/bin/env bash
# lockstep's CPU == GPU check for the GPU in this machine. Needs only a built `lockstep` binary
# (and, optionally, the test-suite binary); no source checkout, no network.
#
#   scripts/gpu-check.sh [--lockstep PATH] [--tests PATH] [--device SEL] [--data DIR] [--work DIR]
#
#   --lockstep PATH  the binary (default: `lockstep` on PATH)
#   --tests PATH     the integration-test binary (target/release/deps/suite-*); runs its
#                    kernels_bitwise, cross_backend, subnormals and conformance tests on the GPU
#   --device SEL     wgpu adapter: default | discrete:N | integrated:N | virtual:N (default: default)
#   --data DIR       Fashion-MNIST IDX folder (default /usr/share/datasets/fashion-mnist);
#                    the Fashion-MNIST checks are skipped, and say so, when it is absent
#   --work DIR       where the runs go (default: a new temporary folder, kept for inspection)
#
# Prints the device's probe facts, then one verdict line per check (PASS / FAIL / SKIP) and a
# closing `N passed, N failed, N skipped` line; exits 1 when any check failed.
set -uo pipefail

LOCKSTEP=lockstep
TESTS=""
DEVICE=default
DATA=/usr/share/datasets/fashion-mnist
WORK=""
while (($#)); do
    case "$1" in
        --lockstep) LOCKSTEP=$2; shift 2 ;;
        --tests) TESTS=$2; shift 2 ;;
        --device) DEVICE=$2; shift 2 ;;
        --data) DATA=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
command -v "$LOCKSTEP" >/dev/null 2>&1 || { echo "gpu-check: no lockstep binary at '$LOCKSTEP' (pass --lockstep PATH)" >&2; exit 2; }
WORK=${WORK:-$(mktemp -d -t lockstep-gpu-check.XXXXXX)}
mkdir -p "$WORK"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$WORK}"
LOG="$WORK/log.txt"
: >"$LOG"
passed=0 failed=0 skipped=0
verdict() { # verdict PASS|FAIL|SKIP "what" ["detail"]
    case "$1" in PASS) passed=$((passed + 1)) ;; FAIL) failed=$((failed + 1)) ;; SKIP) skipped=$((skipped + 1)) ;; esac
    printf '%-4s  %-62s %s\n' "$1" "$2" "${3:-}"
}
run() { echo "+ $*" >>"$LOG"; "$@" >>"$LOG" 2>&1; }

# A job: a shipped config (`lockstep configs`, compiled into the binary) written to
# $WORK/NAME.toml with the data folder set and an optional sed edit.
job() { # job NAME CONFIG [SED]
    "$LOCKSTEP" configs "$2" | sed -e "s|^dir = .*|dir = \"$DATA\"|" ${3:+-e "$3"} >"$WORK/$1.toml"
}

echo "lockstep gpu-check: $("$LOCKSTEP" --version 2>/dev/null || echo lockstep), work dir $WORK"

# 1. The device and what the start-up probe finds there.
job probe digits_mlp
if run "$LOCKSTEP" train "$WORK/probe.toml" --out "$WORK/probe" --backend wgpu --device "$DEVICE" --max-steps 1; then
    m="$WORK/probe/manifest.json"
    fact() { grep -o "\"$1\": *\"[^\"]*\"" "$m" | head -n 1 | sed 's/.*: *"//; s/"$//'; }
    echo "device: $(fact adapter) (driver $(fact driver) $(fact driver_info), $(fact api))"
    for f in native_mad lockstep_mad lockstep_fma div_exact sqrt_exact ftz optim_exact; do
        echo "probe: arith.$f = $(fact "arith.$f")"
    done
    if [ "$(fact arith.lockstep_mad)" = unfused ] && [ "$(fact arith.optim_exact)" = true ]; then
        verdict PASS "probe: lockstep's kernels can give the CPU's bits here"
    else
        verdict FAIL "probe: lockstep_mad unfused and optim_exact true" "(see the facts above)"
    fi
else
    verdict FAIL "open the GPU (--backend wgpu --device $DEVICE)" "see $LOG"
    echo "$passed passed, $failed failed, $skipped skipped"
    exit 1
fi

# 2. Every op, forward and backward, CPU (reference) vs GPU under the declared table.
if run "$LOCKSTEP" conformance --backends "ndarray,wgpu"; then
    verdict PASS "lockstep conformance --backends ndarray,wgpu"
else
    verdict FAIL "lockstep conformance --backends ndarray,wgpu" "$(grep -c 'FAIL' "$LOG") FAIL rows, see $LOG"
fi

# 3. Training: the same job on the CPU and on the GPU must write the same bytes.
have_fashion=0
[ -e "$DATA/train-images-idx3-ubyte.gz" ] || [ -e "$DATA/train-images-idx3-ubyte" ] && have_fashion=1
compare_runs() { # compare_runs LABEL NAME STEPS
    local label=$1 name=$2 steps=$3 a="$WORK/$2-cpu" b="$WORK/$2-gpu"
    if ! run "$LOCKSTEP" train "$WORK/$name.toml" --out "$a" --backend ndarray --max-steps "$steps" ||
        ! run "$LOCKSTEP" train "$WORK/$name.toml" --out "$b" --backend wgpu --device "$DEVICE" --max-steps "$steps"; then
        verdict FAIL "$label: CPU vs GPU" "a run failed, see $LOG"
        return
    fi
    local ck
    ck=$(cd "$a/checkpoints" && ls | tail -n 1)
    for f in "checkpoints/$ck" metrics.jsonl; do
        if ! cmp -s "$a/$f" "$b/$f"; then
            verdict FAIL "$label: CPU vs GPU" "$f differs ($("$LOCKSTEP" diff "$a" "$b" 2>&1 | head -n 1))"
            return
        fi
    done
    verdict PASS "$label: CPU vs GPU, $steps steps" "$ck and metrics.jsonl identical"
}
job digits digits_mlp
compare_runs "digits MLP (relu, dropout)" digits 200
job gelu digits_mlp 's/^activation = .*/activation = "gelu"/'
compare_runs "digits MLP, gelu" gelu 100
job tanh digits_mlp 's/^activation = .*/activation = "tanh"/; s/^kind = "adam" .*/kind = "sgd"\nmomentum = 0.9/; /^betas = /d; /^eps = /d'
compare_runs "digits MLP, tanh, sgd" tanh 100
job cnn digits_mlp 's/^kind = "mlp" .*/kind = "cnn"\nchannels = [4, 8]\nkernel_size = 3\npool = "avg"/; s/^hidden = .*/hidden = [32]/'
compare_runs "digits CNN (avg pool)" cnn 40
# The `fma` arithmetic profile: CPU == GPU where the probe found the GPU's fma fused; refused
# (and nothing written) where it did not.
job digits_fma digits_mlp 's/^\[train\]$/[train]\narith = "fma"/'
if [ "$(fact arith.lockstep_fma)" = fused ]; then
    compare_runs "digits MLP, arith = fma" digits_fma 200
elif run "$LOCKSTEP" train "$WORK/digits_fma.toml" --out "$WORK/digits_fma-refused" --backend wgpu --device "$DEVICE"; then
    verdict FAIL "digits MLP, arith = fma" "the probe found arith.lockstep_fma = $(fact arith.lockstep_fma), yet the GPU run was not refused"
elif [ -e "$WORK/digits_fma-refused" ]; then
    verdict FAIL "digits MLP, arith = fma" "the refused run wrote $WORK/digits_fma-refused"
else
    verdict PASS "digits MLP, arith = fma: refused on this GPU" "its fma does not round once (arith.lockstep_fma = $(fact arith.lockstep_fma))"
fi
if ((have_fashion)); then
    job fashion_mlp fashion_mlp
    compare_runs "fashion_mlp" fashion_mlp 60
    job fashion_cnn fashion_cnn
    compare_runs "fashion_cnn" fashion_cnn 20
else
    verdict SKIP "fashion_mlp, fashion_cnn: CPU vs GPU" "no Fashion-MNIST at $DATA (--data DIR)"
fi

# 4. The deployment check across devices: the CPU-trained run's scores recomputed on the GPU.
if run "$LOCKSTEP" train "$WORK/digits.toml" --out "$WORK/digits-final" --backend ndarray; then
    if run "$LOCKSTEP" verify "$WORK/digits-final" --backend wgpu --batch-size 7; then
        verdict PASS "verify a CPU-trained run on the GPU (batch 7)"
    else
        verdict FAIL "verify a CPU-trained run on the GPU (batch 7)" "see $LOG"
    fi
fi

# 5. The test suite's GPU checks, when the test binary is given.
if [ -n "$TESTS" ]; then
    if run "$TESTS" --test-threads 1 kernels_bitwise cross_backend subnormals conformance arith_profiles; then
        verdict PASS "test binary: kernels_bitwise, cross_backend, subnormals, conformance, arith_profiles" "$(grep -o '[0-9]* passed; [0-9]* failed' "$LOG" | tail -n 1)"
    else
        verdict FAIL "test binary: kernels_bitwise, cross_backend, subnormals, conformance, arith_profiles" "$(grep -o '[0-9]* passed; [0-9]* failed' "$LOG" | tail -n 1), see $LOG"
    fi
else
    verdict SKIP "test binary" "pass --tests target/release/deps/suite-<hash> to run it"
fi

echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))
