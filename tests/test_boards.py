"""The board registry (xnorflow.sw.boards): every cross-reference between boards, targets,
platforms, the gateware and the demo's presets resolves."""

import pytest

from xnorflow.demo import PRESETS, _preset
from xnorflow.hw.boards import EchoCore, PlatformTop, make_platform
from xnorflow.sw.boards import BOARDS, FAMILIES, board_of_target, get_board
from xnorflow.sw.errors import UserError
from xnorflow.sw.targets import TARGETS, get_target


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_resolves(name):
    b = BOARDS[name]
    assert b.name == name and b.family in FAMILIES
    target = get_target(b.target)  # every board's target exists ...
    assert target.board == name  # ... and names this board back
    platform = make_platform(b)  # the amaranth-boards class imports
    assert (platform.device, platform.package) == (b.device, b.package)
    assert platform.default_clk == b.clock
    assert platform.lookup(b.clock).clock.frequency == b.clock_freq
    assert set(b.no_init) <= set(target.memories)
    assert not b.no_init or b.spram  # only SPRAM is built without initial contents
    # the PLL can make the default clock
    top = PlatformTop(b, EchoCore())
    assert abs(top.freq - b.default_freq) <= 0.05 * b.default_freq


def test_every_target_names_a_real_board():
    for name, t in TARGETS.items():
        if name == "sim":
            assert t.board is None and board_of_target(name) is None
            continue
        assert t.board in BOARDS, name
        assert board_of_target(name) is BOARDS[t.board]


def test_demo_presets_name_real_boards_and_targets():
    for dataset, model in PRESETS:
        p = _preset(dataset, model)
        assert p["board"] in BOARDS
        assert get_target(p["target"]).board == p["board"]


def test_unknown_board_is_one_line():
    with pytest.raises(UserError, match="unknown board 'nope'; choose one of hx8k-evn"):
        get_board("nope")
