"""``xnorflow compile`` through ``xnorflow.cli.main``: success, and one-line errors.

The lowering is replaced here (in :mod:`xnorflow.sw.compiler`, which the command runs) by a
stand-in that reads an IR saved in the "checkpoint" folder, so that these tests check the
compile step's logic (order of checks, atomic output,
error messages) quickly with hand-built models; the real program builder and targets are used,
wrapped to record the order of the calls. The end-to-end test from a trained checkpoint is
``test_compile_e2e.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from xnorflow import cli
from xnorflow.sw import compiler, program, synthetic
from xnorflow.sw.images import load_model_folder
from xnorflow.sw.ir import CompiledModel
from xnorflow.sw.targets import TARGETS

from .model_folders import mlp


@pytest.fixture
def flow(monkeypatch):
    """Stand-in lowering (reads an IR); the real check_fits/build_memories, calls recorded."""
    calls = []

    def lower_checkpoint(path):
        calls.append("lower")
        return CompiledModel.load(path)

    def check_fits(model, tgt, _real=program.check_fits, **kw):
        calls.append("check_fits")
        return _real(model, tgt, **kw)

    def build_memories(model, tgt, _real=program.build_memories, **kw):
        calls.append("build")
        return _real(model, tgt, **kw)

    monkeypatch.setattr(compiler, "lower_checkpoint", lower_checkpoint)
    monkeypatch.setattr(compiler, "check_fits", check_fits)
    monkeypatch.setattr(compiler, "build_memories", build_memories)
    return calls


def make_ckpt(folder, model):
    folder.mkdir()
    model.save(folder)
    return folder


@pytest.fixture
def ckpt(tmp_path):
    return make_ckpt(tmp_path / "ckpt", mlp())


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
    assert flow[:3] == ["lower", "check_fits", "build"]
    assert f"# Size report: target up5k ({TARGETS['up5k'].geometry})" in stdout
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(f"compiled {ckpt} -> {out}: 2 layers, 3 memories, "), last
    manifest, model, mems = load_model_folder(out, TARGETS["up5k"])
    assert manifest["target"]["name"] == "up5k"
    assert {m.name for m in mems} == {"weights", "thresholds", "program"}
    assert [layer.name for layer in model.layers] == ["fc1", "fc2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "out"]


def test_existing_output_needs_force(flow, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["compile", str(ckpt), "-o", str(out)]) == 0
    before = (out / "manifest.json").read_bytes()
    n_calls = len(flow)
    capsys.readouterr()
    err = one_line_error(capsys, cli.main(["compile", str(ckpt), "-t", "sim", "-o", str(out)]))
    assert "already exists; pass --force" in err
    assert (out / "manifest.json").read_bytes() == before
    assert len(flow) == n_calls  # refused before lowering again
    assert cli.main(["compile", str(ckpt), "-t", "sim", "-o", str(out), "--force", "-q"]) == 0
    assert load_model_folder(out)[0]["target"]["name"] == "sim"


def test_max_batch(flow, tmp_path, capsys):
    """--max-batch N: the program takes N images per run; 1 on ecp5-85f splits a dense layer
    across the rows (its weight word per row); a value outside 1..R is one line naming it,
    exit 2, nothing written."""
    model = synthetic.random_mlp(sizes=(512, 32, 10), in_shape=(1, 1, 512), in_bits=1, seed=2)
    ckpt = make_ckpt(tmp_path / "wide", model)
    for n in (1, 3):
        out = tmp_path / f"b{n}"
        assert cli.main(["compile", str(ckpt), "-t", "ecp5-85f", "--max-batch", str(n), "-q",
                         "-o", str(out)]) == 0
        header, descs = program.decode_memories(load_model_folder(out)[2])
        assert header["max_batch"] == n
        assert [d["ksplit"] for d in descs] == ([1, 0] if n == 1 else [0, 0])
    capsys.readouterr()
    for bad in ("0", "9", "-2"):
        err = one_line_error(capsys, cli.main(["compile", str(ckpt), "-t", "ecp5-85f",
                                               "--max-batch", bad, "-o", str(tmp_path / "x")]))
        assert f"batch {bad}: the accelerator runs 1..R = 1..8 images at once" in err
    assert not (tmp_path / "x").exists()


def test_missing_checkpoint(flow, tmp_path, capsys):
    err = one_line_error(capsys, cli.main(["compile", str(tmp_path / "nope"), "-o",
                                           str(tmp_path / "out")]))
    assert f"{tmp_path / 'nope'}: checkpoint not found" in err
    assert not (tmp_path / "out").exists()


def test_checkpoint_missing_a_file(flow, monkeypatch, tmp_path, capsys):
    def lower_checkpoint(path):
        open(path / "weights.pt")  # noqa: SIM115 - what a real loader would do

    monkeypatch.setattr(compiler, "lower_checkpoint", lower_checkpoint)
    (tmp_path / "ck").mkdir()
    err = one_line_error(capsys, cli.main(["compile", str(tmp_path / "ck"), "-o",
                                           str(tmp_path / "out")]))
    assert "not a complete checkpoint" in err and "weights.pt" in err


def test_unknown_target_lists_valid_ones(flow, ckpt, tmp_path, capsys):
    err = one_line_error(capsys, cli.main(["compile", str(ckpt), "--target", "zynq", "-o",
                                           str(tmp_path / "out")]))
    assert "unknown target 'zynq'; valid targets: " in err
    assert all(name in err for name in ("up5k", "hx8k", "ecp5-85f", "sim"))
    assert flow == []


def test_model_that_does_not_fit_writes_nothing(flow, tmp_path, capsys):
    ckpt = make_ckpt(tmp_path / "ckpt", mlp((784, 256, 256, 10)))
    err = one_line_error(capsys, cli.main(["compile", str(ckpt), "--target", "hx8k", "-o",
                                           str(tmp_path / "out")]))
    assert "layer 'fc1': memory 'weights' needs" in err
    assert "bits but target 'hx8k'" in err
    assert flow == ["lower", "check_fits"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_failure_while_building_leaves_no_folder(flow, ckpt, monkeypatch, tmp_path, capsys):
    def build_memories(model, tgt, _real=compiler.build_memories, **kw):
        mems = _real(model, tgt, **kw)
        prog = next(m for m in mems if m.name == "program")
        prog.words = np.append(prog.words, np.uint64(1 << 40))  # too wide: a bug
        return mems

    monkeypatch.setattr(compiler, "build_memories", build_memories)
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

