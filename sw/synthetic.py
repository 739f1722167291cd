"""Random compiled models, images and geometries for tests and benchmarks (no training).

The one generator of random networks for every backend's tests: the hardware tests and the
network benchmark (:func:`random_cnn`, :func:`random_mlp`), the CPU kernel's property tests
and benchmark (:func:`random_layer`, :func:`random_model`, :func:`fashion_cnn`) and the
differential tests of golden vs cpu vs amaranth vs RTL (:func:`random_network` with
:func:`random_pixels`, :func:`random_geometry`, :func:`random_target`, :func:`banked_target`,
:func:`geometry_target`, :func:`write_folder`).

Every layer has random weight bits, random polarities and (when it pools) random OR/AND
pool operators; an integer output layer has random score offsets and ``score_mul``. Its
thresholds are placed so that output bits are mixed, in one of two ways:

* *spread* (default): around the middle of the accumulator range, ``acc_max / 2``, with
  standard deviation ``sqrt(acc_max)``; one threshold in ten is extreme (``-1``, ``0``,
  ``acc_max``, ``acc_max + 1``: always or never fires, or ties only at the range's ends).
  Costs nothing, so any size of model is cheap.
* *median* (``data=`` images given): each threshold is the median (for ``out_bits > 1``,
  the evenly spaced quantiles) of its channel's accumulators over the images propagated
  through the layers before it, so even deep networks keep mixed bits.

Everything is drawn from one ``numpy.random.Generator`` in a fixed order (per layer:
structure when random, weights, thresholds, polarities, pool operators; or weights, score
offsets, ``score_mul``), so a seed always gives the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import encoding as enc
from .golden import layer_accumulators, output_stage
from .ir import CompiledModel, Layer

Spec = dict[str, Any]


# ----- images ------------------------------------------------------------------------------
def random_images(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """``n`` random ``uint8`` images ``(n, h, w, c)`` drawn from ``seed``."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c)).astype(np.uint8)


def random_pixels(seed: int, model: CompiledModel, n: int) -> np.ndarray:
    """``n`` random images for ``model`` that belong with :func:`random_network` ``(seed)``.

    Drawn from ``seed ^ 0x5EED``, a stream independent of the network's own.
    """
    return random_images(n, model.in_h, model.in_w, model.in_c, seed ^ 0x5EED)


# ----- layers ------------------------------------------------------------------------------
def _spread_thresholds(rng: np.random.Generator, layer: Layer, levels: int) -> np.ndarray:
    """``(out_c, levels)`` sorted thresholds around ``acc_max / 2`` (module docstring)."""
    top = layer.acc_max
    t = np.rint(top / 2 + rng.normal(0, max(1.0, np.sqrt(top)), (layer.out_c, levels)))
    extreme = rng.random((layer.out_c, levels)) < 0.1
    t[extreme] = rng.choice([0, top, top + 1, -1], int(extreme.sum()))
    return np.sort(np.clip(t, -1, top + 1), axis=1).astype(np.int64)


def _median_thresholds(acc: np.ndarray, levels: int) -> np.ndarray:
    """``(out_c, levels)`` quantiles ``1/(levels+1) .. levels/(levels+1)`` per channel."""
    flat = acc.reshape(-1, acc.shape[-1])
    q = np.arange(1, levels + 1) / (levels + 1)
    return np.quantile(flat, q, axis=0).T.round().astype(np.int64)


def add_pool(rng: np.random.Generator, layer: Layer, pool_k: int, pool_stride: int) -> None:
    """Make threshold layer ``layer`` max-pool ``pool_k x pool_k`` (stride ``pool_stride``)
    with random OR/AND operators per channel."""
    layer.pool_k, layer.pool_stride = pool_k, pool_stride
    layer.pool_ops = rng.integers(0, 2, size=layer.out_c).astype(np.uint8)


def _random_layer(rng: np.random.Generator, x: np.ndarray | None, *, name: str, kind: str,
                  in_shape: tuple[int, int, int], out_c: int, k: int = 3, stride: int = 1,
                  pad: int = 0, in_bits: int = 1, signed_input: bool = True,
                  output: str = "threshold", out_bits: int = 1, pool_k: int = 1,
                  pool_stride: int | None = None) -> tuple[Layer, np.ndarray | None]:
    """:func:`random_layer`, plus the layer's output values for input values ``x``
    (median thresholds over ``x``), or ``None`` without ``x`` (spread thresholds)."""
    h, w, c = in_shape
    kh = kw = k
    if kind == "dense":
        kh, kw, stride, pad = h, w, 1, 0
    layer = Layer(
        name=name, kind=kind, in_h=h, in_w=w, in_c=c, out_c=out_c, kh=kh, kw=kw,
        stride=stride, pad=pad, in_bits=in_bits, signed_input=signed_input,
        weights=rng.integers(0, 2, size=(out_c, kh, kw, c)).astype(np.uint8), output=output,
    )
    acc = None if x is None else layer_accumulators(layer, x, 32)
    if output == "integer":
        layer.score_offset = rng.integers(-20, 21, size=out_c).astype(np.int64)
        layer.score_mul = int(rng.choice([1, 2, -1]))
        layer.scale = 0.5
    else:
        layer.out_bits, layer.out_signed = out_bits, out_bits == 1
        levels = (1 << out_bits) - 1
        layer.thresholds = (_spread_thresholds(rng, layer, levels) if acc is None
                            else _median_thresholds(acc, levels))
        layer.polarity = rng.choice(np.array([-1, 1], dtype=np.int8), size=out_c)
        if pool_k > 1:
            add_pool(rng, layer, pool_k, pool_stride or pool_k)
    layer.validate()
    return layer, None if acc is None else output_stage(layer, acc)


def random_layer(rng: np.random.Generator, *, data: np.ndarray | None = None,
                 **spec: Any) -> Layer:
    """One random valid layer.

    ``spec``: ``name``, ``kind`` (``"conv"`` or ``"dense"``: a dense layer covers its whole
    input, ``k``/``stride``/``pad`` ignored), ``in_shape`` ``(H, W, C)``, ``out_c``, and
    optionally ``k`` (3), ``stride`` (1), ``pad`` (0), ``in_bits`` (1), ``signed_input``
    (True: +-1 bits; False: unsigned ``in_bits``-bit levels), ``output`` (``"threshold"``
    or ``"integer"``), ``out_bits`` (1: a +-1 bit; more: unsigned levels), ``pool_k`` (1)
    and ``pool_stride`` (``pool_k``). ``data``: the layer's input values ``(N, H, W, C)``
    for median thresholds (module docstring); spread thresholds without.
    """
    return _random_layer(rng, data, **spec)[0]


def _name_by_kind(layers: list[Layer]) -> None:
    """Name layers ``conv0, conv1, ..., fc0, fc1, ...`` (errors then say which one)."""
    count = {"conv": 0, "dense": 0}
    for layer in layers:
        layer.name = f"{'conv' if layer.kind == 'conv' else 'fc'}{count[layer.kind]}"
        count[layer.kind] += 1


def _next_input(layer: Layer) -> tuple[tuple[int, int, int], int, bool]:
    """Shape, bits and signedness of what the layer after ``layer`` reads."""
    return (layer.out_h, layer.out_w, layer.out_c), layer.out_bits, layer.out_signed


# ----- networks of a given shape ---------------------------------------------------------
def random_model(rng: np.random.Generator | int, specs: list[Spec],
                 in_shape: tuple[int, int, int], in_bits: int = 8, *,
                 data: np.ndarray | None = None) -> CompiledModel:
    """Chain one :func:`random_layer` per spec (its keywords minus ``name``, ``in_shape``,
    ``in_bits``, ``signed_input``) into a model reading ``in_bits``-bit unsigned pixels.

    Layers are named ``conv0, ..., fc0, ...``; each reads the previous layer's output; the
    last spec is forced to an integer output layer (no pooling), whose ``out_c`` is the
    number of classes. ``data`` (``uint8`` images) gives median thresholds, else they are
    spread. ``rng``: a generator or a seed.
    """
    rng = np.random.default_rng(rng)
    x = None if data is None else enc.quantize_pixels(data, in_bits)
    shape, bits, signed = in_shape, in_bits, False
    layers = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        if i == len(specs) - 1:
            spec.update(output="integer", pool_k=1, pool_stride=1, out_bits=1)
            x = None  # an integer stage has no thresholds, and nothing reads its scores
        layer, x = _random_layer(rng, x, name=f"l{i}", in_shape=shape, in_bits=bits,
                                 signed_input=signed, **spec)
        layers.append(layer)
        shape, bits, signed = _next_input(layer)
    _name_by_kind(layers)
    model = CompiledModel(*in_shape, layers, classes=[str(i) for i in range(shape[2])])
    model.validate()
    return model


def random_cnn(in_shape: tuple[int, int, int] = (8, 8, 1),
               convs: tuple = ((8, 3, 1, 1, 2), (16, 3, 1, 1, 1)), dense: tuple = (10,),
               in_bits: int = 8, seed: int = 0, batch: int = 32) -> CompiledModel:
    """A random CNN with median thresholds over ``batch`` random images.

    ``convs``: ``(out_c, k, stride, pad, pool[, pool_stride])`` per convolution, then the
    ``dense`` sizes; the last dense size is the number of classes (integer output layer).
    """
    specs = [dict(kind="conv", out_c=s[0], k=s[1], stride=s[2], pad=s[3], pool_k=s[4],
                  pool_stride=s[5] if len(s) > 5 else s[4]) for s in convs]
    specs += [dict(kind="dense", out_c=n) for n in dense]
    return random_model(seed, specs, in_shape, in_bits,
                        data=random_images(batch, *in_shape, seed=seed + 1))


def random_mlp(sizes: tuple = (64, 32, 10), in_shape: tuple[int, int, int] = (8, 8, 1),
               in_bits: int = 8, seed: int = 0, batch: int = 64) -> CompiledModel:
    """A random dense network (:func:`random_cnn` without convolutions): input ``in_shape``
    (``prod == sizes[0]``), then the hidden sizes and the number of classes."""
    h, w, c = in_shape
    if h * w * c != sizes[0]:
        raise ValueError(f"input shape {in_shape} does not hold {sizes[0]} values")
    return random_cnn(in_shape, convs=(), dense=tuple(sizes[1:]), in_bits=in_bits, seed=seed,
                      batch=batch)


def fashion_cnn(seed: int = 0, in_bits: int = 8) -> CompiledModel:
    """Random model shaped like the Fashion-MNIST CNN (28x28x1 -> 10 classes): conv 1->32
    3x3 pad 1 + pool 2, conv 32->64 + pool 2, dense 3136->256, dense 256->10."""
    return random_model(seed, [
        dict(kind="conv", out_c=32, k=3, pad=1, pool_k=2),
        dict(kind="conv", out_c=64, k=3, pad=1, pool_k=2),
        dict(kind="dense", out_c=256),
        dict(kind="dense", out_c=10),
    ], (28, 28, 1), in_bits=in_bits)


# ----- networks of a random shape (differential tests) -----------------------------------
def _random_shaped_layer(rng: np.random.Generator, name: str, in_shape: tuple[int, int, int],
                         in_bits: int, signed: bool, output: str, max_out_c: int) -> Layer:
    """A layer of random width; a threshold layer is sometimes a convolution (random kernel,
    stride, padding) and sometimes pools 2x2 (random stride)."""
    h, w, _ = in_shape
    out_c = int(rng.integers(1, max_out_c + 1))
    spec: Spec = dict(kind="dense")
    if output == "threshold" and min(h, w) >= 2 and rng.random() < 0.6:
        k = int(rng.integers(1, min(3, h, w) + 1))
        spec = dict(kind="conv", k=k, pad=int(rng.integers(0, k)),
                    stride=int(rng.integers(1, 3)))
    layer = random_layer(rng, name=name, in_shape=in_shape, out_c=out_c, in_bits=in_bits,
                         signed_input=signed, output=output, **spec)
    poolable = layer.kind == "conv" and min(layer.conv_h, layer.conv_w) >= 2
    if poolable and rng.random() < 0.5:
        add_pool(rng, layer, 2, int(rng.integers(1, 3)))
    return layer


def random_network(seed: int, *, max_hw: int = 6, max_c: int = 40, max_out_c: int = 24,
                   layers: int | None = None, in_shape: tuple[int, int, int] | None = None,
                   in_bits: int | None = None, classes: int | None = None,
                   max_hidden: int = 2) -> CompiledModel:
    """A small random network of random shape, for differential tests.

    Input ``H, W <= max_hw``, ``C <= max_c``, 1-bit (signed or not) or 2..8-bit unsigned;
    1 to ``max_hidden`` hidden threshold layers (dense or conv, optionally pooled, up to
    ``max_out_c`` channels; spread thresholds, so ties and extremes occur), then a small
    integer output layer. ``in_shape``, ``in_bits``, ``layers`` (hidden + output) and
    ``classes`` fix what is otherwise random.
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
        net.append(_random_shaped_layer(rng, f"l{i}", shape, bits, sgn, "threshold",
                                        max_out_c))
        shape, bits, sgn = _next_input(net[-1])
    n_cls = int(rng.integers(2, 11)) if classes is None else classes
    last = _random_shaped_layer(rng, f"l{n_hidden}", shape, bits, sgn, "integer", n_cls)
    if classes is not None and last.out_c != classes:
        last.out_c = classes
        last.weights = rng.integers(0, 2, (classes, last.kh, last.kw, last.in_c)).astype(
            np.uint8)
        last.score_offset = rng.integers(-20, 21, classes).astype(np.int64)
    net.append(last)
    _name_by_kind(net)
    model = CompiledModel(h, w, c, net, classes=[f"c{i}" for i in range(last.out_c)],
                          meta={"source": f"xnorflow.sw.synthetic.random_network({seed})"})
    model.validate()
    return model


# ----- targets and folders -----------------------------------------------------------------
def random_geometry(seed: int) -> tuple[int, int, int]:
    """A random accelerator geometry ``(R, C, W)`` for the ``sim`` target family."""
    rng = np.random.default_rng(seed ^ 0x6E0)
    return (int(rng.choice([1, 2, 4])), int(rng.choice([1, 2, 4])), int(rng.choice([16, 32, 64])))


def random_target(seed: int):
    """:func:`geometry_target` of :func:`random_geometry` ``(seed)`` with the pipelining drawn
    too: ``mem_regs`` 0, 1 or 2, a third each (``hx8k`` builds with 1, ``ecp5-85f`` with 2);
    and, where ``R`` is a power of two above 1, half the time a weight word per row
    (``weight_rows = R``, as ``ecp5-85f``: split reductions, spread groups); named
    ``sim-RxCxW`` plus
    ``-r1`` / ``-r2`` and ``-wR``."""
    import dataclasses

    from .targets import sim_target

    rows, cols, width = random_geometry(seed)
    regs = int(np.random.default_rng(seed ^ 0x5EC).integers(0, 3))
    wide = (rows > 1 and not rows & (rows - 1)
            and bool(np.random.default_rng(seed ^ 0x3D1).integers(0, 2)))
    name = (f"sim-{rows}x{cols}x{width}" + (f"-r{regs}" if regs else "")
            + (f"-w{rows}" if wide else ""))
    t = sim_target(rows, cols, width, name=name, weight_rows=rows if wide else 1)
    return dataclasses.replace(t, mem_regs=regs)


def banked_target(target, weights_depth: int):
    """``target`` with ``mem_regs = 2`` and ``weights_depth`` words of weights, so the weights
    are built from several banks (:func:`xnorflow.hw.memories.weight_banks`) when that depth
    is not a power of two; named ``<name>-r2``."""
    import dataclasses

    width, _ = target.memories["weights"]
    return dataclasses.replace(target, name=f"{target.name}-r2", mem_regs=2,
                               memories={**target.memories, "weights": (width, weights_depth)})


def geometry_target(rows: int, cols: int, width: int):
    """An unlimited-memory simulation target named after its geometry (``sim-RxCxW``)."""
    from .targets import sim_target

    return sim_target(rows, cols, width, name=f"sim-{rows}x{cols}x{width}")


def write_folder(model: CompiledModel, target, out_dir: str | Path, force: bool = True,
                 max_batch: int | None = None):
    """Compile ``model`` for ``target`` into a model folder (memory images + manifest);
    ``max_batch`` as in :func:`~xnorflow.sw.program.build_memories`."""
    from .images import write_model_folder
    from .program import build_memories

    return write_model_folder(out_dir, model, target,
                              build_memories(model, target, max_batch=max_batch), force=force)
