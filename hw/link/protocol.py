"""The host protocol's facts, defined once: sync bytes, commands, status codes, memory ids,
frame layout, and the functions that encode and decode frames (no I/O).

``docs/host-protocol.md`` specifies the protocol in prose; the gateware
(:class:`~xnorflow.hw.link.decoder.HostDecoder`), the host driver
(:class:`~xnorflow.hw.link.driver.AcceleratorDriver`) and any model of a device import these
names instead of spelling the numbers again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from ...sw.errors import UserError
from ...sw.targets import MEMORY_NAMES

__all__ = [
    "SYNC_REQUEST", "SYNC_RESPONSE", "PROTOCOL_VERSION", "MAX_PAYLOAD", "PARAM_LEN",
    "STATUS_LEN", "Command", "Status", "MemoryId", "AcceleratorError", "StatusReport",
    "checksum", "bytes_per_word", "words_to_bytes", "bytes_to_words", "encode_frame",
    "encode_params", "encode_write_memory", "encode_read_memory", "encode_write_input",
    "encode_response", "decode_response", "decode_status", "encode_status", "decode_result",
    "encode_result", "decode_results", "encode_results",
]

SYNC_REQUEST = 0xA5
SYNC_RESPONSE = 0x5A
PROTOCOL_VERSION = 1
#: Largest payload of one frame (the length field is 16 bits).
MAX_PAYLOAD = 0xFFFF
#: Bytes of a READ_STATUS response payload.
STATUS_LEN = 15
#: Length of the WRITE_MEM / READ_MEM parameter block: mem id, address (4), count (2).
PARAM_LEN = 7


class Command(IntEnum):
    """Request commands (the ``cmd`` byte of a request frame)."""

    WRITE_MEM = 0x01
    READ_MEM = 0x02
    WRITE_INPUT = 0x03
    START = 0x04
    READ_RESULT = 0x05
    READ_STATUS = 0x06
    READ_RESULTS = 0x07


class Status(IntEnum):
    """Response status codes (the ``status`` byte of a response frame)."""

    OK = 0
    UNKNOWN_COMMAND = 1
    CHECKSUM = 2
    MEMORY = 3
    RANGE = 4
    LENGTH = 5
    BUSY = 6
    NO_RESULT = 7
    BATCH = 8

    @property
    def text(self) -> str:
        """What the status means, in the words of ``docs/host-protocol.md``."""
        return _STATUS_TEXT[self]


_STATUS_TEXT = {
    Status.OK: "ok", Status.UNKNOWN_COMMAND: "unknown command",
    Status.CHECKSUM: "bad checksum", Status.MEMORY: "bad memory id",
    Status.RANGE: "address range outside the memory", Status.LENGTH: "bad length field",
    Status.BUSY: "busy (a run is in progress)", Status.NO_RESULT: "no result (no finished run)",
    Status.BATCH: "bad batch size (1..R images)",
}

#: Memory ids: one member per name of :data:`xnorflow.sw.targets.MEMORY_NAMES`, in that
#: order (``MemoryId["weights"] == 1``).
MemoryId = IntEnum("MemoryId", [(name, i) for i, name in enumerate(MEMORY_NAMES)],
                   module=__name__)


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


def _frame(sync: int, code: int, payload: bytes) -> bytes:
    if not 0 <= code <= 0xFF:
        raise ValueError(f"command or status must be a byte, not {code}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = bytes([code]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([sync]) + body + bytes([checksum(body)])


def encode_frame(cmd: int, payload: bytes = b"") -> bytes:
    """One request frame: ``A5 cmd len_lo len_hi payload checksum``."""
    return _frame(SYNC_REQUEST, cmd, payload)


def encode_response(status: int, payload: bytes = b"") -> bytes:
    """One response frame: ``5A status len_lo len_hi payload checksum`` (a device's side)."""
    return _frame(SYNC_RESPONSE, status, payload)


def encode_params(mem: int, addr: int, count: int) -> bytes:
    """The WRITE_MEM / READ_MEM parameter block (:data:`PARAM_LEN` bytes)."""
    return bytes([mem]) + int(addr).to_bytes(4, "little") + int(count).to_bytes(2, "little")


def encode_write_memory(mem: int, addr: int, words: Sequence[int], width: int) -> list[bytes]:
    """WRITE_MEM frames for ``words`` at ``addr`` of memory ``mem`` (split to fit a frame)."""
    bpw = bytes_per_word(width)
    per = min(0xFFFF, (MAX_PAYLOAD - PARAM_LEN) // bpw)
    frames = []
    words = list(words)
    for i in range(0, len(words), per):
        chunk = words[i:i + per]
        frames.append(encode_frame(Command.WRITE_MEM, encode_params(mem, addr + i, len(chunk))
                                   + words_to_bytes(chunk, width)))
    return frames


def encode_read_memory(mem: int, addr: int, count: int) -> bytes:
    """A READ_MEM frame (the response carries ``count`` words)."""
    return encode_frame(Command.READ_MEM, encode_params(mem, addr, count))


def encode_write_input(words: Sequence[int], width: int) -> bytes:
    """A WRITE_INPUT frame: activation words from address 0."""
    return encode_frame(Command.WRITE_INPUT, words_to_bytes(words, width))


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
    if status != Status.OK:
        try:
            text = Status(status).text
        except ValueError:
            text = "unknown status"
        raise AcceleratorError(f"accelerator error {status}: {text}", status)
    return bytes(rest[:-1])


@dataclass
class StatusReport:
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


def decode_status(payload: bytes) -> StatusReport:
    if len(payload) != STATUS_LEN:
        raise AcceleratorError(f"status payload has {len(payload)} bytes, not {STATUS_LEN}")
    flags = payload[4]
    return StatusReport(payload[0], payload[1], payload[2], payload[3], bool(flags & 1),
                        bool(flags & 2), payload[5], int.from_bytes(payload[6:10], "little"),
                        {name: payload[10 + i] for i, name in enumerate(MEMORY_NAMES)})


def encode_status(st: StatusReport) -> bytes:
    """The READ_STATUS payload of ``st`` (a device's side; inverse of :func:`decode_status`).
    Flag bit 2 (the last run failed) is set when ``st.error`` is nonzero."""
    flags = int(st.busy) | int(st.done) << 1 | int(st.error != 0) << 2
    return (bytes([st.version, st.rows, st.cols, st.width, flags, st.error])
            + int(st.cycles).to_bytes(4, "little")
            + bytes(st.depth_log2.get(name, 0) for name in MEMORY_NAMES))


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


def encode_result(cls: int, scores: Sequence[int]) -> bytes:
    """A READ_RESULT payload (a device's side; inverse of :func:`decode_result`)."""
    return (int(cls).to_bytes(2, "little") + len(scores).to_bytes(2, "little")
            + b"".join(int(s).to_bytes(4, "little", signed=True) for s in scores))


def encode_results(classes: Sequence[int]) -> bytes:
    """A READ_RESULTS payload (a device's side; inverse of :func:`decode_results`)."""
    return bytes([len(classes)]) + b"".join(int(c).to_bytes(2, "little") for c in classes)


def decode_results(payload: bytes) -> list[int]:
    """Classes of every image of the last run (READ_RESULTS payload)."""
    if not payload or len(payload) != 1 + 2 * payload[0]:
        raise AcceleratorError(f"malformed READ_RESULTS payload of {len(payload)} bytes")
    return [int.from_bytes(payload[1 + 2 * i:3 + 2 * i], "little") for i in range(payload[0])]
