"""A pyserial transport for the host driver (:class:`xnorflow.hw.driver.AcceleratorDriver`).

The driver talks to any object with ``async write(data: bytes)`` and ``async read(n) ->
bytes``; the RTL tests use a UART model (``sim/tb/test_board_top.py``), a real board uses
:class:`SerialTransport`. Blocking pyserial calls run in a worker thread, so the driver's
coroutines are the same in simulation and on hardware. ``read`` returns fewer than ``n``
bytes when the port's read timeout expires; the driver reports that as "no response".

After an error mid-frame, :meth:`SerialTransport.resync` waits longer than the board's
inter-byte timeout (``docs/host-protocol.md``, "UART link"), so the board's frame decoder is
idle again, and drops any stale input.
"""

from __future__ import annotations

import asyncio
import time

from ..sw.errors import UserError

__all__ = ["SerialTransport", "open_serial"]


class SerialTransport:
    """Transport over a serial port (a device path such as ``/dev/ttyUSB1`` or a pyserial
    URL such as ``loop://``).

    Parameters
    ----------
    port : str
        Device path or pyserial URL.
    baud : int
        Baud rate (the board top's, 1 000 000 by default).
    timeout : float
        Read/write timeout in seconds.
    device_timeout : float
        The board's inter-byte timeout in seconds (used by :meth:`resync`).
    """

    def __init__(self, port: str, baud: int = 1_000_000, timeout: float = 2.0,
                 device_timeout: float = 0.05):
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


def open_serial(port: str, baud: int = 1_000_000, timeout: float = 2.0) -> SerialTransport:
    """Open ``port`` (one-line :class:`UserError` if it cannot be opened)."""
    return SerialTransport(port, baud, timeout)
