"""Launch the board-top cocotb tests (sim/tb/test_board_top.py) on Icarus: UART pins driven by
cocotbext-uart, a fast baud (clock / 8) to keep the run short."""

import random

import pytest

from xnorflow.sim import rtl
from xnorflow.sim.runner import run_cocotb

pytestmark = pytest.mark.toolchain

DIVISOR = 8
TIMEOUT = 2000


def _echo_top():
    from xnorflow.hw.boards import BoardTop, EchoCore

    return rtl.generate(
        "board_echo",
        lambda: BoardTop(EchoCore(), divisor=DIVISOR, timeout=TIMEOUT),
        {"divisor": DIVISOR, "timeout": TIMEOUT, "core": "echo"},
    )


def test_board_top_echo():
    """UART bridge at line rate, framing error and inter-byte timeout through the pins."""
    seed = random.SystemRandom().randrange(1 << 31)
    run = run_cocotb("icarus", _echo_top(), "xnorflow.sim.tb.test_board_top", seed=seed,
                     quiet=True, extra_env={"BOARD_CORE": "echo", "BOARD_DIVISOR": str(DIVISOR),
                                            "BOARD_TIMEOUT": str(TIMEOUT)})
    assert run.tests == 3 and run.failed == 0, f"seed {seed}: {run.failed} of {run.tests} failed"
