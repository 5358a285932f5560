#!/usr/bin/env bash
# The demo command: installs qruntime with its converter (torch pinned to the CPU build) and the
# digits data's scikit-learn, then trains, quantizes, saves, reloads without torch and compares.
set -euo pipefail
cd "$(dirname "$0")/.."

pip=(python3 -m pip install --quiet --disable-pip-version-check -c constraints.txt)
"${pip[@]}" torch==2.13.0            # first, so nothing below resolves a CUDA build
"${pip[@]}" scikit-build-core pybind11 ninja cmake
"${pip[@]}" --no-build-isolation ".[torch,demo]"

python3 scripts/demo.py
