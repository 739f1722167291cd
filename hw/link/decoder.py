"""Host command decoder: the byte-stream command layer of the accelerator.

Frames and commands are specified in ``docs/host-protocol.md``; the constants are those of
:mod:`xnorflow.hw.link.protocol`, the host side is :mod:`xnorflow.hw.link.driver`. This layer
knows nothing of UARTs: a board top wraps ``host_in`` / ``host_out`` in a UART
(:mod:`xnorflow.hw.uart`) and may pulse ``abort`` (e.g. on a framing error or an inter-byte
timeout) to return the decoder to waiting for a sync byte.

Sized for small FPGAs: addresses are as wide as the memories need (a wider address the host
sends is a range error, counted in one flag), the frame is counted by one down-counter of
payload bytes, the parameter checks are made once per frame (registered one cycle after the
last parameter byte, before the first word can be written) and one shift register of the
widest word carries every word both ways: written words shift in a byte per cycle, read
words are loaded once and shift out, and so do the variable parts of the fixed answers
(READ_STATUS snapshot, READ_RESULT(S)), loaded when the command executes.
"""

from __future__ import annotations

from contextlib import contextmanager

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...sw.targets import MEMORY_NAMES, Target
from ..memories import addr_width
from .protocol import (
    PARAM_LEN,
    PROTOCOL_VERSION,
    STATUS_LEN,
    SYNC_REQUEST,
    SYNC_RESPONSE,
    Command,
    MemoryId,
    Status,
    bytes_per_word,
)

__all__ = ["HostDecoder"]

_ACT = int(MemoryId["activations"])
_SCORES = int(MemoryId["scores"])


def _any(conds) -> object:
    out = Const(0, 1)
    for c in conds:
        out = out | c
    return out


def _gt(x, c: int):
    """``x > c`` for a constant ``c``, as plain logic (no carry chain): from the top bit
    down, ``x`` is greater where it has a 1 above a 0 of ``c`` with equal bits above."""
    if c < 0:
        return Const(1, 1)
    if c >= (1 << len(x)) - 1:
        return Const(0, 1)
    t = len(x) - 1
    if len(x) == 1:
        return x[0] & (c == 0)
    if c >> t & 1:
        return x[t] & _gt(x[:t], c & ((1 << t) - 1))
    return x[t] | _gt(x[:t], c)


class HostDecoder(wiring.Component):
    """Parses request frames from ``host_in``, accesses memories, answers on ``host_out``.

    Parameters
    ----------
    target : Target
        Geometry reported by READ_STATUS and memory word widths.
    depths : dict
        Words of each memory (bounds checks; the address width is the deepest memory's).

    Members
    -------
    host_in : In(stream.Signature(8))
        Request bytes. Always ready while a frame is being received (a WRITE_MEM word is
        written in the cycle its last byte arrives); not ready while answering.
    host_out : Out(stream.Signature(8))
        Response bytes.
    abort : In(1)
        Drop the frame in progress (request or response) and wait for a sync byte.
    mem_sel : Out(3), mem_addr : Out(32), mem_wdata : Out(max width), mem_we : Out(1)
        Memory access (ids of :data:`~xnorflow.hw.link.protocol.MemoryId`); only while the
        sequencer is idle. Reads: ``mem_rdata`` holds the word one cycle after ``mem_addr``.
        Only the low :attr:`addr_bits` of ``mem_addr`` (the deepest memory's) can be
        nonzero; ``mem_wdata`` is valid only with ``mem_we``.
    mem_rdata : In(max width)
        Read data of memory ``mem_sel``; bits above that memory's width are ignored.
    start : Out(1)
        One-cycle pulse on an accepted START.
    busy, done, error, cycles, result, results, n_classes : In
        Sequencer status (see :class:`~xnorflow.hw.sequencer.Sequencer`). READ_RESULT
        sends ``results[0]`` (image 0's class, the same as ``result``, which is unused).
    batch : Out(8)
        Images of the run a START launches (valid in the cycle of ``start``).

    Throughput: one request byte per cycle; responses one byte per cycle plus two cycles
    per memory word read (and one before the checksum). Latency: the response header starts
    2 cycles after the checksum byte.
    """

    def __init__(self, target: Target, depths: dict):
        if not isinstance(target, Target):
            raise TypeError(f"target must be a Target, not {target!r}")
        self.target = target
        self.depths = dict(depths)
        for n in MEMORY_NAMES:
            if not isinstance(self.depths.get(n), int) or self.depths[n] < 1:
                raise ValueError(f"depth of memory {n!r} must be a positive int, "
                                 f"not {self.depths.get(n)!r}")
        self.widths = [target.word_bits(n) for n in MEMORY_NAMES]
        self.max_width = max(self.widths)
        self.bpw = [bytes_per_word(w) for w in self.widths]
        for n, b in zip(MEMORY_NAMES, self.bpw, strict=True):
            if b < 2 or b & (b - 1):
                raise ValueError(f"memory {n!r}: {b} bytes per word; the decoder needs a "
                                 "power of two >= 2")
        #: Address bits presented on ``mem_addr`` (the deepest memory's).
        self.addr_bits = max(addr_width(self.depths[n]) for n in MEMORY_NAMES)
        super().__init__({
            "host_in": In(stream.Signature(8)),
            "host_out": Out(stream.Signature(8)),
            "abort": In(1),
            "mem_sel": Out(3),
            "mem_addr": Out(32),
            "mem_wdata": Out(self.max_width),
            "mem_we": Out(1),
            "mem_rdata": In(self.max_width),
            "start": Out(1),
            "busy": In(1),
            "done": In(1),
            "error": In(4),
            "cycles": In(32),
            "result": In(16),
            "results": In(data.ArrayLayout(16, target.rows)),
            "n_classes": In(16),
            "batch": Out(8),
        })

    def elaborate(self, platform):  # noqa: C901 -- one FSM, kept together for reading
        m = Module()
        t = self.target
        R = t.rows
        nmem = len(MEMORY_NAMES)
        bpw = self.bpw
        lg = [b.bit_length() - 1 for b in bpw]
        depth = [self.depths[n] for n in MEMORY_NAMES]
        depth_log2 = [max(0, (d - 1).bit_length()) for d in depth]
        # the start address register holds 0..max depth (addr == depth with count 0 is in
        # range); any higher bit the host sends only sets `addr_big` (a range error)
        A = max(d.bit_length() for d in depth)
        status_len = STATUS_LEN
        # READ_STATUS: constant bytes, the snapshot (flags, error, cycles), constant bytes.
        # Where the widest word is shorter than the whole payload, only the snapshot goes
        # through the shift register (the constants come from a small table)
        status_consts = [PROTOCOL_VERSION, t.rows, t.cols, t.width]
        snap_at, snap_len = len(status_consts), 6
        assert snap_at + snap_len + len(depth_log2) == status_len
        status_table = max(bpw) < status_len
        # bytes of the word shift register: the widest word and the variable parts of the
        # fixed answers (READ_STATUS, READ_RESULT(S))
        nbuf = max(max(bpw), snap_len if status_table else status_len, 5, 1 + 2 * R)
        last_fix = 3 + max(status_len, 4, 1 + 2 * R)  # highest header + fixed byte index

        inp, out = self.host_in, self.host_out
        take = inp.valid & inp.ready
        sent = out.valid & out.ready
        byte = inp.payload

        cmd = Signal(8)
        rem = Signal(16)  # request: payload bytes still to come; response: payload bytes
        acc = Signal(8)  # minus the byte sum (request: to check `chk`; response: `chk`)
        p0 = Signal(8, init=1)  # first payload byte: memory id, or START's batch
        addr = Signal(A)
        addr_big = Signal()  # the host's address has bits above A
        count = Signal(16)
        pi = Signal(range(8))  # parameter bytes received (saturates at 7)
        pstb = Signal()  # the parameter block is complete since the last cycle
        f_len1 = Signal()  # the length field alone is wrong for the command
        f_len2 = Signal()  # WRITE_MEM: len != 7 + count*bpw; READ_MEM: answer > 65535
        f_range = Signal()
        chk_bad = Signal()
        busy_c = Signal()  # busy / done when the checksum byte arrived
        done_c = Signal()
        status = Signal(4)
        run_batch = Signal(range(R + 1), init=1)  # images of the last START
        ri = Signal(range(last_fix + 1))  # response byte index (header and fixed part)
        buf = Signal(8 * nbuf)

        sel = p0[:3]
        m.d.comb += [self.mem_sel.eq(sel), self.batch.eq(p0),
                     self.mem_addr.eq(addr[:self.addr_bits])]

        def by_mem(values):
            """``values[mem]`` for the selected memory (any value for a bad id); one
            comparison per distinct value."""
            groups = {}
            for i, v in enumerate(values):
                groups.setdefault(repr(v), (v, []))[1].append(i)
            order = sorted(groups.values(), key=lambda g: len(g[1]), reverse=True)
            res = order[0][0]
            for v, ids in order[1:]:
                res = Mux(_any(sel == i for i in ids), v, res)
            return res

        is_wmem = cmd == Command.WRITE_MEM
        is_winput = cmd == Command.WRITE_INPUT
        mem_bad = _gt(p0, nmem - 1)
        mem_bad_w = mem_bad | (p0 == _SCORES)

        # ---- checks -----------------------------------------------------------------------
        # length field alone (when its high byte arrives)
        full = Cat(rem[:8], byte)
        len1_err = Signal()
        with m.Switch(cmd):
            with m.Case(Command.WRITE_MEM):
                m.d.comb += len1_err.eq(~_gt(full, PARAM_LEN - 1))
            with m.Case(Command.READ_MEM):
                m.d.comb += len1_err.eq(full != PARAM_LEN)
            with m.Case(Command.WRITE_INPUT):
                m.d.comb += len1_err.eq(full[:lg[_ACT]] != 0)
            with m.Case(Command.START):
                m.d.comb += len1_err.eq(_gt(full, 1))
            with m.Case(Command.READ_RESULT, Command.READ_RESULTS, Command.READ_STATUS):
                m.d.comb += len1_err.eq(full != 0)
        in_range_err = _gt(full >> lg[_ACT], depth[_ACT])  # WRITE_INPUT: count = len / bpw
        # parameter block (cycle after its last byte; `rem` is then len - 7)
        cb = by_mem([(count << l)[:16] for l in lg])  # count * bpw, bytes of the words
        ovf = by_mem([count[16 - l:] != 0 for l in lg])  # ... above 65535
        end = addr + count
        range_err = addr_big | by_mem([_gt(end, d) for d in depth])
        len2_err = Mux(is_wmem, ovf | (cb != rem), ovf)
        m.d.sync += pstb.eq(0)
        with m.If(pstb):
            m.d.sync += [f_len2.eq(len2_err), f_range.eq(range_err)]

        # status of the frame (in EXEC; flags are complete by then)
        perr = Signal(4)
        with m.Switch(cmd):
            with m.Case(Command.WRITE_MEM):
                with m.If(f_len1):
                    m.d.comb += perr.eq(Status.LENGTH)
                with m.Elif(mem_bad_w):
                    m.d.comb += perr.eq(Status.MEMORY)
                with m.Elif(f_len2):
                    m.d.comb += perr.eq(Status.LENGTH)
                with m.Elif(f_range):
                    m.d.comb += perr.eq(Status.RANGE)
                with m.Elif(busy_c):
                    m.d.comb += perr.eq(Status.BUSY)
            with m.Case(Command.WRITE_INPUT):
                with m.If(f_len1):
                    m.d.comb += perr.eq(Status.LENGTH)
                with m.Elif(f_range):
                    m.d.comb += perr.eq(Status.RANGE)
                with m.Elif(busy_c):
                    m.d.comb += perr.eq(Status.BUSY)
            with m.Case(Command.READ_MEM):
                with m.If(f_len1):
                    m.d.comb += perr.eq(Status.LENGTH)
                with m.Elif(mem_bad):
                    m.d.comb += perr.eq(Status.MEMORY)
                with m.Elif(f_range):
                    m.d.comb += perr.eq(Status.RANGE)
                with m.Elif(f_len2):
                    m.d.comb += perr.eq(Status.LENGTH)
                with m.Elif(busy_c):
                    m.d.comb += perr.eq(Status.BUSY)
            with m.Case(Command.START):
                with m.If(f_len1):
                    m.d.comb += perr.eq(Status.LENGTH)
                with m.Elif((p0 == 0) | _gt(p0, R)):
                    m.d.comb += perr.eq(Status.BATCH)
                with m.Elif(busy_c):
                    m.d.comb += perr.eq(Status.BUSY)
            with m.Case(Command.READ_RESULTS, Command.READ_RESULT):
                with m.If(f_len1):
                    m.d.comb += perr.eq(Status.LENGTH)
                with m.Elif(busy_c):
                    m.d.comb += perr.eq(Status.BUSY)
                with m.Elif(~done_c):
                    m.d.comb += perr.eq(Status.NO_RESULT)
            with m.Case(Command.READ_STATUS):
                with m.If(f_len1):
                    m.d.comb += perr.eq(Status.LENGTH)
            with m.Default():
                m.d.comb += perr.eq(Status.UNKNOWN_COMMAND)
        status_c = Mux(chk_bad, Status.CHECKSUM, perr)
        ok = status_c == 0
        # words are written only if every parameter check passed (the top adds ~busy); the
        # flags of the parameter block are registered in the `pstb` cycle, and a word cannot
        # end then unless the length is wrong
        wr_ok = ~(f_len1 | f_range | (is_wmem & (mem_bad_w | f_len2 | pstb)))

        # response payload length (in EXEC, for an ok frame)
        rlen = Signal(16)
        with m.Switch(cmd):
            with m.Case(Command.READ_MEM):
                m.d.comb += rlen.eq(cb)
            with m.Case(Command.READ_RESULT):
                m.d.comb += rlen.eq(Cat(Const(0, 2), self.n_classes + 1))
            with m.Case(Command.READ_RESULTS):
                m.d.comb += rlen.eq(Cat(Const(1, 1), run_batch))
            with m.Case(Command.READ_STATUS):
                m.d.comb += rlen.eq(status_len)

        # ---- the word shift register ------------------------------------------------------
        # writes: bytes shift in at byte lane bpw-1 of the memory (the top lane for the
        # widest), everything above lane 0 moves down a lane; after bpw bytes the word is
        # in lanes 0..bpw-1. Reads: the word is loaded and shifts out of lane 0.
        nxt = Signal(8 * nbuf)
        wr_shift = Signal()  # a written byte shifts in (not a response byte out)
        for i in range(nbuf):
            above = byte if i == nbuf - 1 else buf[8 * (i + 1):8 * (i + 2)]
            ins = [k for k in range(nmem) if bpw[k] - 1 == i]
            lane = above
            if ins and i != nbuf - 1:
                lane = Mux(wr_shift & _any(sel == k for k in ins), byte, above)
            m.d.comb += nxt[8 * i:8 * i + 8].eq(lane)
        m.d.comb += self.mem_wdata.eq(nxt)
        load, exec_, shift = Signal(), Signal(), Signal()
        flags = Cat(self.busy, self.done, self.error != 0)
        payloads = {  # fixed response payloads, loaded when the command executes
            Command.READ_STATUS: Cat(
                *([] if status_table else [Const(c, 8) for c in status_consts]),
                flags, Const(0, 5), self.error, Const(0, 4), self.cycles,
                *([] if status_table else [Const(c, 8) for c in depth_log2])),
            # image 0's class is results[0]: the READ_RESULTS layout with n_classes after it,
            # shifted once more (during the header) to drop the first byte
            Command.READ_RESULT: Cat(Const(0, 8), self.results[0], self.n_classes),
            Command.READ_RESULTS: Cat(run_batch.as_unsigned(), Const(0, 8 - len(run_batch)),
                                        self.results.as_value()),
        }
        assert len(payloads[Command.READ_STATUS]) == 8 * (snap_len if status_table
                                                            else status_len)
        lv = Signal(8 * nbuf)
        m.d.comb += lv.eq(self.mem_rdata)
        with m.If(exec_):
            with m.Switch(cmd):
                for c, v in payloads.items():
                    with m.Case(c):
                        m.d.comb += lv[:len(v)].eq(v)
        with m.If(load):
            m.d.sync += buf.eq(lv)
        with m.Elif(shift):
            m.d.sync += buf.eq(nxt)
        word_end = by_mem([rem[:l] == 1 for l in lg])  # last byte of a word (rem counts down)

        # ---- response bytes ---------------------------------------------------------------
        fb = Signal(8)  # header, then the fixed payload from the shift register
        with m.Switch(ri):
            with m.Case(0):
                m.d.comb += fb.eq(SYNC_RESPONSE)
            with m.Case(1):
                m.d.comb += fb.eq(status)
            with m.Case(2):
                m.d.comb += fb.eq(rem[:8])
            with m.Case(3):
                m.d.comb += fb.eq(rem[8:])
            for j, c in enumerate(status_consts + [None] * snap_len + depth_log2):
                if c is not None and status_table:
                    with m.Case(4 + j):
                        m.d.comb += fb.eq(Mux(cmd == Command.READ_STATUS, c, buf[:8]))
            with m.Default():
                m.d.comb += fb.eq(buf[:8])
        fix_end = Signal()
        with m.Switch(cmd):
            with m.Case(Command.READ_STATUS):
                m.d.comb += fix_end.eq(ri == 3 + status_len)
            with m.Case(Command.READ_RESULT):
                m.d.comb += fix_end.eq(ri == 3 + 4)
            with m.Case(Command.READ_RESULTS):
                m.d.comb += fix_end.eq(ri == Cat(Const(0, 1), run_batch) + 4)
            with m.Default():
                m.d.comb += fix_end.eq(ri == 3)
        with m.If(status != 0):
            m.d.comb += fix_end.eq(ri == 3)

        # one subtractor for both checksums
        resp = Signal()
        diff = acc - Mux(resp, out.payload, byte)

        @contextmanager
        def state(name):
            with m.State(name):
                yield
                with m.If(self.abort):  # from any state: drop the frame
                    m.next = "SYNC"

        with m.FSM():
            with state("SYNC"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take & (byte == SYNC_REQUEST)):
                    m.d.sync += [acc.eq(0), pi.eq(0), p0.eq(1), addr.eq(0), addr_big.eq(0)]
                    m.next = "CMD"
            with state("CMD"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    m.d.sync += [cmd.eq(byte), acc.eq(diff)]
                    m.next = "LEN0"
            with state("LEN0"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    m.d.sync += [rem[:8].eq(byte), acc.eq(diff)]
                    m.next = "LEN1"
            with state("LEN1"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    m.d.sync += [rem[8:].eq(byte), acc.eq(diff), f_len1.eq(len1_err),
                                 f_len2.eq(0), f_range.eq(is_winput & in_range_err)]
                    with m.If(is_winput):
                        m.d.sync += p0.eq(_ACT)
                    with m.If(full == 0):
                        m.next = "CHECK"
                    with m.Else():
                        m.next = "PAYLOAD"
            with state("PAYLOAD"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    m.d.sync += [rem.eq(rem - 1), acc.eq(diff)]
                    with m.If(~is_winput & (pi != 7)):
                        # parameter block: mem (or START's batch), addr (4), count (2)
                        m.d.sync += pi.eq(pi + 1)
                        with m.Switch(pi):
                            with m.Case(0):
                                m.d.sync += p0.eq(byte)
                            for k in range(4):
                                lo = 8 * k
                                with m.Case(1 + k):
                                    if lo < A:
                                        n = min(8, A - lo)
                                        m.d.sync += addr[lo:lo + n].eq(byte[:n])
                                    if lo + 8 > A:
                                        hi = byte[max(0, A - lo):]
                                        m.d.sync += addr_big.eq(addr_big | (hi != 0))
                            for k in range(2):
                                with m.Case(5 + k):
                                    m.d.sync += count[8 * k:8 * k + 8].eq(byte)
                                    if k == 1:  # block complete: checks in the next cycle
                                        m.d.sync += pstb.eq(1)
                    with m.If(is_winput | (is_wmem & (pi == 7))):
                        # data byte of a write: into the shift register, write when complete
                        m.d.comb += [shift.eq(1), wr_shift.eq(1)]
                        with m.If(word_end):
                            m.d.comb += self.mem_we.eq(wr_ok & ~self.abort)
                            m.d.sync += addr.eq(addr + 1)
                    with m.If(rem == 1):
                        m.next = "CHECK"
            with state("CHECK"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    m.d.sync += [chk_bad.eq(acc != byte), busy_c.eq(self.busy),
                                 done_c.eq(self.done)]
                    m.next = "EXEC"
            with state("EXEC"):
                m.d.sync += [status.eq(status_c), rem.eq(Mux(ok, rlen, 0)), ri.eq(0)]
                m.d.comb += [load.eq(1), exec_.eq(1)]  # the fixed payload, if any
                with m.If(ok):
                    with m.Switch(cmd):
                        with m.Case(Command.START):
                            m.d.comb += self.start.eq(1)
                            m.d.sync += run_batch.eq(p0)
                        with m.Case(Command.READ_RESULT):
                            m.d.sync += p0.eq(_SCORES)  # addr is 0: no parameter bytes
                m.next = "FIX"
            with state("FIX"):
                m.d.comb += [out.valid.eq(1), out.payload.eq(fb), resp.eq(1)]
                with m.If(sent):
                    m.d.sync += [ri.eq(ri + 1), acc.eq(Mux(ri == 0, 0, diff))]
                    with m.If(ri >= 4):
                        m.d.sync += rem.eq(rem - 1)
                    from_buf = ri >= 4  # (the constants of READ_STATUS do not shift)
                    if status_table:
                        from_buf &= ~((cmd == Command.READ_STATUS) & (ri < 4 + snap_at))
                    with m.If(from_buf | ((ri == 0) & (cmd == Command.READ_RESULT))):
                        m.d.comb += shift.eq(1)
                    with m.If(fix_end):
                        m.next = "RREAD"
            with state("RREAD"):  # mem_addr = addr is presented in this cycle
                with m.If(rem == 0):
                    m.next = "RCHK"
                with m.Else():
                    m.next = "RLATCH"
            with state("RLATCH"):
                m.d.comb += load.eq(1)
                m.d.sync += addr.eq(addr + 1)
                m.next = "RWORD"
            with state("RWORD"):
                m.d.comb += [out.valid.eq(1), out.payload.eq(buf[:8]), resp.eq(1)]
                with m.If(sent):
                    m.d.comb += shift.eq(1)
                    m.d.sync += [rem.eq(rem - 1), acc.eq(diff)]
                    with m.If(word_end):
                        m.next = "RREAD"
            with state("RCHK"):
                m.d.comb += [out.valid.eq(1), out.payload.eq(acc)]
                with m.If(sent):
                    m.next = "SYNC"
        return m
