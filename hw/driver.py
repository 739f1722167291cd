"""Host driver for the accelerator's byte-stream command protocol (``docs/host-protocol.md``).

Three layers, so cocotb, Amaranth's simulator and a serial port all share the same code:

* plain functions that encode requests and decode responses (:func:`encode_frame`,
  :func:`encode_write_memory`, :func:`decode_response`, ...), no I/O at all;
* :class:`AcceleratorDriver`, async, over any *transport* with ``async write(data: bytes)``
  and ``async read(n: int) -> bytes``;
* transports: :class:`AmaranthStreamTransport` (Amaranth simulator testbench),
  :class:`SerialTransport` (pyserial, wrapped as async; :func:`run_sync` runs a driver
  coroutine from synchronous code). A cocotb transport only needs the same two methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..sw.errors import UserError
from ..sw.images import MemoryImage
from ..sw.program import decode_program, pack_input
from ..sw.targets import MEMORY_NAMES

__all__ = [
    "SYNC_REQUEST", "SYNC_RESPONSE", "PROTOCOL_VERSION", "MAX_PAYLOAD",
    "CMD_WRITE_MEM", "CMD_READ_MEM", "CMD_WRITE_INPUT", "CMD_START", "CMD_READ_RESULT",
    "CMD_READ_STATUS", "CMD_READ_RESULTS", "STATUS_NAMES", "decode_results", "MEMORY_IDS",
    "STATUS_LEN",
    "AcceleratorError", "Status", "checksum", "encode_frame", "encode_write_memory",
    "encode_read_memory", "encode_write_input", "decode_response", "decode_status",
    "decode_result", "bytes_per_word", "words_to_bytes", "bytes_to_words",
    "AcceleratorDriver", "AmaranthStreamTransport", "SerialTransport", "run_sync",
]

SYNC_REQUEST = 0xA5
SYNC_RESPONSE = 0x5A
PROTOCOL_VERSION = 1
MAX_PAYLOAD = 0xFFFF

CMD_WRITE_MEM = 0x01
CMD_READ_MEM = 0x02
CMD_WRITE_INPUT = 0x03
CMD_START = 0x04
CMD_READ_RESULT = 0x05
CMD_READ_STATUS = 0x06
CMD_READ_RESULTS = 0x07

OK = 0
ERR_UNKNOWN_CMD = 1
ERR_CHECKSUM = 2
ERR_MEMORY = 3
ERR_RANGE = 4
ERR_LENGTH = 5
ERR_BUSY = 6
ERR_NO_RESULT = 7
ERR_BATCH = 8
STATUS_NAMES = {
    OK: "ok", ERR_UNKNOWN_CMD: "unknown command", ERR_CHECKSUM: "bad checksum",
    ERR_MEMORY: "bad memory id", ERR_RANGE: "address range outside the memory",
    ERR_LENGTH: "bad length field", ERR_BUSY: "busy (a run is in progress)",
    ERR_NO_RESULT: "no result (no finished run)",
    ERR_BATCH: "bad batch size (1..R images)",
}
#: Memory id of each memory name (the order of :data:`xnorflow.sw.targets.MEMORY_NAMES`).
MEMORY_IDS = {name: i for i, name in enumerate(MEMORY_NAMES)}
#: Bytes of a READ_STATUS response payload.
STATUS_LEN = 15
#: Length of the WRITE_MEM / READ_MEM parameter block: mem id, address (4), count (2).
PARAM_LEN = 7


class AcceleratorError(UserError):
    """The accelerator answered with an error status (or a malformed response)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def checksum(data: bytes) -> int:
    """The byte that makes ``sum(data) + checksum == 0 (mod 256)``."""
    return (-sum(data)) & 0xFF


def bytes_per_word(width: int) -> int:
    """Bytes of one memory word of ``width`` bits on the wire (little-endian)."""
    return -(-width // 8)


def words_to_bytes(words, width: int) -> bytes:
    """Little-endian bytes of ``words`` (each ``bytes_per_word(width)`` bytes)."""
    n = bytes_per_word(width)
    return b"".join(int(w).to_bytes(n, "little") for w in words)


def bytes_to_words(data: bytes, width: int) -> list[int]:
    n = bytes_per_word(width)
    if len(data) % n:
        raise AcceleratorError(f"{len(data)} bytes is not a whole number of {n}-byte words")
    return [int.from_bytes(data[i:i + n], "little") for i in range(0, len(data), n)]


def encode_frame(cmd: int, payload: bytes = b"") -> bytes:
    """One request frame: ``A5 cmd len_lo len_hi payload checksum``."""
    if not 0 <= cmd <= 0xFF:
        raise ValueError(f"command must be a byte, not {cmd}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = bytes([cmd]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([SYNC_REQUEST]) + body + bytes([checksum(body)])


def _params(mem: int, addr: int, count: int) -> bytes:
    return bytes([mem]) + int(addr).to_bytes(4, "little") + int(count).to_bytes(2, "little")


def encode_write_memory(mem: int, addr: int, words: Sequence[int], width: int) -> list[bytes]:
    """WRITE_MEM frames for ``words`` at ``addr`` of memory ``mem`` (split to fit a frame)."""
    bpw = bytes_per_word(width)
    per = min(0xFFFF, (MAX_PAYLOAD - PARAM_LEN) // bpw)
    frames = []
    words = list(words)
    for i in range(0, len(words), per):
        chunk = words[i:i + per]
        frames.append(encode_frame(CMD_WRITE_MEM, _params(mem, addr + i, len(chunk))
                                   + words_to_bytes(chunk, width)))
    return frames


def encode_read_memory(mem: int, addr: int, count: int) -> bytes:
    """A READ_MEM frame (the response carries ``count`` words)."""
    return encode_frame(CMD_READ_MEM, _params(mem, addr, count))


def encode_write_input(words: Sequence[int], width: int) -> bytes:
    """A WRITE_INPUT frame: activation words from address 0."""
    return encode_frame(CMD_WRITE_INPUT, words_to_bytes(words, width))


def decode_response(header: bytes, rest: bytes) -> bytes:
    """Check a response (``header`` = first 4 bytes, ``rest`` = payload + checksum); return
    the payload or raise :class:`AcceleratorError` naming the status."""
    if len(header) != 4 or header[0] != SYNC_RESPONSE:
        raise AcceleratorError(f"response starts with {header.hex()}, expected {SYNC_RESPONSE:02x}")
    status = header[1]
    n = int.from_bytes(header[2:4], "little")
    if len(rest) != n + 1:
        raise AcceleratorError(f"response announced {n} payload bytes, got {len(rest) - 1}")
    if (sum(header[1:]) + sum(rest)) & 0xFF:
        raise AcceleratorError("response checksum mismatch")
    if status != OK:
        raise AcceleratorError(
            f"accelerator error {status}: {STATUS_NAMES.get(status, 'unknown status')}", status)
    return bytes(rest[:-1])


@dataclass
class Status:
    """Decoded READ_STATUS payload."""

    version: int
    rows: int
    cols: int
    width: int
    busy: bool
    done: bool
    error: int
    cycles: int
    depth_log2: dict

    @property
    def geometry(self) -> str:
        return f"{self.rows}x{self.cols}x{self.width}"


def decode_status(payload: bytes) -> Status:
    if len(payload) != STATUS_LEN:
        raise AcceleratorError(f"status payload has {len(payload)} bytes, not {STATUS_LEN}")
    flags = payload[4]
    return Status(payload[0], payload[1], payload[2], payload[3], bool(flags & 1),
                  bool(flags & 2), payload[5], int.from_bytes(payload[6:10], "little"),
                  {name: payload[10 + i] for i, name in enumerate(MEMORY_NAMES)})


def decode_result(payload: bytes) -> tuple[int, list[int]]:
    """``(class, scores)`` of a READ_RESULT payload (scores are signed 32-bit)."""
    if len(payload) < 4:
        raise AcceleratorError("result payload shorter than 4 bytes")
    cls = int.from_bytes(payload[0:2], "little")
    n = int.from_bytes(payload[2:4], "little")
    if len(payload) != 4 + 4 * n:
        raise AcceleratorError(f"result announced {n} scores, payload has {len(payload)} bytes")
    scores = [int.from_bytes(payload[4 + 4 * i:8 + 4 * i], "little", signed=True)
              for i in range(n)]
    return cls, scores


def decode_results(payload: bytes) -> list[int]:
    """Classes of every image of the last run (READ_RESULTS payload)."""
    if not payload or len(payload) != 1 + 2 * payload[0]:
        raise AcceleratorError(f"malformed READ_RESULTS payload of {len(payload)} bytes")
    return [int.from_bytes(payload[1 + 2 * i:3 + 2 * i], "little") for i in range(payload[0])]


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
        self.status_cache: Status | None = None

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

    async def status(self) -> Status:
        st = decode_status(await self.transact(encode_frame(CMD_READ_STATUS)))
        self.status_cache = st
        return st

    async def connect(self) -> Status:
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
        for frame in encode_write_memory(MEMORY_IDS[name], addr, words, self._width(name)):
            await self.transact(frame)

    async def read_memory(self, name: str, addr: int, count: int) -> list[int]:
        width = self._width(name)
        per = MAX_PAYLOAD // bytes_per_word(width)
        out: list[int] = []
        for i in range(0, count, per):
            n = min(per, count - i)
            data = await self.transact(encode_read_memory(MEMORY_IDS[name], addr + i, n))
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
        await self.transact(encode_frame(CMD_START, b"" if batch == 1 else bytes([batch])))

    async def results(self) -> list[int]:
        """Classes of every image of the last run."""
        return decode_results(await self.transact(encode_frame(CMD_READ_RESULTS)))

    async def result(self) -> tuple[int, list[int]]:
        return decode_result(await self.transact(encode_frame(CMD_READ_RESULT)))

    async def wait(self, poll: int = 1000) -> Status:
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


class AmaranthStreamTransport:
    """Transport over an Amaranth simulator testbench context and a component with
    ``host_in`` / ``host_out`` byte streams (one byte per cycle at most)."""

    def __init__(self, ctx, dut, timeout: int = 200_000):
        self.ctx, self.dut, self.timeout = ctx, dut, timeout

    async def write(self, data: bytes) -> None:
        ctx, port = self.ctx, self.dut.host_in
        for b in data:
            ctx.set(port.payload, int(b))
            ctx.set(port.valid, 1)
            await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)

    async def read(self, n: int) -> bytes:
        """``n`` bytes; fewer if no byte came for ``timeout`` cycles (the driver then
        reports a timeout instead of hanging)."""
        ctx, port = self.ctx, self.dut.host_out
        out = bytearray()
        ctx.set(port.ready, 1)
        idle = 0
        while len(out) < n and idle < self.timeout:
            _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
            if valid:
                out.append(int(payload))
                idle = 0
            else:
                idle += 1
        ctx.set(port.ready, 0)
        return bytes(out)


class SerialTransport:
    """Transport over a pyserial port (blocking calls wrapped as coroutines)."""

    def __init__(self, port):
        self.port = port

    async def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    async def read(self, n: int) -> bytes:
        return self.port.read(n)


def run_sync(coro):
    """Run a driver coroutine from synchronous code (e.g. with :class:`SerialTransport`)."""
    return asyncio.run(coro)
