"""The XNOR-popcount processing element (output-stationary, double-buffered accumulator)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sw.perf import engine_timing
from .popcount import PopCount

__all__ = ["MAX_PLANES", "XnorPopcountPE", "acc_width"]

#: Largest number of input bit-planes the datapath supports (8-bit pixels).
MAX_PLANES = 8


def acc_width(max_k: int, max_planes: int = 1) -> int:
    """Accumulator bits that hold ``A = sum_b 2^b P_b`` for any layer within the limits.

    ``P_b <= max_k`` (valid bits of one reduction) so ``A <= max_k * (2^max_planes - 1)``.
    Raises :class:`ValueError` naming the offending value for a bad ``max_k``/``max_planes``.
    """
    if not isinstance(max_k, int) or isinstance(max_k, bool) or max_k < 1:
        raise ValueError(f"max_k (largest valid bits per reduction) must be an int >= 1, "
                         f"not {max_k!r}")
    if not isinstance(max_planes, int) or not 1 <= max_planes <= MAX_PLANES:
        raise ValueError(f"max_planes must be an int in 1..{MAX_PLANES}, not {max_planes!r}")
    return (max_k * ((1 << max_planes) - 1)).bit_length()


class XnorPopcountPE(wiring.Component):
    """Output-stationary XNOR-popcount processing element.

    The PE owns no operand registers: ``a`` and ``w`` come straight from the row's and the
    column's shared registers (the memories' read registers), so the array's operand
    registers are ``R + C`` words, not ``2 R C``. Every cycle the PE counts
    ``P = popcount(~(a ^ w))`` in a pipelined tree; its control (one register copy per array
    row) arrives already delayed to line up with ``P``: ``en`` (a valid beat), ``dbl`` (the
    first beat of a bit-plane after the first, planes most significant first: Horner's rule
    gives ``sum_b 2^b P_b``) and ``clr`` (the cycle after a tile's last beat).

    For a valid beat the accumulator becomes ``A + P``, where ``A`` is ``2 acc`` with ``dbl``,
    0 with ``clr`` (a new tile) and ``acc`` otherwise; with ``clr`` and no valid beat it
    becomes 0. In the ``clr`` cycle the result register ``d`` takes the finished total from
    the accumulator (``load``, the same timing), otherwise the slot of the PE below (``d_i``):
    finished results climb one row per cycle. The sum feeds the accumulator alone and the
    clear shares the Horner multiplexer, so on the iCE40 every accumulator bit is one LUT +
    carry + flip-flop cell, every result bit one LUT + flip-flop cell.

    Parameters
    ----------
    width : int
        Word width ``W``.
    acc_bits : int
        Accumulator and result width (:func:`acc_width`).
    levels_per_stage : int
        Full-adder levels between popcount pipeline registers.

    Members
    -------
    a, w : In(width)
        Activation and weight words of this cycle (registered outside the PE).
    en, dbl, clr, load : In(1)
        Control lined up with the popcount result (see above), from the array.
    d_i : In(acc_bits)
        Result slot of the PE below (0 in the bottom row).
    d_o : Out(acc_bits)
        This PE's result slot.

    Latency: a beat presented on ``a``/``w`` in cycle ``t`` has its count added in cycle
    ``t + latency`` (:attr:`latency` = popcount latency); a tile whose last beat is added in
    cycle ``u`` is loaded into ``d`` in cycle ``u + 1`` (``clr``/``load``) and shows on
    ``d_o`` from ``u + 2``. Throughput: one word per cycle; tiles may follow back to back.
    """

    def __init__(self, width: int, acc_bits: int, levels_per_stage: int = 2):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"PE word width must be a positive integer, not {width!r}")
        if not isinstance(acc_bits, int) or acc_bits < width.bit_length():
            raise ValueError(f"acc_bits must be an int >= {width.bit_length()} (a popcount "
                             f"of {width} bits), not {acc_bits!r}")
        self.width = width
        self.acc_bits = acc_bits
        self.popcount = PopCount(width, levels_per_stage)
        self.latency = self.popcount.latency
        assert self.latency == engine_timing(1, 1, width, levels_per_stage).popcount_latency
        super().__init__({
            "a": In(width), "w": In(width),
            "en": In(1), "dbl": In(1), "clr": In(1), "load": In(1),
            "d_i": In(acc_bits), "d_o": Out(acc_bits),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.popcount = pc = self.popcount
        m.d.comb += pc.i.eq(~(self.a ^ self.w))
        # data registers without reset: the accumulator is cleared through its multiplexer
        # or its enable/reset (plain register bits), `d` is loaded before it is read
        acc = Signal(self.acc_bits, reset_less=True)
        d = Signal(self.acc_bits, reset_less=True)
        base = Signal(self.acc_bits)
        m.d.comb += base.eq(Mux(self.clr, 0, Mux(self.dbl, acc << 1, acc)))
        with m.If(self.en):
            m.d.sync += acc.eq(base + pc.o)
        with m.Elif(self.clr):
            m.d.sync += acc.eq(0)
        with m.If(self.load):
            m.d.sync += d.eq(acc)
        with m.Else():
            m.d.sync += d.eq(self.d_i)
        m.d.comb += self.d_o.eq(d)
        return m
