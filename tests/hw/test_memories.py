"""Accelerator memories: initial contents from images, R read ports, write ports, depths."""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from xnorflow.hw.memories import (
    DEFAULT_DEPTHS,
    WEIGHT_BANK_DEPTH,
    AcceleratorMemories,
    block_rams,
    memory_depths,
    stored_shapes,
    threshold_storage,
    weight_banks,
)
from xnorflow.sw import program, synthetic
from xnorflow.sw.errors import UserError
from xnorflow.sw.images import MemoryImage
from xnorflow.sw.targets import TARGETS, sim_target


def test_depths_follow_images_and_targets():
    model = synthetic.random_cnn(in_shape=(8, 8, 1), in_bits=8, seed=1)
    target = sim_target(2, 4, 16)
    mems = program.build_memories(model, target)
    d = memory_depths(target, mems)
    header, _ = program.decode_program(mems[0].words)
    for m in mems:
        assert d[m.name] >= m.depth and d[m.name] & (d[m.name] - 1) == 0
    assert d["activations"] >= header["act_words"] + 1  # the zero word at the top
    assert d["scores"] >= header["score_words"] * header["max_batch"]
    assert memory_depths(TARGETS["up5k"])["weights"] == 16384
    assert memory_depths(sim_target())["program"] == DEFAULT_DEPTHS["program"]


def test_image_too_deep_for_target():
    img = MemoryImage("program", 32, np.zeros(4096, np.uint64), "x")
    with pytest.raises(UserError, match="program"):
        memory_depths(TARGETS["hx8k"], [img])


def test_wrong_width_refused():
    target = sim_target(2, 2, 16)
    img = MemoryImage("weights", 64, np.zeros(4, np.uint64), "x")
    with pytest.raises(ValueError, match="32"):
        AcceleratorMemories(target, memory_depths(target), [img])


def test_init_read_ports_and_writes():
    target = sim_target(3, 2, 16)
    rng = np.random.default_rng(0)
    prog = rng.integers(0, 1 << 32, 20, dtype=np.uint64)
    wgt = rng.integers(0, 1 << 32, 10, dtype=np.uint64)
    act = rng.integers(0, 1 << 16, 30, dtype=np.uint64)
    # threshold lanes: T (two's complement, low acc_bits + 2 bits kept), pool, polarity
    thr_lanes = [[-1 & 0xFFFFFFFF, (1 << 31) | (1 << 30) | 77], [5, (1 << 30) | 3]]
    thr = np.array([a | b << 32 for a, b in thr_lanes], dtype=np.uint64)
    imgs = [MemoryImage("program", 32, prog, "p"), MemoryImage("weights", 32, wgt, "w"),
            MemoryImage("thresholds", 64, thr, "t"), MemoryImage("activations", 16, act, "a")]
    dut = AcceleratorMemories(target, memory_depths(target, imgs), imgs)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = {}
    sb = program.score_bits(target)

    async def tb(ctx):
        for a in (0, 7, 19):
            ctx.set(dut.prog_a_raddr, a)
            ctx.set(dut.prog_b_raddr, 19 - a)
            await ctx.tick()
            seen[("p", a)] = (ctx.get(dut.prog_a_rdata), ctx.get(dut.prog_b_rdata))
        for r, a in enumerate((1, 5, 29)):
            ctx.set(dut.act_raddr[r], a)
        await ctx.tick()
        seen["act"] = [ctx.get(dut.act_rdata[r]) for r in range(3)]
        for a in (0, 1):
            ctx.set(dut.thr_raddr, a)
            await ctx.tick()
            seen[("t", a)] = [ctx.get(dut.thr_rdata[c]) for c in range(2)]
        # a word written, then read back
        ctx.set(dut.wgt_waddr, 3)
        ctx.set(dut.wgt_wdata, 0xDEADBEEF)
        ctx.set(dut.wgt_we, 1)
        await ctx.tick()
        ctx.set(dut.wgt_we, 0)
        ctx.set(dut.wgt_raddr, 3)
        await ctx.tick()
        seen["w3"] = ctx.get(dut.wgt_rdata)
        # activation lanes: C = 2 bits each, only the enabled lanes change
        ctx.set(dut.act_waddr, 1)
        ctx.set(dut.act_wdata, 0xFFFF)
        ctx.set(dut.act_wen, 0b0000_0000_1000_0001)
        await ctx.tick()
        ctx.set(dut.act_wen, 0)
        ctx.set(dut.act_raddr[0], 1)
        await ctx.tick()
        seen["lanes"] = ctx.get(dut.act_rdata[0])
        # scores: lanes of score_bits, read back sign-extended to 32 bits
        ctx.set(dut.score_waddr, 5)
        ctx.set(dut.score_wdata[0], -3 & ((1 << sb) - 1))
        ctx.set(dut.score_wdata[1], 1234)
        ctx.set(dut.score_we, 1)
        await ctx.tick()
        ctx.set(dut.score_we, 0)
        ctx.set(dut.score_raddr, 5)
        await ctx.tick()
        seen["s5"] = ctx.get(dut.score_rdata)

    sim.add_testbench(tb)
    sim.run()
    for a in (0, 7, 19):
        assert seen[("p", a)] == (int(prog[a]), int(prog[19 - a]))
    assert seen["act"] == [int(act[1]), int(act[5]), int(act[29])]
    for a in (0, 1):
        assert seen[("t", a)] == [threshold_storage(v, target.acc_bits) for v in thr_lanes[a]]
    assert seen["w3"] == 0xDEADBEEF
    want = (int(act[1]) & ~0b1100_0000_0000_0011) | 0b1100_0000_0000_0011
    assert seen["lanes"] == want
    assert seen["s5"] == (-3 & 0xFFFFFFFF) | 1234 << 32


def test_threshold_storage_keeps_every_decision():
    """The stored bits give back T (clamped range), the flags and a score offset."""
    acc_bits = 10
    for t in (-1, 0, 1, 1023, 1024):
        lane = (1 << 31) | (t & ((1 << 30) - 1))
        v = threshold_storage(lane, acc_bits)
        tw = acc_bits + 2
        low = v & ((1 << tw) - 1)
        assert (low - (1 << tw) if low >> (tw - 1) else low) == t
        assert v >> (tw + 1) == 1 and (v >> tw) & 1 == 0
    for off in (-(1 << 12) + 1, -5, 0, 7, (1 << 12) - 1):  # acc_bits + 3 signed bits
        v = threshold_storage(off & 0xFFFFFFFF, acc_bits)
        tw = acc_bits + 2
        rebuilt = (v & ((1 << tw) - 1)) | (v >> (tw + 1)) << tw
        assert (rebuilt - (1 << (tw + 1)) if rebuilt >> tw else rebuilt) == off


@pytest.mark.toolchain
def test_read_registers_lose_their_power_up_value_in_synthesis(tmp_path):
    """YOSYS_AFTER_READ (the synthesis flow runs it first) takes ``init`` off every RAM read
    register named with RDATA_SUFFIX and off the port it drives, and off nothing else."""
    import subprocess

    from amaranth.back import rtlil
    from amaranth.hdl import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out

    from xnorflow.hw.memories import YOSYS_AFTER_READ, _read
    from xnorflow.synth.tools import require_tool

    class Top(wiring.Component):
        addr: In(4)
        r_data: Out(8)
        count: Out(4)

        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = mem = Memory(shape=8, depth=16, init=range(16))
            m.d.comb += self.r_data.eq(_read(m, mem, self.addr, "r_data"))
            level = Signal(4, init=3)  # an ordinary register keeps its power-up value
            m.d.sync += level.eq(level + 1)
            m.d.comb += self.count.eq(level)
            return m

    (tmp_path / "f.il").write_text(rtlil.convert(Top(), name="top"))

    def with_init(script: str) -> set[str]:
        subprocess.run([require_tool("YOSYS"), "-q", "-p",
                        f"read_rtlil f.il; {script} tee -o w.txt select -list w:* a:init %i"],
                       cwd=tmp_path, capture_output=True, text=True, check=True)
        return {w.split("/")[-1] for w in (tmp_path / "w.txt").read_text().split()}

    before, after = with_init(""), with_init(f"{YOSYS_AFTER_READ};")
    assert {"r_data_rdq", "r_data"} <= before  # Amaranth gives the port the register's init
    assert before - after == {"r_data_rdq", "r_data"}
    assert "level" in after


@pytest.mark.parametrize("name, total", [("up5k", 29), ("hx8k", 32), ("ecp5-85f", 206)])
def test_board_targets_fit_their_block_rams(name, total):
    """The stored memories of each board's target fit its block RAMs (the estimate the
    targets' comments add up; nextpnr's counts are in benchmarks/results/synth.md)."""
    from xnorflow.sw.boards import BOARDS

    t = TARGETS[name]
    blocks = block_rams(t)
    assert sum(blocks.values()) == total <= BOARDS[t.board].brams
    assert (blocks["weights"] == 0) == BOARDS[t.board].spram


def test_stored_shapes_are_what_is_built():
    """Widths and read ports of the built memories == stored_shapes (block_rams' input)."""
    target = sim_target(3, 2, 16)
    mems = AcceleratorMemories(target, memory_depths(target))
    Fragment.get(mems, None)
    shapes = stored_shapes(target)
    assert set(mems.mems) == set(shapes)
    for name, mem in mems.mems.items():
        assert (int(mem.shape), len(mem.read_ports)) == shapes[name], name


def test_block_rams_refuses_a_target_without_board():
    with pytest.raises(ValueError, match="no board"):
        block_rams(sim_target(2, 2, 16))


def test_weight_banks_are_aligned_powers_of_two():
    """``mem_regs = 2`` weights banks: powers of two, largest first, each starting at a
    multiple of its depth, none deeper than WEIGHT_BANK_DEPTH, covering the memory exactly."""
    assert weight_banks(3584) == [(0, 2048), (2048, 1024), (3072, 512)]  # ecp5-85f
    assert weight_banks(8192) == [(0, 2048), (2048, 2048), (4096, 2048), (6144, 2048)]
    assert weight_banks(1) == [(0, 1)]
    for depth in range(1, 5000, 7):
        banks = weight_banks(depth)
        assert sum(d for _, d in banks) == depth and banks[0][0] == 0
        for (base, d), nxt in zip(banks, banks[1:] + [(depth, 0)], strict=True):
            assert d & (d - 1) == 0 and d <= WEIGHT_BANK_DEPTH and base % d == 0
            assert nxt[0] == base + d and nxt[1] <= d


def _wide_target(rows, cols, width, mem_regs, weights_depth):
    """``sim_target(R, C, W, weight_rows=R)`` with ``mem_regs``; with ``mem_regs = 2`` built
    by ``synthetic.banked_target`` (several banks when ``weights_depth`` is not a power of
    two)."""
    t = sim_target(rows, cols, width, weight_rows=rows)
    if mem_regs == 2:
        return synthetic.banked_target(t, weights_depth)
    return dataclasses.replace(t, mem_regs=mem_regs)


@pytest.mark.parametrize("geometry, mem_regs, depth", [
    ((2, 2, 16), 0, 8), ((4, 1, 32), 0, 16), ((8, 2, 64), 0, 4),
    ((2, 4, 32), 1, 8), ((4, 2, 16), 1, 16), ((8, 1, 32), 1, 8),
    ((2, 2, 16), 2, 13), ((4, 4, 64), 2, 11), ((8, 2, 32), 2, 7), ((4, 1, 16), 2, 8)],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_weights_a_word_per_row(geometry, mem_regs, depth):
    """``Target.weight_rows = R``: the weights memory holds ``depth`` words of ``R*C*W``
    bits; ``wgt_raddr`` counts ``C*W``-bit words (memory word ``raddr >> log2 R``, lane
    ``raddr mod R``). Random initial contents and a random address stream with a random
    ``wgt_split`` each cycle: each cycle every row's word against a Python reference, the
    addressed lane ``L`` cycles after its address (``L`` = 1, 3 with ``mem_regs = 2``:
    banked, three banks at depths 13, 11 and 7, and the shared and the rows' own words
    registered once more) or, where ``wgt_split`` is 1 in the cycle the data show, the
    row's own lane. Then host writes of wide words (``wgt_waddr`` in
    wide words), a few to one address, read back through every lane and seen in the
    memory cells."""
    rows, cols, width = geometry
    target = _wide_target(rows, cols, width, mem_regs, depth)
    lat = 3 if mem_regs == 2 else 1
    split_lag = 0  # the split picks after every register
    cw, wide = cols * width, rows * cols * width
    rng = np.random.default_rng(rows * 1000 + cols * 100 + width + mem_regs * 10 + depth)
    ref = [int.from_bytes(rng.bytes(wide // 8), "little") for _ in range(depth)]
    img = MemoryImage("weights", wide, np.array(ref, dtype=object), "test")
    depths = {**{name: 16 for name in DEFAULT_DEPTHS}, "weights": depth}
    dut = AcceleratorMemories(target, depths, [img])
    if mem_regs == 2:
        assert len(weight_banks(depth)) == bin(depth).count("1")
    assert len(dut.wgt_raddr) == (depth - 1).bit_length() + rows.bit_length() - 1
    assert (len(dut.wgt_waddr), len(dut.wgt_wdata)) == ((depth - 1).bit_length(), wide)
    assert dut.wgt_rdata.shape().size == wide

    def lane(word, i):
        return (word >> (i * cw)) & ((1 << cw) - 1)

    writes = [(int(rng.integers(0, depth)), int.from_bytes(rng.bytes(wide // 8), "little"))
              for _ in range(6)]
    writes.append((writes[0][0], int.from_bytes(rng.bytes(wide // 8), "little")))  # rewrite
    n = 24 * rows
    # the stream: random addresses, then after the writes every lane of every written word
    stream1 = [int(v) for v in rng.integers(0, depth * rows, n)]
    stream2 = [a * rows + i for a in sorted({a for a, _ in writes}) for i in range(rows)]
    stream2 += [int(v) for v in rng.integers(0, depth * rows, n)]
    checked = [0]

    async def play(ctx, stream, contents):
        seen = []  # the split of each checked cycle
        splits = []
        for t in range(len(stream) + lat):
            # cycle t: its address and split set, then what the port shows in it (the
            # address of cycle t - lat, the split of cycle t), then the clock edge
            ctx.set(dut.wgt_raddr, int(rng.integers(0, depth * rows)) if t >= len(stream)
                    else stream[t])
            splits.append(int(rng.integers(0, 2)))
            ctx.set(dut.wgt_split, splits[-1])
            got = [ctx.get(dut.wgt_rdata[r]) for r in range(rows)]
            await ctx.tick()
            split = splits[t - split_lag]
            if t >= lat:
                a = stream[t - lat]
                word = contents[a // rows]
                want = [lane(word, r if split else a % rows) for r in range(rows)]
                assert got == want, (t, a, split)
                seen.append(split)
        assert set(seen) == {0, 1}
        checked[0] += len(seen)

    async def tb(ctx):
        await play(ctx, stream1, ref)
        for a, v in writes:
            ctx.set(dut.wgt_waddr, a)
            ctx.set(dut.wgt_wdata, v)
            ctx.set(dut.wgt_we, 1)
            await ctx.tick()
            ref[a] = v
        ctx.set(dut.wgt_we, 0)
        for a in range(depth):
            assert ctx.get(dut.cell("weights", a)) == ref[a], a
        await play(ctx, stream2, ref)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert checked[0] == len(stream1) + len(stream2)


def test_weight_rows_needs_block_ram_weights():
    """A board that keeps its weights in SPRAM (``up5k``) cannot have a weight word per
    row."""
    t = TARGETS["up5k"]
    wide = dataclasses.replace(
        t, weight_rows=8,
        memories={**t.memories, "weights": (8 * t.cols * t.width, t.depth("weights"))})
    with pytest.raises(ValueError, match="weight_rows 8 needs block RAM weights"):
        AcceleratorMemories(wide, memory_depths(wide))
    AcceleratorMemories(t, memory_depths(t))  # weight_rows = 1 builds
