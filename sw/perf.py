"""Performance model of the accelerator datapath (pure Python, no Amaranth).

The tile engine (:class:`xnorflow.hw.engine.TileEngine`) takes its structural timing from
:func:`engine_timing`, so the model and the gateware share one definition; the Amaranth
simulation tests check that simulated cycle counts equal :func:`tile_sequence_cycles`
exactly.

Cycle formula (streams that keep up, ``cols <= width``): a tile of ``K`` words occupies
``max(K, 2R)`` cycles on the operand stream (the result conveyor drains one row every two
cycles, so ``last`` beats are at least ``2R`` cycles apart) unless the result-FIFO credits run
out (never with the default FIFO depth); the last tile adds
``pop_latency + 2 (R - 1) + post_latency - 1 + tail_words`` cycles until its last row's
output is transferred. :func:`tile_sequence_cycles` evaluates this, credits included, tile by tile.

Utilisation = binary MACs / (R * C * W) / cycles (``DESIGN.md``).

Whole-network cycles (sequencer overheads: descriptor fetch, layer switches) are added by
the sequencer's extension of this module; :func:`layer_tiles` gives the tile schedule of one
layer that the sequencer runs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "EngineTiming",
    "LayerPerf",
    "TileSchedule",
    "default_fifo_depth",
    "engine_timing",
    "layer_cycles",
    "layer_tiles",
    "popcount_schedule",
    "tile_sequence_cycles",
    "utilisation",
]

#: Cycles from the FIFO write of a row to the cycle the output stage can take it
#: (``amaranth.lib.fifo.SyncFIFOBuffered``: memory write, then the registered read port;
#: a FIFO of depth 1 is a single register, latency 1).
FIFO_LATENCY = 2


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


def default_fifo_depth(rows: int, pop_latency: int) -> int:
    """Smallest result-FIFO depth that never throttles tiles of ``K = 2R`` words.

    A tile's ``last`` beat needs ``reserved + R <= depth``; with tiles every ``2R`` cycles
    the rows still unpopped from earlier tiles number ``sum_D #{r : 2r >= 2RD - P}``.
    """
    unpopped = 0
    d = 1
    while True:
        lo = max(0, -(-(2 * rows * d - pop_latency) // 2))
        if lo >= rows:
            break
        unpopped += rows - lo
        d += 1
    return rows + unpopped


@dataclass(frozen=True)
class EngineTiming:
    """Structural timing of a tile engine (all in cycles)."""

    rows: int
    cols: int
    width: int
    popcount_latency: int
    pe_latency: int       # `last` beat at a PE input -> result in its conveyor slot
    array_latency: int    # `last` beat at the array input -> row 0 on the array output
    pop_latency: int      # `last` beat accepted -> row 0 taken by the output stage
    min_tile: int         # least cycles between two `last` beats (2R)
    fifo_depth: int
    post_latency: int = 1  # row taken by the output stage -> its first output offered


def engine_timing(rows: int, cols: int, width: int, levels_per_stage: int = 2,
                  fifo_depth: int | None = None, *, pipelined_post: bool = False
                  ) -> EngineTiming:
    """Timing of ``TileEngine(rows, cols, width, ...)`` (the gateware reads it from here)."""
    _, pc = popcount_schedule(width, levels_per_stage)
    pe = pc + 3  # input register, popcount, shift register, accumulate/finish
    array = pe  # all columns of a row finish together (activations broadcast along rows)
    pop = array + FIFO_LATENCY
    depth = default_fifo_depth(rows, pop) if fifo_depth is None else int(fifo_depth)
    if depth == 1:
        pop = array + 1
    return EngineTiming(rows, cols, width, pc, pe, array, pop, 2 * rows, depth,
                        4 if pipelined_post else 1)


@dataclass
class TileSchedule:
    """Result of :func:`tile_sequence_cycles`: acceptance cycle of each tile's ``last`` beat
    (cycle 0 = first operand beat) and the total cycle count."""

    last_cycles: list[int]
    cycles: int


def tile_sequence_cycles(timing: EngineTiming, k_words, tail_words: int = 1) -> TileSchedule:
    """Exact cycles of a sequence of back-to-back tiles when every stream keeps up.

    ``k_words`` lists the operand beats of each tile (>= 1). ``cycles`` counts from the cycle
    the first operand beat is accepted (cycle 0) through the cycle in which the final row's
    last output beat is transferred, inclusive; ``tail_words`` is the number of output beats
    that final row emits (0..2; 1 for a score row). Valid for ``cols <= width`` (the output
    stage then never falls behind the conveyor).
    """
    R, depth = timing.rows, timing.fifo_depth
    lasts: list[int] = []
    pops: list[int] = []  # sorted: cycles in which rows leave the FIFO
    t = 0
    popped = 0  # pops at cycles < current candidate
    for k in k_words:
        if k < 1:
            raise ValueError(f"a tile needs at least one word, not {k}")
        tl = t + k - 1
        if lasts:
            tl = max(tl, lasts[-1] + timing.min_tile)
        while True:
            while popped < len(pops) and pops[popped] < tl:
                popped += 1
            if R * len(lasts) - popped + R <= depth:
                break
            tl += 1
        lasts.append(tl)
        pops.extend(tl + timing.pop_latency + 2 * r for r in range(R))
        t = tl + 1
    if not lasts:
        return TileSchedule([], 0)
    final_take = lasts[-1] + timing.pop_latency + 2 * (R - 1)
    return TileSchedule(lasts, final_take + timing.post_latency - 1 + max(0, tail_words) + 1)


def utilisation(binary_macs: int, rows: int, cols: int, width: int, cycles: int) -> float:
    """Binary MACs / (R * C * W) / cycles."""
    return binary_macs / (rows * cols * width) / cycles if cycles else 0.0


@dataclass
class LayerPerf:
    """Tile schedule and predicted cycles of one layer on one geometry."""

    name: str
    m_tiles: int      # tiles along output pixels (pooling windows when pooling)
    n_tiles: int      # tiles along output channels
    passes: int       # pooling window offsets per output (pool_k^2, else 1)
    k_words: int      # operand beats per tile (bit-planes x segments x words per segment)
    tiles: int
    cycles: int
    binary_macs: int
    utilisation: float


def layer_tiles(layer, rows: int, cols: int, width: int) -> tuple[int, int, int, int]:
    """``(m_tiles, n_tiles, passes, k_words)`` of an IR layer (:class:`xnorflow.sw.ir.Layer`).

    Rows are output pixels (pooling windows when the layer pools, each window offset a
    separate pass), columns are output channels, and a tile's operand beats are every word
    of every bit-plane of the reduction: ``in_bits * kh * kw * ceil(in_c / W)``.
    """
    cw = -(-layer.in_c // width)
    k_words = layer.in_bits * layer.kh * layer.kw * cw
    pooled = layer.output == "threshold" and layer.pool_k > 1
    if pooled:
        pixels, passes = layer.out_h * layer.out_w, layer.pool_k * layer.pool_k
    else:
        pixels, passes = layer.conv_h * layer.conv_w, 1
    return -(-pixels // rows), -(-layer.out_c // cols), passes, k_words


def layer_cycles(layer, rows: int, cols: int, width: int, levels_per_stage: int = 2,
                 fifo_depth: int | None = None) -> LayerPerf:
    """Predicted datapath cycles of one layer as one back-to-back tile sequence.

    Counts the tile engine only (operand streams that keep up); the sequencer adds its own
    overheads. The final row is counted with one output beat.
    """
    timing = engine_timing(rows, cols, width, levels_per_stage, fifo_depth)
    m_t, n_t, passes, k = layer_tiles(layer, rows, cols, width)
    tiles = m_t * n_t * passes
    sched = tile_sequence_cycles(timing, [k] * tiles)
    macs = layer.binary_macs
    return LayerPerf(layer.name, m_t, n_t, passes, k, tiles, sched.cycles, macs,
                     utilisation(macs, rows, cols, width, sched.cycles))


# =====================================================================================
# Whole network: the sequencer (hw/sequencer.py) around the tile engine -- issue 6.
# Everything below models xnorflow.hw.sequencer.Sequencer cycle by cycle; the functions
# above are used unchanged for the engine itself.
# =====================================================================================

#: Sequencer cycles before the first layer: header fetch (20) + check (1).
SEQ_HEADER_CYCLES = 21


def seq_layer_setup_cycles(rows: int, desc_fields: int | None = None) -> int:
    """Per-layer sequencer overhead before the first operand beat: descriptor fetch
    (``desc_fields + 1``, default all of ``program.DESC_FIELDS``), set-up (1) and the
    walker's first fill of ``rows`` window origins (``rows + 1``)."""
    if desc_fields is None:
        from .program import DESC_FIELDS

        desc_fields = len(DESC_FIELDS)
    return desc_fields + 1 + 1 + rows + 1


@dataclass
class NetworkLayerPerf:
    """One layer of :func:`network_perf`."""

    name: str
    tiles: int
    k_words: int
    setup: int        # descriptor fetch + walker fill
    run: int          # first operand beat .. last result written (+ 1 check cycle)
    cycles: int       # setup + run
    binary_macs: int
    utilisation: float


@dataclass
class NetworkPerf:
    """Predicted cycles of a whole network on one geometry (:func:`network_perf`)."""

    target: str
    geometry: str
    layers: list
    header: int
    cycles: int
    binary_macs: int
    utilisation: float


def _final_words(layer, cols: int, width: int) -> int:
    """Words the final row of a binary layer emits at its ``pixel_end`` tile."""
    last_chans = layer.out_c - (-(-layer.out_c // cols) - 1) * cols
    fill = (layer.out_c - last_chans) % width
    total = fill + last_chans
    return total // width + (1 if total % width else 0)


def _integer_run(timing: EngineTiming, k: int, groups: int, n_valid: int, out_c: int) -> int:
    """Cycles from the first operand beat to the end of an integer layer (+ check), with
    the sequencer's score writer: a beat of ``C`` scores (one image) is buffered and written
    one score per cycle, so beats of several images can hold the output stage back (and,
    through the result-FIFO credits, the next tile).

    The sequencer's engine has the pipelined output stage (``post_latency`` 4): a row goes
    FIFO -> input register -> stage A -> stage B -> stage C (the score offered); each stage
    holds one row and a row moves on in the cycle the next stage is free or is being freed,
    so up to four rows wait behind a score the writer has not yet taken."""
    R, C, depth, pop = timing.rows, timing.cols, timing.fifo_depth, timing.pop_latency
    assert timing.post_latency == 4, "the sequencer's engine has the pipelined output stage"
    lasts: list[int] = []
    takes: list[int] = []
    t = 0
    x_prev = -(10 ** 9)
    a_prev = -(10 ** 9)
    chans_prev = 0
    leave = [-(10 ** 9)] * 4  # cycle the previous row left each stage
    for j in range(groups):
        tl = t + k - 1
        if lasts:
            tl = max(tl, lasts[-1] + timing.min_tile)
        while R * len(lasts) - sum(1 for x in takes if x < tl) + R > depth:
            tl += 1
        lasts.append(tl)
        chans = min(C, out_c - j * C)
        for r in range(R):
            x = max(tl + pop + 2 * r, x_prev + 1, leave[0])
            e = x + 1
            for s in range(3):
                lv = max(e, leave[s + 1])
                leave[s] = lv
                e = lv + 1
            if r < n_valid:  # the writer takes the score beat when done with the last one
                a = max(e, a_prev + chans_prev)
                a_prev, chans_prev = a, chans
                leave[3] = a
            else:  # no score: the row leaves stage C at once
                leave[3] = e
            takes.append(x)
            x_prev = x
        t = tl + 1
    return a_prev + chans_prev + 3


def network_perf(model, target, levels_per_stage: int | None = None,
                 input_windows: bool | None = None, batch: int = 1) -> NetworkPerf:
    """Cycle-by-cycle model of a whole run of ``model`` (a :class:`~xnorflow.sw.ir.
    CompiledModel`) on ``target`` (a :class:`~xnorflow.sw.targets.Target`), as counted by
    the sequencer's ``cycles`` register (from the cycle after START to the cycle the run
    ends).

    Per layer: :func:`seq_layer_setup_cycles`, then one beat-issue cycle, the engine's tile
    sequence (:func:`tile_sequence_cycles`) up to the cycle in which the last valid row of
    the last tile is taken by the output stage, its output (packed words, or ``chans``
    score writes after one buffering cycle) and one completion-check cycle. Assumes the
    operand stream keeps up, which the sequencer guarantees except when a layer's first
    tile is shorter than the walker's refill (``R`` cycles): such tiny layers are slightly
    under-predicted. ``input_windows`` as in :func:`xnorflow.sw.program.build_memories`
    (the first layer the hardware runs may be the window form of the model's). ``batch``:
    images per run (rows are then pixels of all images; utilisation counts all of them).
    ``levels_per_stage`` defaults to the target's ``popcount_levels``.
    """
    from .program import hardware_model  # program does not import perf: no cycle

    if levels_per_stage is None:
        levels_per_stage = target.popcount_levels
    model, _ = hardware_model(model, target, input_windows)
    R, C, W = target.rows, target.cols, target.width
    timing = engine_timing(R, C, W, levels_per_stage, pipelined_post=True)
    layers = []
    total = SEQ_HEADER_CYCLES
    macs_total = 0
    for layer in model.layers:
        _, n_t, passes, k = layer_tiles(layer, R, C, W)
        pooled = layer.output == "threshold" and layer.pool_k > 1
        pixels = batch * (layer.out_h * layer.out_w if pooled else layer.conv_h * layer.conv_w)
        m_t = -(-pixels // R)
        tiles = m_t * n_t * passes
        if layer.output == "integer":
            run = _integer_run(timing, k, n_t, pixels, layer.out_c)
        else:
            sched = tile_sequence_cycles(timing, [k] * tiles)
            last_row = pixels - (m_t - 1) * R - 1
            take = sched.last_cycles[-1] + timing.pop_latency + 2 * last_row
            run = take + timing.post_latency - 1 + _final_words(layer, C, W) + 3
        setup = seq_layer_setup_cycles(R)
        cyc = setup + run
        total += cyc
        macs = batch * layer.binary_macs
        macs_total += macs
        layers.append(NetworkLayerPerf(layer.name, tiles, k, setup, run, cyc, macs,
                                       utilisation(macs, R, C, W, cyc)))
    return NetworkPerf(target.name, target.geometry, layers, SEQ_HEADER_CYCLES, total,
                       macs_total, utilisation(macs_total, R, C, W, total))


def predict_network_cycles(model, target, levels_per_stage: int | None = None,
                           input_windows: bool | None = None, batch: int = 1) -> int:
    """Predicted sequencer cycles of one whole run (see :func:`network_perf`)."""
    return network_perf(model, target, levels_per_stage, input_windows, batch).cycles
