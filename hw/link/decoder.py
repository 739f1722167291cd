"""Host command decoder: the byte-stream command layer of the accelerator (protocol 2).

Frames and commands are specified in ``docs/host-protocol.md``; the constants and the checks'
order are those of :mod:`xnorflow.hw.link.protocol`, the host side is
:mod:`xnorflow.hw.link.driver`. This layer knows nothing of UARTs: a board top wraps
``host_in`` / ``host_out`` in a UART (:mod:`xnorflow.hw.uart`) and may pulse ``abort`` (e.g.
on a framing error or an inter-byte timeout) to return the decoder to waiting for a sync byte.

Sized for small FPGAs: every request has the same 6-byte header (no length field), the checks
are made once per frame in the cycle after the header (registered flags), words written by
the host shift in at the top of one word register (each memory takes the top bits: no
per-memory multiplexer), a write is a registered pulse in a cycle in which the host stream
waits (so the register is stable), and words read go out through a byte multiplexer on the
memory's read data (held while its bytes leave).
"""

from __future__ import annotations

from contextlib import contextmanager

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ...sw.targets import MEMORY_NAMES, Target
from .protocol import (
    HOST_READABLE,
    HOST_WRITABLE,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    REQUEST_HEADER,
    STATUS_LEN,
    SYNC_REQUEST,
    SYNC_RESPONSE,
    Command,
    Status,
    frame_word_bytes,
)

__all__ = ["HostDecoder"]


def _aw(depth: int) -> int:
    return max(1, (depth - 1).bit_length())


def _any(conds) -> object:
    out = Const(0, 1)
    for c in conds:
        out = out | c
    return out


class HostDecoder(wiring.Component):
    """Parses request frames from ``host_in``, accesses memories, answers on ``host_out``.

    Parameters
    ----------
    target : Target
        Geometry reported by STATUS, memory word widths.
    depths : dict
        Words of each memory (range checks, address width, STATUS).
    write_width, read_width : int
        Bits of the core's ``mem_wdata`` / ``mem_rdata``
        (:func:`~xnorflow.hw.accelerator.host_write_width`, ``host_read_width``).

    Members
    -------
    host_in : In(stream.Signature(8))
        Request bytes. Ready in every cycle of a request except the one after each written
        word (the write itself); not ready while a response is being sent.
    host_out : Out(stream.Signature(8))
        Response bytes.
    abort : In(1)
        Drop the frame in progress (request or response) and wait for a sync byte.
    mem_sel : Out(3), mem_addr : Out, mem_wdata : Out(write_width), mem_we : Out(1)
        Memory access (ids of :data:`~xnorflow.hw.link.protocol.MemoryId`). A written word
        is in the top ``width`` bits of ``mem_wdata``; ``mem_we`` is a register.
    mem_rdata : In(read_width)
        Read data of memory ``mem_sel`` at ``mem_addr`` (one cycle after the address).
    start : Out(1), batch : Out(8)
        A START's pulse and its image count.
    busy, done, error, cycles : In
        The core's status (STATUS reports them; memory access and START need ``~busy``).

    Throughput: one request byte per cycle (plus one cycle per written word); responses one
    byte per cycle plus one cycle per word read. Latency: the response starts 2 cycles
    after the checksum byte.
    """

    def __init__(self, target: Target, depths: dict, write_width: int, read_width: int):
        if not isinstance(target, Target):
            raise TypeError(f"target must be a Target, not {target!r}")
        self.target = target
        self.depths = dict(depths)
        for n in MEMORY_NAMES:
            if not isinstance(self.depths.get(n), int) or self.depths[n] < 1:
                raise ValueError(f"depth of memory {n!r} must be a positive int, "
                                 f"not {self.depths.get(n)!r}")
        self.bpw = [frame_word_bytes(target, i) for i in range(len(MEMORY_NAMES))]
        for n, b in zip(MEMORY_NAMES, self.bpw, strict=True):
            if b & (b - 1):
                raise ValueError(f"memory {n!r}: {b} bytes per word; the decoder needs a "
                                 "power of two")
        self.write_width, self.read_width = write_width, read_width
        #: Address bits presented on ``mem_addr`` (the deepest memory's).
        self.addr_bits = max(_aw(self.depths[n]) for n in MEMORY_NAMES)
        super().__init__({
            "host_in": In(stream.Signature(8)),
            "host_out": Out(stream.Signature(8)),
            "abort": In(1),
            "mem_sel": Out(3),
            "mem_addr": Out(self.addr_bits),
            "mem_wdata": Out(write_width),
            "mem_we": Out(1),
            "mem_rdata": In(read_width),
            "start": Out(1),
            "batch": Out(8),
            "busy": In(1),
            "done": In(1),
            "error": In(4),
            "cycles": In(32),
        })

    def elaborate(self, platform):  # noqa: C901 -- one FSM, kept together for reading
        m = Module()
        t = self.target
        nmem = len(MEMORY_NAMES)
        bpw = self.bpw
        lg = [b.bit_length() - 1 for b in bpw]
        depth = [self.depths[n] for n in MEMORY_NAMES]
        inp, out = self.host_in, self.host_out
        take = inp.valid & inp.ready
        sent = out.valid & out.ready
        byte = inp.payload

        hdr = Signal(8 * REQUEST_HEADER)   # cmd, p0, address, count (little-endian)
        cmd, p0 = hdr[0:8], hdr[8:16]
        addr = Signal(16)                  # the word address (counts up through the frame)
        count = hdr[32:48]
        words = Signal(17)                 # words still to write or read (count, then down)
        hi = Signal(range(REQUEST_HEADER + 1))
        k = Signal(range(max(bpw)))        # byte of the current word
        acc = Signal(8)                    # request: byte sum; response: byte sum so far
        shreg = Signal(self.write_width)
        sel = p0[:3]
        mem_ok_id = p0 < nmem
        m.d.comb += [self.mem_sel.eq(sel), self.mem_addr.eq(addr), self.batch.eq(p0),
                     self.mem_wdata.eq(shreg)]

        def by_mem(values, default):
            """``values[mem]`` for the selected memory (``default`` for another id)."""
            res = default
            for i, v in enumerate(values):
                res = Mux(sel == i, v, res)
            return Mux(mem_ok_id, res, default)

        # ---- the checks, once per frame (registered in the cycle after the header) ----------
        is_w, is_r = cmd == Command.WRITE, cmd == Command.READ
        is_start, is_status = cmd == Command.START, cmd == Command.STATUS
        f_cmd, f_mem, f_range, f_len, f_batch, f_busy = (Signal(name=n) for n in (
            "f_cmd", "f_mem", "f_range", "f_len", "f_batch", "f_busy"))
        writable = [MEMORY_NAMES[i] in HOST_WRITABLE for i in range(nmem)]
        readable = [MEMORY_NAMES[i] in HOST_READABLE for i in range(nmem)]
        end = hdr[16:32] + count  # 17 bits
        bytes_total = Signal(17 + max(lg))
        m.d.comb += bytes_total.eq(by_mem([count << lg[i] for i in range(nmem)], count))
        last_byte = k == by_mem([b - 1 for b in bpw], 0)

        # ---- response bytes --------------------------------------------------------------------
        status = Signal(4)
        rlen = Signal(16)
        ri = Signal(range(STATUS_LEN + 4))  # response byte index (header, then status payload)
        flags = Cat(self.busy, self.done, self.error != 0)
        depth_log2 = [max(0, (d - 1).bit_length()) for d in depth]
        fixed = [SYNC_RESPONSE, status, rlen[:8], rlen[8:],
                 PROTOCOL_VERSION, t.rows, t.cols, t.width, flags, self.error,
                 self.cycles[0:8], self.cycles[8:16], self.cycles[16:24], self.cycles[24:32],
                 *depth_log2]
        assert len(fixed) == 4 + STATUS_LEN
        fixed_byte = Signal(8)
        with m.Switch(ri):
            for i, v in enumerate(fixed):
                with m.Case(i):
                    m.d.comb += fixed_byte.eq(v)
        read_byte = Signal(8)
        rbytes = self.read_width // 8
        with m.Switch(k):
            for i in range(rbytes):
                with m.Case(i):
                    m.d.comb += read_byte.eq(self.mem_rdata[8 * i:8 * i + 8])

        @contextmanager
        def state(name):
            with m.State(name):
                yield
                with m.If(self.abort):  # from any state: drop the frame
                    m.d.sync += self.mem_we.eq(0)
                    m.next = "SYNC"

        with m.FSM():
            with state("SYNC"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take & (byte == SYNC_REQUEST)):
                    m.d.sync += [acc.eq(0), hi.eq(0)]
                    m.next = "HDR"
            with state("HDR"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    m.d.sync += [hdr.eq(Cat(hdr[8:], byte)), acc.eq(acc + byte), hi.eq(hi + 1)]
                    with m.If(hi == REQUEST_HEADER - 1):
                        m.next = "CHECK"
            with state("CHECK"):  # the header is complete: every check, registered
                m.d.sync += [
                    addr.eq(hdr[16:32]), words.eq(count), k.eq(0),
                    f_cmd.eq(~(is_w | is_r | is_start | is_status)),
                    f_mem.eq((is_w & ~by_mem([Const(v) for v in writable], 0))
                             | (is_r & ~by_mem([Const(v) for v in readable], 0))),
                    f_range.eq((is_w | is_r) & by_mem([end > d for d in depth], 1)),
                    f_len.eq(is_r & (bytes_total > MAX_PAYLOAD)),
                    f_batch.eq(is_start & ((p0 == 0) | (p0 > t.rows))),
                    f_busy.eq(self.busy & ~is_status),
                ]
                with m.If(is_w & (count != 0)):
                    m.next = "DATA"
                with m.Else():
                    m.next = "CHK"
            with state("DATA"):  # a WRITE's words: a byte per cycle, a cycle per word
                ok = ~(f_cmd | f_mem | f_range | f_busy)
                with m.If(self.mem_we):  # the word is written in this cycle
                    m.d.sync += [self.mem_we.eq(0), addr.eq(addr + 1)]
                    with m.If(words == 0):
                        m.next = "CHK"
                with m.Else():
                    m.d.comb += inp.ready.eq(1)
                    with m.If(take):
                        m.d.sync += [shreg.eq(Cat(shreg[8:], byte)), acc.eq(acc + byte),
                                     k.eq(Mux(last_byte, 0, k + 1))]
                        with m.If(last_byte):
                            m.d.sync += [self.mem_we.eq(ok), words.eq(words - 1)]
                            with m.If(~ok):
                                m.d.sync += addr.eq(addr + 1)
                                with m.If(words == 1):
                                    m.next = "CHK"
            with state("CHK"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    chk_bad = (acc + byte)[:8] != 0
                    st = Mux(chk_bad, Status.CHECKSUM, Mux(f_cmd, Status.UNKNOWN_COMMAND,
                             Mux(f_mem, Status.MEMORY, Mux(f_range, Status.RANGE,
                                 Mux(f_len, Status.LENGTH, Mux(f_batch, Status.BATCH,
                                     Mux(f_busy, Status.BUSY, Status.OK)))))))
                    m.d.sync += [status.eq(st), ri.eq(0), k.eq(0), acc.eq(0)]
                    m.next = "EXEC"
            with state("EXEC"):
                ok = status == Status.OK
                m.d.sync += rlen.eq(Mux(ok & is_r, bytes_total,
                                        Mux(ok & is_status, STATUS_LEN, 0)))
                with m.If(ok & is_start):
                    m.d.comb += self.start.eq(1)
                m.next = "RHDR"
            with state("RHDR"):  # 5A, status, length; then the status payload if any
                m.d.comb += [out.valid.eq(1), out.payload.eq(fixed_byte)]
                with m.If(sent):
                    m.d.sync += [ri.eq(ri + 1), acc.eq(Mux(ri == 0, 0, acc + fixed_byte))]
                    with m.If(ri == 3):
                        with m.If(rlen == 0):
                            m.next = "RCHK"
                        with m.Elif(is_status):
                            m.next = "RSTATUS"
                        with m.Else():
                            m.next = "RWAIT"
            with state("RSTATUS"):
                m.d.comb += [out.valid.eq(1), out.payload.eq(fixed_byte)]
                with m.If(sent):
                    m.d.sync += [ri.eq(ri + 1), acc.eq(acc + fixed_byte)]
                    with m.If(ri == 3 + STATUS_LEN):
                        m.next = "RCHK"
            with state("RWAIT"):  # mem_addr = addr is presented now; the data come next
                m.next = "RWORD"
            with state("RWORD"):
                m.d.comb += [out.valid.eq(1), out.payload.eq(read_byte)]
                with m.If(sent):
                    m.d.sync += [acc.eq(acc + read_byte), k.eq(Mux(last_byte, 0, k + 1))]
                    with m.If(last_byte):
                        m.d.sync += [addr.eq(addr + 1), words.eq(words - 1)]
                        with m.If(words == 1):
                            m.next = "RCHK"
                        with m.Else():
                            m.next = "RWAIT"
            with state("RCHK"):
                m.d.comb += [out.valid.eq(1), out.payload.eq(-acc)]
                with m.If(sent):
                    m.next = "SYNC"
        return m
