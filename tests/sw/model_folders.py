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
    """A target with the accelerator's five memories; only ``weights`` may be limited."""
    mems = {"program": (32, None), "weights": (cols * width, weights_depth),
            "thresholds": (cols * 32, None), "activations": (width, None), "scores": (32, None)}
    return Target(name, rows, cols, width, memories=mems)


def _group(words, n: int, bits: int) -> list[int]:
    """Concatenate ``n`` consecutive ``bits``-bit words into one, first word lowest."""
    words = [int(w) for w in words] + [0] * (-len(words) % n)
    return [sum(w << (bits * j) for j, w in enumerate(words[i : i + n]))
            for i in range(0, len(words), n)]


def _array(words: list[int], width: int) -> np.ndarray:
    if width <= 64:
        return np.asarray(words, np.uint64)
    arr = np.empty(len(words), object)
    arr[:] = words
    return arr


def standin_memories(model: CompiledModel, tgt: Target) -> list[MemoryImage]:
    """A stand-in for ``program.build_memories``: packed weights, thresholds, a toy program.

    Widths follow the target (weights ``cols * width``, thresholds ``cols * 32``) so that
    words wider than 64 bits are exercised.
    """
    ww, tw = tgt.memories["weights"][0], tgt.memories["thresholds"][0]
    wwords = [w for l in model.layers for w in golden.pack_weights(l, tgt.width).reshape(-1)]
    thr = [int(t) & 0xFFFFFFFF for l in model.layers if l.output == "threshold"
           for t in np.asarray(l.thresholds).reshape(-1)]
    prog = [v for i, l in enumerate(model.layers) for v in (i, l.in_c, l.out_c, l.in_bits)]
    return [
        MemoryImage("weights", ww, _array(_group(wwords, ww // tgt.width, tgt.width), ww),
                    "packed weights, layer by layer"),
        MemoryImage("thresholds", tw, _array(_group(thr, tw // 32, 32), tw),
                    "one threshold a lane"),
        MemoryImage("program", 32, np.asarray(prog, np.uint64), "4 words per layer"),
    ]
