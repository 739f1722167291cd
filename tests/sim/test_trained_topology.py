"""A trained VGG-style CNN with every new topology feature (two convs per stage, optional
pooling, stride 2, a 1x1 conv) on the accelerator in Amaranth's simulator: predictions,
scores and hidden maps equal golden, CPU kernel and PyTorch deploy bit for bit."""

from __future__ import annotations

import numpy as np

from xnorflow.sim import backends
from xnorflow.sim.compare import agreement
from xnorflow.sw.data import Dataset, load_digits
from xnorflow.sw.lower import lower_checkpoint
from xnorflow.sw.models import parse_widths
from xnorflow.sw.synthetic import geometry_target, write_folder
from xnorflow.sw.train import train


def test_trained_vgg_stack_on_amaranth(tmp_path):
    d = load_digits()
    few = Dataset(d.name, d.x_train[:128], d.y_train[:128], d.x_test, d.y_test, d.classes)
    ckpt = tmp_path / "ckpt"
    train({"model": "cnn", "dataset": "digits", "mode": "xnor", "in_bits": 4,
           "widths": parse_widths("cnn", "8,8p,16s2,16k1:16"), "ste": "approxsign"}, ckpt,
          epochs=1, batch=64, lr=1e-2, data=few, progress=False, log=lambda *a, **k: None,
          device="cpu", final_eval=False)
    cm = lower_checkpoint(ckpt)
    kinds = [(lay.kind, lay.kh, lay.stride, lay.pool_k) for lay in cm.layers]
    assert kinds == [("conv", 3, 1, 1), ("conv", 3, 1, 2), ("conv", 3, 2, 1), ("conv", 1, 1, 1),
                     ("dense", 2, 1, 1), ("dense", 1, 1, 1)]
    folder = tmp_path / "model"
    write_folder(cm, geometry_target(2, 4, 32), folder)
    px = d.x_test[:3]
    ref = backends.run(folder, px, "golden")
    for name in ("torch", "cpu", "amaranth"):
        out = backends.run(folder, px, name, progress=False)
        a = agreement(cm, ref, out)
        assert a.exact, (name, a.first)
        assert a.bits_compared > 0
    assert np.array_equal(out.predictions, ref.predictions)
    assert out.cycles is not None and (out.cycles > 0).all()
