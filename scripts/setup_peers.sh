#!/usr/bin/env bash
# Set up, from nothing, the peer CPU engines that benchmarks/peers.py measures xnorflow's CPU
# kernel against. Nothing here is needed by xnorflow itself or by its default tests.
#
#   Larq Compute Engine (LCE) 0.16.0, two virtual environments (PyPI wheels, cp311 manylinux):
#   - DIR/lce-convert: the converter, larq-compute-engine with tensorflow-cpu 2.15.1 (the last
#     TensorFlow with Keras 2, which larq needs) and larq 0.14.0 (numpy < 2);
#   - DIR/lce-run: the interpreter alone (numpy < 2, flatbuffers, larq-compute-engine
#     --no-deps); the worker imports interpreter_wrapper_lite directly because the package's
#     __init__ imports TensorFlow.
#   DIR/models/ caches the converted .tflite files (written by benchmarks/peers.py).
#
# Usage: scripts/setup_peers.sh [--dir DIR] [--python PY] [--check]
#   --dir DIR     where the environments go (default: .peers in the repository; git-ignored)
#   --python PY   a Python 3.11 interpreter (LCE 0.16.0 ships cp311 wheels; default python3.11)
#   --check       only say whether the environments are there (exit 0) or not (exit 1)
# Re-running is cheap: an environment whose stamp matches the package lists is left alone.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

usage() { sed -n '13,17p' "$0" | sed 's/^# \{0,1\}//'; }
die2() { echo "setup_peers: $*" >&2; exit 2; }

DIR="$ROOT/.peers"
PY=python3.11
CHECK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) [ $# -ge 2 ] && [ -n "$2" ] || die2 "--dir needs a folder"; DIR=$2; shift 2 ;;
        --dir=*) DIR=${1#--dir=}; [ -n "$DIR" ] || die2 "--dir needs a folder"; shift ;;
        --python) [ $# -ge 2 ] && [ -n "$2" ] || die2 "--python needs an interpreter"
                  PY=$2; shift 2 ;;
        --python=*) PY=${1#--python=}; shift ;;
        --check) CHECK=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die2 "unknown argument '$1' (try --help)" ;;
    esac
done
if [ -e "$DIR" ] && [ ! -d "$DIR" ]; then
    die2 "--dir '$DIR' exists and is not a folder"
fi

LCE=larq-compute-engine==0.16.0
CONVERT_PKGS=("$LCE" tensorflow-cpu==2.15.1 larq==0.14.0 "numpy<2")
RUN_PKGS=("numpy<2" "flatbuffers")
# the stamp is what is installed: a change of these lists rebuilds the environments
want=$(printf '%s\n' "$PY" "${CONVERT_PKGS[@]}" -- "${RUN_PKGS[@]}" "$LCE" | sha256sum | cut -d' ' -f1)

ready() { [ -x "$1/bin/python" ] && [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$want" ]; }

if [ "$CHECK" = 1 ]; then
    if ready "$DIR/lce-convert" && ready "$DIR/lce-run"; then
        echo "setup_peers: ready in $DIR"; exit 0
    fi
    echo "setup_peers: not set up in $DIR (run scripts/setup_peers.sh)"; exit 1
fi

command -v "$PY" >/dev/null 2>&1 || die2 "--python '$PY' not found"
ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$ver" = 3.11 ] || die2 "--python '$PY' is Python $ver; LCE 0.16.0 has wheels for 3.11 only"

mkdir -p "$DIR/models"
# a venv is built in a temporary folder and renamed into place: an interrupted run leaves
# nothing half-made under the final name
make_venv() {  # name, then pip arguments
    local name=$1; shift
    local dest="$DIR/$name"
    if ready "$dest"; then echo "setup_peers: $name ready"; return; fi
    local tmp="$DIR/.$name.tmp"
    rm -rf "$tmp"
    echo "setup_peers: creating $dest"
    "$PY" -m venv "$tmp"
    "$tmp/bin/python" -m pip install -q --upgrade pip
    "$@"
    echo "$want" > "$tmp/.stamp"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    # venv scripts hard-code their folder; python itself does not, and the rest is run as
    # `DIR/NAME/bin/python -m ...`
}
make_venv lce-convert bash -c \
    "\"$DIR/.lce-convert.tmp/bin/python\" -m pip install -q ${CONVERT_PKGS[*]@Q}"
make_venv lce-run bash -c \
    "\"$DIR/.lce-run.tmp/bin/python\" -m pip install -q ${RUN_PKGS[*]@Q} && \
     \"$DIR/.lce-run.tmp/bin/python\" -m pip install -q --no-deps $LCE"
echo "setup_peers: done ($DIR)"
