"""SystolicArray in Amaranth's simulator: every row of every tile, at its exact cycle, against
the contract (:func:`xnorflow.sw.encoding.accumulate_planes` of XNOR popcounts)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from xnorflow.hw.array import SystolicArray, check_geometry
from xnorflow.hw.pe import acc_width
from xnorflow.sw import encoding as enc

DT = {16: np.uint16, 32: np.uint32, 64: np.uint64}


def make_tiles(rng, rows, cols, width, planes, n_tiles, max_words=4, per_pe=False):
    """Random tiles: per beat one word per row and per column (``per_pe``: per row and
    column, ``w[r][c]``, ``SystolicArray(weight_rows=rows)``); tile results (R x C)."""
    dt = DT[width]
    tiles = []
    for _ in range(n_tiles):
        k = int(rng.integers(1, max_words + 1))
        beats = []
        per_plane = np.zeros((planes, rows, cols), np.int64)
        for bi, b in enumerate(range(planes - 1, -1, -1)):
            for i in range(k):
                a = rng.integers(0, 2**width, size=rows, dtype=np.uint64).astype(dt)
                if per_pe:  # PE (r, c) counts XNOR(a[r], w[r][c])
                    w = rng.integers(0, 2**width, size=(rows, cols), dtype=np.uint64).astype(dt)
                    for r in range(rows):
                        for c in range(cols):
                            per_plane[b, r, c] += enc.popcount(~(a[r] ^ w[r, c]))
                    words = [[int(v) for v in row] for row in w]
                else:
                    w = rng.integers(0, 2**width, size=cols, dtype=np.uint64).astype(dt)
                    per_plane[b] += enc.popcount(~(a[:, None] ^ w[None, :]))
                    words = [int(v) for v in w]
                beats.append(([int(v) for v in a], words, int(bi > 0 and i == 0),
                              int(b == 0 and i == k - 1)))
        tiles.append((beats, enc.accumulate_planes(per_plane)))
    return tiles


def schedule(tiles, rows, rng, bubbles=0.25, spacing=None):
    """The beat stream: bubbles at random, and before a tile's last beat enough bubbles that
    two last beats are ``spacing`` (default ``rows``) cycles apart at least."""
    spacing = rows if spacing is None else spacing
    stream, last_at = [], None
    for beats, _ in tiles:
        for j, beat in enumerate(beats):
            while rng.random() < bubbles:
                stream.append(None)
            if j == len(beats) - 1 and last_at is not None:
                while len(stream) - last_at < spacing:
                    stream.append(None)
            stream.append(beat)
        last_at = len(stream) - 1
    return stream


def run_array(rows, cols, width, planes, stream, levels=2, mem_regs=0, junk=None,
              weight_rows=1, soon_lead=0, soon=None):
    """Play ``stream`` (beats or ``None`` bubbles) into the array; with ``mem_regs = 2`` each
    beat's operands come a cycle after its control (as the accelerator's registers beside
    the memories deliver them). ``junk`` (a Generator): random operands in bubbles.
    ``weight_rows = rows``: the beats carry a weight word per PE (``make_tiles(per_pe=True)``)
    and ``wgt[r][c]`` gets each. ``soon`` (a list): ``tile_soon`` per cycle, as ``done``."""
    acc_bits = acc_width(8 * width, planes)
    dut = SystolicArray(rows, cols, width, acc_bits, levels, mem_regs, weight_rows, soon_lead)
    out, done = [], []
    lag = 1 if mem_regs == 2 else 0
    wgt = ([dut.wgt[c] for c in range(cols)] if weight_rows == 1
           else [dut.wgt[r][c] for r in range(rows) for c in range(cols)])

    def flat(w):  # a beat's weight words in the order of `wgt`
        return w if weight_rows == 1 else [v for row in w for v in row]

    async def tb(ctx):
        for t in range(len(stream) + dut.latency + rows + 2):
            beat = stream[t] if t < len(stream) else None
            ctx.set(dut.ctl.valid, int(beat is not None))
            if beat is not None:
                ctx.set(dut.ctl.dbl, beat[2])
                ctx.set(dut.ctl.last, beat[3])
            else:
                ctx.set(dut.ctl.last, 0)
                ctx.set(dut.ctl.dbl, 0)
            ops = stream[t - lag] if 0 <= t - lag < len(stream) else None
            if ops is not None:
                a, w, _, _ = ops
                for r in range(rows):
                    ctx.set(dut.act[r], a[r])
                for port, v in zip(wgt, flat(w), strict=True):
                    ctx.set(port, v)
            elif junk is not None:
                for r in range(rows):
                    ctx.set(dut.act[r], int(junk.integers(0, 1 << width, dtype=np.uint64)))
                for port in wgt:
                    ctx.set(port, int(junk.integers(0, 1 << width, dtype=np.uint64)))
            await ctx.tick()
            # after the edge that ends cycle t: what the array shows during cycle t + 1
            done.append(ctx.get(dut.tile_done))
            out.append([ctx.get(dut.res[c]) for c in range(cols)])
            if soon is not None:
                soon.append(ctx.get(dut.tile_soon))
    # index by cycle: entry t is what the array shows during cycle t
    out.insert(0, None)
    done.insert(0, 0)
    if soon is not None:
        soon.insert(0, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return dut, out, done


GEOMETRIES = [(1, 1, 16), (2, 3, 16), (4, 4, 32), (8, 2, 32), (3, 5, 64)]


def check_rows(dut, stream, tiles, out, done):
    """Every tile's rows at their cycles: a tile whose last beat was presented in cycle ``t``
    pulses ``tile_done`` in ``t + latency - 1`` (when that beat is counted) and its row ``r``
    leaves in ``t + latency + r``; one pulse per tile."""
    lasts = [t for t, b in enumerate(stream) if b is not None and b[3]]
    assert len(lasts) == len(tiles)
    for t_last, (_, want) in zip(lasts, tiles, strict=True):
        assert done[t_last + dut.latency - 1] == 1
        for r in range(dut.rows):
            assert out[t_last + dut.latency + r] == [int(v) for v in want[r]], (t_last, r)
    assert sum(done) == len(tiles)


@pytest.mark.parametrize("planes", [1, 2, 8])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g)))
def test_rows_at_exact_cycles(geometry, planes):
    rows, cols, width = geometry
    rng = np.random.default_rng(rows * 100 + cols * 10 + planes)
    tiles = make_tiles(rng, rows, cols, width, planes, 12)
    stream = schedule(tiles, rows, rng)
    dut, out, done = run_array(rows, cols, width, planes, stream)
    check_rows(dut, stream, tiles, out, done)


@pytest.mark.parametrize("mem_regs", [1, 2])
@pytest.mark.parametrize("geometry, planes", [((1, 1, 16), 2), ((2, 3, 16), 8), ((4, 4, 32), 1),
                                               ((8, 2, 32), 8), ((3, 5, 64), 2)])
def test_operand_registers(geometry, planes, mem_regs):
    """``mem_regs = 1`` (Target.mem_regs): one register on every operand word and one more
    on the control; ``mem_regs = 2``: operands a cycle after their control (random words in
    the bubbles), the control two more. The same rows, ``mem_regs`` cycles later."""
    rows, cols, width = geometry
    rng = np.random.default_rng(rows * 7 + cols + planes)
    tiles = make_tiles(rng, rows, cols, width, planes, 10)
    stream = schedule(tiles, rows, rng)
    dut, out, done = run_array(rows, cols, width, planes, stream, mem_regs=mem_regs,
                               junk=np.random.default_rng(mem_regs))
    assert dut.latency == SystolicArray(rows, cols, width, 20).latency + mem_regs
    check_rows(dut, stream, tiles, out, done)
    with pytest.raises(ValueError, match="mem_regs must be 0, 1 or 2, not 3"):
        SystolicArray(rows, cols, width, 20, mem_regs=3)


@pytest.mark.parametrize("geometry, planes, mem_regs", [
    ((2, 3, 16), 1, 0), ((2, 1, 64), 3, 2), ((4, 1, 32), 2, 1), ((4, 4, 16), 3, 2),
    ((8, 2, 64), 3, 0), ((8, 3, 32), 1, 1), ((4, 2, 64), 2, 0), ((8, 1, 16), 2, 2)],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_a_weight_word_per_pe(geometry, planes, mem_regs):
    """``weight_rows = rows`` (Target.weight_rows): PE (r, c) takes ``wgt[r][c]``, its own
    random word each beat (not its column's shared word), with random bubbles (random words
    in them with ``mem_regs`` 1 and 2), planes 1..3; every row of every tile at its cycle
    against the per-PE NumPy reference (make_tiles(per_pe=True)). The latency is that of
    ``weight_rows = 1``."""
    rows, cols, width = geometry
    rng = np.random.default_rng(1000 + rows * 100 + cols * 10 + planes + mem_regs)
    tiles = make_tiles(rng, rows, cols, width, planes, 8, per_pe=True)
    stream = schedule(tiles, rows, rng)
    dut, out, done = run_array(rows, cols, width, planes, stream, mem_regs=mem_regs,
                               junk=np.random.default_rng(7 + mem_regs), weight_rows=rows)
    assert dut.latency == SystolicArray(rows, cols, width, 20, mem_regs=mem_regs).latency
    check_rows(dut, stream, tiles, out, done)


@pytest.mark.parametrize("geometry, mem_regs", [((2, 3, 16), 0), ((4, 2, 32), 1),
                                               ((8, 2, 32), 2), ((4, 4, 64), 2)],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_tile_soon_leads_tile_done(geometry, mem_regs):
    """``tile_soon`` (the output stage's cue to read spread rows' threshold words) pulses
    exactly ``soon_lead`` cycles before each ``tile_done`` and never otherwise, for every lead
    the array allows (its control delay line's registers), with random bubbles and tiles
    ``rows`` beats apart; a longer lead is refused, and 0 builds no port."""
    rows, cols, width = geometry
    latency = SystolicArray(rows, cols, width, 20, mem_regs=mem_regs).latency
    for lead in range(1, latency - 1):
        rng = np.random.default_rng(lead * 7 + rows + mem_regs)
        tiles = make_tiles(rng, rows, cols, width, 2, 6)
        stream = schedule(tiles, rows, rng)
        soon = []
        dut, out, done = run_array(rows, cols, width, 2, stream, mem_regs=mem_regs,
                                   soon_lead=lead, soon=soon)
        check_rows(dut, stream, tiles, out, done)
        want = [0] * len(done)
        for t, d in enumerate(done):
            if d:
                want[t - lead] = 1
        assert soon == want and sum(soon) == len(tiles)
    with pytest.raises(ValueError, match=f"soon_lead must be 0..{latency - 2}, not "
                                         f"{latency - 1}"):
        SystolicArray(rows, cols, width, 20, mem_regs=mem_regs, soon_lead=latency - 1)
    assert "tile_soon" not in SystolicArray(rows, cols, width, 20).signature.members


@pytest.mark.parametrize("rows, weight_rows", [(4, 2), (4, 8), (2, 0), (1, 2), (8, 4)])
def test_weight_rows_is_one_or_rows(rows, weight_rows):
    with pytest.raises(ValueError, match=f"weight_rows must be 1 or rows = {rows}, "
                                         f"not {weight_rows}"):
        SystolicArray(rows, 2, 16, 20, weight_rows=weight_rows)
    assert SystolicArray(rows, 2, 16, 20, weight_rows=rows).weight_rows == rows


@pytest.mark.slow
def test_large_geometry():
    rng = np.random.default_rng(5)
    tiles = make_tiles(rng, 8, 8, 64, 2, 6)
    stream = schedule(tiles, 8, rng)
    dut, out, _ = run_array(8, 8, 64, 2, stream)
    lasts = [t for t, b in enumerate(stream) if b is not None and b[3]]
    for t_last, (_, want) in zip(lasts, tiles, strict=True):
        for r in range(8):
            assert out[t_last + dut.latency + r] == [int(v) for v in want[r]]


def test_tiles_closer_than_rows_corrupt():
    """The spacing rule is real: two last beats R - 1 cycles apart lose a row (the compiler's
    beat tables never do this, program.tile_beats)."""
    rows, cols, width = 4, 2, 16
    rng = np.random.default_rng(9)
    tiles = make_tiles(rng, rows, cols, width, 1, 6, max_words=1)
    stream = schedule(tiles, rows, rng, bubbles=0, spacing=rows - 1)
    dut, out, _ = run_array(rows, cols, width, 1, stream)
    lasts = [t for t, b in enumerate(stream) if b is not None and b[3]]
    wrong = sum(out[t + dut.latency + r] != [int(v) for v in want[r]]
                for t, (_, want) in zip(lasts, tiles, strict=True) for r in range(rows))
    assert wrong > 0


def test_geometry_checks():
    with pytest.raises(ValueError, match="rows must be an int >= 1, not 0"):
        check_geometry(0, 1, 16)
    with pytest.raises(ValueError, match="word width must be one of"):
        check_geometry(1, 1, 8)
