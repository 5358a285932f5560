#!/usr/bin/env bash
# The demo command: installs qruntime with its converter (torch's CPU build) and the digits data's
# scikit-learn into .venv or the active virtualenv (see scripts/_setup.sh), then trains, quantizes,
# saves, reloads without torch and compares.
set -euo pipefail
cd "$(dirname "$0")/.."

QR_STAGES=5
. scripts/_setup.sh
setup_env
setup_torch
setup_build_tools
setup_qruntime "with torch and demo extras" "about 2 min" ".[torch,demo]"

stage "demo"
echo
"$py" scripts/demo.py
