"""PopCount and XnorPopcountPE in Amaranth's simulator, bit-exact against the contract."""

import random

import numpy as np
import pytest
from amaranth.sim import DomainReset, Simulator

from xnorflow.hw.pe import XnorPopcountPE, acc_width
from xnorflow.hw.popcount import PopCount
from xnorflow.sw import encoding as enc
from xnorflow.sw.perf import popcount_schedule


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("width", [1, 3, 16, 32, 64])
def test_popcount_pipeline(width, levels):
    dut = PopCount(width, levels)
    assert dut.latency == popcount_schedule(width, levels)[1]
    rnd = random.Random(width * 10 + levels)
    words = [0, (1 << width) - 1] + [rnd.getrandbits(width) for _ in range(40)]
    got = []

    async def tb(ctx):
        for i in range(len(words) + dut.latency):
            if i < len(words):
                ctx.set(dut.i, words[i])
            await ctx.tick()
            if i + 1 >= dut.latency:
                got.append(ctx.get(dut.o))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got[: len(words)] == [bin(w).count("1") for w in words]


def test_popcount_bad_parameters():
    with pytest.raises(ValueError, match="width must be a positive integer, not 0"):
        PopCount(0)
    with pytest.raises(ValueError, match="levels_per_stage must be >= 1, not 0"):
        PopCount(8, 0)


def test_acc_width_checks_values():
    assert acc_width(4096, 1) == 13
    assert acc_width(784, 8) == (784 * 255).bit_length()
    with pytest.raises(ValueError, match=r"max_k .* not 0"):
        acc_width(0)
    with pytest.raises(ValueError, match=r"max_planes must be an int in 1\.\.8, not 9"):
        acc_width(10, 9)
    with pytest.raises(ValueError, match="PE word width"):
        XnorPopcountPE(0, 10)


@pytest.mark.parametrize("planes", [1, 3])
@pytest.mark.parametrize("width", [16, 32, 64])
def test_pe_accumulates_tiles_with_stalls(width, planes):
    """Random tiles (1..6 words, every plane), random bubbles, back-to-back `last` beats:
    each tile total equals sum_b 2^b P_b (encoding.accumulate_planes) and appears exactly
    `latency` cycles after its `last` beat."""
    rng = np.random.default_rng(width + planes)
    max_k = 6 * width
    dut = XnorPopcountPE(width, max_k, planes)
    dt = {16: np.uint16, 32: np.uint32, 64: np.uint64}[width]
    beats, expect = [], []
    for _ in range(25):
        n = int(rng.integers(1, 7))
        a = rng.integers(0, 2**width, size=n, dtype=np.uint64).astype(dt)
        w = rng.integers(0, 2**width, size=n, dtype=np.uint64).astype(dt)
        sh = rng.integers(0, planes, size=n)
        p = enc.popcount(~(a ^ w))
        planes_p = np.zeros((planes,), np.int64)
        for i in range(n):
            planes_p[sh[i]] += p[i]
        expect.append(int(enc.accumulate_planes(planes_p)))
        for i in range(n):
            beats.append((int(a[i]), int(w[i]), int(sh[i]), int(i == n - 1)))
    got, last_at = [], []

    async def tb(ctx):
        ctx.set(dut.d_i.valid, 0)
        cycle = 0
        pending = list(beats)
        while pending or cycle < (last_at[-1] if last_at else 0) + dut.latency + 2:
            if pending and rng.random() < 0.7:
                a, w, sh, last = pending.pop(0)
                ctx.set(dut.a_i, a)
                ctx.set(dut.w_i, w)
                ctx.set(dut.c_i, {"valid": 1, "last": last, "shift": sh})
                if last:
                    last_at.append(cycle)
            else:  # bubble with garbage words
                ctx.set(dut.a_i, int(rng.integers(0, 2**16)))
                ctx.set(dut.c_i, {"valid": 0, "last": 1, "shift": 0})
            await ctx.tick()
            cycle += 1
            d = ctx.get(dut.d_o)
            if d.valid:
                got.append((cycle, int(d.value)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert [v for _, v in got] == expect
    assert [c for c, _ in got] == [t + dut.latency for t in last_at]


def test_pe_conveyor_passes_results_up():
    """When not finishing, the result slot takes the slot below (the column conveyor)."""
    dut = XnorPopcountPE(16, 64)

    async def tb(ctx):
        ctx.set(dut.c_i, {"valid": 0, "last": 0, "shift": 0})
        ctx.set(dut.d_i, {"valid": 1, "value": 37})
        await ctx.tick()
        assert ctx.get(dut.d_o.valid) == 1 and ctx.get(dut.d_o.value) == 37
        ctx.set(dut.d_i, {"valid": 0, "value": 5})
        await ctx.tick()
        assert ctx.get(dut.d_o.valid) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_pe_reset_mid_tile():
    """A reset in the middle of a tile discards it; the next tile starts from zero."""
    from amaranth.hdl import ClockDomain, Module

    dut = XnorPopcountPE(16, 64)
    top = Module()
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.pe = dut
    got = []

    async def tb(ctx):
        def beat(a, w, last, valid=1):
            ctx.set(dut.a_i, a)
            ctx.set(dut.w_i, w)
            ctx.set(dut.c_i, {"valid": valid, "last": last, "shift": 0})

        beat(0xFFFF, 0xFFFF, 0)          # 16 agreements, tile not finished
        await ctx.tick()
        beat(0, 0, 0, valid=0)
        await ctx.tick().repeat(dut.latency)
        ctx.set(cd.rst, 1)
        for _ in range(2):
            try:
                await ctx.tick()
            except DomainReset:
                pass
        ctx.set(cd.rst, 0)
        beat(0x00FF, 0xFFFF, 1)          # 8 agreements, one-word tile
        await ctx.tick()
        beat(0, 0, 0, valid=0)
        for _ in range(dut.latency + 2):
            await ctx.tick()
            if ctx.get(dut.d_o.valid):
                got.append(ctx.get(dut.d_o.value))

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got == [8]
