"""UART receiver, transmitter and the bridge between a UART and the accelerator's byte streams.

The board tops put :class:`UARTBridge` between the FPGA's UART pins and the accelerator's
``host_in`` / ``host_out`` byte streams (``docs/host-protocol.md``, section "UART link").
Frames are 8N1 (one start bit, eight data bits LSB first, one stop bit, no parity) at
``clk_freq / divisor`` baud.

Error handling (so that nothing hangs and the device is always ready for the next command):

* a byte whose stop bit reads 0 is a *framing error*: the byte is dropped, the receiver waits
  for the line to return high (a break is one long framing error), and the bridge pulses
  ``abort`` so the accelerator's frame decoder returns to idle;
* a byte that arrives while the previous one has not been accepted is an *overrun*: it is
  dropped and ``abort`` is pulsed (the frame it belonged to is incomplete anyway);
* an *inter-byte timeout*: once a byte has been accepted, if no further byte arrives within
  ``timeout`` cycles, ``abort`` is pulsed once (the count restarts while a response byte is
  waiting or on the line, so a long response is never cut). A host that stops in the middle
  of a frame (a short frame) therefore leaves the decoder idle again after the timeout. The
  accelerator ignores ``abort`` when its decoder is already idle, so the pulse after a
  complete frame is harmless.
"""


from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["BAUD_TOLERANCE", "UARTRx", "UARTTx", "UARTBridge", "uart_divisor"]

#: Largest relative difference :func:`uart_divisor` allows between the rate asked for and the
#: rate a divisor makes (8N1 tolerates about 4 % between the two ends together).
BAUD_TOLERANCE = 0.02


def uart_divisor(clk_freq: float, baud: int, *, tolerance: float = BAUD_TOLERANCE) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq`` Hz.

    Raises ``ValueError`` if the rounded divisor is below 4 (too few samples per bit) or the
    resulting baud rate is off by more than ``tolerance`` (2 % by default; 8N1 tolerates about
    4 % between the two ends together).
    """
    if baud <= 0 or clk_freq <= 0:
        raise ValueError(f"baud ({baud}) and clk_freq ({clk_freq}) must be positive")
    divisor = round(clk_freq / baud)
    if divisor < 4:
        raise ValueError(
            f"baud {baud} is too fast for a {clk_freq / 1e6:g} MHz clock "
            f"(divisor {clk_freq / baud:.2f} < 4)"
        )
    err = abs(clk_freq / divisor - baud) / baud
    if err > tolerance:
        raise ValueError(
            f"baud {baud} at {clk_freq / 1e6:g} MHz: divisor {divisor} gives "
            f"{clk_freq / divisor:.0f} baud ({err:.1%} off, more than {tolerance:.0%})"
        )
    return divisor


def _check_divisor(divisor: int) -> None:
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"divisor must be an integer >= 4 (cycles per bit), not {divisor!r}")


class UARTRx(wiring.Component):
    """8N1 UART receiver.

    The line is synchronised with two flip-flops, the start bit is confirmed at its middle
    and each data bit and the stop bit are sampled at their middles (counted from the
    falling edge of the start bit).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Members
    -------
    rx : In(1)
        The serial line (idle high).
    out : Out(stream.Signature(8))
        Received bytes. ``valid`` rises one cycle after the middle of the stop bit and stays
        high until ``ready``; a byte that completes while the previous one is still waiting
        is dropped (``overrun``).
    frame_error : Out(1)
        One-cycle pulse: a stop bit read 0; the byte is dropped and the receiver waits for
        the line to go high before looking for the next start bit.
    overrun : Out(1)
        One-cycle pulse: a byte was dropped because ``out`` was not accepted in time.
    busy : Out(1)
        A byte is being received (from the start bit to the middle of the stop bit).

    Latency and throughput: a byte appears ``9.5 * divisor + 3`` cycles after its start
    bit's falling edge; one byte per ``10 * divisor`` cycles (line rate).
    """

    rx: In(1, init=1)
    out: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)
    busy: Out(1)

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)

        # down-counters: loaded with n - 1, "expired" is the sign bit, reached after n cycles
        # (one LUT input instead of a zero-detect tree on the critical path)
        timer = Signal(d.bit_length() + 1)
        expired = timer[-1]
        bits = Signal(range(9))
        shreg = Signal(8)
        data = Signal(8)
        valid = Signal()
        m.d.comb += [self.out.valid.eq(valid), self.out.payload.eq(data)]
        with m.If(self.out.ready):
            m.d.sync += valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(d // 2 - 2)
                    m.next = "START"
            with m.State("START"):
                m.d.comb += self.busy.eq(1)
                with m.If(expired):
                    m.d.sync += [timer.eq(d - 2), bits.eq(0)]
                    with m.If(rx):
                        m.next = "IDLE"  # a glitch, not a start bit
                    with m.Else():
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                m.d.comb += self.busy.eq(1)
                with m.If(expired):
                    m.d.sync += [timer.eq(d - 2), shreg.eq(Cat(shreg[1:], rx)), bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                m.d.comb += self.busy.eq(1)
                with m.If(expired):
                    with m.If(rx):
                        with m.If(valid & ~self.out.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [data.eq(shreg), valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.frame_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 UART transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Members
    -------
    inp : In(stream.Signature(8))
        Bytes to send; ``ready`` is high while the transmitter is idle and in the last
        cycle of a stop bit.
    tx : Out(1)
        The serial line (idle high).
    busy : Out(1)
        A character is on the line.

    Latency and throughput: the start bit begins the cycle after a byte is accepted; one
    byte per ``10 * divisor`` cycles (back to back), the same as :class:`UARTRx`.
    """

    inp: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        timer = Signal(d.bit_length() + 1)  # down-counter, expired = sign bit (see UARTRx)
        shreg = Signal(10, init=0x3FF)
        left = Signal(range(11))
        # the next byte may be taken in the last cycle of the stop bit, so the transmitter
        # keeps up with a receiver at the same baud rate (exactly 10 bit times per byte)
        last = (left == 1) & timer[-1]
        m.d.comb += [self.tx.eq(shreg[0]), self.inp.ready.eq((left == 0) | last),
                     self.busy.eq(left != 0)]
        with m.If(self.inp.ready & self.inp.valid):
            m.d.sync += [
                shreg.eq(Cat(Const(0, 1), self.inp.payload, Const(1, 1))),
                left.eq(10),
                timer.eq(d - 2),
            ]
        with m.Elif(left != 0):
            with m.If(timer[-1]):
                m.d.sync += [
                    shreg.eq(Cat(shreg[1:], Const(1, 1))),
                    left.eq(left - 1),
                    timer.eq(d - 2),
                ]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UARTBridge(wiring.Component):
    """A UART on one side, the accelerator's byte streams and ``abort`` on the other.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4); see :func:`uart_divisor`.
    timeout : int
        Inter-byte timeout in clock cycles (>= ``20 * divisor``): ``abort`` is pulsed once
        when no byte has arrived for this long after the last accepted byte and the last
        response byte sent.

    Members
    -------
    rx : In(1)
        UART receive pin (from the host).
    tx : Out(1)
        UART transmit pin (to the host).
    host_in : Out(stream.Signature(8))
        Bytes from the host, to the accelerator's ``host_in``. One byte of buffering; the
        accelerator must accept each byte within one byte time (``10 * divisor`` cycles)
        or it is dropped (overrun, followed by ``abort``).
    host_out : In(stream.Signature(8))
        Bytes to the host, from the accelerator's ``host_out`` (back-pressured at line rate).
    abort : Out(1)
        One-cycle pulse on a framing error, an overrun or an inter-byte timeout; connect to
        the accelerator's ``abort``.
    frame_error, overrun, timed_out : Out(1)
        The individual one-cycle causes of ``abort`` (for status LEDs and tests).

    Latency and throughput: those of :class:`UARTRx` and :class:`UARTTx` (no extra stage);
    full duplex at line rate.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    host_in: Out(stream.Signature(8))
    host_out: In(stream.Signature(8))
    abort: Out(1)
    frame_error: Out(1)
    overrun: Out(1)
    timed_out: Out(1)

    def __init__(self, divisor: int, timeout: int):
        _check_divisor(divisor)
        if not isinstance(timeout, int) or timeout < 20 * divisor:
            raise ValueError(
                f"timeout must be an integer >= 20 * divisor = {20 * divisor} cycles, "
                f"not {timeout!r}"
            )
        self._divisor = divisor
        self._timeout = timeout
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UARTRx(self._divisor)
        m.submodules.tx = tx = UARTTx(self._divisor)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        wiring.connect(m, rx.out, wiring.flipped(self.host_in))
        wiring.connect(m, wiring.flipped(self.host_out), tx.inp)

        # down-counter: loaded with timeout - 2 while bytes arrive, fires at its sign bit
        left = Signal(self._timeout.bit_length() + 1)
        armed = Signal()
        # the receiver's errors, registered: `overrun` is logic on the accelerator's `ready`,
        # which must not reach the timeout counter's enables (a cycle later is soon enough)
        rx_error = Signal()
        m.d.sync += rx_error.eq(rx.frame_error | rx.overrun)
        with m.If(rx_error):
            m.d.sync += armed.eq(0)
        with m.Elif(rx.busy | rx.out.valid):
            # counting starts when the accelerator has accepted the last byte
            m.d.sync += [left.eq(self._timeout - 2), armed.eq(1)]
        with m.Elif(self.host_out.valid | tx.busy):
            # ... and pauses while a response is on its way (a long READ_MEM response must
            # not be cut by a timeout: the abort would drop it)
            m.d.sync += left.eq(self._timeout - 2)
        with m.Elif(armed):
            with m.If(left[-1]):
                m.d.comb += self.timed_out.eq(1)
                m.d.sync += armed.eq(0)
            m.d.sync += left.eq(left - 1)
        m.d.comb += [
            self.frame_error.eq(rx.frame_error),
            self.overrun.eq(rx.overrun),
            self.abort.eq(self.timed_out | rx_error),
        ]
        return m
