"""PostProcess in Amaranth's simulator: threshold + polarity, pooling over passes, packing into
words across channel tiles, integer scores; bit-exact against sw.encoding, with random
stalls on both inputs and backpressure on both outputs."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from xnorflow.hw.post import MODE_INTEGER, MODE_THRESHOLD, PostProcess, clamp_threshold
from xnorflow.sw import encoding as enc


def _case(rng, R, C, W, m, n, passes, acc_bits, mode, mul=None):
    acc = rng.integers(0, 1 << acc_bits, size=(passes, m, n))
    t = rng.integers(-3, (1 << acc_bits) + 3, size=n)
    t[: (n + 1) // 2] = acc[0, 0, : (n + 1) // 2]  # exact ties
    pol = rng.choice([-1, 1], size=n)
    ops = rng.choice([enc.POOL_OR, enc.POOL_AND], size=n)
    offs = rng.integers(-5000, 5000, size=n)
    mul = int(rng.choice([-3, -1, 1, 2])) if mul is None else mul
    rows_in, tiles = [], []
    m_tiles, n_tiles = -(-m // R), -(-n // C)
    for mt in range(m_tiles):
        for nt in range(n_tiles):
            cs = [nt * C + c for c in range(C)]
            for q in range(passes):
                tiles.append(dict(
                    mode=mode, rows=min(R, m - mt * R), chans=min(C, n - nt * C),
                    pool_first=int(q == 0), pool_last=int(q == passes - 1),
                    pixel_end=int(nt == n_tiles - 1),
                    neg=[int(pol[c] < 0) if c < n else 0 for c in cs],
                    pool_op=[int(ops[c]) if c < n else 0 for c in cs],
                    param=[(clamp_threshold(int(t[c]), acc_bits) if mode == MODE_THRESHOLD
                            else int(offs[c])) if c < n else 0 for c in cs],
                    score_mul=mul))
                for r in range(R):
                    mm = mt * R + r
                    rows_in.append({"acc": [int(acc[q, mm, c]) if mm < m and c < n
                                            else int(rng.integers(0, 1 << acc_bits))
                                            for c in cs]})
    bits = enc.threshold_bits(acc, t, pol)
    pooled = np.where(ops == enc.POOL_AND, bits.min(axis=0), bits.max(axis=0))
    words = enc.pack_bits(pooled, W, enc.ACT_PAD_BIT)  # (m, words)
    scores = mul * acc[0] + offs
    return rows_in, tiles, words, scores


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("passes,mode", [(1, MODE_THRESHOLD), (4, MODE_THRESHOLD),
                                         (1, MODE_INTEGER)])
@pytest.mark.parametrize("rows,cols,width", [(1, 1, 16), (2, 3, 16), (4, 4, 32), (3, 5, 16),
                                              (2, 8, 64), (2, 24, 16)])
def test_post_process(rows, cols, width, passes, mode, pipelined):
    _run(rows, cols, width, passes, mode, pipelined)


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("mul", [-2, -1, 0, 1, 2])
def test_post_small_mul(mul, pipelined):
    """``small_mul``: the shift/negate output stage gives ``mul * acc + offset`` exactly."""
    _run(3, 4, 16, 1, MODE_INTEGER, pipelined, small_mul=True, mul=mul)


@pytest.mark.parametrize("small_mul", [False, True])
@pytest.mark.parametrize("passes,mode", [(2, MODE_THRESHOLD), (1, MODE_INTEGER)])
@pytest.mark.parametrize("rows,cols,width", [(1, 3, 16), (3, 5, 16)])
def test_post_score_register(rows, cols, width, passes, mode, small_mul):
    """``hold_rows=False`` (what the engine uses with a 1-entry FIFO): integer scores from a
    score register instead of the held input row."""
    _run(rows, cols, width, passes, mode, False, small_mul=small_mul,
         mul=2 if small_mul else None, hold_rows=False)


def _run(rows, cols, width, passes, mode, pipelined, small_mul=False, mul=None,
         hold_rows=True):
    rng = np.random.default_rng(rows * 1000 + cols * 100 + width + passes)
    acc_bits = 9
    m, n = 2 * rows + 1, 2 * cols + 3 + (width if cols > 8 else 0)
    dut = PostProcess(rows, cols, width, acc_bits, score_width=20, mul_width=4, index_bits=4,
                      pipelined=pipelined, small_mul=small_mul, hold_rows=hold_rows)
    rows_in, tiles, words, scores = _case(rng, rows, cols, width, m, n, passes, acc_bits, mode,
                                          mul)
    rnd = random.Random(7)
    got_words, got_scores = [], []
    n_expect = words.size if mode == MODE_THRESHOLD else m * -(-n // cols)

    async def put(ctx, stream, items, seed):
        r = random.Random(seed)
        for it in items:
            while r.random() < 0.3:
                await ctx.tick()
            ctx.set(stream.valid, 1)
            ctx.set(stream.payload, it)
            await ctx.tick().until(stream.ready)
            ctx.set(stream.valid, 0)

    async def rows_tb(ctx):
        await put(ctx, dut.rows_i, rows_in, 1)

    async def tiles_tb(ctx):
        await put(ctx, dut.tile, tiles, 2)

    async def sink(ctx):
        for _ in range(20 * len(rows_in) + 200):
            ctx.set(dut.words.ready, int(rnd.random() < 0.6))
            ctx.set(dut.scores.ready, int(rnd.random() < 0.6))
            _, _, wv, wr, wp, sv, sr, sp = await ctx.tick().sample(
                dut.words.valid, dut.words.ready, dut.words.payload,
                dut.scores.valid, dut.scores.ready, dut.scores.payload)
            if wv and wr:
                got_words.append((int(wp.row), int(wp.index), int(wp.data)))
            if sv and sr:
                got_scores.append((int(sp.row), [int(sp.score[c]) for c in range(cols)]))
        assert len(got_words) + len(got_scores) == n_expect

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(rows_tb, background=True)
    sim.add_testbench(tiles_tb, background=True)
    sim.add_testbench(sink)
    sim.run()
    if mode == MODE_THRESHOLD:
        # words of the rows of each row-tile, in (row, index) order as packing completes
        expect = []
        nw = words.shape[1]
        per_tile = -(-n // cols)
        for mt in range(-(-m // rows)):
            rs = range(mt * rows, min(m, (mt + 1) * rows))
            emitted = 0
            for nt in range(per_tile):
                total = min(n, (nt + 1) * cols)
                upto = nw if nt == per_tile - 1 else total // width
                for r in rs:
                    for i in range(emitted, upto):
                        expect.append((r - mt * rows, i, int(words[r, i])))
                emitted = upto
        assert got_words == expect
    else:
        expect, got = [], []
        it = iter(got_scores)
        for mt in range(-(-m // rows)):
            for nt in range(-(-n // cols)):
                chans = min(cols, n - nt * cols)
                for r in range(min(rows, m - mt * rows)):
                    expect.append((r, [int(scores[mt * rows + r, nt * cols + c])
                                       for c in range(chans)]))
                    row, sc = next(it)
                    got.append((row, sc[:chans]))
        assert got == expect


def test_clamp_threshold_keeps_bits():
    acc = np.arange(0, 16)
    for t in range(-40, 60):
        for pol in (-1, 1):
            assert (enc.threshold_bits(acc, clamp_threshold(t, 4), pol)
                    == enc.threshold_bits(acc, t, pol)).all()


def test_post_parameter_checks():
    with pytest.raises(ValueError, match="score_width 10 must be >= acc_bits \\+ 2 = 14"):
        PostProcess(2, 2, 16, 12, score_width=10)


@pytest.mark.parametrize("score_width", [7, 32])
def test_post_threshold_extremes(score_width):
    """Thresholds at the ends of the clamped range (-1, 0, max, 2^acc_bits) and ties against
    the smallest and largest accumulators, both polarities: the single adder per column
    (sign of acc - T - neg) gives ``encoding.threshold_bits`` exactly."""
    acc_bits, C, W = 5, 4, 16
    top = (1 << acc_bits) - 1
    accs = [0, 1, top - 1, top]
    ts = [-1, 0, 1, top - 1, top, top + 1]
    dut = PostProcess(1, C, W, acc_bits, score_width=score_width, mul_width=4, index_bits=4)
    cases = [(t, neg) for t in ts for neg in (0, 1)]
    tiles = [dict(mode=MODE_THRESHOLD, rows=1, chans=C, pool_first=1, pool_last=1,
                  pixel_end=1, neg=[neg] * C, pool_op=[0] * C, param=[t] * C, score_mul=0)
             for t, neg in cases]
    got = []

    async def tb(ctx):
        ctx.set(dut.words.ready, 1)
        for tile in tiles:
            ctx.set(dut.tile.valid, 1)
            ctx.set(dut.tile.payload, tile)
            await ctx.tick().until(dut.tile.ready)
            ctx.set(dut.tile.valid, 0)
            ctx.set(dut.rows_i.valid, 1)
            ctx.set(dut.rows_i.payload, {"acc": accs})
            await ctx.tick().until(dut.rows_i.ready)
            ctx.set(dut.rows_i.valid, 0)
            assert ctx.get(dut.words.valid)  # offered in the cycle after the take
            got.append(ctx.get(dut.words.payload.data))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    for (t, neg), word in zip(cases, got, strict=True):
        exp = enc.threshold_bits(np.array(accs), np.full(C, t), np.full(C, -1 if neg else 1))
        assert [(word >> c) & 1 for c in range(C)] == [int(b) for b in exp], (t, neg)
