"""The accelerator top: memories + sequencer + tile engine + host command decoder.

One design runs any network that fits its memories: the images given at construction are
the memories' initial contents, and every memory can be rewritten through the host
interface (``docs/host-protocol.md``) while the sequencer is idle.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.images import MemoryImage
from ..sw.targets import MEMORY_NAMES, Target
from .link.decoder import HostDecoder
from .memories import AcceleratorMemories, memory_depths
from .sequencer import Sequencer

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """XNOR-popcount accelerator with a byte-stream host interface.

    Parameters
    ----------
    target : Target
        Geometry ``R x C x W`` and memory capacities (unlimited capacities of the ``sim``
        target become the smallest power of two holding the images, at least
        :data:`~xnorflow.hw.memories.DEFAULT_DEPTHS`).
    memories : list of MemoryImage, optional
        Initial ``program``, ``weights`` and ``thresholds`` contents (from
        :func:`xnorflow.sw.program.build_memories`; an ``activations`` image is accepted
        too, e.g. a preloaded input). Without images the memories start at zero and the
        host loads a model over ``host_in``.

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

    Throughput and latency: see :class:`~xnorflow.hw.sequencer.Sequencer` (compute) and
    :class:`~xnorflow.hw.link.decoder.HostDecoder` (one byte per cycle each way);
    :func:`xnorflow.sw.perf.predict_network_cycles` predicts a run's cycle count.
    """

    def __init__(self, target: Target, memories: list[MemoryImage] | None = None):
        if not isinstance(target, Target):
            raise TypeError(f"target must be a Target, not {target!r}")
        self.target = target
        self.images = list(memories or [])
        self.depths = memory_depths(target, self.images)
        self.memories = AcceleratorMemories(target, self.depths, self.images)
        self.sequencer = Sequencer(target, self.depths)
        self.host = HostDecoder(target, self.depths)
        super().__init__({
            "host_in": In(stream.Signature(8)),
            "host_out": Out(stream.Signature(8)),
            "abort": In(1),
            "busy": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.memories = mem = self.memories
        m.submodules.sequencer = seq = self.sequencer
        m.submodules.host = host = self.host
        R = self.target.rows

        wiring.connect(m, wiring.flipped(self.host_in), host.host_in)
        wiring.connect(m, host.host_out, wiring.flipped(self.host_out))
        busy = seq.busy
        m.d.comb += [
            host.abort.eq(self.abort),
            seq.start.eq(host.start),
            host.busy.eq(busy),
            host.done.eq(seq.done),
            host.error.eq(seq.error),
            host.cycles.eq(seq.cycles),
            host.result.eq(seq.result),
            host.results.eq(seq.results),
            seq.batch.eq(host.batch),
            host.n_classes.eq(seq.n_classes),
            self.busy.eq(busy),
            self.done.eq(seq.done),
        ]
        ids = {name: i for i, name in enumerate(MEMORY_NAMES)}

        def hwe(name):
            return host.mem_we & ~busy & (host.mem_sel == ids[name])

        # reads: the sequencer owns every port while busy, the host otherwise
        m.d.comb += [
            mem.prog_raddr.eq(Mux(busy, seq.prog_raddr, host.mem_addr)),
            mem.wgt_raddr.eq(Mux(busy, seq.wgt_raddr, host.mem_addr)),
            mem.wgt_ren.eq(Mux(busy, seq.wgt_ren, 1)),
            mem.thr_raddr.eq(Mux(busy, seq.thr_raddr, host.mem_addr)),
            mem.act_raddr[0].eq(Mux(busy, seq.act_raddr[0], host.mem_addr)),
            mem.act_ren.eq(Mux(busy, seq.act_ren, 1)),
            mem.score_raddr.eq(host.mem_addr),
            seq.prog_rdata.eq(mem.prog_rdata),
            seq.wgt_rdata.eq(mem.wgt_rdata),
            seq.thr_rdata.eq(mem.thr_rdata),
            seq.act_rdata.eq(mem.act_rdata),
        ]
        for r in range(1, R):
            m.d.comb += mem.act_raddr[r].eq(seq.act_raddr[r])
        # host reads: bit k comes from the memories at least k + 1 bits wide only (the host
        # ignores the bits above the selected memory's width), the widest without a test
        rdata = {"program": mem.prog_rdata, "weights": mem.wgt_rdata,
                 "thresholds": mem.thr_rdata, "activations": mem.act_rdata[0],
                 "scores": mem.score_rdata}
        sel = host.mem_sel

        def tree(cands, b):
            """Binary multiplexer on the id bits from bit ``b`` down; ids that are not
            candidates are don't-cares, so a split with one side empty costs nothing."""
            if len(cands) == 1:
                return next(iter(cands.values()))
            ones = {i: v for i, v in cands.items() if i >> b & 1}
            zeros = {i: v for i, v in cands.items() if not i >> b & 1}
            if not ones or not zeros:
                return tree(ones or zeros, b - 1)
            return Mux(sel[b], tree(ones, b - 1), tree(zeros, b - 1))

        cuts = sorted({len(v) for v in rdata.values()})
        for lo, hi in zip([0, *cuts[:-1]], cuts, strict=True):
            cands = {ids[n]: v[lo:hi] for n, v in rdata.items() if len(v) >= hi}
            m.d.comb += host.mem_rdata[lo:hi].eq(tree(cands, len(sel) - 1))
        # writes
        for name, p in (("program", "prog"), ("weights", "wgt"), ("thresholds", "thr")):
            m.d.comb += [getattr(mem, f"{p}_waddr").eq(host.mem_addr),
                         getattr(mem, f"{p}_wdata").eq(host.mem_wdata),
                         getattr(mem, f"{p}_we").eq(hwe(name))]
        m.d.comb += [
            mem.act_waddr.eq(Mux(busy, seq.act_waddr, host.mem_addr)),
            mem.act_wdata.eq(Mux(busy, seq.act_wdata, host.mem_wdata)),
            mem.act_we.eq(Mux(busy, seq.act_we, hwe("activations"))),
            mem.score_waddr.eq(seq.score_waddr),
            mem.score_wdata.eq(seq.score_wdata),
            mem.score_we.eq(seq.score_we),
        ]
        return m
