"""The accelerator core (sequencer, memories, array, output stage; no host link) with its
memories preloaded: whole networks against the executable program model (the whole
activation memory) and the golden model (scores, class), exact cycle counts, batches, the
zero word, addresses wrapping at the top of memory, and refused programs."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from xnorflow.hw.accelerator import AcceleratorCore
from xnorflow.hw.sequencer import ERR_BATCH, ERR_EMPTY, ERR_GEOMETRY, ERR_MAGIC
from xnorflow.sw import golden, perf, program, synthetic
from xnorflow.sw.images import MemoryImage
from xnorflow.sw.targets import LANE_BITS, sim_target


def run_core(target, mems, images, batch=None, depths=None, act_init=None, runs=1,
             max_cycles=400_000, header=None):
    """Preload the memories (and the input of ``images`` at ``input_base``; ``header``: the
    program header that says how, default the program's), START ``runs`` times with
    ``batch`` images, return per run the status, the activation memory and the scores
    memory as 32-bit lanes."""
    header = header or program.decode_program(mems[0].words)[0]
    batch = len(images) if batch is None else batch
    depths = {**program.memory_depths(target, mems), **(depths or {})}
    act = np.zeros(depths["activations"], dtype=np.uint64)
    if act_init is not None:
        act[:] = act_init
    inp = np.concatenate([program.pack_input(px, header, target.width) for px in images])
    act[header["input_base"]:header["input_base"] + len(inp)] = inp
    imgs = [*mems, MemoryImage("activations", target.width, act, "input")]
    dut = AcceleratorCore(target, imgs, depths=depths)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    out = []
    sb = program.score_bits(target)

    async def tb(ctx):
        for _ in range(runs):
            ctx.set(dut.batch, batch)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for _ in range(max_cycles):
                await ctx.tick()
                if not ctx.get(dut.busy):
                    break
            mm = dut.memories.mems
            scores = []
            for i in range(depths["scores"]):
                v = ctx.get(mm["scores"].data[i])
                word = 0
                for c in range(target.cols):
                    lane = (v >> (c * sb)) & ((1 << sb) - 1)
                    lane = lane - (1 << sb) if lane >> (sb - 1) else lane
                    word |= (lane & 0xFFFFFFFF) << (c * LANE_BITS)
                scores.append(word)
            out.append({"busy": ctx.get(dut.busy), "done": ctx.get(dut.done),
                        "error": ctx.get(dut.error), "cycles": ctx.get(dut.cycles),
                        "act": [ctx.get(mm["activations"].data[i])
                                for i in range(depths["activations"])],
                        "scores": scores})

    sim.add_testbench(tb)
    sim.run()
    return out


def check_run(model, target, images, mems=None, windows=None, **kw):
    """Run and compare: whole activation memory == execute_batch's (but the top word, the
    zero word), scores == golden == execute, cycles == the model; returns the run."""
    mems = mems or program.build_memories(model, target, input_windows=windows,
                                          max_batch=max(1, len(images)))
    header, _ = program.decode_program(mems[0].words)
    runs = run_core(target, mems, images, **kw)
    ref = program.execute_batch(mems, images, target)
    gold = golden.run(model, np.asarray(images))
    for out in runs:
        assert out["error"] == 0 and out["done"] == 1 and out["busy"] == 0
        got = program.scores_from_words(out["scores"], header, target.cols, len(images))
        for i in range(len(images)):
            assert got[i].tolist() == gold.scores[i].tolist() == ref[i].scores.tolist()
        depth = len(out["act"])
        want = [int(v) for v in ref[0].activations]
        assert out["act"][:depth - 1] == want[:depth - 1]
        assert out["act"][depth - 1] == 0  # the zero word
        assert out["cycles"] == perf.program_cycles(mems, target, len(images))
    return runs


def cnn_stride_pad_pool():
    """conv (stride 2, pad 1, 3 channels, 3-bit planes) -> conv with overlapping pooling
    (3x3 window, stride 2) over 20 channels -> dense."""
    return synthetic.random_cnn(in_shape=(9, 7, 3), convs=((6, 3, 2, 1, 1), (20, 2, 1, 1, 3, 2)),
                                dense=(7,), in_bits=3, seed=5)


MODELS = {
    "mlp8": lambda: synthetic.random_mlp(sizes=(64, 40, 10), in_shape=(8, 8, 1), seed=1),
    "cnn": cnn_stride_pad_pool,
    # padding 2 and 3 (the row's 2-bit "needs"), a 5x5 window, 40 channels over 2 words
    "cnn-pad3": lambda: synthetic.random_cnn(
        in_shape=(6, 5, 2), convs=((40, 5, 1, 3, 1), (9, 3, 2, 2, 2)), dense=(5,), in_bits=2,
        seed=11),
    # a window wider than its (padded) input map, and 33 output channels
    "cnn-narrow": lambda: synthetic.random_cnn(
        in_shape=(6, 2, 3), convs=((33, 3, 1, 1, 1),), dense=(5,), in_bits=2, seed=5),
}
CASES = [("mlp8", (8, 2, 32), None), ("mlp8", (3, 4, 16), None),
         ("cnn", (2, 4, 16), False), ("cnn", (5, 2, 32), None), ("cnn", (1, 8, 64), False),
         ("cnn-pad3", (4, 2, 32), False), ("cnn-pad3", (3, 8, 16), None),
         ("cnn-narrow", (2, 2, 16), False)]


@pytest.mark.parametrize("name, geometry, windows", CASES,
                         ids=[f"{n}-{'x'.join(map(str, g))}-{'seg' if w is False else 'auto'}"
                              for n, g, w in CASES])
def test_networks(name, geometry, windows):
    model = MODELS[name]()
    target = sim_target(*geometry)
    img = synthetic.random_images(1, model.in_h, model.in_w, model.in_c, seed=6)
    check_run(model, target, img, windows=windows)


RUN_CASES = [c for c in CASES if c[1] in ((8, 2, 32), (2, 4, 16), (4, 2, 32), (2, 2, 16))]


@pytest.mark.parametrize("name, geometry, windows", RUN_CASES,
                         ids=[f"{n}-{'x'.join(map(str, g))}" for n, g, _ in RUN_CASES])
def test_networks_with_the_ecp5_pipelining(name, geometry, windows):
    """``mem_regs = 2``: registers beside the memories and the beat player's look-ahead port
    (runs of beats start from a registered flag); the same results, the model's cycles."""
    model = MODELS[name]()
    target = dataclasses.replace(sim_target(*geometry), mem_regs=2)
    img = synthetic.random_images(1, model.in_h, model.in_w, model.in_c, seed=7)
    mems = program.build_memories(model, target, input_windows=windows)
    _, layers = program.decode_program(mems[0].words)
    words = [int(w) for w in mems[0].words]
    runs = [words[d["table"] + i] >> program.BEAT_RUN & 15 for d in layers
            for i in range(d["entries"])]
    assert any(runs) and not all(runs)  # entries with and without runs are played
    check_run(model, target, img, mems=mems)


@pytest.mark.parametrize("name, geometry, batch", [("mlp8", (8, 2, 32), 8),
                                                   ("mlp8", (4, 4, 16), 3),
                                                   ("cnn", (3, 4, 32), 2)],
                         ids=["mlp8-8x2x32-b8", "mlp8-4x4x16-b3", "cnn-3x4x32-b2"])
def test_batches(name, geometry, batch):
    """A batch runs in one pass (rows are the pixels of all images): every image equals
    golden, cycles equal the model for that batch."""
    model = MODELS[name]()
    target = sim_target(*geometry)
    imgs = synthetic.random_images(batch, model.in_h, model.in_w, model.in_c, seed=3)
    check_run(model, target, imgs)


def test_the_zero_word_is_written_at_start():
    """Garbage in the top activation word (the host may write anything there) does not
    matter: every START writes the zero word first, which padded taps read."""
    model = MODELS["cnn-pad3"]()
    target = sim_target(2, 4, 32)
    img = synthetic.random_images(1, model.in_h, model.in_w, model.in_c, seed=2)
    mems = program.build_memories(model, target)
    depth = program.memory_depths(target, mems)["activations"]
    init = np.zeros(depth, dtype=np.uint64)
    init[-1] = 0xFFFFFFFF
    check_run(model, target, img, mems=mems, act_init=init)


def test_addresses_wrap_at_the_top():
    """An activation memory exactly as deep as the maps need (plus the zero word): window
    origins in the padding wrap around the top and every tap still lands right."""
    model = MODELS["cnn-pad3"]()
    target = sim_target(3, 2, 16)
    mems = program.build_memories(model, target, input_windows=False)
    header, _ = program.decode_program(mems[0].words)
    depth = 1 << header["act_words"].bit_length()  # power of two above act_words
    img = synthetic.random_images(1, model.in_h, model.in_w, model.in_c, seed=4)
    check_run(model, target, img, mems=mems, depths={"activations": depth})


@pytest.mark.parametrize("seed", range(6))
def test_random_networks(seed):
    rng = np.random.default_rng(seed + 500)
    geometry = (int(rng.choice([1, 2, 3, 5, 8])), int(rng.choice([1, 2, 4, 8])),
                int(rng.choice([16, 32, 64])))
    model = synthetic.random_network(seed + 200)
    # the pipelining too (mem_regs 2: the beat player's run flags from its look-ahead port)
    target = dataclasses.replace(sim_target(*geometry), mem_regs=int(rng.integers(0, 3)))
    mems = program.build_memories(model, target)
    header, _ = program.decode_program(mems[0].words)
    n = int(rng.integers(1, header["max_batch"] + 1))
    imgs = synthetic.random_images(n, model.in_h, model.in_w, model.in_c, seed=seed)
    check_run(model, target, imgs, mems=mems)


def _patched(mems, index, value):
    words = mems[0].words.copy()
    words[index] = value
    return [MemoryImage("program", 32, words, "patched"), *mems[1:]]


@pytest.mark.parametrize("mem_regs", [0, 2])
@pytest.mark.parametrize("case, code", [("magic", ERR_MAGIC), ("geometry", ERR_GEOMETRY),
                                        ("empty", ERR_EMPTY), ("batch", ERR_BATCH),
                                        ("batch>R", ERR_BATCH)])
def test_bad_programs_are_refused(case, code, mem_regs):
    """Each header check refuses its program after the header (a cycle later with
    ``mem_regs = 2``, whose header words come from a register)."""
    model = synthetic.random_mlp(sizes=(16, 8, 4), in_shape=(1, 1, 16), in_bits=1, seed=3)
    target = dataclasses.replace(sim_target(2, 4, 32), mem_regs=mem_regs)
    mems = program.build_memories(model, target, max_batch=1)
    img = synthetic.random_images(1, 1, 1, 16, seed=1)
    header, _ = program.decode_program(mems[0].words)
    batch = 1
    if case == "magic":
        mems = _patched(mems, 0, 0x12345678)
    elif case == "geometry":
        mems = _patched(mems, 1, 4 | 4 << 8 | 32 << 16)
    elif case == "empty":
        mems = _patched(mems, 2, 0)
    else:
        batch = 2 if case == "batch" else 3
    (out,) = run_core(target, mems, img, batch=batch, max_cycles=200, header=header)
    assert out["error"] == code and out["done"] == 0 and out["busy"] == 0
    assert out["cycles"] == perf.RUN_START + perf.fetch_regs(mem_regs)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6, 40))
def test_random_networks_more(seed):
    test_random_networks(seed)


@pytest.mark.parametrize("rows", [1, 2])
def test_short_tiles_with_the_registered_threshold_word(rows):
    """``mem_regs = 2`` registers the threshold word once more, so the output stage latches
    it three cycles after its address: tiles of one beat (a dense layer of one word and one
    plane) with a new column group each are padded to ``program.tile_beats`` = 3 beats."""
    model = synthetic.random_model(3, [dict(kind="dense", out_c=12), dict(kind="dense",
                                   out_c=5)], (1, 1, 16), in_bits=1)
    target = dataclasses.replace(sim_target(rows, 2, 16), mem_regs=2)
    imgs = synthetic.random_images(rows, 1, 1, 16, seed=5)
    check_run(model, target, imgs)
