"""Fuzzing the host command decoder (protocol 2) inside the whole accelerator, in Amaranth's
simulator.

The decoder (:class:`xnorflow.hw.link.HostDecoder`, inside
:class:`xnorflow.hw.accelerator.Accelerator`) gets random and mutated byte streams on
``host_in``, with seeded random idle cycles and ``host_out`` back-pressure
(:class:`xnorflow.hw.link.AmaranthStreamTransport`): valid frames of every command, frames
with one field mutated (command byte, memory id, address, count, batch, checksum, data, sync
byte), truncated frames followed by an ``abort`` pulse (as the UART bridge's inter-byte
timeout gives one), extra bytes after a frame, byte soup, frames sent while a run is busy,
responses cut by ``abort``, a next frame offered while an answer is pending.

A reference framer (:class:`Framer`: where a frame ends follows from its header,
``docs/host-protocol.md``, "Frames") splits the stream into complete requests; each one must
get exactly one response whose status is what :func:`xnorflow.hw.link.protocol.request_status`
predicts (the one definition of the checks and their order) and whose length follows from
that status. READ payloads must equal the memory (read in the simulator) and, where the host
wrote the words since the last run, what it wrote; every write-only memory must hold exactly
the accepted words (checked at checkpoints). A *hang* is a complete request without a
complete response within :attr:`FuzzConfig.bound` cycles of silence, ``host_in`` not ready
for that long while a frame is sent, or ``host_in`` not ready within
:data:`ABORT_READY_CYCLES` after an ``abort``.

Busy is what makes a frame's status timing dependent: the decoder samples it after the
header. The fuzzer samples it right after the header's last byte (``bh``) and after the
response; a run only ends by itself and only this frame's START starts one, so the busy the
decoder saw is known unless the run ended in between (then both predictions are allowed, and
the answer tells which one held; :attr:`FuzzStats.busy_ambiguous` counts these frames).

Programs stay valid: WRITEs to ``program`` inside the loaded image carry the image's own
words, and any program word that another frame changed (a ``bad_program`` case breaks the
magic word on purpose) is written back (a ``repair`` frame, itself checked) before the next
case, so every START runs the loaded network or fails at its header (a START of more images
than the program's ``max_batch``, a broken magic word).

After the fuzz the device must still answer STATUS, and a classify through
:class:`xnorflow.hw.link.HostSession` (the model loaded through the protocol again) must equal
the golden model bit for bit (:func:`fuzz` returns the figures; ``benchmarks/host_fuzz.py``
runs >= 10,000 frames, ``tests/sim/test_fuzz_host.py`` a few hundred).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..hw.link import protocol as p
from ..hw.link.protocol import Command, MemoryId, Status
from ..hw.memories import threshold_storage
from ..sw import golden, perf, program, synthetic
from ..sw.targets import LANE_BITS, MEMORY_NAMES, Target, sim_target

__all__ = ["ABORT_READY_CYCLES", "BUSY_MARGIN", "FUZZ_MODEL", "KINDS", "FuzzConfig", "FuzzStats",
           "Framer", "HostFuzzer", "Request", "fuzz", "fuzz_memories", "fuzz_model"]

#: ``host_in`` must be ready again within this many cycles after an ``abort`` pulse.
ABORT_READY_CYCLES = 16
#: Cycles after the end of a case in which ``host_out`` must stay silent (no response to a
#: request the framer does not see as complete; the first response byte comes 5 cycles
#: after a checksum byte).
SILENT_CYCLES = 12
#: A run with more cycles than this to go when a header is complete is still busy when the
#: decoder samples busy (in the three cycles after the header, docs/host-protocol.md).
BUSY_MARGIN = 8
#: Case kinds and their weights in a fuzz run.
KINDS = {
    "valid": 14, "cmd": 5, "mem": 5, "addr": 5, "count": 4, "count0": 3, "long_read": 3,
    "batch": 3, "checksum": 5, "data": 3, "sync": 3, "dup_sync": 2, "truncate": 8, "extra": 4,
    "soup": 8, "busy": 4, "cut_response": 3, "idle_abort": 2, "pending": 3, "bad_program": 1,
}


@dataclass
class Request:
    """A complete request as the framer parsed it (``chk_ok``: its bytes after the sync byte
    sum to 0 mod 256)."""

    cmd: int
    p0: int
    addr: int
    count: int
    data: bytes
    chk_ok: bool

    def encode(self) -> bytes:
        """Its bytes (a wrong checksum is the right one plus one)."""
        f = bytearray(p.encode_request(self.cmd, self.p0, self.addr, self.count, self.data))
        if not self.chk_ok:
            f[-1] = (f[-1] + 1) & 0xFF
        return bytes(f)


class Framer:
    """Where request frames begin and end in a byte stream (``docs/host-protocol.md``,
    "Frames"): between frames every byte but ``A5`` is ignored; a request is the sync byte,
    a 6-byte header, ``count * bpw`` data bytes for a WRITE (``frame_word_bytes``) and the
    checksum. :meth:`feed` returns ``"header"`` when a header is complete, the
    :class:`Request` when its checksum byte came, else ``None``."""

    def __init__(self, target: Target):
        self.target = target
        self.reset()

    def reset(self) -> None:
        self.state = "sync"
        self.body = bytearray()
        self.need = 0

    @property
    def idle(self) -> bool:
        """Between frames (the last byte ended a frame, or none has begun)."""
        return self.state == "sync"

    def header(self) -> tuple[int, int, int, int] | None:
        """``(cmd, p0, addr, count)`` of the frame in progress, once its header is in."""
        return None if self.state in ("sync", "hdr") else self._fields()

    def data_bytes(self) -> int:
        """Data bytes of the frame in progress received so far."""
        return max(0, len(self.body) - p.REQUEST_HEADER) if self.state in ("data", "chk") else 0

    def feed(self, b: int) -> str | Request | None:
        if self.state == "sync":
            if b == p.SYNC_REQUEST:
                self.state, self.body = "hdr", bytearray()
            return None
        if self.state == "chk":
            cmd, p0, addr, count = self.header()
            req = Request(cmd, p0, addr, count, bytes(self.body[p.REQUEST_HEADER:]),
                          (sum(self.body) + b) & 0xFF == 0)
            self.reset()
            return req
        self.body.append(b)
        if self.state == "hdr":
            if len(self.body) < p.REQUEST_HEADER:
                return None
            cmd, p0, _, count = self._fields()
            self.need = (count * p.frame_word_bytes(self.target, p0)
                         if cmd == Command.WRITE else 0)
            self.state = "data" if self.need else "chk"
            return "header"
        # data
        if len(self.body) == p.REQUEST_HEADER + self.need:
            self.state = "chk"
        return None

    def _fields(self) -> tuple[int, int, int, int]:
        b = self.body
        return b[0], b[1], b[2] | b[3] << 8, b[4] | b[5] << 8


@dataclass
class FuzzConfig:
    """A fuzz run: ``frames`` complete requests at least (a case may add a few), seeded."""

    frames: int = 300
    seed: int = 0
    geometry: tuple[int, int, int] = (2, 2, 16)
    idle: float = 0.2            # probability of an idle cycle before each request byte
    backpressure: float = 0.2    # probability of host_out.ready low in a response cycle
    bound: int = 400             # cycles of silence that make a hang
    checkpoint: int = 1000       # frames between full memory comparisons
    images: int = 4              # images of the post-fuzz classify
    max_examples: int = 20       # mismatch descriptions kept


@dataclass
class FuzzStats:
    """What a fuzz run saw (:func:`fuzz` returns it with the classify's result)."""

    frames: int = 0
    cases: int = 0
    frames_per_kind: Counter = field(default_factory=Counter)
    cases_per_kind: Counter = field(default_factory=Counter)
    frames_per_command: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    mismatches: int = 0
    examples: list = field(default_factory=list)
    hangs: int = 0
    aborts: int = 0
    busy_frames: int = 0
    busy_ambiguous: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    checkpoints: int = 0
    words_compared: int = 0
    read_words: int = 0          # words READ, compared with the memory
    read_words_written: int = 0  # of those, words the host wrote (not a run since)

    def as_dict(self) -> dict:
        return {
            "frames": self.frames, "cases": self.cases,
            "frames_per_kind": dict(sorted(self.frames_per_kind.items())),
            "cases_per_kind": dict(sorted(self.cases_per_kind.items())),
            "frames_per_command": dict(sorted(self.frames_per_command.items())),
            "statuses": {Status(s).name: n for s, n in sorted(self.statuses.items())},
            "mismatches": self.mismatches, "mismatch_examples": list(self.examples),
            "hangs": self.hangs, "aborts": self.aborts, "frames_while_busy": self.busy_frames,
            "busy_ambiguous": self.busy_ambiguous, "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received, "memory_checkpoints": self.checkpoints,
            "memory_words_compared": self.words_compared, "read_words": self.read_words,
            "read_words_host_written": self.read_words_written,
        }


#: What :func:`fuzz_model` is (for reports).
FUZZ_MODEL = "random_mlp 64-32-10 on 8x8 8-bit pixels, seed 0, max_batch 1"


def fuzz_model():
    """The network the fuzz runs: a dense 64-32-10 MLP on 8x8 8-bit pixels (a run takes a
    few hundred cycles at 2x2x16, long enough for frames to meet it busy)."""
    return synthetic.random_mlp(sizes=(64, 32, 10), in_shape=(8, 8, 1), in_bits=8, seed=0)


def fuzz_memories(model, target: Target):
    """The model's memory images with ``max_batch`` 1, so that a START of 2..R images is
    accepted by the decoder and fails in the sequencer (error 4)."""
    return program.build_memories(model, target, max_batch=1)


class HostFuzzer:
    """Drives one simulated :class:`~xnorflow.hw.accelerator.Accelerator` (``dut``) in the
    testbench ``ctx``; the model's images must already be loaded (:meth:`start_shadow`).
    ``header``: the loaded program's (:func:`xnorflow.sw.program.decode_program`)."""

    def __init__(self, ctx, dut, target: Target, memories, cfg: FuzzConfig, rng: random.Random,
                 transport, header: dict, cycles_of_run: dict[int, int]):
        self.ctx, self.dut, self.target, self.cfg, self.rng = ctx, dut, target, cfg, rng
        self.tr = transport
        self.depths = dict(dut.depths)
        self.images = {m.name: [int(w) for w in m.words] for m in memories}
        self.max_batch = header["max_batch"]
        self.act_words = header["act_words"]  # what a run may write (and the zero word)
        self.framer = Framer(target)
        self.stats = FuzzStats()
        self.shadow: dict[str, list] = {}
        self.bpw = {n: p.frame_word_bytes(target, i) for i, n in enumerate(MEMORY_NAMES)}
        mems = dut.core.memories
        self.mems = mems  # AcceleratorMemories: .cell(name, addr), also for banked weights
        self.lane_bits, self.score_bits = mems.lane_bits, mems.score_bits
        self.kind = "setup"
        self.bh = self.bh_sure = False  # busy right after the header (sample_busy)
        #: cycles of a run of ``n`` images (the performance model's), for n <= max_batch
        self.cycles_of_run = dict(cycles_of_run)
        self.run_cycles: int | None = None  # of the run the last accepted START began

    # ---- the memories, as the simulator holds them ----------------------------------------
    def stored(self, name: str, word: int) -> int:
        """What memory ``name`` stores for a host word ``word``."""
        if name != "thresholds":
            return word
        return sum(threshold_storage((word >> (c * LANE_BITS)) & 0xFFFFFFFF,
                                     self.target.acc_bits) << (c * self.lane_bits)
                   for c in range(self.target.cols))

    def peek(self, name: str, addr: int) -> int:
        return int(self.ctx.get(self.mems.cell(name, addr)))

    def host_word(self, name: str, addr: int) -> int:
        """The word a READ of ``name`` at ``addr`` must answer (scores: lanes sign-extended
        to 32 bits)."""
        v = self.peek(name, addr)
        if name != "scores":
            return v
        sb, out = self.score_bits, 0
        for c in range(self.target.cols):
            lane = (v >> (c * sb)) & ((1 << sb) - 1)
            if lane >> (sb - 1):
                lane -= 1 << sb
            out |= (lane & 0xFFFFFFFF) << (c * LANE_BITS)
        return out

    def start_shadow(self) -> None:
        """The known state after the load: each image's words, zeros elsewhere (the
        memories start at zero); the first checkpoint checks the load too."""
        for name in p.HOST_WRITABLE:
            img = self.images.get(name, [])
            self.shadow[name] = img + [0] * (self.depths[name] - len(img))

    def compare_memories(self) -> None:
        """Every known word of every host-writable memory against the simulator's."""
        self.stats.checkpoints += 1
        for name, words in self.shadow.items():
            for a, w in enumerate(words):
                if w is None:
                    continue
                self.stats.words_compared += 1
                if self.peek(name, a) != self.stored(name, w):
                    self.mismatch(f"{name}[{a}] holds {self.peek(name, a):#x}, the accepted "
                                  f"writes give {self.stored(name, w):#x}")

    # ---- bookkeeping ------------------------------------------------------------------------
    def mismatch(self, text: str) -> None:
        self.stats.mismatches += 1
        if len(self.stats.examples) < self.cfg.max_examples:
            self.stats.examples.append(f"frame {self.stats.frames} ({self.kind}): {text}")

    def busy(self) -> bool:
        return bool(self.ctx.get(self.dut.busy))

    def sample_busy(self) -> None:
        """Busy right after a header (``bh``), and whether the run then still had more than
        :data:`BUSY_MARGIN` cycles to go (``bh_sure``: known from the performance model's
        cycle count of the run the last accepted START began)."""
        self.bh = self.busy()
        left = (None if self.run_cycles is None
                else self.run_cycles - int(self.ctx.get(self.dut.core.cycles)))
        self.bh_sure = self.bh and left is not None and left > BUSY_MARGIN

    def busy_set(self, cmd: int, b_end: bool) -> set[bool]:
        """The busy values the decoder may have sampled for the frame just answered."""
        if not self.bh:
            return {False}  # nothing but this frame's START starts a run
        if self.bh_sure or (b_end and cmd != Command.START):
            return {True}
        return {True, False}

    def write_words(self, p0: int, addr: int, count: int, data: bytes, nwords: int,
                    busy: set[bool]) -> None:
        """Shadow the first ``nwords`` words of a WRITE of ``count`` words, if the decoder
        writes them: when every check but the checksum passes, for the busy values in
        ``busy``."""
        if nwords <= 0:
            return
        verdict = {p.request_status(self.target, self.depths, Command.WRITE, p0, addr, count,
                                    True, b) == Status.OK for b in busy}
        if verdict == {False}:
            return
        name = MEMORY_NAMES[p0]
        width = self.target.word_bits(name)
        words = p.bytes_to_words(data[:nwords * self.bpw[name]], width)
        for j, w in enumerate(words):
            self.shadow[name][addr + j] = w if verdict == {True} else None

    # ---- the streams ------------------------------------------------------------------------
    async def tick(self, n: int = 1) -> None:
        for _ in range(n):
            await self.ctx.tick()
        self.tr.cycles += n

    async def abort(self) -> None:
        """Pulse ``abort`` for one cycle (with both streams idle); ``host_in`` must be ready
        again within :data:`ABORT_READY_CYCLES`, and nothing more may leave ``host_out``.
        Words of a WRITE cut short are written if its checks passed."""
        ctx, dut = self.ctx, self.dut
        hdr = self.framer.header()
        if hdr is not None and hdr[0] == Command.WRITE and hdr[1] < len(MEMORY_NAMES):
            b_end = self.busy()
            busy = ({False} if not self.bh
                    else {True} if b_end or self.bh_sure else {True, False})
            n = self.framer.data_bytes() // self.bpw[MEMORY_NAMES[hdr[1]]]
            self.write_words(hdr[1], hdr[2], hdr[3], bytes(self.framer.body[p.REQUEST_HEADER:]),
                             min(n, hdr[3]), busy)
        self.stats.aborts += 1
        ctx.set(dut.host_in.valid, 0)
        ctx.set(dut.host_out.ready, 0)
        ctx.set(dut.abort, 1)
        await self.tick()
        ctx.set(dut.abort, 0)
        for _ in range(ABORT_READY_CYCLES):
            await self.tick()
            if ctx.get(dut.host_in.ready):
                break
        else:
            self.stats.hangs += 1
            self.mismatch(f"host_in not ready {ABORT_READY_CYCLES} cycles after abort")
        self.framer.reset()
        await self.expect_silence()

    async def expect_silence(self, cycles: int = SILENT_CYCLES) -> None:
        """``host_out`` sends nothing for ``cycles`` (ready high): any byte is a stray."""
        ctx, port = self.ctx, self.dut.host_out
        ctx.set(port.ready, 1)
        stray = 0
        for _ in range(cycles):
            _, _, valid = await ctx.tick().sample(port.valid)
            self.tr.cycles += 1
            stray += bool(valid)
        ctx.set(port.ready, 0)
        if stray:
            self.mismatch(f"{stray} response bytes nobody asked for")
            await self.recover()

    async def recover(self) -> None:
        """After a mismatch or a hang: abort, drain ``host_out``, start framing afresh."""
        ctx, dut = self.ctx, self.dut
        ctx.set(dut.host_in.valid, 0)
        ctx.set(dut.abort, 1)
        await self.tick()
        ctx.set(dut.abort, 0)
        ctx.set(dut.host_out.ready, 1)
        await self.tick(64)
        ctx.set(dut.host_out.ready, 0)
        self.framer.reset()
        for name in self.shadow:  # whatever a lost frame wrote is unknown now
            self.shadow[name] = [None] * self.depths[name]

    async def write(self, data: bytes) -> bool:
        if not data:
            return True
        try:
            await self.tr.write(data)
        except TimeoutError:
            self.stats.hangs += 1
            self.mismatch(f"host_in not ready for {self.cfg.bound} cycles")
            await self.recover()
            return False
        self.stats.bytes_sent += len(data)
        return True

    async def send(self, data: bytes, cut: int | None = None, pending: bool = False) -> None:
        """Stream ``data`` through the framer; answer each complete request (``cut``: read
        only that many bytes of the last answer, then abort; ``pending``: offer a byte
        while each answer is pending, which must not be taken)."""
        chunk = bytearray()
        for b in data:
            chunk.append(b)
            ev = self.framer.feed(b)
            if ev is None:
                continue
            if not await self.write(bytes(chunk)):
                return
            chunk.clear()
            if ev == "header":
                self.sample_busy()
                continue
            if pending and not await self.pending_blocks():
                return
            await self.answer(ev, cut)
        if not await self.write(bytes(chunk)):
            return
        await self.expect_silence()
        if not self.framer.idle:  # the UART's inter-byte timeout
            await self.abort()

    async def pending_blocks(self, cycles: int = 16) -> bool:
        """While an answer is pending, a byte offered on ``host_in`` is not taken."""
        ctx, port = self.ctx, self.dut.host_in
        ctx.set(port.payload, p.SYNC_REQUEST)
        ctx.set(port.valid, 1)
        taken = False
        for _ in range(cycles):
            _, _, ready = await ctx.tick().sample(port.ready)
            self.tr.cycles += 1
            taken |= bool(ready)
        ctx.set(port.valid, 0)
        if taken:
            self.mismatch("host_in took a byte while an answer was pending")
            await self.recover()
            return False
        return True

    async def answer(self, req: Request, cut: int | None = None) -> None:
        """Read and check the response to ``req`` (or its first ``cut`` bytes, then abort)."""
        st = self.stats
        st.frames += 1
        st.frames_per_kind[self.kind] += 1
        st.frames_per_command[Command(req.cmd).name if req.cmd in tuple(Command)
                              else "other"] += 1
        head = await self.tr.read(4)
        st.bytes_received += len(head)
        if len(head) < 4:
            st.hangs += 1
            self.mismatch(f"no response to {req} ({len(head)} bytes in {self.cfg.bound} "
                          "cycles)")
            await self.recover()
            return
        status, n = head[1], int.from_bytes(head[2:4], "little")
        # all of it, or (cut) some payload bytes but never the checksum
        rest = await self.tr.read(n + 1 if cut is None else min(cut - 4, n))
        st.bytes_received += len(rest)
        b_end = self.busy()
        busy = self.busy_set(req.cmd, b_end)
        if busy == {True}:
            st.busy_frames += 1
        want = {b: p.request_status(self.target, self.depths, req.cmd, req.p0, req.addr,
                                    req.count, req.chk_ok, b) for b in busy}
        if len(busy) > 1:
            st.busy_ambiguous += 1
        st.statuses[status] += 1
        if head[0] != p.SYNC_RESPONSE or status not in want.values():
            self.mismatch(f"{req}: answer {head.hex(' ')}, want status "
                          f"{sorted(int(s) for s in want.values())}")
            await self.recover()
            return
        seen = {b for b, s in want.items() if s == status}  # the busy values it agrees with
        if Status(status) == Status.OK and req.cmd == Command.READ:
            want_len = req.count * p.frame_word_bytes(self.target, req.p0)
        elif Status(status) == Status.OK and req.cmd == Command.STATUS:
            want_len = p.STATUS_LEN
        else:
            want_len = 0
        if n != want_len:
            self.mismatch(f"{req}: status {status} with {n} payload bytes, want {want_len}")
            await self.recover()
            return
        if req.cmd == Command.WRITE and req.p0 < len(MEMORY_NAMES):
            self.write_words(req.p0, req.addr, req.count, req.data, req.count, seen)
        if status == Status.OK and req.cmd == Command.START:
            # a run writes its maps below act_words and 0 into the zero word (docs/program.md)
            act = self.shadow["activations"]
            act[:self.act_words] = [None] * self.act_words
            act[-1] = 0
            # None: the run fails at once (a batch over max_batch, a broken program)
            intact = self.shadow["program"][:len(self.images["program"])] == self.images["program"]
            self.run_cycles = self.cycles_of_run.get(req.p0) if intact else None
        if cut is not None:
            await self.abort()
            return
        if len(rest) != n + 1:
            st.hangs += 1
            self.mismatch(f"{req}: response cut short ({len(rest)} of {n + 1} bytes)")
            await self.recover()
            return
        if (sum(head[1:]) + sum(rest)) & 0xFF:
            self.mismatch(f"{req}: response checksum wrong")
        if status == Status.OK and req.cmd == Command.READ:
            self.check_read(req, rest[:-1])
        if status == Status.OK and req.cmd == Command.STATUS:
            self.check_status(rest[:-1])

    def check_read(self, req: Request, payload: bytes) -> None:
        name = MEMORY_NAMES[req.p0]
        got = p.bytes_to_words(payload, self.target.word_bits(name))
        for j, w in enumerate(got):
            a = req.addr + j
            self.stats.read_words += 1
            if w != self.host_word(name, a):
                self.mismatch(f"READ {name}[{a}] = {w:#x}, memory holds "
                              f"{self.host_word(name, a):#x}")
            known = self.shadow[name][a] if name in self.shadow else None
            self.stats.read_words_written += known is not None
            if known is not None and w != known:
                self.mismatch(f"READ {name}[{a}] = {w:#x}, the host wrote {known:#x}")

    def check_status(self, payload: bytes) -> None:
        s = p.decode_status(payload)
        t = self.target
        depth_log2 = {n: max(0, (self.depths[n] - 1).bit_length()) for n in MEMORY_NAMES}
        if ((s.version, s.rows, s.cols, s.width) != (p.PROTOCOL_VERSION, t.rows, t.cols,
                                                      t.width)
                or s.depth_log2 != depth_log2 or payload[4] >> 3 or s.error > 4):
            self.mismatch(f"STATUS payload {payload.hex(' ')}")

    # ---- frames -----------------------------------------------------------------------------
    def words(self, name: str, addr: int, count: int) -> list[int]:
        """Words for a WRITE: the loaded program's own inside its image, else random."""
        width = self.target.word_bits(name)
        img = self.images.get("program", []) if name == "program" else []
        return [img[a] if a < len(img) else self.rng.getrandbits(width)
                for a in range(addr, addr + count)]

    def valid(self, cmd: int | None = None, program: bool = True) -> Request:
        """A request every check passes (unless the device is busy)."""
        rng, t = self.rng, self.target
        if cmd is None:
            cmd = rng.choice([Command.WRITE] * 4 + [Command.READ] * 3 + [Command.START]
                             + [Command.STATUS] * 2)
        if cmd in (Command.WRITE, Command.READ):
            names = (p.HOST_WRITABLE if cmd == Command.WRITE else p.HOST_READABLE)
            name = rng.choice([n for n in names if program or n != "program"])
            depth = self.depths[name]
            count = rng.choice([1, 1, 2, 3, 4, rng.randrange(1, 17)])
            addr = rng.choice([0, depth - count, rng.randrange(depth - count + 1)])
            if name == "program" and rng.random() < 0.5:  # inside the loaded image
                addr = rng.randrange(max(1, len(self.images["program"]) - count))
            data = b""
            if cmd == Command.WRITE:
                data = p.words_to_bytes(self.words(name, addr, count), t.word_bits(name))
            return Request(cmd, int(MemoryId[name]), addr, count, data, True)
        if cmd == Command.START:
            p0 = 1 if rng.random() < 0.85 or self.max_batch >= t.rows else rng.randrange(
                self.max_batch + 1, t.rows + 1)  # over max_batch: the run fails
            return Request(cmd, p0, 0, 0, b"", True)
        if rng.random() < 0.5:  # STATUS ignores p0, address and count
            return Request(cmd, rng.randrange(256), rng.randrange(1 << 16),
                           rng.randrange(1 << 16), b"", True)
        return Request(cmd, 0, 0, 0, b"", True)

    def mutated(self, kind: str, program: bool = True) -> bytes:
        """The bytes of a ``valid`` request with one field changed."""
        rng, t = self.rng, self.target
        if kind == "cmd":
            r = self.valid(program=program)
            r.cmd = rng.choice([0, 3, 5, 7, 8, 0x41, 0x81, 0xA5, 0xFF, rng.randrange(256),
                                *[c for c in Command if c != r.cmd]])
            return r.encode()
        if kind == "mem":
            r = self.valid(rng.choice([Command.WRITE, Command.READ]), program)
            bad = [i for i in range(len(MEMORY_NAMES)) if MEMORY_NAMES[i] not in (
                p.HOST_WRITABLE if r.cmd == Command.WRITE else p.HOST_READABLE)]
            r.p0 = rng.choice(bad + [5, 7, 8, 0x80, 0xFF, rng.randrange(5, 256)])
            if r.cmd == Command.WRITE and rng.random() < 0.7:  # data of the new word size
                r.data = rng.randbytes(r.count * p.frame_word_bytes(t, r.p0))
            return r.encode()
        if kind in ("addr", "count", "count0", "long_read"):
            r = self.valid(rng.choice([Command.WRITE, Command.READ])
                           if kind != "long_read" else Command.READ, program)
            name = MEMORY_NAMES[r.p0]
            depth = self.depths[name]
            if kind == "addr":
                r.addr = min(0xFFFF, rng.choice([depth - r.count + 1, depth, depth + 1, 0xFFFF,
                                                 rng.randrange(depth, 1 << 16)]))
            elif kind == "count":  # past the end by a few words, or far
                r.addr = rng.choice([r.addr, depth - rng.randrange(8)])
                r.count = min(0xFFFF, rng.choice([depth - r.addr + rng.randrange(1, 4),
                                                  depth + 1, 0xFFFF,
                                                  rng.randrange(depth - r.addr + 1, 1 << 16)]))
            elif kind == "count0":
                r.count = 0
                r.addr = rng.choice([0, rng.randrange(depth), depth, depth + 1, 0xFFFF])
            else:
                bpw = p.frame_word_bytes(t, r.p0)
                r.count = rng.choice([p.MAX_PAYLOAD // bpw + 1, 0xFFFF,
                                      rng.randrange(p.MAX_PAYLOAD // bpw + 1, 1 << 16)])
                r.addr = rng.choice([0, rng.randrange(1 << 16)])
            if r.cmd == Command.WRITE:
                if r.count * self.bpw[name] <= 256:  # a whole frame (else cut short: abort)
                    words = (self.words(name, r.addr, r.count) if name == "program"
                             else [rng.getrandbits(t.word_bits(name)) for _ in range(r.count)])
                    r.data = p.words_to_bytes(words, t.word_bits(name))
            return r.encode()
        if kind == "batch":
            r = self.valid(Command.START)
            r.p0 = rng.choice([0, t.rows + 1, 0xFF, rng.randrange(t.rows + 1, 256)])
            return r.encode()
        if kind == "checksum":
            f = bytearray(self.valid(program=program).encode())
            f[-1] ^= rng.randrange(1, 256)
            return bytes(f)
        if kind == "data":  # a data byte changed, the checksum not: CHECKSUM, words written
            r = self.valid(Command.WRITE, program=False)
            f = bytearray(r.encode())
            f[7 + rng.randrange(len(r.data))] ^= rng.randrange(1, 256)
            return bytes(f)
        if kind == "sync":
            f = bytearray(self.valid(program=program).encode())
            f[0] = rng.choice([0x00, p.SYNC_RESPONSE, 0xA4, 0xFF, rng.randrange(256)])
            if f[0] == p.SYNC_REQUEST:
                f[0] = 0
            return bytes(f)
        if kind == "dup_sync":
            return bytes([p.SYNC_REQUEST]) + self.valid(program=program).encode()
        if kind == "truncate":
            f = self.valid(program=program).encode()
            return f[:rng.randrange(1, len(f))]
        if kind == "extra":
            junk = bytes(p.SYNC_REQUEST if rng.random() < 0.1 else rng.randrange(256)
                         for _ in range(rng.randrange(1, 9)))
            return self.valid(program=program).encode() + junk
        raise ValueError(f"unknown mutation {kind!r}")

    def soup(self) -> bytes:
        rng = self.rng
        out = bytearray()
        for _ in range(rng.randrange(1, 49)):
            if rng.random() < 0.1:
                out.append(p.SYNC_REQUEST)
                if rng.random() < 0.5:  # a plausible command next
                    out.append(rng.choice([*Command, rng.randrange(256)]))
            else:
                out.append(rng.randrange(256))
        return bytes(out)

    # ---- cases ------------------------------------------------------------------------------
    async def case(self, kind: str) -> None:
        """One case of ``kind`` (``KINDS``); afterwards the program is repaired."""
        self.kind = kind
        self.stats.cases += 1
        self.stats.cases_per_kind[kind] += 1
        rng = self.rng
        if kind == "valid":
            await self.send(self.valid().encode())
        elif kind == "soup":
            await self.send(self.soup())
        elif kind == "busy":  # a run, then frames at once (no program words)
            frames = [p.encode_start(1)]
            for _ in range(rng.randrange(1, 6)):
                k = rng.choice(["valid", "valid", "mem", "addr", "count0", "long_read",
                                "batch", "checksum", "cmd"])
                frames.append(self.valid(program=False).encode() if k == "valid"
                              else self.mutated(k, program=False))
            await self.send(b"".join(frames))
        elif kind == "cut_response":
            r = (Request(Command.READ, int(MemoryId["activations"]), rng.randrange(64),
                         rng.randrange(4, 33), b"", True)
                 if rng.random() < 0.6 else self.valid(Command.STATUS))
            busy = self.busy()
            n = (r.count * self.bpw["activations"] if r.cmd == Command.READ
                 else p.STATUS_LEN) if not busy or r.cmd == Command.STATUS else 0
            await self.send(r.encode(), cut=rng.randrange(4, n + 5) if n else None)
        elif kind == "idle_abort":  # the UART's timeout after a complete frame: no effect
            await self.abort()
            await self.send(self.valid(Command.STATUS).encode())
        elif kind == "pending":
            await self.send(self.valid().encode(), pending=True)
        elif kind == "bad_program":  # a wrong magic word: the run fails (then repaired)
            await self.wait_idle()
            magic = self.images["program"][0]
            word = rng.choice([0, magic ^ 1 << rng.randrange(32)])
            await self.send(p.encode_write(int(MemoryId["program"]), 0, [word], 32)[0]
                            + p.encode_start(1) + p.encode_status_request())
        else:
            await self.send(self.mutated(kind))
        await self.repair()

    async def wait_idle(self, polls: int = 10_000) -> None:
        """STATUS frames until no run is in progress."""
        for _ in range(polls):
            if not self.busy():
                return
            await self.send(p.encode_status_request())
        self.mismatch(f"a run still in progress after {polls} STATUS polls")

    async def repair(self) -> None:
        """Write back program words another frame changed (after any run has ended)."""
        img = self.images["program"]
        sh = self.shadow["program"]
        bad = [a for a in range(len(img)) if sh[a] != img[a]]
        if not bad:
            return
        self.kind = "repair"
        await self.wait_idle()
        lo, hi = min(bad), max(bad) + 1
        data = p.words_to_bytes(img[lo:hi], 32)
        await self.send(p.encode_request(Command.WRITE, int(MemoryId["program"]), lo, hi - lo,
                                         data))

    async def run(self, progress=None) -> FuzzStats:
        """Cases until :attr:`FuzzConfig.frames` frames are answered (``progress(n)`` after
        each case with its ``n`` frames), then a last memory comparison."""
        kinds, weights = zip(*KINDS.items(), strict=True)
        next_check = self.cfg.checkpoint
        while self.stats.frames < self.cfg.frames:
            before = self.stats.frames
            await self.case(self.rng.choices(kinds, weights)[0])
            if progress is not None:
                progress(self.stats.frames - before)
            if self.stats.frames >= next_check:
                self.compare_memories()
                next_check += self.cfg.checkpoint
        self.compare_memories()
        return self.stats


def fuzz(cfg: FuzzConfig, progress=None) -> dict:
    """Run a fuzz (``progress(n)``: called with each case's new frames) and the post-fuzz
    checks; returns ``{"stats": FuzzStats.as_dict(), "classify": ..., ...}``."""
    from amaranth.sim import Simulator

    from ..hw.accelerator import Accelerator
    from ..hw.link import AcceleratorDriver, AmaranthStreamTransport, HostSession

    target = sim_target(*cfg.geometry)
    model = fuzz_model()
    memories = fuzz_memories(model, target)
    header, _ = program.decode_program(memories[0].words)
    images = synthetic.random_images(cfg.images, model.in_h, model.in_w, model.in_c,
                                     seed=cfg.seed)
    gold = golden.run(model, images)
    dut = Accelerator(target)  # empty memories: the host loads the model
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    rng = random.Random(cfg.seed)
    out: dict = {}

    async def tb(ctx):
        tr = AmaranthStreamTransport(ctx, dut, cfg.idle, cfg.backpressure, rng,
                                     timeout=cfg.bound)
        drv = AcceleratorDriver(tr)
        await drv.connect()
        await drv.load(memories)
        fz = HostFuzzer(ctx, dut, target, memories, cfg, rng, tr, header,
                        {n: perf.predict_network_cycles(model, target, batch=n)
                         for n in range(1, header["max_batch"] + 1)})
        fz.start_shadow()
        stats = await fz.run(progress)
        # afterwards: the device answers, a classify through the protocol equals golden
        tr.timeout = 200_000
        st = await drv.status()
        for _ in range(100_000):
            if not st.busy:
                break
            st = await drv.status()
        session = await HostSession.open(tr, model, memories, target, name="fuzz model")
        res = await session.infer_all(images)
        hidden_ok = all(
            r.hidden[i] is None or np.array_equal(r.hidden[i], gold.activations[i][k])
            for k, r in enumerate(res) for i in range(len(r.hidden)))
        out["stats"] = stats
        out["after_status"] = {"version": st.version, "geometry": st.geometry,
                               "busy": st.busy}
        out["classify"] = {
            "images": len(res),
            "predictions": [r.prediction for r in res],
            "golden_predictions": [int(c) for c in gold.predictions],
            "scores_equal": all(r.scores == gold.scores[k].tolist()
                                for k, r in enumerate(res)),
            "hidden_equal": hidden_ok,
            "hidden_compared": sum(m is not None for r in res for m in r.hidden),
        }
        out["classify"]["equal_golden"] = bool(
            out["classify"]["scores_equal"] and hidden_ok
            and out["classify"]["predictions"] == out["classify"]["golden_predictions"])
        out["sim_cycles"] = tr.cycles

    sim.add_testbench(tb)
    t0 = time.perf_counter()
    sim.run()
    stats: FuzzStats = out.pop("stats")
    return {"seed": cfg.seed, "geometry": target.geometry, "depths": dict(dut.depths),
            "model": FUZZ_MODEL,
            "idle": cfg.idle, "backpressure": cfg.backpressure, "hang_bound_cycles": cfg.bound,
            "stats": stats.as_dict(), **out, "wall_s": time.perf_counter() - t0}
