"""``xnorflow compile`` through ``xnorflow.cli.main``: success, and one-line errors.

The lowering (SW1) and program builder (HW2) are replaced here by small stand-ins so that
these tests check the command's own logic (order of checks, atomic output, error messages);
the end-to-end test with the real ones is in ``test_compile_e2e.py``.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from xnorflow import cli
from xnorflow.sw import targets
from xnorflow.sw.errors import UserError
from xnorflow.sw.images import load_model_folder

from .model_folders import mlp, standin_memories, target

TARGETS = {"up5k": target("up5k", weights_depth=4096), "sim": target("sim", 1, 1, 32),
           "tiny": target("tiny", weights_depth=8)}


@pytest.fixture
def flow(monkeypatch):
    """Stand-in lowering/program modules; records the order of the calls."""
    calls = []

    def lower_checkpoint(path):
        calls.append("lower")
        from xnorflow.sw.ir import CompiledModel

        return CompiledModel.load(path)

    def check_fits(model, tgt):
        calls.append("check_fits")
        need = sum(m.depth for m in standin_memories(model, tgt) if m.name == "weights")
        cap = tgt.memories["weights"][1]
        if cap is not None and need > cap:
            raise UserError(f"layer {model.layers[0].name!r}: memory 'weights' needs "
                            f"{need * tgt.width} bits, target {tgt.name} has {cap * tgt.width}")

    def build_memories(model, tgt):
        calls.append("build")
        return standin_memories(model, tgt)

    lower = types.ModuleType("xnorflow.sw.lower")
    lower.lower_checkpoint = lower_checkpoint
    program = types.ModuleType("xnorflow.sw.program")
    program.check_fits, program.build_memories = check_fits, build_memories
    monkeypatch.setitem(sys.modules, "xnorflow.sw.lower", lower)
    monkeypatch.setitem(sys.modules, "xnorflow.sw.program", program)
    monkeypatch.setattr(targets, "TARGETS", TARGETS, raising=False)
    monkeypatch.setattr(targets, "get_target", TARGETS.__getitem__, raising=False)
    return calls


@pytest.fixture
def ckpt(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    mlp().save(d)
    return d


def one_line_error(capsys, rc):
    out, err = capsys.readouterr()
    assert rc != 0
    assert "Traceback" not in err + out
    assert err.count("\n") == 1 and err.startswith("xnorflow compile: error: "), err
    return err


def test_compile_writes_a_loadable_folder_and_prints_the_report(flow, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["compile", str(ckpt), "--target", "up5k", "-o", str(out)])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert flow == ["lower", "check_fits", "build"]
    assert "# Size report: target up5k (4x4x32)" in stdout
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(f"compiled {ckpt} -> {out}: 2 layers, 3 memories, "), last
    manifest, model, mems = load_model_folder(out, TARGETS["up5k"])
    assert manifest["target"]["name"] == "up5k"
    assert [m.name for m in mems] == ["weights", "thresholds", "program"]
    assert [layer.name for layer in model.layers] == ["fc1", "fc2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "out"]


def test_existing_output_needs_force(flow, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["compile", str(ckpt), "-o", str(out)]) == 0
    before = (out / "manifest.json").read_bytes()
    capsys.readouterr()
    err = one_line_error(capsys, cli.main(["compile", str(ckpt), "-t", "sim", "-o", str(out)]))
    assert "already exists; pass --force" in err
    assert (out / "manifest.json").read_bytes() == before
    assert flow == ["lower", "check_fits", "build"]  # refused before lowering again
    assert cli.main(["compile", str(ckpt), "-t", "sim", "-o", str(out), "--force", "-q"]) == 0
    assert load_model_folder(out)[0]["target"]["name"] == "sim"


def test_missing_checkpoint(flow, tmp_path, capsys):
    err = one_line_error(capsys, cli.main(["compile", str(tmp_path / "nope"), "-o",
                                           str(tmp_path / "out")]))
    assert f"{tmp_path / 'nope'}: checkpoint not found" in err
    assert not (tmp_path / "out").exists()


def test_checkpoint_missing_a_file(flow, monkeypatch, tmp_path, capsys):
    def lower_checkpoint(path):
        open(path / "weights.pt")  # noqa: SIM115 - what a real loader would do

    monkeypatch.setattr(sys.modules["xnorflow.sw.lower"], "lower_checkpoint", lower_checkpoint)
    (tmp_path / "ck").mkdir()
    err = one_line_error(capsys, cli.main(["compile", str(tmp_path / "ck"), "-o",
                                           str(tmp_path / "out")]))
    assert "not a complete checkpoint" in err and "weights.pt" in err


def test_unknown_target_lists_valid_ones(flow, ckpt, tmp_path, capsys):
    err = one_line_error(capsys, cli.main(["compile", str(ckpt), "--target", "zynq", "-o",
                                           str(tmp_path / "out")]))
    assert "unknown target 'zynq'; valid targets: sim, tiny, up5k" in err
    assert flow == []


def test_model_that_does_not_fit_writes_nothing(flow, ckpt, tmp_path, capsys):
    err = one_line_error(capsys, cli.main(["compile", str(ckpt), "--target", "tiny", "-o",
                                           str(tmp_path / "out")]))
    assert "layer 'fc1': memory 'weights' needs" in err
    assert flow == ["lower", "check_fits"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_failure_while_building_leaves_no_folder(flow, ckpt, monkeypatch, tmp_path, capsys):
    def build_memories(model, tgt):
        mems = standin_memories(model, tgt)
        mems[2].words = np.append(mems[2].words, np.uint64(1 << 40))  # too wide: a bug
        return mems

    monkeypatch.setattr(sys.modules["xnorflow.sw.program"], "build_memories", build_memories)
    with pytest.raises(ValueError, match="does not fit 32 bits"):
        cli.main(["compile", str(ckpt), "-o", str(tmp_path / "out")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["compile", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "xnorflow compile runs/mlp --target up5k -o runs/mlp-up5k" in out
    assert "--force" in out and "docs/memory-images.md" in out
