"""Host command decoder: the byte-stream command layer of the accelerator (protocol 2).

Frames and commands are specified in ``docs/host-protocol.md``; the constants and the checks'
order are those of :mod:`xnorflow.hw.link.protocol`, the host side is
:mod:`xnorflow.hw.link.driver`. This layer knows nothing of UARTs: a board top wraps
``host_in`` / ``host_out`` in a UART (:mod:`xnorflow.hw.uart`) and may pulse ``abort`` (e.g.
on a framing error or an inter-byte timeout) to return the decoder to waiting for a sync byte.

Sized for small FPGAs: every request has the same 6-byte header (no length field), the checks
are made once per frame in the three cycles after the header (registered flags), words written by
the host shift in at the top of one word register (each memory takes the top bits: no
per-memory multiplexer), a write is a registered pulse in a cycle in which the host stream
waits (so the register is stable), and words read go out through a byte multiplexer on the
memory's read data (held while its bytes leave).
"""

from __future__ import annotations

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
        Request bytes. Ready in every cycle of a request except the three after the header
        (the checks) and the one after each written word (the write itself); not ready
        while a response is being sent.
    host_out : Out(stream.Signature(8))
        Response bytes.
    abort : In(1)
        Drop the frame in progress (request or response) and wait for a sync byte.
    mem_sel : Out(3), mem_addr : Out, mem_wdata : Out(write_width), mem_we : Out(1)
        Memory access (ids of :data:`~xnorflow.hw.link.protocol.MemoryId`). A written word
        is in the top ``width`` bits of ``mem_wdata``; ``mem_we`` is a register.
    mem_rdata : In(read_width)
        Read data of memory ``mem_sel`` at ``mem_addr`` (one cycle after the address, three
        with ``Target.mem_regs = 2``).
    start : Out(1), batch : Out(8)
        A START's pulse and its image count.
    busy, done, error, cycles : In
        The core's status (STATUS reports them; memory access and START need ``~busy``).

    Throughput: one request byte per cycle (plus three cycles after the header and one per
    written word); responses one byte per three cycles (each byte is picked in two
    registered stages) plus one cycle per word read (two with ``mem_regs = 2``). Latency:
    the response's first byte is valid 5 cycles after the checksum byte is taken
    (docs/host-protocol.md). A UART at
    1 Mbaud moves a byte in 10 us, hundreds of cycles: neither figure limits a link.
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
        byte = inp.payload

        # the header: cmd, p0, address, count (little-endian); address and count then serve
        # as the frame's word address and words-left counters
        hdr = Signal(8 * REQUEST_HEADER)
        p0 = hdr[8:16]  # (the command byte, hdr[0:8], is decoded as it arrives)
        addr, count = hdr[16:32], hdr[32:48]
        hi = Signal(range(REQUEST_HEADER))
        acc = Signal(8)                    # the request's byte sum (after the sync byte)
        racc = Signal(8)                   # the response's byte sum so far
        shreg = Signal(self.write_width)
        sel = p0[:3]
        mem_ok_id = p0 < nmem
        m.d.comb += [self.mem_sel.eq(sel), self.mem_addr.eq(addr), self.batch.eq(p0),
                     self.mem_wdata.eq(shreg)]

        def by_mem(values, default):
            """``values[mem]`` for the selected memory (``default`` for another id): a
            balanced multiplexer tree on the id bits (ids without a memory fold away)."""
            def tree(ids, b):
                ids = [i for i in ids if i < nmem] or [None]
                if len(ids) == 1:
                    return default if ids[0] is None else values[ids[0]]
                ones = [i for i in ids if i >> b & 1]
                zeros = [i for i in ids if not i >> b & 1]
                if not ones or not zeros:
                    return tree(ones or zeros, b - 1)
                return Mux(sel[b], tree(ones, b - 1), tree(zeros, b - 1))
            return Mux(mem_ok_id, tree(list(range(8)), 2), default)

        # ---- the checks, once per frame (registered in the three cycles after the header) ---
        # the command's and the memory id's decodes are registered as their bytes arrive
        c_w, c_r, c_start, c_status = (Signal(name=n) for n in (
            "c_w", "c_r", "c_start", "c_status"))
        id_w, id_r = Signal(name="id_writable"), Signal(name="id_readable")
        is_w, is_r, is_start, is_status = c_w, c_r, c_start, c_status
        rlen_zero = Signal()  # the response has no payload (registered with rlen)
        f_cmd, f_mem, f_range, f_len, f_batch, f_busy, f_chk, f_ok = (Signal(name=n) for n in (
            "f_cmd", "f_mem", "f_range", "f_len", "f_batch", "f_busy", "f_chk", "f_ok"))
        writable = [MEMORY_NAMES[i] in HOST_WRITABLE for i in range(nmem)]
        readable = [MEMORY_NAMES[i] in HOST_READABLE for i in range(nmem)]
        end = Signal(17)                   # address + count, registered in the first cycle
        bytes_total = Signal(17 + max(lg))
        has_data = Signal()                # a WRITE of at least one word
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
        start = Signal()                   # a registered pulse
        m.d.sync += start.eq(0)
        m.d.comb += self.start.eq(start)

        # ---- response bytes: a two-byte queue in front of host_out ---------------------------
        # the state machine fills `nb` whenever it is empty (a register: its decisions never
        # wait on host_out.ready); `nb` moves to the output register `obyte` when that is free
        # or leaving. The checksum adds each byte as it leaves (from the register).
        obyte, nb = Signal(8, name="obyte"), Signal(8, name="nb")
        ovalid, nb_valid = Signal(), Signal()
        ocnt, nb_cnt = Signal(), Signal()  # the byte counts in the checksum
        m.d.comb += [out.payload.eq(obyte), out.valid.eq(ovalid)]
        sent = ovalid & out.ready
        with m.If(sent & ocnt):
            m.d.sync += racc.eq(racc + obyte)
        with m.If(nb_valid & (~ovalid | out.ready)):
            m.d.sync += [obyte.eq(nb), ocnt.eq(nb_cnt), ovalid.eq(1), nb_valid.eq(0)]
        with m.Elif(sent):
            m.d.sync += ovalid.eq(0)
        free = ~nb_valid
        idle_out = ~nb_valid & ~ovalid     # every queued byte has left (and is counted)
        status = Signal(4)
        rlen = Signal(16)
        ri = Signal(range(STATUS_LEN + 4))  # response byte (header, then status payload)
        # the bytes a response sends but memory words (constants and live values: status,
        # length, flags, error, cycles), picked in two registered stages
        flags = Cat(self.busy, self.done, self.error != 0, t.weight_rows > 1)
        depth_log2 = [max(0, (d - 1).bit_length()) for d in depth]
        fixed = [SYNC_RESPONSE, status, rlen[:8], rlen[8:],
                 PROTOCOL_VERSION, t.rows, t.cols, t.width, flags, self.error,
                 self.cycles[0:8], self.cycles[8:16], self.cycles[16:24], self.cycles[24:32],
                 *depth_log2]
        assert len(fixed) == 4 + STATUS_LEN
        # stage 1: per group of four indices the byte of index ri[:2] (constants fold into
        # the multiplexer); stage 2: the group ri[2:] (`pick_fixed`)
        fgroups = -(-len(fixed) // 4)
        fix_group = [Signal(8, name=f"fix_group{j}") for j in range(fgroups)]
        for j in range(fgroups):
            with m.Switch(ri[:2]):
                for i in range(4):
                    if 4 * j + i < len(fixed):
                        with m.Case(i):
                            m.d.sync += fix_group[j].eq(fixed[4 * j + i])
        pick_fixed = Signal(8)
        with m.Switch(ri[2:]):
            for j in range(fgroups):
                with m.Case(j):
                    m.d.sync += pick_fixed.eq(fix_group[j])
        # a memory word's byte: groups of four bytes first, then the group
        rbytes = self.read_width // 8
        groups = -(-rbytes // 4)
        stage_group = [Signal(8, name=f"stage_group{j}") for j in range(groups)]
        for j in range(groups):
            with m.Switch(k[:2]):
                for i in range(4):
                    if 4 * j + i < rbytes:
                        with m.Case(i):
                            m.d.sync += stage_group[j].eq(
                                self.mem_rdata[8 * (4 * j + i):8 * (4 * j + i) + 8])
        pick_read = Signal(8)
        if groups == 1:
            m.d.comb += pick_read.eq(stage_group[0])
        else:
            with m.Switch(k[2:]):
                for j in range(groups):
                    with m.Case(j):
                        m.d.comb += pick_read.eq(stage_group[j])
        settled = Signal(2)  # cycles since the selection (ri, k) moved: 2 = its byte is ready

        def emit(value, count=True):
            """Queue ``value`` (in the checksum unless ``count`` is false)."""
            m.d.sync += [nb.eq(value), nb_cnt.eq(count), nb_valid.eq(1), settled.eq(0)]

        ready2 = settled == 2
        with m.If(settled != 2):
            m.d.sync += settled.eq(settled + 1)

        # ---- the frame state machine, one-hot: every state test is one flip-flop ----------
        names = ("SYNC", "HDR", "CHECK", "CHECK2", "CHECK3", "DATA", "CHK", "STAT", "EXEC", "RHDR",
                 "RSTATUS", "RWAIT", "RWORD", "RCHK", "RDONE")
        st = {n: Signal(name=f"st_{n.lower()}", init=int(n == "SYNC")) for n in names}

        def go(frm, to):
            m.d.sync += [st[frm].eq(0), st[to].eq(1)]

        wdone = Signal()  # a word's last byte came: it is written (if ok) in this cycle
        m.d.comb += inp.ready.eq(st["SYNC"] | st["HDR"] | st["CHK"] | (st["DATA"] & ~wdone))
        # every request byte after the sync byte goes into the sum
        # (each state's own take: `ready` is a constant 1 in SYNC, HDR and CHK, so their
        # enables do not go through the whole `ready` expression)
        valid = inp.valid
        with m.If(valid & (st["HDR"] | st["CHK"] | (st["DATA"] & ~wdone))):
            m.d.sync += acc.eq(acc + byte)
        with m.If(st["SYNC"]):  # (not waiting for the byte compare: short enable paths)
            m.d.sync += [acc.eq(0), hi.eq(0)]
        with m.If(st["SYNC"] & valid & (byte == SYNC_REQUEST)):
            go("SYNC", "HDR")
        with m.If(st["HDR"] & valid):
            m.d.sync += [hdr.eq(Cat(hdr[8:], byte)), hi.eq(hi + 1)]
            with m.If(hi == 0):  # the command byte
                m.d.sync += [c_w.eq(byte == Command.WRITE), c_r.eq(byte == Command.READ),
                             c_start.eq(byte == Command.START),
                             c_status.eq(byte == Command.STATUS)]
            with m.If(hi == 1):  # p0: the memory id of a WRITE or READ
                m.d.sync += [id_w.eq(0), id_r.eq(0)]
                with m.Switch(byte):
                    for i in range(nmem):
                        with m.Case(i):
                            m.d.sync += [id_w.eq(int(writable[i])), id_r.eq(int(readable[i]))]
            with m.If(hi == REQUEST_HEADER - 1):
                go("HDR", "CHECK")
        with m.If(st["CHECK"]):  # the header is complete: the sums, the per-memory values
            m.d.sync += [
                end.eq(addr + count),
                bytes_total.eq(by_mem([count << lg[i] for i in range(nmem)], count)),
                k.eq(0), k_max.eq(by_mem([b - 1 for b in bpw], 0)), w_last.eq(count == 1),
                has_data.eq(is_w & (count != 0)),
                f_cmd.eq(~(is_w | is_r | is_start | is_status)),
                f_mem.eq((is_w & ~id_w) | (is_r & ~id_r)),
                f_batch.eq(is_start & ((p0 == 0) | (p0 > t.rows))),
                f_busy.eq(self.busy & ~is_status),
            ]
            go("CHECK", "CHECK2")
        over = Signal(nmem)  # end > depth, per memory
        with m.If(st["CHECK2"]):  # the compares on the sums
            m.d.sync += [
                over.eq(Cat(*(end > d for d in depth))),
                f_len.eq(c_r & (bytes_total > MAX_PAYLOAD)), k_last.eq(k_max == 0),
            ]
            go("CHECK2", "CHECK3")
        with m.If(st["CHECK3"]):  # the selected memory's range; may a WRITE write its words?
            range_bad = (c_w | c_r) & by_mem([over[i] for i in range(nmem)], 1)
            m.d.sync += [f_range.eq(range_bad),
                         f_ok.eq(~(f_cmd | f_mem | range_bad | f_busy))]
            with m.If(has_data):
                go("CHECK3", "DATA")
            with m.Else():
                go("CHECK3", "CHK")
        with m.If(st["DATA"]):  # a WRITE's words: a byte per cycle, a cycle per word
            with m.If(wdone):
                m.d.sync += [self.mem_we.eq(0), wdone.eq(0)]
                m.d.comb += step_word.eq(1)
                with m.If(w_last):
                    go("DATA", "CHK")
            with m.Elif(valid):  # (wdone is low here: ready is high)
                m.d.sync += shreg.eq(Cat(shreg[8:], byte))
                m.d.comb += step_byte.eq(1)
                with m.If(k_last):
                    m.d.sync += [self.mem_we.eq(f_ok), wdone.eq(1)]
        with m.If(st["CHK"] & valid):
            m.d.sync += f_chk.eq((acc + byte)[:8] != 0)
            go("CHK", "STAT")
        with m.If(st["STAT"]):  # the status, in the order of protocol.CHECK_ORDER
            m.d.sync += [
                status.eq(Mux(f_chk, Status.CHECKSUM, Mux(f_cmd, Status.UNKNOWN_COMMAND,
                          Mux(f_mem, Status.MEMORY, Mux(f_len, Status.LENGTH,
                              Mux(f_range, Status.RANGE, Mux(f_batch, Status.BATCH,
                                  Mux(f_busy, Status.BUSY, Status.OK)))))))),
                ri.eq(0), k.eq(0), k_last.eq(k_max == 0), settled.eq(0),
            ]
            go("STAT", "EXEC")
        with m.If(st["EXEC"]):
            ok = status == Status.OK
            m.d.sync += [rlen.eq(Mux(ok & c_r, bytes_total,
                                     Mux(ok & c_status, STATUS_LEN, 0))),
                         rlen_zero.eq(~(ok & ((c_r & (bytes_total != 0)) | c_status))),
                         racc.eq(0), start.eq(ok & c_start)]
            go("EXEC", "RHDR")
        with m.If(st["RHDR"]):  # 5A, status, length; then the status payload if any
            with m.If(free & ready2):
                emit(pick_fixed, count=ri != 0)
                m.d.sync += ri.eq(ri + 1)
                with m.If(ri == 3):
                    with m.If(rlen_zero):
                        go("RHDR", "RCHK")
                    with m.Elif(c_status):
                        go("RHDR", "RSTATUS")
                    with m.Else():
                        go("RHDR", "RWAIT")
        with m.If(st["RSTATUS"]):
            with m.If(free & ready2):
                emit(pick_fixed)
                m.d.sync += ri.eq(ri + 1)
                with m.If(ri == 3 + STATUS_LEN):
                    go("RSTATUS", "RCHK")
        with m.If(st["RWAIT"]):  # mem_addr = addr is presented now; the data come next
            # (the first byte leaves 3 cycles after RWAIT, picked from stage_group, which
            # needs the word 2 cycles after RWAIT; with mem_regs = 2 the core registers the
            # word twice more: settled counts 3, 0, 1, 2, a cycle more)
            m.d.sync += settled.eq(3 if t.mem_regs == 2 else 0)
            go("RWAIT", "RWORD")
        with m.If(st["RWORD"]):
            with m.If(free & ready2):
                emit(pick_read)
                m.d.comb += step_byte.eq(1)
                with m.If(k_last):
                    m.d.comb += step_word.eq(1)
                    with m.If(w_last):
                        go("RWORD", "RCHK")
                    with m.Else():
                        go("RWORD", "RWAIT")
        with m.If(st["RCHK"] & idle_out):  # once every byte before it has left (and counted)
            emit(-racc, count=False)
            go("RCHK", "RDONE")
        with m.If(st["RDONE"] & idle_out):
            go("RDONE", "SYNC")
        abort = Signal()  # registered: the bridge's abort is logic on its counters
        m.d.sync += abort.eq(self.abort)
        with m.If(abort):  # from any state: drop the frame
            m.d.sync += [self.mem_we.eq(0), wdone.eq(0), ovalid.eq(0), nb_valid.eq(0)]
            m.d.sync += [st[n].eq(n == "SYNC") for n in names]
        return m
