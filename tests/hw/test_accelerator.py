"""The whole accelerator in Amaranth's simulator, driven through the real host session.

Networks (random weights, median thresholds: :mod:`xnorflow.sw.synthetic`) are loaded over
the host link (or preloaded), classified one image or a batch per START under random stalls,
and every readable hidden layer's bits (read back over the link), every score and class must
equal the golden model, over several geometries; a second model is loaded over the link
without a reset; the status's cycle count equals the performance model exactly.
"""

import dataclasses
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from xnorflow.hw.accelerator import Accelerator
from xnorflow.hw.link import AmaranthStreamTransport, HostSession
from xnorflow.sw import golden, perf, program, synthetic
from xnorflow.sw.targets import TARGETS, sim_target


def mlp():
    return synthetic.random_mlp(sizes=(64, 32, 10), in_shape=(8, 8, 1), in_bits=8, seed=1)


def cnn():
    return synthetic.random_cnn(in_shape=(8, 8, 1), convs=((8, 3, 1, 1, 2), (16, 3, 1, 1, 1)),
                                dense=(10,), in_bits=2, seed=2)


def cnn_odd():
    # stride 2, in_c 3 (one segment of 3 channels), 3-bit planes, 40 channels over 2 words
    return synthetic.random_cnn(in_shape=(9, 7, 3), convs=((5, 3, 2, 1, 1), (40, 3, 1, 0, 2)),
                                dense=(7,), in_bits=3, seed=3)


def run_sessions(target, jobs, preload=None, stalls=0.0, seed=0):
    """``jobs``: ``(model, memories, images, batch)``, each loaded over the link and run with
    ``batch`` images per START, one after the other in one simulation (no reset between)."""
    dut = Accelerator(target, preload or [])
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    results = []

    async def tb(ctx):
        tr = AmaranthStreamTransport(ctx, dut, idle=stalls, backpressure=stalls,
                                     rng=random.Random(seed))
        for k, (model, mems, images, batch) in enumerate(jobs):
            sess = await HostSession.open(tr, model, mems, target,
                                          load=not (preload and k == 0))
            results.append(await sess.infer_all(images, batch=batch))

    sim.add_testbench(tb)
    sim.run()
    return results


def check(model, mems, images, outs, target, batch):
    gold = golden.run(model, images)
    _, descs = program.decode_program(mems[0].words)
    readable = program.readable_layers(descs)
    for i, o in enumerate(outs):
        assert o.scores == gold.scores[i].tolist()
        assert o.prediction == int(gold.predictions[i])
        assert len(o.hidden) == len(readable)
        for k, (h, ok) in enumerate(zip(o.hidden, readable, strict=True)):
            if ok:
                np.testing.assert_array_equal(h, gold.activations[k][i])
            else:
                assert h is None
    runs = [outs[i:i + batch] for i in range(0, len(outs), batch)]
    for run in runs:
        assert sum(o.cycles for o in run) == perf.program_cycles(mems, target, len(run))


CASES = [(mlp, (4, 4, 32), 2, 1), (mlp, (8, 2, 32), 8, 8), (mlp, (3, 2, 64), 3, 3),
         (cnn, (4, 4, 32), 1, 1), (cnn, (2, 8, 16), 1, 1), (cnn_odd, (3, 4, 16), 1, 1)]


@pytest.mark.parametrize("make, geometry, n, batch", CASES,
                         ids=[f"{m.__name__}-{'x'.join(map(str, g))}-b{b}"
                              for m, g, _, b in CASES])
def test_network_matches_golden(make, geometry, n, batch):
    model = make()
    target = sim_target(*geometry)
    mems = program.build_memories(model, target, max_batch=batch)
    images = synthetic.random_images(n, model.in_h, model.in_w, model.in_c, seed=7)
    (outs,) = run_sessions(target, [(model, mems, images, batch)], stalls=0.2, seed=n)
    check(model, mems, images, outs, target, batch)


def wide_mlp():
    # 128 8-bit inputs: 4 words per plane (a partial last row on 3 rows, an empty one on 8)
    return synthetic.random_mlp(sizes=(128, 40, 10), in_shape=(4, 4, 8), in_bits=8, seed=6)


def deep_mlp():
    # two hidden layers: 8 planes of 4 words, then 2 words (spread or split, by geometry)
    return synthetic.random_mlp(sizes=(128, 64, 40, 10), in_shape=(4, 4, 8), in_bits=8, seed=6)


def narrow_mlp():
    return synthetic.random_mlp(sizes=(64, 64, 48, 10), in_shape=(8, 8, 1), in_bits=8, seed=3)


def pool_cnn():
    # 3x3 pooled pixels (padded windows) of 8 channels: on 4 rows a tile per pixel, its 4
    # column groups spread over the rows (9 tile sets instead of 3 tiles x 4), each row its
    # own threshold word and pooling op through the 4 pooling passes; then an unpooled one
    return synthetic.random_cnn(in_shape=(6, 6, 1), convs=((8, 3, 1, 1, 2), (8, 3, 1, 1, 1)),
                                dense=(10,), in_bits=2, seed=4)


def strip_cnn():
    # 1x3 output pixels of 8 channels on 2 rows: two tile sets per spread pixel
    return synthetic.random_cnn(in_shape=(3, 5, 4), convs=((8, 3, 1, 0, 1), (6, 1, 1, 0, 1)),
                                dense=(7,), in_bits=1, seed=5)


# (model, geometry, mem_regs, images, batch, each layer's mapping: K split, S spread, - plain)
ROW_WORD_CASES = [(mlp, (4, 4, 32), 0, 2, 1, "S-"), (wide_mlp, (8, 2, 32), 2, 1, 1, "S-"),
                  (wide_mlp, (4, 4, 16), 1, 2, 2, "K-"), (cnn, (4, 2, 32), 2, 1, 1, "--K"),
                  (cnn_odd, (2, 8, 16), 0, 1, 1, "--K"), (deep_mlp, (4, 4, 32), 1, 1, 1, "KS-"),
                  (deep_mlp, (8, 8, 32), 2, 1, 1, "SS-"), (narrow_mlp, (4, 2, 32), 1, 3, 2, "SS-"),
                  # fc1's 5 groups spread over 8 rows: one 8-beat tile set per image, shorter
                  # than the next image's row-list prefetch (R + 1 cycles) without its bubble
                  (deep_mlp, (8, 8, 32), 2, 3, 3, "SS-"),
                  # conv layers spread (a tile per output pixel) where their last tile of
                  # pixels would leave rows idle: pooled, padded, 1 or 2 images; two tile sets
                  (pool_cnn, (4, 2, 16), 2, 1, 1, "SSK"), (pool_cnn, (4, 2, 16), 0, 2, 2, "SSK"),
                  (strip_cnn, (2, 2, 16), 1, 2, 1, "S-K")]


@pytest.mark.parametrize("make, geometry, regs, n, batch, modes", ROW_WORD_CASES,
                         ids=[f"{m.__name__}-{'x'.join(map(str, g))}-r{r}-b{b}"
                              for m, g, r, _, b, _ in ROW_WORD_CASES])
def test_row_weight_words_match_golden(make, geometry, regs, n, batch, modes):
    """A weight word per array row (``Target.weight_rows = R``, as ``ecp5-85f``): the dense
    layers the compiler splits across the rows (``ksplit``), the dense and conv layers whose
    column groups it spreads over them (``ospread``: a threshold word and an output lane per
    row) and the others, loaded
    over the link under random stalls, every readable hidden bit, score and class equal the
    golden model and the cycles the performance model, with mem_regs 0, 1 and 2."""
    model = make()
    target = dataclasses.replace(sim_target(*geometry, weight_rows=geometry[0]), mem_regs=regs)
    mems = program.build_memories(model, target, max_batch=batch)
    _, descs = program.decode_program(mems[0].words)
    assert "".join("K" if d["ksplit"] else "S" if d["ospread"] else "-" for d in descs) == modes
    images = synthetic.random_images(n, model.in_h, model.in_w, model.in_c, seed=9)
    (outs,) = run_sessions(target, [(model, mems, images, batch)], stalls=0.2, seed=n + regs)
    check(model, mems, images, outs, target, batch)


def test_second_model_over_the_link_without_reset():
    """A model preloaded (bitstream contents), then another loaded over the host link into
    the same accelerator: both classify exactly."""
    target = sim_target(4, 2, 32)
    a, b = mlp(), cnn()
    ma, mb = program.build_memories(a, target), program.build_memories(b, target)
    ia = synthetic.random_images(2, 8, 8, 1, seed=1)
    ib = synthetic.random_images(1, 8, 8, 1, seed=2)
    outs = run_sessions(target, [(a, ma, ia, 1), (b, mb, ib, 1), (a, ma, ia, 2)], preload=ma)
    check(a, ma, ia, outs[0], target, 1)
    check(b, mb, ib, outs[1], target, 1)
    check(a, ma, ia, outs[2], target, 2)


@pytest.mark.slow
def test_digits_mlp_on_up5k_full_size():
    """The digits MLP shape (64-256-256-10, 8-bit input) on the up5k target, a batch of 8."""
    model = synthetic.random_mlp(sizes=(64, 256, 256, 10), in_shape=(8, 8, 1), in_bits=8,
                                 seed=4)
    target = TARGETS["up5k"]
    mems = program.build_memories(model, target)
    images = synthetic.random_images(8, 8, 8, 1, seed=5)
    (outs,) = run_sessions(target, [(model, mems, images, 8)])
    check(model, mems, images, outs, target, 8)


@pytest.mark.slow
def test_fashion_cnn_on_ecp5_full_size():
    """The Fashion-MNIST CNN shape (conv32-pool, conv64-pool, fc256, fc10) on ecp5-85f."""
    model = synthetic.fashion_cnn(seed=1)
    target = TARGETS["ecp5-85f"]
    mems = program.build_memories(model, target)
    images = synthetic.random_images(1, 28, 28, 1, seed=3)
    (outs,) = run_sessions(target, [(model, mems, images, 1)], preload=mems)
    check(model, mems, images, outs, target, 1)
