"""UART receiver, transmitter and bridge in Amaranth's simulator, against a bit-level model."""


import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from xnorflow.hw.uart import UARTBridge, UARTRx, UARTTx, uart_divisor


def _frame(byte: int, stop: int = 1) -> list[int]:
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


async def _send(ctx, pin, byte: int, divisor: int, *, stop: int = 1, skew: int = 0) -> None:
    """Drive one 8N1 frame on ``pin``; ``skew`` lengthens each bit by that many cycles."""
    for bit in _frame(byte, stop):
        ctx.set(pin, bit)
        await ctx.tick().repeat(divisor + skew)
    ctx.set(pin, 1)


async def _recv(ctx, pin, divisor: int, max_wait: int = 10_000) -> int:
    """Decode one 8N1 frame from ``pin`` (sampling mid-bit); checks the stop bit."""
    for _ in range(max_wait):
        if not ctx.get(pin):
            break
        await ctx.tick()
    else:
        raise AssertionError("no start bit")
    await ctx.tick().repeat(divisor // 2)
    assert ctx.get(pin) == 0, "start bit too short"
    value = 0
    for i in range(8):
        await ctx.tick().repeat(divisor)
        value |= ctx.get(pin) << i
    await ctx.tick().repeat(divisor)
    assert ctx.get(pin) == 1, "stop bit is 0"
    return value


def test_divisor():
    assert uart_divisor(12e6, 115200) == 104
    assert uart_divisor(48e6, 3_000_000) == 16
    with pytest.raises(ValueError, match="too fast"):
        uart_divisor(12e6, 6_000_000)
    with pytest.raises(ValueError, match="off"):
        uart_divisor(12e6, 1_400_000)  # divisor 8.57 -> 9 gives 1.333 Mbaud, 4.8 % off
    with pytest.raises(ValueError, match="divisor"):
        UARTRx(3)


# skew: each bit is one cycle long or short (3 % at divisor 32; 8N1 tolerates about 5 %)
@pytest.mark.parametrize("divisor,skew", [(4, 0), (7, 0), (32, 0), (32, 1)])
def test_rx_bytes(divisor, skew):
    rng = random.Random(divisor * 10 + skew)
    data = [rng.randrange(256) for _ in range(12)] + [0x00, 0xFF, 0x55]
    dut = UARTRx(divisor)
    got, errors = [], []

    async def driver(ctx):
        await ctx.tick().repeat(5)
        for b in data:
            await _send(ctx, dut.rx, b, divisor, skew=-skew if b & 1 else skew)
            await ctx.tick().repeat(1 + rng.randrange(3))
        await ctx.tick().repeat(3 * divisor)

    async def sink(ctx):
        ctx.set(dut.out.ready, 1)
        async for _clk, _rst, valid, payload, fe, ov in ctx.tick().sample(
            dut.out.valid, dut.out.payload, dut.frame_error, dut.overrun
        ):
            if valid:
                got.append(payload)
            if fe or ov:
                errors.append((fe, ov))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert got == data
    assert errors == []


def test_rx_framing_error_and_overrun():
    divisor = 8
    dut = UARTRx(divisor)
    got, fe_count, ov_count = [], [0], [0]

    async def driver(ctx):
        await ctx.tick().repeat(3)
        await _send(ctx, dut.rx, 0x12, divisor)
        await _send(ctx, dut.rx, 0x34, divisor, stop=0)  # framing error
        ctx.set(dut.rx, 0)  # and a break of 30 bit times
        await ctx.tick().repeat(30 * divisor)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        await _send(ctx, dut.rx, 0x56, divisor)
        await ctx.tick().repeat(2 * divisor)
        # nobody reads the next two bytes in time: the second is an overrun
        ctx.set(dut.out.ready, 0)
        await _send(ctx, dut.rx, 0x78, divisor)
        await _send(ctx, dut.rx, 0x9A, divisor)
        await ctx.tick().repeat(2 * divisor)
        ctx.set(dut.out.ready, 1)
        await ctx.tick().repeat(2)
        await _send(ctx, dut.rx, 0xBC, divisor)
        await ctx.tick().repeat(2 * divisor)

    async def sink(ctx):
        ctx.set(dut.out.ready, 1)
        async for _clk, _rst, valid, ready, payload, fe, ov in ctx.tick().sample(
            dut.out.valid, dut.out.ready, dut.out.payload, dut.frame_error, dut.overrun
        ):
            if valid and ready:
                got.append(payload)
            fe_count[0] += fe
            ov_count[0] += ov

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert got == [0x12, 0x56, 0x78, 0xBC]
    assert fe_count[0] == 1
    assert ov_count[0] == 1


@pytest.mark.parametrize("divisor", [4, 9])
def test_tx_bytes(divisor):
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(10)]
    dut = UARTTx(divisor)
    got = []

    async def source(ctx):
        for b in data:
            ctx.set(dut.inp.payload, b)
            ctx.set(dut.inp.valid, 1)
            await ctx.tick().until(dut.inp.ready)
            ctx.set(dut.inp.valid, 0)
            await ctx.tick().repeat(1 + rng.randrange(4 * divisor))

    async def monitor(ctx):
        for _ in data:
            got.append(await _recv(ctx, dut.tx, divisor))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(monitor)
    sim.run()
    assert got == data


class _EchoBridge(wiring.Component):
    """Test harness: a bridge whose host_in is looped back to host_out (+1 to each byte)."""

    rx: wiring.In(1, init=1)
    tx: wiring.Out(1, init=1)
    abort: wiring.Out(1)
    timed_out: wiring.Out(1)

    def __init__(self, divisor, timeout):
        self.bridge = UARTBridge(divisor, timeout)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = b = self.bridge
        m.d.comb += [
            b.rx.eq(self.rx),
            self.tx.eq(b.tx),
            self.abort.eq(b.abort),
            self.timed_out.eq(b.timed_out),
            b.host_out.payload.eq(b.host_in.payload + 1),
            b.host_out.valid.eq(b.host_in.valid),
            b.host_in.ready.eq(b.host_out.ready),
        ]
        return m


def test_bridge_echo_and_abort():
    divisor, timeout = 6, 200
    dut = _EchoBridge(divisor, timeout)
    got, aborts = [], []
    data = [1, 2, 3, 250]

    async def host(ctx):
        await ctx.tick().repeat(4)
        for b in data[:3]:
            await _send(ctx, dut.rx, b, divisor)
        await ctx.tick().repeat(timeout + 30 * divisor)  # one timeout abort
        await _send(ctx, dut.rx, 7, divisor, stop=0)  # framing error abort
        await ctx.tick().repeat(2 * divisor)
        await _send(ctx, dut.rx, data[3], divisor)
        await ctx.tick().repeat(timeout + 20 * divisor)  # the echo, then a timeout

    async def monitor(ctx):
        while True:
            got.append(await _recv(ctx, dut.tx, divisor, max_wait=10**6))

    async def watch(ctx):
        cycle = 0
        async for _clk, _rst, abort, to in ctx.tick().sample(dut.abort, dut.timed_out):
            cycle += 1
            if abort:
                aborts.append(("timeout" if to else "error", cycle))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert got == [b + 1 & 0xFF for b in data]
    kinds = [k for k, _ in aborts]
    assert kinds == ["timeout", "error", "timeout"], aborts


def test_tx_keeps_up_with_rx():
    """A long back-to-back echo at one baud rate never overruns (TX is exactly 10 bits/byte)."""
    divisor, timeout = 4, 100
    dut = _EchoBridge(divisor, timeout)
    data = list(range(200))
    got, aborts = [], [0]

    async def host(ctx):
        await ctx.tick().repeat(3)
        for b in data:
            await _send(ctx, dut.rx, b, divisor)
        await ctx.tick().repeat(30 * divisor)

    async def monitor(ctx):
        while True:
            got.append(await _recv(ctx, dut.tx, divisor, max_wait=10**6))

    async def watch(ctx):
        async for _clk, _rst, abort, to in ctx.tick().sample(dut.abort, dut.timed_out):
            aborts[0] += abort and not to

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert aborts[0] == 0
    assert got == [b + 1 & 0xFF for b in data]


class _SlowResponder(wiring.Component):
    """Test harness: after the byte 0x01 the core answers with ``n`` bytes (a long response)."""

    rx: wiring.In(1, init=1)
    tx: wiring.Out(1, init=1)
    abort: wiring.Out(1)

    def __init__(self, divisor, timeout, n):
        self.bridge = UARTBridge(divisor, timeout)
        self.n = n
        super().__init__()

    def elaborate(self, platform):
        from amaranth.hdl import Signal

        m = Module()
        m.submodules.bridge = b = self.bridge
        left = Signal(range(self.n + 1))
        m.d.comb += [b.rx.eq(self.rx), self.tx.eq(b.tx), self.abort.eq(b.abort),
                     b.host_in.ready.eq(1), b.host_out.valid.eq(left != 0),
                     b.host_out.payload.eq(left)]
        with m.If(b.host_in.valid):
            m.d.sync += left.eq(self.n)
        with m.Elif(b.host_out.ready & (left != 0)):
            m.d.sync += left.eq(left - 1)
        return m


def test_no_timeout_while_responding():
    """A response longer than the timeout is not cut: the timeout starts after it."""
    divisor, timeout, n = 4, 200, 30  # the response takes 30 * 40 = 1200 cycles
    dut = _SlowResponder(divisor, timeout, n)
    got, aborts = [], []

    async def host(ctx):
        await ctx.tick().repeat(3)
        await _send(ctx, dut.rx, 1, divisor)
        await ctx.tick().repeat(n * 10 * divisor + timeout + 100)

    async def monitor(ctx):
        while True:
            got.append(await _recv(ctx, dut.tx, divisor, max_wait=10**6))

    async def watch(ctx):
        cycle = 0
        async for _clk, _rst, abort in ctx.tick().sample(dut.abort):
            cycle += 1
            if abort:
                aborts.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert got == list(range(n, 0, -1))
    assert len(aborts) == 1 and aborts[0] > n * 10 * divisor, aborts
