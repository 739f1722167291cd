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
        byte = inp.payload

        # the header: cmd, p0, address, count (little-endian); address and count then serve
        # as the frame's word address and words-left counters
        hdr = Signal(8 * REQUEST_HEADER)
        cmd, p0 = hdr[0:8], hdr[8:16]
        addr, count = hdr[16:32], hdr[32:48]
        hi = Signal(range(REQUEST_HEADER))
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
        f_cmd, f_mem, f_range, f_len, f_batch, f_busy, f_chk = (Signal(name=n) for n in (
            "f_cmd", "f_mem", "f_range", "f_len", "f_batch", "f_busy", "f_chk"))
        writable = [MEMORY_NAMES[i] in HOST_WRITABLE for i in range(nmem)]
        readable = [MEMORY_NAMES[i] in HOST_READABLE for i in range(nmem)]
        end = addr + count  # 17 bits
        bytes_total = Signal(17 + max(lg))
        m.d.comb += bytes_total.eq(by_mem([count << lg[i] for i in range(nmem)], count))
        # word and byte position, each with its end flag as a register (set a cycle ahead)
        k = Signal(range(max(bpw)))        # byte of the current word
        k_last = Signal()                  # k is the word's last byte
        k_max = Signal(range(max(bpw)))    # bytes per word of the frame's memory - 1
        w_last = Signal()                  # count == 1: the current word is the last
        step_byte = Signal()               # a byte of a word moves (k, k_last)
        with m.If(step_byte):
            m.d.sync += [k.eq(Mux(k_last, 0, k + 1)),
                         k_last.eq(Mux(k_last, k_max == 0, k + 1 == k_max))]
        step_word = Signal()               # a word is done (address and count move)
        with m.If(step_word):
            m.d.sync += [addr.eq(addr + 1), count.eq(count - 1), w_last.eq(count == 2)]

        # ---- response bytes: produced into a register (host_out.payload) a byte ahead -------
        obyte = Signal(8)
        ovalid = Signal()
        m.d.comb += [out.payload.eq(obyte), out.valid.eq(ovalid)]
        load = ~ovalid | out.ready  # the output register is free, or being freed
        status = Signal(4)
        rlen = Signal(16)
        ri = Signal(range(STATUS_LEN + 4))  # response byte (header, then status payload)
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
        with m.Switch(k):
            for i in range(self.read_width // 8):
                with m.Case(i):
                    m.d.comb += read_byte.eq(self.mem_rdata[8 * i:8 * i + 8])

        def emit(value, add=True):
            """Load ``value`` into the output register (and into the checksum)."""
            m.d.sync += [obyte.eq(value), ovalid.eq(1)]
            if add:
                m.d.sync += acc.eq(acc + value)

        @contextmanager
        def state(name):
            with m.State(name):
                yield
                with m.If(self.abort):  # from any state: drop the frame
                    m.d.sync += [self.mem_we.eq(0), ovalid.eq(0)]
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
                kmax = by_mem([b - 1 for b in bpw], 0)
                m.d.sync += [
                    k.eq(0), k_max.eq(kmax), k_last.eq(kmax == 0), w_last.eq(count == 1),
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
                    m.d.sync += self.mem_we.eq(0)
                    m.d.comb += step_word.eq(1)
                    with m.If(w_last):
                        m.next = "CHK"
                with m.Else():
                    m.d.comb += inp.ready.eq(1)
                    with m.If(take):
                        m.d.sync += [shreg.eq(Cat(shreg[8:], byte)), acc.eq(acc + byte)]
                        m.d.comb += step_byte.eq(1)
                        with m.If(k_last):
                            m.d.sync += self.mem_we.eq(ok)
                            with m.If(~ok):  # not written: the word is done at once
                                m.d.comb += step_word.eq(1)
                                with m.If(w_last):
                                    m.next = "CHK"
            with state("CHK"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    m.d.sync += f_chk.eq((acc + byte)[:8] != 0)
                    m.next = "STAT"
            with state("STAT"):  # the status, in the order of protocol.CHECK_ORDER
                m.d.sync += [
                    status.eq(Mux(f_chk, Status.CHECKSUM, Mux(f_cmd, Status.UNKNOWN_COMMAND,
                              Mux(f_mem, Status.MEMORY, Mux(f_range, Status.RANGE,
                                  Mux(f_len, Status.LENGTH, Mux(f_batch, Status.BATCH,
                                      Mux(f_busy, Status.BUSY, Status.OK)))))))),
                    ri.eq(0), k.eq(0), k_last.eq(k_max == 0),
                ]
                m.next = "EXEC"
            with state("EXEC"):
                ok = status == Status.OK
                m.d.sync += [rlen.eq(Mux(ok & is_r, bytes_total,
                                         Mux(ok & is_status, STATUS_LEN, 0))), acc.eq(0)]
                with m.If(ok & is_start):
                    m.d.comb += self.start.eq(1)
                m.next = "RHDR"
            with state("RHDR"):  # 5A, status, length; then the status payload if any
                with m.If(load):
                    emit(fixed_byte, add=False)
                    with m.If(ri != 0):
                        m.d.sync += acc.eq(acc + fixed_byte)
                    m.d.sync += ri.eq(ri + 1)
                    with m.If(ri == 3):
                        with m.If(rlen == 0):
                            m.next = "RCHK"
                        with m.Elif(is_status):
                            m.next = "RSTATUS"
                        with m.Else():
                            m.next = "RWAIT"
            with state("RSTATUS"):
                with m.If(load):
                    emit(fixed_byte)
                    m.d.sync += ri.eq(ri + 1)
                    with m.If(ri == 3 + STATUS_LEN):
                        m.next = "RCHK"
            with state("RWAIT"):  # mem_addr = addr is presented now; the data come next
                with m.If(load):
                    m.d.sync += ovalid.eq(0)
                m.next = "RWORD"
            with state("RWORD"):
                with m.If(load):
                    emit(read_byte)
                    m.d.comb += step_byte.eq(1)
                    with m.If(k_last):
                        m.d.comb += step_word.eq(1)
                        with m.If(w_last):
                            m.next = "RCHK"
                        with m.Else():
                            m.next = "RWAIT"
            with state("RCHK"):
                with m.If(load):
                    emit(-acc, add=False)
                    m.next = "RDONE"
            with state("RDONE"):
                with m.If(load):
                    m.d.sync += ovalid.eq(0)
                    m.next = "SYNC"
        return m
