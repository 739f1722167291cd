"""Launch the board-top cocotb tests (sim/tb/test_board_top.py) on Icarus: UART pins driven by
cocotbext-uart, a fast baud (clock / 4) to keep the run short."""

import random

import pytest

from xnorflow.sim import rtl
from xnorflow.sim.runner import run_cocotb

pytestmark = pytest.mark.toolchain

DIVISOR = 4
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


def _accel_top(target):
    from xnorflow.hw.accelerator import Accelerator
    from xnorflow.hw.boards import BoardTop

    params = {**rtl.target_params(target), "divisor": DIVISOR, "timeout": TIMEOUT,
              "core": "accelerator"}
    return rtl.generate(
        f"board_accel_{target.geometry}",
        lambda: BoardTop(Accelerator(target), divisor=DIVISOR, timeout=TIMEOUT),
        params,
    )


def test_board_top_accelerator(tmp_path):
    """The whole accelerator behind the UART bridge: a compiled digits-sized model loaded
    with the host driver through cocotbext-uart, classification vs golden, bad frames."""
    import numpy as np

    from xnorflow.sw import synthetic
    from xnorflow.sw.data import load_dataset

    # digits-sized (8x8 4-bit pixels, 10 classes): a 3x3 conv with 4 channels, then dense;
    # small, so loading it over the simulated UART stays short (~770 bytes)
    model = synthetic.random_network(2, in_shape=(8, 8, 1), in_bits=4, classes=10,
                                     max_out_c=8, layers=2)
    target = synthetic.geometry_target(2, 2, 16)
    folder = tmp_path / "model"
    synthetic.write_folder(model, target, folder)
    images = tmp_path / "images.npy"
    np.save(images, load_dataset("digits").x_test[:3])
    seed = random.SystemRandom().randrange(1 << 31)
    run = run_cocotb("icarus", _accel_top(target), "xnorflow.sim.tb.test_board_top", seed=seed,
                     quiet=True, extra_env={"BOARD_CORE": "accelerator",
                                            "BOARD_DIVISOR": str(DIVISOR),
                                            "BOARD_TIMEOUT": str(TIMEOUT),
                                            "BOARD_MODEL": str(folder),
                                            "BOARD_IMAGES": str(images)})
    assert run.tests == 2 and run.failed == 0, f"seed {seed}: {run.failed} of {run.tests} failed"
