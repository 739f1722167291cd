"""Richer CNN topologies (``--widths`` conv tokens): the syntax, its one-line errors, the
built networks' shapes, and that each trained shape lowers and compiles bit-exactly."""

import numpy as np
import pytest
import torch

from xnorflow.cli import main
from xnorflow.sw import cpu_kernel, deploy, golden
from xnorflow.sw.data import Dataset, load_digits
from xnorflow.sw.errors import UserError
from xnorflow.sw.lower import lower
from xnorflow.sw.models import ConvSpec, build_model, conv_layers, make_config, parse_widths
from xnorflow.sw.program import build_memories, check_fits, execute
from xnorflow.sw.synthetic import geometry_target
from xnorflow.sw.train import predict, train


def test_tokens_and_short_form():
    assert parse_widths("cnn", "32,64:256") == {"conv": [32, 64], "dense": [256]}
    assert parse_widths("cnn", "64,64p,128,128p:512") == {
        "conv": ["64", "64p", "128", "128p"], "dense": [512]}
    w = parse_widths("cnn", "64k1, 128s2p, 32k5s1p3, 16p2:")
    assert w == {"conv": ["64k1", "128s2p", "32k5p3", "16p"], "dense": []}
    assert conv_layers(w) == [ConvSpec(64, 1, 1, 1), ConvSpec(128, 3, 2, 2),
                              ConvSpec(32, 5, 1, 3), ConvSpec(16, 3, 1, 2)]
    assert [s.pad for s in conv_layers(w)] == [0, 1, 2, 1]
    # ints (configs written before the tokens existed) mean 3x3 + 2x2 pool
    assert conv_layers({"conv": [32, "32"]}) == [ConvSpec(32, 3, 1, 2), ConvSpec(32)]
    for spec in conv_layers(w):
        assert conv_layers({"conv": [spec.token]}) == [spec]


@pytest.mark.parametrize("text,bad", [("64,6x4p:512", "'6x4p'"), ("64,64q:10", "'64q'"),
                                      ("64k2:10", "kernel k2 must be odd"),
                                      ("64s0:10", "stride s0"), ("64p1:10", "pool p1"),
                                      ("0p:10", "channels must be >= 1"),
                                      ("64p:ten", "bad dense width 'ten'")])
def test_bad_tokens_name_the_token(text, bad):
    with pytest.raises(UserError, match=bad.replace("'", ".")):
        parse_widths("cnn", text)


def test_cli_bad_widths_one_line(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["train", "--model", "cnn", "--widths", "64,64p,12x8:10", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'12x8'" in err[0] and not out.exists()
    assert main(["train", "--model", "mlp", "--widths", "64,-3", "-o", str(out)]) == 2
    assert "'-3'" in capsys.readouterr().err
    # a stack that shrinks the 8x8 digits below its kernel: refused, naming the conv
    assert main(["train", "--model", "cnn", "--widths", "8p,8p,8p,8p:", "-o", str(out)]) == 2
    assert "conv 4 ('8p')" in capsys.readouterr().err and not out.exists()


def test_shapes_of_a_vgg_stack():
    cfg = make_config("cnn", "t", (28, 28, 1), [str(i) for i in range(10)],
                      widths=parse_widths("cnn", "16,16p,32s2,32k1p:24"))
    m = build_model(cfg)
    _, hidden = m.forward_hidden(np.zeros((2, 28, 28, 1), np.uint8))
    assert [tuple(h.shape) for h in hidden] == [(2, 28, 28, 16), (2, 14, 14, 16),
                                                (2, 7, 7, 32), (2, 3, 3, 32), (2, 1, 1, 24)]


#: Small topologies for the 8x8 digits: several convs per stage, optional pooling, stride 2,
#: 1x1 and 5x5 kernels, a 3x3 pool and a net with no dense layer.
TOPOLOGIES = ["8,8p,16s2,16k1:16", "8k5,12p3,16k1:", "6s2,6,10k1p:12"]


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.mark.parametrize("widths", TOPOLOGIES)
def test_trained_topology_is_bit_exact_everywhere(tmp_path, digits, widths):
    """Two training steps, then float-sim == PyTorch deploy == golden == CPU kernel on the
    whole test split (hidden maps too), and the compiled images run by program.execute."""
    few = Dataset(digits.name, digits.x_train[:128], digits.y_train[:128], digits.x_test,
                  digits.y_test, digits.classes)
    torch.manual_seed(0)
    train({"model": "cnn", "dataset": "digits", "mode": "xnor", "in_bits": 4,
           "widths": parse_widths("cnn", widths), "ste": "approxsign"}, tmp_path, epochs=1,
          batch=64, lr=1e-2, data=few, progress=False, log=lambda *a, **k: None,
          device="cpu", final_eval=False)
    from xnorflow.sw.lower import load_checkpoint

    model, _ = load_checkpoint(tmp_path)
    cm = lower(model)
    x = digits.x_test
    g = golden.run(cm, x)
    d = deploy.run(cm, x, hidden=True)
    c = cpu_kernel.run(cm, x)
    assert np.array_equal(predict(model, x), g.predictions)
    assert np.array_equal(d.scores, g.scores) and np.array_equal(c.scores, g.scores)
    with torch.no_grad():
        _, hidden = model.forward_hidden(x)
    assert len(hidden) == len(g.activations) == len(cm.layers) - 1
    for h, a, b, k in zip(hidden, g.activations, d.activations, c.activations, strict=True):
        assert np.array_equal(h.numpy(), a) and np.array_equal(a, b)
        assert np.array_equal(a, k)
        assert 0 < a.mean() < 1  # the hidden bits are not constant
    target = geometry_target(2, 4, 32)
    check_fits(cm, target)
    mems = build_memories(cm, target)
    for i in range(3):
        assert np.array_equal(execute(mems, x[i], target).scores, g.scores[i])
