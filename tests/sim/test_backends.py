"""The one backend interface: software backends agree bit for bit; errors are one line."""

from __future__ import annotations

import numpy as np
import pytest

from xnorflow.sim import backends
from xnorflow.sim.compare import agreement
from xnorflow.sw import golden, synthetic
from xnorflow.sw.errors import UserError

from .conftest import make_folder


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_software_backends_bit_exact(tmp_path, seed):
    folder, model = make_folder(tmp_path, seed)
    px = synthetic.random_pixels(seed, model, 6)
    ref = golden.run(model, px)
    g = backends.run(folder, px, "golden")
    assert np.array_equal(g.scores, ref.scores)
    for name in ("cpu",):
        out = backends.run(folder, px, name)
        a = agreement(model, g, out)
        assert a.exact, a.first
        assert a.bits_compared == sum(x.size for x in ref.activations)
        assert a.accumulators_compared == sum(x.size for x in ref.accumulators)


def test_torch_backend_needs_checkpoint_record(tmp_path):
    folder, model = make_folder(tmp_path, 5)
    px = synthetic.random_pixels(5, model, 3)
    with pytest.raises(backends.BackendUnavailable, match="records no checkpoint"):
        backends.run(folder, px, "torch")
    # a folder that records its checkpoint runs the deploy mode, bit-exact with golden
    model.meta["checkpoint"] = "runs/x/checkpoint.pt"
    synthetic.write_folder(model, synthetic.geometry_target(4, 4, 32), tmp_path / "with-ckpt")
    out = backends.run(tmp_path / "with-ckpt", px, "torch")
    g = backends.run(tmp_path / "with-ckpt", px, "golden")
    a = agreement(model, g, out)
    assert a.exact and a.bits_compared > 0, a.first


def test_errors_are_user_errors(tmp_path):
    folder, model = make_folder(tmp_path, 3)
    px = synthetic.random_pixels(3, model, 2)
    with pytest.raises(UserError, match="unknown backend 'nope'"):
        backends.run(folder, px, "nope")
    with pytest.raises(UserError, match="no such model folder"):
        backends.run(tmp_path / "missing", px, "golden")
    with pytest.raises(UserError, match="compiled for target 'sim-4x4x32'"):
        backends.load_model(folder, target="up5k")
    with pytest.raises(UserError, match="expects"):
        backends.run(folder, px[:, :, :, :0], "golden")
    with pytest.raises(UserError, match="uint8"):
        backends.run(folder, px.astype(np.int32), "golden")
    with pytest.raises(UserError, match="hardware backend"):
        backends.run(folder, px, "golden", waves=tmp_path / "w.vcd")


def test_outputs_roundtrip(tmp_path):
    out = backends.Outputs("x", np.array([1, 2]), np.arange(6).reshape(2, 3),
                           [np.ones((2, 1, 1, 4), np.uint8), None],
                           cycles=np.array([10, 11]), sim_cycles=99, info={"a": 1})
    out.save(tmp_path / "o.npz")
    back = backends.Outputs.load(tmp_path / "o.npz")
    assert np.array_equal(back.scores, out.scores) and back.activations[1] is None
    assert np.array_equal(back.activations[0], out.activations[0])
    assert back.sim_cycles == 99 and back.info == {"a": 1} and list(back.cycles) == [10, 11]


def test_network_scoreboard_flags_first_difference(tmp_path):
    """The cocotb scoreboard names sample, layer and position of a corrupted bit or score."""
    from xnorflow.sim.tb.scoreboard import NetworkScoreboard

    _, model = make_folder(tmp_path, 41, layers=3)
    px = synthetic.random_pixels(41, model, 3)
    ref = golden.run(model, px)
    sb = NetworkScoreboard(model, ref)
    for i in range(3):
        acts = [a[i].copy() for a in ref.activations]
        scores = list(ref.scores[i])
        if i == 1:
            acts[1][0, 0, 0] ^= 1
        if i == 2:
            scores[-1] += 1
        sb.check(i, acts, scores, int(ref.predictions[i]))
    assert sb.mismatches == 2 and sb.checked == 3
    assert (sb.first.sample, sb.first.layer, sb.first.position) == (1, model.layers[1].name,
                                                                    (0, 0, 0))
    with pytest.raises(AssertionError, match="2 of 3 images differ"):
        sb.assert_clean()
