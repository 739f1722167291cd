"""Lowering: exact thresholds, constant channels, ties, pool AND, deploy == golden bit for bit."""

import hashlib
import json

import numpy as np
import pytest
import torch

from xnorflow.sw import deploy, golden, lower
from xnorflow.sw import encoding as enc
from xnorflow.sw.errors import UserError
from xnorflow.sw.models import build_model, make_config, parse_widths

CLASSES = [str(i) for i in range(10)]


def _randomise_bn(model, seed=0, zero_gamma=True):
    g = torch.Generator().manual_seed(seed)
    for b in model.blocks:
        if b.bn is None:
            continue
        c = b.bn.channels
        with torch.no_grad():
            b.bn.weight.copy_(torch.randn(c, generator=g))  # about half negative slopes
            if zero_gamma:
                b.bn.weight[0] = 0.0  # constant channel
            b.bn.bias.copy_(torch.randn(c, generator=g) * 0.5)
            b.bn.running_mean.copy_(torch.randn(c, generator=g) * 3)
            b.bn.running_var.copy_(torch.rand(c, generator=g) * 5 + 0.1)
    return model.eval()


def _check_exact(model, cm, x):
    """float-sim == golden == deploy on hidden bits, scores and predictions."""
    with torch.no_grad():
        logits, hidden = model.forward_hidden(x)
    g = golden.run(cm, x)
    d = deploy.run(cm, x, batch_size=7, hidden=True)
    assert np.array_equal(logits.argmax(1).numpy(), g.predictions)
    assert np.array_equal(d.predictions, g.predictions)
    assert np.array_equal(d.scores, g.scores)
    np.testing.assert_allclose(g.logits, logits.double().numpy(), rtol=1e-5)  # float32 vs 64
    assert len(hidden) == len(g.activations) == len(d.activations)
    for h, a, b in zip(hidden, g.activations, d.activations, strict=True):
        assert np.array_equal(h.numpy(), a) and np.array_equal(a, b)
    # accumulators of every layer, on the golden's own layer inputs
    xs = [enc.quantize_pixels(x, cm.layers[0].in_bits)] + g.activations
    for layer, xi, acc in zip(cm.layers, xs, g.accumulators, strict=True):
        assert np.array_equal(deploy.layer_accumulators(layer, xi), acc)
    return g


CASES = [
    ("mlp", (8, 8, 1), "xnor", "24,16", False, 8, 1),
    ("mlp", (8, 8, 1), "xnor", "24", True, 1, 1),
    ("mlp", (4, 4, 3), "bnn", "16,16", True, 3, 1),
    ("mlp", (8, 8, 1), "dorefa", "24,16", False, 4, 2),
    ("mlp", (8, 8, 1), "dorefa", "16", False, 8, 4),
    ("cnn", (12, 12, 1), "xnor", "8,16:16", True, 8, 1),
    ("cnn", (12, 12, 2), "dorefa", "8,8:", False, 2, 2),
    ("cnn", (8, 8, 1), "bnn", "6:", False, 5, 1),
]


@pytest.mark.parametrize("name,shape,mode,widths,relu,in_bits,act_bits", CASES)
def test_random_models_exact(name, shape, mode, widths, relu, in_bits, act_bits):
    torch.manual_seed(1)
    cfg = make_config(name, "t", shape, CLASSES, mode, parse_widths(name, widths), in_bits,
                      act_bits, relu=relu)
    model = _randomise_bn(build_model(cfg))
    cm = lower.lower(model)
    cm.validate()
    assert cm.meta["mode"] == mode and cm.meta["model"] == name
    assert cm.layers[0].in_bits == in_bits and not cm.layers[0].signed_input
    x = np.random.default_rng(2).integers(0, 256, (40,) + shape, dtype=np.uint8)
    _check_exact(model, cm, x)
    hid = cm.layers[:-1]
    assert any((layer.polarity < 0).any() for layer in hid)  # negative slopes exercised
    if mode == "dorefa":
        assert all(lay.out_bits == act_bits and not lay.out_signed for lay in hid)
        assert all(lay.thresholds.shape[1] == (1 << act_bits) - 1 for lay in hid)
    for layer in cm.layers:
        assert layer.meta["acc_bits"] == layer.acc_bits and layer.acc_bits <= lower.MAX_ACC_BITS


def test_pool_and_after_decreasing_channel():
    cfg = make_config("cnn", "t", (8, 8, 1), CLASSES, "bnn", parse_widths("cnn", "4,4:"), 8)
    model = _randomise_bn(build_model(cfg), zero_gamma=False)
    with torch.no_grad():
        model.blocks[1].bn.weight.copy_(torch.tensor([1.0, -1.0, 2.0, -0.5]))
    cm = lower.lower(model)
    l0 = cm.layers[0]
    assert l0.pool_k == 2
    assert l0.polarity.tolist()[1] == -1 and l0.polarity.tolist()[3] == -1
    assert l0.pool_ops.tolist() == [enc.POOL_OR, enc.POOL_AND, enc.POOL_OR, enc.POOL_AND]
    _check_exact(model, cm, np.random.default_rng(3).integers(0, 256, (30, 8, 8, 1), np.uint8))


def test_constant_channels():
    cfg = make_config("mlp", "t", (4, 4, 1), CLASSES, "xnor", [4, 4], 8)
    model = build_model(cfg).eval()
    bn = model.blocks[1].bn
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0]))
        bn.bias.copy_(torch.tensor([0.5, -0.5, 0.0, 0.0]))  # gamma 0, beta 0 -> sign(0) = +1
    layer = lower.lower(model).layers[0]
    amax = layer.acc_max
    assert layer.thresholds[:, 0].tolist()[:2] == [0, amax + 1]
    assert layer.thresholds[3, 0] == 0
    assert layer.polarity.tolist()[:2] == [1, 1] and layer.polarity[3] == 1
    acc = np.arange(amax + 1)[:, None]
    bits = enc.threshold_bits(acc, layer.thresholds[:, 0], layer.polarity)
    assert bits[:, 0].all() and not bits[:, 1].any() and bits[:, 3].all()


@pytest.mark.parametrize("gamma", [1.5, -1.5])
def test_value_exactly_on_threshold(gamma):
    """BN maps the dot of sample 0 to exactly 0.0 in every channel: sign(0) = +1 must win."""
    cfg = make_config("mlp", "t", (4, 4, 1), CLASSES, "bnn", [8, 8], 8)
    model = build_model(cfg).eval()
    x = np.random.default_rng(4).integers(0, 256, (5, 4, 4, 1), dtype=np.uint8)
    with torch.no_grad():
        first = model.blocks[0].op
        dot0 = first.dot(model.quantize(x).reshape(5, -1))[0]  # exact integers
        bn = model.blocks[1].bn
        bn.running_mean.copy_(dot0)
        bn.running_var.fill_(1.0)
        bn.weight.fill_(gamma)
        bn.bias.zero_()
        assert (bn(dot0[None]) == 0).all()  # exactly on the threshold in float-sim
    cm = lower.lower(model)
    layer = cm.layers[0]
    g = _check_exact(model, cm, x)
    acc0 = g.accumulators[0][0, 0, 0]
    assert np.array_equal(layer.thresholds[:, 0], acc0)  # T is the tie value itself
    assert (layer.polarity == (1 if gamma > 0 else -1)).all()
    assert g.activations[0][0].all()  # the tie gives bit 1 for both polarities


def test_fold_thresholds_brute_force():
    rng = np.random.default_rng(5)
    slopes = torch.tensor(rng.normal(size=6), dtype=torch.float32)
    slopes[2] = 0.0
    offs = torch.tensor(rng.normal(size=6) * 20, dtype=torch.float32)

    def levels(dot):
        y = dot * slopes + offs
        return torch.round(torch.clamp(y / 10 + 0.5, 0, 1) * 3).to(torch.int64)

    def to_dot(acc):
        return (acc - 30).to(torch.float32)

    level_of_acc = lower.torch_levels(levels, to_dot)
    t, pol = lower.fold_thresholds(level_of_acc, 60, 6, 3)
    acc = np.arange(61)[:, None]
    got = sum(enc.threshold_bits(acc, t[:, j], pol).astype(int) for j in range(3))
    want = levels(to_dot(torch.from_numpy(acc).expand(-1, 6))).numpy()
    assert np.array_equal(got, want)
    lower.verify_thresholds(level_of_acc, 60, t, pol, "synthetic")
    lower.verify_thresholds(level_of_acc, 60, t, pol, "sampled", exhaustive_limit=0)
    for limit in (1 << 22, 0):  # exhaustive and sampled checks both catch a wrong threshold
        with pytest.raises(lower.NotMonotoneError, match="synthetic"):
            lower.verify_thresholds(level_of_acc, 60, t + 1, pol, "synthetic",
                                    exhaustive_limit=limit)


def test_dense_after_conv_uses_hwc_segments():
    cfg = make_config("cnn", "t", (6, 6, 1), CLASSES, "xnor", parse_widths("cnn", "3:"), 8)
    model = build_model(cfg).eval()
    cm = lower.lower(model)
    last = cm.layers[-1]
    assert (last.in_h, last.in_w, last.in_c) == (3, 3, 3) and last.kind == "dense"
    w = enc.sign_bits(model.blocks[-1].op.weight.detach().numpy()).reshape(10, 3, 3, 3)
    assert np.array_equal(last.weights, w.transpose(0, 2, 3, 1))  # torch CHW -> IR HWC


def test_bwn_and_overflow_are_refused():
    with pytest.raises(UserError, match="bwn"):
        lower.lower(build_model(make_config("mlp", "t", (4, 4, 1), CLASSES, "bwn", [4])))
    big = make_config("mlp", "t", (258, 256, 1), CLASSES, "xnor", [1], 8)
    with pytest.raises(UserError, match="2\\^24"):
        lower.lower(build_model(big))


def test_lower_checkpoint_records_provenance(tmp_path):
    cfg = make_config("mlp", "digits", (8, 8, 1), CLASSES, "xnor", [8], 8)
    model = build_model(cfg)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="config.json"):
        lower.lower_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    cm = lower.lower_checkpoint(tmp_path)
    sha = hashlib.sha256((tmp_path / "checkpoint.pt").read_bytes()).hexdigest()
    assert cm.meta["checkpoint_sha256"] == sha and cm.meta["dataset"] == "digits"
    assert cm.meta["epoch"] == 3 and cm.meta["model"] == "mlp" and cm.meta["mode"] == "xnor"
    assert cm.meta["fp32_params"] == sum(p.numel() for p in model.parameters())
    assert lower.lower_checkpoint(tmp_path / "checkpoint.pt").meta["checkpoint_sha256"] == sha
    (tmp_path / "checkpoint.pt").write_bytes(b"broken")
    with pytest.raises(UserError, match="checkpoint.pt"):
        lower.lower_checkpoint(tmp_path)
    cm.save(tmp_path)  # the IR round-trips through its own format
    assert type(cm).load(tmp_path).meta["checkpoint_sha256"] == sha
