"""Hand-built compiled models shared by the image, size and compile-CLI tests."""

from __future__ import annotations

import numpy as np

from xnorflow.sw.ir import CompiledModel, Layer


def dense(name, n_in, n_out, rng, in_bits=1, signed=True, last=False):
    w = rng.integers(0, 2, (n_out, 1, 1, n_in)).astype(np.uint8)
    if last:
        return Layer(name, "dense", 1, 1, n_in, n_out, 1, 1, 1, 0, in_bits, signed, w,
                     "integer", score_offset=rng.integers(-5, 5, n_out).astype(np.int64),
                     scale=0.25)
    acc_max = n_in * ((1 << in_bits) - 1)
    t = rng.integers(0, acc_max + 1, (n_out, 1)).astype(np.int64)
    pol = rng.choice(np.array([-1, 1], np.int8), n_out)
    return Layer(name, "dense", 1, 1, n_in, n_out, 1, 1, 1, 0, in_bits, signed, w,
                 "threshold", thresholds=t, polarity=pol)


def mlp(sizes=(64, 32, 10), in_bits=8, seed=0) -> CompiledModel:
    """A flat-input MLP: first layer reads ``in_bits``-bit pixels, hidden layers +-1 bits."""
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        first, last = i == 0, i == len(sizes) - 2
        layers.append(dense(f"fc{i + 1}", a, b, rng, in_bits if first else 1, not first, last))
    model = CompiledModel(1, 1, sizes[0], layers, classes=[str(i) for i in range(sizes[-1])],
                          meta={"source": "hand-built test model"})
    model.validate()
    return model
