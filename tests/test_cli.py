"""The command line shell: help, version, and one-line errors."""

import subprocess
import sys

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
