#!/usr/bin/env bash
# The test command: installs everything the suite needs (SIMDe for the emulated ISA build, torch's
# CPU build, the package built with its emulated paths) into .venv or the active virtualenv (see
# scripts/_setup.sh), then runs pytest with this script's arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

QR_STAGES=6
. scripts/_setup.sh
setup_env
setup_simde
setup_torch
setup_build_tools
setup_qruntime "emulated ISA paths on, dev extras" "about 5 min" -Ccmake.define.QRUNTIME_EMULATED_ISAS=ON ".[dev]"

stage "pytest"
echo
"$py" -m pytest "$@"
