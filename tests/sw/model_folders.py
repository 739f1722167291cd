"""Hand-built compiled models and targets shared by the image, size and compile-CLI tests."""

from __future__ import annotations

import numpy as np

from xnorflow.sw import golden
from xnorflow.sw.images import MemoryImage
from xnorflow.sw.ir import CompiledModel, Layer
from xnorflow.sw.targets import Target


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


def target(name="up5k", rows=4, cols=4, width=32, weights_depth=None) -> Target:
    return Target(name, rows, cols, width,
                  memories={"weights": (width, weights_depth), "thresholds": (32, None),
                            "program": (32, None)})


def standin_memories(model: CompiledModel, tgt: Target) -> list[MemoryImage]:
    """A stand-in for ``program.build_memories``: packed weights, thresholds, a toy program."""
    wwords = np.concatenate([golden.pack_weights(l, tgt.width).reshape(-1)
                             for l in model.layers]).astype(np.uint64)
    thr = [int(t) & 0xFFFFFFFF for l in model.layers if l.output == "threshold"
           for t in np.asarray(l.thresholds).reshape(-1)]
    prog = [v for i, l in enumerate(model.layers) for v in (i, l.in_c, l.out_c, l.in_bits)]
    return [
        MemoryImage("weights", tgt.width, wwords, "packed weights, layer by layer"),
        MemoryImage("thresholds", 32, np.asarray(thr, np.uint64), "one threshold a word"),
        MemoryImage("program", 32, np.asarray(prog, np.uint64), "4 words per layer"),
    ]
