"""Binary layers: sign contract, STEs, clipping, -1 padding, exact eval dots, quantisers."""

import numpy as np
import pytest
import torch

from xnorflow.sw import encoding as enc
from xnorflow.sw import layers as L
from xnorflow.sw.models import build_model, make_config, parse_widths


def test_sign_matches_contract_including_zero():
    x = torch.tensor([-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0])
    assert ((L.sign_pm1(x) > 0).numpy().astype(np.uint8) == enc.sign_bits(x.numpy())).all()
    assert L.sign_pm1(torch.tensor([0.0])).item() == 1.0


@pytest.mark.parametrize("ste,expect", [("hardtanh", [0, 1, 1, 1, 0]),
                                        ("approxsign", [0, 0.5, 2, 1, 0])])
def test_ste_gradients(ste, expect):
    x = torch.tensor([-1.5, -0.75, 0.0, 0.5, 1.0001], requires_grad=True)
    L.binarize(x, ste).sum().backward()
    assert x.grad.tolist() == pytest.approx(expect)


def test_dorefa_levels_and_gradient():
    act = L.Activation("dorefa", 2)
    x = torch.tensor([-0.5, 0.0, 0.2, 0.5, 0.9, 1.5], requires_grad=True)
    u = act(x)
    assert u.tolist() == [0, 0, 1, 2, 3, 3]  # round(clip(x, 0, 1) * 3), half to even
    u.sum().backward()
    assert x.grad.tolist() == [0, 3, 3, 3, 3, 0]
    assert act.levels(u).dtype == torch.int64 and not act.signed and act.bits == 2


def test_weights_clipped_after_step():
    lin = L.BinaryLinear(4, 3)
    with torch.no_grad():
        lin.weight.mul_(10)
    L.clip_weights(lin)
    assert lin.weight.abs().max().item() <= 1.0


def test_conv_pads_binary_activations_with_minus_one():
    conv = L.BinaryConv2d(1, 1, 3, 1, 1, mode="bnn", signed_input=True).eval()
    with torch.no_grad():
        conv.weight.fill_(0.5)
    y = conv(torch.ones(1, 1, 3, 3))
    # corner: 4 real +1, 5 padded -1; edge: 6 real, 3 padded; centre: 9 real
    assert y[0, 0, 0, 0].item() == -1 and y[0, 0, 1, 1].item() == 9 and y[0, 0, 0, 1].item() == 3
    unsigned = L.BinaryConv2d(1, 1, 3, 1, 1, mode="bnn", signed_input=False).eval()
    with torch.no_grad():
        unsigned.weight.fill_(0.5)
    assert unsigned(torch.ones(1, 1, 3, 3))[0, 0, 0, 0].item() == 4  # unsigned pads with 0


def test_eval_dot_is_exact_integer():
    lin = L.BinaryLinear(784, 8, mode="bnn").eval()
    x = torch.full((2, 784), 255.0)
    x[1, ::3] = 254.0
    d = lin(x)
    w = L.sign_pm1(lin.weight).double()
    assert torch.equal(d.double(), x.double() @ w.T)


def test_alpha_per_mode():
    for mode, per_channel in (("xnor", True), ("bwn", True), ("dorefa", False)):
        lin = L.BinaryLinear(6, 3, mode)
        a = lin.alpha()
        assert a.shape == (3,) and (a > 0).all()
        assert (len(set(a.tolist())) > 1) == per_channel
    assert L.BinaryLinear(6, 3, "bnn").alpha() is None
    with pytest.raises(ValueError):
        L.BinaryLinear(6, 3, "ternary")


def test_beta_scaling_changes_output_only_in_training_option():
    cfg = make_config("cnn", "t", (8, 8, 1), list("ab"), "xnor", parse_widths("cnn", "4,4:"),
                      beta=True)
    m = build_model(cfg).eval()
    torch.manual_seed(0)
    for blk in m.blocks[1:]:
        blk.bn.running_mean.normal_(0, 20)  # so that scaling by K moves values across 0
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    with torch.no_grad():
        a = m(x)
        m.set_beta(False)
        b = m(x)
    assert a.shape == b.shape == (3, 2) and not torch.equal(a, b)
    blk = m.blocks[1]
    k = blk.k_scale(torch.ones(1, 4, 4, 4))
    assert k.shape == (1, 1, 4, 4) and k[0, 0, 1, 1].item() == 1.0  # interior: mean of |1|


def test_logit_head_integer_bias_and_positive_scale():
    head = L.LogitHead(16, 4)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.4, 0.6, -1.5, 2.49]))
        head.log_scale.fill_(-3.0)
    assert head.int_bias().tolist() == [0, 1, -2, 2]
    assert head.scale().item() > 0
    head.eval()
    x = L.sign_pm1(torch.randn(5, 16))
    dot = x @ L.sign_pm1(head.weight).T
    assert torch.allclose(head(x), (dot + head.int_bias()) * head.scale())


def test_models_shapes_and_widths():
    assert parse_widths("mlp", "64,32") == [64, 32]
    assert parse_widths("cnn", "32,64:256") == {"conv": [32, 64], "dense": [256]}
    cfg = make_config("cnn", "t", (28, 28, 1), [str(i) for i in range(10)])
    m = build_model(cfg)
    x = np.zeros((2, 28, 28, 1), np.uint8)
    logits, hidden = m.forward_hidden(x)
    assert logits.shape == (2, 10)
    assert [tuple(h.shape) for h in hidden] == [(2, 14, 14, 32), (2, 7, 7, 64), (2, 1, 1, 256)]
    nbits = sum(b.op.weight.numel() for b in m.blocks)
    assert nbits < 1_000_000  # fits ~1 Mbit of weights (iCEBreaker up5k)
