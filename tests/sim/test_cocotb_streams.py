"""Launch the stream-testbench cocotb tests (sim/tb/test_standin.py) on Icarus and Verilator."""

from __future__ import annotations

import random

import pytest

from xnorflow.sim import rtl
from xnorflow.sim.runner import run_cocotb

pytestmark = pytest.mark.toolchain


def _standin():
    from xnorflow.sim.tb.standin import ByteTransform

    return rtl.generate("standin", lambda: ByteTransform(4), {"depth": 4})


@pytest.mark.parametrize(
    # Verilator is covered in the default run by the accelerator test; this one is -m slow
    "sim", ["icarus", pytest.param("verilator", marks=[pytest.mark.verilator, pytest.mark.slow])]
)
def test_stream_testbench(sim):
    seed = random.SystemRandom().randrange(1 << 31)
    print(f"cocotb seed {seed}")
    run = run_cocotb(sim, _standin(), "xnorflow.sim.tb.test_standin", seed=seed, quiet=True)
    assert run.tests >= 11 and run.failed == 0, f"seed {seed}: {run.failed} of {run.tests} failed"
