"""Random compiled models for testing and benchmarking the CPU kernel.

:func:`random_layer` and :func:`random_model` build valid IR (:mod:`xnorflow.sw.ir`) with
random weights and thresholds placed where random inputs actually straddle them (so output
bits are mixed and threshold ties happen); :func:`fashion_cnn` is a random model with the
shape of the Fashion-MNIST CNN (conv 1->32 3x3 pad 1 + pool, conv 32->64 + pool,
dense 3136->256, dense 256->10) that ``benchmarks/cpu_kernel.py`` times.
"""

from __future__ import annotations

import numpy as np

from .ir import CompiledModel, Layer


def _thresholds(rng: np.random.Generator, layer: Layer, levels: int) -> np.ndarray:
    """Thresholds around the accumulator's typical value under uniformly random inputs."""
    k = layer.k_valid
    full = (1 << layer.in_bits) - 1
    if layer.signed_input:
        mean, sd = k / 2, max(1.0, np.sqrt(k) / 2)
    else:
        # A = sum_b 2^b P_b with P_b ~ Binomial(K, 1/2) when inputs and weights are uniform.
        mean, sd = full * k / 2, max(1.0, full * np.sqrt(k) / 2)
    t = np.sort(rng.normal(mean, sd, size=(layer.out_c, levels)), axis=1)
    return np.clip(np.round(t), 0, layer.acc_max).astype(np.int64)


def random_layer(
    rng: np.random.Generator,
    *,
    name: str,
    kind: str,
    in_h: int,
    in_w: int,
    in_c: int,
    out_c: int,
    k: int = 3,
    stride: int = 1,
    pad: int = 0,
    in_bits: int = 1,
    signed_input: bool = True,
    output: str = "threshold",
    out_bits: int = 1,
    pool_k: int = 1,
    pool_stride: int = 1,
) -> Layer:
    """One random layer; ``kind='dense'`` covers the whole input (``k``/``pad`` ignored)."""
    kh, kw = (in_h, in_w) if kind == "dense" else (k, k)
    if kind == "dense":
        stride, pad = 1, 0
    layer = Layer(
        name=name, kind=kind, in_h=in_h, in_w=in_w, in_c=in_c, out_c=out_c, kh=kh, kw=kw,
        stride=stride, pad=pad, in_bits=in_bits, signed_input=signed_input,
        weights=rng.integers(0, 2, (out_c, kh, kw, in_c), dtype=np.uint8), output=output,
        out_bits=out_bits, out_signed=out_bits == 1, pool_k=pool_k, pool_stride=pool_stride,
    )
    if output == "threshold":
        layer.thresholds = _thresholds(rng, layer, (1 << out_bits) - 1)
        layer.polarity = rng.choice(np.array([-1, 1], np.int8), size=out_c)
        if pool_k > 1:
            layer.pool_ops = rng.integers(0, 2, out_c, dtype=np.uint8)
    else:
        layer.pool_k = layer.pool_stride = 1
        layer.score_mul = int(rng.choice([1, 2, -1]))
        layer.score_offset = rng.integers(-50, 50, out_c).astype(np.int64)
        layer.scale = 0.125
    return layer


def random_model(rng: np.random.Generator, specs: list[dict], in_h: int, in_w: int, in_c: int,
                 in_bits: int = 8) -> CompiledModel:
    """Chain layers from ``specs`` (keyword arguments of :func:`random_layer` minus geometry).

    The first layer reads ``in_bits``-bit unsigned pixels; each following layer reads the
    previous layer's output (1-bit signed or ``out_bits``-bit unsigned levels). The last spec
    is forced to an integer output layer.
    """
    h, w, c, bits, signed = in_h, in_w, in_c, in_bits, False
    layers = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        last = i == len(specs) - 1
        if last:
            spec.update(output="integer", pool_k=1, pool_stride=1, out_bits=1)
        layer = random_layer(rng, name=f"l{i}", in_h=h, in_w=w, in_c=c, in_bits=bits,
                             signed_input=signed, **spec)
        layers.append(layer)
        h, w, c = layer.out_h, layer.out_w, layer.out_c
        bits, signed = layer.out_bits, layer.out_bits == 1
    model = CompiledModel(in_h, in_w, in_c, layers, classes=[str(i) for i in range(c)])
    model.validate()
    return model


def fashion_cnn(seed: int = 0, in_bits: int = 8) -> CompiledModel:
    """Random model shaped like the Fashion-MNIST CNN (28x28x1 -> 10 classes)."""
    rng = np.random.default_rng(seed)
    return random_model(
        rng,
        [
            dict(kind="conv", out_c=32, k=3, pad=1, pool_k=2, pool_stride=2),
            dict(kind="conv", out_c=64, k=3, pad=1, pool_k=2, pool_stride=2),
            dict(kind="dense", out_c=256),
            dict(kind="dense", out_c=10),
        ],
        28, 28, 1, in_bits=in_bits,
    )
