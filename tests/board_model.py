"""A Python model of a board on the host link, for tests that have no board.

:class:`PtyBoard` serves the protocol (``docs/host-protocol.md``, its checks those of
:func:`xnorflow.hw.link.protocol.request_status`) on the far end of a pseudo-terminal, so the
real :class:`~xnorflow.hw.link.SerialTransport` (pyserial on a tty), driver and session talk
to it as to a board: it keeps the memories it is sent, answers every command, and runs a
START with :func:`xnorflow.sw.program.execute_batch` (the executable definition of the
accelerator) on the images in its activation memory. It recognises an input by its packed
words (it is given the test images), so what such a test checks is the host side --
transport, driver, session, backends, CLI -- not the gateware (the Amaranth and cocotb tests
do that).
"""

from __future__ import annotations

import os
import threading
import tty

import numpy as np

from xnorflow.hw.link import Command, Status
from xnorflow.hw.link import protocol as wire
from xnorflow.sw import encoding as enc
from xnorflow.sw.images import MemoryImage
from xnorflow.sw.program import decode_program, execute_batch, pack_input
from xnorflow.sw.targets import LANE_BITS, MEMORY_NAMES


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
        Requests after a START that still find it busy (STATUS answers busy, the others
        BUSY).
    corrupt_score : bool
        Report one score of every run wrong by one (a test that ``compare`` can fail).

    Use as a context manager: the thread serves until the test leaves the ``with`` block.
    :attr:`frames` counts the frames answered, :attr:`failure` holds what stopped it early.
    """

    def __init__(self, target, images, cycles_per_image: int = 1234, busy_polls: int = 1,
                 corrupt_score: bool = False):
        super().__init__(daemon=True)
        self.target = target
        self.images = list(images)
        self.cycles_per_image, self.busy_polls = cycles_per_image, busy_polls
        self.corrupt_score = corrupt_score
        self.depths = {n: target.depth(n) or 1 << 16 for n in MEMORY_NAMES}
        self.mem: dict[str, dict[int, int]] = {n: {} for n in MEMORY_NAMES}
        self.frames = 0
        self.failure: BaseException | None = None
        self.busy_left = 0
        self.cycles = 0
        self.done = False
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
                head = self._read(wire.REQUEST_HEADER)
                cmd, p0 = head[0], head[1]
                addr = int.from_bytes(head[2:4], "little")
                count = int.from_bytes(head[4:6], "little")
                data = b""
                if cmd == Command.WRITE:
                    data = self._read(count * wire.frame_word_bytes(self.target, p0))
                chk_ok = (sum(head) + sum(data) + self._read(1)[0]) & 0xFF == 0
                status, body = self.serve(cmd, p0, addr, count, data, chk_ok)
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

    def serve(self, cmd, p0, addr, count, data, chk_ok) -> tuple[int, bytes]:
        """The response ``(status, payload)`` to one request frame."""
        t = self.target
        busy = self.busy_left > 0
        self.busy_left = max(0, self.busy_left - 1)
        status = wire.request_status(t, self.depths, cmd, p0, addr, count, chk_ok, busy)
        # a WRITE with a bad checksum has written its words
        if cmd == Command.WRITE and wire.request_status(
                t, self.depths, cmd, p0, addr, count, True, busy) == Status.OK:
            name = MEMORY_NAMES[p0]
            self._write(name, addr, wire.bytes_to_words(data, t.word_bits(name)))
        if status != Status.OK:
            return status, b""
        if cmd == Command.READ:
            name = MEMORY_NAMES[p0]
            return status, wire.words_to_bytes(self._words(name, addr, count), t.word_bits(name))
        if cmd == Command.START:
            self._run(p0)
        elif cmd == Command.STATUS:
            report = wire.StatusReport(wire.PROTOCOL_VERSION, t.rows, t.cols, t.width, busy,
                                       self.done and not busy, 0,
                                       self.cycles // (2 if busy else 1), {},
                                       t.weight_rows)
            return status, wire.encode_status(report)
        return status, b""

    def _run(self, batch: int) -> None:
        """Run ``batch`` images: the scores memory and every hidden map in the activation
        memory (image ``n``'s after image ``n - 1``'s, layer after layer)."""
        t = self.target
        widths = {n: t.word_bits(n) for n in MEMORY_NAMES}
        header, descs = decode_program(self._words("program", 0, len(self.mem["program"])))
        images = [MemoryImage(n, widths[n], np.array(self._words(n, 0, len(self.mem[n])),
                                                     dtype=object), "")
                  for n in ("program", "weights", "thresholds")]
        packed = {tuple(int(w) for w in pack_input(px, header, t.width)): px
                  for px in self.images}
        iw = header["input_words"]
        pixels = [packed[tuple(self._words("activations", header["input_base"] + k * iw, iw))]
                  for k in range(batch)]
        runs = execute_batch(images, np.asarray(pixels), t)
        hidden = [d for d in descs if not d["integer"]]
        for k, r in enumerate(runs):
            for d, bits in zip(hidden, r.layer_outputs, strict=True):
                npix = bits.shape[0] * bits.shape[1]
                words = enc.pack_bits(bits.reshape(npix, -1), t.width, enc.ACT_PAD_BIT)
                self._write("activations", d["out_base"] + k * words.size, words.reshape(-1))
            scores = [int(v) for v in r.scores]
            if self.corrupt_score:
                scores[-1] += 1
            lanes = [scores[i:i + t.cols] for i in range(0, len(scores), t.cols)]
            self._write("scores", header["score_base"] + k * header["score_words"],
                        [sum((v & 0xFFFFFFFF) << (c * LANE_BITS) for c, v in enumerate(g))
                         for g in lanes])
        self.cycles = self.cycles_per_image * batch
        self.done = True
        self.busy_left = self.busy_polls
