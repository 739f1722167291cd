"""Training: trained digits models agree with deploy/golden on every test prediction,
checkpoints are atomic, resume works, a NaN loss keeps the last good checkpoint, CLI."""

import hashlib
import json

import numpy as np
import pytest
import torch

from xnorflow.cli import main
from xnorflow.sw import deploy, golden
from xnorflow.sw import train as train_mod
from xnorflow.sw.data import load_digits
from xnorflow.sw.lower import load_checkpoint, lower, lower_checkpoint
from xnorflow.sw.train import TrainingDiverged, predict, train


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _quiet(*a, **k):
    pass


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("mode,in_bits,act_bits,ste", [
    ("xnor", 8, 1, "hardtanh"),
    ("xnor", 1, 1, "approxsign"),
    ("bnn", 4, 1, "hardtanh"),
    ("dorefa", 8, 2, "hardtanh"),
])
def test_trained_digits_float_sim_equals_deploy_equals_golden(tmp_path, digits, mode, in_bits,
                                                                act_bits, ste):
    cfg = {"model": "mlp", "dataset": "digits", "mode": mode, "widths": [48, 32],
           "in_bits": in_bits, "act_bits": act_bits, "ste": ste}
    m = train(cfg, tmp_path, epochs=2, batch=64, lr=0.01, progress=False, log=_quiet,
              data=digits)
    final = m["final"]
    assert final["agreement"] == 1.0 and final["deploy_acc"] == final["float_acc"]
    assert final["float_acc"] > 0.5  # it learned something in two epochs
    model, _ = load_checkpoint(tmp_path)
    cm = lower_checkpoint(tmp_path)
    fpred = predict(model, digits.x_test)
    g = golden.run(cm, digits.x_test)  # 100 % of the test set
    d = deploy.run(cm, digits.x_test, hidden=True)
    assert np.array_equal(fpred, g.predictions) and np.array_equal(d.predictions, g.predictions)
    assert np.array_equal(d.scores, g.scores)
    with torch.no_grad():
        _, hidden = model.forward_hidden(digits.x_test[:50])
    for h, a, b in zip(hidden, g.activations, d.activations, strict=True):
        assert np.array_equal(h.numpy(), a[:50]) and np.array_equal(a, b)


def test_files_resume_and_nan_keeps_last_good_checkpoint(tmp_path, digits, monkeypatch):
    cfg = {"model": "mlp", "dataset": "digits", "mode": "xnor", "widths": [16]}
    train(cfg, tmp_path, epochs=1, batch=128, progress=False, log=_quiet, data=digits)
    for name in ("checkpoint.pt", "config.json", "metrics.json", "curve.png"):
        assert (tmp_path / name).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    assert json.loads((tmp_path / "config.json").read_text())["input_shape"] == [8, 8, 1]
    m = train(cfg, tmp_path, epochs=2, batch=128, resume=True, progress=False, log=_quiet,
              data=digits)
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 2
    good = hashlib.sha256((tmp_path / "checkpoint.pt").read_bytes()).hexdigest()
    real_ce, calls = train_mod.F.cross_entropy, []

    def ce_goes_nan(logits, y, **kw):  # the loss becomes NaN at the 3rd step of epoch 3
        calls.append(1)
        loss = real_ce(logits, y, **kw)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(train_mod.F, "cross_entropy", ce_goes_nan)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(cfg, tmp_path, epochs=3, batch=128, resume=True, progress=False, log=_quiet,
              data=digits)
    monkeypatch.undo()
    assert len(calls) == 3
    assert hashlib.sha256((tmp_path / "checkpoint.pt").read_bytes()).hexdigest() == good
    model, state = load_checkpoint(tmp_path)
    assert state["epoch"] == 2
    acc = (predict(model, digits.x_test) == digits.y_test).mean()
    assert acc == state["history"][-1]["test_acc"] == m["history"][-1]["test_acc"]


def test_beta_is_dropped_at_deploy_and_costed(tmp_path, digits):
    cfg = {"model": "mlp", "dataset": "digits", "mode": "xnor", "widths": [32, 32],
           "beta": True}
    m = train(cfg, tmp_path, epochs=2, batch=64, progress=False, log=_quiet, data=digits)
    f = m["final"]
    assert f["agreement"] == 1.0  # deploy == float-sim with K switched off
    assert f["beta_cost"] == pytest.approx(f["float_acc"] - f["deploy_acc"])
    model, _ = load_checkpoint(tmp_path)
    assert lower(model).meta["beta_dropped"] is True


def test_cli_train(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "mlp", "--dataset", "digits", "--widths", "16",
               "--epochs", "1", "--quiet", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "deploy (integer) accuracy" in text and "float-sim accuracy" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and metrics["final"]["agreement"] == 1.0
    assert metrics["deploy_acc"] == metrics["final"]["deploy_acc"]
    rc = main(["train", "--dataset", "fashion-mnist", "--data-path", str(tmp_path / "none"),
               "-o", str(tmp_path / "x")])
    assert rc == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err
    assert main(["train", "--resume", "-o", str(tmp_path / "empty")]) == 2
    assert main(["train", "--mode", "dorefa", "--act-bits", "3", "-o", str(tmp_path / "y")]) == 2
