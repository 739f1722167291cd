"""The host link's throughput model: images/s over a UART as a function of the baud rate, the
batch, the bytes of an image's input and scores, the cycles of a run and the clock.

What the driver sends (:meth:`~xnorflow.hw.link.driver.AcceleratorDriver.classify_stream`,
``docs/host-protocol.md``, "Throughput"): per run of ``N`` images one WRITE of their input
words, one START, and READs of their scores; a READ that comes while the run is still going
is answered BUSY and sent again (the poll). Frame sizes are those of
:mod:`xnorflow.hw.link.protocol`. Protocol 2 refuses every WRITE while a run is in progress
(BUSY), so the next batch's input cannot cross the line during a run: the link and the array
take turns, and a run costs

``(bytes of its frames) * 10 / baud + (the run's cycles not hidden behind the START's
response and the BUSY READs)``.

Timing of one request and its response (``transaction_s``), from the gateware's documented
latencies: the UART receiver presents a byte 9.5 bit times + :data:`RX_LATENCY` cycles after
its start bit (:class:`~xnorflow.hw.uart.UARTRx`); the decoder's response starts
:data:`RESPONSE_LATENCY` cycles after the checksum byte is taken
(:class:`~xnorflow.hw.link.decoder.HostDecoder`); the transmitter's start bit begins the cycle
after it takes a byte (:class:`~xnorflow.hw.uart.UARTTx`); the host has a byte at the middle
of its stop bit and sends the next request at once (plus ``turnaround_s``, 0 in simulation;
a USB bridge adds its own latency on a board, which this model does not know). So a request
of ``L`` bytes and its response of ``M`` bytes take ``(L + M) * 10 - 1`` bit times and
:data:`TURN_CYCLES` cycles. A run starts :data:`START_LATENCY` cycles after the START's
checksum byte is taken and lasts its cycle count; a READ sees it busy when its header's last
byte is taken (plus :data:`CHECK_LATENCY`) before the run ends.

``benchmarks/link.py`` checks this model against simulations of the board top (UART bridge
and accelerator) driven by the real driver over a simulated serial line.

Baud rates a board can run (:func:`baud_problem`, :func:`fastest_baud`): its bridge chip must
make the rate (:class:`xnorflow.sw.boards.UartBridge`), the gateware must (an integer
divisor of the system clock >= 4 within :data:`~xnorflow.hw.uart.BAUD_TOLERANCE`,
:func:`~xnorflow.hw.uart.uart_divisor`), and the two rates may differ by at most that
tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..uart import BAUD_TOLERANCE, uart_divisor
from .protocol import REQUEST_HEADER, bytes_per_word

__all__ = ["CHAR_BITS", "CHECK_LATENCY", "REQUEST_BYTES", "RESPONSE_BYTES", "RESPONSE_LATENCY",
           "RX_LATENCY", "START_LATENCY", "TURN_CYCLES", "TX_LATENCY", "LinkRate",
           "baud_problem", "board_clock", "fastest_baud", "image_bytes", "link_rate",
           "stream_frames", "transaction_s"]

#: Bits of one 8N1 character on the line (start, 8 data, stop).
CHAR_BITS = 10
#: Bytes of a request without data (sync, header, checksum) and of a response without payload
#: (sync, status, length, checksum).
REQUEST_BYTES = 1 + REQUEST_HEADER + 1
RESPONSE_BYTES = 5
#: Cycles from the middle of a received byte's stop bit to the receiver's ``valid``
#: (``UARTRx``: "a byte appears 9.5 * divisor + 3 cycles after its start bit").
RX_LATENCY = 3
#: Cycles from the checksum byte taken to the response's first byte valid (``HostDecoder``).
RESPONSE_LATENCY = 5
#: Cycles from a byte valid at the transmitter to its start bit on the line (``UARTTx``).
TX_LATENCY = 1
#: Cycles of one request-response turn: received, answered, sent.
TURN_CYCLES = RX_LATENCY + RESPONSE_LATENCY + TX_LATENCY
#: Cycles from a START's checksum byte taken to the run's first busy cycle (the decoder's
#: STAT and EXEC states, its registered ``start`` pulse, the sequencer's registered ``busy``).
START_LATENCY = 4
#: Cycles from a request's last header byte taken to the decoder's sample of ``busy``.
CHECK_LATENCY = 1


def image_bytes(header: dict, target) -> tuple[int, int]:
    """Bytes of one image's input words and of its score words on the wire (``header``: the
    program's, :func:`xnorflow.sw.program.decode_program`)."""
    return (header["input_words"] * bytes_per_word(target.word_bits("activations")),
            header["score_words"] * bytes_per_word(target.word_bits("scores")))


def stream_frames(batch: int, input_bytes: int, score_bytes: int,
                  busy_reads: int = 0) -> list[tuple[str, int, int]]:
    """``(command, request bytes, response bytes)`` of one run of ``batch`` images as the
    driver streams it: WRITE the inputs, START, ``busy_reads`` READs answered BUSY, the READ
    of the scores."""
    return ([("WRITE", REQUEST_BYTES + batch * input_bytes, RESPONSE_BYTES),
             ("START", REQUEST_BYTES, RESPONSE_BYTES)]
            + [("READ (busy)", REQUEST_BYTES, RESPONSE_BYTES)] * busy_reads
            + [("READ", REQUEST_BYTES, RESPONSE_BYTES + batch * score_bytes)])


def transaction_s(request: int, response: int, baud: float, clock_hz: float,
                  turnaround_s: float = 0.0) -> float:
    """Seconds from a request's first start bit until the host has its response's last byte
    and sends the next request (see the module's docstring)."""
    return ((request + response) * CHAR_BITS - 1) / baud + TURN_CYCLES / clock_hz + turnaround_s


@dataclass(frozen=True)
class LinkRate:
    """One run of ``batch`` images streamed over the link (:func:`link_rate`)."""

    baud: float
    clock_hz: float
    batch: int
    run_cycles: int
    busy_reads: int
    bytes_per_run: int
    seconds_per_run: float
    turnaround_s: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.batch / self.seconds_per_run

    @property
    def bytes_per_image(self) -> float:
        return self.bytes_per_run / self.batch

    @property
    def line_s(self) -> float:
        """Seconds the bytes alone take on the line (10 bits each)."""
        return self.bytes_per_run * CHAR_BITS / self.baud

    def to_json(self) -> dict:
        return {"baud": self.baud, "clock_mhz": self.clock_hz / 1e6, "batch": self.batch,
                "run_cycles": self.run_cycles, "busy_reads": self.busy_reads,
                "bytes_per_run": self.bytes_per_run, "bytes_per_image": self.bytes_per_image,
                "seconds_per_run": self.seconds_per_run, "images_per_s": self.images_per_s,
                "turnaround_s": self.turnaround_s}


def link_rate(baud: float, clock_hz: float, batch: int, input_bytes: int, score_bytes: int,
              run_cycles: int, turnaround_s: float = 0.0) -> LinkRate:
    """Images/s of streaming runs of ``batch`` images, each ``run_cycles`` cycles at
    ``clock_hz``, over a ``baud`` UART (``input_bytes``/``score_bytes`` per image:
    :func:`image_bytes`); ``turnaround_s``: the host's delay before each request."""
    for name, v in (("baud", baud), ("clock_hz", clock_hz)):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a positive number, not {v!r}")
    if batch < 1 or run_cycles < 0:
        raise ValueError(f"batch ({batch}) must be >= 1 and run_cycles ({run_cycles}) >= 0")
    bit, cycle = 1 / baud, 1 / clock_hz
    start = transaction_s(REQUEST_BYTES, RESPONSE_BYTES, baud, clock_hz, turnaround_s)
    # from the START's first start bit: the run, and the busy sample of each READ after it
    run_end = (((REQUEST_BYTES - 1) * CHAR_BITS + 9.5) * bit
               + (RX_LATENCY + START_LATENCY + run_cycles) * cycle)
    sample = (((REQUEST_BYTES - 2) * CHAR_BITS + 9.5) * bit
              + (RX_LATENCY + CHECK_LATENCY) * cycle)
    busy_reads = 0
    while start + busy_reads * start + sample < run_end:  # a poll is a START-sized turn
        busy_reads += 1
    frames = stream_frames(batch, input_bytes, score_bytes, busy_reads)
    seconds = sum(transaction_s(req, resp, baud, clock_hz, turnaround_s)
                  for _, req, resp in frames)
    return LinkRate(baud, clock_hz, batch, run_cycles, busy_reads,
                    sum(req + resp for _, req, resp in frames), seconds, turnaround_s)


# ----- which baud rates a board can run ---------------------------------------------------
def board_clock(board, freq: float | None = None) -> float:
    """The system clock (Hz) ``board``'s top makes when asked for ``freq`` (its
    ``default_freq`` if None): the oscillator itself, or what the PLL really makes
    (:func:`xnorflow.hw.boards.board_pll`, as :class:`~xnorflow.hw.boards.PlatformTop`
    uses it); ``ValueError`` if the PLL cannot make it."""
    from ..boards import board_pll

    return board_pll(board, freq)[1]


def baud_problem(board, baud: float, clock_hz: float) -> str | None:
    """What stops ``board`` running its UART at ``baud`` with a ``clock_hz`` system clock, or
    None: its bridge chip cannot make the rate (above its maximum, or no divisor near it),
    the gateware cannot (divisor below 4 or off by more than the tolerance), or the two
    rates differ by more than :data:`~xnorflow.hw.uart.BAUD_TOLERANCE`."""
    bridge = board.uart_bridge
    if not baud > 0:
        return f"must be a positive number of bits per second, not {baud}"
    if baud > bridge.max_baud:
        return (f"the {board.name}'s {bridge.chip} UART bridge runs at most "
                f"{bridge.max_baud:,} baud")
    made = bridge.rate(baud)
    if made is None:
        return (f"the {board.name}'s {bridge.chip} cannot make {baud:,} baud (it makes "
                f"{bridge.reference / 1e6:g} MHz / (1, 1.5 or 2, 2.125, 2.25, ...))")
    try:
        divisor = uart_divisor(clock_hz, baud)
    except ValueError as e:
        return f"the {board.name}'s gateware cannot: {e}"
    fpga = clock_hz / divisor
    if abs(fpga - made) > BAUD_TOLERANCE * made:
        return (f"the {bridge.chip} makes {made:,.0f} baud, the gateware {fpga:,.0f} "
                f"({clock_hz / 1e6:g} MHz / {divisor}): {abs(fpga - made) / made:.1%} apart, "
                f"more than {BAUD_TOLERANCE:.0%}")
    return None


def fastest_baud(board, clock_hz: float) -> int:
    """The fastest whole baud rate ``board``'s bridge makes exactly that its gateware can run
    at ``clock_hz`` (:func:`baud_problem`)."""
    for made in board.uart_bridge.rates(lowest=clock_hz / 2 ** 20):
        if made == int(made) and baud_problem(board, int(made), clock_hz) is None:
            return int(made)
    raise ValueError(f"{board.name}: no baud rate of its bridge runs at {clock_hz / 1e6:g} MHz")
