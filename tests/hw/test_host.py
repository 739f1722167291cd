"""The host command decoder (``hw/link/decoder.py``) inside the accelerator, frame by frame.

Random request frames (every command, lengths and parameters around the limits: addresses
at and beyond each memory's depth and beyond the decoder's narrow address register, counts
whose byte length overflows 16 bits, bad memory ids, bad checksums) are sent with random
idle cycles on ``host_in`` and random back-pressure on ``host_out``; each response must be
the one ``docs/host-protocol.md`` defines (a plain Python model written from the document,
:func:`tests.board_model.expected_status`, which also serves the pty board model), and the
memories must hold exactly the words of the accepted writes (widest words included). Several
geometries, the ``up5k`` target's real depths among them.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from xnorflow.hw import link as d
from xnorflow.hw.accelerator import Accelerator
from xnorflow.hw.link import Command, Status
from xnorflow.sw import golden, perf, program, synthetic
from xnorflow.sw.targets import MEMORY_NAMES, TARGETS, sim_target

from ..board_model import expected_status


def stall_transport(ctx, dut, rng):
    """The driver's Amaranth transport with seeded random idle cycles between request bytes
    and random ``ready`` low cycles on the response."""
    return d.AmaranthStreamTransport(ctx, dut, idle=0.3, backpressure=0.3, rng=rng,
                                     timeout=20_000)


def random_frame(rng, target, depths):
    """(cmd, payload, chk_ok) around the limits; payloads stay short enough to simulate."""
    bpw = {m: d.bytes_per_word(target.word_bits(m)) for m in MEMORY_NAMES}
    A = max(v.bit_length() for v in depths.values())
    cmd = rng.choice([Command.WRITE_MEM] * 4 + [Command.READ_MEM] * 4
                     + [Command.WRITE_INPUT] * 2
                     + [Command.READ_STATUS, Command.READ_RESULT, Command.READ_RESULTS,
                        rng.choice([0, 8, 0x41, 0xFF])])
    chk_ok = rng.random() > 0.08
    if cmd in (Command.WRITE_MEM, Command.READ_MEM):
        mem = rng.choice(range(len(MEMORY_NAMES))) if rng.random() > 0.1 else rng.choice(
            [5, 7, 8, 13, 0x85, 0xFF])
        name = MEMORY_NAMES[mem] if mem < len(MEMORY_NAMES) else "program"
        depth, b = depths[name], bpw[name]
        count = rng.choice([0, 1, 2, 3, rng.randrange(1, 9)])
        if cmd == Command.READ_MEM and rng.random() < 0.15:
            # the answer would exceed 65535 bytes (range permitting)
            count = rng.choice([d.MAX_PAYLOAD // b + 1, 0xFFFF, 1 << (17 - b.bit_length())])
        addr = rng.choice([0, rng.randrange(depth), max(0, depth - count),
                           depth - count + 1, depth, depth + 1, (1 << A) - 1, 1 << A,
                           (1 << (A - 1)) + rng.randrange(depth), 1 << 31, 0xFFFFFFFF,
                           rng.randrange(1 << 32)])
        addr &= 0xFFFFFFFF
        addr = max(0, addr)
        words = [rng.randrange(1 << target.word_bits(name)) for _ in range(min(count, 8))]
        params = bytes([mem]) + addr.to_bytes(4, "little") + count.to_bytes(2, "little")
        if cmd == Command.READ_MEM:
            payload = params
            if rng.random() < 0.1:
                payload = payload[:rng.randrange(7)] if rng.random() < 0.5 else payload + b"\0"
        else:
            data = d.words_to_bytes(words, target.word_bits(name))
            r = rng.random()
            if r < 0.1:  # the word count's bytes modulo 2^16 match the length: still wrong
                count = (1 << (17 - b.bit_length())) + len(words)
                params = params[:5] + count.to_bytes(2, "little")
            elif r < 0.2:
                data = data[:max(0, len(data) - rng.randrange(1, b + 1))]
            elif r < 0.25:
                data = data + b"\x11"
            elif r < 0.3:
                params = params[:rng.randrange(7)]
                data = b""
            payload = params + data
        return cmd, payload, chk_ok
    if cmd == Command.WRITE_INPUT:
        b = bpw["activations"]
        n = rng.choice([0, b, 4 * b, 8 * b, 3 * b + 1, 1])
        return cmd, bytes(rng.randrange(256) for _ in range(n)), chk_ok
    n = 0 if rng.random() < 0.85 else rng.randrange(1, 4)
    return cmd, bytes(rng.randrange(256) for _ in range(n)), chk_ok


def frame_bytes(cmd, payload, chk_ok):
    f = bytearray(d.encode_frame(cmd, payload))
    if not chk_ok:
        f[-1] ^= 1 << (len(payload) % 8)
    return bytes(f)


def run_random(target, n_frames, seed):
    dut = Accelerator(target)
    depths = dut.depths
    rng = random.Random(seed)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    model = {m: {} for m in MEMORY_NAMES}
    log = []

    async def tb(ctx):
        tr = stall_transport(ctx, dut, rng)
        drv = d.AcceleratorDriver(tr, {n: w for n, (w, _) in target.memories.items()})
        for i in range(n_frames):
            cmd, payload, chk_ok = random_frame(rng, target, depths)
            want = expected_status(target, depths, cmd, payload, chk_ok)
            await tr.write(frame_bytes(cmd, payload, chk_ok))
            head = await tr.read(4)
            assert len(head) == 4 and head[0] == d.SYNC_RESPONSE, (i, cmd, payload.hex())
            n = int.from_bytes(head[2:4], "little")
            rest = await tr.read(n + 1)
            log.append((cmd, payload.hex(), chk_ok, head[1], want))
            assert head[1] == want, log[-1]
            body = d.decode_response(head, rest) if want == Status.OK else rest[:-1]
            if want != Status.OK:
                assert n == 0 and (sum(head[1:]) + sum(rest)) & 0xFF == 0
            # a bad checksum does not undo the words of an otherwise good write
            written = expected_status(target, depths, cmd, payload, True) == Status.OK
            if not written or (want != Status.OK and cmd not in (Command.WRITE_MEM,
                                                             Command.WRITE_INPUT)):
                continue
            if cmd == Command.WRITE_MEM:
                name = MEMORY_NAMES[payload[0]]
                addr = int.from_bytes(payload[1:5], "little")
                for j, w in enumerate(d.bytes_to_words(payload[7:], target.word_bits(name))):
                    model[name][addr + j] = w
            elif cmd == Command.WRITE_INPUT:
                for j, w in enumerate(d.bytes_to_words(payload, target.width)):
                    model["activations"][j] = w
            elif cmd == Command.READ_MEM:
                name = MEMORY_NAMES[payload[0]]
                addr = int.from_bytes(payload[1:5], "little")
                got = d.bytes_to_words(body, target.word_bits(name))
                count = int.from_bytes(payload[5:7], "little")
                assert len(got) == count
                assert got == [model[name].get(addr + j, 0) for j in range(count)], log[-1]
            elif cmd == Command.READ_STATUS:
                st = d.decode_status(body)
                assert (st.version, st.geometry) == (1, target.geometry)
                assert st.depth_log2 == {m: max(0, (depths[m] - 1).bit_length())
                                         for m in MEMORY_NAMES}
                assert not st.busy and not st.done and st.cycles == 0
        # every word written is where it was written, and its neighbours are unchanged
        for name, words in model.items():
            for a in sorted(words):
                lo = max(0, a - 1)
                hi = min(depths[name], a + 2)
                got = await drv.read_memory(name, lo, hi - lo)
                assert got == [words.get(x, 0) for x in range(lo, hi)], (name, a, log)

    sim.add_testbench(tb)
    sim.run()
    codes = {w for *_, w in log}
    return codes


GEOMETRIES = [("sim-2x2x16", sim_target(2, 2, 16)), ("up5k", TARGETS["up5k"]),
              ("sim-1x8x64", sim_target(1, 8, 64)), ("sim-3x4x32", sim_target(3, 4, 32))]


@pytest.mark.parametrize("name, target", GEOMETRIES, ids=[g for g, _ in GEOMETRIES])
def test_random_frames_match_the_protocol(name, target):
    codes = run_random(target, 60, seed=sum(map(ord, name)))
    # the random frames reached every answer but busy / bad batch (no run is started)
    assert {Status.OK, Status.UNKNOWN_COMMAND, Status.CHECKSUM, Status.MEMORY, Status.RANGE,
            Status.LENGTH, Status.NO_RESULT} <= codes, codes


def test_widest_words_at_the_ends_of_every_memory():
    """Whole words of every writable memory (64-byte weights words here) at address 0 and
    at the last address, read back together with their neighbours."""
    target = sim_target(2, 8, 64)
    rng = random.Random(5)

    async def body(drv, ctx, dut):
        for name in ("program", "weights", "thresholds", "activations"):
            w, depth = target.word_bits(name), dut.depths[name]
            ends = [0, depth - 2]
            words = {a: rng.randrange(1 << w) for a in ends}
            words.update({a + 1: (1 << w) - 1 - words[a] for a in ends})
            for a in ends:
                await drv.write_memory(name, a, [words[a], words[a + 1]])
            for a in ends:
                assert await drv.read_memory(name, a, 2) == [words[a], words[a + 1]]
            assert await drv.read_memory(name, 2, 1) == [0]
            with pytest.raises(d.AcceleratorError) as e:
                await drv.read_memory(name, depth - 1, 2)
            assert e.value.status == Status.RANGE
        return True

    assert simulate(target, None, body)


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


@pytest.mark.parametrize("geometry", [(4, 2, 16), (5, 4, 16)])
def test_batch_results_status_and_scores(geometry):
    """R images in one run: READ_RESULTS (1 + 2R bytes: more than 8), READ_RESULT (class
    and scores of image 0), READ_STATUS cycles == the performance model, all under random
    stalls."""
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
        classes = await drv.results()
        return res, st, classes

    res, st, classes = simulate(target, mems, body,
                                lambda ctx, dut: stall_transport(ctx, dut, rng))
    assert classes == [int(c) for c in gold.predictions]
    for i, (cls, scores) in enumerate(res):
        assert scores == gold.scores[i].tolist() and cls == int(gold.predictions[i])
    assert st.done and not st.busy and st.error == 0
    assert st.cycles == perf.predict_network_cycles(model, target, batch=R)


def test_status_while_running_and_abort_in_a_response():
    """READ_STATUS during a run answers busy with a cycle count below the final one; a
    READ_MEM answer cut by ``abort`` leaves the decoder ready for the next frame."""
    target = sim_target(2, 2, 16)
    model = synthetic.random_mlp(sizes=(64, 32, 10), in_shape=(8, 8, 1), in_bits=8, seed=1)
    mems = program.build_memories(model, target)

    async def body(drv, ctx, dut):
        drv.header, _ = program.decode_program(mems[0].words)
        await drv.write_input(np.zeros((8, 8, 1), np.uint8))
        await drv.start()
        mid = await drv.status()
        end = await drv.wait()
        await drv.transport.write(d.encode_read_memory(1, 0, 40))
        part = await drv.transport.read(7)
        ctx.set(dut.abort, 1)
        await ctx.tick()
        ctx.set(dut.abort, 0)
        await ctx.tick().repeat(3)
        assert not ctx.get(dut.host_out.valid)
        after = await drv.status()
        return mid, end, part, after

    mid, end, part, after = simulate(target, mems, body)
    assert mid.busy and not mid.done and 0 < mid.cycles < end.cycles
    assert end.done and end.cycles == perf.predict_network_cycles(model, target)
    assert part[:4] == bytes([d.SYNC_RESPONSE, 0, 40 * 4, 0])
    assert after.done and after.cycles == end.cycles


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_constant_comparator_is_exact(width):
    """``_gt`` (the decoder's carry-free ``x > constant``) against Python, every x and c."""
    from amaranth.hdl import Module, Signal

    from xnorflow.hw.link.decoder import _gt

    m = Module()
    x = Signal(width)
    consts = list(range(-1, (1 << width) + 2))
    ys = [Signal(name=f"y{i}") for i in range(len(consts))]
    m.d.comb += [y.eq(_gt(x, c)) for y, c in zip(ys, consts, strict=True)]
    sim = Simulator(m)
    bad = []

    async def tb(ctx):
        for v in range(1 << width):
            ctx.set(x, v)
            for y, c in zip(ys, consts, strict=True):
                if ctx.get(y) != int(v > c):
                    bad.append((v, c))

    sim.add_testbench(tb)
    sim.run()
    assert not bad
