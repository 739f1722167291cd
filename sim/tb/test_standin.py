"""cocotb tests of the stream driver, monitor and scoreboard on :class:`ByteTransform`.

Seeded from ``COCOTB_RANDOM_SEED`` (printed in the log); run by ``tests/sim/test_cocotb_streams``.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from xnorflow.hw.link.transports import CocotbStreamTransport
from xnorflow.sim.tb.scoreboard import Scoreboard
from xnorflow.sim.tb.standin import transform
from xnorflow.sim.tb.streams import (
    StreamDriver,
    StreamMonitor,
    StreamPair,
    reset_during_traffic,
)


def _rng(dut, salt: str) -> random.Random:
    seed = (cocotb.RANDOM_SEED * 1000003 + sum(map(ord, salt))) & 0xFFFFFFFF
    dut._log.info("stream test %s: seed %d (COCOTB_RANDOM_SEED=%d)", salt, seed,
                  cocotb.RANDOM_SEED)
    return random.Random(seed)


async def _setup(dut, idle: float, backpressure: float, rng: random.Random):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.abort.value = 0
    drv = StreamDriver(dut, "host_in", dut.clk, idle, rng)
    mon = StreamMonitor(dut, "host_out", dut.clk, backpressure, rng)
    pair = StreamPair(drv, mon)
    cocotb.start_soon(pair.run())
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    return CocotbStreamTransport(drv, mon), pair


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.3, 0.7], backpressure=[0.0, 0.5, 0.9])
async def stream_roundtrip(dut, idle: float, backpressure: float):
    """Random bytes in, transformed bytes out, under random idle and backpressure."""
    rng = _rng(dut, f"roundtrip-{idle}-{backpressure}")
    link, pair = await _setup(dut, idle, backpressure, rng)
    sb = Scoreboard("host_out")
    data = bytes(rng.randrange(256) for _ in range(200))
    sb.expect([transform(b) for b in data])
    cocotb.start_soon(link.write(data))
    sb.check(list(await link.read(len(data))))
    sb.assert_clean()
    if idle == 0.0 and backpressure == 0.0:
        # with no stalls the FIFO streams one byte per cycle
        assert pair.cycles < len(data) + 10, pair.cycles


@cocotb.test()
async def stream_reset_midway(dut):
    """Reset in the middle of a transfer; the next transfer must still be exact."""
    rng = _rng(dut, "reset")
    link, _ = await _setup(dut, 0.2, 0.5, rng)
    first = bytes(rng.randrange(256) for _ in range(100))
    cocotb.start_soon(link.write(first))
    await ClockCycles(dut.clk, rng.randrange(20, 60))
    await reset_during_traffic(dut, link, 2)
    second = bytes(rng.randrange(256) for _ in range(100))
    sb = Scoreboard("after reset")
    sb.expect([transform(b) for b in second])
    cocotb.start_soon(link.write(second))
    sb.check(list(await link.read(len(second))))
    sb.assert_clean()


@cocotb.test()
async def scoreboard_catches_corruption(dut):
    """The scoreboard must fail when one output byte is wrong (a test that can fail)."""
    rng = _rng(dut, "corrupt")
    link, _ = await _setup(dut, 0.0, 0.0, rng)
    data = bytes(rng.randrange(256) for _ in range(16))
    sb = Scoreboard("host_out")
    expected = [transform(b) for b in data]
    expected[7] ^= 1
    sb.expect(expected)
    await link.write(data)
    sb.check(list(await link.read(len(data))))
    assert len(sb.errors) == 1 and "item 7" in sb.errors[0], sb.errors
