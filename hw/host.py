"""Host command decoder: the byte-stream command layer of the accelerator.

Frames and commands are specified in ``docs/host-protocol.md``; the constants and the host
side live in :mod:`xnorflow.hw.driver`. This layer knows nothing of UARTs: a board top
wraps ``host_in`` / ``host_out`` in a UART and may pulse ``abort`` (e.g. on a framing
error or an inter-byte timeout) to return the decoder to waiting for a sync byte.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.targets import MEMORY_NAMES, Target
from . import driver as proto

__all__ = ["HostDecoder"]

_ACT = proto.MEMORY_IDS["activations"]
_SCORES = proto.MEMORY_IDS["scores"]


class HostDecoder(wiring.Component):
    """Parses request frames from ``host_in``, accesses memories, answers on ``host_out``.

    Parameters
    ----------
    target : Target
        Geometry reported by READ_STATUS and memory word widths.
    depths : dict
        Words of each memory (bounds checks).

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
        Memory access (ids of :data:`~xnorflow.hw.driver.MEMORY_IDS`); only while the
        sequencer is idle. Reads: ``mem_rdata`` holds the word one cycle after ``mem_addr``.
    mem_rdata : In(max width)
    start : Out(1)
        One-cycle pulse on an accepted START.
    busy, done, error, cycles, result, results, n_classes : In
        Sequencer status (see :class:`~xnorflow.hw.sequencer.Sequencer`).
    batch : Out(8)
        Images of the run a START launches (valid in the cycle of ``start``).

    Throughput: one request byte per cycle; responses one byte per cycle plus two cycles
    per memory word read. Latency: the response header starts 2 cycles after the checksum
    byte.
    """

    def __init__(self, target: Target, depths: dict):
        self.target = target
        self.depths = dict(depths)
        self.widths = [target.word_bits(n) for n in MEMORY_NAMES]
        self.max_width = max(self.widths)
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

    def elaborate(self, platform):  # noqa: C901
        m = Module()
        t = self.target
        nmem = len(MEMORY_NAMES)
        bpw = [proto.bytes_per_word(w) for w in self.widths]
        for b in bpw:
            assert b & (b - 1) == 0, "bytes per word must be a power of two"
        lg = Array(Const(b.bit_length() - 1, 4) for b in bpw)
        bpw_a = Array(Const(b, 8) for b in bpw)
        depth_a = Array(Const(self.depths[n], 33) for n in MEMORY_NAMES)
        depth_log2 = [max(0, (self.depths[n] - 1).bit_length()) for n in MEMORY_NAMES]

        inp, out = self.host_in, self.host_out
        cmd = Signal(8)
        length = Signal(16)
        rx = Signal(17)  # payload bytes received
        acc = Signal(8)  # running sum of the request (cmd, length, payload)
        mem = Signal(8)
        addr = Signal(32)
        count = Signal(16)
        bi = Signal(8)  # byte index within a word
        nb = Signal(8)  # START's batch byte
        woff = Signal(16)  # words written so far (addr keeps the start for the checks)
        wbuf = Signal(self.max_width)
        status = Signal(8)

        take = inp.valid & inp.ready
        byte = inp.payload
        m.d.comb += self.mem_sel.eq(mem[:3])
        m.d.comb += self.batch.eq(Mux(length == 1, nb, 1))
        m.d.comb += self.mem_addr.eq(addr + woff)

        is_write = (cmd == proto.CMD_WRITE_MEM) | (cmd == proto.CMD_WRITE_INPUT)
        data_start = Mux(cmd == proto.CMD_WRITE_MEM, proto.PARAM_LEN, 0)
        mem_ok = mem < nmem
        shift = lg[mem[:3]]
        nbytes = (count << shift)[:24]
        range_ok = (addr + count) <= depth_a[mem[:3]]
        # error of the frame from its parameters (valid once the parameter block is in)
        p_err = Signal(8)
        p_err_r = Signal(8)  # registered copy for the write enable (keeps the range and
        m.d.sync += p_err_r.eq(p_err)  # length arithmetic off the memory write path)
        with m.Switch(cmd):
            with m.Case(proto.CMD_WRITE_MEM):
                with m.If(length < proto.PARAM_LEN):
                    m.d.comb += p_err.eq(proto.ERR_LENGTH)
                with m.Elif(~mem_ok | (mem == _SCORES)):
                    m.d.comb += p_err.eq(proto.ERR_MEMORY)
                with m.Elif(length != proto.PARAM_LEN + nbytes):
                    m.d.comb += p_err.eq(proto.ERR_LENGTH)
                with m.Elif(~range_ok):
                    m.d.comb += p_err.eq(proto.ERR_RANGE)
                with m.Elif(self.busy):
                    m.d.comb += p_err.eq(proto.ERR_BUSY)
            with m.Case(proto.CMD_WRITE_INPUT):
                with m.If((length & (bpw[_ACT] - 1)) != 0):
                    m.d.comb += p_err.eq(proto.ERR_LENGTH)
                with m.Elif(~range_ok):
                    m.d.comb += p_err.eq(proto.ERR_RANGE)
                with m.Elif(self.busy):
                    m.d.comb += p_err.eq(proto.ERR_BUSY)
            with m.Case(proto.CMD_READ_MEM):
                with m.If(length != proto.PARAM_LEN):
                    m.d.comb += p_err.eq(proto.ERR_LENGTH)
                with m.Elif(~mem_ok):
                    m.d.comb += p_err.eq(proto.ERR_MEMORY)
                with m.Elif(~range_ok):
                    m.d.comb += p_err.eq(proto.ERR_RANGE)
                with m.Elif(nbytes > proto.MAX_PAYLOAD):
                    m.d.comb += p_err.eq(proto.ERR_LENGTH)
                with m.Elif(self.busy):
                    m.d.comb += p_err.eq(proto.ERR_BUSY)
            with m.Case(proto.CMD_START):
                with m.If(length > 1):
                    m.d.comb += p_err.eq(proto.ERR_LENGTH)
                with m.Elif((length == 1) & ((nb == 0) | (nb > t.rows))):
                    m.d.comb += p_err.eq(proto.ERR_BATCH)
                with m.Elif(self.busy):
                    m.d.comb += p_err.eq(proto.ERR_BUSY)
            with m.Case(proto.CMD_READ_RESULTS, proto.CMD_READ_RESULT):
                with m.If(length != 0):
                    m.d.comb += p_err.eq(proto.ERR_LENGTH)
                with m.Elif(self.busy):
                    m.d.comb += p_err.eq(proto.ERR_BUSY)
                with m.Elif(~self.done):
                    m.d.comb += p_err.eq(proto.ERR_NO_RESULT)
            with m.Case(proto.CMD_READ_STATUS):
                with m.If(length != 0):
                    m.d.comb += p_err.eq(proto.ERR_LENGTH)
            with m.Default():
                m.d.comb += p_err.eq(proto.ERR_UNKNOWN_CMD)

        # ---- response ---------------------------------------------------------------------------
        r_len = Signal(16)
        r_idx = Signal(3)
        r_sum = Signal(8)
        fix_bytes = max(proto.STATUS_LEN, 1 + 2 * t.rows)
        fix = Signal(8 * fix_bytes)
        run_batch = Signal(8, init=1)  # images of the last START
        fix_n = Signal(8)
        wbytes = Signal(8)
        obuf = Signal(self.max_width)
        flags = Cat(self.busy, self.done, self.error != 0)
        status_payload = Cat(
            Const(proto.PROTOCOL_VERSION, 8), Const(t.rows, 8), Const(t.cols, 8),
            Const(t.width, 8), flags, Const(0, 5), self.error, Const(0, 4), self.cycles,
            *[Const(d, 8) for d in depth_log2],
        )
        assert len(status_payload) == 8 * proto.STATUS_LEN

        def emit(value):
            return [out.payload.eq(value), out.valid.eq(1)]

        sent = out.valid & out.ready
        with m.If(sent):
            m.d.sync += r_sum.eq(r_sum + out.payload)

        with m.FSM():
            with m.State("SYNC"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take & (byte == proto.SYNC_REQUEST)):
                    m.d.sync += [rx.eq(0), acc.eq(0), bi.eq(0), mem.eq(0), addr.eq(0),
                                 count.eq(0), woff.eq(0)]
                    m.next = "CMD"
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("CMD"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    m.d.sync += [cmd.eq(byte), acc.eq(acc + byte)]
                    m.next = "LEN0"
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("LEN0"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    m.d.sync += [length[:8].eq(byte), acc.eq(acc + byte)]
                    m.next = "LEN1"
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("LEN1"):
                m.d.comb += inp.ready.eq(1)
                full = Cat(length[:8], byte)
                with m.If(take):
                    m.d.sync += [length[8:].eq(byte), acc.eq(acc + byte)]
                    with m.If(cmd == proto.CMD_WRITE_INPUT):
                        m.d.sync += [mem.eq(_ACT), addr.eq(0),
                                     count.eq(full >> (bpw[_ACT].bit_length() - 1))]
                    with m.If(full == 0):
                        m.next = "CHECK"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("PAYLOAD"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    m.d.sync += [rx.eq(rx + 1), acc.eq(acc + byte)]
                    with m.If(rx < data_start):
                        with m.Switch(rx):
                            with m.Case(0):
                                m.d.sync += mem.eq(byte)
                            for i in range(4):
                                with m.Case(1 + i):
                                    m.d.sync += addr[8 * i:8 * i + 8].eq(byte)
                            for i in range(2):
                                with m.Case(5 + i):
                                    m.d.sync += count[8 * i:8 * i + 8].eq(byte)
                    with m.Elif(~is_write):
                        with m.Switch(rx):  # READ_MEM parameters, START's batch byte
                            with m.Case(0):
                                m.d.sync += [mem.eq(byte), nb.eq(byte)]
                            for i in range(4):
                                with m.Case(1 + i):
                                    m.d.sync += addr[8 * i:8 * i + 8].eq(byte)
                            for i in range(2):
                                with m.Case(5 + i):
                                    m.d.sync += count[8 * i:8 * i + 8].eq(byte)
                    with m.Else():
                        # data byte of a write: little-endian into wbuf, write when complete
                        newbuf = Signal(self.max_width)
                        m.d.comb += newbuf.eq(wbuf)
                        for i in range(self.max_width // 8):
                            with m.If(bi == i):
                                m.d.comb += newbuf[8 * i:8 * i + 8].eq(byte)
                        m.d.sync += [wbuf.eq(newbuf), bi.eq(bi + 1)]
                        with m.If(bi == bpw_a[mem[:3]] - 1):
                            m.d.sync += [bi.eq(0), woff.eq(woff + 1)]
                            m.d.comb += [self.mem_wdata.eq(newbuf),
                                         self.mem_we.eq((p_err_r == 0) & ~self.abort)]
                    with m.If(rx + 1 == length):
                        m.next = "CHECK"
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("CHECK"):
                m.d.comb += inp.ready.eq(1)
                with m.If(take):
                    with m.If((acc + byte)[:8] != 0):
                        m.d.sync += status.eq(proto.ERR_CHECKSUM)
                    with m.Else():
                        m.d.sync += status.eq(p_err)
                    m.next = "EXEC"
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("EXEC"):
                m.d.sync += [r_idx.eq(0), fix_n.eq(0), r_len.eq(0), bi.eq(0), woff.eq(0)]
                with m.If(status == 0):
                    with m.Switch(cmd):
                        with m.Case(proto.CMD_START):
                            m.d.comb += self.start.eq(1)
                            m.d.sync += run_batch.eq(self.batch)
                        with m.Case(proto.CMD_READ_RESULTS):
                            m.d.sync += [
                                fix.eq(Cat(run_batch, *[self.results[r]
                                                        for r in range(t.rows)])),
                                fix_n.eq(1 + 2 * run_batch[:4]),
                                r_len.eq(1 + 2 * run_batch[:4]),
                            ]
                        with m.Case(proto.CMD_READ_STATUS):
                            m.d.sync += [fix.eq(status_payload), fix_n.eq(proto.STATUS_LEN),
                                         r_len.eq(proto.STATUS_LEN)]
                        with m.Case(proto.CMD_READ_RESULT):
                            m.d.sync += [fix.eq(Cat(self.result, self.n_classes)), fix_n.eq(4),
                                         r_len.eq(4 + (self.n_classes << 2)),
                                         mem.eq(_SCORES), addr.eq(0), count.eq(self.n_classes)]
                        with m.Case(proto.CMD_READ_MEM):
                            m.d.sync += r_len.eq(nbytes)
                with m.If((status != 0) | ~((cmd == proto.CMD_READ_MEM)
                                            | (cmd == proto.CMD_READ_RESULT))):
                    m.d.sync += count.eq(0)
                m.next = "RHDR"
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("RHDR"):
                hdr = Array([Const(proto.SYNC_RESPONSE, 8), status, r_len[:8], r_len[8:]])
                m.d.comb += emit(hdr[r_idx[:2]])
                with m.If(sent):
                    m.d.sync += r_idx.eq(r_idx + 1)
                    with m.If(r_idx == 0):
                        m.d.sync += r_sum.eq(0)  # the sync byte is not summed
                    with m.If(r_idx == 3):
                        m.next = "RFIX"
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("RFIX"):
                with m.If(fix_n == 0):
                    m.next = "RREAD"
                with m.Else():
                    m.d.comb += emit(fix[:8])
                    with m.If(sent):
                        m.d.sync += [fix.eq(fix >> 8), fix_n.eq(fix_n - 1)]
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("RREAD"):
                with m.If(count == 0):
                    m.next = "RCHK"
                with m.Else():
                    m.next = "RLATCH"  # mem_addr = addr is presented in this cycle
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("RLATCH"):
                m.d.sync += [obuf.eq(self.mem_rdata), wbytes.eq(bpw_a[mem[:3]]),
                             addr.eq(addr + 1), count.eq(count - 1)]
                m.next = "RWORD"
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("RWORD"):
                m.d.comb += emit(obuf[:8])
                with m.If(sent):
                    m.d.sync += [obuf.eq(obuf >> 8), wbytes.eq(wbytes - 1)]
                    with m.If(wbytes == 1):
                        m.next = "RREAD"
                with m.If(self.abort):
                    m.next = "SYNC"
            with m.State("RCHK"):
                m.d.comb += emit(-r_sum)
                with m.If(sent):
                    m.next = "SYNC"
                with m.If(self.abort):
                    m.next = "SYNC"
        return m
