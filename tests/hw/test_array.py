"""SystolicArray in Amaranth's simulator: skew, output-stationary accumulation, double-buffered
drain (tile t drains while tile t+1 computes), exact output timing."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from xnorflow.hw.array import SystolicArray, check_geometry
from xnorflow.sw import encoding as enc

GEOMETRIES = [(1, 1), (2, 3), (4, 4), (8, 8)]
_DT = {16: np.uint16, 32: np.uint32, 64: np.uint64}


def _heavy(r, c, w):
    return r * c * w > 8 * 8 * 16


def _params():
    out = []
    for r, c in GEOMETRIES:
        for w in (16, 32, 64):
            marks = [pytest.mark.slow] if _heavy(r, c, w) else []
            out.append(pytest.param(r, c, w, marks=marks, id=f"{r}x{c}x{w}"))
    return out


def _run_tiles(rows, cols, width, spacing=None, p_bubble=0.25):
    """Random tiles through the array; `last` beats at least `spacing` cycles apart
    (default: the array's min_tile_cycles). Returns (got, expected) [(cycle, row accs)]."""
    rng = np.random.default_rng(rows * 100 + cols * 10 + width)
    planes = 2
    dut = SystolicArray(rows, cols, width, max_k=8 * width, max_planes=planes)
    gap = dut.min_tile_cycles if spacing is None else spacing
    dt = _DT[width]
    tiles = []
    for i in range(6):
        # short tiles (< 2R words) too: the test bench then spaces `last` beats by 2R cycles
        k = int(rng.integers(1, 2 * rows + 4)) if i % 2 else int(rng.integers(1, 5))
        a = rng.integers(0, 2**width, size=(k, rows), dtype=np.uint64).astype(dt)
        w = rng.integers(0, 2**width, size=(k, cols), dtype=np.uint64).astype(dt)
        sh = rng.integers(0, planes, size=k)
        p = enc.popcount(~(a[:, :, None] ^ w[:, None, :]))  # (k, R, C)
        acc = (p << sh[:, None, None]).sum(axis=0)
        tiles.append((a, w, sh, acc))
    last_at, got = [], []

    async def tb(ctx):
        cycle = 0
        for a, w, sh, _ in tiles:
            for j in range(len(sh)):
                is_last = j == len(sh) - 1
                while rng.random() < p_bubble or (
                        is_last and last_at and cycle - last_at[-1] < gap):
                    ctx.set(dut.ctl, {"valid": 0, "last": 1, "shift": 0})
                    await ctx.tick()
                    cycle += 1
                    _sample(ctx, cycle)
                ctx.set(dut.act, [int(x) for x in a[j]])
                ctx.set(dut.wgt, [int(x) for x in w[j]])
                ctx.set(dut.ctl, {"valid": 1, "last": int(is_last), "shift": int(sh[j])})
                if is_last:
                    last_at.append(cycle)
                await ctx.tick()
                cycle += 1
                _sample(ctx, cycle)
        ctx.set(dut.ctl, {"valid": 0, "last": 0, "shift": 0})
        for _ in range(dut.latency + 2 * rows + 2):
            await ctx.tick()
            cycle += 1
            _sample(ctx, cycle)

    def _sample(ctx, cycle):
        res = ctx.get(dut.res)
        if res.valid:
            got.append((cycle, [int(res.acc[c]) for c in range(cols)]))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    expect = [(t + dut.latency + 2 * r, list(map(int, acc[r])))
              for t, (_, _, _, acc) in zip(last_at, tiles, strict=True) for r in range(rows)]
    return got, expect


@pytest.mark.parametrize("rows,cols,width", _params())
def test_array_tiles_with_bubbles(rows, cols, width):
    got, expect = _run_tiles(rows, cols, width)
    assert got == expect


def test_array_min_tile_spacing_is_needed():
    """`last` beats 2R - 2 cycles apart make a result overwrite one still climbing."""
    got, expect = _run_tiles(4, 2, 16, spacing=2 * 4 - 2, p_bubble=0.0)
    assert got != expect


def test_check_geometry():
    check_geometry(1, 1, 16)
    with pytest.raises(ValueError, match="rows must be an int >= 1, not 0"):
        check_geometry(0, 2, 32)
    with pytest.raises(ValueError, match="cols must be an int >= 1, not 2.5"):
        check_geometry(2, 2.5, 32)
    with pytest.raises(ValueError, match=r"one of \(16, 32, 64\), not 8"):
        SystolicArray(2, 2, 8, max_k=64)
