"""The tile engine: systolic array + feeders + result FIFO + output stage behind streams.

This is the interface the sequencer (:mod:`xnorflow.hw.sequencer`) builds on; see
``docs/accelerator.md``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw import perf
from ..sw.errors import UserError
from .array import SystolicArray, check_geometry
from .memories import RDATA_SUFFIX
from .pe import acc_width, shift_width
from .post import PostProcess, row_layout, score_layout, tile_layout, word_layout

__all__ = ["ResultFIFO", "TileEngine", "operand_layout"]


def operand_layout(rows: int, cols: int, width: int, max_planes: int) -> data.StructLayout:
    """One beat of the ``operands`` stream: word ``k`` of a tile.

    ``act[r]`` is word ``k`` of row ``r``'s activation vector (pad bits 0), ``wgt[c]`` word
    ``k`` of column ``c``'s weight vector (pad bits 1), ``shift`` the bit-plane ``b`` of this
    word (its popcount is added as ``P << b``), ``last`` marks the tile's final word.
    """
    return data.StructLayout({
        "act": data.ArrayLayout(width, rows),
        "wgt": data.ArrayLayout(width, cols),
        "shift": shift_width(max_planes),
        "last": 1,
    })


class ResultFIFO(wiring.Component):
    """The engine's result FIFO: :class:`amaranth.lib.fifo.SyncFIFOBuffered` semantics and
    timing, but with the RAM marked ``no_rw_check``.

    Like ``SyncFIFOBuffered(width=width, depth=depth)``: ``depth - 1`` entries in a RAM whose
    read-data register is the output (``r_data``), so an entry written in cycle ``t`` into
    an empty FIFO is offered (``r_rdy``) from cycle ``t + 2``; ``w_rdy`` is low when full
    (writes are then dropped). The RAM never reads the word being written in the same cycle
    (it reads only when ``level != 0`` and writes only when ``level != depth - 1``, and the
    two pointers are equal only when the RAM is empty or full), so ``no_rw_check`` tells
    yosys not to build the old-data-on-collision emulation (on the iCE40: a delayed write of
    the whole row and a bypass mux, ~150-200 FF and ~70-100 LUT4 for the 4x4x16 engine). The
    read register's power-up value is undefined in synthesis (its name ends in
    :data:`~xnorflow.hw.memories.RDATA_SUFFIX`: no per-bit init emulation either). The RAM
    has a power-of-two depth (free pointer wrap).

    Latency 2 cycles (write to ``r_rdy``); throughput one entry per cycle.
    """

    def __init__(self, width: int, depth: int):
        if depth < 1:
            raise ValueError(f"result FIFO depth must be >= 1, not {depth}")
        self.width, self.depth = width, depth
        super().__init__({
            "w_en": In(1), "w_data": In(width), "w_rdy": Out(1),
            "r_en": In(1), "r_data": Out(width), "r_rdy": Out(1), "r_next": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        if self.depth == 1:  # one register, as SyncFIFOBuffered(depth=1)
            full = Signal()
            m.d.comb += [self.w_rdy.eq(~full), self.r_rdy.eq(full)]
            with m.If(self.w_en & ~full):
                m.d.sync += [self.r_data.eq(self.w_data), full.eq(1)]
            with m.If(self.r_en & full):
                m.d.sync += full.eq(0)
            return m
        inner = self.depth - 1
        abits = max(1, (inner - 1).bit_length())
        level = Signal(range(inner + 1))
        produce = Signal(abits)
        consume = Signal(abits)
        m.submodules.storage = mem = Memory(shape=self.width, depth=1 << abits, init=[],
                                            attrs={"no_rw_check": 1})
        wp = mem.write_port()
        # an asynchronous read port plus a reset-less register: yosys' memory_dff merges the
        # register into the RAM block and then honours no_rw_check (a ready-made synchronous
        # port keeps the old-data-on-collision rule whatever the attribute says)
        rp = mem.read_port(domain="comb")
        do_write = self.w_en & self.w_rdy
        do_read = (level != 0) & (~self.r_rdy | self.r_en)
        r_data = Signal(self.width, name=f"r_data{RDATA_SUFFIX}", reset_less=True)
        m.d.comb += [
            self.w_rdy.eq(level != inner),
            wp.addr.eq(produce), wp.data.eq(self.w_data), wp.en.eq(do_write),
            rp.addr.eq(consume), self.r_data.eq(r_data),
        ]
        with m.If(do_read):
            m.d.sync += r_data.eq(rp.data)
        with m.If(do_write):
            m.d.sync += produce.eq(produce + 1)
        with m.If(do_read):
            m.d.sync += [consume.eq(consume + 1), self.r_rdy.eq(1)]
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        # r_next: an entry behind r_data that was written two or more cycles ago (it would
        # be offered now if r_data had been read earlier)
        wrote = Signal()
        m.d.sync += wrote.eq(do_write)
        m.d.comb += self.r_next.eq(level > wrote)
        with m.If(do_write & ~do_read):
            m.d.sync += level.eq(level + 1)
        with m.Elif(do_read & ~do_write):
            m.d.sync += level.eq(level - 1)
        return m


class TileEngine(wiring.Component):
    """GEMM tile engine: ``R`` rows x ``C`` columns x ``K`` words per tile, with its output
    stage, back to back.

    A *tile* is ``K >= 1`` beats on ``operands`` (the last one flagged ``last``) plus one
    beat on ``tile`` (the output-stage descriptor, :func:`~xnorflow.hw.post.tile_layout`).
    The engine never needs ``K``: pad bits never agree (activation 0, weight 1), so padded
    words add nothing. For multi-bit inputs the beats of all bit-planes of a row belong to
    one tile, each beat carrying its plane as ``shift``; the accumulator is then
    ``A = sum_b 2^b P_b`` (``encoding.accumulate_planes``). Tiles may follow one another
    with no gap: the next tile's first beat may come in the cycle after ``last``.

    Results leave through ``words`` (binary layers: thresholded, pooled and packed, see
    :mod:`xnorflow.hw.post` for the tile ordering that pooling and packing expect) or
    ``scores`` (integer last layer). Row ``r`` of a tile is one output pixel (or one pooling
    window), column ``c`` one output channel.

    Parameters
    ----------
    rows, cols : int
        Array geometry ``R x C`` (>= 1).
    width : int
        Word width ``W``: 16, 32 or 64.
    max_k : int
        Largest number of valid bits in one reduction of any layer (``kh * kw * in_c``);
        with ``max_planes`` it sizes the accumulator (:func:`~xnorflow.hw.pe.acc_width`)
        and the word index. :meth:`check_layer` refuses a layer beyond it.
    max_planes : int
        Largest number of input bit-planes (1..8).
    score_width : int
        Signed width of thresholds, score offsets and scores (default 32).
    mul_width : int
        Signed width of ``score_mul`` (default 8).
    fifo_depth : int or None
        Rows of finished accumulators the result FIFO holds (default
        :func:`xnorflow.sw.perf.default_fifo_depth`, enough for no bubbles with
        ``K >= 2R``); at least ``rows``.
    levels_per_stage : int
        Full-adder levels between popcount pipeline registers.
    pipelined_post : bool
        A register after the result FIFO and two more register stages in the output stage
        (threshold/pool, then shift) for Fmax: outputs come 3 cycles later
        (``timing.post_latency`` 4 instead of 1). Default False, the timing the sequencer
        and its network model were built on.
    small_mul : bool
        Output stage for ``score_mul`` in ``{-2..2}`` only, without multipliers
        (:class:`~xnorflow.hw.post.PostProcess`); default False.

    Members
    -------
    operands : In(stream.Signature(operand_layout(R, C, W, max_planes)))
        Operand words, one beat per cycle at most.
    tile : In(stream.Signature(tile_layout(R, C, score_width, mul_width)))
        One output-stage descriptor per tile, in tile order.
    words : Out(stream.Signature(word_layout(R, W, index_bits)))
        Packed activation words for the next layer.
    scores : Out(stream.Signature(score_layout(R, C, score_width)))
        Integer scores (last layer).

    Throughput: one operand beat per cycle. The engine holds back (``ready`` low) only a
    ``last`` beat, and only when (a) fewer than ``2 R`` cycles passed since the previous
    ``last`` (the result conveyor drains one row every two cycles) or (b) the result FIFO
    might overflow (credit counter: every accepted tile reserves ``R`` rows until they are
    taken by the output stage). So with streams that keep up, a tile of ``K`` words takes
    ``max(K, 2 R)`` cycles and there are no bubbles for ``K >= 2 R``.
    Latency: row ``r`` of a tile whose ``last`` beat was accepted in cycle ``t`` is taken by
    the output stage in cycle ``t + pop_latency + 2 r`` (if the output stage is free) and
    offers its first output word/score ``post_latency`` cycles later.
    :mod:`xnorflow.sw.perf` models this exactly (:func:`xnorflow.sw.perf.engine_timing`).
    """

    def __init__(self, rows: int, cols: int, width: int, max_k: int, max_planes: int = 1, *,
                 score_width: int = 32, mul_width: int = 8, fifo_depth: int | None = None,
                 levels_per_stage: int = 2, pipelined_post: bool = False,
                 small_mul: bool = False):
        check_geometry(rows, cols, width)
        self.rows, self.cols, self.width = rows, cols, width
        self.max_k, self.max_planes = max_k, max_planes
        self.acc_bits = acc_width(max_k, max_planes)
        self.score_width, self.mul_width = score_width, mul_width
        self.levels_per_stage = levels_per_stage
        self.pipelined_post = bool(pipelined_post)
        self.small_mul = bool(small_mul)
        self.timing = perf.engine_timing(rows, cols, width, levels_per_stage, fifo_depth,
                                         pipelined_post=self.pipelined_post)
        self.fifo_depth = self.timing.fifo_depth
        if self.fifo_depth < rows:
            raise ValueError(f"fifo_depth {self.fifo_depth} must be at least rows = {rows}")
        self.index_bits = max(1, (-(-max_k // width) - 1).bit_length())
        if mul_width < 2:
            raise ValueError(f"mul_width must be >= 2, not {mul_width}")
        super().__init__({
            "operands": In(stream.Signature(operand_layout(rows, cols, width, max_planes))),
            "tile": In(stream.Signature(tile_layout(rows, cols, score_width, mul_width))),
            "words": Out(stream.Signature(word_layout(rows, width, self.index_bits))),
            "scores": Out(stream.Signature(score_layout(rows, cols, score_width))),
        })

    def check_layer(self, layer) -> None:
        """Raise :class:`~xnorflow.sw.errors.UserError` if an IR layer does not fit this
        engine (accumulator width, bit-planes, output stage)."""
        if layer.in_bits > self.max_planes:
            raise UserError(f"layer {layer.name!r}: {layer.in_bits} input bit-planes but the "
                            f"engine was built for max_planes={self.max_planes}; rebuild with "
                            f"a larger max_planes")
        if layer.k_valid > self.max_k or layer.acc_max >= 1 << self.acc_bits:
            raise UserError(f"layer {layer.name!r}: K = {layer.k_valid} valid bits "
                            f"(accumulator up to {layer.acc_max}, {layer.acc_bits} bits) but "
                            f"the engine was built for max_k={self.max_k}, "
                            f"max_planes={self.max_planes} ({self.acc_bits} bits); rebuild "
                            f"with max_k >= {layer.k_valid}")
        if layer.output == "threshold" and layer.out_bits != 1:
            raise UserError(f"layer {layer.name!r}: {layer.out_bits}-bit outputs are not "
                            f"supported by the output stage (1-bit thresholds only)")

    def elaborate(self, platform):
        m = Module()
        R = self.rows
        t = self.timing
        m.submodules.array = array = SystolicArray(
            R, self.cols, self.width, self.max_k, self.max_planes, self.levels_per_stage)
        assert array.latency == t.array_latency and array.min_tile_cycles + 1 == t.min_tile
        rl = row_layout(self.cols, self.acc_bits)
        # without pipelined_post the output stage keeps an integer row in the FIFO's output
        # register until its score is taken (after the row's FIFO credit was returned):
        # one more entry (not with a 1-entry FIFO, whose latency is 1: a score register)
        hold = not self.pipelined_post and self.fifo_depth >= 2
        m.submodules.fifo = fifo = ResultFIFO(rl.size, self.fifo_depth + hold)
        m.submodules.post = post = PostProcess(
            R, self.cols, self.width, self.acc_bits, self.score_width, self.mul_width,
            self.index_bits, pipelined=self.pipelined_post, small_mul=self.small_mul,
            hold_rows=hold)
        assert post.latency + self.pipelined_post == t.post_latency

        # --- operand acceptance: spacing of `last` beats and result-FIFO credits ---------
        # `last_ok` is a register holding the condition for the current cycle, computed a
        # cycle ahead from the next values of `since` and `reserved`, so `ready` (which the
        # sequencer's whole next-state logic depends on) is one LUT behind a flip-flop
        since = Signal(range(t.min_tile + 1), init=t.min_tile)
        reserved = Signal(range(self.fifo_depth + 1))
        since_next = Signal.like(since)
        reserved_next = Signal.like(reserved)
        last_ok = Signal(init=1)  # since == min_tile and reserved = 0 <= depth - R
        ops = self.operands
        fire = Signal()
        m.d.comb += [
            ops.ready.eq(~ops.p.last | last_ok),
            fire.eq(ops.valid & ops.ready),
            array.act.eq(ops.p.act),
            array.wgt.eq(ops.p.wgt),
            array.ctl.valid.eq(fire),
            array.ctl.last.eq(ops.p.last),
            array.ctl.shift.eq(ops.p.shift),
        ]
        take = fire & ops.p.last
        pop = Signal()
        m.d.comb += [
            since_next.eq(Mux(take, 1, Mux(since != t.min_tile, since + 1, since))),
            reserved_next.eq(reserved + Mux(take, R, 0) - pop),
        ]
        m.d.sync += [
            since.eq(since_next),
            reserved.eq(reserved_next),
            last_ok.eq((since_next == t.min_tile) & (reserved_next + R <= self.fifo_depth)),
        ]

        # --- array -> FIFO -> output stage -------------------------------------------------
        m.d.comb += [
            fifo.w_en.eq(array.res.valid),
            fifo.w_data.eq(array.res.acc.as_value()),
        ]
        if self.pipelined_post:
            # one register between the RAM's read data and the threshold comparators
            s_valid = Signal()
            s_data = Signal(rl.size, reset_less=True)
            s_free = ~s_valid | post.rows_i.ready
            m.d.comb += [
                post.rows_i.valid.eq(s_valid),
                post.rows_i.p.eq(s_data),
                fifo.r_en.eq(s_free),
                pop.eq(fifo.r_rdy & s_free),
            ]
            with m.If(s_free):
                m.d.sync += [s_valid.eq(fifo.r_rdy), s_data.eq(fifo.r_data)]
        else:
            m.d.comb += [
                post.rows_i.valid.eq(fifo.r_rdy),
                post.rows_i.p.eq(fifo.r_data),
                fifo.r_en.eq(post.rows_i.ready),
                post.rows_next.eq(fifo.r_next),
                pop.eq(post.taken),
            ]
        wiring.connect(m, wiring.flipped(self.tile), post.tile)
        wiring.connect(m, post.words, wiring.flipped(self.words))
        wiring.connect(m, post.scores, wiring.flipped(self.scores))
        return m

