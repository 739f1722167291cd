"""Launch the accelerator's cocotb tests (sim/tb/test_accelerator.py) from pytest.

Icarus: the golden scoreboard under four idle/backpressure settings and a reset in the
middle of a network. Verilator: one short run through the ``verilator`` backend.
Seeds are random per run and printed; ``XNORFLOW_COCOTB_SEED`` fixes one.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from xnorflow.sim import backends
from xnorflow.sim.compare import agreement
from xnorflow.sim.rtl import accelerator_verilog
from xnorflow.sim.runner import run_cocotb
from xnorflow.sw import synthetic

from .conftest import make_folder

pytestmark = pytest.mark.toolchain


def _seed() -> int:
    env = os.environ.get("XNORFLOW_COCOTB_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(1 << 31)
    print(f"cocotb seed {seed} (set XNORFLOW_COCOTB_SEED={seed} to repeat)")
    return seed


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A conv + pool + dense network (two hidden layers) for a 2x2x16 accelerator."""
    tmp = tmp_path_factory.mktemp("accel")
    folder, model = make_folder(tmp, 17, geometry=(2, 2, 16), layers=3, in_shape=(5, 5, 3),
                                in_bits=2, classes=4)
    px = synthetic.random_pixels(17, model, 4)
    np.save(tmp / "images.npy", px)
    return folder, model, tmp / "images.npy"


def test_accelerator_icarus(small_model):
    folder, _, images = small_model
    mf = backends.load_model(folder)
    rtl = accelerator_verilog(mf.target, [mf.memories])
    text = rtl.path.read_text()
    assert "module top(" in text and "host_out__payload" in text
    assert accelerator_verilog(mf.target, [mf.memories]).cached
    seed = _seed()
    run = run_cocotb("icarus", rtl, "xnorflow.sim.tb.test_accelerator",
                     test_filter="scoreboard|reset_mid_network", seed=seed, quiet=True,
                     extra_env={"XNORFLOW_TB_MODEL": str(folder),
                                "XNORFLOW_TB_IMAGES": str(images)})
    assert run.tests == 5 and run.failed == 0, f"seed {seed}"


@pytest.mark.verilator
def test_accelerator_verilator_backend(small_model, tmp_path):
    folder, model, images = small_model
    px = np.load(images)[:2]
    out = backends.run(folder, px, "verilator", seed=_seed(), idle=0.3, backpressure=0.3)
    ref = backends.run(folder, px, "golden")
    a = agreement(model, ref, out)
    assert a.exact, a.first
    assert a.bits_compared > 0 and out.cycles.min() > 0


def test_icarus_waves(small_model, tmp_path):
    """--waves on Icarus: an FST of the run is written where asked."""
    folder, _, images = small_model
    px = np.load(images)[:1]
    out = backends.run(folder, px, "icarus", waves=tmp_path / "run.fst", progress=False)
    assert out.waves == tmp_path / "run.fst" and out.waves.stat().st_size > 1000


@pytest.mark.parametrize("sim", ["amaranth", "icarus"])
def test_batched_starts_are_exact(small_model, sim):
    """``batch``: R = 2 images per START (one WRITE of the inputs, START 2, READ scores) under
    random stalls; every hidden bit and score equals golden, and each run of two takes the
    performance model's batch-2 cycle count (shared out over its images). Icarus runs the
    same images one per START and batched as two items of one launch."""
    from xnorflow.sw import perf

    folder, model, images = small_model
    mf = backends.load_model(folder)
    px = np.load(images)[:3]  # runs of 2 and 1
    seed = _seed()
    if sim == "amaranth":
        outs = [backends.run(folder, px, sim, seed=seed, idle=0.3, backpressure=0.3, batch=4,
                             progress=False)]
    else:
        outs = backends.run_rtl_batch(sim, [(mf, px), (mf, px)], seed=seed, idle=0.3,
                                      backpressure=0.3, progress=False, batch=[1, 4])
    ref = backends.run(folder, px, "golden")
    for out in outs:
        a = agreement(model, ref, out)
        assert a.exact and a.bits_compared > 0, (f"seed {seed}", a.first)
    two = perf.predict_network_cycles(mf.model, mf.target, batch=2)
    one = perf.predict_network_cycles(mf.model, mf.target, batch=1)
    assert outs[-1].info["images_per_start"] == 2
    assert outs[-1].cycles.tolist() == [(two + 1) // 2, two // 2, one]
    if sim == "icarus":
        assert outs[0].info["images_per_start"] == 1 and outs[0].cycles.tolist() == [one] * 3


@pytest.mark.parametrize("mem_regs", [1, 2])
def test_registered_memories_on_icarus(tmp_path, mem_regs):
    """``Target.mem_regs`` in the generated Verilog (1: ``hx8k``'s operand and write
    registers; 2: ``ecp5-85f``'s, plus one beside the memories, the weights' per bank, in a
    weights memory just as deep as the network needs so they span several banks, the beat
    player's look-ahead port, a two-stage beat decode and registered header and descriptor
    words): a conv + dense network under random stalls equals golden bit for bit, and each
    image takes the performance model's cycles for that target (2, or 5 and 1 per run, more
    per layer, and with mem_regs = 2 the bubbles of tiles kept 3 beats apart)."""
    import dataclasses

    from xnorflow.hw.memories import weight_banks
    from xnorflow.sw import perf, program

    model = synthetic.random_network(23, in_shape=(5, 5, 3), in_bits=4, layers=3, classes=4)
    target = dataclasses.replace(synthetic.geometry_target(2, 2, 16), mem_regs=mem_regs)
    if mem_regs == 2:
        need = next(m for m in program.build_memories(model, target)
                    if m.name == "weights").depth
        target = synthetic.banked_target(target, need)
        assert weight_banks(need)[0][1] < need  # the weights span two banks or more
    folder = tmp_path / "model"
    synthetic.write_folder(model, target, folder)
    mf = backends.load_model(folder)
    assert mf.target.mem_regs == mem_regs  # recorded in the manifest
    px = synthetic.random_pixels(23, model, 2)
    seed = _seed()
    out = backends.run(folder, px, "icarus", seed=seed, idle=0.3, backpressure=0.3,
                       progress=False)
    a = agreement(model, backends.run(folder, px, "golden"), out)
    assert a.exact and a.bits_compared > 0, (f"seed {seed}", a.first)
    one = perf.predict_network_cycles(mf.model, mf.target, batch=1)
    plain = perf.predict_network_cycles(mf.model, dataclasses.replace(mf.target, mem_regs=0))
    assert out.cycles.tolist() == [one, one]
    per_layer, per_run = {1: (2, 0), 2: (5, 1)}[mem_regs]
    # and the bubbles that keep tiles program.tile_beats apart: 3 beats with mem_regs = 2
    # (the registered threshold word), so on R = 2 a shorter tile plays one bubble more
    beats = [[lp.tiles * lp.groups * lp.beats for lp in perf.network_perf(mf.model, t).layers]
             for t in (mf.target, dataclasses.replace(mf.target, mem_regs=0))]
    bubbles = sum(beats[0]) - sum(beats[1])
    assert bubbles == 0 or (mem_regs == 2 and target.rows < 3)
    assert one == plain + per_layer * len(model.layers) + per_run + bubbles
