"""The accelerator's on-chip memories (``amaranth.lib.memory``), initialised from images.

Five memories (``docs/program.md``): ``program`` (32-bit layer descriptors), ``weights``
(``C*W`` bits: one word per array column per read, i.e. ``C`` weight words per cycle),
``thresholds`` (``C`` 32-bit lanes), ``activations`` (``W``-bit words with ``R`` read
ports, so the array gets ``R`` activation words per cycle: synthesis replicates the memory
once per read port, which is how "banked for R + C words per cycle" is met on every target)
and ``scores`` (32-bit, written by the sequencer, read by the host).

Each memory has one write port; whoever owns the memory (host decoder while the sequencer
is idle, sequencer while it runs) drives it, the multiplexing lives in
:class:`~xnorflow.hw.accelerator.Accelerator`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw.boards import BOARDS
from ..sw.errors import UserError
from ..sw.images import MemoryImage
from ..sw.program import decode_program
from ..sw.targets import MEMORY_NAMES, Target

__all__ = ["DEFAULT_DEPTHS", "AcceleratorMemories", "memory_depths", "addr_width"]

SPRAM_DEPTH = 16384
SPRAM_WIDTH = 16

#: Depths used for unlimited (``None``) capacities when no image asks for more.
DEFAULT_DEPTHS = {"program": 512, "weights": 1024, "thresholds": 64, "activations": 1024,
                  "scores": 256}


def addr_width(depth: int) -> int:
    """Address bits of a memory of ``depth`` words (at least 1)."""
    return max(1, (depth - 1).bit_length())


def memory_depths(target: Target, memories: list[MemoryImage] | None = None) -> dict:
    """Depth of each memory: the target's capacity, or for unlimited ones enough for the
    images (and the program's activation and score needs) rounded up to a power of two."""
    need = dict(DEFAULT_DEPTHS)
    imgs = {m.name: m for m in memories or []}
    for name, img in imgs.items():
        need[name] = max(need.get(name, 1), img.depth)
    if "program" in imgs:
        try:
            header, _ = decode_program(imgs["program"].words)
        except UserError:
            header = None  # not a program (e.g. a test pattern): no extra needs
        if header is not None:
            need["activations"] = max(need["activations"], header["act_words"])
            need["scores"] = max(need["scores"],
                                 header["n_classes"] * max(1, header["max_batch"]))
    out = {}
    for name in MEMORY_NAMES:
        cap = target.depth(name)
        if cap is None:
            out[name] = 1 << (max(1, need[name]) - 1).bit_length()
        else:
            if name in imgs and imgs[name].depth > cap:
                raise ValueError(
                    f"memory image {name!r} has {imgs[name].depth} words, target "
                    f"{target.name!r} holds {cap}"
                )
            out[name] = cap
    return out


#: Suffix of RAM read-data registers (the memories' here, the tile engine's result FIFO's,
#: the output stage's packing buffer's): the one way to give a register no power-up value.
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


def _read(m: Module, mem: Memory, addr, en, name: str) -> Signal:
    """A synchronous read of ``mem`` (latency 1; the data holds while ``en`` is low).

    Built as an asynchronous read port plus a register so that yosys' ``memory_dff`` merges
    the register into the port and applies the memory's ``no_rw_check`` attribute: the
    design never uses read data from a cycle in which the same word is written (the
    sequencer reads one activation region and writes the other; the host reads and writes
    in separate commands), so read/write collisions need no old-data emulation (a ready-made
    synchronous port gets it regardless: on the UP5K ~400 LUT4 + ~390 FF of write-data
    registers and bypass multiplexers for these memories).
    """
    rp = mem.read_port(domain="comb")
    q = Signal(mem.shape, name=f"{name}{RDATA_SUFFIX}", reset_less=True)
    m.d.comb += rp.addr.eq(addr)
    with m.If(en):
        m.d.sync += q.eq(rp.data)
    return q


class AcceleratorMemories(wiring.Component):
    """All memories of the accelerator, with plain address/data ports.

    Parameters
    ----------
    target : Target
        Geometry and word widths.
    depths : dict
        Words per memory (see :func:`memory_depths`).
    memories : list of MemoryImage, optional
        Initial contents (``program``, ``weights``, ``thresholds``); others start at zero.

    Members
    -------
    <m>_raddr : In(addr bits), <m>_rdata : Out(word bits)
        Read port of memory ``m`` (``prog``, ``wgt``, ``thr``, ``score``): synchronous,
        always enabled, data one cycle after the address (latency 1, one read per cycle).
    act_raddr : In(ArrayLayout(addr bits, R)), act_rdata : Out(ArrayLayout(W, R))
        The ``R`` activation read ports (latency 1).
    act_ren, wgt_ren : In(1)
        Read enables of the activation and weight ports (low: the data output holds, which
        is how the sequencer stalls its operand pipeline).
    <m>_waddr, <m>_wdata, <m>_we : In
        Write port of each memory (written at the clock edge when ``we``).
    """

    PORTS = {"program": "prog", "weights": "wgt", "thresholds": "thr",
             "activations": "act", "scores": "score"}

    def __init__(self, target: Target, depths: dict, memories: list[MemoryImage] | None = None):
        self.target = target
        self.depths = dict(depths)
        self.images = {m.name: m for m in memories or []}
        for name, img in self.images.items():
            if name not in self.PORTS:
                raise ValueError(f"unknown memory image {name!r}; memories: {MEMORY_NAMES}")
            if img.width != target.word_bits(name):
                raise ValueError(
                    f"memory image {name!r} is {img.width} bits wide, target {target.name!r} "
                    f"needs {target.word_bits(name)}"
                )
            if img.depth > self.depths[name]:
                raise ValueError(f"memory image {name!r}: {img.depth} words > depth "
                                 f"{self.depths[name]}")
        members = {}
        for name, p in self.PORTS.items():
            aw, w = addr_width(self.depths[name]), target.word_bits(name)
            if name == "activations":
                members["act_raddr"] = In(data.ArrayLayout(aw, target.rows))
                members["act_ren"] = In(1, init=1)
                members["act_rdata"] = Out(data.ArrayLayout(w, target.rows))
            elif name == "weights":
                members["wgt_raddr"] = In(aw)
                members["wgt_ren"] = In(1, init=1)
                members["wgt_rdata"] = Out(w)
            else:
                members[f"{p}_raddr"] = In(aw)
                members[f"{p}_rdata"] = Out(w)
            members[f"{p}_waddr"] = In(aw)
            members[f"{p}_wdata"] = In(w)
            members[f"{p}_we"] = In(1)
        super().__init__(members)

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
        SPRAM cannot be initialised by the bitstream: the host loads the weights
        (WRITE_MEM) after configuration. The read enable is the SPRAM's CHIPSELECT: a
        deselected SPRAM keeps its DATAOUT (the primitive's model in yosys' ice40
        ``cells_sim.v``), which gives the read-enable semantics of the other memories
        without a 64-bit hold register and multiplexer.
        """
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
                i_CHIPSELECT=self.wgt_ren | self.wgt_we,
                i_CLOCK=ClockSignal(),
                i_STANDBY=0,
                i_SLEEP=0,
                i_POWEROFF=1,
                o_DATAOUT=dout,
            )
            outs.append(dout)
        m.d.comb += self.wgt_rdata.eq(Cat(*outs))

    def elaborate(self, platform):
        m = Module()
        self.mems = {}  # name -> Memory (simulation testbenches read `.data` through it)
        spram = self.uses_spram(platform)
        if spram:
            self._spram_weights(m)
        for name, p in self.PORTS.items():
            if spram and name == "weights":
                continue
            depth, w = self.depths[name], self.target.word_bits(name)
            img = self.images.get(name)
            init = [int(v) for v in img.words] if img is not None else []
            mem = Memory(shape=w, depth=depth, init=init, attrs={"no_rw_check": 1})
            m.submodules[name] = mem
            self.mems[name] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(getattr(self, f"{p}_waddr")),
                         wp.data.eq(getattr(self, f"{p}_wdata")),
                         wp.en.eq(getattr(self, f"{p}_we"))]
            if name == "activations":
                for r in range(self.target.rows):
                    m.d.comb += self.act_rdata[r].eq(
                        _read(m, mem, self.act_raddr[r], self.act_ren, f"act{r}"))
            elif name == "weights":
                m.d.comb += self.wgt_rdata.eq(_read(m, mem, self.wgt_raddr, self.wgt_ren, p))
            else:
                m.d.comb += getattr(self, f"{p}_rdata").eq(
                    _read(m, mem, getattr(self, f"{p}_raddr"), 1, p))
        return m
