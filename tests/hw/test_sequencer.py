"""The sequencer on its own (memories preloaded, no host link): whole networks against the
executable program model and the golden model, exact cycle counts, and refused programs."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from xnorflow.hw.memories import AcceleratorMemories, memory_depths
from xnorflow.hw.sequencer import ERR_BATCH, ERR_EMPTY, ERR_GEOMETRY, ERR_MAGIC, Sequencer
from xnorflow.sw import golden, perf, program, synthetic
from xnorflow.sw.images import MemoryImage
from xnorflow.sw.targets import sim_target


def run_sequencer(target, mems, input_words=None, max_cycles=100_000, batch=1):
    """Memories + sequencer; start, wait, return (status dict, activations, scores)."""
    imgs = list(mems)
    if input_words is not None:
        imgs.append(MemoryImage("activations", target.width,
                                np.asarray(input_words, dtype=np.uint64), "input"))
    depths = memory_depths(target, mems)
    m = Module()
    m.submodules.mem = mem = AcceleratorMemories(target, depths, imgs)
    m.submodules.seq = seq = Sequencer(target, depths)
    for p in ("prog", "thr", "wgt"):
        m.d.comb += [getattr(mem, f"{p}_raddr").eq(getattr(seq, f"{p}_raddr")),
                     getattr(seq, f"{p}_rdata").eq(getattr(mem, f"{p}_rdata"))]
    m.d.comb += [mem.wgt_ren.eq(seq.wgt_ren), mem.act_raddr.eq(seq.act_raddr),
                 mem.act_ren.eq(seq.act_ren), seq.act_rdata.eq(mem.act_rdata)]
    for p in ("act", "score"):
        for s in ("waddr", "wdata", "we"):
            m.d.comb += getattr(mem, f"{p}_{s}").eq(getattr(seq, f"{p}_{s}"))
    sim = Simulator(m)
    sim.add_clock(1e-6)
    out = {}

    async def tb(ctx):
        ctx.set(seq.batch, batch)
        ctx.set(seq.start, 1)
        await ctx.tick()
        ctx.set(seq.start, 0)
        for _ in range(max_cycles):
            await ctx.tick()
            if not ctx.get(seq.busy):
                break
        out.update(busy=ctx.get(seq.busy), done=ctx.get(seq.done), error=ctx.get(seq.error),
                   cycles=ctx.get(seq.cycles), result=ctx.get(seq.result),
                   results=[ctx.get(seq.results[r]) for r in range(target.rows)])
        am, sm = mem.mems["activations"].data, mem.mems["scores"].data
        out["act"] = [ctx.get(am[i]) for i in range(depths["activations"])]
        out["scores"] = [ctx.get(sm[i]) for i in range(depths["scores"])]

    sim.add_testbench(tb)
    sim.run()
    return out


def signed32(v):
    return v - (1 << 32) if v >> 31 else v


@pytest.mark.parametrize("geometry, windows", [((2, 4, 16), False), ((5, 2, 32), None)],
                         ids=["2x4x16-segments", "5x2x32-windows"])
def test_cnn_stride_pad_pool(geometry, windows):
    """conv (stride 2, pad 1, 3 channels, 3-bit planes) -> conv with overlapping pooling
    (3x3 window, stride 2) over 20 channels -> dense: the whole activation memory, the
    scores and the class equal the executable model and the golden model, and the cycle
    count equals the performance model exactly. With ``windows=False`` the first layer's
    stride-2 padded im2col runs on chip; otherwise the host sends its windows."""
    model = synthetic.random_cnn(in_shape=(9, 7, 3), convs=((6, 3, 2, 1, 1), (20, 2, 1, 1, 3, 2)),
                                 dense=(7,), in_bits=3, seed=5)
    target = sim_target(*geometry)
    mems = program.build_memories(model, target, input_windows=windows)
    img = synthetic.random_images(1, 9, 7, 3, seed=6)[0]
    header, _ = program.decode_program(mems[0].words)
    out = run_sequencer(target, mems, program.pack_input(img, header, target.width))
    ref = program.execute(mems, img, target)
    gold = golden.run(model, img)
    assert out["error"] == 0 and out["done"] == 1 and out["busy"] == 0
    assert out["act"][:len(ref.activations)] == [int(v) for v in ref.activations]
    scores = [signed32(v) for v in out["scores"][:7]]
    assert scores == gold.scores[0].tolist() == ref.scores.tolist()
    assert out["result"] == int(gold.predictions[0])
    assert out["cycles"] == perf.predict_network_cycles(model, target, input_windows=windows)


def test_argmax_ties_pick_first():
    """Equal maximum scores: the lowest class index wins (encoding.argmax_first)."""
    model = synthetic.random_mlp(sizes=(16, 8, 6), in_shape=(1, 1, 16), in_bits=1, seed=2)
    last = model.layers[-1]
    last.weights[:] = 1  # every class gets the same accumulator...
    last.score_offset = np.array([0, 3, 1, 3, 3, 2], dtype=np.int64)  # ...ties at 1, 3, 4
    target = sim_target(2, 2, 16)
    mems = program.build_memories(model, target)
    img = synthetic.random_images(1, 1, 1, 16, seed=1)[0]
    header, _ = program.decode_program(mems[0].words)
    out = run_sequencer(target, mems, program.pack_input(img, header, 16))
    assert out["result"] == 1 == int(golden.run(model, img).predictions[0])


def _with_header_word(mems, index, value):
    prog = mems[0].words.copy()
    prog[index] = value
    return [MemoryImage("program", 32, prog, "patched"), *mems[1:]]


@pytest.mark.parametrize("case, code", [("magic", ERR_MAGIC), ("geometry", ERR_GEOMETRY),
                                        ("empty", ERR_EMPTY)])
def test_bad_programs_are_refused(case, code):
    model = synthetic.random_mlp(sizes=(16, 8, 4), in_shape=(1, 1, 16), in_bits=1, seed=3)
    target = sim_target(2, 4, 32)
    mems = program.build_memories(model, target)
    if case == "magic":
        mems = _with_header_word(mems, 0, 0x12345678)
    elif case == "geometry":
        # same memory widths (C * W), other R: the header names 4x4x32
        mems = program.build_memories(model, sim_target(4, 4, 32))
    else:
        mems = _with_header_word(mems, 1, 0)
    out = run_sequencer(target, mems, max_cycles=200)
    assert out["error"] == code and out["done"] == 0 and out["busy"] == 0


@pytest.mark.parametrize("make, geometry, batch", [
    ("mlp", (4, 2, 16), 3),
    ("cnn", (3, 4, 32), 3),
], ids=["mlp-4x2x16-b3", "cnn-3x4x32-b3"])
def test_batch_fills_rows(make, geometry, batch):
    """A batch of images runs in one pass (dense layers use ``batch`` rows): every image's
    scores and class equal golden, and the cycles equal the model (with batch)."""
    if make == "mlp":
        model = synthetic.random_mlp(sizes=(64, 24, 10), in_shape=(8, 8, 1), in_bits=4, seed=8)
    else:
        model = synthetic.random_cnn(in_shape=(6, 6, 2), convs=((8, 3, 1, 1, 2),),
                                     dense=(12, 5), in_bits=2, seed=9)
    target = sim_target(*geometry)
    mems = program.build_memories(model, target, max_batch=batch)
    header, _ = program.decode_program(mems[0].words)
    assert header["max_batch"] == batch
    imgs = synthetic.random_images(batch, model.in_h, model.in_w, model.in_c, seed=10)
    words = np.concatenate([program.pack_input(im, header, target.width) for im in imgs])
    out = run_sequencer(target, mems, words, batch=batch)
    gold = golden.run(model, imgs)
    n = model.layers[-1].out_c
    assert out["error"] == 0 and out["done"] == 1
    for i in range(batch):
        assert [signed32(v) for v in out["scores"][i * n:(i + 1) * n]] == gold.scores[i].tolist()
        assert out["results"][i] == int(gold.predictions[i])
    assert out["cycles"] == perf.predict_network_cycles(model, target, batch=batch)


def test_batch_beyond_program_refused():
    model = synthetic.random_mlp(sizes=(16, 8, 4), in_shape=(1, 1, 16), in_bits=1, seed=3)
    target = sim_target(4, 4, 32)
    mems = program.build_memories(model, target, max_batch=2)
    out = run_sequencer(target, mems, batch=3, max_cycles=200)
    assert out["error"] == ERR_BATCH and out["done"] == 0
