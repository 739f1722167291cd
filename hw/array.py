"""Output-stationary R x C array of XNOR-popcount PEs: operands broadcast along rows and down
columns, results drained up the columns."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..sw.perf import engine_timing
from .pe import XnorPopcountPE

__all__ = ["ARRAY_WIDTHS", "SystolicArray", "check_geometry", "control_layout"]

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


def control_layout() -> data.StructLayout:
    """Control of one beat: ``valid`` (else a bubble), ``last`` (the tile's final beat),
    ``dbl`` (the first beat of a bit-plane after the first: accumulators double)."""
    return data.StructLayout({"valid": 1, "last": 1, "dbl": 1})


class SystolicArray(wiring.Component):
    """``rows x cols`` :class:`~xnorflow.hw.pe.XnorPopcountPE` with a systolic result drain.

    A *beat* is word ``k`` of every row's activation vector (``act[r]``: row ``r`` = one output
    pixel) and of every column's weight vector (``wgt[c]``: column ``c`` = one output channel)
    plus its control. With ``mem_regs = 0`` operands are not registered again here: ``act[r]``
    and ``wgt[c]`` are the memories' read registers, broadcast to the ``C`` PEs of row ``r``
    and the ``R`` PEs of column ``c``, so every PE sees beat ``k`` in the same cycle; with
    ``mem_regs = 1`` each row's and each column's word passes one register first (``R + C``
    words; :attr:`Target.mem_regs <xnorflow.sw.targets.Target>`) and the control one more;
    with ``mem_regs = 2`` the operands come a cycle after their control (the accelerator
    registered them once more beside the memories) and then pass that register, so the
    control is delayed two more.
    The control is registered once per row (its own copy, so no register drives more than
    one row's ``C`` PEs) and delayed to line up with the popcount.

    A cycle after a tile's ``last`` count every PE moves its total into its result slot at
    once (and the next tile's first count may already be added); the slots shift up one row
    per cycle and leave at the top, all columns together: row ``r`` of a tile whose ``last``
    beat was presented in cycle ``t`` appears on ``res`` in cycle ``t + latency + r``.
    ``tile_done`` pulses in cycle ``t + latency - 1`` (one cycle before row 0 leaves: a
    consumer latches its per-tile settings then).

    Parameters
    ----------
    rows, cols : int
        Array geometry ``R x C`` (>= 1).
    width : int
        Word width ``W``, one of :data:`ARRAY_WIDTHS`.
    acc_bits : int
        Accumulator width (:func:`~xnorflow.hw.pe.acc_width`).
    levels_per_stage : int
        Full-adder levels between popcount pipeline registers.
    mem_regs : int
        0; 1 for a register on every operand word (latency + 1); 2: operands one cycle after
        their control, then that register (latency + 2).
    weight_rows : int
        1: ``wgt`` is one word per column, shared by the ``R`` rows; ``rows``: one word per
        row and column (:attr:`Target.weight_rows <xnorflow.sw.targets.Target>`), each PE
        its own.
    soon_lead : int
        0, or how many cycles before ``tile_done`` ``tile_soon`` pulses (at most the array's
        latency less 2: it is a register of row 0's control delay line).

    Members
    -------
    act : In(ArrayLayout(width, rows))
        Activation words of the beat, one per row.
    wgt : In(ArrayLayout(width, cols)), or In(ArrayLayout(ArrayLayout(width, cols), rows))
        Weight words of the beat, one per column (``wgt[r][c]`` per row and column with
        ``weight_rows = rows``).
    ctl : In(control_layout())
        Control of the beat (:func:`control_layout`), same cycle as the operands.
    res : Out(ArrayLayout(acc_bits, cols))
        The row leaving the array this cycle.
    tile_done : Out(1)
        A tile's row 0 leaves in the next cycle.
    tile_soon : Out(1)
        (``soon_lead > 0`` only) ``tile_done`` follows in ``soon_lead`` cycles: a consumer
        that reads per-row settings from a RAM starts its reads then.

    Latency: :attr:`latency` = popcount latency + 2 + ``mem_regs`` cycles to row 0.
    Throughput: one beat per cycle; two ``last`` beats must be at least ``rows`` cycles
    apart (the drain takes one cycle per row; the compiler's beat tables guarantee it,
    :func:`~xnorflow.sw.program.tile_beats`).
    """

    def __init__(self, rows: int, cols: int, width: int, acc_bits: int,
                 levels_per_stage: int = 2, mem_regs: int = 0, weight_rows: int = 1,
                 soon_lead: int = 0):
        check_geometry(rows, cols, width)
        if mem_regs not in (0, 1, 2):
            raise ValueError(f"mem_regs must be 0, 1 or 2, not {mem_regs!r}")
        if weight_rows not in (1, rows):
            raise ValueError(f"weight_rows must be 1 or rows = {rows}, not {weight_rows!r}")
        self.weight_rows = weight_rows
        self.rows, self.cols, self.width = rows, cols, width
        self.acc_bits = acc_bits
        self.levels_per_stage = levels_per_stage
        self.mem_regs = mem_regs
        self.latency = engine_timing(rows, cols, width, levels_per_stage,
                                     mem_regs).array_latency
        # (a register of row 0's control delay line: at most latency - 2 cycles ahead)
        if not 0 <= soon_lead < self.latency - 1:
            raise ValueError(f"soon_lead must be 0..{self.latency - 2}, not {soon_lead!r}")
        self.soon_lead = soon_lead
        super().__init__({
            "act": In(data.ArrayLayout(width, rows)),
            "wgt": In(data.ArrayLayout(width, cols) if weight_rows == 1
                      else data.ArrayLayout(data.ArrayLayout(width, cols), rows)),
            "ctl": In(control_layout()),
            "res": Out(data.ArrayLayout(acc_bits, cols)),
            "tile_done": Out(1),
            **({"tile_soon": Out(1)} if soon_lead else {}),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, W = self.rows, self.cols, self.width
        pes = [[XnorPopcountPE(W, self.acc_bits, self.levels_per_stage) for _ in range(C)]
               for _ in range(R)]
        for r in range(R):
            for c in range(C):
                m.submodules[f"pe_{r}_{c}"] = pes[r][c]
        lat = pes[0][0].latency + self.mem_regs
        assert lat >= 1  # the popcount's final adder is registered
        act = self.act
        # wgt[r][c]: the weight word PE (r, c) takes
        if self.weight_rows == 1:
            wgt = [[self.wgt[c] for c in range(C)]] * R
        else:
            wgt = [[self.wgt[r][c] for c in range(C)] for r in range(R)]
        if self.mem_regs:  # one register per row word and per weight word (no reset)
            act = [Signal(W, name=f"act_q{r}", reset_less=True) for r in range(R)]
            m.d.sync += [q.eq(self.act[r]) for r, q in enumerate(act)]
            regs = [[Signal(W, name=f"wgt_q{c}" if self.weight_rows == 1 else f"wgt_q{r}_{c}",
                            reset_less=True) for c in range(C)]
                    for r in range(1 if self.weight_rows == 1 else R)]
            for r, row in enumerate(regs):
                m.d.sync += [q.eq(wgt[r][c]) for c, q in enumerate(row)]
            wgt = regs * R if self.weight_rows == 1 else regs
        for r in range(R):
            # the row's control, delayed to line up with the popcount: en and dbl with the
            # count, clr (= load) a cycle after a tile's last count; all plain register bits
            # (clr powers up set: the accumulators start at 0), so their wires end at
            # flip-flop enables, resets and single multiplexers. `keep`: synthesis must not
            # merge the rows' identical registers into one register with a fanout of R*C PEs
            keep = {"keep": 1}
            valid, last, dbl = self.ctl.valid, self.ctl.last, self.ctl.dbl
            soon = [valid & last]  # row 0: a tile's last beat, j cycles after ctl
            for i in range(lat - 1):
                nv = Signal(name=f"v{r}_{i}", attrs=keep)
                nl = Signal(name=f"l{r}_{i}", attrs=keep)
                nd = Signal(name=f"dbl{r}_{i}", attrs=keep)
                m.d.sync += [nv.eq(valid), nl.eq(last), nd.eq(dbl)]
                valid, last, dbl = nv, nl, nd
                soon.append(valid & last)
            en = Signal(name=f"en{r}", attrs=keep)
            dd = Signal(name=f"dd{r}", attrs=keep)
            fin = Signal(name=f"fin{r}", attrs=keep)
            clr = Signal(name=f"clr{r}", init=1, attrs=keep)
            m.d.sync += [en.eq(valid), dd.eq(dbl), fin.eq(valid & last), clr.eq(fin)]
            if r == 0:
                m.d.comb += self.tile_done.eq(clr)
                if self.soon_lead:
                    # tile_done (clr) comes lat + 1 cycles after ctl, fin lat cycles after it
                    soon.append(fin)
                    m.d.comb += self.tile_soon.eq(soon[lat + 1 - self.soon_lead])
            for c in range(C):
                p = pes[r][c]
                m.d.comb += [p.a.eq(act[r]), p.w.eq(wgt[r][c]),
                             p.en.eq(en), p.dbl.eq(dd), p.clr.eq(clr), p.load.eq(clr)]
                m.d.comb += p.d_i.eq(pes[r + 1][c].d_o if r + 1 < R else 0)
        for c in range(C):
            m.d.comb += self.res[c].eq(pes[0][c].d_o)
        return m
