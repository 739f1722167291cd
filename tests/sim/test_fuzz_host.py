"""The host decoder under fuzz (``sim/fuzz_host.py``), its error priority when several checks
fail, a pending answer holding ``host_in``, and READs after a failed run.

``benchmarks/host_fuzz.py`` runs the same fuzz with >= 10,000 frames
(``benchmarks/results/host_fuzz.json``).
"""

import random

import pytest
from amaranth.sim import Simulator

from xnorflow.hw.accelerator import Accelerator
from xnorflow.hw.link import protocol as p
from xnorflow.hw.link.protocol import CHECK_ORDER, Command, MemoryId, Status
from xnorflow.hw.sequencer import ERR_BATCH, ERR_MAGIC
from xnorflow.sim.fuzz_host import (
    KINDS,
    Framer,
    FuzzConfig,
    Request,
    fuzz,
    fuzz_memories,
    fuzz_model,
)
from xnorflow.sw import perf, program, synthetic
from xnorflow.sw.targets import sim_target

TARGET = sim_target(2, 2, 16)
ACT, SCORES, WEIGHTS = (int(MemoryId[n]) for n in ("activations", "scores", "weights"))


def test_fuzz_frames_match_the_protocol_then_classify_equals_golden():
    """A few hundred random and mutated frames: every answer as ``request_status`` predicts,
    no hang, every status and every kind of case met; afterwards a classify == golden."""
    r = fuzz(FuzzConfig(frames=300, seed=2024))
    s = r["stats"]
    assert s["mismatches"] == 0, s["mismatch_examples"]
    assert s["hangs"] == 0
    assert s["frames"] >= 300
    assert set(s["statuses"]) == {st.name for st in Status}, s["statuses"]
    assert set(s["cases_per_kind"]) == set(KINDS), s["cases_per_kind"]
    assert s["frames_while_busy"] > 20 and s["aborts"] > 20
    assert s["frames_per_kind"]["repair"] > 0  # broken programs written back
    assert s["memory_words_compared"] > 1000
    c = r["classify"]
    assert c["equal_golden"] and c["scores_equal"] and c["hidden_compared"] >= c["images"]
    assert r["after_status"] == {"version": 2, "geometry": "2x2x16", "busy": False}


def test_framer_splits_a_stream_where_the_protocol_says():
    """The fuzz's reference framer: junk between frames, a WRITE's length from its memory's
    word size (1 byte for an unknown id), a wrong checksum."""
    fr = Framer(TARGET)
    write = p.encode_write(ACT, 5, [0x1234, 0xA5A5], 16)[0]  # data bytes equal to the sync
    bad_id = p.encode_request(Command.WRITE, 9, 0, 3, b"\xa5\x00\x01")
    stream = b"\x00\x5a" + write + b"\x11" + bad_id[:-1] + bytes([bad_id[-1] ^ 4])
    events = [e for e in map(fr.feed, stream) if e is not None]
    assert events == ["header", Request(Command.WRITE, ACT, 5, 2, write[7:11], True),
                      "header", Request(Command.WRITE, 9, 0, 3, b"\xa5\x00\x01", False)]
    assert fr.idle


def simulate(body, memories=True):
    """``body(ctx, dut, tr, drv)`` in a testbench on a 2x2x16 accelerator (the fuzz model
    loaded through the protocol unless ``memories`` is false); returns its result."""
    from xnorflow.hw.link import AcceleratorDriver, AmaranthStreamTransport

    model = fuzz_model()
    mems = fuzz_memories(model, TARGET)
    dut = Accelerator(TARGET)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    out = {}

    async def tb(ctx):
        tr = AmaranthStreamTransport(ctx, dut, 0.2, 0.2, random.Random(3), timeout=2000)
        drv = AcceleratorDriver(tr)
        await drv.connect()
        if memories:
            await drv.load(mems)
        out["r"] = await body(ctx, dut, tr, drv)

    sim.add_testbench(tb)
    sim.run()
    return out["r"]


async def exchange(tr, frame: bytes) -> tuple[int, bytes]:
    """Send one frame, read its whole answer: ``(status, payload)``."""
    await tr.write(frame)
    head = await tr.read(4)
    assert len(head) == 4 and head[0] == p.SYNC_RESPONSE, head
    rest = await tr.read(int.from_bytes(head[2:4], "little") + 1)
    assert (sum(head[1:]) + sum(rest)) & 0xFF == 0
    return head[1], rest[:-1]


def _req(cmd, p0=0, addr=0, count=0, data=b"", chk_ok=True):
    return Request(cmd, p0, addr, count, data, chk_ok)


# Frames on which several checks fail at once (2x2x16: activations 1024 words of 2 bytes,
# scores 64 of 8, weights 1024 of 4). Columns: what, request, sent during a run, the checks
# that fail (docs/host-protocol.md, "Status codes"). The answer must be the first of them in
# CHECK_ORDER, the documented order; ``request_status`` must agree.
C = Status
PRIORITY = [
    ("checksum + length", _req(Command.READ, ACT, 0, 0xFFFF, chk_ok=False), False,
     {C.CHECKSUM, C.LENGTH}),
    ("checksum + length + range + busy", _req(Command.READ, ACT, 0x3F8, 0x8000, chk_ok=False),
     True, {C.CHECKSUM, C.LENGTH, C.RANGE, C.BUSY}),
    ("checksum + unknown command", _req(0x07, chk_ok=False), False,
     {C.CHECKSUM, C.UNKNOWN_COMMAND}),
    ("checksum + memory (WRITE scores)", _req(Command.WRITE, SCORES, 0, 1, bytes(8), False),
     False, {C.CHECKSUM, C.MEMORY}),
    ("checksum + range", _req(Command.READ, SCORES, 64, 1, chk_ok=False), False,
     {C.CHECKSUM, C.RANGE}),
    ("checksum + batch", _req(Command.START, 0, chk_ok=False), False, {C.CHECKSUM, C.BATCH}),
    ("checksum + busy", _req(Command.READ, ACT, 0, 1, chk_ok=False), True,
     {C.CHECKSUM, C.BUSY}),
    ("checksum on STATUS during a run", _req(Command.STATUS, chk_ok=False), True,
     {C.CHECKSUM}),
    ("unknown command + busy", _req(0x03, 1, 0, 1), True, {C.UNKNOWN_COMMAND, C.BUSY}),
    ("memory + length + range (READ weights)", _req(Command.READ, WEIGHTS, 0xFFFF, 0xFFFF),
     False, {C.MEMORY, C.LENGTH, C.RANGE}),
    ("memory + busy (WRITE scores)", _req(Command.WRITE, SCORES, 0, 1, bytes(8)), True,
     {C.MEMORY, C.BUSY}),
    ("length + range", _req(Command.READ, ACT, 0x3F8, 0x8000), False, {C.LENGTH, C.RANGE}),
    ("length + range (a shallow memory)", _req(Command.READ, SCORES, 0, 0x2000), False,
     {C.LENGTH, C.RANGE}),
    ("length + range + busy", _req(Command.READ, ACT, 0, 0x8000), True,
     {C.LENGTH, C.RANGE, C.BUSY}),
    ("length + busy", _req(Command.READ, SCORES, 0, 0x2000), True, {C.LENGTH, C.RANGE, C.BUSY}),
    ("range + busy (READ)", _req(Command.READ, ACT, 1024, 1), True, {C.RANGE, C.BUSY}),
    ("range + busy (WRITE)", _req(Command.WRITE, WEIGHTS, 1023, 2, bytes(8)), True,
     {C.RANGE, C.BUSY}),
    ("batch + busy", _req(Command.START, 3), True, {C.BATCH, C.BUSY}),
    ("batch 0 + busy", _req(Command.START, 0), True, {C.BATCH, C.BUSY}),
    ("busy alone", _req(Command.START, 1), True, {C.BUSY}),
    ("STATUS during a run", _req(Command.STATUS), True, set()),
]


def test_priority_table_is_complete():
    """Every two checks that can fail together are in the table with each other."""
    pairs = {(a, b) for _, _, _, fail in PRIORITY for a in fail for b in fail
             if CHECK_ORDER.index(a) < CHECK_ORDER.index(b)}
    # UNKNOWN_COMMAND excludes MEMORY/LENGTH/RANGE/BATCH, RANGE/LENGTH/MEMORY exclude BATCH
    exclusive = {C.UNKNOWN_COMMAND: {C.MEMORY, C.LENGTH, C.RANGE, C.BATCH},
                 C.BATCH: {C.MEMORY, C.LENGTH, C.RANGE}}
    for i, a in enumerate(CHECK_ORDER):
        for b in CHECK_ORDER[i + 1:]:
            if b in exclusive.get(a, ()) or a in exclusive.get(b, ()):
                continue
            assert (a, b) in pairs, (a.name, b.name)


def test_error_priority_when_several_checks_fail():
    """The gateware answers each row of ``PRIORITY`` with the first failing check in
    ``CHECK_ORDER``; a WRITE refused for range or busy writes nothing."""
    depths = Accelerator(TARGET).depths
    run_cycles = perf.predict_network_cycles(fuzz_model(), TARGET)
    assert run_cycles > 300  # room for a frame while the run goes on

    async def body(ctx, dut, tr, drv):
        got = []
        for what, req, busy, _ in PRIORITY:
            while ctx.get(dut.busy):  # the run of the last row, if any
                await ctx.tick()
            if busy:
                assert await exchange(tr, p.encode_start(1)) == (Status.OK, b"")
                assert ctx.get(dut.busy)
            status, _ = await exchange(tr, req.encode())
            if busy:
                assert ctx.get(dut.busy), f"{what}: the run ended during the frame"
            got.append(status)
        return got

    got = simulate(body)
    for (what, req, busy, fail), status in zip(PRIORITY, got, strict=True):
        want = next((s for s in CHECK_ORDER if s in fail), Status.OK)
        assert status == want, (what, Status(status).name, want.name)
        assert p.request_status(TARGET, depths, req.cmd, req.p0, req.addr, req.count,
                                req.chk_ok, busy) == want, what


def test_refused_writes_write_nothing():
    """A WRITE refused for RANGE or BUSY leaves the memory as it was; one refused only for
    its checksum has written its words (they come before the checksum)."""
    header, _ = program.decode_program(fuzz_memories(fuzz_model(), TARGET)[0].words)
    assert header["act_words"] < 1000  # the run does not write the words used here

    async def body(ctx, dut, tr, drv):
        await drv.write_memory("activations", 1000, [0x7777])
        await drv.write_memory("activations", 1019, [0x1111, 0x2222, 0x3333, 0x4444])
        data = bytes([0xAA, 0x55] * 5)
        ranged = (await exchange(tr, _req(Command.WRITE, ACT, 1020, 5, data).encode()))[0]
        after_range = await drv.read_memory("activations", 1019, 4)
        await exchange(tr, p.encode_start(1))
        busy = (await exchange(tr, _req(Command.WRITE, ACT, 1000, 1, b"\x01\x02").encode()))[0]
        await drv.wait()
        after_busy = await drv.read_memory("activations", 1000, 1)
        bad_chk = (await exchange(tr, _req(Command.WRITE, ACT, 1019, 1, b"\x34\x12",
                                           False).encode()))[0]
        after_chk = await drv.read_memory("activations", 1019, 1)
        return ranged, after_range, busy, after_busy, bad_chk, after_chk

    ranged, after_range, busy, after_busy, bad_chk, after_chk = simulate(body)
    assert ranged == Status.RANGE and after_range == [0x1111, 0x2222, 0x3333, 0x4444]
    assert busy == Status.BUSY and after_busy == [0x7777]
    assert bad_chk == Status.CHECKSUM and after_chk == [0x1234]


def test_a_pending_answer_holds_host_in():
    """While an answer has not been read, ``host_in`` takes no byte of the next frame (the
    host stalls until it reads the answer); then the next frame goes through."""
    async def body(ctx, dut, tr, drv):
        await tr.write(p.encode_status_request())
        ctx.set(dut.host_in.payload, p.SYNC_REQUEST)
        ctx.set(dut.host_in.valid, 1)
        taken = 0
        for _ in range(200):
            _, _, ready = await ctx.tick().sample(dut.host_in.ready)
            taken += ready
        ctx.set(dut.host_in.valid, 0)
        first = await tr.read(4 + p.STATUS_LEN + 1)
        second = await exchange(tr, p.encode_read(ACT, 0, 1))
        return taken, first, second

    taken, first, second = simulate(body, memories=False)
    assert taken == 0
    assert first[:4] == bytes([p.SYNC_RESPONSE, 0, p.STATUS_LEN, 0])
    assert second == (Status.OK, b"\0\0")


@pytest.mark.parametrize("failure", ["batch over max_batch", "bad magic"])
def test_read_after_a_failed_run_answers_the_last_good_scores(failure):
    """A run that fails (STATUS: the sequencer's error, flags bit 2, not done) writes no
    scores and no hidden map: READs answer 0 OK with the last successful run's (protocol 2
    has no "no result" status)."""
    image = synthetic.random_images(1, 8, 8, 1, seed=9)[0]
    header, _ = program.decode_program(fuzz_memories(fuzz_model(), TARGET)[0].words)
    n = header["score_words"]

    async def body(ctx, dut, tr, drv):
        _, scores = await drv.classify(image)
        words = await drv.read_memory("scores", header["score_base"], n)
        maps = await drv.read_memory("activations", 0, header["act_words"])
        if failure == "bad magic":
            await drv.write_memory("program", 0, [0])
            status, _ = await exchange(tr, p.encode_start(1))
        else:
            status, _ = await exchange(tr, p.encode_start(2))  # max_batch is 1
        assert status == Status.OK  # the decoder accepts it; the sequencer refuses it
        while ctx.get(dut.busy):
            await ctx.tick()
        _, st = await exchange(tr, p.encode_status_request())
        read = await exchange(tr, p.encode_read(SCORES, header["score_base"], n))
        return scores, words, st, read, maps, await drv.read_memory("activations", 0,
                                                                    header["act_words"])

    scores, words, st, (read_status, payload), maps, maps_after = simulate(body)
    assert maps_after == maps  # the hidden maps (and the input) of the good run
    report = p.decode_status(st)
    assert report.error == (ERR_MAGIC if failure == "bad magic" else ERR_BATCH)
    assert st[4] == 0b100  # flags: not busy, not done, the last run failed
    assert read_status == Status.OK and p.bytes_to_words(payload, 64) == words
    got = program.scores_from_words([0] * header["score_base"] + words, header, TARGET.cols, 1)
    assert got[0].tolist() == scores
