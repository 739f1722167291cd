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


def test_up5k_weights_fit_the_four_sprams():
    """(The block RAM budgets of the board targets: tests/hw/test_memories.py.)"""
    up = TARGETS["up5k"]
    assert up.word_bits("weights") * up.depth("weights") <= 4 * 256 * 1024


def test_sim_target_geometry():
    assert sim_target(2, 2, 16).geometry == "2x2x16"


def test_with_geometry_keeps_each_memorys_bits():
    from xnorflow.sw.targets import with_depths, with_geometry

    up = TARGETS["up5k"]
    assert with_geometry(up, up.rows, up.cols, up.width) is up
    t = with_geometry(up, 4, 4, 16)
    assert (t.name, t.board, t.geometry, t.acc_bits) == ("up5k-4x4x16", "icebreaker",
                                                         "4x4x16", up.acc_bits)
    for name, (w, d) in t.memories.items():
        copies, old_copies = (4, up.rows) if name == "activations" else (1, 1)
        old_bits = up.word_bits(name) * up.depth(name) * old_copies
        assert w == sim_target(4, 4, 16).word_bits(name)
        assert w * d * copies <= old_bits < 2 * w * d * copies  # largest power of two
    d = with_depths(t, {"weights": 512})
    assert d.name == "up5k-4x4x16-d" and d.depth("weights") == 512
    assert d.depth("program") == t.depth("program")
    with pytest.raises(UserError, match="unknown memories"):
        with_depths(t, {"nope": 1})
    with pytest.raises(UserError, match="geometry 4x3x16"):
        with_geometry(up, 4, 3, 16)
    # the pipelining (timing) goes with the board, whatever the geometry or depths
    ecp5 = TARGETS["ecp5-85f"]
    for t2 in (with_geometry(ecp5, 4, 4, 32), with_depths(ecp5, {"weights": 512})):
        assert (t2.popcount_levels, t2.mem_regs, t2.acc_bits) == (2, 2, ecp5.acc_bits)


def test_target_record_round_trip_keeps_the_pipelining():
    """A manifest's target record gives back the same target, timing fields included
    (``mem_regs`` changes the cycle count that `xnorflow compare` predicts)."""
    from xnorflow.sw.images import target_from_record, target_record

    for name in ("up5k", "hx8k", "ecp5-85f"):
        t = TARGETS[name]
        back = target_from_record(target_record(t))
        assert (back.popcount_levels, back.mem_regs, back.acc_bits) == (
            t.popcount_levels, t.mem_regs, t.acc_bits)
        assert back.memories == t.memories and back.geometry == t.geometry
    old = target_record(TARGETS["ecp5-85f"])
    del old["mem_regs"]  # a manifest written before the field: no registers
    assert target_from_record(old).mem_regs == 0
