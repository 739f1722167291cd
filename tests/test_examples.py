"""The examples in README.md and in every ``--help`` are read from there (so they cannot
drift): every one must parse, a model given to ``synth`` must be built on its own target's
board and geometry, and the cheap ones run, in a scratch folder, with tiny inputs.

Cheap means seconds: training on digits (one or two epochs of a 64-32-32-10 MLP), compiling,
the software backends, one image on the simulated accelerator, a UART-loopback bitstream.
The rest (full data sets, Fashion-MNIST training, Verilator builds, whole-accelerator
synthesis, ASIC reports, a real board, DDP, the demo) are parsed and checked, not run; their
flows have their own tests.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from xnorflow import cli
from xnorflow.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("teacher", "train", "import", "compile", "run", "compare", "export", "synth", "sweep",
         "asic", "board", "demo")


def _strip(line: str) -> str:
    return re.sub(r"\s{2,}#.*$", "", line).strip()


def _commands(line: str) -> list[str]:
    """The ``xnorflow`` commands of one line (``a && b`` is two)."""
    return [c.strip() for c in line.split("&&") if c.strip().startswith("xnorflow ")]


def readme_examples() -> list[str]:
    """``xnorflow ...`` commands in README.md: code spans and shell blocks."""
    text = (ROOT / "README.md").read_text()
    spans = [" ".join(m.split()) for m in re.findall(r"`(xnorflow [^`]+)`", text)]
    # `xnorflow train --teacher` in prose names a flag; an example has more than that
    spans = [m for m in spans if not re.fullmatch(r"xnorflow \S+ --[\w-]+", m)]
    found = [c for m in spans for c in _commands(m)]
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        found += [c for ln in block.splitlines() for c in _commands(_strip(ln))]
    return found


def help_examples() -> list[str]:
    """The examples of ``xnorflow --help`` and of every subcommand's ``--help``."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    epilogs = [re.sub(r"\\\n\s*", " ", e)  # a command continued with a backslash
               for e in [cli.EPILOG] + [p.epilog or "" for p in sub.choices.values()]]
    return [c for e in epilogs for m in re.findall(r"^\s+(xnorflow \S.*)$", e, re.M)
            for c in _commands(_strip(m))]


def examples() -> list[list[str]]:
    """Every example with arguments, as argv (without ``xnorflow``), deduplicated; those
    with placeholders (``<g>``, ``DIR``, ``...``) are prose, not commands."""
    out: dict[str, list[str]] = {}
    for line in readme_examples() + help_examples():
        argv = shlex.split(line)[1:]
        if len(argv) < 2 or any("<" in a or a in ("DIR", "...") for a in argv):
            continue
        out.setdefault(" ".join(argv), argv)
    return sorted(out.values(), key=lambda a: ORDER.index(a[0]))


def _opt(argv: list[str], *names: str) -> str | None:
    for i, a in enumerate(argv):
        if a in names and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _set(argv: list[str], names: tuple[str, ...], value: str) -> list[str]:
    """``argv`` with option ``names[0]`` (or an alias) set to ``value``."""
    for i, a in enumerate(argv):
        if a in names:
            return [*argv[: i + 1], value, *argv[i + 2:]]
    return [*argv, names[0], value]


HW = {"amaranth", "icarus", "verilator"}


def tiny(argv: list[str]) -> tuple[list[str] | None, str]:
    """The example as it runs here (``None``: parsed only), and why."""
    cmd = argv[0]
    if cmd == "teacher":
        return None, "trains a float CNN on Fashion-MNIST (minutes)"
    if cmd == "train":
        if _opt(argv, "--dataset") not in (None, "digits"):
            return None, "trains on Fashion-MNIST (minutes)"
        if "--nproc" in argv:
            return None, "DDP: tests/sw/test_ddp.py"
        argv = _set(argv, ("--epochs",), "2" if "--resume" in argv else "1")
        if "--resume" not in argv and "--widths" not in argv:
            argv = _set(argv, ("--widths",), "32,32")  # loads over the simulated link 25x faster
        return argv, "1-2 epochs of a narrower MLP"
    if cmd == "import":
        return None, "needs a QONNX file: tests/sw/test_qonnx.py"
    if cmd == "export":
        return argv, "exports a compiled or trained model (seconds)"
    if cmd == "compile":
        if argv[1] != "runs/mlp":
            return None, "needs a Fashion-MNIST model or an imported QONNX one"
        return argv, "compiles the digits model"
    if cmd in ("run", "compare"):
        backends = set((_opt(argv, "--backend", "-b", "--backends") or "golden").split(","))
        if "board" in backends:
            return None, "needs a board on a serial port (tests/test_board_cli.py: a pty)"
        if "verilator" in backends or _opt(argv, "--dataset") not in (None, "digits"):
            return None, "Verilator build or Fashion-MNIST (minutes)"
        if backends & HW:
            return _set(argv, ("--limit", "-n"), "1"), "one image on the simulated accelerator"
        return argv, "software backends"
    if cmd == "synth" and _opt(argv, "--design") == "loopback":
        return argv, "a UART-loopback bitstream (seconds)"
    if cmd == "sweep" and _opt(argv, "--design") == "loopback":
        return argv, "one UART-loopback bitstream"
    return None, {"synth": "whole-accelerator synthesis (minutes)",
                  "sweep": "several syntheses", "board": "needs a board on a serial port",
                  "asic": "minutes of yosys and OpenSTA: tests/test_asic.py",
                  "demo": "tests/test_demo.py runs a shrunk demo"}[cmd]


def test_examples_were_found():
    got = {a[0] for a in examples()}
    assert set(ORDER) - {"demo"} <= got, got  # `xnorflow demo` alone has no arguments
    assert len(examples()) >= 30


@pytest.mark.parametrize("argv", examples(), ids=" ".join)
def test_example_parses(argv):
    args = build_parser().parse_args(argv)  # SystemExit (exit 2) on a drifted flag
    assert args.func is not None


def test_synth_models_run_on_their_own_board_and_geometry():
    """A model compiled for a target is synthesised on that target's board at its geometry
    (the examples paired runs/mlp-up5k, a 2x2x32 model, with UP5K builds of 4x4x16 and
    4x4x32, which do not fit the UP5K)."""
    from xnorflow.sw.boards import get_board
    from xnorflow.sw.targets import get_target

    checked = 0
    for argv in examples():
        model = _opt(argv, "--model", "-m", "--swap-model")
        if argv[0] != "synth" or model is None:
            continue
        target = get_target(model.rsplit("-", 1)[1])  # runs/<name>-<target>, as compiled
        assert target.board == _opt(argv, "--board"), argv
        board_default = get_target(get_board(target.board).target).geometry
        assert (_opt(argv, "--geometry") or board_default) == target.geometry, argv
        checked += 1
    assert checked >= 3


@pytest.mark.toolchain
def test_cheap_examples_run(tmp_path, monkeypatch, capsys):
    """Every cheap example, in order (train before compile before run ...), exits 0."""
    monkeypatch.chdir(tmp_path)
    ran, seen = [], set()
    for argv in examples():
        small, why = tiny(argv)
        if small is None:
            continue
        args = vars(build_parser().parse_args(small))
        same = repr(sorted((k, str(v)) for k, v in args.items() if k not in ("output", "func")))
        if same in seen:  # the same run as one before (flag aliases, another -o): skipped
            continue
        seen.add(same)
        rc = cli.main(small)
        out = capsys.readouterr()
        assert rc == 0, f"xnorflow {' '.join(small)} ({why}): exit {rc}\n{out.err[-2000:]}"
        ran.append(small[0])
    for cmd in ("train", "compile", "run", "compare", "export", "synth", "sweep"):
        assert cmd in ran, cmd
    assert (tmp_path / "runs" / "mlp-up5k" / "manifest.json").is_file()
