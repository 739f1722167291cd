"""End to end: train a tiny digits MLP (``sw.train``), ``xnorflow compile`` it for ``sim``
and ``up5k`` (``sw.lower``, ``sw.program``'s builder), load the folder back and check that the
golden model on the loaded IR, and the sequencer model on the loaded images, give exactly what
the IR gave before it was saved."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xnorflow import cli
from xnorflow.sw.errors import UserError
from xnorflow.sw.images import load_model_folder


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    """A tiny digits MLP trained for a few steps with ``sw.train``."""
    from xnorflow.sw.data import Dataset, load_digits
    from xnorflow.sw.lower import lower_checkpoint
    from xnorflow.sw.train import train

    d = load_digits()
    few = Dataset(d.name, d.x_train[:640], d.y_train[:640], d.x_test, d.y_test, d.classes)
    out = tmp_path_factory.mktemp("digits") / "mlp"
    train({"model": "mlp", "dataset": "digits", "widths": [32, 32]}, out, epochs=2, batch=64,
          lr=1e-2, data=few, progress=False, log=lambda *a, **k: None)  # 20 steps
    return out, d, lower_checkpoint(out)  # the IR as compiled, never saved


@pytest.mark.parametrize("target_name", ["sim", "up5k"])
def test_compile_end_to_end(trained_digits, target_name, tmp_path, capsys):
    from xnorflow.sw import golden
    from xnorflow.sw.program import execute
    from xnorflow.sw.targets import get_target

    ckpt, data, before = trained_digits
    out = tmp_path / f"mlp-{target_name}"
    rc = cli.main(["compile", str(ckpt), "--target", target_name, "-o", str(out)])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert stdout.strip().splitlines()[-1].startswith(f"compiled {ckpt} -> {out}: 3 layers")
    tgt = get_target(target_name)
    manifest, loaded, mems = load_model_folder(out, tgt)
    assert loaded.meta["checkpoint_sha256"] == before.meta["checkpoint_sha256"]
    size = json.loads((out / "size.json").read_text())
    assert "trained model" in size["fp32_baseline"]
    assert size["fp32_params"] == loaded.meta["fp32_params"] > size["binary_weights"]
    x = data.x_test
    ref = golden.run(before, x)
    got = golden.run(loaded, x)
    assert np.array_equal(got.predictions, ref.predictions)
    assert np.array_equal(got.scores, ref.scores)
    assert (ref.predictions == data.y_test).mean() > 0.2  # it learned something
    # the loaded images, run as the sequencer runs them, agree too
    for i in range(4):
        assert np.array_equal(execute(mems, x[i], tgt).scores, ref.scores[i])
    # ... and a wrong target is refused
    other = "up5k" if target_name == "sim" else "sim"
    with pytest.raises(UserError, match=f"compiled for target '{target_name}'"):
        load_model_folder(out, get_target(other))


@pytest.mark.parametrize("content", [None, b"not a torch file"])
def test_broken_checkpoint_is_one_line_error(tmp_path, capsys, content):
    """Real lowering: an empty folder, or a damaged checkpoint.pt, is one line, no traceback."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    if content is not None:
        (ckpt / "checkpoint.pt").write_bytes(content)
        (ckpt / "config.json").write_text('{"model": "mlp"}')
    rc = cli.main(["compile", str(ckpt), "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc != 0 and "Traceback" not in out + err
    assert err.count("\n") == 1 and "checkpoint" in err and str(ckpt) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
