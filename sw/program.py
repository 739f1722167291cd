"""The accelerator program and memory layout: compiled model -> memory images, and back.

``docs/program.md`` is the prose version of this module. Format 2 moves every decision the
hardware can be spared into the compiler: the gateware plays precomputed tables with flat
counters and never computes a coordinate, a loop bound or a stall.

Memories (``R x C x W`` geometry, ``docs/program.md``):

* ``program`` (32-bit words): a header, one descriptor per layer, then per layer a *beat
  table* (one entry per operand beat of a tile set: the activation offset shared by every row,
  the tap's position for the padding test, valid/last/plane flags) and a *row list* (one
  entry per array row and tile: the window origin of the row's output pixel and how far its
  window sticks out of the input map).
* ``weights`` (``C * W``-bit words, lane ``c`` = bits ``[c*W, (c+1)*W)``): per layer and column
  group ``g``, ``K = kh * kw * ceil(in_c / W)`` words, word ``k`` holding packed weight word
  ``k`` (:func:`xnorflow.sw.golden.pack_weights` order) of each channel (missing: all ones).
* ``thresholds`` (``C * 32``-bit words): one word per column group; lane ``c``: bit 31 =
  polarity -1, bit 30 = pool with AND, bits 29..0 = ``T`` (clamped to ``[-1, acc_max + 1]``),
  or for the integer layer the signed ``score_offset``.
* ``activations`` (``W``-bit words, written by the host and the accelerator): the input,
  the hidden maps (two ping-pong regions) and, at the top address, the all-zero word the
  accelerator reads for a padded tap.
* ``scores`` (``C * 32``-bit words, written by the accelerator): the last layer's scores,
  lane ``c`` of word ``n * G + g`` = class ``g * C + c`` of image ``n``.

:func:`execute` runs a program from the images alone exactly as the gateware does (same
tables, same address arithmetic modulo the memory depth, same write order) and is tested
equal to :func:`xnorflow.sw.golden.run`; :func:`program_cycles` counts its cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import encoding as enc
from .errors import UserError
from .golden import im2col_segments, pack_weights
from .images import MemoryImage
from .ir import CompiledModel, Layer
from .perf import threshold_regs
from .targets import LANE_BITS, MEMORY_NAMES, PROGRAM_BITS, Target

MAGIC = 0x58460002  # "XF", program format 2
#: Header words (the sequencer reads the first four).
HEADER_FIELDS = (
    "magic", "geometry", "n_layers", "max_batch", "in_h", "in_w", "in_c", "in_bits",
    "n_classes", "input_base", "input_words", "act_words", "input_mode", "window",
    "score_base", "score_words",
)
HEADER_WORDS = len(HEADER_FIELDS)
#: ``input_mode``: the host sends the image's bit-planes as per-pixel segments.
INPUT_SEGMENTS = 0
#: ``input_mode``: the host sends the first layer's windows (host-side im2col), see
#: :func:`hardware_model`.
INPUT_WINDOWS = 1

#: Layer descriptor: field -> (word, lowest bit, bits, signed). Words 0..7 are read by the
#: sequencer (:data:`DESC_READ` of them); 8 and 9 describe the output map for the host.
DESC_LAYOUT = {
    "integer": (0, 0, 1, False),       # the last layer: integer scores
    "ksplit": (0, 1, 1, False),        # one image per tile, its reduction split over the rows
    "ospread": (0, 2, 1, False),       # one image per tile, its column groups spread over the rows
    "score_mul": (0, 4, 3, True),      # integer layer: score = score_mul * acc + offset
    "passes": (0, 8, 8, False),        # tiles per tile set: pooling-window offsets (>= 1)
    "groups": (0, 16, 16, False),      # column groups G = ceil(out_c / C)
    "table": (1, 0, 16, False),        # program address of the beat table
    "entries": (1, 16, 16, False),     # beat-table entries E (one tile set)
    "rows": (2, 0, 16, False),         # program address of the row list
    "rows_per_image": (2, 16, 16, False),  # rows (output pixels) of one image
    "w_base": (3, 0, 32, False),       # weights address of group 0
    "thr_base": (4, 0, 16, False),     # thresholds address of group 0
    "out_stride": (4, 16, 16, False),  # output words per row: ceil(out_c / W), or G
    "out_base": (5, 0, 32, False),     # activations (or scores) address of row 0's output
    "tile_words": (6, 0, 32, False),   # R * out_stride: output words per tile of rows
    "group_words": (7, 0, 16, False),  # K = kh * kw * ceil(in_c / W): weight words per group
    "beats": (7, 16, 16, False),       # beats (cycles) of one tile set: the entries' runs
    "out_c": (8, 0, 16, False),        # informational: the output map, for the host
    "index": (8, 16, 16, False),
    "out_h": (9, 0, 16, False),
    "out_w": (9, 16, 16, False),
}
DESC_WORDS = 10
DESC_READ = 8
#: Fields stored as ``value - 1`` (so that a count can never be 0).
MINUS_ONE = ("passes", "groups", "entries")

#: Beat-table entry: the activation offset (low 16 bits, added modulo the memory depth),
#: four saturated tap distances (2 bits each) and flags.
BEAT_OFF_BITS = 16
BEAT_TAPS = 16  # dxl, dxr, dyt, dyb at bits 16, 18, 20, 22
BEAT_VALID = 24  # an operand beat (else a bubble: nothing reaches the array)
BEAT_LAST = 25  # the tile's last beat: the accumulators finish
BEAT_DBL = 26  # the first beat of a bit-plane after the first: the accumulators double
BEAT_REWIND = 27  # the first beat of a plane: the weights address restarts at the group's
#: bits 28..31: the entry's run: it plays ``1 + run`` beats, the k-th at activation offset
#: ``off + k`` (rewind and dbl on its first beat only, last on its final beat only).
BEAT_RUN = 28
MAX_RUN = 15
#: Row-list entry: the window origin (low 16 bits) and the padding it needs on each side.
ROW_NEEDS = 16  # needL, needR, needT, needB at bits 16, 18, 20, 22
#: Largest spatial padding (the row's needs and the taps' distances are 2-bit numbers).
MAX_PAD = 3

#: Threshold lane: bit 31 polarity -1, bit 30 pool with AND, bits 29..0 ``T`` (signed).
LANE_MASK = (1 << LANE_BITS) - 1
LANE_NEG_BIT = 31
LANE_POOL_BIT = 30
LANE_T_BITS = 30
#: ``score_mul`` values the output stage computes (a shift and an inversion, no multiplier;
#: :mod:`xnorflow.sw.lower` produces 1, or 2 for the {-1,+1} dot product).
SCORE_MULS = (-2, -1, 0, 1, 2)
#: Most input bit-planes the datapath takes (8-bit pixels).
MAX_PLANES = 8
#: Addresses and counts in the program's 16-bit fields.
FIELD16 = 1 << 16


def score_bits(target: Target) -> int:
    """Signed width of the accelerator's integer scores: ``acc_bits + 3`` (``|score_mul| <=
    2`` doubles the accumulator; one more bit leaves the offset as much room again). The
    ``scores`` lanes hold them sign-extended to 32 bits."""
    return target.acc_bits + 3


def tile_beats(target: Target) -> int:
    """Fewest beats (bubbles included) between two tiles' last beats: the array drains one
    row per cycle, so a tile needs ``R`` cycles; the output stage latches a group's threshold
    word two cycles after its address, plus :func:`~xnorflow.sw.perf.threshold_regs` (three
    with ``mem_regs = 2``)."""
    return max(target.rows, 2 + threshold_regs(target.mem_regs))


# ----- layout --------------------------------------------------------------------------------
def _cw(channels: int, width: int) -> int:
    return enc.words_per_segment(channels, width)


def _groups(out_c: int, cols: int) -> int:
    return -(-out_c // cols)


def input_words(model_h: int, model_w: int, model_c: int, in_bits: int, width: int) -> int:
    """Activation words of one input image's bit-planes."""
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


def _dense(layer: Layer) -> bool:
    """One output pixel whose windows are the whole input map, unpadded: the reduction's
    words of a plane are the map's words in order (offsets ``0 .. K - 1``)."""
    return (not _pools(layer) and layer.pad == 0 and layer.kh == layer.in_h
            and layer.kw == layer.in_w)


def k_words(layer: Layer, width: int) -> int:
    """``K = kh * kw * ceil(in_c / W)``: the words of one plane of a dot product (one beat
    each), and a column group's weight words."""
    return layer.kh * layer.kw * _cw(layer.in_c, width)


def k_chunk(layer: Layer, target: Target) -> int:
    """Words of a plane's reduction each row takes when the reduction is split across the
    ``R`` rows: ``ceil(K / R)`` (row ``r`` takes words ``r * chunk ..``)."""
    return -(-k_words(layer, target.width) // target.rows)


#: How a layer's tiles use the array's rows (:func:`mapping`).
PLAIN, KSPLIT, SPREAD = "plain", "ksplit", "spread"


def _spread_fits(layer: Layer, target: Target) -> bool:
    """Whether ``layer``'s column groups can be spread over the rows without writing past its
    output words: ``ceil(G / R) * R`` groups (the missing ones write 0 lanes) fill no more
    words than ``G`` (``W / C`` groups to a word)."""
    lanes = target.width // target.cols
    g = _groups(layer.out_c, target.cols)
    gs = -(-g // target.rows)
    return -(-gs * target.rows // lanes) == -(-g // lanes)


def mapping(layer: Layer, target: Target, batch: int = 1) -> str:
    """How the compiler maps ``layer`` onto the rows for a program of ``batch`` images:
    :data:`PLAIN`, :data:`KSPLIT` or :data:`SPREAD`, whichever takes the fewest beats (ties
    keep the earlier).

    :data:`PLAIN`: row ``r`` of a tile is an output pixel (an image, for a dense layer).
    The other two exist only on a target whose weights memory gives every row its own weight
    word (``Target.weight_rows = R``) and make a tile one output pixel (``docs/program.md``):
    :data:`KSPLIT` (a dense layer, :func:`_dense`) splits the reduction (row ``r`` reads words
    ``r * chunk ..`` of each plane, :func:`k_chunk`, with its own weights; the output stage
    adds the rows before the threshold); :data:`SPREAD` (threshold layers whose spread groups
    fit their output words, :func:`_spread_fits`) gives row ``r`` of a tile set ``s`` column
    group ``s * R + r``: every row reads the whole window with its own weights and
    thresholds. A dense layer of ``R`` images, or a conv layer of a multiple of ``R`` pixels,
    fills the rows without either; a conv layer is spread where its last tile of pixels
    would leave rows idle (e.g. 7 x 7 pooled pixels: 7 tiles of 8 rows for 49) and, when it
    pools, its groups fit one tile set (the output stage's threshold words restart at
    ``thr_base`` after each tile of the last tile set, :class:`~xnorflow.hw.post.OutputStage`).
    Both take more weight words than the plain layout: :func:`place` keeps a layer plain
    where the memories could not hold them (:func:`_fitting_modes`).
    """
    if target.weight_rows != target.rows or target.rows == 1:
        return PLAIN
    R = target.rows
    g = _groups(layer.out_c, target.cols)
    spreadable = layer.output == "threshold" and _spread_fits(layer, target)
    if not _dense(layer):
        if not spreadable or (_pools(layer) and g > R):
            return PLAIN
        oh, ow = _out_shape(layer)
        px = batch * oh * ow
        cost = {PLAIN: -(-px // R) * g * len(beat_table(layer, target, PLAIN)),
                SPREAD: px * -(-g // R) * len(beat_table(layer, target, SPREAD))}
        return min(cost, key=lambda k: cost[k])
    tb = tile_beats(target)
    beats = layer.in_bits * k_words(layer, target.width)
    cost = {PLAIN: -(-batch // R) * g * max(beats, tb),
            KSPLIT: batch * g * max(layer.in_bits * k_chunk(layer, target), tb)}
    if spreadable:
        cost[SPREAD] = batch * -(-g // R) * max(beats, tb)
    return min(cost, key=lambda k: cost[k])  # dicts keep order: ties keep the earlier


def splits_k(layer: Layer, target: Target, batch: int = 1) -> bool:
    """Whether the compiler splits ``layer``'s reduction across the array's rows for a
    program of ``batch`` images (:func:`mapping` is :data:`KSPLIT`; ``docs/program.md``,
    "Split reductions")."""
    return mapping(layer, target, batch) == KSPLIT


def spreads(layer: Layer, target: Target, batch: int = 1) -> bool:
    """Whether the compiler spreads ``layer``'s column groups over the array's rows for a
    program of ``batch`` images (:func:`mapping` is :data:`SPREAD`; ``docs/program.md``,
    "Spread groups")."""
    return mapping(layer, target, batch) == SPREAD


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


def _out_shape(layer: Layer) -> tuple[int, int]:
    """Output map of ``layer`` as the accelerator writes it (pooled when it pools)."""
    return (layer.out_h, layer.out_w) if _pools(layer) else (layer.conv_h, layer.conv_w)


def _pools(layer: Layer) -> bool:
    return layer.output == "threshold" and layer.pool_k > 1


@dataclass
class Placement:
    """Where each layer's data lives (word addresses)."""

    region: tuple[int, int]  # bases of the ping and pong regions
    act_words: int  # activation words used (the zero word above them is not counted)
    in_base: list[int]
    out_base: list[int]
    w_base: list[int]
    thr_base: list[int]
    weight_words: int
    threshold_words: int
    score_words: int  # per image
    mode: list[str]  # per layer: how its tiles use the rows (mapping)


def place(model: CompiledModel, target: Target, batch: int = 1) -> Placement:
    """Lay out a model's maps and parameters in the accelerator's memories.

    Layer ``i`` reads region ``i % 2`` and writes region ``(i + 1) % 2``; the input images
    (all bit-planes of image 0, then of image 1, ...) are at address 0 of region 0. Regions
    hold ``batch`` images' maps one after the other. The last layer writes the ``scores``
    memory from address 0. Weight addresses count words of ``C`` lanes (a weights-memory
    word holds ``Target.weight_rows`` of them); a layer split across the rows or spread over
    them (:func:`mapping`) starts at a multiple of ``R``; its tile sets take
    :func:`_group_words` words each, and a spread layer ``ceil(G / R) * R`` threshold words.
    """
    w = target.width
    layers = model.layers
    first = layers[0]
    sizes = [batch * input_words(model.in_h, model.in_w, model.in_c, first.in_bits, w), 0]
    for i, layer in enumerate(layers[:-1]):
        oh, ow = _out_shape(layer)
        out = batch * oh * ow * _cw(layer.out_c, w)
        sizes[(i + 1) % 2] = max(sizes[(i + 1) % 2], out)
    region = (0, sizes[0])
    in_base, out_base = [], []
    for i, layer in enumerate(layers):
        in_base.append(region[i % 2])
        out_base.append(region[(i + 1) % 2] if layer.output == "threshold" else 0)
    mode = _fitting_modes(layers, target, [mapping(layer, target, batch) for layer in layers],
                          batch, sizes[0] + sizes[1])
    w_base, thr_base, wp, tp = _parameter_bases(layers, target, mode)
    return Placement(region, sizes[0] + sizes[1], in_base, out_base, w_base, thr_base, wp, tp,
                     _groups(layers[-1].out_c, target.cols), mode)


def _parameter_bases(layers: list[Layer], target: Target, mode: list[str]):
    """``(w_base, thr_base, weight words, threshold words)`` of ``layers`` mapped by
    ``mode``: one after the other, a split or spread layer's weights from a multiple of
    ``R``."""
    w_base, thr_base = [], []
    wp = tp = 0
    for layer, md in zip(layers, mode, strict=True):
        if md != PLAIN:
            wp = -(-wp // target.rows) * target.rows
        w_base.append(wp)
        wp += _weight_words(layer, target, md)
        thr_base.append(tp)
        tp += _threshold_words(layer, target, md)
    return w_base, thr_base, wp, tp


def _fitting_modes(layers: list[Layer], target: Target, mode: list[str],
                   batch: int = 1, act_words: int = 0) -> list[str]:
    """``mode`` with layers put back to :data:`PLAIN` until the weights, thresholds and
    program fit the target's memories: a split's chunks of ``ceil(K / R)`` words and a
    spread's ``ceil(G / R) * R`` groups take more weight words than the plain layout, and both
    take ``R`` row-list entries per output pixel instead of one; a model that fits plain must
    still compile (its layers then run one pixel per row). The layer whose layout costs the
    most weight words beyond its plain one goes first (then the most program words, then the
    first). A layer whose ``R`` rows per pixel would not fit the sequencer's row count
    (:func:`_rows_fit`) stays plain."""
    mode = [md if md == PLAIN or _rows_fit(lay, target, act_words) else PLAIN
            for lay, md in zip(layers, mode, strict=True)]
    cap_w, cap_t, cap_p = (target.depth(n) for n in ("weights", "thresholds", "program"))
    cap_p = FIELD16 if cap_p is None else min(cap_p, FIELD16)

    def program_words(i, md):  # the layer's beat table and row list
        return (len(compress_table(beat_table(layers[i], target, md)))
                + len(row_list(layers[i], target, 0, batch, md)))

    plain_prog = [program_words(i, PLAIN) for i in range(len(layers))]
    prog_words = [p if md == PLAIN else program_words(i, md)
                  for i, (p, md) in enumerate(zip(plain_prog, mode, strict=True))]

    def over(md):
        _, _, wp, tp = _parameter_bases(layers, target, md)
        prog = HEADER_WORDS + DESC_WORDS * len(layers) + sum(prog_words)
        return ((cap_w is not None and -(-wp // target.weight_rows) > cap_w)
                or (cap_t is not None and tp > cap_t)
                or prog > cap_p)

    def extra(i):
        return (_weight_words(layers[i], target, mode[i])
                - _weight_words(layers[i], target, PLAIN), prog_words[i] - plain_prog[i], -i)

    while over(mode) and any(md != PLAIN for md in mode):
        worst = max((i for i, md in enumerate(mode) if md != PLAIN), key=extra)
        mode[worst] = PLAIN
        prog_words[worst] = plain_prog[worst]
    return mode


def _rows_fit(layer: Layer, target: Target, act_words: int) -> bool:
    """Whether a split or spread ``layer``'s rows of one image (``R`` per output pixel) fit
    the sequencer's ``rows_per_image`` register: one bit wider than an activation address
    (:class:`~xnorflow.hw.sequencer.Sequencer`; a plain layer's pixels always fit)."""
    depth = target.depth("activations")
    if depth is None:  # as memory_depths sizes it for the program's maps
        depth = 1 << (max(DEFAULT_DEPTHS["activations"], act_words + 1) - 1).bit_length()
    oh, ow = _out_shape(layer)
    bits = min(max(1, (depth - 1).bit_length()) + 1, DESC_LAYOUT["rows_per_image"][2])
    return target.rows * oh * ow < 1 << bits


def _tile_groups(layer: Layer, target: Target, mode: str) -> int:
    """Tile sets per tile of rows (the descriptor's ``groups``): ``G``, or ``ceil(G / R)``
    spread (each takes ``R`` column groups, one per row)."""
    g = _groups(layer.out_c, target.cols)
    return -(-g // target.rows) if mode == SPREAD else g


def _weight_words(layer: Layer, target: Target, mode: str) -> int:
    """Weight words (of ``C`` lanes) of a layer mapped by ``mode``: its tile sets' words."""
    return _tile_groups(layer, target, mode) * _group_words(layer, target, mode)


def _threshold_words(layer: Layer, target: Target, mode: str) -> int:
    """Threshold words of a layer: one per column group, ``ceil(G / R) * R`` spread (the
    groups past ``G`` hold missing lanes: their rows write 0 bits)."""
    return _tile_groups(layer, target, mode) * (target.rows if mode == SPREAD else 1)


def _group_words(layer: Layer, target: Target, mode: str) -> int:
    """Weight words (of ``C`` lanes) of one tile set: ``K``, ``R * chunk`` split, ``R * K``
    spread (word ``t * R + r``: row ``r``'s word ``t``)."""
    if mode == KSPLIT:
        return target.rows * k_chunk(layer, target)
    if mode == SPREAD:
        return target.rows * k_words(layer, target.width)
    return k_words(layer, target.width)


# ----- beat tables and row lists ---------------------------------------------------------------
def _span(layer: Layer) -> tuple[int, int]:
    """Input pixels covered by one output pixel's windows (all pooling offsets): (y, x)."""
    pk = layer.pool_k if _pools(layer) else 1
    return (pk - 1) * layer.stride + layer.kh, (pk - 1) * layer.stride + layer.kw


def beat_entry(off: int = 0, taps: int = 0xFF, *, valid: bool = False, last: bool = False,
               dbl: bool = False, rewind: bool = False, run: int = 0) -> int:
    """One beat-table word (:data:`BEAT_VALID` ...)."""
    if not 0 <= run <= MAX_RUN:
        raise ValueError(f"beat run {run} outside 0..{MAX_RUN}")
    return ((off & (FIELD16 - 1)) | (taps & 0xFF) << BEAT_TAPS | int(valid) << BEAT_VALID
            | int(last) << BEAT_LAST | int(dbl) << BEAT_DBL | int(rewind) << BEAT_REWIND
            | run << BEAT_RUN)


def compress_table(beats: list[int]) -> list[int]:
    """Run-length code a list of single-beat entries: a beat joins the entry before it when
    both are bubbles, or both are operand beats of the same taps at consecutive offsets, it
    carries no ``rewind``/``dbl`` and the entry before carries no ``last`` (at most
    ``1 + MAX_RUN`` beats per entry). The table's last entry is a single beat: the sequencer
    acts on a tile set's end as that entry arrives, without looking at its run (and so a
    table of two or more beats keeps two or more entries, which its loop state needs)."""
    out: list[list] = []  # [first beat's word, run]
    for v in beats:
        off, taps, valid, last, dbl, rewind, run = _beat(v)
        assert run == 0
        if out:
            p, n = out[-1]
            p_off, p_taps, p_valid, p_last = _beat(p)[:4]
            if (n < MAX_RUN and not dbl and not rewind and not p_last and valid == p_valid
                    and (not valid or (taps == p_taps
                                       and off == (p_off + n + 1) & (FIELD16 - 1)))):
                out[-1] = [(p & ~(1 << BEAT_LAST)) | last << BEAT_LAST, n + 1]
                continue
        out.append([v, 0])
    if out[-1][1] > 0:  # split the last beat off
        v, n = out.pop()
        off, taps, valid, last, dbl, rewind, _ = _beat(v)
        out += [[beat_entry(off, taps, valid=valid, dbl=dbl, rewind=rewind), n - 1],
                [beat_entry(off + n, taps, valid=valid, last=last), 0]]
    return [v | n << BEAT_RUN for v, n in out]


def beat_table(layer: Layer, target: Target, mode: str = PLAIN) -> list[int]:
    """The beat table of ``layer``: the beats of one tile set (one column group of one tile of
    rows), every pooling offset's tile in turn.

    A tile is, for each bit-plane from the most significant down, every window word in
    ``(dy, dx, cw)`` order; its beats carry the activation offset relative to the row's window
    origin (plane, pooling offset and tap), the tap's position in the pooled window (for the
    padding test, saturated at 3) and the flags: ``rewind`` on each plane's first beat (the
    weights address restarts at the group's first word), ``dbl`` on the first beat of every
    plane after the first (the accumulator doubles: ``A = 2 A + P``, i.e. ``sum_b 2^b P_b``),
    ``last`` on the final beat. Bubbles (no operand) follow a tile shorter than
    :func:`tile_beats`.

    With ``mode`` :data:`KSPLIT` (:func:`mapping`) a tile is, per plane, the ``chunk`` words
    (:func:`k_chunk`) at offsets ``b * plane_stride + t`` from each row's origin (row ``r``'s
    origin is word ``r * chunk`` of the plane); the tap distances mark the rows that run
    past ``K``: field 0 is 0 on the beats past the partial row's words (its need is 1 there),
    field 1 is 0 on every beat (the rows past the last need 1 there: they read the zero word
    throughout), fields 2 and 3 are 3.
    """
    w = target.width
    cw = _cw(layer.in_c, w)
    planes = layer.in_bits
    pk = layer.pool_k if _pools(layer) else 1
    s = layer.stride
    span_y, span_x = _span(layer)
    plane_stride = layer.in_h * layer.in_w * cw
    kwords = k_words(layer, w)
    beats = planes * kwords
    out = []
    if mode == KSPLIT:
        chunk = k_chunk(layer, target)
        cut = kwords % chunk  # valid words of the partial row (0: none)
        for bi, b in enumerate(range(planes - 1, -1, -1)):
            for t in range(chunk):
                taps = (0 if cut and t >= cut else 3) | 3 << 4 | 3 << 6
                out.append(beat_entry(b * plane_stride + t, taps, valid=True, rewind=t == 0,
                                      dbl=bi > 0 and t == 0, last=b == 0 and t == chunk - 1))
        out.extend([beat_entry()] * max(0, tile_beats(target) - planes * chunk))
        pk = 0  # no pooling offsets
    for py in range(pk):
        for px in range(pk):
            for bi, b in enumerate(range(planes - 1, -1, -1)):
                k = 0
                for dy in range(layer.kh):
                    for dx in range(layer.kw):
                        uy, ux = py * s + dy, px * s + dx
                        taps = (min(ux, 3) | min(span_x - 1 - ux, 3) << 2
                                | min(uy, 3) << 4 | min(span_y - 1 - uy, 3) << 6)
                        for j in range(cw):
                            off = b * plane_stride + (uy * layer.in_w + ux) * cw + j
                            out.append(beat_entry(
                                off, taps, valid=True, rewind=k == 0, dbl=bi > 0 and k == 0,
                                last=b == 0 and k == kwords - 1))
                            k += 1
            out.extend([beat_entry()] * max(0, tile_beats(target) - beats))
    # the sequencer reads the next tile's row list (R entries) while the current tile's
    # groups play: a tile of rows must last at least R + 1 cycles (spread: ceil(G / R) tile
    # sets make a tile)
    groups = _tile_groups(layer, target, mode)
    out.extend([beat_entry()] * max(0, -(-(target.rows + 1) // groups) - len(out)))
    return out


def row_list(layer: Layer, target: Target, in_base: int, batch: int,
             mode: str = PLAIN) -> list[int]:
    """The row list of ``layer`` for ``batch`` images: one entry per output pixel (pooled
    pixel when pooling), image after image, in raster order.

    Entry: the activation address of the top-left input pixel of the pixel's windows (all
    pooling offsets; in the padding it lies outside the map and the address wraps) and, per
    side, how many of the windows' outer columns/rows lie in the padding (``0..pad``).

    With ``mode`` :data:`KSPLIT` (:func:`mapping`): ``R`` entries per image, row ``r``'s
    origin at word ``r * chunk`` of the image; the rows wholly inside ``K`` need nothing, the
    partial row needs 1 on side 0 and the rows past it 1 on side 1 (:func:`beat_table`).

    With :data:`SPREAD`: ``R`` entries per image, the image's one entry repeated (every row
    reads the whole input).
    """
    w = target.width
    cw = _cw(layer.in_c, w)
    if mode == KSPLIT:
        img = layer.in_bits * layer.in_h * layer.in_w * cw
        chunk = k_chunk(layer, target)
        full, cut = divmod(k_words(layer, w), chunk)
        out = []
        for n in range(batch):
            for r in range(target.rows):
                side = None if r < full else 0 if r == full and cut else 1
                need = 0 if side is None else 1 << (ROW_NEEDS + 2 * side)
                out.append(((in_base + n * img + r * chunk) & (FIELD16 - 1)) | need)
        return out
    ps = layer.pool_stride if _pools(layer) else 1
    s = layer.stride
    span_y, span_x = _span(layer)
    oh, ow = _out_shape(layer)
    img = layer.in_bits * layer.in_h * layer.in_w * cw
    out = []
    for n in range(batch):
        for oy in range(oh):
            for ox in range(ow):
                y_lo, x_lo = oy * ps * s - layer.pad, ox * ps * s - layer.pad
                origin = in_base + n * img + (y_lo * layer.in_w + x_lo) * cw
                needs = [max(0, -x_lo), max(0, x_lo + span_x - layer.in_w),
                         max(0, -y_lo), max(0, y_lo + span_y - layer.in_h)]
                assert max(needs) <= min(layer.pad, MAX_PAD)
                out.append((origin & (FIELD16 - 1))
                           | sum(v << (ROW_NEEDS + 2 * i) for i, v in enumerate(needs)))
    if mode == SPREAD:
        out = [e for e in out for _ in range(target.rows)]
    return out


def _descriptor(i: int, layer: Layer, pl: Placement, target: Target, table: int, entries: int,
                beats: int, rows: int, batch_rows: int) -> dict:
    integer = layer.output == "integer"
    g = _groups(layer.out_c, target.cols)
    stride = g if integer else _cw(layer.out_c, target.width)
    oh, ow = _out_shape(layer)
    mode = pl.mode[i]
    one_pixel = mode != PLAIN  # a tile is one output pixel: its rows are that pixel's
    return {
        "integer": int(integer),
        "ksplit": int(mode == KSPLIT),
        "ospread": int(mode == SPREAD),
        "score_mul": int(layer.score_mul) if integer else 0,
        "passes": layer.pool_k ** 2 if _pools(layer) else 1,
        "groups": _tile_groups(layer, target, mode),
        "table": table,
        "entries": entries,
        "rows": rows,
        "rows_per_image": batch_rows,
        "w_base": pl.w_base[i],
        "thr_base": pl.thr_base[i],
        "out_stride": stride,
        "out_base": pl.out_base[i],
        # a split or spread tile is one output pixel (split: its rows are added up; spread:
        # its rows are column groups)
        "tile_words": stride if one_pixel else target.rows * stride,
        "group_words": _group_words(layer, target, mode),
        "beats": beats,
        "out_c": layer.out_c,
        "index": i,
        "out_h": oh,
        "out_w": ow,
    }


def _pack_desc(d: dict) -> list[int]:
    words = [0] * DESC_WORDS
    for f, (word, lo, bits, _) in DESC_LAYOUT.items():
        v = int(d[f]) - (f in MINUS_ONE)
        words[word] |= (v & ((1 << bits) - 1)) << lo
    return words


def _unpack_desc(words: list[int]) -> dict:
    d = {}
    for f, (word, lo, bits, signed) in DESC_LAYOUT.items():
        v = (int(words[word]) >> lo) & ((1 << bits) - 1)
        if signed and v >> (bits - 1):
            v -= 1 << bits
        d[f] = v + (f in MINUS_ONE)
    return d


@dataclass
class Program:
    """A program being built: header, descriptors and the tables/row lists behind them."""

    header: dict
    descs: list[dict]
    words: list[int]


def _assemble(model: CompiledModel, target: Target, pl: Placement, batch: int) -> Program:
    """Header, descriptors, beat tables and row lists of ``model`` (the hardware model)."""
    n = len(model.layers)
    words: list[int] = [0] * (HEADER_WORDS + DESC_WORDS * n)
    descs = []
    for i, layer in enumerate(model.layers):
        mode = pl.mode[i]
        single = beat_table(layer, target, mode)
        table = compress_table(single)
        t_addr = len(words)
        words += table
        oh, ow = _out_shape(layer)
        rows = row_list(layer, target, pl.in_base[i], batch, mode)
        r_addr = len(words)
        words += rows
        descs.append(_descriptor(i, layer, pl, target, t_addr, len(table), len(single), r_addr,
                                 (target.rows if mode != PLAIN else 1) * oh * ow))
    for i, d in enumerate(descs):
        base = HEADER_WORDS + DESC_WORDS * i
        words[base:base + DESC_WORDS] = _pack_desc(d)
    return Program({}, descs, words)


# ----- checks --------------------------------------------------------------------------------
def _fail(layer: str, memory: str, need_words: int, width: int, avail: int, target: Target,
          what: str = "") -> UserError:
    return UserError(
        f"layer {layer!r}{what}: memory {memory!r} needs {need_words} words x {width} bits = "
        f"{need_words * width} bits but target {target.name!r} ({target.geometry}) has "
        f"{avail} words x {width} bits = {avail * width} bits; choose a bigger target "
        f"(e.g. --target sim) or a smaller model"
    )


def check_fits(model: CompiledModel, target: Target,
               input_windows: bool | None = None, batch: int = 1) -> None:
    """Raise :class:`UserError` unless ``model`` runs on ``target`` (see :func:`_check_fits`;
    :func:`build_memories` calls that one, so a caller may wrap this)."""
    _check_fits(model, target, input_windows, batch)


def _check_fits(model: CompiledModel, target: Target,
                input_windows: bool | None = None, batch: int = 1) -> None:
    """Raise :class:`UserError` unless ``model`` runs on ``target`` with ``batch`` images.

    Checks the datapath's limits (1-bit hidden activations, accumulator and score widths, an
    integer last layer with one output pixel, padding up to :data:`MAX_PAD`) and every
    memory's capacity (the program's tables and row lists included); the message names the
    layer, the memory, the bits needed and the bits available.
    """
    model.validate()
    model, _ = hardware_model(model, target, input_windows)
    for layer in model.layers:
        _check_layer(layer, target)
    if not 1 <= batch <= target.rows:
        raise UserError(f"batch {batch}: the accelerator runs 1..R = 1..{target.rows} images "
                        f"at once")
    pl = place(model, target, batch)
    prog = _assemble(model, target, pl, batch)
    w = target.width

    def biggest(per_layer):
        return max(zip(per_layer, (lay.name for lay in model.layers), strict=True))[1]

    depths = {name: target.depth(name) for name in MEMORY_NAMES}
    checks = [
        ("program", len(prog.words), biggest(
            [d["entries"] + batch * d["rows_per_image"] for d in prog.descs])),
        ("weights", -(-pl.weight_words // target.weight_rows), biggest(
            [_weight_words(lay, target, md)
             for lay, md in zip(model.layers, pl.mode, strict=True)])),
        ("thresholds", pl.threshold_words, biggest(
            [_threshold_words(lay, target, md)
             for lay, md in zip(model.layers, pl.mode, strict=True)])),
        # the top word is the all-zero word of padded taps
        ("activations", pl.act_words + 1, biggest(
            [lay.in_bits * lay.in_h * lay.in_w * _cw(lay.in_c, w) for lay in model.layers])),
        ("scores", pl.score_words * batch, model.layers[-1].name),
    ]
    for memory, need, name in checks:
        depth = depths[memory]
        if depth is not None and need > depth:
            raise _fail(name, memory, need, target.word_bits(memory), depth, target)
    for d, lay in zip(prog.descs, model.layers, strict=True):
        for f, (_, _, bits, signed) in DESC_LAYOUT.items():
            v = d[f] - (f in MINUS_ONE)
            if signed or f in ("out_c", "index", "out_h", "out_w"):
                continue
            if not 0 <= v < 1 << bits:
                raise UserError(f"layer {lay.name!r}: descriptor field {f} = {d[f]} exceeds "
                                f"its {bits}-bit field (docs/program.md)")
    if len(prog.words) > FIELD16:
        raise UserError(f"model {len(prog.words)} program words: the program's 16-bit "
                        f"addresses reach {FIELD16} words")


def _check_layer(layer: Layer, target: Target) -> None:
    """The datapath's limits on one layer of the hardware model."""
    name = layer.name
    if layer.output == "threshold" and layer.out_bits != 1:
        raise UserError(
            f"layer {name!r}: out_bits={layer.out_bits}; the accelerator supports 1-bit "
            f"hidden activations only (multi-bit input is supported on the first layer); "
            f"retrain with 1-bit activations or use the golden or cpu backend")
    if layer.in_bits > MAX_PLANES:
        raise UserError(f"layer {name!r}: {layer.in_bits} input bit-planes, the accelerator "
                        f"takes at most {MAX_PLANES}")
    if layer.acc_bits > target.acc_bits:
        raise UserError(
            f"layer {name!r}: accumulator needs {layer.acc_bits} bits (acc_max "
            f"{layer.acc_max}) but target {target.name!r} has {target.acc_bits}-bit "
            f"accumulators")
    if layer.pad > MAX_PAD:
        raise UserError(f"layer {name!r}: spatial padding {layer.pad}; the accelerator pads "
                        f"up to {MAX_PAD} pixels per side")
    if layer.kw > layer.in_w + 2 * layer.pad or layer.kh > layer.in_h + 2 * layer.pad:
        raise UserError(f"layer {name!r}: kernel larger than its padded input")
    if _pools(layer) and layer.pool_k ** 2 > 1 << DESC_LAYOUT["passes"][2]:
        raise UserError(f"layer {name!r}: pooling window {layer.pool_k}; the accelerator "
                        f"pools windows of up to 16x16 pixels")
    if layer.output == "integer":
        if layer.conv_h * layer.conv_w != 1:
            raise UserError(
                f"layer {name!r}: the integer last layer must have one output pixel, not "
                f"{layer.conv_h}x{layer.conv_w}")
        mul = int(layer.score_mul)
        if mul not in SCORE_MULS:
            raise UserError(
                f"layer {name!r}: score_mul {mul} is not supported by the accelerator's "
                f"output stage (a shift, no multiplier): use one of "
                f"{', '.join(map(str, SCORE_MULS))}")
        off = np.abs(np.asarray(layer.score_offset, dtype=np.int64))
        worst = abs(mul) * int(layer.acc_max) + int(off.max())
        sb = score_bits(target)
        if worst >= 1 << (sb - 1):
            raise UserError(
                f"layer {name!r}: scores reach {worst} (|score_mul| * acc_max + largest "
                f"|score_offset|), beyond the accelerator's {sb}-bit signed scores on target "
                f"{target.name!r} (acc_bits + 3); use smaller score offsets")


# ----- memory depths -------------------------------------------------------------------------
#: Depths used for unlimited (``None``) capacities when no image asks for more.
DEFAULT_DEPTHS = {"program": 512, "weights": 1024, "thresholds": 64, "activations": 1024,
                  "scores": 64}


def memory_depths(target: Target, memories: list[MemoryImage] | None = None) -> dict:
    """Depth of each memory: the target's capacity, or for an unlimited one enough for the
    images (and the program's activation and score needs, the zero word included) rounded up
    to a power of two (addresses wrap modulo the depth, docs/program.md)."""
    need = dict(DEFAULT_DEPTHS)
    imgs = {m.name: m for m in memories or []}
    for name, img in imgs.items():
        need[name] = max(need.get(name, 1), img.depth)
    if "program" in imgs:
        try:
            header, _ = decode_program(imgs["program"].words)
        except UserError:
            header = None  # not a program (e.g. a test pattern): no extra needs
        if header is not None:
            need["activations"] = max(need["activations"], header["act_words"] + 1)
            need["scores"] = max(need["scores"],
                                 header["score_words"] * max(1, header["max_batch"]))
    out = {}
    for name in MEMORY_NAMES:
        cap = target.depth(name)
        if cap is None:
            out[name] = 1 << (max(1, need[name]) - 1).bit_length()
        else:
            if name in imgs and imgs[name].depth > cap:
                raise UserError(f"memory image {name!r} has {imgs[name].depth} words, target "
                                f"{target.name!r} holds {cap}")
            out[name] = cap
    return out


# ----- images --------------------------------------------------------------------------------
def _lanes_to_words(lanes: np.ndarray, lane_bits: int) -> np.ndarray:
    """``(N, C)`` lane values -> ``N`` words of ``C * lane_bits`` bits (uint64 or object)."""
    n, c = lanes.shape
    mask = (1 << lane_bits) - 1
    out = [sum((int(lanes[i, j]) & mask) << (j * lane_bits) for j in range(c)) for i in range(n)]
    return np.array(out, dtype=np.uint64 if c * lane_bits <= 64 else object)


def _lane_value(lay: Layer, n: int) -> int:
    """Threshold-memory lane of output channel ``n`` (see the module docstring)."""
    if lay.output == "integer":
        return int(lay.score_offset[n]) & LANE_MASK
    t = int(np.clip(int(lay.thresholds[n, 0]), -1, lay.acc_max + 1))
    neg = 1 if int(lay.polarity[n]) < 0 else 0
    op = _pools(lay) and int(lay.pool_ops[n]) == enc.POOL_AND
    return neg << LANE_NEG_BIT | int(op) << LANE_POOL_BIT | (t & ((1 << LANE_T_BITS) - 1))


def missing_lane(target: Target) -> int:
    """Threshold lane of a missing channel (``g * C + c >= out_c``): ``acc >= 2^acc_bits``
    is never true, so the padding bit is 0 (ACT_PAD_BIT); the value fits the gateware's
    clamped-threshold range (``acc_bits + 2`` signed bits)."""
    return 1 << target.acc_bits



def default_batch(model: CompiledModel, target: Target,
                  input_windows: bool | None = None) -> int:
    """The largest batch ``1..R`` whose maps, tables and scores fit the target's memories."""
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
    (the activation regions and row lists are sized for it; default :func:`default_batch`).
    Raises :class:`UserError` (via :func:`check_fits`) if the model does not fit.
    """
    _check_fits(model, target, input_windows)
    if max_batch is None:
        max_batch = default_batch(model, target, input_windows)
    _check_fits(model, target, input_windows, max_batch)
    orig_first = model.layers[0]
    model, windows = hardware_model(model, target, input_windows)
    w, cols = target.width, target.cols
    pl = place(model, target, max_batch)
    prog = _assemble(model, target, pl, max_batch)
    first = model.layers[0]
    header = {
        "magic": MAGIC,
        "geometry": target.rows | target.cols << 8 | target.width << 16,
        "n_layers": len(model.layers),
        "max_batch": max_batch,
        "in_h": orig_first.in_h,
        "in_w": orig_first.in_w,
        "in_c": orig_first.in_c,
        "in_bits": first.in_bits,
        "n_classes": model.layers[-1].out_c,
        "input_base": 0,
        "input_words": input_words(model.in_h, model.in_w, model.in_c, first.in_bits, w),
        "act_words": pl.act_words,
        "input_mode": INPUT_WINDOWS if windows else INPUT_SEGMENTS,
        "window": (orig_first.kh | orig_first.kw << 8 | orig_first.stride << 16
                   | orig_first.pad << 24) if windows else 0,
        "score_base": 0,
        "score_words": pl.score_words,
    }
    words = np.array(prog.words, dtype=np.uint64)
    for j, f in enumerate(HEADER_FIELDS):
        words[j] = header[f] & 0xFFFFFFFF

    wr = target.weight_rows
    n_words = max(-(-pl.weight_words // wr) * wr, 1)
    wlanes = np.full((n_words, cols), (1 << w) - 1, dtype=object)
    tlanes = np.full((max(pl.threshold_words, 1), cols), missing_lane(target),
                     dtype=object)
    for i, lay in enumerate(model.layers):
        packed = pack_weights(lay, w)  # (out_c, kwords)
        kwords = packed.shape[1]
        mode = pl.mode[i]
        gw = _group_words(lay, target, mode)
        R = target.rows
        if mode == KSPLIT:  # word t * R + r of a group: row r's word t, i.e. word r * chunk + t
            chunk = k_chunk(lay, target)
            k = np.arange(gw)
            k = (k % R) * chunk + k // R
            used = k < kwords
        for n in range(lay.out_c):
            g, c = divmod(n, cols)
            base = pl.w_base[i] + g * gw
            row = [int(v) for v in packed[n]]
            if mode == KSPLIT:
                wlanes[base + np.flatnonzero(used), c] = [row[j] for j in k[used]]
            elif mode == SPREAD:  # group g = s * R + r: tile set s, word t * R + r
                s_, r = divmod(g, R)
                wlanes[pl.w_base[i] + s_ * gw + r + R * np.arange(kwords), c] = row
            else:
                wlanes[base : base + kwords, c] = row
            tlanes[pl.thr_base[i] + g, c] = _lane_value(lay, n)
    wwords = _lanes_to_words(wlanes, w)
    if wr > 1:  # weight_rows words of C lanes per memory word, the first in the low bits
        cw_bits = cols * w
        wwords = np.array([sum(int(v) << (j * cw_bits) for j, v in enumerate(wwords[a:a + wr]))
                           for a in range(0, len(wwords), wr)], dtype=object)
    return [
        MemoryImage("program", PROGRAM_BITS, words,
                    f"program format 2 (docs/program.md): header {HEADER_WORDS} words, "
                    f"{DESC_WORDS}-word descriptors, beat tables and row lists; "
                    f"{len(prog.descs)} layers"),
        MemoryImage("weights", target.word_bits("weights"), wwords,
                    f"lane c (bits c*{w}..) = column c; per layer and group g: kh*kw*cw words "
                    f"(dy, dx, cw order), R * chunk split across the rows, or R * K spread "
                    f"(row r's word t at t * R + r); "
                    f"{wr} such word(s) of {cols * w} bits per memory word (docs/program.md)"),
        MemoryImage("thresholds", cols * LANE_BITS, _lanes_to_words(tlanes, LANE_BITS),
                    "one word per column group; lane c = pol<0 << 31 | pool AND << 30 | T "
                    "(30-bit), or the 32-bit score offset (docs/program.md)"),
    ]


# ----- decoding ------------------------------------------------------------------------------
def _signed32(v: int) -> int:
    v = int(v) & 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def decode_program(words) -> tuple[dict, list[dict]]:
    """Header and layer descriptors of a program image (:class:`UserError` if malformed)."""
    words = [int(v) for v in np.asarray(words).tolist()]
    if len(words) < HEADER_WORDS or words[0] != MAGIC:
        raise UserError(
            f"program image: magic {words[0] if words else None!r} != {MAGIC:#x}; not an "
            f"xnorflow format-2 program (recompile the model with this version)"
        )
    header = {f: words[j] for j, f in enumerate(HEADER_FIELDS)}
    n = header["n_layers"]
    if len(words) < HEADER_WORDS + n * DESC_WORDS:
        raise UserError(f"program image: {n} layers need {HEADER_WORDS + n * DESC_WORDS} words")
    descs = [_unpack_desc(words[HEADER_WORDS + i * DESC_WORDS:]) for i in range(n)]
    return header, descs


def decode_memories(memories) -> tuple[dict, list[dict]]:
    """:func:`decode_program` of the ``program`` image among ``memories``."""
    return decode_program(next(m for m in memories if m.name == "program").words)


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
    win = header["window"]
    kh, kw, stride, pad = win & 0xFF, win >> 8 & 0xFF, win >> 16 & 0xFF, win >> 24 & 0xFF
    cols = im2col_segments(planes[:, None], kh, kw, stride, pad, width)  # (B,1,Ho,Wo,k*cw)
    npx = cols.shape[2] * cols.shape[3]
    bits = enc.unpack_segments(cols.reshape(b, npx, -1), kh * kw, shape[2], width)
    words = enc.pack_bits(bits.reshape(b, npx, kh * kw * shape[2]), width, enc.ACT_PAD_BIT)
    return words.reshape(-1).astype(np.uint64)


def scores_from_words(words, header: dict, cols: int, batch: int = 1) -> np.ndarray:
    """``(batch, n_classes)`` signed scores from ``scores`` memory words (``C`` 32-bit lanes,
    image ``n``'s classes at words ``n * score_words ...``)."""
    k, sw = header["n_classes"], header["score_words"]
    out = np.zeros((batch, k), dtype=np.int64)
    for n in range(batch):
        for cls in range(k):
            g, c = divmod(cls, cols)
            out[n, cls] = _signed32(int(words[header["score_base"] + n * sw + g])
                                    >> (c * LANE_BITS))
    return out


def hidden_from_words(words, desc: dict, width: int, batch: int = 1) -> np.ndarray:
    """``(batch, out_h, out_w, out_c)`` bits of a hidden layer's output map from the
    activation words at its ``out_base``."""
    npix = desc["out_h"] * desc["out_w"]
    bits = enc.unpack_segments(np.asarray(words, dtype=np.uint64), batch * npix,
                               desc["out_c"], width)
    return bits.reshape(batch, desc["out_h"], desc["out_w"], desc["out_c"])


# ----- the executable model --------------------------------------------------------------------
@dataclass
class ExecResult:
    """What :func:`execute` computed for one image: every hidden layer's output map (read from
    the activation memory right after the layer), scores and class, and the final activation
    memory of the run."""

    activations: np.ndarray  # final activation memory (uint64 words)
    layer_outputs: list[np.ndarray]  # hidden layers as written: (out_h, out_w, out_c) bits
    scores: np.ndarray  # int64 (n_classes,)
    predicted: int


def layer_mappings(descs: list[dict]) -> list[str]:
    """Each layer's mapping as its descriptor records it: :data:`KSPLIT`, :data:`SPREAD` or
    :data:`PLAIN` (:func:`mapping`)."""
    return [KSPLIT if d["ksplit"] else SPREAD if d["ospread"] else PLAIN for d in descs]


def readable_layers(descs: list[dict]) -> list[bool]:
    """For each hidden layer: is its output map still in memory after the whole run (no later
    hidden layer writes the same ping-pong region)?"""
    hidden = [i for i, d in enumerate(descs) if not d["integer"]]
    return [not any(j > i and (j - i) % 2 == 0 for j in hidden) for i in hidden]


def _beat(v: int) -> tuple[int, int, int, int, int, int, int]:
    """``(off, taps, valid, last, dbl, rewind, run)`` of a beat-table entry."""
    return (v & (FIELD16 - 1), (v >> BEAT_TAPS) & 0xFF, (v >> BEAT_VALID) & 1,
            (v >> BEAT_LAST) & 1, (v >> BEAT_DBL) & 1, (v >> BEAT_REWIND) & 1,
            (v >> BEAT_RUN) & MAX_RUN)


def expand_table(entries) -> list[tuple[int, int, int, int, int, int]]:
    """The beats an entry list plays (:data:`BEAT_RUN`): ``(off, taps, valid, last, dbl,
    rewind)`` per beat."""
    out = []
    for v in entries:
        off, taps, valid, last, dbl, rewind, run = _beat(int(v))
        for k in range(run + 1):
            out.append(((off + k) & (FIELD16 - 1), taps, valid, last and k == run,
                        dbl and k == 0, rewind and k == 0))
    return out


def _masked(taps: int, needs: np.ndarray) -> np.ndarray:
    """Rows whose window tap lies in the padding (the gateware's 2-bit compares)."""
    t = [(taps >> (2 * i)) & 3 for i in range(4)]
    return np.any(np.array(t)[None, :] < needs, axis=1)


def execute(memories: list[MemoryImage], pixels, target: Target) -> ExecResult:
    """Run the program in ``memories`` on one ``uint8`` image, as the sequencer does."""
    return execute_batch(memories, np.asarray(pixels)[None], target)[0]


def execute_batch(memories: list[MemoryImage], images, target: Target) -> list[ExecResult]:
    """Run the program on ``N`` images ``(N, H, W, C)`` in one run, as the gateware does.

    Uses only the memory images and the target geometry (no IR): the header gives the input
    shape, the descriptors, beat tables and row lists everything else. Memory depths are
    those of the gateware (:func:`memory_depths`; addresses wrap modulo them), the padding
    test and the all-zero word, the plane doubling, the write order and the lane writes of
    the output stage are the gateware's (docs/accelerator.md).
    """
    imgs = {m.name: m for m in memories}
    for name in ("program", "weights", "thresholds"):
        if name not in imgs:
            raise UserError(f"memory image {name!r} missing")
    header, descs = decode_program(imgs["program"].words)
    R, C, W = decode_geometry(header["geometry"])
    if (R, C, W) != (target.rows, target.cols, target.width):
        raise UserError(
            f"program was built for {R}x{C}x{W}, target {target.name!r} is {target.geometry}"
        )
    images = np.asarray(images)
    n_img = len(images)
    if not 1 <= n_img <= header["max_batch"]:
        raise UserError(f"a run of {n_img} images; the program takes 1..{header['max_batch']}")
    depths = memory_depths(target, memories)
    prog = np.zeros(depths["program"], dtype=np.int64)
    prog[: imgs["program"].depth] = [int(v) for v in imgs["program"].words]
    wmem = [int(v) for v in imgs["weights"].words]
    wmem += [0] * (depths["weights"] - len(wmem))
    tmem = [int(v) for v in imgs["thresholds"].words]
    tmem += [0] * (depths["thresholds"] - len(tmem))
    act = np.zeros(depths["activations"], dtype=np.uint64)
    scores_mem = [0] * depths["scores"]
    inp = np.concatenate([pack_input(px, header, W) for px in images])
    base = header["input_base"]
    act[base : base + len(inp)] = inp
    outs: list[list[np.ndarray]] = [[] for _ in range(n_img)]
    for d in descs:
        _execute_layer(d, prog, act, wmem, tmem, scores_mem, n_img, R, C, W, target.acc_bits,
                       target.weight_rows)
        if d["integer"]:
            continue
        size = d["out_h"] * d["out_w"] * d["out_stride"]
        maps = hidden_from_words(act[d["out_base"] : d["out_base"] + n_img * size], d, W,
                                 n_img)
        for n in range(n_img):
            outs[n].append(maps[n])
    scores = scores_from_words(scores_mem, header, C, n_img)
    results = [ExecResult(act, outs[n], scores[n], int(enc.argmax_first(scores[n])))
               for n in range(n_img)]
    return results


def _stored_lane(lane: int, acc_bits: int) -> tuple[tuple[int, int, int], int]:
    """A threshold lane as the gateware keeps it (``hw.memories.threshold_storage``): the low
    ``acc_bits + 2`` bits and bits 30, 31. Returns ``((T, pool AND, polarity -1), offset)``:
    ``T`` is the low bits in two's complement, the score offset the low bits with bit 31 as
    its sign."""
    tw = acc_bits + 2
    low = lane & ((1 << tw) - 1)
    neg, op = (lane >> LANE_NEG_BIT) & 1, (lane >> LANE_POOL_BIT) & 1
    t = low - (1 << tw) if low >> (tw - 1) else low
    offset = low - (1 << tw) if neg else low
    return (t, op, neg), offset


def _execute_layer(d, prog, act, wmem, tmem, scores_mem, n_img, R, C, W, acc_bits,
                   weight_rows=1) -> None:
    """One layer: tiles of ``R`` rows x column groups x the beat table (pooling passes).

    The weights address counts words of ``C`` lanes: memory word ``wa // weight_rows``, its
    ``wa mod weight_rows``-th ``C * W`` bits for every row, or with ``ksplit`` row ``r``'s
    own (the ``r``-th) and the address steps by ``R``. A ``ksplit`` tile's ``R`` rows are
    added up in the output stage (row ``r`` onto the running sum of rows ``0 .. r - 1``) and
    only the last row is written, to the tile's one output pixel. With ``ospread`` the
    address steps by ``R`` too and row ``r`` of tile set ``s`` is column group ``s * R + r``:
    its own threshold word (``thr_base + s * R + r``) and its lane of the image's words."""
    depth = len(act)
    amask = depth - 1
    word_mask = (1 << W) - 1
    lanes_per_word = W // C
    rows_total = n_img * d["rows_per_image"]
    table = expand_table(prog[d["table"] : d["table"] + d["entries"]])
    passes, groups = d["passes"], d["groups"]
    integer = bool(d["integer"])
    tile_dest = d["out_base"]
    split = bool(d["ksplit"])
    spread = bool(d["ospread"])
    step = R if split or spread else 1
    lane_bits = C * W
    act[depth - 1] = 0  # the zero word (written at START)
    for t in range(-(-rows_total // R)):
        ents = [int(prog[(d["rows"] + t * R + r) % len(prog)]) for r in range(R)]
        origin = np.array([e & (FIELD16 - 1) for e in ents], dtype=np.int64)
        needs = np.array([[(e >> (ROW_NEEDS + 2 * i)) & 3 for i in range(4)] for e in ents])
        n_valid = min(R, rows_total - t * R)
        wbase = d["w_base"]
        for g in range(groups):
            # the rows' column groups and threshold words (all group g, or spread s * R + r)
            row_g = [g * R + r if spread else g for r in range(R)]
            lane_words = [[int(tmem[(d["thr_base"] + rg) % len(tmem)]) >> (c * LANE_BITS)
                           for c in range(C)] for rg in row_g]
            j, lane = divmod(g, 1 if integer else lanes_per_word)
            acc = np.zeros((R, C), dtype=np.int64)
            wa = wbase
            p = 0
            pooled = np.zeros((R, C), dtype=np.uint8)
            for off, taps, valid, last, dbl, rewind in table:
                if not valid:
                    continue
                wa = wbase if rewind else (wa + step)
                addr = np.where(_masked(taps, needs), amask, (origin + off) & amask)
                a = [int(v) for v in act[addr]]
                mword = wmem[(wa // weight_rows) % len(wmem)]
                lanes = [r if split or spread else wa % weight_rows for r in range(R)]
                wl = [[(mword >> (lanes[r] * lane_bits + c * W)) & word_mask for c in range(C)]
                      for r in range(R)]
                counts = np.array([[bin(~(a[r] ^ wl[r][c]) & word_mask).count("1")
                                    for c in range(C)] for r in range(R)], dtype=np.int64)
                acc = (acc << 1 if dbl else acc) + counts
                if not last:
                    continue
                # a split tile: the output stage's running sum; only row R - 1 is written
                rows_out = range(R - 1, R) if split else range(n_valid)
                if split:
                    acc[R - 1] = acc.sum(axis=0)
                if integer:
                    for r in rows_out:
                        word = 0
                        for c in range(C):
                            _, offset = _stored_lane(lane_words[r][c] & LANE_MASK, acc_bits)
                            score = d["score_mul"] * int(acc[r, c]) + offset
                            word |= (score & LANE_MASK) << (c * LANE_BITS)
                        row_off = 0 if split else r * d["out_stride"]
                        scores_mem[(tile_dest + g + row_off) % len(scores_mem)] = word
                else:
                    for c in range(C):
                        lanes_c = [_stored_lane(lane_words[r][c] & LANE_MASK, acc_bits)[0]
                                   for r in range(R)]
                        bit = np.array([(acc[r, c] <= t_val) if neg else (acc[r, c] >= t_val)
                                        for r, (t_val, _, neg) in enumerate(lanes_c)],
                                       dtype=np.uint8)
                        # each row's own pooling op (spread: its own column group's channel)
                        op = np.array([lc[1] for lc in lanes_c], dtype=bool)
                        if p == 0:
                            pooled[:, c] = bit
                        else:
                            pooled[:, c] = np.where(op, pooled[:, c] & bit, pooled[:, c] | bit)
                    if p == passes - 1:
                        for r in rows_out:
                            bits = int(sum(int(pooled[r, c]) << c for c in range(C)))
                            if spread:  # group s * R + r of the tile's one image
                                jr, ln = divmod(row_g[r], lanes_per_word)
                                a_out = (tile_dest + jr) & amask
                            else:
                                ln = lane
                                a_out = (tile_dest + j + (0 if split else r * d["out_stride"])
                                         ) & amask
                            old = int(act[a_out]) if ln else 0
                            keep = ~(((1 << C) - 1) << (ln * C)) & word_mask
                            act[a_out] = np.uint64((old & keep) | bits << (ln * C))
                acc[:] = 0
                p += 1
            wbase += d["group_words"]
        tile_dest += d["tile_words"]
