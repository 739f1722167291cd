"""cocotb drivers and monitors for ``amaranth.lib.stream`` ports, with idle and backpressure.

Amaranth flattens a stream port ``host_in`` into ``host_in__valid``, ``host_in__ready`` and
``host_in__payload``. Both classes act once per cycle, in a ``RisingEdge`` callback. There the
simulator has not yet evaluated the edge (Icarus runs the callback before the non-blocking
updates, Verilator before ``eval_step``), so ``valid`` and ``ready`` read as they were just
before the edge -- a transfer happened at this edge iff both were high -- and the values the
classes write take effect after the edge, for the next cycle.

Random idle cycles (the driver holds ``valid`` low) and backpressure (the monitor holds
``ready`` low) are drawn from a ``random.Random`` the test seeds and prints, in the style of
cocotbext-axi's idle/backpressure inserters. Both obey Amaranth's stream rules: ``valid``
never waits for ``ready``, and the payload is held while ``valid`` is high. The host driver
talks through a driver and a monitor with
:class:`xnorflow.hw.link.transports.CocotbStreamTransport`.
"""

from __future__ import annotations

import random
from collections import deque

from cocotb.triggers import ClockCycles, Event, RisingEdge

from xnorflow.hw.link.transports import CocotbStreamTransport


class StreamDriver:
    """Drive bytes (or wider words) into a stream sink port of the design.

    Parameters
    ----------
    dut, prefix :
        The toplevel handle and the port name (``"host_in"``).
    clk :
        The clock the design samples on.
    idle_prob :
        Probability of inserting an idle cycle before each transfer.
    rng :
        Source of idle decisions (seed it and print the seed).
    """

    def __init__(self, dut, prefix: str, clk, idle_prob: float = 0.0, rng=None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clk = clk
        self.idle_prob = idle_prob
        self.rng = rng or random.Random(0)
        self.queue: deque[int] = deque()
        self.sent = 0
        self._driving = False
        self._idle_event = Event()
        self._idle_event.set()
        self._valid = 0
        self.valid.value = 0
        self.payload.value = 0

    def clear(self) -> None:
        """Forget queued data and drop ``valid`` (used around a reset or abort)."""
        self.queue.clear()
        self._driving = False
        self._valid = 0
        self.valid.value = 0
        self._idle_event.set()

    def write_nowait(self, data) -> None:
        """Queue ``data`` (bytes or an iterable of ints) for sending."""
        self.queue.extend(int(b) for b in data)
        if self.queue:
            self._idle_event.clear()

    async def write(self, data) -> None:
        """Queue ``data`` and wait until every word of it has been transferred."""
        self.write_nowait(data)
        await self.wait_idle()

    async def wait_idle(self) -> None:
        if self.queue or self._driving:
            self._idle_event.clear()
            await self._idle_event.wait()

    def step(self) -> None:
        """Advance one cycle; call in a ``RisingEdge`` callback (see the module docstring)."""
        if self._driving and int(self.ready.value):
            self.sent += 1
            self.queue.popleft()
            self._driving = False
        if not self._driving:
            if self.queue and not (self.idle_prob and self.rng.random() < self.idle_prob):
                self.payload.value = self.queue[0]
                self._set_valid(1)
                self._driving = True
            else:
                self._set_valid(0)
                if not self.queue:
                    self._idle_event.set()

    def _set_valid(self, v: int) -> None:
        # write only on change: a VPI write per cycle is most of a testbench's cost
        if v != self._valid:
            self.valid.value = v
            self._valid = v

    async def run(self) -> None:
        """Run :meth:`step` at every rising edge forever (``cocotb.start_soon`` it)."""
        edge = RisingEdge(self.clk)
        while True:
            await edge
            self.step()


class StreamMonitor:
    """Receive words from a stream source port of the design, with random backpressure.

    ``backpressure_prob`` is the probability that ``ready`` is low in a given cycle.
    Received words accumulate in :attr:`received`; :meth:`read` waits for ``n`` of them.
    """

    def __init__(self, dut, prefix: str, clk, backpressure_prob: float = 0.0, rng=None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clk = clk
        self.backpressure_prob = backpressure_prob
        self.rng = rng or random.Random(0)
        self.received: deque[int] = deque()
        self.count = 0
        self._want = 0
        self._event = Event()
        self._ready = 0
        self._set_ready(force=True)

    def _set_ready(self, force: bool = False) -> None:
        bp = self.backpressure_prob and self.rng.random() < self.backpressure_prob
        ready = 0 if bp else 1
        if force or ready != self._ready:
            self.ready.value = ready
        self._ready = ready

    def clear(self) -> None:
        self.received.clear()
        self._want = 0

    def step(self) -> None:
        """Advance one cycle at the rising edge: record a transfer, then choose ``ready``."""
        if self._ready and int(self.valid.value):
            self.received.append(int(self.payload.value))
            self.count += 1
            if self._want and len(self.received) >= self._want:
                self._event.set()
        self._set_ready()

    async def read(self, n: int) -> bytes:
        """Wait for ``n`` words and return them (as bytes when they are bytes)."""
        while len(self.received) < n:
            self._want = n
            self._event.clear()
            await self._event.wait()
        self._want = 0
        out = [self.received.popleft() for _ in range(n)]
        return bytes(out) if all(v < 256 for v in out) else out

    async def run(self) -> None:
        edge = RisingEdge(self.clk)
        while True:
            await edge
            self.step()


class StreamPair:
    """A driver and a monitor stepped by one coroutine (half the Python callbacks per cycle).

    Also counts clock cycles (:attr:`cycles`), which the testbenches report as simulated
    cycles.
    """

    def __init__(self, driver: StreamDriver, monitor: StreamMonitor):
        self.driver = driver
        self.monitor = monitor
        self.cycles = 0

    async def run(self) -> None:
        edge = RisingEdge(self.driver.clk)
        while True:
            await edge
            self.cycles += 1
            self.monitor.step()
            self.driver.step()


async def reset_during_traffic(dut, link: CocotbStreamTransport, cycles: int) -> None:
    """Hold ``dut.rst`` high for ``cycles`` clock cycles, possibly in the middle of a frame
    or a run; ``link`` drops what it has in flight at the first edge and after release."""
    clk = link.driver.clk
    dut.rst.value = 1
    await RisingEdge(clk)
    link.reset()
    await ClockCycles(clk, cycles)
    dut.rst.value = 0
    await RisingEdge(clk)
    link.reset()
