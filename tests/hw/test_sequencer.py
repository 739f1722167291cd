"""The sequencer on its own (memories preloaded, no host link): whole networks against the
executable program model and the golden model, exact cycle counts, and refused programs."""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from xnorflow.hw.memories import AcceleratorMemories, memory_depths
from xnorflow.hw.sequencer import ERR_BATCH, ERR_EMPTY, ERR_GEOMETRY, ERR_MAGIC, Sequencer
from xnorflow.sw import golden, perf, program, synthetic
from xnorflow.sw.errors import UserError
from xnorflow.sw.images import MemoryImage
from xnorflow.sw.targets import sim_target


def run_sequencer(target, mems, input_words=None, max_cycles=100_000, batch=1, depths=None):
    """Memories + sequencer; start, wait, return (status dict, activations, scores).
    ``depths`` overrides some memory depths (default: :func:`memory_depths`)."""
    imgs = list(mems)
    if input_words is not None:
        imgs.append(MemoryImage("activations", target.width,
                                np.asarray(input_words, dtype=np.uint64), "input"))
    depths = {**memory_depths(target, mems), **(depths or {})}
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


@pytest.mark.parametrize("geometry, in_hw, in_bits, mid_c, batch", [
    ((2, 4, 16), (4, 8), 1, 8, 1),
    ((3, 2, 32), (4, 4), 3, 8, 1),
    ((2, 4, 16), (4, 8), 2, 20, 2),
], ids=["2x4x16", "3x2x32", "2x4x16-b2"])
def test_addresses_wrap_at_the_top_of_the_activations(geometry, in_hw, in_bits, mid_c, batch):
    """The activation address arithmetic is modulo the memory depth: with the memory exactly
    full (act_words == depth), the second padded conv reads a map that ends at the last word,
    so its bottom/right padding addresses run past the top (and the first layer's top/left
    padding below 0) and wrap; masked, they change nothing: every word, score, class and the
    cycle count stay exact."""
    h, w = in_hw
    model = synthetic.random_cnn(in_shape=(h, w, 3), convs=((mid_c, 3, 1, 1, 1), (6, 3, 1, 1, 1)),
                                 dense=(5,), in_bits=in_bits, seed=4)
    target = sim_target(*geometry)
    mems = program.build_memories(model, target, input_windows=False, max_batch=batch)
    header, descs = program.decode_program(mems[0].words)
    depth = header["act_words"]
    assert depth & (depth - 1) == 0  # the test's premise: the whole memory is used
    assert descs[1]["in_base"] + batch * descs[1]["in_img_stride"] == depth
    assert descs[1]["pad"] == 1 and descs[0]["addr0"] < 0
    imgs = synthetic.random_images(batch, h, w, 3, seed=12)
    words = np.concatenate([program.pack_input(im, header, target.width) for im in imgs])
    out = run_sequencer(target, mems, words, batch=batch, depths={"activations": depth})
    gold = golden.run(model, imgs)
    assert out["error"] == 0 and out["done"] == 1
    if batch == 1:
        ref = program.execute(mems, imgs[0], target)
        assert out["act"] == [int(v) for v in ref.activations]
    for i in range(batch):
        assert [signed32(v) for v in out["scores"][i * 5:(i + 1) * 5]] == gold.scores[i].tolist()
        assert out["results"][i] == int(gold.predictions[i])
    assert out["cycles"] == perf.predict_network_cycles(model, target, input_windows=False,
                                                        batch=batch)


@pytest.mark.parametrize("geometry, in_hw", [((2, 4, 16), (1, 254)), ((3, 2, 32), (254, 3))],
                         ids=["2x4x16-wide", "3x2x32-tall"])
def test_layer_at_the_coordinate_limit(geometry, in_hw):
    """A padded input of exactly 2^COORD_BITS = 256 pixels (254 + 2 * pad 1) on one axis: the
    on-chip im2col's 8-bit coordinates wrap the padding at -1 to 255 >= 254 and still mask
    exactly (bit-exact words and scores, exact cycles)."""
    h, w = in_hw
    assert max(h, w) + 2 == 1 << program.COORD_BITS
    model = synthetic.random_cnn(in_shape=(h, w, 1), convs=((4, 3, 1, 1, 1),), dense=(3,),
                                 in_bits=2, seed=13)
    target = sim_target(*geometry)
    program.check_fits(model, target, input_windows=False)
    mems = program.build_memories(model, target, input_windows=False)
    header, _ = program.decode_program(mems[0].words)
    img = synthetic.random_images(1, h, w, 1, seed=14)[0]
    out = run_sequencer(target, mems, program.pack_input(img, header, target.width))
    ref = program.execute(mems, img, target)
    gold = golden.run(model, img)
    assert out["error"] == 0 and out["done"] == 1
    assert out["act"][:len(ref.activations)] == [int(v) for v in ref.activations]
    assert [signed32(v) for v in out["scores"][:3]] == gold.scores[0].tolist()
    assert out["result"] == int(gold.predictions[0])
    assert out["cycles"] == perf.predict_network_cycles(model, target, input_windows=False)


@pytest.mark.parametrize("in_hw, field", [((1, 255), "in_w"), ((255, 1), "in_h")])
def test_beyond_the_coordinate_limit_is_refused(in_hw, field):
    """One pixel more (255 + 2 * pad 1 = 257) is refused, naming the layer and the axis."""
    h, w = in_hw
    model = synthetic.random_cnn(in_shape=(h, w, 1), convs=((4, 3, 1, 1, 1),), dense=(3,),
                                 in_bits=1, seed=13)
    name = model.layers[0].name
    with pytest.raises(UserError, match=rf"layer '{name}': padded input {field} .* = 257 "
                                        r"exceeds the sequencer's 256-pixel"):
        program.check_fits(model, sim_target(2, 4, 16), input_windows=False)


def test_pooling_window_limit():
    """``pool_k`` is a 4-bit field: a 15x15 pooling window builds, 16x16 is refused."""
    target = sim_target(2, 4, 16)
    for k in (15, 16):
        model = synthetic.random_cnn(in_shape=(16, 16, 1), convs=((4, 1, 1, 0, k),), dense=(3,),
                                     in_bits=1, seed=3)
        if k == 15:
            program.check_fits(model, target, input_windows=False)
        else:
            with pytest.raises(UserError, match=r"descriptor field pool_k = 16 exceeds the "
                                                r"sequencer's 4-bit field"):
                program.check_fits(model, target, input_windows=False)


@pytest.mark.parametrize("geometry, acc_bits", [((2, 2, 16), 24), ((4, 4, 16), 18)],
                         ids=["2x2x16-acc24", "4x4x16-acc18"])
def test_scores_at_the_score_width(geometry, acc_bits):
    """Scores are ``acc_bits + 3`` bits wide in the datapath (sign-extended to 32 in memory):
    offsets that take the worst score to the largest magnitude that fits run bit-exact (the
    largest positive and negative scores, the argmax), one more is refused."""
    target = dataclasses.replace(sim_target(*geometry), acc_bits=acc_bits)
    sb = program.score_bits(target)
    model = synthetic.random_mlp(sizes=(32, 8, 6), in_shape=(1, 1, 32), in_bits=1, seed=5)
    last = model.layers[-1]
    room = (1 << (sb - 1)) - 1 - abs(int(last.score_mul)) * int(last.acc_max)
    last.score_offset = np.array([room, -room, 0, room - 7, -room + 3, 1], dtype=np.int64)
    mems = program.build_memories(model, target)
    img = synthetic.random_images(1, 1, 1, 32, seed=6)[0]
    header, _ = program.decode_program(mems[0].words)
    out = run_sequencer(target, mems, program.pack_input(img, header, target.width))
    gold = golden.run(model, img)
    assert out["error"] == 0 and out["done"] == 1
    assert [signed32(v) for v in out["scores"][:6]] == gold.scores[0].tolist()
    assert max(abs(v) for v in gold.scores[0].tolist()) >= room
    assert out["result"] == int(gold.predictions[0])
    last.score_offset[1] -= 1
    with pytest.raises(UserError, match=rf"beyond the accelerator's {sb}-bit signed scores"):
        program.check_fits(model, target)


@pytest.mark.parametrize("geometry", [(2, 4, 16), (3, 2, 32)], ids=["2x4x16", "3x2x32"])
def test_window_wider_than_the_input(geometry):
    """kw = 3 over a 2-pixel-wide padded input: the window-row jump row_skip is negative
    (a signed descriptor field); on chip its modular address arithmetic handles it."""
    model = synthetic.random_cnn(in_shape=(6, 2, 3), convs=((4, 3, 1, 1, 1),), dense=(5,),
                                 in_bits=2, seed=5)
    target = sim_target(*geometry)
    mems = program.build_memories(model, target, input_windows=False)
    header, descs = program.decode_program(mems[0].words)
    assert descs[0]["row_skip"] < 0
    img = synthetic.random_images(1, 6, 2, 3, seed=6)[0]
    out = run_sequencer(target, mems, program.pack_input(img, header, target.width))
    gold = golden.run(model, img)
    assert out["error"] == 0 and out["done"] == 1
    assert [signed32(v) for v in out["scores"][:5]] == gold.scores[0].tolist()
    assert out["result"] == int(gold.predictions[0])
    assert out["cycles"] == perf.predict_network_cycles(model, target, input_windows=False)
