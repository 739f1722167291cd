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
# the accelerator (HW2) and its host driver: skip, not fail, in a checkout without them
pytest.importorskip("xnorflow.hw.accelerator")
pytest.importorskip("xnorflow.hw.driver")


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
