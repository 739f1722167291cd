"""The driver's streaming path (``AcceleratorDriver.classify_stream``) on the simulated
accelerator: bit-exact against the golden model, and on the wire exactly the frames the link
model (``hw/link/throughput.py``) counts -- one WRITE, one START, the READs of a run, and
STATUS polls in the first run only."""

import random

import pytest

from tests.hw.test_host import simulate, stall_transport
from xnorflow.hw import link as d
from xnorflow.hw.link import throughput as tp
from xnorflow.sw import golden, program, synthetic
from xnorflow.sw.targets import sim_target


class Counting:
    """A transport that logs each request's command and the bytes both ways."""

    def __init__(self, inner):
        self.inner, self.log = inner, []

    async def write(self, data):
        self.log.append([d.Command(data[1]).name, len(data), 0])
        await self.inner.write(data)

    async def read(self, n):
        got = await self.inner.read(n)
        self.log[-1][2] += len(got)
        return got


@pytest.mark.parametrize("geometry, n_images, batch, in_bits", [
    ((4, 2, 16), 7, None, 8),   # runs of 4 and 3 (max_batch), 8-bit input
    ((2, 4, 32), 3, 1, 1),      # one image per run, binary input
])
def test_stream_is_exact_and_sends_what_the_model_counts(geometry, n_images, batch, in_bits):
    target = sim_target(*geometry)
    model = synthetic.random_mlp(sizes=(64, 32, 10), in_shape=(8, 8, 1), in_bits=in_bits,
                                 seed=6)
    mems = program.build_memories(model, target)
    header, _ = program.decode_program(mems[0].words)
    images = synthetic.random_images(n_images, 8, 8, 1, seed=13)
    gold = golden.run(model, images)
    rng = random.Random(3)
    runs = []

    async def body(drv, ctx, dut):
        drv.header = header
        return await drv.classify_stream(images, batch, lambda k, busy: runs.append((k, busy)))

    holder = {}

    def transport(ctx, dut):
        holder["t"] = Counting(stall_transport(ctx, dut, rng))
        return holder["t"]

    res = simulate(target, mems, body, transport)
    for i, (cls, scores) in enumerate(res):
        assert scores == gold.scores[i].tolist() and cls == int(gold.predictions[i])
    step = batch or header["max_batch"]
    assert [k for k, _ in runs] == [min(step, n_images - i) for i in range(0, n_images, step)]
    # the wire: per run the model's frames; STATUS only in the first run, after its START
    log = holder["t"].log
    ib, sb = tp.image_bytes(header, target)
    expect = []
    for j, (k, busy) in enumerate(runs):
        frames = tp.stream_frames(k, ib, sb, busy)
        if j == 0:
            assert busy == 0  # the first run is waited for with STATUS
            polls = [e for e in log if e[0] == "STATUS"]
            assert polls and all(e[1:] == [tp.REQUEST_BYTES, tp.RESPONSE_BYTES + d.STATUS_LEN]
                                 for e in polls)
            frames = frames[:2] + [("STATUS", e[1], e[2]) for e in polls] + frames[2:]
        expect += [[name.split()[0], req, resp] for name, req, resp in frames]
    assert log == expect


def test_stream_refuses_a_batch_above_max_batch():
    target = sim_target(4, 2, 16)
    model = synthetic.random_mlp(sizes=(64, 32, 10), in_shape=(8, 8, 1), in_bits=8, seed=6)
    mems = program.build_memories(model, target, max_batch=2)

    async def body(drv, ctx, dut):
        drv.header, _ = program.decode_program(mems[0].words)
        with pytest.raises(d.AcceleratorError, match="batch 3: this program runs 1..2"):
            await drv.classify_stream(synthetic.random_images(3, 8, 8, 1, seed=1), 3)
        return True

    assert simulate(target, mems, body)
