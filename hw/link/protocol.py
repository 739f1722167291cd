"""The host protocol's facts, defined once: sync bytes, commands, status codes, memory ids,
frame layout, the checks a device makes and their order, and the functions that encode and
decode frames (no I/O).

``docs/host-protocol.md`` specifies the protocol in prose; the gateware
(:class:`~xnorflow.hw.link.decoder.HostDecoder`), the host driver
(:class:`~xnorflow.hw.link.driver.AcceleratorDriver`) and any model of a device import these
names instead of spelling the numbers again.

Protocol 2: every request is ``A5 cmd p0 addr_lo addr_hi count_lo count_hi [data] chk`` (a
fixed header: no length field to check), every response ``5A status len_lo len_hi payload
chk``. Four commands: WRITE and READ words of a memory, START a run, STATUS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from ...sw.errors import UserError
from ...sw.targets import MEMORY_NAMES

__all__ = [
    "HOST_READABLE", "HOST_WRITABLE", "MAX_PAYLOAD", "MAX_WORDS", "PROTOCOL_VERSION",
    "REQUEST_HEADER", "STATUS_LEN", "SYNC_REQUEST", "SYNC_RESPONSE", "AcceleratorError",
    "Command", "MemoryId", "Status", "StatusReport", "bytes_per_word", "bytes_to_words",
    "checksum", "classify_wire_bytes", "decode_response", "decode_status", "encode_read",
    "encode_request",
    "encode_response", "encode_start", "encode_status", "encode_status_request",
    "encode_write", "frame_word_bytes", "request_status", "words_to_bytes",
]

SYNC_REQUEST = 0xA5
SYNC_RESPONSE = 0x5A
PROTOCOL_VERSION = 2
#: Largest response payload (its length field is 16 bits): a READ answers at most this many
#: bytes.
MAX_PAYLOAD = 0xFFFF
#: Most words of one WRITE or READ (the count field is 16 bits).
MAX_WORDS = 0xFFFF
#: Request bytes after the sync byte and before any data: cmd, p0, address (2), count (2).
REQUEST_HEADER = 6
#: Bytes of a STATUS response payload.
STATUS_LEN = 15
#: Memories the host may write, and read (the others are write-only, or read-only).
HOST_WRITABLE = ("program", "weights", "thresholds", "activations")
HOST_READABLE = ("activations", "scores")


class Command(IntEnum):
    """Request commands (the ``cmd`` byte)."""

    WRITE = 0x01   # p0 = memory id, count words at address: data follows
    READ = 0x02    # p0 = memory id: the response carries count words from address
    START = 0x04   # p0 = images of the run (1..R)
    STATUS = 0x06  # the response carries the status (STATUS_LEN bytes)


class Status(IntEnum):
    """Response status codes (when several apply, the first in :data:`CHECK_ORDER` wins)."""

    OK = 0
    UNKNOWN_COMMAND = 1
    CHECKSUM = 2
    MEMORY = 3
    RANGE = 4
    LENGTH = 5
    BUSY = 6
    BATCH = 8

    @property
    def text(self) -> str:
        """What the status means, in the words of ``docs/host-protocol.md``."""
        return _STATUS_TEXT[self]


_STATUS_TEXT = {
    Status.OK: "ok", Status.UNKNOWN_COMMAND: "unknown command",
    Status.CHECKSUM: "bad checksum", Status.MEMORY: "bad memory id for this command",
    Status.RANGE: "address range outside the memory",
    Status.LENGTH: "answer longer than 65535 bytes",
    Status.BUSY: "busy (a run is in progress)", Status.BATCH: "bad batch size (1..R images)",
}
#: When several checks fail, the status is the first of these (docs/host-protocol.md).
CHECK_ORDER = (Status.CHECKSUM, Status.UNKNOWN_COMMAND, Status.MEMORY, Status.LENGTH,
               Status.RANGE, Status.BATCH, Status.BUSY)

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


def frame_word_bytes(target, mem: int) -> int:
    """Bytes per word of memory id ``mem`` in a frame: the memory's (``target.word_bits``),
    or 1 for an id that names no memory (so that a device still knows where the frame of a
    WRITE with a bad id ends)."""
    if 0 <= mem < len(MEMORY_NAMES):
        return bytes_per_word(target.word_bits(MEMORY_NAMES[mem]))
    return 1


def words_to_bytes(words, width: int) -> bytes:
    """Little-endian bytes of ``words`` (each ``bytes_per_word(width)`` bytes)."""
    n = bytes_per_word(width)
    return b"".join(int(w).to_bytes(n, "little") for w in words)


def bytes_to_words(data: bytes, width: int) -> list[int]:
    n = bytes_per_word(width)
    if len(data) % n:
        raise AcceleratorError(f"{len(data)} bytes is not a whole number of {n}-byte words")
    return [int.from_bytes(data[i:i + n], "little") for i in range(0, len(data), n)]


def encode_request(cmd: int, p0: int = 0, addr: int = 0, count: int = 0,
                   data: bytes = b"") -> bytes:
    """One request frame: ``A5 cmd p0 addr(2) count(2) data chk``."""
    for name, v, hi in (("cmd", cmd, 0xFF), ("p0", p0, 0xFF), ("address", addr, 0xFFFF),
                        ("count", count, MAX_WORDS)):
        if not 0 <= int(v) <= hi:
            raise ValueError(f"{name} {v} outside 0..{hi}")
    body = (bytes([cmd, p0]) + int(addr).to_bytes(2, "little") + int(count).to_bytes(2, "little")
            + bytes(data))
    return bytes([SYNC_REQUEST]) + body + bytes([checksum(body)])


def encode_write(mem: int, addr: int, words: Sequence[int], width: int) -> list[bytes]:
    """WRITE frames for ``words`` at ``addr`` of memory ``mem`` (split at 65535 words)."""
    words = list(words)
    return [encode_request(Command.WRITE, mem, addr + i, len(words[i:i + MAX_WORDS]),
                           words_to_bytes(words[i:i + MAX_WORDS], width))
            for i in range(0, len(words), MAX_WORDS)]


def encode_read(mem: int, addr: int, count: int) -> bytes:
    """A READ frame (the response carries ``count`` words)."""
    return encode_request(Command.READ, mem, addr, count)


def encode_start(batch: int = 1) -> bytes:
    """A START frame for a run of ``batch`` images."""
    return encode_request(Command.START, batch)


def encode_status_request() -> bytes:
    """A STATUS frame: ``A5 06 00 00 00 00 00 FA``."""
    return encode_request(Command.STATUS)


def encode_response(status: int, payload: bytes = b"") -> bytes:
    """One response frame: ``5A status len_lo len_hi payload checksum`` (a device's side)."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = bytes([status]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([SYNC_RESPONSE]) + body + bytes([checksum(body)])


def request_status(target, depths: dict, cmd: int, p0: int, addr: int, count: int,
                   chk_ok: bool, busy: bool) -> Status:
    """The status a device answers to a request (checks in :data:`CHECK_ORDER`).

    ``depths``: words of each memory. A WRITE writes its words only if every check but the
    checksum passes (the checksum arrives after them).
    """
    mem_cmd = cmd in (Command.WRITE, Command.READ)
    allowed = HOST_WRITABLE if cmd == Command.WRITE else HOST_READABLE
    mem_ok = mem_cmd and p0 < len(MEMORY_NAMES) and MEMORY_NAMES[p0] in allowed
    failed = {
        Status.CHECKSUM: not chk_ok,
        Status.UNKNOWN_COMMAND: cmd not in tuple(Command),
        Status.MEMORY: mem_cmd and not mem_ok,
        Status.LENGTH: mem_ok and cmd == Command.READ
        and count * frame_word_bytes(target, p0) > MAX_PAYLOAD,
        Status.RANGE: mem_ok and addr + count > depths[MEMORY_NAMES[p0]],
        Status.BATCH: cmd == Command.START and not 1 <= p0 <= target.rows,
        Status.BUSY: busy and cmd != Command.STATUS,
    }
    assert set(failed) == set(CHECK_ORDER)
    return next((s for s in CHECK_ORDER if failed[s]), Status.OK)


def classify_wire_bytes(header: dict, target) -> int:
    """Bytes on the wire (both directions) for the driver to classify one image: a WRITE of
    its input words, START, one STATUS poll and a READ of its scores, each with its response
    (``header``: the program's, :func:`xnorflow.sw.program.decode_program`). More polls (a
    long run) only add bytes."""
    frame = 1 + REQUEST_HEADER + 1  # sync, header, checksum
    response = 5  # sync, status, length (2), checksum
    words_in = header["input_words"] * bytes_per_word(target.word_bits("activations"))
    scores = header["score_words"] * bytes_per_word(target.word_bits("scores"))
    return (frame + words_in + response          # WRITE the input
            + frame + response                   # START
            + frame + response + STATUS_LEN      # STATUS
            + frame + response + scores)         # READ the scores


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
    """Decoded STATUS payload."""

    version: int
    rows: int
    cols: int
    width: int
    busy: bool
    done: bool
    error: int
    cycles: int
    depth_log2: dict
    #: rows' weight words per weights-memory word (flags bit 3: ``rows``, else 1;
    #: ``Target.weight_rows``)
    weight_rows: int = 1

    @property
    def geometry(self) -> str:
        return f"{self.rows}x{self.cols}x{self.width}"


def decode_status(payload: bytes) -> StatusReport:
    if len(payload) != STATUS_LEN:
        raise AcceleratorError(f"status payload has {len(payload)} bytes, not {STATUS_LEN}")
    flags = payload[4]
    return StatusReport(payload[0], payload[1], payload[2], payload[3], bool(flags & 1),
                        bool(flags & 2), payload[5], int.from_bytes(payload[6:10], "little"),
                        {name: payload[10 + i] for i, name in enumerate(MEMORY_NAMES)},
                        payload[1] if flags & 8 else 1)


def encode_status(st: StatusReport) -> bytes:
    """The STATUS payload of ``st`` (a device's side; inverse of :func:`decode_status`).
    Flag bit 2 (the last run failed) is set when ``st.error`` is nonzero, bit 3 when the
    weights memory holds a word per row (``st.weight_rows > 1``)."""
    flags = (int(st.busy) | int(st.done) << 1 | int(st.error != 0) << 2
             | int(st.weight_rows > 1) << 3)
    return (bytes([st.version, st.rows, st.cols, st.width, flags, st.error])
            + int(st.cycles).to_bytes(4, "little")
            + bytes(st.depth_log2.get(name, 0) for name in MEMORY_NAMES))
