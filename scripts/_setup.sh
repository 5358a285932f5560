# The set-up shared by scripts/test.sh and scripts/demo.sh, sourced by them (not run on its own).
# It picks the Python environment, installs torch's CPU build and the build tools, and builds
# qruntime, printing one numbered line per stage with its time. pip's and apt's full output goes to
# build/setup.log, whose tail is shown if a stage fails.
#
# The environment: the active virtualenv if there is one ($VIRTUAL_ENV), else <repo>/.venv, made
# with `${PYTHON:-python3} -m venv` on the first run and reused after.
#
# torch: 2.13.0's CPU build. A wheel that pip finds without an index (its find-links) is taken
# first; else the wheel comes from PyTorch's CPU index ($QRUNTIME_TORCH_INDEX), and nothing else:
# PyPI's Linux torch is the CUDA build, several GB with its nvidia-* wheels. Then torch's own
# dependencies come from the usual index. constraints.txt pins torch for every later install.
#
# The caller sets QR_STAGES (its number of stages) and runs from the repository's root.

qr_torch=torch==2.13.0
qr_torch_index=${QRUNTIME_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
qr_log=build/setup.log
qr_stage_n=0
mkdir -p build
: >"$qr_log"

# stage TEXT: opens the next numbered stage. stage_done [TEXT]: closes it with its time.
stage() {
  qr_stage_n=$((qr_stage_n + 1))
  qr_t0=$SECONDS
  printf '[%d/%d] %s ... ' "$qr_stage_n" "$QR_STAGES" "$1"
}
stage_done() {
  printf '%s(%d s)\n' "${1:+$1 }" $((SECONDS - qr_t0))
}
fail() {
  printf '\nFAILED: %s\n--- last lines of %s ---\n' "$1" "$qr_log" >&2
  tail -n 30 "$qr_log" >&2
  exit 1
}
logged() { "$@" >>"$qr_log" 2>&1; }
pip_install() { logged "$py" -m pip install --disable-pip-version-check -c constraints.txt "$@"; }

setup_env() {
  stage "Python environment"
  local how
  if [ -n "${VIRTUAL_ENV:-}" ]; then
    qr_env=$VIRTUAL_ENV
    how="the active virtualenv"
  else
    qr_env=$PWD/.venv
    if "$qr_env/bin/python" -c '' 2>/dev/null; then
      how="reused"
    else
      how="created"
      logged "${PYTHON:-python3}" -m venv --clear "$qr_env" ||
        fail "${PYTHON:-python3} -m venv could not make $qr_env (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
  fi
  py=$qr_env/bin/python
  [ -x "$py" ] || fail "no python in $qr_env"
  export VIRTUAL_ENV=$qr_env PATH=$qr_env/bin:$PATH
  unset PYTHONHOME
  stage_done "$qr_env, $how, $("$py" -c 'import platform; print("Python", platform.python_version())')"
}

setup_simde() {
  stage "SIMDe headers, for the emulated ISA build"
  if [ -f /usr/include/simde/x86/avx512.h ]; then
    stage_done "already there"
    return
  fi
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  logged $sudo apt-get update -qq || fail "apt-get update"
  logged $sudo apt-get install -y -qq libsimde-dev || fail "apt-get install libsimde-dev"
  stage_done "installed libsimde-dev"
}

setup_torch() {
  stage "$qr_torch, CPU build"
  local have how
  have=$("$py" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
  if [ "${have%%+*}" = "${qr_torch#torch==}" ]; then
    how="already installed"
  elif logged "$py" -m pip install --disable-pip-version-check --no-index --no-deps "$qr_torch"; then
    how="from a local wheel"
  else
    # Only PyTorch's CPU index, and a short time-out: if it can't be reached this fails in seconds
    # rather than falling through to PyPI's CUDA build.
    logged "$py" -m pip install --disable-pip-version-check --no-deps --timeout 15 --retries 2 \
      --index-url "$qr_torch_index" "$qr_torch" ||
      fail "$qr_torch's CPU build: no local wheel, and none from $qr_torch_index (PyPI's is the CUDA build, not taken). Install it into $qr_env by hand and run this again."
    how="from $qr_torch_index"
  fi
  pip_install "$qr_torch" || fail "torch's dependencies"
  stage_done "$("$py" -c 'import importlib.metadata as m; print(m.version("torch"))') $how"
}

setup_build_tools() {
  stage "build tools (scikit-build-core, pybind11, ninja, cmake)"
  pip_install scikit-build-core pybind11 ninja cmake || fail "the build tools"
  stage_done "done"
}

# From pip -v's output, prints the packages pip gets, ninja's compile steps ("[n/m]" lines) and
# the final install, one line each, or on a terminal one line rewritten in place.
qr_progress_py='
import re, shutil, sys
tty = sys.stdout.isatty()
width = shutil.get_terminal_size().columns - 1
def show(text):
    text = "      " + text
    if tty:
        sys.stdout.write("\r\033[K" + text[:width])
    else:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    m = re.match(r"\s*(\[\d+/\d+\]) (.*)", line)
    if m:
        what = re.sub(r"^Building \w+ object \S+?\.dir/(\S+)\.o$", r"\1", m.group(2).strip())
        show(m.group(1) + " " + re.sub(r"^Linking .* (\S+)$", r"linking \1", what))
    elif line.startswith("Collecting "):
        show("getting " + line.split()[1])
    elif re.match(r"Processing \S+\.(whl|tar\.gz|zip)\b", line):
        show("getting " + " ".join(line.split()[1].rsplit("/", 1)[-1].split("-")[:2]))
    elif line.startswith("Installing collected packages: "):
        show("installing " + line.split(": ", 1)[1].strip())
if tty:
    sys.stdout.write("\r\033[K")
'

# setup_qruntime WHAT TIME PIP-ARGS...: builds and installs the package from this checkout; TIME is what the
# build takes on 2 cores.
setup_qruntime() {
  local what=$1 time=$2
  shift 2
  stage "qruntime, $what (C++ extension, $time)"
  echo
  "$py" -m pip install -v --disable-pip-version-check -c constraints.txt --no-build-isolation "$@" 2>&1 |
    tee -a "$qr_log" | "$py" -u -c "$qr_progress_py" || fail "building qruntime"
  printf '      '
  stage_done "built and installed"
}
