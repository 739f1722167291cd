"""The accelerator program and memory layout: compiled model -> memory images, and back.

``docs/program.md`` is the prose version of this module. Three memory images drive the
accelerator (:func:`build_memories`):

* ``program`` (32-bit words): a 16-word header then one 40-word descriptor per layer. Every
  address, count and stride the sequencer needs is precomputed here, so the gateware only
  adds and compares (no multipliers on the sequencer's paths).
* ``weights`` (``C * W``-bit words, lane ``c`` = bits ``[c*W, (c+1)*W)``): per layer and
  column group ``g`` (output channels ``g*C .. g*C+C-1``), ``kh*kw*Cw`` words, word ``k``
  holding packed weight word ``k`` (:func:`xnorflow.sw.golden.pack_weights` order:
  ``(dy, dx, cw)``) of each channel of the group; then, for pooling layers, ``Cw_out``
  pool-mask words (lane 0 bit ``j`` of word ``cw`` is 1 when channel ``cw*W + j`` pools with
  AND).
* ``thresholds`` (``C * 32``-bit words): one word per column group; lane ``c`` holds, for a
  threshold layer, bit 31 = polarity is -1 and bits 30..0 = ``T`` (two's complement, clamped
  to ``[-1, acc_max + 1]``, which keeps every decision); for the integer layer the 32-bit
  signed ``score_offset``.

The ``activations`` memory (``W``-bit words, not an image: the host writes the input) holds
two ping-pong regions and a pooling scratch region; the ``scores`` memory receives the last
layer's scores. :func:`execute` runs a program from the images alone, exactly as the
sequencer does (same address arithmetic), and is tested equal to :func:`golden.run`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import encoding as enc
from .errors import UserError
from .golden import pack_weights
from .images import MemoryImage
from .ir import CompiledModel, Layer
from .targets import LANE_BITS, PROGRAM_BITS, Target

MAGIC = 0x58460001  # "XF", program format version 1
HEADER_WORDS = 16
DESC_WORDS = 40

#: Header fields, in word order.
HEADER_FIELDS = (
    "magic", "n_layers", "in_h", "in_w", "in_c", "in_bits", "n_classes", "geometry",
    "input_base", "input_words", "act_words", "weight_words", "threshold_words",
)

#: Layer descriptor fields, in word order (docs/program.md explains each one).
DESC_FIELDS = (
    "flags",        # bit 0: integer output (last layer); bit 1: pool after threshold
    "in_base",      # activation address of input plane 0, pixel (0, 0), word 0
    "planes",       # input bit-planes B
    "plane_stride",  # words between planes: in_h * in_w * cw
    "in_h",
    "in_w",
    "cw",           # words per input segment: ceil(in_c / W)
    "kh",
    "kw",
    "row_skip",     # (in_w - kw) * cw: window offset jump at the end of a window row
    "npix",         # conv_h * conv_w output pixels
    "conv_w",
    "pad",
    "stride",
    "addr0",        # (-pad * in_w - pad) * cw (signed): pixel (0, 0)'s window origin
    "step_x",       # stride * cw
    "step_y",       # stride * in_w * cw
    "kwords",       # kh * kw * cw: reduction words per plane
    "w_base",       # weights address of group 0, word 0
    "groups",       # ceil(out_c / C)
    "out_c",
    "out_base",     # activation address of output pixel 0 (scratch when pooling)
    "cw_out",       # ceil(out_c / W)
    "thr_base",     # thresholds address of group 0
    "score_mul",    # integer layer: score = score_mul * acc + offset (signed)
    "pool_k",
    "pool_stride",
    "pool_out_w",
    "pool_npix",    # out_h * out_w
    "pool_dst",     # activation address of pooled pixel 0
    "pool_mask",    # weights address of the pool-mask words
    "pool_step_x",  # pool_stride * cw_out
    "pool_step_y",  # pool_stride * conv_w * cw_out
    "pool_dy",      # conv_w * cw_out
    "pool_skip",    # (conv_w - pool_k) * cw_out
    "acc_max",      # largest accumulator (informational; check_fits uses it)
    "layer_index",
)
assert len(DESC_FIELDS) <= DESC_WORDS
FLAG_INTEGER = 1
FLAG_POOL = 2
SIGNED_FIELDS = ("addr0", "score_mul")
LANE_MASK = (1 << LANE_BITS) - 1


@dataclass
class Placement:
    """Where each layer's data lives (word addresses)."""

    region: tuple[int, int, int]  # bases of ping, pong, scratch
    act_words: int  # activation words used
    in_base: list[int]
    out_base: list[int]
    pool_dst: list[int]
    w_base: list[int]
    pool_mask: list[int]
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


def place(model: CompiledModel, target: Target) -> Placement:
    """Lay out a model's maps and parameters in the accelerator's memories."""
    w, cols = target.width, target.cols
    layers = model.layers
    first = layers[0]
    sizes = [0, 0]
    sizes[0] = input_words(model.in_h, model.in_w, model.in_c, first.in_bits, w)
    scratch = 0
    for i, layer in enumerate(layers[:-1]):
        cwo = _cw(layer.out_c, w)
        out = layer.out_h * layer.out_w * cwo
        sizes[(i + 1) % 2] = max(sizes[(i + 1) % 2], out)
        if layer.pool_k > 1:
            scratch = max(scratch, layer.conv_h * layer.conv_w * cwo)
    region = (0, sizes[0], sizes[0] + sizes[1])
    in_base, out_base, pool_dst, w_base, pool_mask, thr_base = [], [], [], [], [], []
    wp = tp = 0
    for i, layer in enumerate(layers):
        in_base.append(region[i % 2])
        dst = region[(i + 1) % 2]
        if layer.output == "threshold" and layer.pool_k > 1:
            out_base.append(region[2])
            pool_dst.append(dst)
        else:
            out_base.append(dst if layer.output == "threshold" else 0)
            pool_dst.append(0)
        g = _groups(layer.out_c, cols)
        kwords = layer.kh * layer.kw * _cw(layer.in_c, w)
        w_base.append(wp)
        wp += g * kwords
        if layer.output == "threshold" and layer.pool_k > 1:
            pool_mask.append(wp)
            wp += _cw(layer.out_c, w)
        else:
            pool_mask.append(0)
        thr_base.append(tp)
        tp += g
    return Placement(region, region[2] + scratch, in_base, out_base, pool_dst, w_base,
                     pool_mask, thr_base, wp, tp)


def _descriptor(i: int, layer: Layer, pl: Placement, target: Target) -> dict:
    w = target.width
    cw = _cw(layer.in_c, w)
    cwo = _cw(layer.out_c, w)
    integer = layer.output == "integer"
    pool = (not integer) and layer.pool_k > 1
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
        "npix": layer.conv_h * layer.conv_w,
        "conv_w": layer.conv_w,
        "pad": layer.pad,
        "stride": layer.stride,
        "addr0": (-layer.pad * layer.in_w - layer.pad) * cw,
        "step_x": layer.stride * cw,
        "step_y": layer.stride * layer.in_w * cw,
        "kwords": layer.kh * layer.kw * cw,
        "w_base": pl.w_base[i],
        "groups": _groups(layer.out_c, target.cols),
        "out_c": layer.out_c,
        "out_base": pl.out_base[i],
        "cw_out": cwo,
        "thr_base": pl.thr_base[i],
        "score_mul": int(layer.score_mul) if integer else 0,
        "pool_k": layer.pool_k if pool else 1,
        "pool_stride": layer.pool_stride if pool else 1,
        "pool_out_w": layer.out_w,
        "pool_npix": layer.out_h * layer.out_w,
        "pool_dst": pl.pool_dst[i],
        "pool_mask": pl.pool_mask[i],
        "pool_step_x": layer.pool_stride * cwo,
        "pool_step_y": layer.pool_stride * layer.conv_w * cwo,
        "pool_dy": layer.conv_w * cwo,
        "pool_skip": (layer.conv_w - layer.pool_k) * cwo,
        "acc_max": int(layer.acc_max),
        "layer_index": i,
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


def check_fits(model: CompiledModel, target: Target) -> None:
    """Raise :class:`UserError` unless ``model`` runs on ``target``.

    Checks the datapath's limits (1-bit hidden activations, accumulator and score widths, an
    integer last layer with one output pixel) and every memory's capacity; the message names
    the layer, the memory, the bits needed and the bits available.
    """
    model.validate()
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
            if worst >= 1 << (LANE_BITS - 1):
                raise UserError(
                    f"layer {layer.name!r}: scores reach {worst}, beyond the accelerator's "
                    f"32-bit signed scores"
                )
        if layer.kw > layer.in_w + 2 * layer.pad or layer.kh > layer.in_h + 2 * layer.pad:
            raise UserError(f"layer {layer.name!r}: kernel larger than its padded input")
    pl = place(model, target)
    n_classes = model.layers[-1].out_c
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


def _lanes_to_words(lanes: np.ndarray, lane_bits: int) -> np.ndarray:
    """``(N, C)`` lane values -> ``N`` words of ``C * lane_bits`` bits (uint64 or object)."""
    n, c = lanes.shape
    total = c * lane_bits
    mask = (1 << lane_bits) - 1
    out = [sum((int(lanes[i, j]) & mask) << (j * lane_bits) for j in range(c)) for i in range(n)]
    if total <= 64:
        return np.array(out, dtype=np.uint64)
    return np.array(out, dtype=object)


def build_memories(model: CompiledModel, target: Target) -> list[MemoryImage]:
    """The ``program``, ``weights`` and ``thresholds`` images of ``model`` for ``target``.

    Raises :class:`UserError` (via :func:`check_fits`) if the model does not fit.
    """
    check_fits(model, target)
    w, cols = target.width, target.cols
    pl = place(model, target)
    descs = [_descriptor(i, lay, pl, target) for i, lay in enumerate(model.layers)]
    first = model.layers[0]
    header = {
        "magic": MAGIC,
        "n_layers": len(model.layers),
        "in_h": model.in_h,
        "in_w": model.in_w,
        "in_c": model.in_c,
        "in_bits": first.in_bits,
        "n_classes": model.layers[-1].out_c,
        "geometry": target.rows | target.cols << 8 | target.width << 16,
        "input_base": 0,
        "input_words": input_words(model.in_h, model.in_w, model.in_c, first.in_bits, w),
        "act_words": pl.act_words,
        "weight_words": pl.weight_words,
        "threshold_words": pl.threshold_words,
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
        for n in range(lay.out_c):
            g, c = divmod(n, cols)
            base = pl.w_base[i] + g * kwords
            wlanes[base : base + kwords, c] = [int(v) for v in packed[n]]
            if lay.output == "threshold":
                t = int(np.clip(int(lay.thresholds[n, 0]), -1, lay.acc_max + 1))
                neg = 1 if int(lay.polarity[n]) < 0 else 0
                tlanes[pl.thr_base[i] + g, c] = (neg << 31) | (t & 0x7FFFFFFF)
            else:
                tlanes[pl.thr_base[i] + g, c] = int(lay.score_offset[n]) & LANE_MASK
        if lay.output == "threshold" and lay.pool_k > 1:
            ops = np.asarray(lay.pool_ops, dtype=np.uint8)
            masks = enc.pack_bits((ops == enc.POOL_AND).astype(np.uint8), w, 0)
            wlanes[pl.pool_mask[i] : pl.pool_mask[i] + len(masks), :] = 0
            wlanes[pl.pool_mask[i] : pl.pool_mask[i] + len(masks), 0] = [int(v) for v in masks]
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
    ``(y, x)`` in bit-plane ``b`` (:func:`xnorflow.sw.encoding.input_planes`).
    """
    px = np.asarray(pixels)
    shape = (header["in_h"], header["in_w"], header["in_c"])
    if px.shape != shape:
        raise UserError(f"input image has shape {px.shape}, the program expects {shape}")
    planes = enc.input_planes(px, header["in_bits"])  # (B, H, W, C)
    b = planes.shape[0]
    words = enc.pack_segments(planes.reshape(b, shape[0] * shape[1], shape[2]), width)
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
    wordmask = (1 << W) - 1
    act = np.zeros(max(header["act_words"], 1), dtype=np.uint64)
    inp = pack_input(pixels, header, W)
    act[header["input_base"] : header["input_base"] + len(inp)] = inp
    outputs: list[np.ndarray] = []
    scores = np.zeros(header["n_classes"], dtype=np.int64)
    for d in descs:
        npix, conv_w = d["npix"], d["conv_w"]
        pix = np.arange(npix)
        oy, ox = pix // conv_w, pix % conv_w
        by, bx = oy * d["stride"] - d["pad"], ox * d["stride"] - d["pad"]
        row_addr = d["addr0"] + oy * d["step_y"] + ox * d["step_x"]
        integer = bool(d["flags"] & FLAG_INTEGER)
        # window walk (dy, dx, cw): offset as the gateware accumulates it
        offs, vy, vx = [], [], []
        off = 0
        for dy in range(d["kh"]):
            for dx in range(d["kw"]):
                for _cw_i in range(d["cw"]):
                    offs.append(off)
                    vy.append(dy)
                    vx.append(dx)
                    off += 1
                if dx == d["kw"] - 1:
                    off += d["row_skip"]
        offs, vy, vx = np.array(offs), np.array(vy), np.array(vx)
        iy = by[:, None] + vy[None, :]
        ix = bx[:, None] + vx[None, :]
        valid = (iy >= 0) & (iy < d["in_h"]) & (ix >= 0) & (ix < d["in_w"])
        acc = np.zeros((npix, d["groups"] * C), dtype=np.int64)
        for g in range(d["groups"]):
            wwords = wmem[d["w_base"] + g * d["kwords"] : d["w_base"] + (g + 1) * d["kwords"]]
            for b in range(d["planes"]):
                addr = d["in_base"] + b * d["plane_stride"] + row_addr[:, None] + offs[None, :]
                a = np.where(valid, act[np.where(valid, addr, 0)], np.uint64(0))
                for c in range(C):
                    wl = _lane(wwords, c, W)
                    agree = ~(a ^ wl[None, :]) & np.uint64(wordmask)
                    acc[:, g * C + c] += enc.popcount(agree).sum(axis=1) << b
        if integer:
            for n in range(d["out_c"]):
                g, c = divmod(n, C)
                off_ = _signed32((int(tmem[d["thr_base"] + g]) >> (c * LANE_BITS)) & LANE_MASK)
                scores[n] = d["score_mul"] * int(acc[0, n]) + off_
            continue
        # threshold write-back: group order, first chunk of a word clears the word
        for g in range(d["groups"]):
            tword = int(tmem[d["thr_base"] + g])
            chunk = np.zeros(npix, dtype=np.uint64)
            for c in range(C):
                n = g * C + c
                if n >= d["out_c"]:
                    continue
                lane = (tword >> (c * LANE_BITS)) & LANE_MASK
                neg = lane >> 31
                t = lane & 0x7FFFFFFF
                t = t - (1 << 31) if t & (1 << 30) else t
                a = acc[:, n]
                bit = (a <= t) if neg else (a >= t)
                chunk |= bit.astype(np.uint64) << np.uint64(c)
            shift = (g * C) % W
            waddr = d["out_base"] + pix * d["cw_out"] + (g * C) // W
            if shift == 0:
                act[waddr] = chunk
            else:
                m = np.uint64(((1 << C) - 1) << shift)
                act[waddr] = (act[waddr] & ~m) | (chunk << np.uint64(shift))
        cwo = d["cw_out"]
        if d["flags"] & FLAG_POOL:
            k, onpix, ow = d["pool_k"], d["pool_npix"], d["pool_out_w"]
            for p in range(onpix):
                py, px_ = divmod(p, ow)
                base = d["out_base"] + py * d["pool_step_y"] + px_ * d["pool_step_x"]
                for j in range(cwo):
                    mask = np.uint64(int(wmem[d["pool_mask"] + j]) & wordmask)
                    o, a_ = np.uint64(0), np.uint64(wordmask)
                    for dy in range(k):
                        for dx in range(k):
                            v = act[base + dy * d["pool_dy"] + dx * cwo + j]
                            o |= v
                            a_ &= v
                    act[d["pool_dst"] + p * cwo + j] = (a_ & mask) | (o & ~mask)
            out_words = act[d["pool_dst"] : d["pool_dst"] + onpix * cwo]
            oh, owid = onpix // ow, ow
        else:
            out_words = act[d["out_base"] : d["out_base"] + npix * cwo]
            oh, owid = npix // conv_w, conv_w
        bits = enc.unpack_segments(out_words.astype(np.dtype(f"uint{W}")), oh * owid,
                                   d["out_c"], W)
        outputs.append(bits.reshape(oh, owid, d["out_c"]))
    return ExecResult(act, outputs, scores, int(enc.argmax_first(scores)))
