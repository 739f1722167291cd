"""The host driver: :class:`AcceleratorDriver`, async, over any transport.

A *transport* has ``async write(data: bytes)`` and ``async read(n: int) -> bytes`` (fewer
bytes than asked means a timeout); :mod:`xnorflow.hw.link.transports` has one for a serial
port, one for Amaranth's simulator and two for cocotb, so a board, the Amaranth tests and the
RTL tests all run this code. Frames are built and checked by :mod:`xnorflow.hw.link.protocol`.
"""

from __future__ import annotations

import numpy as np

from ...sw import encoding as enc
from ...sw.images import MemoryImage
from ...sw.program import decode_program, pack_input, scores_from_words
from .protocol import (
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    SYNC_RESPONSE,
    AcceleratorError,
    MemoryId,
    Status,
    StatusReport,
    bytes_per_word,
    bytes_to_words,
    decode_response,
    decode_status,
    encode_read,
    encode_start,
    encode_status_request,
    encode_write,
)

__all__ = ["AcceleratorDriver"]


class AcceleratorDriver:
    """Async host driver: load images, classify, read memories and status.

    ``transport`` has ``async write(data: bytes)`` and ``async read(n: int) -> bytes``;
    ``widths`` maps memory names to word widths (``Target.memories``; or call
    :meth:`connect` to read them from the status). The class of an image is the first argmax
    of its scores (:func:`xnorflow.sw.encoding.argmax_first`), computed here: the accelerator
    writes scores, the host reads them.
    """

    def __init__(self, transport, widths: dict | None = None):
        self.transport = transport
        self.widths = dict(widths or {})
        self.header: dict | None = None
        self.status_cache: StatusReport | None = None

    async def transact(self, frame: bytes) -> bytes:
        await self.transport.write(frame)
        header = await self.transport.read(4)
        if len(header) != 4:
            raise AcceleratorError("no response (timeout)")
        n = int.from_bytes(header[2:4], "little") if header[:1] == bytes([SYNC_RESPONSE]) else 0
        rest = await self.transport.read(n + 1)
        if len(rest) != n + 1:
            raise AcceleratorError(f"response cut short: {len(rest)} of {n + 1} bytes")
        return decode_response(header, rest)

    async def status(self) -> StatusReport:
        st = decode_status(await self.transact(encode_status_request()))
        self.status_cache = st
        return st

    async def connect(self) -> StatusReport:
        """Read the status and derive the memory widths from the geometry."""
        st = await self.status()
        if st.version != PROTOCOL_VERSION:
            raise AcceleratorError(f"accelerator speaks protocol {st.version}, driver "
                                   f"{PROTOCOL_VERSION}")
        self.widths = {"program": 32, "weights": st.weight_rows * st.cols * st.width,
                       "thresholds": st.cols * 32, "activations": st.width,
                       "scores": st.cols * 32}
        self.cols = st.cols
        return st

    def _width(self, name: str) -> int:
        if name not in self.widths:
            raise AcceleratorError(f"width of memory {name!r} unknown; call connect() first")
        return self.widths[name]

    async def write_memory(self, name: str, addr: int, words) -> None:
        for frame in encode_write(MemoryId[name], addr, words, self._width(name)):
            await self.transact(frame)

    async def read_memory(self, name: str, addr: int, count: int) -> list[int]:
        width = self._width(name)
        per = MAX_PAYLOAD // bytes_per_word(width)
        out: list[int] = []
        for i in range(0, count, per):
            n = min(per, count - i)
            out += bytes_to_words(await self.transact(encode_read(MemoryId[name], addr + i, n)),
                                  width)
        return out

    async def load(self, memories: list[MemoryImage]) -> None:
        """Write every image (program, weights, thresholds) into the accelerator."""
        for img in memories:
            if img.width != self._width(img.name):
                raise AcceleratorError(f"image {img.name!r} is {img.width} bits wide, the "
                                       f"accelerator's memory is {self._width(img.name)}")
            await self.write_memory(img.name, 0, [int(w) for w in img.words])
            if img.name == "program":
                self.header, _ = decode_program(img.words)

    def _need_program(self) -> dict:
        if self.header is None:
            raise AcceleratorError("no program loaded through this driver; call load() first")
        return self.header

    async def write_input(self, pixels) -> None:
        """Write one image ``(H, W, C)`` or a batch ``(N, H, W, C)`` of ``uint8`` pixels."""
        header = self._need_program()
        width = self._width("activations")
        px = np.asarray(pixels)
        batch = px if px.ndim == 4 else px[None]
        words = np.concatenate([pack_input(im, header, width) for im in batch])
        await self.write_memory("activations", header["input_base"], [int(w) for w in words])

    async def start(self, batch: int = 1) -> None:
        """START a run of ``batch`` images (1..R, at most the program's ``max_batch``)."""
        if self.header is not None and batch > self.header["max_batch"]:
            raise AcceleratorError(f"batch {batch} > the program's max_batch "
                                   f"{self.header['max_batch']}")
        await self.transact(encode_start(batch))

    async def scores(self, batch: int = 1) -> np.ndarray:
        """``(batch, n_classes)`` scores of the last run (from the ``scores`` memory)."""
        header = self._need_program()
        words = await self.read_memory("scores", header["score_base"],
                                       batch * header["score_words"])
        return scores_from_words([0] * header["score_base"] + words, header,
                                 self._width("scores") // 32, batch)

    async def results(self, batch: int = 1) -> list[tuple[int, list[int]]]:
        """``(class, scores)`` of every image of the last run."""
        sc = await self.scores(batch)
        return [(int(enc.argmax_first(s)), [int(v) for v in s]) for s in sc]

    async def result(self) -> tuple[int, list[int]]:
        """``(class, scores)`` of the last run's (first) image."""
        return (await self.results(1))[0]

    async def wait(self, poll: int = 1000) -> StatusReport:
        """Poll the status until the run is over; raise if it failed."""
        for _ in range(poll):
            st = await self.status()
            if not st.busy:
                if st.error:
                    raise AcceleratorError(f"run failed with sequencer error {st.error}")
                return st
        raise AcceleratorError(f"still busy after {poll} status polls")

    async def classify(self, pixels) -> tuple[int, list[int]]:
        """Write one ``uint8`` image, run, wait, return ``(class, scores)``."""
        await self.write_input(pixels)
        await self.start()
        await self.wait()
        return await self.result()

    async def read_when_done(self, name: str, addr: int, count: int,
                             poll: int = 1_000_000) -> tuple[list[int], int]:
        """READ ``count`` words (one frame: at most ``65535 // bpw``), sending the READ again
        while the accelerator answers BUSY: the READ is the poll (13 bytes a turn, where a
        STATUS poll takes 28). Returns the words and how many READs were answered BUSY."""
        width = self._width(name)
        frame = encode_read(MemoryId[name], addr, count)
        for busy in range(poll):
            try:
                return bytes_to_words(await self.transact(frame), width), busy
            except AcceleratorError as e:
                if e.status != Status.BUSY:
                    raise
        raise AcceleratorError(f"still busy after {poll} READs")

    async def classify_stream(self, images, batch: int | None = None,
                              on_run=None) -> list[tuple[int, list[int]]]:
        """Classify ``images`` ``(N, H, W, C)``, ``batch`` per START (default, and at most,
        the program's ``max_batch``), sending only what the classes need
        (``docs/host-protocol.md``, "Throughput"): per run one WRITE of its inputs, START,
        and the READ of its scores, sent again while answered BUSY
        (:meth:`read_when_done`). The first run waits with STATUS (:meth:`wait`: a
        sequencer error raises); a run's errors depend only on the program and on a batch
        above its ``max_batch``, so the later runs -- the same program, no more images --
        need none. ``on_run(k, busy)`` is called after each run of ``k`` images with the
        number of READs answered BUSY. Returns ``(class, scores)`` per image."""
        header = self._need_program()
        images = np.asarray(images)
        step = header["max_batch"] if batch is None else int(batch)
        if not 1 <= step <= header["max_batch"]:
            raise AcceleratorError(f"batch {step}: this program runs 1..{header['max_batch']} "
                                   "images per START (max_batch)")
        out: list[tuple[int, list[int]]] = []
        for i in range(0, len(images), step):
            chunk = images[i:i + step]
            await self.write_input(chunk)
            await self.start(len(chunk))
            if i == 0:
                await self.wait(poll=1_000_000)
            words, busy = await self.read_when_done(
                "scores", header["score_base"], len(chunk) * header["score_words"])
            sc = scores_from_words([0] * header["score_base"] + words, header,
                                   self._width("scores") // 32, len(chunk))
            out += [(int(enc.argmax_first(s)), [int(v) for v in s]) for s in sc]
            if on_run is not None:
                on_run(len(chunk), busy)
        return out

    async def classify_batch(self, images) -> list[tuple[int, list[int]]]:
        """Classify ``N`` images ``(N, H, W, C)`` in one run (``N <= max_batch``): the dense
        layers then use ``N`` of the ``R`` array rows. Returns ``(class, scores)`` each."""
        images = np.asarray(images)
        await self.write_input(images)
        await self.start(len(images))
        await self.wait()
        return await self.results(len(images))
