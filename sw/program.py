"""The accelerator program and memory layout: compiled model -> memory images, and back.

``docs/program.md`` is the prose version of this module. Three memory images drive the
accelerator (:func:`build_memories`):

* ``program`` (32-bit words): a 24-word header then one 32-word descriptor per layer. Every
  address, count and stride the sequencer needs is precomputed here, so the gateware only
  adds and compares (no multipliers on the sequencer's paths).
* ``weights`` (``C * W``-bit words, lane ``c`` = bits ``[c*W, (c+1)*W)``): per layer and
  column group ``g`` (output channels ``g*C .. g*C+C-1``), ``kh*kw*Cw`` words, word ``k``
  holding packed weight word ``k`` (:func:`xnorflow.sw.golden.pack_weights` order:
  ``(dy, dx, cw)``) of each channel of the group (missing channels: all ones).
* ``thresholds`` (``C * 32``-bit words): one word per column group; lane ``c`` holds, for a
  threshold layer, bit 31 = polarity is -1, bit 30 = the channel pools with AND, bits
  29..0 = ``T`` (two's complement, clamped to ``[-1, acc_max + 1]``, which keeps every
  decision); for the integer layer the 32-bit signed ``score_offset``.

The ``activations`` memory (``W``-bit words, not an image: the host writes the input) holds
two ping-pong regions; the ``scores`` memory receives the last
layer's scores. :func:`execute` runs a program from the images alone, exactly as the
sequencer does (same address arithmetic), and is tested equal to :func:`golden.run`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import encoding as enc
from .errors import UserError
from .golden import im2col_segments, pack_weights
from .images import MemoryImage
from .ir import CompiledModel, Layer
from .targets import LANE_BITS, PROGRAM_BITS, Target

MAGIC = 0x58460001  # "XF", program format version 1
HEADER_WORDS = 24
DESC_WORDS = 32

#: Header fields, in word order.
HEADER_FIELDS = (
    "magic", "n_layers", "in_h", "in_w", "in_c", "in_bits", "n_classes", "geometry",
    "input_base", "input_words", "act_words", "weight_words", "threshold_words",
    "input_mode", "win_kh", "win_kw", "win_stride", "win_pad", "max_batch",
)
#: ``input_mode``: the host sends the image's bit-planes as per-pixel segments.
INPUT_SEGMENTS = 0
#: ``input_mode``: the host sends the first layer's windows (host-side im2col), see
#: :func:`hardware_model`.
INPUT_WINDOWS = 1

#: Layer descriptor fields, in word order (docs/program.md explains each one).
DESC_FIELDS = (
    "flags",        # bit 0: integer output (last layer); bit 1: pooling
    "in_base",      # activation address of input plane 0, pixel (0, 0), word 0
    "planes",       # input bit-planes B
    "plane_stride",  # words between planes: in_h * in_w * cw
    "in_h",
    "in_w",
    "cw",           # words per input segment: ceil(in_c / W)
    "kh",
    "kw",
    "row_skip",     # (in_w - kw) * cw: window offset jump at the end of a window row
    "kwords",       # kh * kw * cw: reduction words per plane
    "w_base",       # weights address of group 0, word 0
    "groups",       # ceil(out_c / C)
    "out_c",
    "out_base",     # activation address of output pixel 0
    "cw_out",       # ceil(out_c / W)
    "thr_base",     # thresholds address of group 0
    "score_mul",    # integer layer: score = score_mul * acc + offset (signed 8 bits)
    "npix",         # output pixels: out_h * out_w (pooled pixels when pooling)
    "walk_w",       # out_w
    "walk_step",    # input pixels between neighbouring outputs: pool_stride * stride
    "walk_addr_x",  # pool_stride * stride * cw
    "walk_addr_y",  # pool_stride * stride * in_w * cw
    "addr0",        # (-pad * in_w - pad) * cw (signed): output (0, 0)'s window origin
    "pad",
    "pool_k",       # pooling window (1: no pooling)
    "pool_step",    # stride: input pixels between pooling-window offsets
    "pool_addr_x",  # stride * cw
    "pool_addr_y",  # stride * in_w * cw
    "acc_max",      # largest accumulator (informational)
    "layer_index",
    "in_img_stride",  # planes * plane_stride: words between the input maps of two images
)
assert len(DESC_FIELDS) <= DESC_WORDS and len(HEADER_FIELDS) <= HEADER_WORDS
FLAG_INTEGER = 1
FLAG_POOL = 2
SIGNED_FIELDS = ("addr0", "score_mul", "row_skip")
INFO_FIELDS = ("acc_max", "layer_index")  # not read by the gateware
#: Fields the sequencer keeps in fewer bits than :func:`field_bits` (small counts: bit-planes
#: up to ``MAX_PLANES``, kernel, padding and strides up to 255, pooling window up to 15).
SMALL_FIELDS = {"flags": 2, "planes": 4, "kh": 8, "kw": 8, "pad": 8, "pool_k": 4,
                "walk_step": 8, "pool_step": 8}
LANE_MASK = (1 << LANE_BITS) - 1
#: Threshold lane: bit 31 polarity -1, bit 30 pool with AND, bits 29..0 ``T`` (signed).
LANE_NEG_BIT = 31
LANE_POOL_BIT = 30
LANE_T_BITS = 30
#: ``score_mul`` is a signed field of this many bits in the datapath.
SCORE_MUL_BITS = 8
#: ``score_mul`` values the accelerator's output stage computes (shift + negation, no
#: multiplier; :mod:`xnorflow.sw.lower` produces 1 and 2).
SCORE_MULS = (-2, -1, 0, 1, 2)
def score_bits(target: Target) -> int:
    """Signed width of the accelerator's integer scores: ``acc_bits + 3`` (``|score_mul| <= 2``
    doubles the accumulator; one more bit leaves the offset as much room again). The scores
    memory stores them sign-extended to 32 bits."""
    return target.acc_bits + 3


#: Most input bit-planes the datapath takes (8-bit pixels).
MAX_PLANES = 8
#: The sequencer computes spatial coordinates (window rows and columns, padding included)
#: modulo ``2^COORD_BITS``; a pixel above or left of the map then wraps to a value
#: ``>= in_h`` (``in_w``), so one unsigned compare per axis finds the padding. Exact as long
#: as the padded input ``in_h + 2 * pad`` (and ``in_w + 2 * pad``) is at most
#: ``2^COORD_BITS`` (:func:`check_fits`).
COORD_BITS = 8
#: Unsigned width of the sequencer's descriptor registers (addresses and counts) when a
#: memory is unlimited; otherwise :func:`field_bits` sizes them from the memory depths.
FIELD_BITS = 20


def field_bits(depths: dict, cols: int) -> int:
    """Width of the sequencer's descriptor registers for memories of ``depths`` words.

    Every address and count of a program that fits is below the largest of the activation,
    weight and score depths and ``C`` times the threshold depth (channels); ``None`` (an
    unlimited memory) means :data:`FIELD_BITS`.
    """
    vals = [depths.get("activations"), depths.get("weights"), depths.get("scores"),
            None if depths.get("thresholds") is None else depths["thresholds"] * cols]
    if any(v is None for v in vals):
        return FIELD_BITS
    return max(vals).bit_length() + 1


@dataclass
class Placement:
    """Where each layer's data lives (word addresses)."""

    region: tuple[int, int]  # bases of the ping and pong regions
    act_words: int  # activation words used
    in_base: list[int]
    out_base: list[int]
    w_base: list[int]
    thr_base: list[int]
    weight_words: int
    threshold_words: int


def _cw(channels: int, width: int) -> int:
    return enc.words_per_segment(channels, width)


def _groups(out_c: int, cols: int) -> int:
    return -(-out_c // cols)


def input_words(model_h: int, model_w: int, model_c: int, in_bits: int, width: int) -> int:
    """Activation words taken by the input image's bit-planes."""
    return in_bits * model_h * model_w * _cw(model_c, width)


def _window_words(layer: Layer, width: int) -> int:
    return -(-layer.k_valid // width)


def windows_pay(layer: Layer, width: int) -> bool:
    """Whether feeding ``layer`` (a first layer) with host-side windows saves operand beats
    without needing more input memory than per-pixel segments."""
    ww = _window_words(layer, width)
    seg = _cw(layer.in_c, width)
    return (ww < layer.kh * layer.kw * seg
            and ww * layer.conv_h * layer.conv_w <= seg * layer.in_h * layer.in_w)


def hardware_model(model: CompiledModel, target: Target,
                   input_windows: bool | None = None) -> tuple[CompiledModel, bool]:
    """The model the accelerator runs, and whether its input is windows.

    With ``input_windows`` (default: when :func:`windows_pay`), the first layer becomes a
    1x1 convolution over its *window map*: output pixel ``(y, x)`` of the original layer is
    an input pixel whose ``kh * kw * in_c`` channels are the window's bits in ``(dy, dx, c)``
    order, packed contiguously (:func:`pack_input` builds them on the host from the contract's
    im2col, spatial padding included). The weights are the same bits in the same order, so
    every accumulator is unchanged; only the packing differs: a 1-channel segment wastes
    ``W - 1`` bits of every word, a window of ``kh * kw * in_c`` bits does not.
    """
    first = model.layers[0]
    use = windows_pay(first, target.width) if input_windows is None else bool(input_windows)
    if not use:
        return model, False
    k = first.k_valid
    ho, wo = first.conv_h, first.conv_w
    new = Layer(**{**first.__dict__})
    new.in_h, new.in_w, new.in_c = ho, wo, k
    new.kh = new.kw = 1
    new.stride, new.pad = 1, 0
    new.kind = "dense" if ho * wo == 1 else "conv"
    new.weights = np.ascontiguousarray(first.weights.reshape(first.out_c, 1, 1, k))
    new.meta = {**first.meta, "host_windows_of": [first.kh, first.kw, first.stride, first.pad]}
    hw = CompiledModel(ho, wo, k, [new, *model.layers[1:]], classes=model.classes,
                       meta=model.meta)
    hw.validate()
    return hw, True


def place(model: CompiledModel, target: Target, batch: int = 1) -> Placement:
    """Lay out a model's maps and parameters in the accelerator's memories.

    Layer ``i`` reads region ``i % 2`` and writes region ``(i + 1) % 2``; the input images
    (all bit-planes of image 0, then of image 1, ...) are at address 0 of region 0. Regions
    hold ``batch`` images' maps one after the other.
    """
    w, cols = target.width, target.cols
    layers = model.layers
    first = layers[0]
    sizes = [batch * input_words(model.in_h, model.in_w, model.in_c, first.in_bits, w), 0]
    for i, layer in enumerate(layers[:-1]):
        out = batch * layer.out_h * layer.out_w * _cw(layer.out_c, w)
        sizes[(i + 1) % 2] = max(sizes[(i + 1) % 2], out)
    region = (0, sizes[0])
    in_base, out_base, w_base, thr_base = [], [], [], []
    wp = tp = 0
    for i, layer in enumerate(layers):
        in_base.append(region[i % 2])
        out_base.append(region[(i + 1) % 2] if layer.output == "threshold" else 0)
        g = _groups(layer.out_c, cols)
        w_base.append(wp)
        wp += g * layer.kh * layer.kw * _cw(layer.in_c, w)
        thr_base.append(tp)
        tp += g
    return Placement(region, sizes[0] + sizes[1], in_base, out_base, w_base, thr_base, wp, tp)


def _descriptor(i: int, layer: Layer, pl: Placement, target: Target) -> dict:
    w = target.width
    cw = _cw(layer.in_c, w)
    integer = layer.output == "integer"
    pool = (not integer) and layer.pool_k > 1
    ps = layer.pool_stride if pool else 1
    return {
        "flags": (FLAG_INTEGER if integer else 0) | (FLAG_POOL if pool else 0),
        "in_base": pl.in_base[i],
        "planes": layer.in_bits,
        "plane_stride": layer.in_h * layer.in_w * cw,
        "in_h": layer.in_h,
        "in_w": layer.in_w,
        "cw": cw,
        "kh": layer.kh,
        "kw": layer.kw,
        "row_skip": (layer.in_w - layer.kw) * cw,
        "kwords": layer.kh * layer.kw * cw,
        "w_base": pl.w_base[i],
        "groups": _groups(layer.out_c, target.cols),
        "out_c": layer.out_c,
        "out_base": pl.out_base[i],
        "cw_out": _cw(layer.out_c, w),
        "thr_base": pl.thr_base[i],
        "score_mul": int(layer.score_mul) if integer else 0,
        "npix": layer.out_h * layer.out_w,
        "walk_w": layer.out_w,
        "walk_step": ps * layer.stride,
        "walk_addr_x": ps * layer.stride * cw,
        "walk_addr_y": ps * layer.stride * layer.in_w * cw,
        "addr0": (-layer.pad * layer.in_w - layer.pad) * cw,
        "pad": layer.pad,
        "pool_k": layer.pool_k if pool else 1,
        "pool_step": layer.stride,
        "pool_addr_x": layer.stride * cw,
        "pool_addr_y": layer.stride * layer.in_w * cw,
        "acc_max": int(layer.acc_max),
        "layer_index": i,
        "in_img_stride": layer.in_bits * layer.in_h * layer.in_w * cw,
    }


def _fail(layer: str, memory: str, need_words: int, width: int, target: Target,
          what: str = "") -> UserError:
    avail = target.depth(memory)
    return UserError(
        f"layer {layer!r}{what}: memory {memory!r} needs {need_words} words x {width} bits = "
        f"{need_words * width} bits but target {target.name!r} ({target.geometry}) has "
        f"{avail} words x {width} bits = {avail * width} bits; choose a bigger target "
        f"(e.g. --target sim) or a smaller model"
    )


def check_fits(model: CompiledModel, target: Target,
               input_windows: bool | None = None, batch: int = 1) -> None:
    """Raise :class:`UserError` unless ``model`` runs on ``target`` (see :func:`_check_fits`)."""
    _check_fits(model, target, input_windows, batch)


def _check_fits(model: CompiledModel, target: Target,
                input_windows: bool | None = None, batch: int = 1) -> None:
    """Raise :class:`UserError` unless ``model`` runs on ``target``.

    Checks the datapath's limits (1-bit hidden activations, accumulator and score widths, an
    integer last layer with one output pixel) and every memory's capacity; the message names
    the layer, the memory, the bits needed and the bits available.
    """
    model.validate()
    model, _ = hardware_model(model, target, input_windows)
    w = target.width
    for layer in model.layers:
        if layer.output == "threshold" and layer.out_bits != 1:
            raise UserError(
                f"layer {layer.name!r}: out_bits={layer.out_bits}; the accelerator supports "
                f"1-bit hidden activations only (multi-bit input is supported on the first "
                f"layer); retrain with 1-bit activations or use --target sim with the golden "
                f"backend"
            )
        if layer.acc_bits > target.acc_bits:
            raise UserError(
                f"layer {layer.name!r}: accumulator needs {layer.acc_bits} bits (acc_max "
                f"{layer.acc_max}) but target {target.name!r} has {target.acc_bits}-bit "
                f"accumulators"
            )
        if layer.output == "integer":
            if layer.conv_h * layer.conv_w != 1:
                raise UserError(
                    f"layer {layer.name!r}: the integer last layer must have one output pixel, "
                    f"not {layer.conv_h}x{layer.conv_w}"
                )
            off = np.abs(np.asarray(layer.score_offset, dtype=np.int64))
            worst = abs(int(layer.score_mul)) * int(layer.acc_max) + int(off.max())
            mul = int(layer.score_mul)
            if mul not in SCORE_MULS:
                raise UserError(
                    f"layer {layer.name!r}: score_mul {mul} is not supported by the "
                    f"accelerator's output stage (a shift, no multiplier): use one of "
                    f"{', '.join(map(str, SCORE_MULS))}"
                )
            sb = score_bits(target)
            if worst >= 1 << (sb - 1):
                raise UserError(
                    f"layer {layer.name!r}: scores reach {worst} (|score_mul| * acc_max + "
                    f"largest |score_offset|), beyond the accelerator's {sb}-bit signed scores "
                    f"on target {target.name!r} (acc_bits + 3); use smaller score offsets"
                )
        if layer.in_bits > MAX_PLANES:
            raise UserError(f"layer {layer.name!r}: {layer.in_bits} input bit-planes, the "
                            f"accelerator takes at most {MAX_PLANES}")
        if layer.acc_max + 2 >= 1 << (LANE_T_BITS - 1):
            raise UserError(f"layer {layer.name!r}: thresholds up to {layer.acc_max + 1} do "
                            f"not fit the {LANE_T_BITS}-bit threshold lanes")
        if layer.kw > layer.in_w + 2 * layer.pad or layer.kh > layer.in_h + 2 * layer.pad:
            raise UserError(f"layer {layer.name!r}: kernel larger than its padded input")
        for field, size in (("in_h", layer.in_h), ("in_w", layer.in_w)):
            if size + 2 * layer.pad > 1 << COORD_BITS:
                raise UserError(
                    f"layer {layer.name!r}: padded input {field} + 2 * pad = {size} + "
                    f"2 * {layer.pad} = {size + 2 * layer.pad} exceeds the sequencer's "
                    f"{1 << COORD_BITS}-pixel coordinate range ({COORD_BITS}-bit "
                    f"coordinates); use a smaller input map")
    if not 1 <= batch <= target.rows:
        raise UserError(f"batch {batch}: the accelerator runs 1..R = 1..{target.rows} images "
                        f"at once")
    pl = place(model, target, batch)
    n_classes = model.layers[-1].out_c * batch
    prog_words = HEADER_WORDS + DESC_WORDS * len(model.layers)
    # the biggest consumer names the layer in messages
    def biggest(per_layer):
        return max(zip(per_layer, (lay.name for lay in model.layers), strict=True))[1]

    checks = [
        ("program", prog_words, model.layers[-1].name),
        ("weights", pl.weight_words, biggest(
            [_groups(lay.out_c, target.cols) * lay.kh * lay.kw * _cw(lay.in_c, w)
             for lay in model.layers])),
        ("thresholds", pl.threshold_words, biggest(
            [_groups(lay.out_c, target.cols) for lay in model.layers])),
        ("activations", pl.act_words, biggest(
            [lay.in_bits * lay.in_h * lay.in_w * _cw(lay.in_c, w) for lay in model.layers])),
        ("scores", n_classes, model.layers[-1].name),
    ]
    for memory, need, name in checks:
        depth = target.depth(memory)
        if depth is not None and need > depth:
            raise _fail(name, memory, need, target.word_bits(memory), target)
    # after the capacities: a memory overflow is the more useful message
    for i, lay in enumerate(model.layers):
        d = _descriptor(i, lay, pl, target)
        fb = field_bits({n: target.depth(n) for n in target.memories}, target.cols)
        big = [f for f in DESC_FIELDS if f not in SIGNED_FIELDS + INFO_FIELDS
               and d[f] >= 1 << min(fb, SMALL_FIELDS.get(f, fb))]
        if big:
            bits = min(fb, SMALL_FIELDS.get(big[0], fb))
            raise UserError(f"layer {lay.name!r}: descriptor field {big[0]} = {d[big[0]]} "
                            f"exceeds the sequencer's {bits}-bit field")


def _lanes_to_words(lanes: np.ndarray, lane_bits: int) -> np.ndarray:
    """``(N, C)`` lane values -> ``N`` words of ``C * lane_bits`` bits (uint64 or object)."""
    n, c = lanes.shape
    total = c * lane_bits
    mask = (1 << lane_bits) - 1
    out = [sum((int(lanes[i, j]) & mask) << (j * lane_bits) for j in range(c)) for i in range(n)]
    if total <= 64:
        return np.array(out, dtype=np.uint64)
    return np.array(out, dtype=object)


def _lane_value(lay: Layer, n: int, pool: bool) -> int:
    """Threshold-memory lane of output channel ``n`` (see the module docstring)."""
    if lay.output == "integer":
        return int(lay.score_offset[n]) & LANE_MASK
    t = int(np.clip(int(lay.thresholds[n, 0]), -1, lay.acc_max + 1))
    neg = 1 if int(lay.polarity[n]) < 0 else 0
    op = int(lay.pool_ops[n]) == enc.POOL_AND if pool else 0
    return neg << LANE_NEG_BIT | int(op) << LANE_POOL_BIT | (t & ((1 << LANE_T_BITS) - 1))


def default_batch(model: CompiledModel, target: Target,
                  input_windows: bool | None = None) -> int:
    """The largest batch ``1..R`` whose maps and scores fit the target's memories."""
    for n in range(target.rows, 1, -1):
        try:
            _check_fits(model, target, input_windows, n)
        except UserError:
            continue
        return n
    return 1


def build_memories(model: CompiledModel, target: Target, input_windows: bool | None = None,
                   max_batch: int | None = None) -> list[MemoryImage]:
    """The ``program``, ``weights`` and ``thresholds`` images of ``model`` for ``target``.

    ``input_windows``: feed the first layer host-side windows (:func:`hardware_model`;
    default: when it saves operand beats). ``max_batch``: most images one run may classify
    (the activation regions are sized for it; default :func:`default_batch`). Raises
    :class:`UserError` (via :func:`check_fits`) if the model does not fit.
    """
    _check_fits(model, target, input_windows)
    if max_batch is None:
        max_batch = default_batch(model, target, input_windows)
    _check_fits(model, target, input_windows, max_batch)
    orig_first = model.layers[0]
    model, windows = hardware_model(model, target, input_windows)
    w, cols = target.width, target.cols
    pl = place(model, target, max_batch)
    descs = [_descriptor(i, lay, pl, target) for i, lay in enumerate(model.layers)]
    first = model.layers[0]
    header = {
        "magic": MAGIC,
        "n_layers": len(model.layers),
        "in_h": orig_first.in_h,
        "in_w": orig_first.in_w,
        "in_c": orig_first.in_c,
        "in_bits": first.in_bits,
        "n_classes": model.layers[-1].out_c,
        "geometry": target.rows | target.cols << 8 | target.width << 16,
        "input_base": 0,
        "input_words": input_words(model.in_h, model.in_w, model.in_c, first.in_bits, w),
        "act_words": pl.act_words,
        "weight_words": pl.weight_words,
        "threshold_words": pl.threshold_words,
        "input_mode": INPUT_WINDOWS if windows else INPUT_SEGMENTS,
        "win_kh": orig_first.kh if windows else 0,
        "win_kw": orig_first.kw if windows else 0,
        "win_stride": orig_first.stride if windows else 0,
        "win_pad": orig_first.pad if windows else 0,
        "max_batch": max_batch,
    }
    prog = np.zeros(HEADER_WORDS + DESC_WORDS * len(descs), dtype=np.uint64)
    for j, f in enumerate(HEADER_FIELDS):
        prog[j] = header[f] & 0xFFFFFFFF
    for i, d in enumerate(descs):
        for j, f in enumerate(DESC_FIELDS):
            prog[HEADER_WORDS + DESC_WORDS * i + j] = int(d[f]) & 0xFFFFFFFF

    wlanes = np.full((max(pl.weight_words, 1), cols), (1 << w) - 1, dtype=object)
    tlanes = np.zeros((max(pl.threshold_words, 1), cols), dtype=object)
    for i, lay in enumerate(model.layers):
        packed = pack_weights(lay, w)  # (out_c, kwords)
        kwords = packed.shape[1]
        pool = lay.output == "threshold" and lay.pool_k > 1
        for n in range(lay.out_c):
            g, c = divmod(n, cols)
            base = pl.w_base[i] + g * kwords
            wlanes[base : base + kwords, c] = [int(v) for v in packed[n]]
            tlanes[pl.thr_base[i] + g, c] = _lane_value(lay, n, pool)
    return [
        MemoryImage("program", PROGRAM_BITS, prog,
                    f"header {HEADER_WORDS} words + {DESC_WORDS} words per layer "
                    f"(docs/program.md); {len(descs)} layers"),
        MemoryImage("weights", cols * w, _lanes_to_words(wlanes, w),
                    f"lane c (bits c*{w}..) = column c; per layer, group g: kh*kw*cw words "
                    f"(dy, dx, cw order), then pool-mask words (docs/program.md)"),
        MemoryImage("thresholds", cols * LANE_BITS, _lanes_to_words(tlanes, LANE_BITS),
                    "one word per column group; lane c = pol<0 << 31 | T (31-bit) or the "
                    "32-bit score offset (docs/program.md)"),
    ]


# ----- decoding and the executable model ----------------------------------------------------
def _signed32(v: int) -> int:
    v = int(v) & 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def decode_program(words) -> tuple[dict, list[dict]]:
    """Header and layer descriptors of a program image (:class:`UserError` if malformed)."""
    words = [int(v) for v in np.asarray(words).tolist()]
    if len(words) < HEADER_WORDS or words[0] != MAGIC:
        raise UserError(
            f"program image: magic {words[0] if words else None!r} != {MAGIC:#x}; not an "
            f"xnorflow v1 program"
        )
    header = {f: words[j] for j, f in enumerate(HEADER_FIELDS)}
    n = header["n_layers"]
    if len(words) < HEADER_WORDS + n * DESC_WORDS:
        raise UserError(f"program image: {n} layers need {HEADER_WORDS + n * DESC_WORDS} words")
    descs = []
    for i in range(n):
        base = HEADER_WORDS + i * DESC_WORDS
        d = {f: words[base + j] for j, f in enumerate(DESC_FIELDS)}
        for f in SIGNED_FIELDS:
            d[f] = _signed32(d[f])
        descs.append(d)
    return header, descs


def decode_geometry(value: int) -> tuple[int, int, int]:
    """``(R, C, W)`` from the header's geometry word."""
    return value & 0xFF, (value >> 8) & 0xFF, (value >> 16) & 0xFF


def pack_input(pixels, header: dict, width: int) -> np.ndarray:
    """Input activation words of one ``uint8`` image ``(H, W, C)``: plane-major segments.

    Word ``b * plane_stride + (y * in_w + x) * cw + j`` holds channels ``j*W ..`` of pixel
    ``(y, x)`` in bit-plane ``b`` (:func:`xnorflow.sw.encoding.input_planes`). With the
    header's ``input_mode`` = :data:`INPUT_WINDOWS` the "pixels" are the first layer's
    output positions and their channels the window bits (:func:`hardware_model`).
    """
    px = np.asarray(pixels)
    shape = (header["in_h"], header["in_w"], header["in_c"])
    if px.shape != shape:
        raise UserError(f"input image has shape {px.shape}, the program expects {shape}")
    planes = enc.input_planes(px, header["in_bits"])  # (B, H, W, C)
    b = planes.shape[0]
    if header.get("input_mode", INPUT_SEGMENTS) == INPUT_SEGMENTS:
        words = enc.pack_segments(planes.reshape(b, shape[0] * shape[1], shape[2]), width)
        return words.reshape(-1).astype(np.uint64)
    # windows: the contract's im2col (spatial padding included), each window's valid bits
    # then packed contiguously
    kh, kw = header["win_kh"], header["win_kw"]
    cols = im2col_segments(planes[:, None], kh, kw, header["win_stride"], header["win_pad"],
                           width)  # (B, 1, Ho, Wo, kh*kw*cw)
    npx = cols.shape[2] * cols.shape[3]
    bits = enc.unpack_segments(cols.reshape(b, npx, -1), kh * kw, shape[2], width)
    words = enc.pack_bits(bits.reshape(b, npx, kh * kw * shape[2]), width, enc.ACT_PAD_BIT)
    return words.reshape(-1).astype(np.uint64)


@dataclass
class ExecResult:
    """What :func:`execute` computed: every layer's output map words, scores and class."""

    activations: np.ndarray  # final activation memory (uint64 words)
    layer_outputs: list[np.ndarray]  # hidden layers: (out_h, out_w, out_c) bits, from memory
    scores: np.ndarray  # int64 (n_classes,)
    predicted: int


def _images_by_name(memories) -> dict:
    return {m.name: m for m in memories}


def _lane(words, lane: int, bits: int) -> np.ndarray:
    mask = (1 << bits) - 1
    return np.array([(int(v) >> (lane * bits)) & mask for v in words], dtype=np.uint64)


def execute(memories: list[MemoryImage], pixels, target: Target) -> ExecResult:
    """Run the program in ``memories`` on one ``uint8`` image, as the sequencer does.

    Uses only the memory images and the target geometry (no IR): the header gives the input
    shape, each descriptor the addresses and counts. Address arithmetic and the order of
    writes are those of the gateware (``docs/program.md``).
    """
    imgs = _images_by_name(memories)
    for name in ("program", "weights", "thresholds"):
        if name not in imgs:
            raise UserError(f"memory image {name!r} missing")
    header, descs = decode_program(imgs["program"].words)
    R, C, W = decode_geometry(header["geometry"])
    if (R, C, W) != (target.rows, target.cols, target.width):
        raise UserError(
            f"program was built for {R}x{C}x{W}, target {target.name!r} is {target.geometry}"
        )
    wmem = list(imgs["weights"].words)
    tmem = list(imgs["thresholds"].words)
    act = np.zeros(max(header["act_words"], 1), dtype=np.uint64)
    inp = pack_input(pixels, header, W)
    act[header["input_base"] : header["input_base"] + len(inp)] = inp
    outputs: list[np.ndarray] = []
    scores = np.zeros(header["n_classes"], dtype=np.int64)
    for d in descs:
        _execute_layer(d, act, wmem, tmem, scores, outputs, R, C, W)
    return ExecResult(act, outputs, scores, int(enc.argmax_first(scores)))


def _window_offsets(d: dict):
    """Per reduction word ``(dy, dx, cw)``: window offset (as the sequencer accumulates it)."""
    offs, vy, vx = [], [], []
    off = 0
    for dy in range(d["kh"]):
        for dx in range(d["kw"]):
            for _ in range(d["cw"]):
                offs.append(off)
                vy.append(dy)
                vx.append(dx)
                off += 1
        off += d["row_skip"]
    return np.array(offs, dtype=np.int64), np.array(vy), np.array(vx)


def _split_lane(lane: int) -> tuple[int, int, int]:
    """``(neg, pool_and, T)`` of a threshold lane."""
    t = lane & ((1 << LANE_T_BITS) - 1)
    if t >> (LANE_T_BITS - 1):
        t -= 1 << LANE_T_BITS
    return (lane >> LANE_NEG_BIT) & 1, (lane >> LANE_POOL_BIT) & 1, t


def _execute_layer(d, act, wmem, tmem, scores, outputs, R, C, W) -> None:
    """One layer, in the sequencer's order: tiles of R output pixels x column groups x
    pooling offsets x bit-planes x window words."""
    wordmask = np.uint64((1 << W) - 1)
    npix, ow = d["npix"], d["walk_w"]
    pix = np.arange(npix)
    oy, ox = pix // ow, pix % ow
    by = oy * d["walk_step"] - d["pad"]
    bx = ox * d["walk_step"] - d["pad"]
    row_addr = d["in_base"] + d["addr0"] + oy * d["walk_addr_y"] + ox * d["walk_addr_x"]
    offs, vy, vx = _window_offsets(d)
    integer = bool(d["flags"] & FLAG_INTEGER)
    k = d["pool_k"]
    cwo = d["cw_out"]
    out_bits = np.zeros((npix, d["groups"] * C), dtype=np.uint8)
    for g in range(d["groups"]):
        wwords = wmem[d["w_base"] + g * d["kwords"] : d["w_base"] + (g + 1) * d["kwords"]]
        lanes = [(int(tmem[d["thr_base"] + g]) >> (c * LANE_BITS)) & LANE_MASK for c in range(C)]
        wl = [_lane(wwords, c, W) for c in range(C)]
        pooled = np.zeros((npix, C), dtype=np.uint8)
        for py in range(k):
            for px in range(k):
                iy = by[:, None] + py * d["pool_step"] + vy[None, :]
                ix = bx[:, None] + px * d["pool_step"] + vx[None, :]
                valid = (iy >= 0) & (iy < d["in_h"]) & (ix >= 0) & (ix < d["in_w"])
                base = row_addr + py * d["pool_addr_y"] + px * d["pool_addr_x"]
                acc = np.zeros((npix, C), dtype=np.int64)
                for b in range(d["planes"]):
                    addr = base[:, None] + b * d["plane_stride"] + offs[None, :]
                    a = np.where(valid, act[np.where(valid, addr, 0)], np.uint64(0))
                    for c in range(C):
                        agree = ~(a ^ wl[c][None, :]) & wordmask
                        acc[:, c] += enc.popcount(agree).sum(axis=1) << b
                if integer:
                    for c in range(C):
                        n = g * C + c
                        if n < d["out_c"]:
                            scores[n] = d["score_mul"] * int(acc[0, c]) + _signed32(lanes[c])
                    continue
                for c in range(C):
                    neg, op, t = _split_lane(lanes[c])
                    bit = (acc[:, c] <= t) if neg else (acc[:, c] >= t)
                    bit = bit.astype(np.uint8)
                    if py == 0 and px == 0:
                        pooled[:, c] = bit
                    elif op:
                        pooled[:, c] &= bit
                    else:
                        pooled[:, c] |= bit
        out_bits[:, g * C : (g + 1) * C] = pooled
    if integer:
        return
    valid_bits = out_bits[:, : d["out_c"]]
    words = enc.pack_bits(valid_bits, W, enc.ACT_PAD_BIT).astype(np.uint64)  # (npix, cwo)
    addr = d["out_base"] + pix[:, None] * cwo + np.arange(cwo)[None, :]
    act[addr] = words
    outputs.append(valid_bits.reshape(npix // ow, ow, d["out_c"]))
