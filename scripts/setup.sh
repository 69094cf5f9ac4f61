#!/usr/bin/env bash
# Installs the system packages lockstep's tests use (Debian/Ubuntu), only when missing:
#   dataset-fashion-mnist  Fashion-MNIST IDX files under /usr/share/datasets/fashion-mnist
#   mesa-vulkan-drivers    lavapipe, the software Vulkan driver the wgpu backend is tested on
#   python3-venv           the venv scripts/test.sh builds for the Python reference checks
#   fortunes               English text under /usr/share/games/fortunes (configs/gpt_char.toml)
#   openmpi-bin, libopenmpi-dev, libclang-dev
#                          Open MPI's mpirun and library, and the libclang rsmpi's bindgen needs:
#                          the `mpi` feature (`mpirun -n N lockstep train`, tests/suite/workers.rs)
set -euo pipefail
need=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
[ -e /usr/share/games/fortunes/songs-poems ] || need+=(fortunes)
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
[ -e /usr/include/x86_64-linux-gnu/openmpi/mpi.h ] || [ -e /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] \
    || pkg-config --exists ompi-c 2>/dev/null || need+=(libopenmpi-dev)
# libclang itself (libclang.so / libclang-N.so), not libclang-cpp, which other packages bring.
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* >/dev/null 2>&1 \
    || need+=(libclang-dev)
if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "setup: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
