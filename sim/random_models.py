"""Random compiled models for differential testing (golden vs cpu vs amaranth vs RTL).

:func:`random_network` builds a small valid :class:`~xnorflow.sw.ir.CompiledModel` from a
seed: a random first layer under test (dense or conv with random kernel, stride, padding;
1-bit signed or 2..8-bit unsigned input; threshold output, optionally max-pooled with mixed
OR/AND channels), sometimes a second binary layer, and a small integer output layer. The
hardware reads back every hidden layer, so each random layer's output bits are compared
directly. Thresholds sit near the middle of the accumulator range (and sometimes exactly on
reachable values) so that both output bits and ties occur.
"""

from __future__ import annotations

import numpy as np

from xnorflow.sw.ir import CompiledModel, Layer


def _thresholds(rng: np.random.Generator, out_c: int, acc_max: int) -> np.ndarray:
    mid = acc_max / 2
    spread = max(1.0, np.sqrt(acc_max))
    t = np.rint(mid + rng.normal(0, spread, out_c)).astype(np.int64)
    # a few extreme thresholds (always/never fire) and exact ties
    extreme = rng.random(out_c) < 0.1
    t[extreme] = rng.choice([0, acc_max, acc_max + 1, -1], int(extreme.sum()))
    return np.clip(t, -1, acc_max + 1).reshape(out_c, 1)


def random_layer(rng: np.random.Generator, name: str, in_shape: tuple[int, int, int],
                 in_bits: int, signed: bool, *, output: str = "threshold",
                 allow_conv: bool = True, allow_pool: bool = True,
                 max_out_c: int = 24) -> Layer:
    """One random valid layer reading ``in_shape`` maps of ``in_bits``-bit values."""
    h, w, c = in_shape
    out_c = int(rng.integers(1, max_out_c + 1))
    conv = allow_conv and output == "threshold" and min(h, w) >= 2 and rng.random() < 0.6
    if conv:
        k = int(rng.integers(1, min(3, h, w) + 1))
        pad = int(rng.integers(0, k))  # 0..k-1
        stride = int(rng.integers(1, 3))
        kind, kh, kw = "conv", k, k
    else:
        kind, kh, kw, pad, stride = "dense", h, w, 0, 1
    wts = rng.integers(0, 2, (out_c, kh, kw, c)).astype(np.uint8)
    layer = Layer(name, kind, h, w, c, out_c, kh, kw, stride, pad, in_bits, signed, wts, output)
    if output == "integer":
        layer.score_offset = rng.integers(-20, 21, out_c).astype(np.int64)
        layer.score_mul = int(rng.choice([1, 2, -1]))
        layer.scale = 0.5
        return layer
    layer.thresholds = _thresholds(rng, out_c, layer.acc_max)
    layer.polarity = rng.choice(np.array([-1, 1], np.int8), out_c)
    poolable = kind == "conv" and min(layer.conv_h, layer.conv_w) >= 2
    if allow_pool and poolable and rng.random() < 0.5:
        layer.pool_k = 2
        layer.pool_stride = int(rng.integers(1, 3))
        layer.pool_ops = rng.integers(0, 2, out_c).astype(np.uint8)
    return layer


def random_network(seed: int, *, max_hw: int = 6, max_c: int = 40, max_out_c: int = 24,
                   layers: int | None = None, in_shape: tuple[int, int, int] | None = None,
                   in_bits: int | None = None, classes: int | None = None,
                   max_hidden: int = 2) -> CompiledModel:
    """A random valid network (see the module docstring).

    ``in_shape``, ``in_bits``, ``layers`` and ``classes`` fix what is otherwise random;
    without ``layers`` there are 1 to ``max_hidden`` hidden layers.
    """
    rng = np.random.default_rng(seed)
    h = int(rng.integers(1, max_hw + 1))
    w = int(rng.integers(1, max_hw + 1))
    c = int(rng.integers(1, max_c + 1))
    if in_shape is not None:
        h, w, c = in_shape
    bits = int(rng.choice([1, 1, 2, 4, 8]))
    in_bits = bits if in_bits is None else in_bits
    signed = in_bits == 1 and rng.random() < 0.7
    n_hidden = layers - 1 if layers else int(rng.integers(1, max_hidden + 1))
    net: list[Layer] = []
    shape, bits, sgn = (h, w, c), in_bits, signed
    for i in range(n_hidden):
        layer = random_layer(rng, f"l{i}", shape, bits, sgn, max_out_c=max_out_c)
        net.append(layer)
        shape, bits, sgn = (layer.out_h, layer.out_w, layer.out_c), 1, True
    n_cls = int(rng.integers(2, 11)) if classes is None else classes
    last = random_layer(rng, "out", shape, bits, sgn, output="integer", max_out_c=n_cls)
    if classes is not None and last.out_c != classes:
        last = _with_out_c(rng, last, classes)
    net.append(last)
    model = CompiledModel(h, w, c, net, classes=[f"c{i}" for i in range(last.out_c)],
                          meta={"source": f"xnorflow.sim.random_models.random_network({seed})"})
    model.validate()
    return model


def _with_out_c(rng: np.random.Generator, layer: Layer, out_c: int) -> Layer:
    layer.out_c = out_c
    layer.weights = rng.integers(0, 2, (out_c, layer.kh, layer.kw, layer.in_c)).astype(np.uint8)
    layer.score_offset = rng.integers(-20, 21, out_c).astype(np.int64)
    return layer


def random_pixels(seed: int, model: CompiledModel, n: int) -> np.ndarray:
    """``n`` random ``uint8`` images for ``model``."""
    rng = np.random.default_rng(seed ^ 0x5EED)
    return rng.integers(0, 256, (n, model.in_h, model.in_w, model.in_c)).astype(np.uint8)


def random_geometry(seed: int) -> tuple[int, int, int]:
    """A random accelerator geometry ``(R, C, W)`` for the ``sim`` target family."""
    rng = np.random.default_rng(seed ^ 0x6E0)
    return (int(rng.choice([1, 2, 4])), int(rng.choice([1, 2, 4])), int(rng.choice([16, 32, 64])))


def write_folder(model: CompiledModel, target, out_dir, force: bool = True):
    """Compile ``model`` for ``target`` into a model folder (HW2's program + SW2's writer)."""
    from xnorflow.sw.images import write_model_folder
    from xnorflow.sw.program import build_memories

    return write_model_folder(out_dir, model, target, build_memories(model, target), force=force)


def geometry_target(rows: int, cols: int, width: int):
    """An unlimited-memory simulation target named after its geometry (``sim-RxCxW``)."""
    from xnorflow.sw.targets import sim_target

    return sim_target(rows, cols, width, name=f"sim-{rows}x{cols}x{width}")
