"""The host command decoder (``hw/link/decoder.py``) inside the accelerator, frame by frame.

Random request frames (every command and unknown ones, memory ids good and bad, addresses
and counts around each memory's depth, READ answers over 65535 bytes, bad checksums, START
batches 0..R+1) go in with random idle cycles on ``host_in`` and random back-pressure on
``host_out``; every response must be what :func:`xnorflow.hw.link.protocol.request_status`
(the checks in their documented order) says, READs must return what was written, and the
memories (read in the simulator, for the write-only ones) must hold exactly the words of the
accepted writes. Several geometries, the ``up5k`` target's real depths among them.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from xnorflow.hw import link as d
from xnorflow.hw.accelerator import Accelerator
from xnorflow.hw.link import Command, Status
from xnorflow.hw.memories import threshold_storage
from xnorflow.sw import golden, perf, program, synthetic
from xnorflow.sw.targets import LANE_BITS, MEMORY_NAMES, TARGETS, sim_target


def stall_transport(ctx, dut, rng):
    """The driver's Amaranth transport with seeded random idle cycles between request bytes
    and random ``ready`` low cycles on the response."""
    return d.AmaranthStreamTransport(ctx, dut, idle=0.3, backpressure=0.3, rng=rng,
                                     timeout=20_000)


def random_frame(rng, target, depths):
    """``(cmd, p0, addr, count, data, chk_ok)`` around the limits (short enough to simulate)."""
    cmd = rng.choice([Command.WRITE] * 5 + [Command.READ] * 4 + [Command.STATUS, Command.START]
                     + [rng.choice([0, 3, 5, 7, 8, 0x41, 0xFF])])
    chk_ok = rng.random() > 0.08
    p0 = addr = count = 0
    data = b""
    if cmd in (Command.WRITE, Command.READ):
        p0 = rng.randrange(len(MEMORY_NAMES)) if rng.random() > 0.1 else rng.choice(
            [5, 7, 8, 0x85, 0xFF])
        depth = depths[MEMORY_NAMES[p0]] if p0 < len(MEMORY_NAMES) else 4
        count = rng.choice([0, 1, 2, 3, rng.randrange(1, 7)])
        bpw = d.frame_word_bytes(target, p0)
        if cmd == Command.READ and rng.random() < 0.15:  # an answer over 65535 bytes
            count = min(0xFFFF, rng.choice([d.MAX_PAYLOAD // bpw + 1, 0xFFFF]))
        addr = rng.choice([0, rng.randrange(depth), max(0, depth - count),
                           min(0xFFFF, depth - count + 1), min(0xFFFF, depth), 0xFFFF,
                           rng.randrange(1 << 16)])
        addr = max(0, addr)
        if cmd == Command.WRITE:
            data = bytes(rng.randrange(256) for _ in range(count * bpw))
    elif cmd == Command.START:
        p0 = rng.choice([0, 1, target.rows, target.rows + 1])
    else:
        p0, addr, count = (rng.randrange(256), rng.randrange(1 << 16), rng.randrange(1 << 16)) \
            if cmd != Command.STATUS and rng.random() < 0.5 else (0, 0, 0)
    return cmd, p0, addr, count, data, chk_ok


def frame_bytes(cmd, p0, addr, count, data, chk_ok):
    f = bytearray(d.encode_request(cmd, p0, addr, count, data))
    if not chk_ok:
        f[-1] ^= 1 << (len(data) % 8)
    return bytes(f)


def memory_words(ctx, dut, name, depth):
    """What the simulated memory holds, as the host would have written it (32-bit lanes)."""
    mems = dut.core.memories
    return [ctx.get(mems.cell(name, i)) for i in range(depth)]


def run_random(target, n_frames, seed, images=None):
    model = synthetic.random_mlp(sizes=(16, 8, 4), in_shape=(1, 1, 16), in_bits=1, seed=2)
    mems = program.build_memories(model, sim_target(target.rows, target.cols, target.width))
    dut = Accelerator(target, [] if images is None else mems)
    depths = dut.depths
    rng = random.Random(seed)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    written = {m: {} for m in MEMORY_NAMES}
    log = []

    act = int(d.MemoryId["activations"])
    directed = [  # one frame for each answer, then random ones
        (Command.READ, act, 0, 0xFFFF, b"", True),  # over 65535 bytes: LENGTH
        (Command.READ, act, depths["activations"], 1, b"", True),  # RANGE
        (Command.WRITE, int(d.MemoryId["scores"]), 0, 0, b"", True),  # MEMORY
        (0x42, 0, 0, 0, b"", True), (Command.STATUS, 0, 0, 0, b"", False),
        (Command.START, 0, 0, 0, b"", True), (Command.STATUS, 0, 0, 0, b"", True),
    ]

    async def tb(ctx):
        tr = stall_transport(ctx, dut, rng)
        for i in range(n_frames):
            cmd, p0, addr, count, data, chk_ok = (directed[i] if i < len(directed)
                                                  else random_frame(rng, target, depths))
            busy = bool(ctx.get(dut.busy))
            want = d.request_status(target, depths, cmd, p0, addr, count, chk_ok, busy)
            await tr.write(frame_bytes(cmd, p0, addr, count, data, chk_ok))
            head = await tr.read(4)
            assert len(head) == 4 and head[0] == d.SYNC_RESPONSE, (i, cmd, p0, addr, count)
            n = int.from_bytes(head[2:4], "little")
            rest = await tr.read(n + 1)
            log.append((int(cmd), p0, addr, count, chk_ok, head[1], int(want)))
            assert head[1] == want, log[-1]
            assert (sum(head[1:]) + sum(rest)) & 0xFF == 0
            if want != Status.OK:
                assert n == 0
            # a WRITE writes when every check but the checksum passes
            if cmd == Command.WRITE and d.request_status(
                    target, depths, cmd, p0, addr, count, True, busy) == Status.OK:
                name = MEMORY_NAMES[p0]
                for j, w in enumerate(d.bytes_to_words(data, target.word_bits(name))):
                    written[name][addr + j] = w
            if want == Status.OK and cmd == Command.READ:
                name = MEMORY_NAMES[p0]
                got = d.bytes_to_words(rest[:-1], target.word_bits(name))
                assert got == [written[name].get(addr + j, 0) for j in range(count)], log[-1]
            if want == Status.OK and cmd == Command.STATUS:
                st = d.decode_status(rest[:-1])
                assert (st.version, st.geometry) == (d.PROTOCOL_VERSION, target.geometry)
                assert st.depth_log2 == {m: max(0, (depths[m] - 1).bit_length())
                                         for m in MEMORY_NAMES}
            if want == Status.OK and cmd == Command.START:
                for _ in range(100_000):  # let the run (of whatever is in memory) end
                    if not ctx.get(dut.busy):
                        break
                    await ctx.tick()
                written["activations"][depths["activations"] - 1] = 0  # the zero word
        # the write-only memories hold exactly the accepted words
        for name in ("program", "weights", "thresholds"):
            got = memory_words(ctx, dut, name, depths[name])
            for a, w in written[name].items():
                if name == "thresholds":
                    w = sum(threshold_storage((w >> (c * LANE_BITS)) & 0xFFFFFFFF,
                                              target.acc_bits) << (c * dut.memories.lane_bits)
                            for c in range(target.cols))
                assert got[a] == w, (name, a)

    sim.add_testbench(tb)
    sim.run()
    return {w for *_, w in log}


GEOMETRIES = [("sim-2x2x16", sim_target(2, 2, 16)), ("up5k", TARGETS["up5k"]),
              ("sim-1x8x64", sim_target(1, 8, 64)), ("sim-3x4x32", sim_target(3, 4, 32)),
              # mem_regs = 2: weights in banks of 16, 8 and 4 words (host writes and reads
              # land in the right bank)
              ("sim-2x2x16-r2", synthetic.banked_target(sim_target(2, 2, 16), 28))]


@pytest.mark.parametrize("name, target", GEOMETRIES, ids=[g for g, _ in GEOMETRIES])
def test_random_frames_match_the_protocol(name, target):
    codes = run_random(target, 70, seed=sum(map(ord, name)))
    assert {Status.OK, Status.UNKNOWN_COMMAND, Status.CHECKSUM, Status.MEMORY, Status.RANGE,
            Status.LENGTH, Status.BATCH} <= codes, codes


def simulate(target, memories, body, transport=None):
    dut = Accelerator(target, memories)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    out = {}

    async def tb(ctx):
        tr = (transport or d.AmaranthStreamTransport)(ctx, dut)
        drv = d.AcceleratorDriver(tr, {n: w for n, (w, _) in target.memories.items()})
        out["result"] = await body(drv, ctx, dut)

    sim.add_testbench(tb)
    sim.run()
    return out["result"]


@pytest.mark.parametrize("target", [sim_target(2, 8, 64),
                                    synthetic.banked_target(sim_target(2, 8, 64), 24)],
                         ids=["2x8x64", "2x8x64-r2"])
def test_widest_words_at_the_ends_of_the_readable_memory(target):
    """Whole words at address 0 and at the last address of the activations, read back with
    their neighbours (``mem_regs = 2``: the read word comes two cycles later); one word past
    the end is a range error."""
    rng = random.Random(5)

    async def body(drv, ctx, dut):
        depth = dut.depths["activations"]
        words = {a: rng.randrange(1 << 64) for a in (0, 1, depth - 2, depth - 1)}
        for a in (0, depth - 2):
            await drv.write_memory("activations", a, [words[a], words[a + 1]])
        for a in (0, depth - 2):
            assert await drv.read_memory("activations", a, 2) == [words[a], words[a + 1]]
        assert await drv.read_memory("activations", 2, 1) == [0]
        with pytest.raises(d.AcceleratorError) as e:
            await drv.read_memory("activations", depth - 1, 2)
        assert e.value.status == Status.RANGE
        with pytest.raises(d.AcceleratorError) as e:
            await drv.read_memory("weights", 0, 1)
        assert e.value.status == Status.MEMORY
        return True

    assert simulate(target, None, body)


@pytest.mark.parametrize("geometry", [(4, 2, 16), (5, 4, 16)])
def test_batch_scores_and_status(geometry):
    """R images in one run under random stalls: scores and classes == golden, the status's
    cycle count == the performance model; START with 0 or R + 1 images is refused."""
    target = sim_target(*geometry)
    R = target.rows
    model = synthetic.random_mlp(sizes=(64, 32, 10), in_shape=(8, 8, 1), in_bits=8, seed=6)
    mems = program.build_memories(model, target)
    images = synthetic.random_images(R, 8, 8, 1, seed=13)
    gold = golden.run(model, images)
    rng = random.Random(R)

    async def body(drv, ctx, dut):
        drv.header, _ = program.decode_program(mems[0].words)
        res = await drv.classify_batch(images)
        st = await drv.status()
        refused = []
        for n in (0, R + 1):
            with pytest.raises(d.AcceleratorError) as e:
                await drv.transact(d.encode_start(n))
            refused.append(e.value.status)
        return res, st, refused

    res, st, refused = simulate(target, mems, body,
                                lambda ctx, dut: stall_transport(ctx, dut, rng))
    for i, (cls, scores) in enumerate(res):
        assert scores == gold.scores[i].tolist() and cls == int(gold.predictions[i])
    assert st.done and not st.busy and st.error == 0
    assert st.cycles == perf.predict_network_cycles(model, target, batch=R)
    assert refused == [Status.BATCH, Status.BATCH]


def test_busy_status_and_abort_in_a_response():
    """During a run STATUS answers busy (cycles below the final count) and memory access and
    START answer busy; a READ answer cut by ``abort`` leaves the decoder ready for the next
    frame."""
    target = sim_target(2, 2, 16)
    model = synthetic.random_mlp(sizes=(64, 32, 10), in_shape=(8, 8, 1), in_bits=8, seed=1)
    mems = program.build_memories(model, target)

    async def body(drv, ctx, dut):
        drv.header, _ = program.decode_program(mems[0].words)
        await drv.write_input(np.zeros((8, 8, 1), np.uint8))
        await drv.start()
        mid = await drv.status()
        busy = []
        for frame in (d.encode_read(3, 0, 1), d.encode_start(1),
                      d.encode_request(Command.WRITE, 0, 0, 1, b"\0" * 4)):
            with pytest.raises(d.AcceleratorError) as e:
                await drv.transact(frame)
            busy.append(e.value.status)
        end = await drv.wait()
        await drv.transport.write(d.encode_read(3, 0, 40))
        part = await drv.transport.read(7)
        ctx.set(dut.abort, 1)
        await ctx.tick()
        ctx.set(dut.abort, 0)
        await ctx.tick().repeat(4)
        assert not ctx.get(dut.host_out.valid)
        after = await drv.status()
        return mid, busy, end, part, after

    mid, busy, end, part, after = simulate(target, mems, body)
    assert mid.busy and not mid.done and 0 < mid.cycles < end.cycles
    assert busy == [Status.BUSY] * 3
    assert end.done and end.cycles == perf.predict_network_cycles(model, target)
    assert part[:4] == bytes([d.SYNC_RESPONSE, 0, 40 * 2, 0])
    assert after.done and after.cycles == end.cycles


@pytest.mark.slow
@pytest.mark.parametrize("name, target", GEOMETRIES, ids=[g for g, _ in GEOMETRIES])
def test_many_random_frames(name, target):
    run_random(target, 600, seed=7 + sum(map(ord, name)))
