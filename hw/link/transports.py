"""Transports of the host driver: the same :class:`~xnorflow.hw.link.driver.AcceleratorDriver`
over a serial port, Amaranth's simulator or a cocotb testbench.

A transport has two coroutines, ``write(data: bytes)`` and ``read(n: int) -> bytes``;
``read`` returns fewer than ``n`` bytes when nothing more came within its timeout, which the
driver reports as "no response". Nothing here is imported until used: pyserial when a
:class:`SerialTransport` is opened, cocotb and cocotbext-uart when a
:class:`CocotbUartTransport` is made, so ``xnorflow.hw`` imports without either.

* :class:`SerialTransport` -- a board's UART through pyserial (a device path or a pyserial
  URL); blocking calls run in a worker thread.
* :class:`AmaranthStreamTransport` -- ``host_in`` / ``host_out`` of a component in an
  Amaranth simulator testbench, with seeded random idle cycles and backpressure.
* :class:`CocotbStreamTransport` -- the same streams in a cocotb testbench, through the stream
  driver and monitor of :mod:`xnorflow.sim.tb.streams`.
* :class:`CocotbUartTransport` -- a board top's UART pins in a cocotb testbench, through
  cocotbext-uart's UART model.
"""

from __future__ import annotations

import asyncio
import random
import time

from ...sw.errors import UserError
from ..boards import DEFAULT_BAUD, DEFAULT_TIMEOUT_S

__all__ = ["SerialTransport", "AmaranthStreamTransport", "CocotbStreamTransport",
           "CocotbUartTransport"]


class SerialTransport:
    """Transport over a serial port (a device path such as ``/dev/ttyUSB1`` or a pyserial
    URL such as ``loop://``).

    After an error mid-frame, :meth:`resync` waits longer than the board's inter-byte
    timeout (``docs/host-protocol.md``, "UART link"), so the board's frame decoder is idle
    again, and drops any stale input.

    Parameters
    ----------
    port : str
        Device path or pyserial URL.
    baud : int
        Baud rate (by default the board tops', :data:`xnorflow.hw.boards.DEFAULT_BAUD`).
    timeout : float
        Read/write timeout in seconds.
    device_timeout : float
        The board's inter-byte timeout in seconds (used by :meth:`resync`; by default the
        board tops', :data:`xnorflow.hw.boards.DEFAULT_TIMEOUT_S`).

    Raises
    ------
    UserError
        One line naming the port, when it cannot be opened.
    """

    def __init__(self, port: str, baud: int = DEFAULT_BAUD, timeout: float = 2.0,
                 device_timeout: float = DEFAULT_TIMEOUT_S):
        import serial

        self.port_name = port
        self.device_timeout = device_timeout
        try:
            self.ser = serial.serial_for_url(port, baudrate=baud, timeout=timeout,
                                             write_timeout=timeout)
        except (serial.SerialException, ValueError, OSError) as e:
            reason = getattr(e, "strerror", None) or str(e).split(":")[-1].strip() or str(e)
            raise UserError(
                f"serial port {port}: cannot open ({reason}); is the board plugged in? "
                f"Pass the right --port (ls /dev/ttyUSB* /dev/ttyACM*)"
            ) from None

    async def write(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._write, bytes(data))

    def _write(self, data: bytes) -> None:
        self.ser.write(data)
        self.ser.flush()

    async def read(self, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.ser.read, n)

    def resync(self) -> None:
        """Let the board's decoder time out, then drop stale input bytes."""
        time.sleep(2 * self.device_timeout)
        self.ser.reset_input_buffer()

    def close(self) -> None:
        self.ser.close()

    def __enter__(self) -> SerialTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AmaranthStreamTransport:
    """Transport over ``dut.host_in`` / ``dut.host_out`` (8-bit ``amaranth.lib.stream``
    ports) in an Amaranth simulator testbench ``ctx``; one byte per cycle at most.

    Transfers are decided from values sampled at the clock edge (``ctx.tick().sample``), so
    a byte counts as sent exactly when ``valid`` and ``ready`` were both high at the edge.
    Before each request byte ``host_in.valid`` stays low for a cycle with probability
    ``idle`` (repeatedly), and in each cycle of a response ``host_out.ready`` is low with
    probability ``backpressure``, both drawn from ``rng``. :attr:`cycles` counts the
    simulated cycles the transport has waited.

    ``read`` returns what it has after ``timeout`` cycles without a byte; ``write`` raises
    ``TimeoutError`` when ``host_in`` is not ready for ``timeout`` cycles.
    """

    def __init__(self, ctx, dut, idle: float = 0.0, backpressure: float = 0.0,
                 rng: random.Random | None = None, timeout: int = 200_000):
        self.ctx, self.dut = ctx, dut
        self.idle, self.backpressure = idle, backpressure
        self.rng = rng or random.Random(0)
        self.timeout = timeout
        self.cycles = 0

    async def _tick(self, *sample):
        self.cycles += 1
        _, _, *values = await self.ctx.tick().sample(*sample)
        return values

    async def write(self, data: bytes) -> None:
        ctx, port = self.ctx, self.dut.host_in
        for b in data:
            while self.idle and self.rng.random() < self.idle:
                ctx.set(port.valid, 0)
                await self._tick()
            ctx.set(port.payload, int(b))
            ctx.set(port.valid, 1)
            for _ in range(self.timeout):
                (ready,) = await self._tick(port.ready)
                if ready:
                    break
            else:
                raise TimeoutError(f"host_in not ready for {self.timeout} cycles")
        ctx.set(port.valid, 0)

    async def read(self, n: int) -> bytes:
        ctx, port = self.ctx, self.dut.host_out
        out = bytearray()
        idle = 0
        while len(out) < n and idle < self.timeout:
            ready = 0 if (self.backpressure and self.rng.random() < self.backpressure) else 1
            ctx.set(port.ready, ready)
            valid, payload = await self._tick(port.valid, port.payload)
            if ready and valid:
                out.append(int(payload))
                idle = 0
            else:
                idle += 1
        ctx.set(port.ready, 0)
        return bytes(out)


class CocotbStreamTransport:
    """Transport over a design's ``host_in`` / ``host_out`` in a cocotb testbench.

    ``driver`` and ``monitor`` are the cocotb stream driver and monitor of those ports
    (:class:`xnorflow.sim.tb.streams.StreamDriver` / ``StreamMonitor``, which insert the
    random idle cycles and backpressure): ``driver.write(data)`` returns when every byte
    has been taken, ``monitor.read(n)`` when ``n`` bytes have come.
    """

    def __init__(self, driver, monitor):
        self.driver = driver
        self.monitor = monitor

    async def write(self, data: bytes) -> None:
        await self.driver.write(data)

    async def read(self, n: int) -> bytes:
        return bytes(await self.monitor.read(n))

    def reset(self) -> None:
        """Drop everything in flight (after a design reset or abort)."""
        self.driver.clear()
        self.monitor.clear()


class CocotbUartTransport:
    """Transport over a board top's UART pins in a cocotb testbench: cocotbext-uart's
    ``UartSource`` drives ``rx``, its ``UartSink`` listens on ``tx`` (8N1 at ``baud``).

    ``write`` returns when the last stop bit is on the line; ``read`` returns as soon as the
    ``n``-th byte has come (the sink has a byte at the middle of its stop bit), or with what
    it has after ``read_timeout_ns`` without a byte. Both wait on the UART model's events,
    not by polling, so the host answers at once (no turnaround: ``benchmarks/link.py``
    times the link with it).
    """

    def __init__(self, rx, tx, baud: float, read_timeout_ns: int = 2_000_000):
        from cocotbext.uart import UartSink, UartSource

        self.source = UartSource(rx, baud=baud, bits=8)
        self.sink = UartSink(tx, baud=baud, bits=8)
        self.read_timeout_ns = read_timeout_ns
        self._buf = bytearray()

    async def write(self, data: bytes) -> None:
        await self.source.write(bytes(data))
        await self.source.wait()

    async def read(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self.sink.empty():
                await self.sink.wait(self.read_timeout_ns, "ns")
                if self.sink.empty():
                    break
            self._buf += self.sink.read_nowait()
        out, self._buf = bytes(self._buf[:n]), self._buf[n:]
        return out

    def flush_input(self) -> None:
        """Drop bytes received and not yet read."""
        self._buf.clear()
        self.sink.clear()
