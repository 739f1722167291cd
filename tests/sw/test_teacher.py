"""Knowledge distillation: the float teacher's logits file, its one-line errors, and a
distilled binary student that still deploys exactly."""

import json

import numpy as np
import pytest
import torch

from xnorflow.cli import main
from xnorflow.sw.data import load_digits
from xnorflow.sw.errors import UserError
from xnorflow.sw.teacher import load_teacher_logits, train_teacher
from xnorflow.sw.train import _kd_loss, train


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "t.npy"
    doc = train_teacher(digits, out, epochs=6, batch=64, augment=0, device="cpu",
                        log=lambda *a: None)
    return out, doc


def test_teacher_file_and_report(teacher, digits):
    out, doc = teacher
    z = load_teacher_logits(out, digits)
    assert z.shape == (len(digits.y_train), 10) and z.dtype == np.float32
    assert doc["test_acc"] > 0.5 and doc["device"] == "cpu"  # it learned something
    assert json.loads(out.with_name("t.npy.json").read_text())["epochs"] == 6
    assert (z.argmax(1) == digits.y_train).mean() == pytest.approx(doc["train_acc"])


def test_bad_teacher_files_are_one_line(tmp_path, digits):
    with pytest.raises(UserError, match="no such file"):
        load_teacher_logits(tmp_path / "none.npy", digits)
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a .npy array"):
        load_teacher_logits(tmp_path / "junk.npy", digits)
    np.save(tmp_path / "short.npy", np.zeros((5, 10), np.float32))
    with pytest.raises(UserError, match=r"needs float \(1437, 10\)"):
        load_teacher_logits(tmp_path / "short.npy", digits)
    bad = np.zeros((len(digits.y_train), 10), np.float32)
    bad[3, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(UserError, match="NaN"):
        load_teacher_logits(tmp_path / "nan.npy", digits)


def test_kd_term_is_zero_for_equal_logits_and_positive_otherwise():
    s = torch.randn(6, 10)
    assert _kd_loss(s, s.clone(), 4.0).abs().item() < 1e-6
    assert _kd_loss(s, torch.randn(6, 10), 4.0).item() > 0


def test_distilled_student_deploys_exactly(tmp_path, digits, teacher):
    cfg = {"model": "mlp", "dataset": "digits", "mode": "xnor", "widths": [32, 32]}
    m = train(cfg, tmp_path / "kd", epochs=2, batch=64, lr=1e-2, progress=False,
              log=lambda *a: None, data=digits, device="cpu", teacher=teacher[0],
              kd_alpha=0.7, kd_temp=4.0)
    assert m["hparams"]["teacher"] == str(teacher[0]) and m["hparams"]["kd_alpha"] == 0.7
    assert m["final"]["agreement"] == 1.0 and m["final"]["deploy_acc"] > 0.5
    with pytest.raises(UserError, match="needs --teacher"):
        train(cfg, tmp_path / "no", epochs=1, data=digits, kd_alpha=0.5, progress=False,
              log=lambda *a: None)


def test_cli_teacher_then_train(tmp_path, capsys):
    t = tmp_path / "t.npy"
    assert main(["teacher", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                 "-o", str(t)]) == 0
    assert "teacher test accuracy" in capsys.readouterr().out and t.is_file()
    out = tmp_path / "kd"
    assert main(["train", "--dataset", "digits", "--widths", "16", "--epochs", "1", "--quiet",
                 "--teacher", str(t), "-o", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["hparams"]["kd_alpha"] == 0.7
    assert main(["train", "--dataset", "digits", "--teacher", str(tmp_path / "nope.npy"),
                 "-o", str(tmp_path / "x")]) == 2
    assert "nope.npy: no such file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
