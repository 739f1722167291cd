"""PopCount and XnorPopcountPE in Amaranth's simulator, bit-exact against the contract."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

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
    with pytest.raises(ValueError, match="acc_bits must be an int >= 6"):
        XnorPopcountPE(32, 5)


def random_tiles(rng, width, planes, n_tiles, max_words=5):
    """Tiles of random words: each tile is ``planes`` bit-planes (most significant first) of
    ``1..max_words`` words each; returns the beats ``(a, w, dbl, last)`` and each tile's
    expected total, ``sum_b 2^b P_b`` (:func:`xnorflow.sw.encoding.accumulate_planes`)."""
    dt = {16: np.uint16, 32: np.uint32, 64: np.uint64}[width]
    beats, totals = [], []
    for _ in range(n_tiles):
        k = int(rng.integers(1, max_words + 1))
        per_plane = np.zeros(planes, np.int64)
        for bi, b in enumerate(range(planes - 1, -1, -1)):
            a = rng.integers(0, 2**width, size=k, dtype=np.uint64).astype(dt)
            w = rng.integers(0, 2**width, size=k, dtype=np.uint64).astype(dt)
            per_plane[b] = int(enc.popcount(~(a ^ w)).sum())
            for i in range(k):
                beats.append((int(a[i]), int(w[i]), int(bi > 0 and i == 0),
                              int(b == 0 and i == k - 1)))
        totals.append(int(enc.accumulate_planes(per_plane)))
    return beats, totals


@pytest.mark.parametrize("planes", [1, 3, 8])
@pytest.mark.parametrize("width", [16, 32, 64])
def test_pe_accumulates_tiles_with_bubbles(width, planes):
    """Random tiles (every plane, 1..5 words per plane), random bubbles between beats and
    back-to-back tiles: each tile's total equals sum_b 2^b P_b and appears on ``d_o`` exactly
    ``latency + 2`` cycles after its last beat; without ``load`` the slot takes ``d_i``."""
    rng = np.random.default_rng(width * 10 + planes)
    beats, totals = random_tiles(rng, width, planes, 20)
    acc_bits = acc_width(5 * width, planes)
    dut = XnorPopcountPE(width, acc_bits, 2)
    lat = dut.latency
    stream = []
    for b in beats:
        while rng.random() < 0.3:
            stream.append(None)  # a bubble
        stream.append(b)
    got = []

    async def tb(ctx):
        # the PE's control arrives aligned with the popcount (the array delays it); clr and
        # load come a cycle after a tile's last count
        ctl = [(0, 0, 0)] * lat
        clr = 1
        for t in range(len(stream) + lat + 3):
            beat = stream[t] if t < len(stream) else None
            if beat is not None:
                a, w, dbl, last = beat
                ctx.set(dut.a, a)
                ctx.set(dut.w, w)
            ctl.append((int(beat is not None), beat[2] if beat else 0, beat[3] if beat else 0))
            en, dbl, fin = ctl[t]
            ctx.set(dut.en, en)
            ctx.set(dut.dbl, dbl)
            ctx.set(dut.clr, clr)
            ctx.set(dut.load, clr)
            ctx.set(dut.d_i, 12345 % (1 << acc_bits))
            await ctx.tick()
            if clr and t > 0:
                got.append(ctx.get(dut.d_o))
            elif t > lat + 1:
                assert ctx.get(dut.d_o) == 12345 % (1 << acc_bits)  # took d_i
            clr = en & fin

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got == totals
