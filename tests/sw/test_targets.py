"""Targets: the named boards exist, their memories fit, unknown names are refused."""

import pytest

from xnorflow.sw.errors import UserError
from xnorflow.sw.targets import MEMORY_NAMES, TARGETS, Target, get_target, sim_target


def test_required_targets_exist():
    for name in ("up5k", "hx8k", "ecp5-85f", "sim"):
        t = get_target(name)
        assert t.name == name
        assert set(MEMORY_NAMES) <= set(t.memories)


def test_up5k_weights_are_64_bits_per_cycle():
    t = TARGETS["up5k"]
    assert t.word_bits("weights") == t.cols * t.width == 64


def test_sim_has_no_limits():
    t = TARGETS["sim"]
    assert all(t.depth(m) is None for m in MEMORY_NAMES)


def test_unknown_target_lists_valid_names():
    with pytest.raises(UserError, match="up5k.*hx8k.*ecp5-85f.*sim"):
        get_target("nope")


@pytest.mark.parametrize("rows, cols, width", [(0, 4, 32), (4, 3, 32), (4, 64, 32), (4, 4, 24)])
def test_bad_geometry_refused(rows, cols, width):
    with pytest.raises(ValueError):
        Target("x", rows, cols, width)


def test_ice40_ram_budget():
    """Every memory of the iCE40 targets fits the EBR (4 kbit) / SPRAM budget together."""
    up = TARGETS["up5k"]
    ebr = 0
    for m in ("thresholds", "program", "scores"):
        ebr += -(-up.word_bits(m) * up.depth(m) // 4096)
    ebr += up.rows * -(-up.word_bits("activations") * up.depth("activations") // 4096)
    ebr += -(-up.cols * up.acc_bits // 16)  # the tile engine's result FIFO (256 x 16 per EBR)
    assert ebr <= 30
    assert up.word_bits("weights") * up.depth("weights") <= 4 * 256 * 1024  # 4 SPRAM
    hx = TARGETS["hx8k"]
    ebr = hx.rows * -(-hx.word_bits("activations") * hx.depth("activations") // 4096)
    for m in ("weights", "thresholds", "program", "scores"):
        ebr += -(-hx.word_bits(m) * hx.depth(m) // 4096)
    assert ebr <= 32


def test_sim_target_geometry():
    assert sim_target(2, 2, 16).geometry == "2x2x16"
