#!/usr/bin/env bash
# Installs the system packages lockstep's tests use (Debian/Ubuntu), only when missing:
#   dataset-fashion-mnist  Fashion-MNIST IDX files under /usr/share/datasets/fashion-mnist
#   mesa-vulkan-drivers    lavapipe, the software Vulkan driver the wgpu backend is tested on
#   python3-venv           the venv scripts/test.sh builds for the Python reference checks
#   fortunes               English text under /usr/share/games/fortunes (configs/gpt_char.toml)
set -euo pipefail
need=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
[ -e /usr/share/games/fortunes/songs-poems ] || need+=(fortunes)
if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "setup: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
