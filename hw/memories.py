"""The accelerator's on-chip memories (``amaranth.lib.memory``), initialised from images.

Five memories (``docs/program.md``): ``program`` (32-bit: header, descriptors, beat tables,
row lists; two read ports, one for the beats and one for everything else), ``weights``
(``C*W`` bits: ``C`` weight words per read), ``thresholds`` (``C`` lanes), ``activations``
(``W``-bit words, ``R`` read ports: synthesis replicates the memory once per port, which is
how the array gets ``R + C`` words per cycle; writes per ``C``-bit lane) and ``scores``
(``C`` lanes, written by the output stage, read by the host).

Every read port is synchronous and always enabled (data one cycle after the address; the
accelerator never stalls). Each memory has one write port; whoever owns the memory (the host
decoder while the sequencer is idle, the accelerator while it runs) drives it, the
multiplexing lives in :class:`~xnorflow.hw.accelerator.Accelerator`. The gateware keeps only
the bits of a threshold lane it uses (:func:`~xnorflow.hw.post.threshold_lane_bits`) and
scores in :func:`~xnorflow.sw.program.score_bits` bits, sign-extended to 32-bit lanes on the
host's read port; ``program``, ``weights`` and ``thresholds`` are write-only for the host.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw import program as prog
from ..sw.boards import BOARDS
from ..sw.images import MemoryImage
from ..sw.program import DEFAULT_DEPTHS, memory_depths
from ..sw.targets import LANE_BITS, MEMORY_NAMES, Target
from .post import threshold_lane_bits

__all__ = ["DEFAULT_DEPTHS", "WEIGHT_BANK_DEPTH", "AcceleratorMemories", "addr_width",
           "block_rams", "memory_depths", "stored_shapes", "threshold_storage", "weight_banks",
           "weight_select_bits"]

SPRAM_DEPTH = 16384
SPRAM_WIDTH = 16


def addr_width(depth: int) -> int:
    """Address bits of a memory of ``depth`` words (at least 1)."""
    return max(1, (depth - 1).bit_length())


def weight_select_bits(target: Target) -> int:
    """Low bits of the weights read address that pick a row's word within a memory word
    (``log2 Target.weight_rows``: the address counts words of ``C * W`` bits)."""
    return (target.weight_rows - 1).bit_length()


#: Deepest weights bank (``Target.mem_regs = 2``): the deepest ECP5 DP16KD configuration at
#: least 9 bits wide (2048 x 9); deeper configurations are 4 bits wide or less and would take
#: more blocks for the same words (a 256-bit word: 4096 x 4 in 64 blocks, 2 x 2048 x 9 in 58).
WEIGHT_BANK_DEPTH = 2048


def weight_banks(depth: int) -> list[tuple[int, int]]:
    """``[(first word, words)]`` of the weights banks of a ``depth``-word memory
    (``Target.mem_regs = 2``): powers of two, largest first, none deeper than
    :data:`WEIGHT_BANK_DEPTH`, so every bank's words start at a multiple of its depth and one
    RAM block deep of a bank needs no multiplexer (e.g. 3584 words: 2048 + 1024 + 512)."""
    banks, base = [], 0
    while base < depth:
        size = min(WEIGHT_BANK_DEPTH, 1 << ((depth - base).bit_length() - 1))
        banks.append((base, size))
        base += size
    return banks


def threshold_storage(lane: int, acc_bits: int) -> int:
    """What the gateware stores of a 32-bit threshold lane: the low ``acc_bits + 2`` bits,
    then bits 30 (pool with AND) and 31 (polarity -1, or the score offset's sign)."""
    tw = acc_bits + 2
    return (lane & ((1 << tw) - 1)) | ((lane >> prog.LANE_POOL_BIT) & 3) << tw


#: Suffix of RAM read-data registers (every read port here): the one way to give a register
#: no power-up value.
#: Synthesis (``xnorflow.synth``) drops their ``init`` attribute (:data:`YOSYS_AFTER_READ`)
#: so the RAM blocks' own output registers implement them; simulation keeps the zero init.
RDATA_SUFFIX = "_rdq"
#: Yosys command run right after reading the design: the read-data registers power up
#: undefined (nothing reads them before a read has happened), which lets yosys merge them
#: into the RAM blocks instead of emulating a power-up value of 0 with a flip-flop and a
#: multiplexer per bit. ``%x:+[Q]`` adds the wires on the same flip-flop output: Amaranth
#: gives a port driven by the register (``m.d.comb += port.eq(q)``) the register's ``init``
#: too, and yosys would keep that one.
YOSYS_AFTER_READ = f"setattr -unset init w:*{RDATA_SUFFIX}* %x:+[Q] w:* %i"


def _read(m: Module, mem: Memory, addr, name: str, en=None) -> Signal:
    """A synchronous read of ``mem`` (latency 1), enabled by ``en`` (default always: the
    read register keeps its value while ``en`` is low).

    Built as an asynchronous read port plus a register so that yosys' ``memory_dff`` merges
    the register into the port and applies the memory's ``no_rw_check`` attribute: the
    design never uses read data from a cycle in which the same word is written (the
    accelerator reads one activation region and writes the other; the host reads and writes
    in separate commands), so read/write collisions need no old-data emulation.
    """
    rp = mem.read_port(domain="comb")
    q = Signal(mem.shape, name=f"{name}{RDATA_SUFFIX}", reset_less=True)
    m.d.comb += rp.addr.eq(addr)
    if en is None:
        m.d.sync += q.eq(rp.data)
    else:
        with m.If(en):
            m.d.sync += q.eq(rp.data)
    return q


def _ram(m: Module, name: str, width: int, depth: int, init=()) -> Memory:
    """A memory of the accelerator, a submodule of ``m`` called ``name``: ``no_rw_check``,
    because the design never reads a word in the cycle it is written (:func:`_read`)."""
    mem = Memory(shape=width, depth=depth, init=list(init), attrs={"no_rw_check": 1})
    m.submodules[name] = mem
    return mem


def stored_shapes(target: Target) -> dict[str, tuple[int, int]]:
    """``name -> (stored width in bits, read ports)`` of each memory as
    :class:`AcceleratorMemories` builds it: thresholds keep :func:`threshold_lane_bits` of each
    lane, scores :func:`~xnorflow.sw.program.score_bits`, the program has two read ports (three
    with ``mem_regs = 2``) and the activations one per row (each read port is a copy of the
    memory in block RAM)."""
    C = target.cols
    return {
        "program": (32, 3 if target.mem_regs == 2 else 2),
        "weights": (target.word_bits("weights"), 1),
        "thresholds": (C * threshold_lane_bits(target.acc_bits), 1),
        "activations": (target.width, target.rows),
        "scores": (C * prog.score_bits(target), 1),
    }


def block_rams(target: Target, depths: dict | None = None,
               spram_weights: bool | None = None) -> dict[str, int]:
    """Block RAMs each memory of ``target`` takes on its board's FPGA family (estimated: the
    best :attr:`~xnorflow.sw.boards.Family.bram_shapes` configuration per read-port copy;
    yosys may do better, e.g. by moving a small memory to LUTs). ``weights`` takes none when
    it is built from SPRAM (default: when the board keeps it uninitialised, as
    :meth:`AcceleratorMemories.uses_spram`), and per bank when it is banked
    (``mem_regs = 2``, :func:`weight_banks`). :class:`ValueError` for a target without a
    board."""
    board = BOARDS.get(target.board or "")
    if board is None:
        raise ValueError(f"target {target.name!r} has no board, so no block RAMs")
    depths = depths or memory_depths(target)
    if spram_weights is None:
        spram_weights = "weights" in board.no_init and board.spram
    out = {}
    for name, (width, copies) in stored_shapes(target).items():
        if name == "weights" and spram_weights:
            out[name] = 0
            continue
        banks = ([d for _, d in weight_banks(depths[name])]
                 if name == "weights" and target.mem_regs == 2 else [depths[name]])

        def blocks(bits, banks=banks):
            return sum(min(-(-depth // d) * -(-bits // w)
                           for d, w in board.family_facts.bram_shapes) for depth in banks)
        if name == "program" and target.mem_regs == 2:
            # the look-ahead port C reads only the flags and the run field (bits 24-31):
            # synthesis keeps those bits
            out[name] = (copies - 1) * blocks(width) + blocks(8)
        else:
            out[name] = copies * blocks(width)
    return out


class AcceleratorMemories(wiring.Component):
    """All memories of the accelerator, with plain address/data ports.

    Parameters
    ----------
    target : Target
        Geometry, word widths and ``acc_bits``.
    depths : dict
        Words per memory (see :func:`memory_depths`).
    memories : list of MemoryImage, optional
        Initial contents (``program``, ``weights``, ``thresholds``, optionally
        ``activations``); others start at zero.

    Members
    -------
    prog_a_raddr, prog_a_rdata, prog_b_raddr, prog_b_rdata, prog_b_ren :
        The program's two read ports.
    prog_c_raddr, prog_c_rdata : (``Target.mem_regs = 2`` only) a third program read port,
        enabled with port B (the beat player's look-ahead).
    wgt_raddr, wgt_rdata : the weights read port: ``wgt_raddr`` counts words of ``C * W``
        bits; ``wgt_rdata`` is such a word (``Target.weight_rows = 1``) or one per array row
        (``weight_rows = R``: memory word ``wgt_raddr // R`` holds ``R`` of them; row ``r``
        gets word ``wgt_raddr mod R`` of it, or with ``wgt_split`` its own, the ``r``-th).
    wgt_split : (``weight_rows = R`` only) the layer splits its reduction across the rows or
        spreads its column groups over them (``ksplit`` or ``ospread``).
        With ``weight_rows = R`` and ``mem_regs = 2`` the shared word (after its multiplexer)
        and every row's own word are registered once more: read latency 3 (the sequencer
        sends the address a cycle early); ``wgt_split`` picks between them after those
        registers.
    thr_raddr, thr_rdata : the thresholds read port (``C`` lanes of the stored bits).
    act_raddr, act_rdata : ``R`` activation read ports.
    score_raddr, score_rdata : the scores read port (``C`` sign-extended 32-bit lanes).
    <m>_waddr, <m>_wdata, <m>_we : the write port of each memory; ``act_wen`` has one
        enable per ``C``-bit lane, ``thr_wdata`` takes whole 32-bit lanes.

    Every read has latency 1, one read per cycle and port.
    """

    def __init__(self, target: Target, depths: dict, memories: list[MemoryImage] | None = None):
        self.target = target
        self.depths = dict(depths)
        self.images = {m.name: m for m in memories or []}
        for name, img in self.images.items():
            if name not in MEMORY_NAMES:
                raise ValueError(f"unknown memory image {name!r}; memories: {MEMORY_NAMES}")
            if img.width != target.word_bits(name):
                raise ValueError(
                    f"memory image {name!r} is {img.width} bits wide, target {target.name!r} "
                    f"needs {target.word_bits(name)}"
                )
            if img.depth > self.depths[name]:
                raise ValueError(f"memory image {name!r}: {img.depth} words > depth "
                                 f"{self.depths[name]}")
        R, C, W = target.rows, target.cols, target.width
        WR = target.weight_rows
        if WR > 1 and BOARDS.get(target.board or "") is not None and (
                "weights" in BOARDS[target.board].no_init):
            raise ValueError(f"target {target.name!r}: weight_rows {WR} needs block RAM "
                             f"weights; its board keeps them in SPRAM")
        self.wsel = weight_select_bits(target)
        self.lane_bits = threshold_lane_bits(target.acc_bits)
        self.score_bits = prog.score_bits(target)
        self.shapes = stored_shapes(target)
        aw = {n: addr_width(self.depths[n]) for n in MEMORY_NAMES}
        super().__init__({
            "prog_a_raddr": In(aw["program"]), "prog_a_rdata": Out(32),
            "prog_b_raddr": In(aw["program"]), "prog_b_rdata": Out(32),
            "prog_b_ren": In(1, init=1),
            **({"prog_c_raddr": In(aw["program"]), "prog_c_rdata": Out(32)}
               if target.mem_regs == 2 else {}),
            "prog_waddr": In(aw["program"]), "prog_wdata": In(32), "prog_we": In(1),
            "wgt_raddr": In(aw["weights"] + self.wsel),
            "wgt_rdata": Out(data.ArrayLayout(C * W, R) if WR > 1 else C * W),
            **({"wgt_split": In(1)} if WR > 1 else {}),
            "wgt_waddr": In(aw["weights"]), "wgt_wdata": In(WR * C * W), "wgt_we": In(1),
            "thr_raddr": In(aw["thresholds"]),
            "thr_rdata": Out(data.ArrayLayout(self.lane_bits, C)),
            "thr_waddr": In(aw["thresholds"]), "thr_wdata": In(C * LANE_BITS), "thr_we": In(1),
            "act_raddr": In(data.ArrayLayout(aw["activations"], R)),
            "act_rdata": Out(data.ArrayLayout(W, R)),
            "act_waddr": In(aw["activations"]), "act_wdata": In(W), "act_wen": In(W // C),
            "score_raddr": In(aw["scores"]), "score_rdata": Out(C * LANE_BITS),
            "score_waddr": In(aw["scores"]),
            "score_wdata": In(data.ArrayLayout(self.score_bits, C)), "score_we": In(1),
        })

    def uses_spram(self, platform) -> bool:
        """Whether ``weights`` is built from iCE40 SPRAM (only when building for a board that
        keeps it without initial contents, :attr:`xnorflow.sw.boards.Board.no_init`)."""
        w = self.target.word_bits("weights")
        board = BOARDS.get(self.target.board)
        return (platform is not None and board is not None and "weights" in board.no_init
                and w % SPRAM_WIDTH == 0 and self.depths["weights"] <= SPRAM_DEPTH)

    def _spram_weights(self, m):
        """``weights`` as ``C*W/16`` SB_SPRAM256KA side by side (single-port: the write
        address wins when ``wgt_we``; the host writes only while the sequencer is idle).
        SPRAM cannot be initialised by the bitstream: the host loads the weights after
        configuration."""
        w = self.target.word_bits("weights")
        addr = Signal(14)
        m.d.comb += addr.eq(Mux(self.wgt_we, self.wgt_waddr, self.wgt_raddr))
        outs = []
        for i in range(w // SPRAM_WIDTH):
            dout = Signal(SPRAM_WIDTH, name=f"spram{i}_dout")
            m.submodules[f"weights_spram{i}"] = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=addr,
                i_DATAIN=self.wgt_wdata[SPRAM_WIDTH * i:SPRAM_WIDTH * (i + 1)],
                i_MASKWREN=0b1111,
                i_WREN=self.wgt_we,
                i_CHIPSELECT=1,
                i_CLOCK=ClockSignal(),
                i_STANDBY=0,
                i_SLEEP=0,
                i_POWEROFF=1,
                o_DATAOUT=dout,
            )
            outs.append(dout)
        return Cat(*outs)

    def _banked_weights(self, m, init):
        """``weights`` (``Target.mem_regs = 2``) as :func:`weight_banks` memories, each read
        into its own register, then one multiplexer picks the addressed bank's register: read
        latency 2, and no multiplexer sits between a RAM block's output and a register (the
        bank multiplexer a single deep memory gets in synthesis was the ECP5's critical
        path)."""
        width = self.shapes["weights"][0]
        addr = self.wgt_raddr[self.wsel:]
        picked = []
        for i, (base, depth) in enumerate(weight_banks(self.depths["weights"])):
            mem = _ram(m, f"weights_bank{i}", width, depth, init[base:base + depth])
            self.banks["weights"].append((base, depth, mem))
            low = addr_width(depth)
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.wgt_waddr[:low]), wp.data.eq(self.wgt_wdata),
                         wp.en.eq(self.wgt_we & (self.wgt_waddr >= base)
                                  & (self.wgt_waddr < base + depth))]
            rd = _read(m, mem, addr[:low], f"wgt_bank{i}")
            q = Signal(width, name=f"wgt_bank{i}_q", reset_less=True)
            hit = Signal(name=f"wgt_bank{i}_hit")      # the address was in this bank ...
            hit_q = Signal(name=f"wgt_bank{i}_hit_q")  # ... two cycles ago, with q
            m.d.sync += [q.eq(rd), hit.eq((addr >= base) & (addr < base + depth)),
                         hit_q.eq(hit)]
            picked.append(Mux(hit_q, q, 0))
        out = picked[0]
        for p in picked[1:]:
            out = out | p
        return out

    def _row_words(self, m, word, latency: int):
        """``wgt_rdata`` from a memory word read ``latency`` cycles after its address: with
        ``weight_rows = R`` row ``r`` gets the addressed ``C * W`` bits of it (the low bits
        of ``wgt_raddr``, delayed with the read), or with ``wgt_split`` its own ``r``-th."""
        if self.target.weight_rows == 1:
            m.d.comb += self.wgt_rdata.eq(word)
            return
        cw = self.target.cols * self.target.width
        lanes = [word[i * cw:(i + 1) * cw] for i in range(self.target.weight_rows)]
        sel = self.wgt_raddr[:self.wsel]
        for i in range(latency):
            q = Signal(self.wsel, name=f"wgt_sel_q{i}", reset_less=True)
            m.d.sync += q.eq(sel)
            sel = q
        # a tree of 2:1 multiplexers on the select bits (the same as a case statement, but
        # yosys 0.70's abc9 failed an assertion on the 8-way $pmux of 256-bit words in the
        # ULX3S build: ABC_OPS_REINTEGRATE, rtlil.cc:3091)
        level = lanes
        for b in range(self.wsel):
            level = [Mux(sel[b], level[2 * i + 1], level[2 * i]) for i in range(len(level) // 2)]
        shared = Signal(cw, name="wgt_shared", attrs={"keep": 1})
        m.d.comb += shared.eq(level[0])
        if self.target.mem_regs == 2:
            # the shared word and every row's own word registered once more (read latency 3:
            # the sequencer sends the address a cycle earlier): the multiplexer is built
            # once, beside the block RAMs (as one expression with the rows' 2:1
            # multiplexers, abc9 copied it into every row: 7,100 more LUT4s and the routes
            # of 8 x 2,048 bits), and the routes to the array's rows get their own cycle
            shared_q = Signal(cw, name="wgt_shared_q", reset_less=True)
            m.d.sync += shared_q.eq(shared)
            shared = shared_q
            lanes_q = [Signal(cw, name=f"wgt_lane{r}_q", reset_less=True)
                       for r in range(self.target.rows)]
            m.d.sync += [q.eq(lane) for q, lane in zip(lanes_q, lanes, strict=True)]
            lanes = lanes_q
        for r in range(self.target.rows):
            m.d.comb += self.wgt_rdata[r].eq(Mux(self.wgt_split, lanes[r], shared))

    def cell(self, name: str, addr: int):
        """The simulator's value of word ``addr`` of memory ``name`` (``ctx.get`` it), also
        when the memory is built from banks."""
        for base, depth, mem in self.banks.get(name, ()):
            if base <= addr < base + depth:
                return mem.data[addr - base]
        return self.mems[name].data[addr]

    def elaborate(self, platform):
        m = Module()
        t = self.target
        R, C = t.rows, t.cols
        self.mems = {}  # name -> Memory (simulation testbenches read `.data` through it)
        self.banks = {"weights": []}  # name -> [(first word, depth, Memory)], when banked

        def memory(name, width, init=()):
            mem = self.mems[name] = _ram(m, name, width, self.depths[name], init)
            return mem

        def words(name):
            img = self.images.get(name)
            return [int(v) for v in img.words] if img is not None else []

        # program: two read ports (the beat player's and the rest)
        mem = memory("program", self.shapes["program"][0], words("program"))
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(self.prog_waddr), wp.data.eq(self.prog_wdata),
                     wp.en.eq(self.prog_we),
                     self.prog_a_rdata.eq(_read(m, mem, self.prog_a_raddr, "prog_a")),
                     self.prog_b_rdata.eq(_read(m, mem, self.prog_b_raddr, "prog_b",
                                                self.prog_b_ren))]
        if t.mem_regs == 2:  # the beat player's look-ahead (port C), enabled with port B
            m.d.comb += self.prog_c_rdata.eq(_read(m, mem, self.prog_c_raddr, "prog_c",
                                                   self.prog_b_ren))
        # weights
        if self.uses_spram(platform):
            wgt = self._spram_weights(m)
            if t.mem_regs == 2:  # read latency 2, as from banks (a single bank here)
                q = Signal.like(self.wgt_rdata, name="wgt_bank_q", reset_less=True)
                m.d.sync += q.eq(wgt)
                wgt = q
            m.d.comb += self.wgt_rdata.eq(wgt)
        elif t.mem_regs == 2:
            self._row_words(m, self._banked_weights(m, words("weights")), 2)
        else:
            mem = memory("weights", self.shapes["weights"][0], words("weights"))
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.wgt_waddr), wp.data.eq(self.wgt_wdata),
                         wp.en.eq(self.wgt_we)]
            self._row_words(m, _read(m, mem, self.wgt_raddr[self.wsel:], "wgt"), 1)
        # thresholds: the stored bits of each lane
        lb = self.lane_bits

        def store(value):
            return Cat(*(threshold_storage_value(value[c * LANE_BITS:(c + 1) * LANE_BITS],
                                                 t.acc_bits) for c in range(C)))

        init = []
        for v in words("thresholds"):
            init.append(sum(threshold_storage((v >> (c * LANE_BITS)) & prog.LANE_MASK,
                                              t.acc_bits) << (c * lb) for c in range(C)))
        mem = memory("thresholds", self.shapes["thresholds"][0], init)
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(self.thr_waddr), wp.data.eq(store(self.thr_wdata)),
                     wp.en.eq(self.thr_we),
                     self.thr_rdata.eq(_read(m, mem, self.thr_raddr, "thr"))]
        # activations: R read ports, lane writes
        mem = memory("activations", self.shapes["activations"][0], words("activations"))
        wp = mem.write_port(granularity=C)
        m.d.comb += [wp.addr.eq(self.act_waddr), wp.data.eq(self.act_wdata),
                     wp.en.eq(self.act_wen)]
        for r in range(R):
            m.d.comb += self.act_rdata[r].eq(_read(m, mem, self.act_raddr[r], f"act{r}"))
        # scores: C lanes of score_bits, sign-extended for the host
        sb = self.score_bits
        mem = memory("scores", self.shapes["scores"][0])
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(self.score_waddr), wp.data.eq(self.score_wdata),
                     wp.en.eq(self.score_we)]
        q = _read(m, mem, self.score_raddr, "score")
        for c in range(C):
            ext = Signal(signed(LANE_BITS), name=f"score_lane{c}")
            m.d.comb += [ext.eq(q[c * sb:(c + 1) * sb].as_signed()),
                         self.score_rdata[c * LANE_BITS:(c + 1) * LANE_BITS].eq(ext)]
        return m


def threshold_storage_value(lane, acc_bits: int):
    """:func:`threshold_storage` on a 32-bit lane value in gateware (wiring only)."""
    tw = acc_bits + 2
    return Cat(lane[:tw], lane[prog.LANE_POOL_BIT], lane[prog.LANE_NEG_BIT])
