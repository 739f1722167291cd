"""A Python model of a board on the host link, for tests that have no board.

:func:`expected_status` is the protocol's checks, written from ``docs/host-protocol.md``
(``tests/hw/test_host.py`` holds the gateware decoder to it frame by frame).
:class:`PtyBoard` serves the protocol on the far end of a pseudo-terminal, so the real
:class:`~xnorflow.hw.link.SerialTransport` (pyserial on a tty), driver and session talk to it
as to a board: it keeps the memories it is sent, answers every command, and runs a START with
:func:`xnorflow.sw.program.execute` (the executable definition of the sequencer) on each image
of the batch. It recognises an input by its packed words (it is given the test images), so
what such a test checks is the host side -- transport, driver, session, backends, CLI -- not
the gateware (the Amaranth and cocotb tests do that).
"""

from __future__ import annotations

import os
import threading
import tty

import numpy as np

from xnorflow.hw.link import Command, MemoryId, Status
from xnorflow.hw.link import protocol as wire
from xnorflow.sw import encoding as enc
from xnorflow.sw.images import MemoryImage
from xnorflow.sw.program import FLAG_INTEGER, decode_program, execute, pack_input
from xnorflow.sw.targets import MEMORY_NAMES


def expected_status(target, depths, cmd, payload, chk_ok, busy=False, done=False) -> Status:
    """Status of a request frame per docs/host-protocol.md (checks in the documented order)."""
    if not chk_ok:
        return Status.CHECKSUM
    n = len(payload)
    bpw = [wire.bytes_per_word(target.word_bits(m)) for m in MEMORY_NAMES]
    depth = [depths[m] for m in MEMORY_NAMES]
    act = MemoryId["activations"]
    if cmd in (Command.WRITE_MEM, Command.READ_MEM):
        if (cmd == Command.WRITE_MEM and n < wire.PARAM_LEN) or (cmd == Command.READ_MEM
                                                            and n != wire.PARAM_LEN):
            return Status.LENGTH
        mem = payload[0]
        addr = int.from_bytes(payload[1:5], "little")
        count = int.from_bytes(payload[5:7], "little")
        if mem >= len(MEMORY_NAMES) or (cmd == Command.WRITE_MEM and mem == MemoryId["scores"]):
            return Status.MEMORY
        if cmd == Command.WRITE_MEM and n != wire.PARAM_LEN + count * bpw[mem]:
            return Status.LENGTH
        if addr + count > depth[mem]:
            return Status.RANGE
        if cmd == Command.READ_MEM and count * bpw[mem] > wire.MAX_PAYLOAD:
            return Status.LENGTH
        return Status.BUSY if busy else Status.OK
    if cmd == Command.WRITE_INPUT:
        if n % bpw[act]:
            return Status.LENGTH
        if n // bpw[act] > depth[act]:
            return Status.RANGE
        return Status.BUSY if busy else Status.OK
    if cmd == Command.START:
        if n > 1:
            return Status.LENGTH
        if n == 1 and not 1 <= payload[0] <= target.rows:
            return Status.BATCH
        return Status.BUSY if busy else Status.OK
    if cmd in (Command.READ_RESULT, Command.READ_RESULTS):
        if n:
            return Status.LENGTH
        if busy:
            return Status.BUSY
        return Status.OK if done else Status.NO_RESULT
    if cmd == Command.READ_STATUS:
        return Status.LENGTH if n else Status.OK
    return Status.UNKNOWN_COMMAND


class PtyBoard(threading.Thread):
    """A board modelled in Python behind a pseudo-terminal; :attr:`port` is the tty to open.

    Parameters
    ----------
    target : Target
        The geometry it reports and its memories' word widths and depths (``None``:
        unlimited).
    images : sequence of uint8 arrays (H, W, C)
        The images a test may send (an input it does not know stops the model).
    cycles_per_image : int
        The cycle count a run of ``N`` images reports (``N`` times this).
    busy_polls : int
        READ_STATUS polls after a START that still answer busy.

    Use as a context manager: the thread serves until the test leaves the ``with`` block.
    :attr:`frames` counts the frames answered, :attr:`failure` holds what stopped it early.
    """

    def __init__(self, target, images, cycles_per_image: int = 1234, busy_polls: int = 1):
        super().__init__(daemon=True)
        self.target = target
        self.images = list(images)
        self.cycles_per_image, self.busy_polls = cycles_per_image, busy_polls
        self.depths = {n: target.depth(n) or 1 << 32 for n in MEMORY_NAMES}
        self.mem: dict[str, dict[int, int]] = {n: {} for n in MEMORY_NAMES}
        self.frames = 0
        self.failure: BaseException | None = None
        self.busy_left = 0
        self.cycles = 0
        self.classes: list[int] = []
        self.scores: list[list[int]] = []
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)

    def __enter__(self) -> PtyBoard:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.slave)  # the model's reads then fail: the thread ends
        self.join(timeout=5)
        os.close(self.master)

    # ---- the wire ---------------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = os.read(self.master, n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def run(self) -> None:
        try:
            while True:
                if self._read(1)[0] != wire.SYNC_REQUEST:
                    continue
                head = self._read(3)
                payload = self._read(int.from_bytes(head[1:3], "little"))
                chk_ok = (sum(head) + sum(payload) + self._read(1)[0]) & 0xFF == 0
                status, body = self.serve(head[0], payload, chk_ok)
                os.write(self.master, wire.encode_response(status, body))
                self.frames += 1
        except (EOFError, OSError):
            return
        except BaseException as e:  # noqa: BLE001 -- reported by the test
            self.failure = e

    # ---- the device -------------------------------------------------------------------
    def _words(self, name: str, addr: int, count: int) -> list[int]:
        m = self.mem[name]
        return [m.get(a, 0) for a in range(addr, addr + count)]

    def _write(self, name: str, addr: int, words) -> None:
        for i, w in enumerate(words):
            self.mem[name][addr + i] = int(w)

    def serve(self, cmd: int, payload: bytes, chk_ok: bool) -> tuple[int, bytes]:
        """The response ``(status, payload)`` to one request frame."""
        t = self.target
        busy, done = self.busy_left > 0, bool(self.classes)
        status = expected_status(t, self.depths, cmd, payload, chk_ok, busy, done)
        # a WRITE_MEM / WRITE_INPUT with a bad checksum has written its words
        written = expected_status(t, self.depths, cmd, payload, True, busy, done) == Status.OK
        if written and cmd == Command.WRITE_MEM:
            name = MEMORY_NAMES[payload[0]]
            self._write(name, int.from_bytes(payload[1:5], "little"),
                        wire.bytes_to_words(payload[wire.PARAM_LEN:], t.word_bits(name)))
        elif written and cmd == Command.WRITE_INPUT:
            self._write("activations", 0, wire.bytes_to_words(payload, t.width))
        if status != Status.OK:
            return status, b""
        if cmd == Command.READ_MEM:
            name = MEMORY_NAMES[payload[0]]
            words = self._words(name, int.from_bytes(payload[1:5], "little"),
                                int.from_bytes(payload[5:7], "little"))
            return status, wire.words_to_bytes(words, t.word_bits(name))
        if cmd == Command.START:
            self._run(payload[0] if payload else 1)
        elif cmd == Command.READ_RESULT:
            return status, wire.encode_result(self.classes[0], self.scores[0])
        elif cmd == Command.READ_RESULTS:
            return status, wire.encode_results(self.classes)
        elif cmd == Command.READ_STATUS:
            report = wire.StatusReport(wire.PROTOCOL_VERSION, t.rows, t.cols, t.width, busy,
                                       done and not busy, 0,
                                       self.cycles // (2 if busy else 1), {})
            self.busy_left = max(0, self.busy_left - 1)
            return status, wire.encode_status(report)
        return status, b""

    def _run(self, batch: int) -> None:
        """Run ``batch`` images: results, scores memory, every hidden map in the activation
        memory (image ``n``'s after image ``n - 1``'s, layer after layer, as the sequencer
        leaves them)."""
        t = self.target
        widths = {n: t.word_bits(n) for n in MEMORY_NAMES}
        header, descs = decode_program(self._words("program", 0, len(self.mem["program"])))
        images = [MemoryImage(n, widths[n], np.array(self._words(n, 0, len(self.mem[n])),
                                                     dtype=object), "")
                  for n in ("program", "weights", "thresholds")]
        packed = {tuple(int(w) for w in pack_input(px, header, t.width)): px
                  for px in self.images}
        iw = header["input_words"]
        runs = [execute(images, packed[tuple(self._words("activations", k * iw, iw))], t)
                for k in range(batch)]
        hidden = [d for d in descs if not d["flags"] & FLAG_INTEGER]
        for k, r in enumerate(runs):
            for d, bits in zip(hidden, r.layer_outputs, strict=True):
                npix = bits.shape[0] * bits.shape[1]
                words = enc.pack_bits(bits.reshape(npix, -1), t.width, enc.ACT_PAD_BIT)
                self._write("activations", d["out_base"] + k * words.size, words.reshape(-1))
            n_cls = len(r.scores)
            self._write("scores", k * n_cls, [int(s) & 0xFFFFFFFF for s in r.scores])
        self.classes = [r.predicted for r in runs]
        self.scores = [[int(s) for s in r.scores] for r in runs]
        self.cycles = self.cycles_per_image * batch
        self.busy_left = self.busy_polls
