"""The accelerator: memories + sequencer + array + output stage, and the host command decoder.

:class:`AcceleratorCore` is everything but the byte protocol: a memory port for the host
(writes of whole words, reads of activations and scores) and the run control. Its datapath is
one pipeline without a stall: the sequencer plays the program's tables into the memories'
read ports, the read data go straight into the array, the rows leaving the array go through
the output stage into the activation (or scores) memory (``docs/accelerator.md``).
:class:`Accelerator` puts the host decoder (:mod:`xnorflow.hw.link`) in front of it.

One design runs any network that fits its memories: the images given at construction are
the memories' initial contents, and every memory but ``scores`` can be rewritten by the host
while the sequencer is idle.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.images import MemoryImage
from ..sw.targets import MEMORY_NAMES, Target
from .array import SystolicArray
from .link.decoder import HostDecoder
from .link.protocol import HOST_READABLE, HOST_WRITABLE
from .memories import AcceleratorMemories, addr_width, memory_depths
from .post import OutputStage, soon_lead
from .sequencer import Sequencer

__all__ = ["Accelerator", "AcceleratorCore", "host_read_width", "host_write_width"]


def host_write_width(target: Target) -> int:
    """Bits of the widest word the host writes (the decoder's word register)."""
    return max(target.word_bits(n) for n in HOST_WRITABLE)


def host_read_width(target: Target) -> int:
    """Bits of the widest word the host reads (activations or scores)."""
    return max(target.word_bits(n) for n in HOST_READABLE)


class AcceleratorCore(wiring.Component):
    """The accelerator without its host protocol.

    Parameters
    ----------
    target : Target
        Geometry ``R x C x W``, accumulator width, popcount pipelining and memory capacities
        (unlimited capacities of the ``sim`` target become the smallest power of two holding
        the images, :func:`~xnorflow.sw.program.memory_depths`).
    memories : list of MemoryImage, optional
        Initial ``program``, ``weights`` and ``thresholds`` contents (from
        :func:`xnorflow.sw.program.build_memories`; an ``activations`` image is accepted
        too). Without images the memories start at zero and the host loads a model.
    depths : dict, optional
        Memory depths (default :func:`~xnorflow.sw.program.memory_depths` of the images).

    Members
    -------
    mem_sel : In(3)
        Memory id (:data:`~xnorflow.sw.targets.MEMORY_NAMES` order) of the host's access.
    mem_addr : In(address bits of the deepest memory)
        Word address of the host's access (the low bits of the selected memory's).
    mem_wdata : In(host_write_width), mem_we : In(1)
        A word write, the word in the top bits of ``mem_wdata`` (from registers: the core
        adds no logic in front of the write ports but the owner multiplexer); ignored while
        ``busy`` and for ``scores``.
    mem_rdata : Out(host_read_width)
        Read data of ``activations`` or ``scores`` (32-bit lanes), one cycle after
        ``mem_addr`` (three with ``Target.mem_regs = 2``; while idle).
    start : In(1), batch : In(8)
        Start a run of ``batch`` images (0 means 1).
    busy, done, error, cycles : Out
        The sequencer's status (:class:`~xnorflow.hw.sequencer.Sequencer`).

    A run takes :func:`xnorflow.sw.perf.program_cycles` cycles.
    """

    def __init__(self, target: Target, memories: list[MemoryImage] | None = None,
                 depths: dict | None = None):
        if not isinstance(target, Target):
            raise TypeError(f"target must be a Target, not {target!r}")
        self.target = target
        self.images = list(memories or [])
        self.depths = dict(depths) if depths else memory_depths(target, self.images)
        self.memories = AcceleratorMemories(target, self.depths, self.images)
        self.sequencer = Sequencer(target, self.depths)
        self.array = SystolicArray(target.rows, target.cols, target.width, target.acc_bits,
                                   target.popcount_levels, target.mem_regs,
                                   target.weight_rows,
                                   soon_lead(target) if target.weight_rows > 1 else 0)
        self.output = OutputStage(target, self.depths)
        self.addr_bits = max(addr_width(d) for d in self.depths.values())
        super().__init__({
            "mem_sel": In(3),
            "mem_addr": In(self.addr_bits),
            "mem_wdata": In(host_write_width(target)),
            "mem_we": In(1),
            "mem_rdata": Out(host_read_width(target)),
            "start": In(1),
            "batch": In(8),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(4),
            "cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.memories = mem = self.memories
        m.submodules.sequencer = seq = self.sequencer
        m.submodules.array = arr = self.array
        m.submodules.output = out = self.output
        t = self.target
        R, C = t.rows, t.cols
        busy = seq.busy
        m.d.comb += [
            seq.start.eq(self.start), seq.batch.eq(self.batch),
            self.busy.eq(busy), self.done.eq(seq.done), self.error.eq(seq.error),
            self.cycles.eq(seq.cycles),
            # the pipeline: sequencer -> memories -> array -> output stage -> memories
            mem.prog_a_raddr.eq(seq.prog_a_raddr), seq.prog_a_rdata.eq(mem.prog_a_rdata),
            mem.prog_b_raddr.eq(seq.prog_b_raddr), seq.prog_b_rdata.eq(mem.prog_b_rdata),
            mem.prog_b_ren.eq(seq.prog_b_ren),
            *([mem.prog_c_raddr.eq(seq.prog_c_raddr), seq.prog_c_rdata.eq(mem.prog_c_rdata)]
              if t.mem_regs == 2 else []),
            mem.wgt_raddr.eq(seq.wgt_raddr),
            *([mem.wgt_split.eq(seq.wgt_own), out.tile_soon.eq(arr.tile_soon)]
              if t.weight_rows > 1 else []),
            arr.wgt.eq(mem.wgt_rdata), arr.ctl.eq(seq.ctl),
            out.res.eq(arr.res), out.tile_done.eq(arr.tile_done),
            out.desc.eq(seq.desc), out.layer_start.eq(seq.layer_start),
            out.clear.eq(seq.clear),
            mem.thr_raddr.eq(out.thr_raddr), out.thr_rdata.eq(mem.thr_rdata),
            mem.score_waddr.eq(out.score_waddr), mem.score_wdata.eq(out.score_wdata),
            mem.score_we.eq(out.score_we),
        ]
        for r in range(1, R):
            m.d.comb += mem.act_raddr[r].eq(seq.act_raddr[r])
        # Target.mem_regs = 2: one more register on every activation word beside its RAM (the
        # weights' is in the memories, in front of their bank multiplexer)
        for r in range(R):
            if t.mem_regs == 2:
                q = Signal(t.width, name=f"act_mem_q{r}", reset_less=True)
                m.d.sync += q.eq(mem.act_rdata[r])
                m.d.comb += arr.act[r].eq(q)
            else:
                m.d.comb += arr.act[r].eq(mem.act_rdata[r])
        ids = {name: i for i, name in enumerate(MEMORY_NAMES)}
        sel, addr = self.mem_sel, self.mem_addr

        def host_we(name):
            return self.mem_we & ~busy & (sel == ids[name])

        # host writes (the sequencer never writes these three); a word is in the top bits of
        # mem_wdata (the decoder shifts bytes in at the top)
        def top(name):
            return self.mem_wdata[len(self.mem_wdata) - t.word_bits(name):]

        for name, p in (("program", "prog"), ("weights", "wgt"), ("thresholds", "thr")):
            m.d.comb += [getattr(mem, f"{p}_waddr").eq(addr),
                         getattr(mem, f"{p}_wdata").eq(top(name)),
                         getattr(mem, f"{p}_we").eq(host_we(name))]
        # activations: the output stage writes while busy, the host otherwise (whole words)
        lanes = t.width // C
        m.d.comb += [mem.act_raddr[0].eq(Mux(busy, seq.act_raddr[0], addr)),
                     mem.score_raddr.eq(addr)]
        write = [
            (mem.act_waddr, Mux(busy, out.act_waddr, addr)),
            (mem.act_wdata, Mux(busy, out.act_wdata, top("activations"))),
            (mem.act_wen, Mux(busy, out.act_wen,
                              Mux(host_we("activations"), (1 << lanes) - 1, 0))),
        ]
        # Target.mem_regs >= 1: the write port's address, data and enables from one more
        # register (writes land a cycle later; the sequencer's drain waits for it)
        for port, value in write:
            if t.mem_regs:
                q = Signal.like(port, name=f"{port.name}_q", reset_less=port is not mem.act_wen)
                m.d.sync += q.eq(value)
                m.d.comb += port.eq(q)
            else:
                m.d.comb += port.eq(value)
        # host reads: activations (port 0) or scores; the selection is registered with the
        # address, one cycle ahead of the data
        was_scores = Signal()
        m.d.sync += was_scores.eq(sel == ids["scores"])
        if t.mem_regs != 2:
            rdata = Mux(was_scores, mem.score_rdata, mem.act_rdata[0])
        else:
            # two more registers (read latency 3): each read word straight after its RAM, then
            # the selected word (the RAMs lie far from the host decoder: one register of
            # either kind alone left 5.0-5.9 ns of routing on a path)
            act0 = Signal(t.width, name="act0_rdata_q", reset_less=True)
            score = Signal.like(mem.score_rdata, name="score_rdata_q", reset_less=True)
            sel_q = Signal(name="was_scores_q")
            q = Signal.like(self.mem_rdata, name="mem_rdata_q", reset_less=True)
            m.d.sync += [act0.eq(mem.act_rdata[0]), score.eq(mem.score_rdata),
                         sel_q.eq(was_scores), q.eq(Mux(sel_q, score, act0))]
            rdata = q
        m.d.comb += self.mem_rdata.eq(rdata)
        return m


class Accelerator(wiring.Component):
    """The accelerator with its byte-stream host interface.

    Parameters
    ----------
    target : Target
        See :class:`AcceleratorCore`.
    memories : list of MemoryImage, optional
        See :class:`AcceleratorCore`.

    Members
    -------
    host_in : In(stream.Signature(8))
        Request bytes (frames of ``docs/host-protocol.md``).
    host_out : Out(stream.Signature(8))
        Response bytes.
    abort : In(1)
        Return the command decoder to waiting for a sync byte (for a UART wrapper's framing
        errors or timeouts); a run in progress continues.
    busy : Out(1)
        The sequencer is running a network.
    done : Out(1)
        The last run finished and its result can be read.

    Throughput and latency: :class:`AcceleratorCore` (compute) and
    :class:`~xnorflow.hw.link.decoder.HostDecoder` (one byte per cycle each way).
    """

    def __init__(self, target: Target, memories: list[MemoryImage] | None = None):
        self.core = AcceleratorCore(target, memories)
        self.target = target
        self.depths = self.core.depths
        self.images = self.core.images
        self.memories = self.core.memories
        self.host = HostDecoder(target, self.depths, host_write_width(target),
                                host_read_width(target))
        super().__init__({
            "host_in": In(stream.Signature(8)),
            "host_out": Out(stream.Signature(8)),
            "abort": In(1),
            "busy": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.host = host = self.host
        wiring.connect(m, wiring.flipped(self.host_in), host.host_in)
        wiring.connect(m, host.host_out, wiring.flipped(self.host_out))
        m.d.comb += [
            host.abort.eq(self.abort),
            core.mem_sel.eq(host.mem_sel), core.mem_addr.eq(host.mem_addr),
            core.mem_wdata.eq(host.mem_wdata), core.mem_we.eq(host.mem_we),
            host.mem_rdata.eq(core.mem_rdata),
            core.start.eq(host.start), core.batch.eq(host.batch),
            host.busy.eq(core.busy), host.done.eq(core.done), host.error.eq(core.error),
            host.cycles.eq(core.cycles),
            self.busy.eq(core.busy), self.done.eq(core.done),
        ]
        return m
