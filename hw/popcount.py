"""Pipelined population count: a full-adder (3:2 compressor) tree with registers between levels.

The tree is a Wallace reduction on bit columns: every level turns each group of three bits of
weight ``2^j`` into a sum bit (weight ``2^j``) and a carry bit (weight ``2^(j+1)``), i.e. one
XOR3 and one majority, each a single LUT3 on iCE40/ECP5. When no column holds more than two
bits, one carry-propagate adder (a short carry chain, ``ceil(log2(W+1))`` bits) finishes the
count. A register stage follows every ``levels_per_stage`` full-adder levels and the final
adder, so the longest combinational path is ``levels_per_stage`` LUT levels (or the short
carry chain). A 64-bit count uses ~51 full adders (~102 LUT4) plus a 7-bit adder.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sw.perf import popcount_schedule

__all__ = ["PopCount", "popcount_schedule"]


class PopCount(wiring.Component):
    """Pipelined popcount of a ``width``-bit word.

    Parameters
    ----------
    width : int
        Bits to count (>= 1).
    levels_per_stage : int
        Full-adder levels between pipeline registers (1 or 2 suit iCE40; default 2).

    Members
    -------
    i : In(width)
        Word to count, sampled every cycle.
    o : Out(width.bit_length())
        ``popcount(i)`` from :attr:`latency` cycles earlier.

    Latency is :attr:`latency` cycles (see :func:`xnorflow.sw.perf.popcount_schedule`);
    throughput one word per cycle. There is no enable: the pipeline always moves (callers
    pipeline their ``valid`` bit alongside).
    """

    def __init__(self, width: int, levels_per_stage: int = 2):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"popcount width must be a positive integer, not {width!r}")
        if not isinstance(levels_per_stage, int) or levels_per_stage < 1:
            raise ValueError(f"levels_per_stage must be >= 1, not {levels_per_stage!r}")
        self.width = width
        self.levels_per_stage = levels_per_stage
        self.out_width = width.bit_length()
        self.fa_levels, self.latency = popcount_schedule(width, levels_per_stage)
        super().__init__({"i": In(width), "o": Out(self.out_width)})

    def elaborate(self, platform):
        m = Module()
        cols = [[self.i[k] for k in range(self.width)]]
        level = 0
        stage = 0
        while max(len(c) for c in cols) > 2:
            new = [[] for _ in range(len(cols) + 1)]
            for j, bits in enumerate(cols):
                n3 = len(bits) // 3
                for g in range(n3):
                    a, b, c = bits[3 * g : 3 * g + 3]
                    new[j].append(a ^ b ^ c)
                    new[j + 1].append((a & b) | (a & c) | (b & c))
                new[j].extend(bits[3 * n3 :])
            while new and not new[-1]:
                new.pop()
            cols = new
            level += 1
            if level % self.levels_per_stage == 0 or max(len(c) for c in cols) <= 2:
                cols = self._register(m, cols, stage)
                stage += 1
        # final carry-propagate adder of (at most) two rows
        rows = []
        for r in range(2):
            rows.append(Cat(*[c[r] if len(c) > r else Const(0, 1) for c in cols]))
        total = Signal(self.out_width, name="count", reset_less=True)
        m.d.sync += total.eq(rows[0] + rows[1])
        m.d.comb += self.o.eq(total)
        return m

    @staticmethod
    def _register(m: Module, cols: list, stage: int) -> list:
        out = []
        for j, bits in enumerate(cols):
            regs = []
            for k, b in enumerate(bits):
                s = Signal(name=f"s{stage}_w{j}_{k}", reset_less=True)
                m.d.sync += s.eq(b)
                regs.append(s)
            out.append(regs)
        return out
