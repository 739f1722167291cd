"""The whole accelerator in Amaranth's simulator, driven through the real host driver.

Networks (random weights, median thresholds: :mod:`xnorflow.sw.synthetic`) run from their
memory images; hidden-layer bits (read back over the host interface), scores and class
must equal the golden model exactly, over several geometries; a second model is loaded
over the host interface without reset; simulated cycles match the performance model.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from xnorflow.hw.accelerator import Accelerator
from xnorflow.hw.link import (
    AcceleratorDriver,
    AcceleratorError,
    AmaranthStreamTransport,
    Status,
    encode_frame,
)
from xnorflow.sw import encoding as enc
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


def simulate(target, memories, body):
    """Run ``await body(driver, ctx, dut)`` against an Accelerator built from images."""
    dut = Accelerator(target, memories)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    out = {}

    async def tb(ctx):
        drv = AcceleratorDriver(AmaranthStreamTransport(ctx, dut),
                                {n: w for n, (w, _) in target.memories.items()})
        out["result"] = await body(drv, ctx, dut)

    sim.add_testbench(tb)
    sim.run()
    assert "result" in out
    return out["result"]


def hidden_words(model, target, mems):
    """(address, expected words) of each hidden layer whose output survives the run."""
    _, descs = program.decode_program(mems[0].words)
    gold_n = len(model.layers) - 1
    regions = {}
    for i, d in enumerate(descs[:gold_n]):
        regions[d["out_base"]] = i  # a later layer writing the same region wins
    return [(descs[i]["out_base"], i) for i in sorted(set(regions.values()))]


async def classify_and_check(drv, model, target, mems, image):
    gold = golden.run(model, image)
    header, _ = program.decode_program(mems[0].words)
    drv.header = header
    cls, scores = await drv.classify(image)
    assert scores == gold.scores[0].tolist()
    assert cls == int(gold.predictions[0])
    st = await drv.status()
    assert not st.busy and st.done and st.error == 0
    for base, i in hidden_words(model, target, mems):
        act = gold.activations[i][0]
        h, w, c = act.shape
        want = enc.pack_segments(act.reshape(h * w, c), target.width).reshape(-1)
        got = await drv.read_memory("activations", base, len(want))
        assert got == [int(v) for v in want], f"hidden layer {i} bits differ"
    # every map of image 0 (input and each layer's output) equals the executable model's
    ref = program.execute(mems, image, target)
    header, descs = program.decode_program(mems[0].words)
    spans = [(0, header["input_words"])]
    spans += [(d["out_base"], d["out_base"] + d["npix"] * d["cw_out"])
              for d in descs if not d["flags"] & program.FLAG_INTEGER]
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    got = await drv.read_memory("activations", lo, hi - lo)
    # later layers overwrite earlier maps in the same region: compare the final state
    want = ref.activations[lo:hi]
    for a, b in spans:
        assert got[a - lo:b - lo] == [int(v) for v in want[a - lo:b - lo]]
    return st.cycles


CASES = [(mlp, (4, 4, 32), 2), (mlp, (2, 8, 16), 2), (mlp, (3, 2, 64), 2),
         (cnn, (4, 4, 32), 1), (cnn, (2, 8, 16), 1)]


@pytest.mark.parametrize("make, geometry, n_images", CASES,
                         ids=[f"{m.__name__}-{'x'.join(map(str, g))}" for m, g, _ in CASES])
def test_network_matches_golden(make, geometry, n_images):
    model = make()
    target = sim_target(*geometry)
    mems = program.build_memories(model, target)
    images = synthetic.random_images(n_images, model.in_h, model.in_w, model.in_c, seed=7)
    predicted = perf.predict_network_cycles(model, target)

    async def body(drv, ctx, dut):
        cycles = []
        for img in images:
            cycles.append(await classify_and_check(drv, model, target, mems, img))
        return cycles

    cycles = simulate(target, mems, body)
    for c in cycles:
        assert abs(c - predicted) <= 0.02 * c, (c, predicted)


def test_odd_cnn_and_second_model_over_host():
    """Stride 2, multi-word outputs, pooling on 40 channels; then a different model (the
    MLP) is written over the host interface into the same, still running, design."""
    target = sim_target(3, 4, 16)
    first, second = cnn_odd(), mlp()
    m1 = program.build_memories(first, target, input_windows=False)  # on-chip stride-2 im2col
    m2 = program.build_memories(second, target)
    img1 = synthetic.random_images(1, 9, 7, 3, seed=8)[0]
    img2 = synthetic.random_images(1, 8, 8, 1, seed=9)[0]
    # size the sim memories for both models
    depth_img = [m.__class__(m.name, m.width, np.concatenate(
        [m.words, np.zeros(max(0, n.depth - m.depth), dtype=m.words.dtype)]), m.layout)
        for m, n in zip(m1, m2, strict=True)]

    async def body(drv, ctx, dut):
        c1 = await classify_and_check(drv, first, target, m1, img1)
        await drv.load(m2)
        c2 = await classify_and_check(drv, second, target, m2, img2)
        # and back to the first model
        await drv.load(m1)
        c3 = await classify_and_check(drv, first, target, m1, img1)
        return c1, c2, c3

    c1, c2, c3 = simulate(target, depth_img, body)
    assert c1 == c3
    assert abs(c1 - perf.predict_network_cycles(first, target, input_windows=False)) <= 0.02 * c1
    assert abs(c2 - perf.predict_network_cycles(second, target)) <= 0.02 * c2


def test_protocol_errors_never_hang():
    target = sim_target(2, 2, 16)
    model = mlp()
    mems = program.build_memories(model, target)

    async def body(drv, ctx, dut):
        codes = []

        async def expect(frame, code):
            try:
                await drv.transact(frame)
            except AcceleratorError as e:
                codes.append(e.status == code)
            else:
                codes.append(False)

        await expect(encode_frame(0x77, b"xyz"), Status.UNKNOWN_COMMAND)
        bad = bytearray(encode_frame(0x06))
        bad[-1] ^= 1
        await expect(bytes(bad), Status.CHECKSUM)
        await expect(encode_frame(0x02, bytes([9, 0, 0, 0, 0, 1, 0])), Status.MEMORY)
        await expect(encode_frame(0x02, bytes([1]) + (10**6).to_bytes(4, "little")
                                  + (1).to_bytes(2, "little")), Status.RANGE)
        await expect(encode_frame(0x02, bytes([1, 0, 0])), Status.LENGTH)
        await expect(encode_frame(0x05), Status.NO_RESULT)
        await expect(encode_frame(0x07), Status.NO_RESULT)
        await expect(encode_frame(0x04, bytes([3])), Status.BATCH)  # R = 2
        await expect(encode_frame(0x04, bytes([0])), Status.BATCH)
        # scores are read-only
        await expect(encode_frame(0x01, bytes([4, 0, 0, 0, 0, 1, 0]) + bytes(4)), Status.MEMORY)
        # a WRITE_MEM whose length disagrees with its count writes nothing
        before = await drv.read_memory("weights", 0, 2)
        await expect(encode_frame(0x01, bytes([1, 0, 0, 0, 0, 2, 0]) + bytes(4)), Status.LENGTH)
        assert await drv.read_memory("weights", 0, 2) == before
        # an aborted half frame, then a clean command
        await drv.transport.write(bytes([0xA5, 0x01, 0x40]))
        ctx.set(dut.abort, 1)
        await ctx.tick()
        ctx.set(dut.abort, 0)
        st = await drv.status()
        codes.append(st.geometry == "2x2x16" and st.version == 1)
        # busy: a start while running is refused, status still answers
        header, _ = program.decode_program(mems[0].words)
        drv.header = header
        await drv.write_input(np.zeros((8, 8, 1), np.uint8))
        await drv.start()
        await expect(encode_frame(0x04), Status.BUSY)
        await drv.wait()
        cls, scores = await drv.result()
        codes.append(len(scores) == 10)
        return codes

    assert all(simulate(target, mems, body))


def test_whole_memory_write_and_read_back():
    """One WRITE_MEM / WRITE_INPUT covering a whole memory (the range check must use the
    frame's start address, not the advancing write pointer), then READ_MEM of all of it."""
    target = sim_target(2, 2, 16)
    model = mlp()
    mems = program.build_memories(model, target)
    rng = np.random.default_rng(3)

    async def body(drv, ctx, dut):
        depth = dut.depths["activations"]
        words = [int(v) for v in rng.integers(0, 1 << 16, depth)]
        await drv.transact(encode_frame(0x03, b"".join(w.to_bytes(2, "little")
                                                        for w in words)))
        ok = [await drv.read_memory("activations", 0, depth) == words]
        tail = [int(v) for v in rng.integers(0, 1 << 32, 40)]
        await drv.write_memory("weights", dut.depths["weights"] - 40, tail)
        ok.append(await drv.read_memory("weights", dut.depths["weights"] - 40, 40) == tail)
        return ok

    assert all(simulate(target, mems, body))


def test_batch_over_host():
    """classify_batch: R images in one run (the dense layers fill R rows), each equal to
    golden; the run is much shorter than R single runs."""
    target = sim_target(3, 4, 16)
    model = synthetic.random_mlp(sizes=(64, 32, 10), in_shape=(8, 8, 1), in_bits=8, seed=6)
    mems = program.build_memories(model, target)
    images = synthetic.random_images(3, 8, 8, 1, seed=12)
    gold = golden.run(model, images)

    async def body(drv, ctx, dut):
        drv.header, _ = program.decode_program(mems[0].words)
        assert drv.header["max_batch"] == 3
        res = await drv.classify_batch(images)
        st = await drv.status()
        return res, st.cycles

    res, cycles = simulate(target, mems, body)
    for i, (cls, scores) in enumerate(res):
        assert scores == gold.scores[i].tolist() and cls == int(gold.predictions[i])
    assert cycles == perf.predict_network_cycles(model, target, batch=3)
    assert cycles < 1.5 * perf.predict_network_cycles(model, target, batch=1)


def test_real_targets_construct():
    for name in ("up5k", "hx8k", "ecp5-85f"):
        t = TARGETS[name]
        acc = Accelerator(t)
        assert acc.depths["weights"] == t.depth("weights")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits-mlp-up5k", "fmnist-cnn-ecp5"])
def test_realistic_networks(name):
    """Trained models' shapes at full size on the real targets' geometries and memories:
    the digits MLP (64-256-256-10) on up5k, the Fashion-MNIST CNN (conv32-pool, conv64-pool,
    fc256, fc10 on 28x28 8-bit) on ecp5-85f."""
    if name == "digits-mlp-up5k":
        model = synthetic.random_mlp(sizes=(64, 256, 256, 10), in_shape=(8, 8, 1), in_bits=8,
                                     seed=4, batch=16)
        target = TARGETS["up5k"]
    else:
        model = synthetic.random_cnn(in_shape=(28, 28, 1),
                                     convs=((32, 3, 1, 1, 2), (64, 3, 1, 1, 2)),
                                     dense=(256, 10), in_bits=8, seed=4, batch=4)
        target = TARGETS["ecp5-85f"]
    mems = program.build_memories(model, target)
    img = synthetic.random_images(1, model.in_h, model.in_w, model.in_c, seed=5)[0]

    async def body(drv, ctx, dut):
        return await classify_and_check(drv, model, target, mems, img)

    cycles = simulate(target, mems, body)
    assert abs(cycles - perf.predict_network_cycles(model, target)) <= 0.02 * cycles
