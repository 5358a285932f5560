#!/usr/bin/env bash
# The test command: installs everything the suite needs on a fresh machine (SIMDe for the emulated
# ISA build, torch pinned to the CPU build, the package built with its emulated paths), runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/include/simde/x86/avx512.h ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq libsimde-dev
fi

pip=(python3 -m pip install --quiet --disable-pip-version-check -c constraints.txt)
"${pip[@]}" torch==2.13.0            # first, so nothing below resolves a CUDA build
"${pip[@]}" scikit-build-core pybind11 ninja cmake
"${pip[@]}" --no-build-isolation -Ccmake.define.QRUNTIME_EMULATED_ISAS=ON ".[dev]"

python3 -m pytest "$@"
