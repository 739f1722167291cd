"""Shared test bench for the datapath: a NumPy tiler (IR layer -> operand beats + tile
descriptors + expected outputs, in the order the output stage expects) and an Amaranth
simulator driver with random stalls and backpressure on every stream.

The tiler is also a readable reference for the sequencer: it is exactly the tile order and
descriptor contents documented in ``docs/accelerator.md``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from xnorflow.hw.post import MODE_INTEGER, MODE_THRESHOLD, clamp_threshold
from xnorflow.sw import encoding as enc
from xnorflow.sw import golden

_DT = {16: np.uint16, 32: np.uint32, 64: np.uint64}


@dataclass
class Job:
    """Everything one engine run needs and what it must produce."""

    beats: list[dict] = field(default_factory=list)     # operand payloads
    tiles: list[dict] = field(default_factory=list)     # descriptor payloads
    k_words: list[int] = field(default_factory=list)    # beats per tile
    words: dict = field(default_factory=dict)   # (out_tile, row, index) -> word (expected)
    scores: list = field(default_factory=list)  # [(row, [scores])] in output order
    word_order: list = field(default_factory=list)  # expected (out_tile, row, index) order


def gemm_job(rng: np.random.Generator, R: int, C: int, W: int, *, m: int, n: int, k_bits: int,
             planes: int = 1, passes: int = 1, mode: int = MODE_THRESHOLD, acc_bits: int = 16,
             score_mul: int = 2) -> tuple[Job, dict]:
    """A random GEMM ``m x n x k_bits`` (``planes`` bit-planes) split into tiles.

    ``passes`` > 1 models pooling: each output row is the OR/AND over ``passes`` independent
    activation sets (window offsets). Returns the job and the expected arrays (for checks).
    """
    act_bits = rng.integers(0, 2, size=(passes, planes, m, k_bits), dtype=np.uint8)
    w_bits = rng.integers(0, 2, size=(n, k_bits), dtype=np.uint8)
    act = enc.pack_bits(act_bits, W, enc.ACT_PAD_BIT)   # (P, B, m, kw)
    wts = enc.pack_bits(w_bits, W, enc.WEIGHT_PAD_BIT)  # (n, kw)
    p = np.stack([enc.xnor_popcount(act[:, :, :, None, :], wts[None, None, None])
                  ])[0]                                  # (P, B, m, n)
    acc = np.stack([enc.accumulate_planes(p[q]) for q in range(passes)])  # (P, m, n)
    acc_max = k_bits * ((1 << planes) - 1)
    t = rng.integers(-2, acc_max + 3, size=n)
    # make ties likely: put some thresholds exactly on an accumulator value
    t[: n // 2] = acc[0, 0, : n // 2]
    pol = rng.choice([-1, 1], size=n)
    ops = rng.integers(0, 2, size=n)
    offs = rng.integers(-1000, 1000, size=n)
    bits = enc.threshold_bits(acc, t, pol)               # (P, m, n)
    pooled = np.where(ops == enc.POOL_AND, bits.min(axis=0), bits.max(axis=0))
    scores = score_mul * acc[0] + offs
    job = Job()
    schedule(job, R, C, W, act, wts, planes, passes, mode,
             dict(t=t, pol=pol, ops=ops, offs=offs, score_mul=score_mul, acc_bits=acc_bits),
             out_bits=pooled, out_scores=scores)
    return job, dict(acc=acc, bits=pooled, scores=scores)


def schedule(job: Job, R, C, W, act, wts, planes, passes, mode, post, out_bits, out_scores):
    """Append the tiles of one GEMM to ``job``.

    ``act`` is ``(passes, planes, m, kw)`` words, ``wts`` ``(n, kw)``; order: for each tile
    of R rows, for each tile of C columns, for each pooling pass: one tile.
    """
    _, _, m, kw = act.shape
    n = wts.shape[0]
    dt = _DT[W]
    m_tiles, n_tiles = -(-m // R), -(-n // C)
    ones = int(np.iinfo(dt).max)
    out_tile = 0
    for mt in range(m_tiles):
        rows = min(R, m - mt * R)
        for nt in range(n_tiles):
            chans = min(C, n - nt * C)
            cs = [nt * C + c for c in range(C)]
            for q in range(passes):
                for b in range(planes):
                    for k in range(kw):
                        a = [int(act[q, b, mt * R + r, k]) if r < rows else 0 for r in range(R)]
                        w = [int(wts[c, k]) if c < n else ones for c in cs]
                        job.beats.append(dict(act=a, wgt=w, shift=b,
                                              last=int(b == planes - 1 and k == kw - 1)))
                job.k_words.append(planes * kw)
                t = [clamp_threshold(int(post["t"][c]), post["acc_bits"]) if c < n else 0
                     for c in cs]
                job.tiles.append(dict(
                    mode=mode, rows=rows, chans=chans,
                    pool_first=int(q == 0), pool_last=int(q == passes - 1),
                    pixel_end=int(nt == n_tiles - 1),
                    neg=[int(post["pol"][c] < 0) if c < n else 0 for c in cs],
                    pool_op=[int(post["ops"][c]) if c < n else 0 for c in cs],
                    param=(t if mode == MODE_THRESHOLD else
                           [int(post["offs"][c]) if c < n else 0 for c in cs]),
                    score_mul=post["score_mul"]))
            if mode == MODE_INTEGER:
                for r in range(rows):
                    job.scores.append((r, [int(out_scores[mt * R + r, c]) if c < n else None
                                           for c in cs]))
        if mode == MODE_THRESHOLD:
            packed = enc.pack_bits(out_bits[mt * R: mt * R + rows], W, enc.ACT_PAD_BIT)
            for r in range(rows):
                for i in range(packed.shape[1]):
                    job.words[(out_tile, r, i)] = int(packed[r, i])
            out_tile += 1
    return job


def layer_job(layer, x, R: int, C: int, W: int, acc_bits: int) -> tuple[Job, np.ndarray]:
    """Tiles of one IR layer on one input map ``x`` (H, W, C); expected = golden output."""
    planes = golden.layer_input_planes(layer, x[None])
    cols = golden.im2col_segments(planes, layer.kh, layer.kw, layer.stride, layer.pad, W)
    cols = cols[:, 0]                                   # (B, conv_h, conv_w, kwords)
    wts = golden.pack_weights(layer, W)
    acc = golden.layer_accumulators(layer, x[None], W)
    expect = golden.output_stage(layer, acc)[0]
    if layer.output == "threshold" and layer.pool_k > 1:
        k, s = layer.pool_k, layer.pool_stride
        pix = [[(oy * s + dy, ox * s + dx) for oy in range(layer.out_h)
                for ox in range(layer.out_w)] for dy in range(k) for dx in range(k)]
    else:
        pix = [[(y, xx) for y in range(layer.conv_h) for xx in range(layer.conv_w)]]
    act = np.stack([np.stack([cols[:, y, xx] for (y, xx) in p], axis=1) for p in pix])
    job = Job()
    if layer.output == "threshold":
        post = dict(t=layer.thresholds[:, 0], pol=layer.polarity,
                    ops=(layer.pool_ops if layer.pool_ops is not None
                         else np.zeros(layer.out_c, np.uint8)),
                    offs=np.zeros(layer.out_c), score_mul=1, acc_bits=acc_bits)
        out = expect.reshape(-1, layer.out_c)
        schedule(job, R, C, W, act, wts, layer.in_bits, len(pix), MODE_THRESHOLD, post,
                 out, None)
    else:
        post = dict(t=np.zeros(layer.out_c), pol=np.ones(layer.out_c), ops=np.zeros(layer.out_c),
                    offs=layer.score_offset, score_mul=layer.score_mul, acc_bits=acc_bits)
        sc = layer.score_mul * acc[0].reshape(-1, layer.out_c) + layer.score_offset
        schedule(job, R, C, W, act, wts, layer.in_bits, 1, MODE_INTEGER, post, None, sc)
    return job, expect


@dataclass
class RunResult:
    words: dict
    word_order: list
    scores: list
    first_beat: int
    last_out: int

    @property
    def cycles(self) -> int:
        return self.last_out - self.first_beat + 1


def run_engine(dut, job: Job, *, seed: int = 0, p_idle: float = 0.0, p_busy: float = 0.0,
               max_cycles: int = 200_000) -> RunResult:
    """Simulate ``dut`` (a TileEngine) on ``job``.

    ``p_idle``: probability that a source inserts an idle cycle before each beat (operand and
    tile streams); ``p_busy``: probability that a sink holds ``ready`` low in a cycle.
    """
    rnd = random.Random(seed)
    n_words = len(job.words)
    n_scores = len(job.scores)
    got_words: dict = {}
    order: list = []
    got_scores: list = []
    stamps = {"first": None, "last": None}
    done = {"flag": False}

    async def put_all(ctx, stream, payloads, rnd_):
        for p in payloads:
            while p_idle and rnd_.random() < p_idle:
                await ctx.tick()
            ctx.set(stream.valid, 1)
            ctx.set(stream.payload, p)
            await ctx.tick().until(stream.ready)
            ctx.set(stream.valid, 0)

    async def operands(ctx):
        await put_all(ctx, dut.operands, job.beats, random.Random(seed + 1))

    async def tiles(ctx):
        await put_all(ctx, dut.tile, job.tiles, random.Random(seed + 2))

    async def monitor(ctx):
        # records transfers on every stream, drives random ready on the sinks
        tile_no = 0
        cycle = 0
        ctx.set(dut.words.ready, 1)
        ctx.set(dut.scores.ready, 1)
        async for _, _, ov, orr, wv, wr, wp, sv, sr, sp in ctx.tick().sample(
                dut.operands.valid, dut.operands.ready,
                dut.words.valid, dut.words.ready, dut.words.payload,
                dut.scores.valid, dut.scores.ready, dut.scores.payload):
            if ov and orr and stamps["first"] is None:
                stamps["first"] = cycle
            if wv and wr:
                key = (int(wp.row), int(wp.index))
                # words of one output tile: a new tile starts when (row, index) repeats
                while (tile_no, *key) in got_words:
                    tile_no += 1
                got_words[(tile_no, *key)] = int(wp.data)
                order.append((tile_no, *key))
                stamps["last"] = cycle
            if sv and sr:
                got_scores.append((int(sp.row), [int(sp.score[c]) for c in range(dut.cols)]))
                stamps["last"] = cycle
            cycle += 1
            if cycle > max_cycles:
                raise AssertionError(f"no completion after {max_cycles} cycles")
            ctx.set(dut.words.ready, int(not (p_busy and rnd.random() < p_busy)))
            ctx.set(dut.scores.ready, int(not (p_busy and rnd.random() < p_busy)))
            if len(got_words) >= n_words and len(got_scores) >= n_scores and not done["flag"]:
                done["flag"] = True

    async def waiter(ctx):
        while not done["flag"]:
            await ctx.tick()
        await ctx.tick().repeat(8)  # nothing else may come out

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(operands, background=True)
    sim.add_testbench(tiles, background=True)
    sim.add_process(monitor)
    sim.add_testbench(waiter)
    sim.run()
    return RunResult(got_words, order, got_scores, stamps["first"], stamps["last"])


def random_layer(rng: np.random.Generator, *, in_hw: int, in_c: int, out_c: int,
                 in_bits: int = 1, conv: bool = True, pool: int = 1, output: str = "threshold"):
    """A small random valid IR layer (conv with random kernel/stride/pad, or dense)."""
    from xnorflow.sw.ir import Layer

    if conv:
        k = int(rng.integers(1, 4))
        pad, stride, kind, kh = int(rng.integers(0, k)), int(rng.integers(1, 3)), "conv", k
        kw_ = k
    else:
        kind, kh, kw_, pad, stride = "dense", in_hw, in_hw, 0, 1
    wts = rng.integers(0, 2, (out_c, kh, kw_, in_c)).astype(np.uint8)
    layer = Layer("rand", kind, in_hw, in_hw, in_c, out_c, kh, kw_, stride, pad, in_bits,
                  in_bits == 1, wts, output)
    if output == "integer":
        layer.score_offset = rng.integers(-50, 51, out_c).astype(np.int64)
        layer.score_mul = int(rng.choice([1, 2, -1]))
    else:
        acc_max = layer.acc_max
        t = rng.integers(-1, acc_max + 2, out_c)
        t[: out_c // 2] = rng.integers(acc_max // 3, 2 * acc_max // 3 + 1, out_c // 2)
        layer.thresholds = t.reshape(out_c, 1).astype(np.int64)
        layer.polarity = rng.choice([-1, 1], out_c).astype(np.int8)
        if pool > 1 and layer.conv_h >= pool:
            layer.pool_k = pool
            layer.pool_stride = int(rng.integers(1, pool + 1))
            layer.pool_ops = rng.integers(0, 2, out_c).astype(np.uint8)
    layer.validate()
    return layer
