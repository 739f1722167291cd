"""The host link, one unit: the accelerator's command decoder (gateware) beside the host
driver that talks to it, its transports and the session every backend runs.

``docs/host-protocol.md`` is the specification. The modules, from the wire up:

* :mod:`~xnorflow.hw.link.protocol` -- sync bytes, :class:`Command`, :class:`Status`,
  :data:`MemoryId`, payload layouts and the frame encoders/decoders (no I/O);
* :mod:`~xnorflow.hw.link.decoder` -- :class:`HostDecoder`, the gateware that parses request
  frames from the ``host_in`` byte stream, accesses the memories and answers on ``host_out``
  (inside :class:`~xnorflow.hw.accelerator.Accelerator`; a board top puts the UART of
  :mod:`xnorflow.hw.uart` around those streams);
* :mod:`~xnorflow.hw.link.driver` -- :class:`AcceleratorDriver`, async, over any transport;
* :mod:`~xnorflow.hw.link.transports` -- a serial port (pyserial), Amaranth's simulator and
  cocotb (streams or UART pins);
* :mod:`~xnorflow.hw.link.session` -- :class:`HostSession`: load a compiled model, classify
  images or batches, read the hidden layers back;
* :mod:`~xnorflow.hw.link.throughput` -- the link model (images/s over a UART) and the baud
  rates a board can run.

The driver the tests run in simulation is the one that talks to a board
(``xnorflow board``, and the ``board`` backend of ``xnorflow run`` / ``compare``).
"""

from .decoder import HostDecoder
from .driver import AcceleratorDriver
from .protocol import (
    HOST_READABLE,
    HOST_WRITABLE,
    MAX_PAYLOAD,
    MAX_WORDS,
    PROTOCOL_VERSION,
    REQUEST_HEADER,
    STATUS_LEN,
    SYNC_REQUEST,
    SYNC_RESPONSE,
    AcceleratorError,
    Command,
    MemoryId,
    Status,
    StatusReport,
    bytes_per_word,
    bytes_to_words,
    checksum,
    decode_response,
    decode_status,
    encode_read,
    encode_request,
    encode_response,
    encode_start,
    encode_status,
    encode_status_request,
    encode_write,
    frame_word_bytes,
    request_status,
    words_to_bytes,
)
from .session import HostSession, ImageResult
from .transports import (
    AmaranthStreamTransport,
    CocotbStreamTransport,
    CocotbUartTransport,
    SerialTransport,
)

__all__ = [
    "HostDecoder", "AcceleratorDriver", "HostSession", "ImageResult",
    "SerialTransport", "AmaranthStreamTransport", "CocotbStreamTransport",
    "CocotbUartTransport", "HOST_READABLE", "HOST_WRITABLE", "MAX_PAYLOAD", "MAX_WORDS",
    "PROTOCOL_VERSION", "REQUEST_HEADER", "STATUS_LEN", "SYNC_REQUEST", "SYNC_RESPONSE",
    "AcceleratorError", "Command", "MemoryId", "Status", "StatusReport", "bytes_per_word",
    "bytes_to_words", "checksum", "decode_response", "decode_status", "encode_read",
    "encode_request", "encode_response", "encode_start", "encode_status",
    "encode_status_request", "encode_write", "frame_word_bytes", "request_status",
    "words_to_bytes",
]
