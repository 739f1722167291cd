"""The host driver: :class:`AcceleratorDriver`, async, over any transport.

A *transport* has ``async write(data: bytes)`` and ``async read(n: int) -> bytes`` (fewer
bytes than asked means a timeout); :mod:`xnorflow.hw.link.transports` has one for a serial
port, one for Amaranth's simulator and two for cocotb, so a board, the Amaranth tests and the
RTL tests all run this code. Frames are built and checked by :mod:`xnorflow.hw.link.protocol`.
"""

from __future__ import annotations

import numpy as np

from ...sw.images import MemoryImage
from ...sw.program import decode_program, pack_input
from .protocol import (
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    SYNC_RESPONSE,
    AcceleratorError,
    Command,
    MemoryId,
    StatusReport,
    bytes_per_word,
    bytes_to_words,
    decode_response,
    decode_result,
    decode_results,
    decode_status,
    encode_frame,
    encode_read_memory,
    encode_write_input,
    encode_write_memory,
)

__all__ = ["AcceleratorDriver"]


class AcceleratorDriver:
    """Async host driver: load images, classify, read memories and status.

    ``transport`` has ``async write(data: bytes)`` and ``async read(n: int) -> bytes``;
    ``widths`` maps memory names to word widths (``Target.memories``; or call
    :meth:`connect` to read them from the status).
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
        st = decode_status(await self.transact(encode_frame(Command.READ_STATUS)))
        self.status_cache = st
        return st

    async def connect(self) -> StatusReport:
        """Read the status and derive the memory widths from the geometry."""
        st = await self.status()
        if st.version != PROTOCOL_VERSION:
            raise AcceleratorError(f"accelerator speaks protocol {st.version}, driver "
                                   f"{PROTOCOL_VERSION}")
        self.widths = {"program": 32, "weights": st.cols * st.width,
                       "thresholds": st.cols * 32, "activations": st.width, "scores": 32}
        return st

    def _width(self, name: str) -> int:
        if name not in self.widths:
            raise AcceleratorError(f"width of memory {name!r} unknown; call connect() first")
        return self.widths[name]

    async def write_memory(self, name: str, addr: int, words) -> None:
        for frame in encode_write_memory(MemoryId[name], addr, words, self._width(name)):
            await self.transact(frame)

    async def read_memory(self, name: str, addr: int, count: int) -> list[int]:
        width = self._width(name)
        per = MAX_PAYLOAD // bytes_per_word(width)
        out: list[int] = []
        for i in range(0, count, per):
            n = min(per, count - i)
            data = await self.transact(encode_read_memory(MemoryId[name], addr + i, n))
            out += bytes_to_words(data, width)
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

    async def write_input(self, pixels) -> None:
        """Write one image ``(H, W, C)`` or a batch ``(N, H, W, C)`` of ``uint8`` pixels."""
        if self.header is None:
            raise AcceleratorError("no program loaded through this driver; call load() first")
        width = self._width("activations")
        px = np.asarray(pixels)
        batch = px if px.ndim == 4 else px[None]
        words = np.concatenate([pack_input(im, self.header, width) for im in batch])
        await self.transact(encode_write_input([int(w) for w in words], width))

    async def start(self, batch: int = 1) -> None:
        """START a run of ``batch`` images (1..R, at most the program's ``max_batch``)."""
        if batch != 1 and self.header is not None and batch > self.header["max_batch"]:
            raise AcceleratorError(f"batch {batch} > the program's max_batch "
                                   f"{self.header['max_batch']}")
        await self.transact(encode_frame(Command.START, b"" if batch == 1 else bytes([batch])))

    async def results(self) -> list[int]:
        """Classes of every image of the last run."""
        return decode_results(await self.transact(encode_frame(Command.READ_RESULTS)))

    async def result(self) -> tuple[int, list[int]]:
        return decode_result(await self.transact(encode_frame(Command.READ_RESULT)))

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

    async def classify_batch(self, images) -> list[tuple[int, list[int]]]:
        """Classify ``N`` images ``(N, H, W, C)`` in one run (``N <= max_batch``): the dense
        layers then use ``N`` of the ``R`` array rows. Returns ``(class, scores)`` each."""
        images = np.asarray(images)
        n = len(images)
        await self.write_input(images)
        await self.start(n)
        await self.wait()
        classes = await self.results()
        k = self.header["n_classes"]
        raw = await self.read_memory("scores", 0, n * k)
        scores = [v - (1 << 32) if v >> 31 else v for v in raw]
        return [(classes[i], scores[i * k:(i + 1) * k]) for i in range(n)]
