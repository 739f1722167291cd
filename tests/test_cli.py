"""The command line shell: help, version, and one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from xnorflow import __version__
from xnorflow.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"xnorflow {__version__}"


def test_help_lists_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "xnorflow demo" in out and "COMMAND" in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: xnorflow" in capsys.readouterr().out


def test_wrong_flag_is_one_line_no_traceback():
    r = subprocess.run([sys.executable, "-m", "xnorflow", "--no-such-flag"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "unrecognized arguments: --no-such-flag" in r.stderr


def test_every_subcommand_has_help_with_examples():
    from xnorflow.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "example" in text.lower(), f"xnorflow {name} --help has no examples"


def test_compile_prints_each_layers_mapping(tmp_path, capsys):
    """`xnorflow compile` names each layer's mapping as the program records it: for one image
    on ecp5-85f (a weight word per row) the digits MLP's hidden layers spread their column
    groups over the rows; on up5k, in batches, every layer is plain; -q prints only the
    summary."""
    ckpt = str(Path(__file__).parents[1] / "benchmarks/results/models/digits-mlp-xnor-in8-s0")
    assert main(["compile", ckpt, "--target", "ecp5-85f", "--max-batch", "1",
                 "-o", str(tmp_path / "one")]) == 0
    out = capsys.readouterr().out
    assert ("mapping per layer, program for 1 image(s) per run (docs/program.md): "
            "L0 spread, L1 spread, L2 plain") in out
    assert main(["compile", ckpt, "-o", str(tmp_path / "up5k")]) == 0
    assert "L0 plain, L1 plain, L2 plain" in capsys.readouterr().out
    assert main(["compile", ckpt, "-o", str(tmp_path / "q"), "-q"]) == 0
    assert "mapping per layer" not in capsys.readouterr().out
