"""Random Brevitas networks (FINN TFC/CNV style) for the QONNX import tests and benchmark.

Only imported where the optional ``[interop]`` extra is installed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _quant():
    import brevitas.nn as qnn
    from brevitas.inject.enum import RestrictValueType, ScalingImplType
    from brevitas.quant import (
        Int8ActPerTensorFloat,
        SignedBinaryActPerTensorConst,
        SignedBinaryWeightPerTensorConst,
        Uint8ActPerTensorFloat,
    )

    return (qnn, RestrictValueType, ScalingImplType, Int8ActPerTensorFloat,
            SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst,
            Uint8ActPerTensorFloat)


class PlusMinusOne(nn.Module):
    """``2x - 1``: FINN's way of feeding [0, 1] pixels to a binary first layer."""

    def forward(self, x):
        return 2.0 * x - 1.0


class ScalarAffine(nn.Module):
    """A TensorNorm-like scalar affine on the scores: ``a * x + b``."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return x * self.a + self.b


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class AbsModule(nn.Module):
    def forward(self, x):
        return torch.abs(x)


def input_quant(kind: str) -> list[nn.Module]:
    """Input stages: ``u8`` (scale 1/255), ``u8pow2`` (2^-8), ``u1``, ``pm1``, ``s8``."""
    (qnn, Restrict, Scaling, Int8, SignAct, _, Uint8) = _quant()
    if kind == "u8":
        return [qnn.QuantIdentity(act_quant=Uint8, scaling_impl_type=Scaling.CONST,
                                  scaling_init=1.0, return_quant_tensor=True)]
    if kind == "u8pow2":
        return [qnn.QuantIdentity(act_quant=Uint8, scaling_impl_type=Scaling.CONST,
                                  scaling_init=255 / 256, return_quant_tensor=True)]
    if kind == "u1":
        return [qnn.QuantIdentity(act_quant=Uint8, bit_width=1, scaling_impl_type=Scaling.CONST,
                                  scaling_init=1.0, return_quant_tensor=True)]
    if kind == "pm1":
        return [PlusMinusOne(), qnn.QuantIdentity(act_quant=SignAct, return_quant_tensor=True)]
    if kind == "s8":
        return [PlusMinusOne(), qnn.QuantIdentity(act_quant=Int8, scaling_impl_type=Scaling.CONST,
                                                  scaling_init=1.0, return_quant_tensor=True)]
    raise ValueError(kind)


def sign():
    qnn, *_, SignAct, _, _ = _quant()
    return qnn.QuantIdentity(act_quant=SignAct, return_quant_tensor=True)


def relu_k(bits: int):
    qnn, _, Scaling, *_ = _quant()
    return qnn.QuantReLU(bit_width=bits, scaling_impl_type=Scaling.CONST,
                         scaling_init=float((1 << bits) - 1), return_quant_tensor=True)


def linear(i: int, o: int, bias: bool = False):
    qnn, *_, SignW, _ = _quant()
    return qnn.QuantLinear(i, o, bias=bias, weight_quant=SignW, weight_scaling_const=1.0)


def conv(i: int, o: int, k: int = 3, **kw):
    qnn, *_, SignW, _ = _quant()
    return qnn.QuantConv2d(i, o, k, bias=False, weight_quant=SignW, weight_scaling_const=1.0,
                           **kw)


def randomise_bn(bn: nn.Module, rng: np.random.Generator, k: int) -> None:
    """Random statistics with negative, zero and positive gamma around dot products of K terms."""
    c = bn.num_features
    with torch.no_grad():
        g = rng.normal(size=c)
        g[rng.random(c) < 0.15] = 0.0
        bn.weight.copy_(torch.tensor(g, dtype=torch.float32))
        bn.bias.copy_(torch.tensor(rng.normal(size=c) * 0.5, dtype=torch.float32))
        bn.running_mean.copy_(torch.tensor(rng.normal(size=c) * np.sqrt(k) * 0.7,
                                           dtype=torch.float32))
        bn.running_var.copy_(torch.tensor(rng.uniform(0.3, 2.0, size=c) * k, dtype=torch.float32))


def make_ties(net: nn.Module, x: torch.Tensor, rng: np.random.Generator) -> int:
    """Put the first image exactly on the threshold of some channels of every BN with eps 0.

    With ``eps = 0``, ``var = 1``, ``gamma`` a power of two and ``beta = 0`` the BN output is
    exactly 0 at ``x == mean`` in every implementation (torch, onnxruntime, qonnx's
    BatchNormToAffine), so the tie is decided by ``sign(0) = +1``. Returns the ties made.
    """
    made = 0
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)
           and m.eps == 0]
    for bn in bns:
        seen = {}

        def hook(_m, inp, _out, seen=seen):
            v = inp[0]
            seen["x"] = (v.value if hasattr(v, "value") else v).detach()

        h = bn.register_forward_hook(hook)
        with torch.no_grad():
            net(x[:1])
        h.remove()
        v = seen["x"][0]
        v = v.reshape(v.shape[0], -1)[:, 0]  # first position of every channel
        c = bn.num_features
        pick = rng.random(c) < 0.5
        with torch.no_grad():
            for ch in np.flatnonzero(pick):
                bn.running_mean[ch] = float(v[ch])
                bn.running_var[ch] = 1.0
                bn.weight[ch] = float(rng.choice([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0]))
                bn.bias[ch] = 0.0
                made += 1
    return made


def mlp(seed: int, inp: str = "u8", widths=(32, 24), in_features: int = 64, classes: int = 10,
        act: str = "sign", ties: bool = True, head: tuple | None = None):
    """TFC-style: [input quant] Flatten (Linear BN act)* Linear [affine]."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    mods = list(input_quant(inp)) + [nn.Flatten()]
    n = in_features
    for i, w in enumerate(widths):
        mods += [linear(n, w), nn.BatchNorm1d(w, eps=0.0 if ties and (i > 0 or inp != "u8")
                                              else 1e-5)]
        randomise_bn(mods[-1], rng, n)
        mods.append(sign() if act == "sign" else relu_k(int(act[-1])))
        n = w
    mods.append(linear(n, classes))
    if head:
        mods.append(ScalarAffine(*head))
    return nn.Sequential(*mods).eval()


def cnn(seed: int, inp: str = "u8", channels=(8, 12), dense: int = 16, size: int = 10,
        classes: int = 10, first_pad: int = 1, pool_before_bn: bool = False, ties: bool = True):
    """CNV-style: conv BN sign [maxpool] conv BN sign ... Flatten Linear BN sign Linear."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    mods = list(input_quant(inp))
    c, h = 1, size
    for i, co in enumerate(channels):
        pad = first_pad if i == 0 else 0
        mods.append(conv(c, co, 3, padding=pad))
        h = h + 2 * pad - 2
        bn = nn.BatchNorm2d(co, eps=0.0 if ties and (i > 0 or inp != "u8") else 1e-5)
        randomise_bn(bn, rng, 9 * c)
        if i == 0 and pool_before_bn:
            mods += [nn.MaxPool2d(2), bn, sign()]
            h //= 2
        elif i == 0:
            mods += [bn, sign(), nn.MaxPool2d(2)]
            h //= 2
        else:
            mods += [bn, sign()]
        c = co
    mods.append(nn.Flatten())
    mods.append(linear(c * h * h, dense))
    bn = nn.BatchNorm1d(dense, eps=0.0 if ties else 1e-5)
    randomise_bn(bn, rng, c * h * h)
    mods += [bn, sign(), linear(dense, classes)]
    return nn.Sequential(*mods).eval()


def export(net: nn.Module, shape_nchw, path) -> None:
    """``brevitas.export.export_qonnx`` with the TorchScript exporter (dynamo=False)."""
    import warnings

    from brevitas.export import export_qonnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net, torch.rand(*shape_nchw), export_path=str(path), dynamo=False)
