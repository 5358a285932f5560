#!/usr/bin/env bash
# Runs the test suite against an AddressSanitizer + UBSan build of qruntime._core (emulated ISA paths
# included), built in build/sanitize and loaded ahead of the installed package. Slow; not part of CI.
# Run scripts/test.sh once first (it installs what the build and the tests need into .venv, or the
# active virtualenv), and run this with that environment active: . .venv/bin/activate
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/sanitize
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-omit-frame-pointer" -DQRUNTIME_EMULATED_ISAS=ON \
  -DPython_EXECUTABLE="$(command -v python3)" -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" >/dev/null
ninja -C "$build" >/dev/null
pkg="$build/site"
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r python/qruntime "$pkg/"
cp "$build"/_core*.so "$pkg/qruntime/"
cd tests
ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
PYTHONPATH="$PWD/../$pkg" python3 -m pytest -q -p no:cacheprovider "$@"
