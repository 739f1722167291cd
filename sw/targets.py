"""Accelerator targets: array geometry and memory capacities of each supported board.

A :class:`Target` says what the compiler may assume: the systolic array is ``rows x cols``
processing elements of ``width``-bit words, and each on-chip memory holds at most
``memories[name] = (word width in bits, depth)`` words. ``None`` as a depth means unlimited
(the ``sim`` target). The memory names are those of the accelerator (``docs/program.md``):

* ``weights``: ``cols * width`` bits per word (one ``width``-bit word per array column, so
  one read feeds every column), or ``weight_rows * cols * width`` with ``weight_rows = rows``
  (one such word per array row, so one read feeds every PE: a dense layer of one image splits
  its reduction across the rows or spreads its column groups over them,
  :func:`xnorflow.sw.program.mapping`);
* ``thresholds``: ``cols * 32`` bits per word (one 32-bit lane per column);
* ``program``: 32-bit words: header, layer descriptors, beat tables and row lists
  (``docs/program.md``);
* ``activations``: ``width``-bit words, input image and ping-pong maps; it has ``rows``
  read ports (synthesis replicates it ``rows`` times), so ``depth`` is the logical depth
  the compiler may use;
* ``scores``: ``cols * 32`` bits per word (one signed 32-bit lane per column), the last
  layer's integer scores (written by the accelerator, read by the host).

Capacities are chosen so that every memory of a target fits the FPGA's RAM together
(``docs/program.md`` has the arithmetic per board).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from .boards import board_of_target
from .errors import UserError

#: Memory names of the accelerator, in memory-id order (the host protocol uses these ids).
MEMORY_NAMES = ("program", "weights", "thresholds", "activations", "scores")
#: Width of a threshold / score-offset lane and of a score word.
LANE_BITS = 32
#: Width of a program word.
PROGRAM_BITS = 32


def _mem(rows: int, cols: int, width: int, *, weights, thresholds, program, activations,
         scores, weight_rows: int = 1) -> dict:
    return {
        "program": (PROGRAM_BITS, program),
        "weights": (weight_rows * cols * width, weights),
        "thresholds": (cols * LANE_BITS, thresholds),
        "activations": (width, activations),
        "scores": (cols * LANE_BITS, scores),
    }


#: Word widths the datapath is built for.
WIDTHS = (16, 32, 64)


def geometry_problem(rows, cols, width) -> str | None:
    """What is wrong with an array geometry ``rows x cols x width`` (see :class:`Target`),
    or None when a target may have it."""
    for attr, v in (("rows", rows), ("cols", cols)):
        if not isinstance(v, int) or v < 1:
            return f"{attr} must be a positive int, not {v!r}"
    if width not in WIDTHS:
        return f"width must be {', '.join(map(str, WIDTHS[:-1]))} or {WIDTHS[-1]}, not {width}"
    if cols & (cols - 1) or cols > width:
        return f"cols must be a power of two <= width {width}, not {cols}"
    return None


@dataclass(frozen=True)
class Target:
    """An accelerator geometry and its memory capacities.

    ``rows`` (R) output pixels and ``cols`` (C) output channels are computed at once, each PE
    taking one ``width``-bit (W) word per cycle. ``cols`` must be a power of two no larger
    than ``width`` (a column group's output bits then lie inside one activation word).
    ``acc_bits`` is the accumulator width of the datapath. ``popcount_levels`` is the
    number of full-adder levels between the PE popcount's pipeline registers (fewer
    registers and one cycle less latency for more levels; timing only, never results).
    ``mem_regs`` (0, 1 or 2) is the number of registers between the memories and the array
    (the operands): 1 puts one beside the array and one in front of the activations' write
    port (a cycle more latency on each side, where a RAM's read data into the popcount was
    the critical path: ``hx8k``); 2 adds one beside the RAMs, the weights' in front of their
    bank multiplexer (:func:`~xnorflow.hw.memories.weight_banks`), a third program read
    port from which the sequencer's beat player learns an entry's run a cycle ahead, a
    second stage in the sequencer's beat decode, header and descriptor words taken from a
    register, and two registers on the host's read word (``ecp5-85f``, whose DP16KD has no
    output register here: every RAM's read data go to registers, not through logic, on the
    paths that were critical); timing only, never results.
    ``weight_rows`` (1, or ``rows`` when that is a power of two) is how many rows' weight
    words one weights-memory word holds: with ``rows`` every PE gets its own weight word each
    cycle and the compiler splits a dense layer's reduction across the rows or spreads its
    column groups over them (:func:`xnorflow.sw.program.mapping`); its depth counts such wide
    words.
    """

    name: str
    rows: int
    cols: int
    width: int
    memories: dict = field(default_factory=dict)  # name -> (word width in bits, depth or None)
    board: str | None = None
    description: str = ""
    acc_bits: int = 24
    popcount_levels: int = 2
    mem_regs: int = 0
    weight_rows: int = 1

    def __post_init__(self) -> None:
        problem = geometry_problem(self.rows, self.cols, self.width)
        if problem:
            raise ValueError(f"target {self.name!r}: {problem}")
        if self.mem_regs not in (0, 1, 2):
            raise ValueError(f"target {self.name!r}: mem_regs must be 0, 1 or 2, "
                             f"not {self.mem_regs!r}")
        if self.weight_rows not in (1, self.rows) or self.weight_rows & (self.weight_rows - 1):
            raise ValueError(f"target {self.name!r}: weight_rows must be 1 or rows = "
                             f"{self.rows} when that is a power of two, not "
                             f"{self.weight_rows!r}")
        if not self.memories:
            object.__setattr__(
                self,
                "memories",
                _mem(self.rows, self.cols, self.width, weights=None, thresholds=None,
                     program=None, activations=None, scores=None,
                     weight_rows=self.weight_rows),
            )
        wbits = self.weight_rows * self.cols * self.width
        if "weights" in self.memories and self.memories["weights"][0] != wbits:
            raise ValueError(f"target {self.name!r}: weights words must be weight_rows x cols "
                             f"x width = {wbits} bits, not {self.memories['weights'][0]}")
        missing = set(MEMORY_NAMES) - set(self.memories)
        if missing:
            raise ValueError(f"target {self.name!r}: memories {sorted(missing)} not described")

    @property
    def geometry(self) -> str:
        return f"{self.rows}x{self.cols}x{self.width}"

    def depth(self, memory: str) -> int | None:
        """Capacity of ``memory`` in words (``None``: unlimited)."""
        return self.memories[memory][1]

    def word_bits(self, memory: str) -> int:
        """Word width of ``memory`` in bits."""
        return self.memories[memory][0]


def sim_target(rows: int = 4, cols: int = 4, width: int = 32, name: str = "sim",
               weight_rows: int = 1) -> Target:
    """A target with no memory limits and any geometry (simulation and tests)."""
    return Target(name, rows, cols, width, board=None, weight_rows=weight_rows,
                  description=f"simulation, {rows}x{cols}x{width}, unlimited memories")


TARGETS: dict[str, Target] = {
    # iCE40 UP5K: 30 EBR x 4 kbit, 4 SPRAM x 256 kbit (16 bits wide each), 5280 LCs.
    # 8x2x32 = 512 binary MACs per cycle with 64-bit weight words: the four SPRAMs side by
    # side are one 16K x 64 memory, and each weight word serves 8 rows (4x4x32 would need
    # 128 weight bits per cycle, 8 SPRAMs). EBR: activations 256 x 32 x R=8 read copies = 16,
    # program 256 x 32 x 2 read ports = 4, thresholds 512 x (2 lanes x 22 bits) = 6, scores
    # 256 x (2 x 21 bits) = 3: 29 of 30.
    "up5k": Target(
        "up5k", 8, 2, 32,
        _mem(8, 2, 32, weights=16384, thresholds=512, program=256, activations=256,
             scores=256),
        board=board_of_target("up5k").name,
        description="iCEBreaker (iCE40 UP5K): weights in SPRAM, 64 bits/cycle",
        # 18-bit accumulators: a 784-pixel 8-bit input layer (Fashion-MNIST MLP) needs
        # 784 * 255 < 2^18
        acc_bits=18,
        # three full-adder levels per popcount stage: the first stage starts at the memories'
        # read registers (RAM clock-to-out and the routes to 8 rows), so four were too slow
        # for 48 MHz, two cost flip-flops
        popcount_levels=3,
    ),
    # iCE40 HX8K: 32 EBR x 4 kbit, 7680 LCs, no SPRAM, no DSP.
    # 4x4x32: weights 256 x 128 = 8 EBR, activations 256 x 32 x R=4 = 8, thresholds
    # 256 x (4 x 22) = 6, program 256 x 32 x 2 = 4, scores 256 x (4 x 21) = 6: 32 of 32.
    "hx8k": Target(
        "hx8k", 4, 4, 32,
        _mem(4, 4, 32, weights=256, thresholds=256, program=256, activations=256,
             scores=256),
        board=board_of_target("hx8k").name,
        description="iCE40-HX8K breakout board: everything in EBR",
        acc_bits=18, popcount_levels=3,  # as up5k
        # registered operands and activation writes (266 more logic cells, 65 % of 7,680):
        # the critical path was a weights RAM's read data -> the popcount's first stage
        # (98.2 MHz at seed 1); with the registers nextpnr seeds 1-3 gave 102.8-106.0 MHz
        # (builds at 120 MHz, benchmarks/results/synth.md; without them seeds 2 and 3 gave
        # 94.0 and 99.9 in builds not kept)
        mem_regs=1,
    ),
    # ECP5 LFE5U-85F: 208 EBR x 18 kbit (DP16KD, 512 x 36 at the widest), 84K LUTs.
    # 8x8x32: weights 512 x 2048 bits (weight_rows = 8: a 256-bit word per array row, so
    # every PE gets its own weight word each cycle; 2048 / 36 -> 57 EBR at 512 x 36, one
    # block deep, no bank multiplexer; 4096 words of 256 bits, the Fashion-MNIST CNN's fc256
    # needs 3.3K split across the rows; the 3584 x 256 of before took 52), activations
    # 8K x 32 x R=8 copies (8 x 16 = 128 EBR: a 28x28 8-bit input is 6.3K words), thresholds
    # 256 x (8 x 24) = 6, program 2K x 32 x 3 read ports = 4 + 4 + 1 (a 28x28 map's row list is
    # 784 words; port 3 is mem_regs = 2's look-ahead and keeps only the beat flags and run
    # field, 8 bits: 1),
    # scores 512 x (8 x 23) = 6: 206 of 208 (as nextpnr counts them).
    "ecp5-85f": Target(
        "ecp5-85f", 8, 8, 32,
        _mem(8, 8, 32, weights=512, thresholds=256, program=2048, activations=8192,
             scores=512, weight_rows=8),
        board=board_of_target("ecp5-85f").name,
        description="ULX3S (ECP5 LFE5U-85F): everything in EBR",
        # 20-bit accumulators: 8-bit inputs of up to 4112 bits per reduction (e.g. 64 x 64
        # pixels), binary layers of up to 2^20 - 1 bits
        acc_bits=20,
        # registered operands and activation writes: its critical path was a weights RAM
        # (5.6 ns clock-to-out, a 7-deep bank multiplexer) -> the routes to 8 rows -> the
        # popcount's first stage, 58.1 MHz; with them (mem_regs = 1) 70.0 MHz in 7,118 fewer
        # LUT4s, the path then a weights RAM -> 6.1 ns of routing -> the bank multiplexer ->
        # the operand register; mem_regs = 2 puts a register after every RAM read on the
        # paths that became critical in turn (weights banks, the beat player's run flag,
        # its decode, the host read word, the header and descriptor words)
        # (benchmarks/results/synth.md, docs/accelerator.md "Measured")
        mem_regs=2,
        weight_rows=8,
    ),
    "sim": sim_target(),
}


def get_target(name: str) -> Target:
    """The target called ``name``; :class:`UserError` listing the valid names otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise UserError(
            f"unknown target {name!r}; valid targets: {', '.join(TARGETS)}"
        ) from None


def parse_geometry(text: str) -> tuple[int, int, int]:
    """``"4x4x32"`` -> ``(4, 4, 32)`` (rows x cols x word width); :class:`UserError` else."""
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*", str(text))
    if not m or min(int(g) for g in m.groups()) < 1:
        raise UserError(f"geometry {text!r}: expected ROWSxCOLSxWIDTH, e.g. 4x4x32")
    return int(m[1]), int(m[2]), int(m[3])


def with_geometry(base: Target, rows: int, cols: int, width: int) -> Target:
    """``base`` (a board's target) re-shaped for another array geometry.

    Each memory keeps its total bits (the RAM the board has), re-shaped for the new word
    widths: depth = the largest power of two that fits (activations are stored R times).
    The same geometry gives ``base`` itself; one that no target may have (see
    :class:`Target`) is a :class:`UserError`.
    """
    if (rows, cols, width) == (base.rows, base.cols, base.width):
        return base
    geometry = f"{rows}x{cols}x{width}"
    problem = geometry_problem(rows, cols, width)
    if problem:
        raise UserError(f"geometry {geometry}: {problem}")
    # one weight word per row where the board's target has it and the new rows allow it
    wrows = rows if base.weight_rows > 1 and not rows & (rows - 1) else 1
    probe = sim_target(rows, cols, width, weight_rows=wrows)
    mems = {}
    for name, (old_w, old_d) in base.memories.items():
        new_w = probe.memories[name][0]
        copies_old, copies_new = (base.rows, rows) if name == "activations" else (1, 1)
        words = (old_w * old_d * copies_old) // (new_w * copies_new)
        mems[name] = (new_w, 1 << max(0, words.bit_length() - 1))
    return dataclasses.replace(base, name=f"{base.name}-{geometry}", rows=rows, cols=cols,
                               width=width, memories=mems, weight_rows=wrows,
                               description=f"{base.description}, re-shaped")


def with_depths(base: Target, depths: dict[str, int]) -> Target:
    """``base`` with the depths of the memories named in ``depths`` (name -> words)
    replaced; the target's name gets ``-d``."""
    bad = set(depths) - set(base.memories)
    if bad:
        raise UserError(f"unknown memories {sorted(bad)} in the depths; "
                        f"choose from {', '.join(base.memories)}")
    mems = {n: (w, int(depths.get(n, d))) for n, (w, d) in base.memories.items()}
    desc = ", ".join(f"{n}={v}" for n, v in sorted(depths.items()))
    return dataclasses.replace(base, name=f"{base.name}-d", memories=mems,
                               description=f"{base.description}; depths {desc}")
