"""Accelerator memories: initial contents from images, R read ports, write ports, depths."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from xnorflow.hw.memories import DEFAULT_DEPTHS, AcceleratorMemories, memory_depths
from xnorflow.sw import program, synthetic
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
    assert d["activations"] >= header["act_words"]
    assert d["scores"] >= header["n_classes"] * header["max_batch"]
    assert memory_depths(TARGETS["up5k"])["weights"] == 16384
    assert memory_depths(sim_target())["program"] == DEFAULT_DEPTHS["program"]


def test_image_too_deep_for_target():
    img = MemoryImage("program", 32, np.zeros(4096, np.uint64), "x")
    with pytest.raises(ValueError, match="program"):
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
    imgs = [MemoryImage("program", 32, prog, "p"), MemoryImage("weights", 32, wgt, "w"),
            MemoryImage("activations", 16, act, "a")]
    dut = AcceleratorMemories(target, memory_depths(target, imgs), imgs)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = {}

    async def tb(ctx):
        for a in (0, 7, 19):
            ctx.set(dut.prog_raddr, a)
            await ctx.tick()
            seen[("p", a)] = ctx.get(dut.prog_rdata)
        for r, a in enumerate((1, 5, 29)):
            ctx.set(dut.act_raddr[r], a)
        await ctx.tick()
        seen["act"] = [ctx.get(dut.act_rdata[r]) for r in range(3)]
        # read enable low holds the data
        ctx.set(dut.act_ren, 0)
        ctx.set(dut.act_raddr[0], 2)
        await ctx.tick()
        seen["held"] = ctx.get(dut.act_rdata[0])
        ctx.set(dut.act_ren, 1)
        # write then read back
        ctx.set(dut.wgt_waddr, 3)
        ctx.set(dut.wgt_wdata, 0xDEADBEEF)
        ctx.set(dut.wgt_we, 1)
        await ctx.tick()
        ctx.set(dut.wgt_we, 0)
        ctx.set(dut.wgt_raddr, 3)
        await ctx.tick()
        seen["w3"] = ctx.get(dut.wgt_rdata)
        ctx.set(dut.score_waddr, 5)
        ctx.set(dut.score_wdata, 1234)
        ctx.set(dut.score_we, 1)
        await ctx.tick()
        ctx.set(dut.score_we, 0)
        ctx.set(dut.score_raddr, 5)
        await ctx.tick()
        seen["s5"] = ctx.get(dut.score_rdata)

    sim.add_testbench(tb)
    sim.run()
    for a in (0, 7, 19):
        assert seen[("p", a)] == int(prog[a])
    assert seen["act"] == [int(act[1]), int(act[5]), int(act[29])]
    assert seen["held"] == int(act[1])
    assert seen["w3"] == 0xDEADBEEF
    assert seen["s5"] == 1234


@pytest.mark.toolchain
def test_read_registers_lose_their_power_up_value_in_synthesis(tmp_path):
    """YOSYS_AFTER_READ (the synthesis flow runs it first) takes ``init`` off every RAM read
    register named with RDATA_SUFFIX and off the port it drives, and off nothing else."""
    import subprocess

    from amaranth.back import rtlil

    from xnorflow.hw.engine import ResultFIFO
    from xnorflow.hw.memories import YOSYS_AFTER_READ
    from xnorflow.synth.tools import require_tool

    (tmp_path / "f.il").write_text(rtlil.convert(ResultFIFO(8, 4), name="top"))

    def with_init(script: str) -> set[str]:
        subprocess.run([require_tool("YOSYS"), "-q", "-p",
                        f"read_rtlil f.il; {script} tee -o w.txt select -list w:* a:init %i"],
                       cwd=tmp_path, capture_output=True, text=True, check=True)
        return {w.split("/")[-1] for w in (tmp_path / "w.txt").read_text().split()}

    before, after = with_init(""), with_init(f"{YOSYS_AFTER_READ};")
    assert {"r_data_rdq", "r_data"} <= before  # Amaranth gives the port the register's init
    assert before - after == {"r_data_rdq", "r_data"}
    assert "level" in after
