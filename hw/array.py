"""Output-stationary R x C array of XNOR-popcount PEs: weights systolic down the columns,
activations broadcast along the rows, results drained up the columns."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..sw.perf import engine_timing
from .pe import XnorPopcountPE, acc_width, control_layout

__all__ = ["ARRAY_WIDTHS", "SystolicArray", "check_geometry", "result_layout"]

#: Word widths the array supports.
ARRAY_WIDTHS = (16, 32, 64)


def check_geometry(rows, cols, width) -> None:
    """Raise :class:`ValueError` naming the value unless ``rows, cols >= 1`` and ``width`` is
    one of :data:`ARRAY_WIDTHS`."""
    for name, v in (("rows", rows), ("cols", cols)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"array {name} must be an int >= 1, not {v!r}")
    if width not in ARRAY_WIDTHS:
        raise ValueError(f"array word width must be one of {ARRAY_WIDTHS}, not {width!r}")


def result_layout(cols: int, acc_bits: int) -> data.StructLayout:
    """One drained row of a tile: ``valid`` and the ``cols`` accumulators of that row."""
    return data.StructLayout({"valid": 1, "acc": data.ArrayLayout(acc_bits, cols)})


class SystolicArray(wiring.Component):
    """Output-stationary systolic array of ``rows x cols`` :class:`XnorPopcountPE`.

    One *beat* is word ``k`` of every row's activation vector (``act[r]``, row ``r`` = one
    output pixel) and of every column's weight vector (``wgt[c]``, column ``c`` = one output
    channel), plus its control (``valid``, ``last``, ``shift``). Beats enter unskewed; the
    array delays row ``r``'s activation word and control by ``r`` cycles and hands them to
    every PE of the row at once (a broadcast), while weight words enter the top row and move
    down one PE per cycle, so PE ``(r, c)`` sees word ``k`` of both operands ``r`` cycles
    after the beat, whatever ``c``. (A fully systolic array, activations also moving right
    one PE per cycle, costs ``(C - 1) (W + control)`` flip-flops per row, a column skew of the
    weights and a deskew of the results for no gain at these array sizes; on the iCE40 every
    such register copy takes a whole logic cell.)

    On a ``last`` beat each PE moves its total into its result register (double buffer) and
    starts the next tile; results climb each column one row per cycle (the conveyor of
    :class:`XnorPopcountPE`) and leave at the top, all columns together, so row ``r`` of a tile
    appears on ``res`` (all ``cols`` accumulators at once) in cycle
    ``t_last + latency + 2 r``, where ``t_last`` is the cycle the ``last`` beat was presented.

    Parameters
    ----------
    rows, cols : int
        Array geometry ``R x C`` (>= 1).
    width : int
        Word width ``W``, one of :data:`ARRAY_WIDTHS`.
    max_k, max_planes : int
        Accumulator sizing, see :func:`xnorflow.hw.pe.acc_width`.

    Members
    -------
    act : In(ArrayLayout(width, rows))
        Activation words of the beat, one per row.
    wgt : In(ArrayLayout(width, cols))
        Weight words of the beat, one per column.
    ctl : In(control_layout(max_planes))
        ``valid`` (else the beat is a bubble), ``last``, ``shift``.
    res : Out(result_layout(cols, acc_bits))
        Drained rows, in row order, one every 2 cycles.

    Latency: :attr:`latency` = PE latency cycles to row 0, ``+ 2 r`` to row
    ``r``. Throughput: one beat per cycle. Two ``last`` beats must be at least
    :attr:`min_tile_cycles` = ``2 rows - 1`` cycles apart (else a conveyor slot would be
    overwritten); :class:`~xnorflow.hw.engine.TileEngine` enforces this.
    """

    def __init__(self, rows: int, cols: int, width: int, max_k: int, max_planes: int = 1,
                 levels_per_stage: int = 2):
        check_geometry(rows, cols, width)
        self.rows, self.cols, self.width = rows, cols, width
        self.max_k, self.max_planes = max_k, max_planes
        self.levels_per_stage = levels_per_stage
        timing = engine_timing(rows, cols, width, levels_per_stage)
        self.acc_bits = acc_width(max_k, max_planes)
        self.pe_latency = timing.pe_latency
        self.latency = timing.array_latency
        self.min_tile_cycles = 2 * rows - 1
        super().__init__({
            "act": In(data.ArrayLayout(width, rows)),
            "wgt": In(data.ArrayLayout(width, cols)),
            "ctl": In(control_layout(max_planes)),
            "res": Out(result_layout(cols, self.acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, W = self.rows, self.cols, self.width
        ctl_l = control_layout(self.max_planes)
        pes = [[XnorPopcountPE(W, self.max_k, self.max_planes, self.levels_per_stage)
                for _ in range(C)] for _ in range(R)]
        for r in range(R):
            for c in range(C):
                m.submodules[f"pe_{r}_{c}"] = pes[r][c]

        def delay(m, value, n, name, shape, reset_less=False):
            for i in range(n):
                s = Signal(shape, name=f"{name}_d{i}", reset_less=reset_less)
                m.d.sync += s.eq(value)
                value = s
            return value

        # skew: row r (activation + control) by r cycles; every PE of the row takes the same
        # delayed word (a broadcast: the PEs' identical input registers are one register
        # after synthesis); weights enter every column in the same cycle and move down one
        # row per cycle, so PE (r, c) sees word k of both operands r cycles after the beat
        for r in range(R):
            a_r = delay(m, self.act[r], r, f"act{r}", W, True)
            c_r = delay(m, self.ctl, r, f"ctl{r}", ctl_l)
            for c in range(C):
                m.d.comb += [pes[r][c].a_i.eq(a_r), pes[r][c].c_i.eq(c_r)]
        for c in range(C):
            m.d.comb += pes[0][c].w_i.eq(self.wgt[c])
            for r in range(1, R):
                m.d.comb += pes[r][c].w_i.eq(pes[r - 1][c].w_o)
            # conveyor: results climb the column; the bottom slot feeds bubbles
            for r in range(R - 1):
                m.d.comb += pes[r][c].d_i.eq(pes[r + 1][c].d_o)
            m.d.comb += pes[R - 1][c].d_i.valid.eq(0)
            # every column finishes a row in the same cycle: no deskew
            m.d.comb += self.res.acc[c].eq(pes[0][c].d_o.value)
        m.d.comb += self.res.valid.eq(pes[0][0].d_o.valid)
        return m
