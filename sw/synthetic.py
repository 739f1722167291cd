"""Random compiled models for hardware tests and benchmarks (no training needed).

Weights are random bits; each threshold is the median accumulator of its channel over a
batch of random images, so hidden bits are neither all 0 nor all 1, and polarities, pool
operators and score offsets are random too. Layers are built one at a time so each layer's
thresholds see the real input distribution of the previous layers.
"""

from __future__ import annotations

import numpy as np

from . import encoding as enc
from .golden import layer_accumulators, output_stage
from .ir import CompiledModel, Layer


def _finish(layer: Layer, x, rng: np.random.Generator) -> np.ndarray:
    """Give ``layer`` median thresholds over input batch ``x``; return its output batch."""
    acc = layer_accumulators(layer, x, 32)
    if layer.output == "integer":
        layer.score_offset = rng.integers(-8, 9, size=layer.out_c).astype(np.int64)
        layer.validate()
        return output_stage(layer, acc)
    flat = acc.reshape(-1, layer.out_c)
    t = np.median(flat, axis=0).round().astype(np.int64)
    layer.thresholds = t[:, None]
    layer.polarity = rng.choice(np.array([-1, 1], dtype=np.int8), size=layer.out_c)
    if layer.pool_k > 1:
        layer.pool_ops = rng.integers(0, 2, size=layer.out_c).astype(np.uint8)
    layer.validate()
    return output_stage(layer, acc)


def _layer(name, kind, h, w, c, out_c, k, stride, pad, in_bits, signed, output, rng,
           pool=1, score_mul=1, pool_stride=None) -> Layer:
    kh = kw = k
    if kind == "dense":
        kh, kw, stride, pad = h, w, 1, 0
    return Layer(
        name=name, kind=kind, in_h=h, in_w=w, in_c=c, out_c=out_c, kh=kh, kw=kw,
        stride=stride, pad=pad, in_bits=in_bits, signed_input=signed,
        weights=rng.integers(0, 2, size=(out_c, kh, kw, c)).astype(np.uint8),
        output=output, pool_k=pool, pool_stride=pool_stride or pool, score_mul=score_mul,
    )


def random_images(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """``n`` random ``uint8`` images ``(n, h, w, c)``."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c)).astype(np.uint8)


def random_mlp(sizes=(64, 32, 10), in_shape=(8, 8, 1), in_bits: int = 8, seed: int = 0,
               batch: int = 64) -> CompiledModel:
    """A random dense network: input ``in_shape`` (``prod == sizes[0]``), hidden sizes, classes."""
    h, w, c = in_shape
    if h * w * c != sizes[0]:
        raise ValueError(f"input shape {in_shape} does not hold {sizes[0]} values")
    return random_cnn(in_shape, convs=(), dense=tuple(sizes[1:]), in_bits=in_bits, seed=seed,
                      batch=batch)


def random_cnn(in_shape=(8, 8, 1), convs=((8, 3, 1, 1, 2), (16, 3, 1, 1, 1)),
               dense=(10,), in_bits: int = 8, seed: int = 0, batch: int = 32) -> CompiledModel:
    """A random CNN: ``convs`` = ``(out_c, k, stride, pad, pool[, pool_stride])`` per conv,
    then dense sizes.

    The last dense size is the number of classes (integer output layer).
    """
    rng = np.random.default_rng(seed)
    h, w, c = in_shape
    x = enc.quantize_pixels(random_images(batch, h, w, c, seed + 1), in_bits)
    layers = []
    bits, signed = in_bits, False
    for i, spec in enumerate(convs):
        out_c, k, stride, pad, pool = spec[:5]
        pstride = spec[5] if len(spec) > 5 else pool
        lay = _layer(f"conv{i}", "conv", h, w, c, out_c, k, stride, pad, bits, signed,
                     "threshold", rng, pool=pool, pool_stride=pstride)
        x = _finish(lay, x, rng)
        layers.append(lay)
        h, w, c, bits, signed = lay.out_h, lay.out_w, out_c, 1, True
    for i, out_c in enumerate(dense):
        last = i == len(dense) - 1
        lay = _layer(f"fc{i}", "dense", h, w, c, out_c, 1, 1, 0, bits, signed,
                     "integer" if last else "threshold", rng, score_mul=2 if last else 1)
        x = _finish(lay, x, rng)
        layers.append(lay)
        h, w, c, bits, signed = 1, 1, out_c, 1, True
    model = CompiledModel(in_shape[0], in_shape[1], in_shape[2], layers,
                          classes=[str(i) for i in range(dense[-1])])
    model.validate()
    return model
