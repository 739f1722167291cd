"""Performance model of the accelerator (pure Python, no Amaranth).

The gateware takes its structural timing from :func:`engine_timing`, and the sequencer has no
data-dependent stall anywhere (the compiler's beat tables fix every beat, bubble and tile,
``docs/program.md``), so a run's cycle count is a sum over the program's tables:
:func:`program_cycles` computes it from the memory images alone and the simulations assert
it equals the gateware's ``cycles`` register exactly.

Per run (``docs/accelerator.md``, "Timing")::

    cycles = RUN_START + sum over layers of
             (LAYER_FETCH + prologue + tiles * groups * beats + drain)
    prologue = R + PROLOGUE                  (the first tile's row entries; batch <= R)
    drain    = popcount latency + R + DRAIN  (the last tile's rows through the output stage)
    tiles    = ceil(batch * rows_per_image / R)

Utilisation = binary MACs / (R * C * W) / cycles (``DESIGN.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DRAIN",
    "EngineTiming",
    "LAYER_FETCH",
    "NetworkLayerPerf",
    "NetworkPerf",
    "PROLOGUE",
    "RUN_START",
    "engine_timing",
    "target_timing",
    "threshold_regs",
    "LayerBound",
    "NetworkBound",
    "WhatIf",
    "network_bound",
    "packed_planes",
    "network_perf",
    "popcount_schedule",
    "predict_network_cycles",
    "program_cycles",
    "utilisation",
]

#: Cycles from START to the first descriptor read: header reads (5) and checks (1).
RUN_START = 6
#: Cycles to read a layer's descriptor (``program.DESC_READ`` words, one per cycle, plus the
#: read latency).
LAYER_FETCH = 9
#: Prologue cycles beyond ``max(R, batch)``: the row list's read latency and the bank swap.
PROLOGUE = 2
#: Drain cycles beyond ``popcount latency + R`` after a layer's last beat: the address and
#: memory registers, the array's clear and result registers, the output stage's two
#: registers and the write, so that the next layer reads what this one wrote.
DRAIN = 6


def popcount_schedule(width: int, levels_per_stage: int = 2) -> tuple[int, int]:
    """``(full_adder_levels, latency)`` of the pipelined popcount of ``width`` bits.

    The Wallace reduction turns every three bits of a column into a sum and a carry until no
    column holds more than two bits; a register follows every ``levels_per_stage`` levels and
    the final carry-propagate adder.
    """
    heights = [width]
    levels = 0
    while max(heights) > 2:
        new = [0] * (len(heights) + 1)
        for j, h in enumerate(heights):
            new[j] += h // 3 + h % 3
            new[j + 1] += h // 3
        while new and new[-1] == 0:
            new.pop()
        heights = new
        levels += 1
    fa_stages = -(-levels // levels_per_stage) if levels else 0
    return levels, fa_stages + 1


@dataclass(frozen=True)
class EngineTiming:
    """Structural timing of the array (all in cycles)."""

    rows: int
    cols: int
    width: int
    popcount_latency: int  # operands at a PE -> their count added to the accumulators
    array_latency: int     # `last` beat at the array's inputs -> row 0 of the tile on its output
    mem_regs: int = 0      # Target.mem_regs: operand registers (in array_latency) and, when
    #                        any, a register in front of the activations' write port


def engine_timing(rows: int, cols: int, width: int, levels_per_stage: int = 2,
                  mem_regs: int = 0) -> EngineTiming:
    """Timing of ``SystolicArray(rows, cols, width, ...)`` (the gateware reads it here)."""
    _, pc = popcount_schedule(width, levels_per_stage)
    return EngineTiming(rows, cols, width, pc, pc + 2 + mem_regs, mem_regs)


def target_timing(target) -> EngineTiming:
    """:func:`engine_timing` of a :class:`~xnorflow.sw.targets.Target` (its geometry,
    ``popcount_levels`` and ``mem_regs``)."""
    return engine_timing(target.rows, target.cols, target.width, target.popcount_levels,
                         target.mem_regs)


def utilisation(binary_macs: int, rows: int, cols: int, width: int, cycles: int) -> float:
    """Binary MACs / (R * C * W) / cycles."""
    return binary_macs / (rows * cols * width) / cycles if cycles else 0.0


def layer_cycles(desc: dict, rows: int, batch: int, popcount_latency: int,
                 mem_regs: int = 0) -> tuple[int, int]:
    """``(tiles, cycles)`` of one layer of a program (a decoded descriptor, see
    :func:`xnorflow.sw.program.decode_program`) run on ``batch`` images; ``mem_regs``
    (:attr:`Target.mem_regs <xnorflow.sw.targets.Target>`) adds its cycles to the array's
    latency, when not 0 one to the writes' and, when 2, one to the beat decode's."""
    tiles = -(-batch * desc["rows_per_image"] // rows)
    run = tiles * desc["groups"] * desc["beats"]
    return tiles, (LAYER_FETCH + fetch_regs(mem_regs) + rows + PROLOGUE + run
                   + popcount_latency + mem_regs + write_regs(mem_regs) + decode_regs(mem_regs)
                   + rows + DRAIN)


def write_regs(mem_regs: int) -> int:
    """Registers in front of the activations' write port: 1 with any ``mem_regs``."""
    return 1 if mem_regs else 0


def fetch_regs(mem_regs: int) -> int:
    """Extra cycles of the sequencer's header and of each descriptor fetch: 1 with
    ``mem_regs = 2`` (program port A's words used from a register)."""
    return 1 if mem_regs == 2 else 0


def decode_regs(mem_regs: int) -> int:
    """Extra stages of the sequencer's beat decode: 1 with ``mem_regs = 2`` (the offset and
    tap distances registered before the row addresses are computed)."""
    return 1 if mem_regs == 2 else 0


def threshold_regs(mem_regs: int) -> int:
    """Registers between the thresholds' RAM and the output stage's latch beyond the RAM's
    own: 1 with ``mem_regs = 2``, so the latch needs the word's address one cycle earlier
    (:func:`xnorflow.sw.program.tile_beats`)."""
    return 1 if mem_regs == 2 else 0


def program_cycles(memories, target, batch: int = 1) -> int:
    """Cycles of one run of the program in ``memories`` on ``target`` with ``batch`` images,
    from the images alone (what the sequencer's ``cycles`` register reads at the end)."""
    from .program import decode_memories

    _, descs = decode_memories(memories)
    tm = target_timing(target)
    layers = sum(layer_cycles(d, target.rows, batch, tm.popcount_latency, tm.mem_regs)[1]
                 for d in descs)
    return RUN_START + fetch_regs(tm.mem_regs) + layers


@dataclass
class NetworkLayerPerf:
    """One layer of :func:`network_perf`."""

    name: str
    tiles: int          # tiles of R rows (pixels of all images of the batch)
    groups: int         # column groups (tile sets per tile: ceil(G / R) spread)
    entries: int        # beat-table entries per tile set (run-length coded)
    beats: int          # beats per tile set (operand beats + bubbles, all passes)
    cycles: int         # fetch, prologue, tiles * groups * beats and drain
    binary_macs: int
    utilisation: float
    mapping: str = "plain"  # how its tiles use the rows: program.mapping's choice


@dataclass
class NetworkPerf:
    """Predicted cycles of a whole network on one geometry (:func:`network_perf`)."""

    target: str
    geometry: str
    batch: int
    layers: list
    cycles: int
    binary_macs: int
    utilisation: float


def network_perf(model, target, input_windows: bool | None = None, batch: int = 1,
                 max_batch: int | None = None) -> NetworkPerf:
    """Cycles of one run of ``model`` (a :class:`~xnorflow.sw.ir.CompiledModel`) on
    ``target`` with ``batch`` images, per layer, as the sequencer counts them (the same sum
    as :func:`program_cycles`, over the program :func:`~xnorflow.sw.program.build_memories`
    makes). ``max_batch`` as in ``build_memories`` (at least ``batch``)."""
    from .program import build_memories, decode_memories, hardware_model, layer_mappings

    _, descs = decode_memories(build_memories(model, target, input_windows,
                                              max_batch=max(batch, max_batch or 1)))
    hw_model, _ = hardware_model(model, target, input_windows)
    R, C, W = target.rows, target.cols, target.width
    tm = target_timing(target)
    layers = []
    total = RUN_START + fetch_regs(tm.mem_regs)
    macs_total = 0
    for d, layer, mapping in zip(descs, hw_model.layers, layer_mappings(descs), strict=True):
        tiles, cyc = layer_cycles(d, R, batch, tm.popcount_latency, tm.mem_regs)
        macs = batch * layer.binary_macs
        macs_total += macs
        total += cyc
        layers.append(NetworkLayerPerf(layer.name, tiles, d["groups"], d["entries"], d["beats"],
                                       cyc, macs, utilisation(macs, R, C, W, cyc), mapping))
    return NetworkPerf(target.name, target.geometry, batch, layers, total, macs_total,
                       utilisation(macs_total, R, C, W, total))


def predict_network_cycles(model, target, input_windows: bool | None = None,
                           batch: int = 1) -> int:
    """Predicted sequencer cycles of one whole run (see :func:`network_perf`)."""
    return network_perf(model, target, input_windows, batch).cycles


# ----------------------------------------------------------------------------------------------
# What no mapping can beat on this array


@dataclass
class LayerBound:
    """The fewest cycles any schedule of one layer can take on the array (:func:`network_bound`)."""

    name: str
    slot_cycles: int    # PE beats the layer's dot products need / (R * C)
    weight_cycles: int  # weight words it must read / 1 word of C lanes per cycle
    result_cycles: int  # dot products / C results leaving the array per cycle
    cycles: int         # the largest of the three
    limit: str          # "slots", "weights" or "results"
    packing: float      # K / (W * words): the bits of each beat's word a dot product uses
    binary_macs: int


@dataclass(frozen=True)
class WhatIf:
    """Hardware that is not built, for :func:`network_bound`: how far each change would lift
    the ceiling (the defaults are the array as built).

    * ``weight_words``: weight words of ``C`` lanes the weights memory delivers per cycle
      (``None``: the target's ``weight_rows``; ``R``: one per row, so one image's dense
      layer can use every row, its K split across the rows or its column groups spread over
      them: built on ``ecp5-85f``, whose 512 x 2,048-bit weights take 57 DP16KD,
      :func:`xnorflow.sw.program.mapping`);
    * ``result_rows``: rows of ``C`` results the array and the output stage retire per cycle
      (``R``: the whole tile at once, e.g. a threshold comparator in every PE and ``R`` write
      ports, or writes that combine the lanes of a word);
    * ``plane_packing``: a beat's word carries ``p`` bit-planes of a segment of ``k`` valid
      bits, plane ``b - j`` repeated ``2^(p-1-j)`` times (``k (2^p - 1) <= W``; the weights
      repeated likewise), so its popcount is ``sum_j 2^(p-1-j) P_(b-j)`` exactly (pad bits
      never agree) and the PE's Horner step shifts by ``p`` instead of 1: the 9-bit window of
      a 3x3 grey first layer takes 4 beats for 8 planes instead of 8.
    """

    weight_words: int | None = None
    result_rows: int = 1
    plane_packing: bool = False


def packed_planes(seg_bits: int, in_bits: int, width: int) -> int:
    """Planes one ``width``-bit word carries under :attr:`WhatIf.plane_packing`: the largest
    ``p <= in_bits`` with ``seg_bits * (2^p - 1) <= width`` (1 when none fits two)."""
    p = 1
    while p < in_bits and seg_bits * ((1 << (p + 1)) - 1) <= width:
        p += 1
    return p


@dataclass
class NetworkBound(NetworkPerf):
    """:class:`NetworkPerf`'s fields for :func:`network_bound`: ``layers`` are
    :class:`LayerBound`, ``cycles`` a lower bound (layer overheads left out) and
    ``utilisation`` the ceiling that no mapping on this array passes."""


def network_bound(model, target, input_windows: bool | None = None,
                  batch: int = 1, hw: WhatIf | None = None) -> NetworkBound:
    """A lower bound on the cycles of ``model`` on ``target``'s array, whatever the mapping.

    Three facts of the hardware (``docs/accelerator.md``) give three bounds per layer:

    * **slots**: a PE accumulates one dot product (one output pixel, output channel and input
      bit-plane) at a time and takes ``W`` bits of it per beat, so a dot product of ``K``
      bits per plane occupies a PE for ``words = kh * kw * ceil(in_c / W)`` beats of the
      model the accelerator runs (:func:`~xnorflow.sw.program.hardware_model`: a first layer
      whose window is 9 bits still takes a 32-bit beat). The layer needs
      ``batch * pixels * out_c * in_bits * words`` PE beats, ``R * C`` per cycle (pixels:
      those the array computes; a pooled layer's pooling windows);
    * **weights**: PEs keep no weights, and the weight memory delivers ``weight_rows`` words
      of ``C`` lanes per cycle (:class:`~xnorflow.sw.targets.Target`: 1, shared by all
      ``R`` rows, or one per row); every one of the layer's ``ceil(out_c / C) * words``
      weight words must be read at least once;
    * **results**: results leave the array one row of ``C`` per cycle, and every dot product
      (output pixel and channel of each image) leaves at least once.

    The layer bound is the largest; the network bound their sum (the fixed per-layer fetch,
    prologue and drain are left out, so it is generous). ``utilisation`` is the ceiling that
    no compiler mapping can pass on this array and memory: going higher needs different
    hardware (see ``docs/accelerator.md``, "Batch-1 utilisation"); ``hw`` (:class:`WhatIf`)
    says how far which change would move it.
    """
    from .program import _cw, _groups, hardware_model, k_words

    hw = WhatIf() if hw is None else hw
    hw_model, _ = hardware_model(model, target, input_windows)
    R, C, W = target.rows, target.cols, target.width
    layers = []
    total = 0
    macs_total = 0
    for layer in hw_model.layers:
        words = k_words(layer, W)
        # the pixels the array computes: a pooled layer only those its pooling windows read
        if layer.output == "threshold" and layer.pool_k > 1:
            px = layer.out_h * layer.out_w * layer.pool_k ** 2
        else:
            px = layer.conv_h * layer.conv_w
        planes = layer.in_bits
        if hw.plane_packing:  # a segment of one word: in_c bits (else the word is full)
            seg_bits = layer.in_c if _cw(layer.in_c, W) == 1 else W
            planes = -(-planes // packed_planes(seg_bits, planes, W))
        pe_beats = batch * px * layer.out_c * planes * words
        slot = -(-pe_beats // (R * C))
        weight = -(-_groups(layer.out_c, C) * words // (hw.weight_words or target.weight_rows))
        result = -(-batch * px * layer.out_c // (C * hw.result_rows))
        macs = batch * layer.binary_macs
        bounds = {"slots": slot, "weights": weight, "results": result}
        limit = max(bounds, key=bounds.get)
        layers.append(LayerBound(layer.name, slot, weight, result, bounds[limit], limit,
                                 layer.k_valid / (W * words), macs))
        total += bounds[limit]
        macs_total += macs
    return NetworkBound(target.name, target.geometry, batch, layers, total, macs_total,
                        utilisation(macs_total, R, C, W, total))
