"""The XNOR-popcount processing element (output-stationary, double-buffered accumulator)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..sw.perf import engine_timing
from .popcount import PopCount

__all__ = [
    "MAX_PLANES",
    "XnorPopcountPE",
    "acc_width",
    "control_layout",
    "engine_max_k",
    "drain_layout",
    "shift_width",
]

#: Largest number of input bit-planes the datapath supports (8-bit pixels).
MAX_PLANES = 8


def _check_k_planes(max_k, max_planes) -> None:
    if not isinstance(max_k, int) or isinstance(max_k, bool) or max_k < 1:
        raise ValueError(f"max_k (largest valid bits per reduction) must be an int >= 1, "
                         f"not {max_k!r}")
    if not isinstance(max_planes, int) or not 1 <= max_planes <= MAX_PLANES:
        raise ValueError(f"max_planes must be an int in 1..{MAX_PLANES}, not {max_planes!r}")


def acc_width(max_k: int, max_planes: int = 1) -> int:
    """Accumulator bits that hold ``A = sum_b 2^b P_b`` for any layer within the limits.

    ``P_b <= max_k`` (valid bits of one reduction) so ``A <= max_k * (2^max_planes - 1)``.
    Raises :class:`ValueError` naming the offending value for a bad ``max_k``/``max_planes``.
    """
    _check_k_planes(max_k, max_planes)
    return (max_k * ((1 << max_planes) - 1)).bit_length()


def engine_max_k(acc_bits: int, planes: int = MAX_PLANES) -> int:
    """Largest ``max_k`` whose accumulator (``max_k * (2^planes - 1)``) fits ``acc_bits``: the
    PE that a target with ``acc_bits``-bit accumulators builds (``acc_width`` of it is
    ``acc_bits`` for ``acc_bits >= planes + 1``)."""
    return ((1 << acc_bits) - 1) // ((1 << planes) - 1)


def shift_width(max_planes: int) -> int:
    """Bits of the per-beat plane index (``shift``); at least 1."""
    return max(1, (max_planes - 1).bit_length())


def control_layout(max_planes: int) -> data.StructLayout:
    """Control that travels with every activation word: ``valid``, ``last``, ``shift``."""
    return data.StructLayout({
        "valid": 1,   # this beat carries a word of the tile (else a bubble)
        "last": 1,    # last word of the tile: finish and hand over the accumulator
        "shift": shift_width(max_planes),  # bit-plane b: the popcount is added as P << b
    })


def drain_layout(acc_bits: int) -> data.StructLayout:
    """One slot of the result conveyor: ``valid`` and the finished accumulator ``value``."""
    return data.StructLayout({"valid": 1, "value": acc_bits})


class XnorPopcountPE(wiring.Component):
    """Output-stationary XNOR-popcount processing element.

    Every cycle the PE registers an activation word, a weight word and their control, passes
    them on (activation right, weight down, one cycle later), and accumulates
    ``popcount(~(a ^ w)) << shift`` for valid beats. On the beat marked ``last`` the total is
    moved into the result register ``d`` (the second buffer) and the accumulator restarts at
    zero, so the next tile's first beat may follow immediately. ``d`` is also one slot of the
    column's result conveyor: when the PE is not finishing, ``d`` takes ``d_i`` (the slot
    below), so finished results climb one row per cycle to the top of the array.

    Parameters
    ----------
    width : int
        Word width ``W`` (any positive integer; the array allows 16, 32, 64).
    max_k : int
        Largest number of valid bits in one reduction (compile-time maximum ``K``).
    max_planes : int
        Largest number of input bit-planes ``B`` (1..8). Accumulator width is
        :func:`acc_width` ``(max_k, max_planes)``; a layer with ``K * (2^B - 1)`` beyond it must
        be refused by the compiler/sequencer (see ``TileEngine.check_layer``).
    levels_per_stage : int
        Full-adder levels between popcount pipeline registers.

    Members
    -------
    a_i, w_i : In(width)
        Activation / weight word entering this cycle.
    c_i : In(control_layout(max_planes))
        Control travelling with the activation word.
    a_o, w_o, c_o : Out
        The registered inputs, for the right / lower neighbour.
    d_i : In(drain_layout(acc_bits))
        Conveyor slot of the PE below (tie ``valid`` low in the bottom row).
    d_o : Out(drain_layout(acc_bits))
        This PE's conveyor slot.

    Latency: a ``last`` beat presented in cycle ``t`` puts the tile total on ``d_o`` in cycle
    ``t + latency`` (:attr:`latency` = popcount latency + 3). Throughput: one word per cycle;
    tiles may follow back to back (one ``last`` per cycle at most).
    """

    def __init__(self, width: int, max_k: int, max_planes: int = 1, levels_per_stage: int = 2):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"PE word width must be a positive integer, not {width!r}")
        self.width = width
        self.max_k = max_k
        self.max_planes = max_planes
        self.acc_bits = acc_width(max_k, max_planes)
        self.popcount = PopCount(width, levels_per_stage)
        self.latency = self.popcount.latency + 3
        assert self.latency == engine_timing(1, 1, width, levels_per_stage).pe_latency
        ctl = control_layout(max_planes)
        super().__init__({
            "a_i": In(width), "w_i": In(width), "c_i": In(ctl),
            "a_o": Out(width), "w_o": Out(width), "c_o": Out(ctl),
            "d_i": In(drain_layout(self.acc_bits)),
            "d_o": Out(drain_layout(self.acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.popcount = pc = self.popcount
        ctl = control_layout(self.max_planes)

        a = Signal(self.width, reset_less=True)  # data registers need no reset; only
        w = Signal(self.width, reset_less=True)  # control, accumulator and results do
        c = Signal(ctl)
        m.d.sync += [a.eq(self.a_i), w.eq(self.w_i), c.eq(self.c_i)]
        m.d.comb += [self.a_o.eq(a), self.w_o.eq(w), self.c_o.eq(c), pc.i.eq(~(a ^ w))]

        # control delayed to line up with the popcount result
        cp = c
        for i in range(pc.latency):
            nxt = Signal(ctl, name=f"ctl_p{i}")
            m.d.sync += nxt.eq(cp)
            cp = nxt

        # shift stage: term = P << shift (registered, keeps the barrel shifter off the adder),
        # and the control decisions as plain register bits (PEs on one anti-diagonal see the
        # same control, so synthesis shares these registers over up to min(R, C) PEs: their
        # long wires must end directly at flip-flop enables/resets, not feed more logic)
        term = Signal(self.acc_bits, reset_less=True)
        en = Signal()          # a valid beat: accumulate
        fin = Signal()         # its tile's last beat: hand the total over
        clr = Signal(init=1)   # clear the accumulator: after `fin`, and in/after reset
        m.d.sync += [term.eq(pc.o << cp.shift), en.eq(cp.valid),
                     fin.eq(cp.valid & cp.last), clr.eq(cp.valid & cp.last)]

        # the accumulator's clear is a plain register bit (no logic in front of the
        # flip-flops' synchronous reset), and the accumulator itself has no other reset
        acc = Signal(self.acc_bits, reset_less=True)
        d = Signal(drain_layout(self.acc_bits))
        total = Signal(self.acc_bits)
        m.d.comb += total.eq(acc + term)
        with m.If(clr):
            m.d.sync += acc.eq(0)
        with m.Elif(en):
            m.d.sync += acc.eq(total)
        with m.If(fin):
            m.d.sync += [d.valid.eq(1), d.value.eq(total)]
        with m.Else():
            m.d.sync += d.eq(self.d_i)
        m.d.comb += self.d_o.eq(d)
        return m
