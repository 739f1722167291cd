#!/usr/bin/env bash
# Set up everything xnorflow's tests, benchmarks and demo need, from nothing:
#   1. system packages (Icarus Verilog, a C++ toolchain for Verilator, the Fashion-MNIST data);
#   2. a virtual environment in .venv with the project (editable) and its test extras.
# Re-running is cheap: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
APT_PACKAGES=(iverilog g++ make dataset-fashion-mnist)

need_apt=()
command -v iverilog >/dev/null 2>&1 || need_apt+=(iverilog)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)

if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing system packages: ${need_apt[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    else
        echo "setup: missing system packages: ${need_apt[*]}" >&2
        echo "setup: install them by hand (Debian/Ubuntu: sudo apt-get install ${APT_PACKAGES[*]})," >&2
        echo "setup: then run this command again. Fashion-MNIST is optional (benchmarks, demo)." >&2
        for p in "${need_apt[@]}"; do
            if [ "$p" != dataset-fashion-mnist ]; then exit 1; fi
        done
    fi
fi

stamp=.venv/.xnorflow-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; then
    exit 0
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PY" --version)"
    "$PY" -m venv .venv
fi
echo "setup: installing Python packages into .venv (first time: several minutes)"
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel of torch lies on this disk; pinning it first keeps pip from pulling a CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test]'
echo "$want" > "$stamp"
echo "setup: done"
