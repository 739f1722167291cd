"""TileEngine in Amaranth's simulator: bit-exact against the golden model and the contract,
random stalls on both input streams and backpressure on both outputs, odd shapes, and
simulated cycle counts equal to the performance model (sw/perf.py)."""

import numpy as np
import pytest

from tests.hw.datapath_tb import gemm_job, layer_job, random_layer, run_engine
from xnorflow.hw.engine import TileEngine
from xnorflow.hw.post import MODE_INTEGER, MODE_THRESHOLD
from xnorflow.sw import perf
from xnorflow.sw.errors import UserError

GEOMETRIES = [(1, 1), (2, 3), (4, 4), (8, 8)]


def _params():
    out = []
    for r, c in GEOMETRIES:
        for w in (16, 32, 64):
            slow = r * c * w > 4 * 4 * 64 or (r, c, w) == (4, 4, 64)
            out.append(pytest.param(r, c, w, marks=[pytest.mark.slow] if slow else [],
                                    id=f"{r}x{c}x{w}"))
    return out


def _check_scores(res, job):
    assert len(res.scores) == len(job.scores)
    for (gr, gs), (er, es) in zip(res.scores, job.scores, strict=True):
        assert gr == er
        assert [g for g, e in zip(gs, es, strict=True) if e is not None] == \
               [e for e in es if e is not None]


@pytest.mark.parametrize("rows,cols,width", _params())
def test_engine_gemm_with_stalls(rows, cols, width):
    """Odd shapes (m, n not multiples of R, C; K not a multiple of W), 2 bit-planes, pooling
    over 2 passes, ties; random idle cycles on operands/tiles and random backpressure."""
    rng = np.random.default_rng(rows * 100 + cols * 10 + width)
    k_bits = 3 * width - 5
    dut = TileEngine(rows, cols, width, max_k=k_bits, max_planes=2,
                     pipelined_post=width == 32)
    job, _ = gemm_job(rng, rows, cols, width, m=rows + max(1, rows // 2), n=2 * cols + 1,
                      k_bits=k_bits, planes=2, passes=2, acc_bits=dut.acc_bits)
    res = run_engine(dut, job, seed=rows + cols, p_idle=0.3, p_busy=0.4)
    assert res.words == job.words
    # words of one row come out in index order
    for key in res.words:
        t, r, i = key
        if i:
            assert res.word_order.index((t, r, i - 1)) < res.word_order.index(key)


@pytest.mark.parametrize("rows,cols,width", [(1, 1, 16), (2, 3, 32), (3, 2, 64)])
def test_engine_integer_with_stalls(rows, cols, width):
    rng = np.random.default_rng(rows + cols + width)
    dut = TileEngine(rows, cols, width, max_k=200, max_planes=3, score_width=24, mul_width=4,
                     pipelined_post=rows == 2)
    job, _ = gemm_job(rng, rows, cols, width, m=2 * rows + 1, n=cols + 1, k_bits=70,
                      planes=3, mode=MODE_INTEGER, acc_bits=dut.acc_bits, score_mul=-3)
    res = run_engine(dut, job, seed=5, p_idle=0.3, p_busy=0.5)
    _check_scores(res, job)


@pytest.mark.parametrize("k_bits", [16, 100, 700])
@pytest.mark.parametrize("fifo_depth,pipelined", [(None, False), ("rows", False),
                                                  (None, True)])
@pytest.mark.parametrize("rows,cols,width,mode", [(1, 1, 16, MODE_THRESHOLD),
                                                  (2, 3, 16, MODE_INTEGER),
                                                  (4, 4, 16, MODE_THRESHOLD),
                                                  (3, 2, 32, MODE_THRESHOLD)])
def test_engine_cycles_equal_model(rows, cols, width, mode, fifo_depth, pipelined, k_bits):
    """No stalls: simulated cycles (first operand beat to last output transfer) equal
    sw.perf.tile_sequence_cycles exactly, for tiles shorter and longer than 2R words and
    with a FIFO small enough for its credits to throttle."""
    rng = np.random.default_rng(k_bits + rows)
    depth = rows if fifo_depth == "rows" else None
    dut = TileEngine(rows, cols, width, max_k=k_bits, fifo_depth=depth,
                     pipelined_post=pipelined)
    # m, n multiples of R, C so that the final row of the final tile is valid
    job, _ = gemm_job(rng, rows, cols, width, m=2 * rows, n=2 * cols, k_bits=k_bits,
                      mode=mode, acc_bits=dut.acc_bits)
    res = run_engine(dut, job)
    if mode == MODE_THRESHOLD:
        assert res.words == job.words
        # words the final row emits in the final tile (the pixel_end flush included)
        tail = -(-2 * cols // width) - cols // width
    else:
        _check_scores(res, job)
        tail = 1
    model = perf.tile_sequence_cycles(dut.timing, job.k_words, tail_words=tail)
    assert res.first_beat == 0
    assert res.cycles == model.cycles


@pytest.mark.parametrize("seed", range(4))
def test_engine_layers_match_golden(seed):
    """Random conv (kernel, stride, padding, OR/AND pooling with any stride) and dense
    layers, 1-bit and multi-bit inputs, through the tile order of docs/accelerator.md: the
    engine's words equal the golden model's output map."""
    rng = np.random.default_rng(100 + seed)
    R, C, W = [(2, 3, 16), (4, 4, 32), (3, 2, 16), (1, 1, 64)][seed]
    in_bits = [1, 3, 1, 8][seed]
    layer = random_layer(rng, in_hw=int(rng.integers(4, 7)), in_c=int(rng.integers(3, 40)),
                         out_c=int(rng.integers(2, 20)), in_bits=in_bits, conv=seed != 3,
                         pool=2 if seed % 2 == 0 else 3)
    x = (rng.integers(0, 2, (layer.in_h, layer.in_w, layer.in_c)) if in_bits == 1 else
         rng.integers(0, 1 << in_bits, (layer.in_h, layer.in_w, layer.in_c)))
    dut = TileEngine(R, C, W, max_k=layer.k_valid, max_planes=in_bits,
                     pipelined_post=seed % 2 == 1)
    dut.check_layer(layer)
    job, _ = layer_job(layer, x, R, C, W, dut.acc_bits)
    res = run_engine(dut, job, seed=seed, p_idle=0.2, p_busy=0.3)
    assert res.words == job.words and len(job.words) > 0


def test_engine_integer_layer_matches_golden():
    rng = np.random.default_rng(9)
    layer = random_layer(rng, in_hw=3, in_c=20, out_c=7, conv=False, output="integer")
    x = rng.integers(0, 2, (3, 3, 20))
    dut = TileEngine(2, 3, 16, max_k=layer.k_valid)
    job, expect = layer_job(layer, x, 2, 3, 16, dut.acc_bits)
    res = run_engine(dut, job, seed=3, p_idle=0.3, p_busy=0.3)
    _check_scores(res, job)
    # one pixel (dense): one score row per channel tile, valid channels first
    got = []
    for nt, (_, sc) in enumerate(res.scores):
        got += sc[: min(3, layer.out_c - 3 * nt)]
    assert got == [int(v) for v in expect.reshape(-1)]


def test_engine_check_layer_and_parameters():
    rng = np.random.default_rng(0)
    layer = random_layer(rng, in_hw=4, in_c=30, out_c=4, conv=False, in_bits=2)
    dut = TileEngine(2, 2, 16, max_k=layer.k_valid - 1, max_planes=2)
    with pytest.raises(UserError, match=r"layer 'rand': K = 480 valid bits .* max_k=479"):
        dut.check_layer(layer)
    with pytest.raises(UserError, match="2 input bit-planes but the engine was built for "
                                        "max_planes=1"):
        TileEngine(2, 2, 16, max_k=10_000).check_layer(layer)
    with pytest.raises(ValueError, match="fifo_depth 1 must be at least rows = 2"):
        TileEngine(2, 2, 16, max_k=100, fifo_depth=1)
    with pytest.raises(ValueError, match="word width must be one of"):
        TileEngine(2, 2, 8, max_k=100)


def test_engine_utilisation_long_k():
    """K = 4096 bits, back-to-back tiles: >= 90% utilisation, measured = model."""
    rng = np.random.default_rng(1)
    R, C, W = 2, 3, 64
    dut = TileEngine(R, C, W, max_k=4096)
    job, _ = gemm_job(rng, R, C, W, m=2 * R, n=2 * C, k_bits=4096, acc_bits=dut.acc_bits)
    res = run_engine(dut, job)
    assert res.words == job.words
    macs = 2 * R * 2 * C * 4096
    model = perf.tile_sequence_cycles(dut.timing, job.k_words, tail_words=1)
    assert res.cycles == model.cycles
    assert perf.utilisation(macs, R, C, W, res.cycles) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_engine_layers_sweep(seed):
    """Bigger sweep: random layers on random geometries, stalls everywhere, vs golden."""
    rng = np.random.default_rng(1000 + seed)
    R, C = [(1, 1), (2, 3), (4, 4), (8, 8), (3, 5), (5, 2)][seed % 6]
    W = [16, 32, 64][seed % 3]
    in_bits = int(rng.choice([1, 1, 2, 4, 8]))
    output = "integer" if seed % 4 == 3 else "threshold"
    layer = random_layer(rng, in_hw=int(rng.integers(3, 8)), in_c=int(rng.integers(1, 80)),
                         out_c=int(rng.integers(1, 24)), in_bits=in_bits,
                         conv=output == "threshold" and seed % 5 != 0,
                         pool=int(rng.choice([1, 2, 3])), output=output)
    x = rng.integers(0, 1 << in_bits, (layer.in_h, layer.in_w, layer.in_c))
    dut = TileEngine(R, C, W, max_k=layer.k_valid, max_planes=in_bits,
                     pipelined_post=seed % 3 == 1)
    dut.check_layer(layer)
    job, _ = layer_job(layer, x, R, C, W, dut.acc_bits)
    res = run_engine(dut, job, seed=seed, p_idle=0.3, p_busy=0.3)
    if output == "threshold":
        assert res.words == job.words
    else:
        _check_scores(res, job)


@pytest.mark.parametrize("depth", [1, 2, 5, 10, 17])
def test_result_fifo_matches_sync_fifo_buffered(depth):
    """ResultFIFO behaves like amaranth's SyncFIFOBuffered cycle by cycle (r_rdy, r_data,
    w_rdy) under random writes and reads, so the engine's timing (sw/perf.py) is unchanged."""
    from amaranth.hdl import Module
    from amaranth.lib.fifo import SyncFIFOBuffered
    from amaranth.sim import Simulator

    from xnorflow.hw.engine import ResultFIFO

    m = Module()
    m.submodules.new = new = ResultFIFO(12, depth)
    m.submodules.ref = ref = SyncFIFOBuffered(width=12, depth=depth)
    rng = np.random.default_rng(depth)
    checked = []

    async def tb(ctx):
        for t in range(600):
            w_en, r_en = int(rng.random() < 0.55), int(rng.random() < 0.5)
            data = int(rng.integers(0, 1 << 12))
            for f in (new, ref):
                ctx.set(f.w_en, w_en)
                ctx.set(f.w_data, data)
                ctx.set(f.r_en, r_en)
            got = [ctx.get(s) for s in (new.r_rdy, new.w_rdy)]
            exp = [ctx.get(s) for s in (ref.r_rdy, ref.w_rdy)]
            assert got == exp, t
            if exp[0]:
                assert ctx.get(new.r_data) == ctx.get(ref.r_data), t
                checked.append(t)
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert len(checked) > 100
