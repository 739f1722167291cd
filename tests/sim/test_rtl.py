"""Verilog generation: ports, caching, cache keys over parameters and hw/ + sw/ sources."""

from __future__ import annotations

import pytest

from xnorflow.sim import rtl
from xnorflow.sim.tb.standin import ByteTransform
from xnorflow.sw import synthetic


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XNORFLOW_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_generate_and_cache(cache):
    calls = []

    def build():
        calls.append(1)
        return ByteTransform(4)

    a = rtl.generate("standin", build, {"depth": 4})
    assert not a.cached and a.path.is_file() and a.path.is_relative_to(cache)
    text = a.path.read_text()
    assert "module top(" in text
    for port in ("host_in__valid", "host_in__ready", "host_in__payload", "host_out__valid",
                 "abort", "clk", "rst"):
        assert port in text
    b = rtl.generate("standin", build, {"depth": 4})
    assert b.cached and b.path == a.path and len(calls) == 1
    c = rtl.generate("standin", lambda: ByteTransform(8), {"depth": 8})
    assert c.key != a.key and not c.cached


def test_key_covers_sources(tmp_path, monkeypatch):
    root = tmp_path / "pkg"
    for d in ("hw", "sw"):
        (root / d).mkdir(parents=True)
        (root / d / "x.py").write_text("A = 1\n")
    monkeypatch.setattr(rtl, "PACKAGE_ROOT", root)
    k1 = rtl.cache_key({"p": 1})
    assert rtl.cache_key({"p": 1}) == k1
    assert rtl.cache_key({"p": 2}) != k1
    (root / "hw" / "x.py").write_text("A = 2\n")
    k2 = rtl.cache_key({"p": 1})
    assert k2 != k1
    (root / "sw" / "y.py").write_text("\n")
    assert rtl.cache_key({"p": 1}) != k2


def test_sizing_images():
    from xnorflow.sw.targets import get_target

    assert rtl.sizing_images(get_target("up5k"), {"weights": 1}) is None
    t = synthetic.geometry_target(2, 4, 16)
    model = synthetic.random_network(9)
    from xnorflow.sw.program import build_memories

    depths = rtl.needed_depths(t, [build_memories(model, t)])
    imgs = {m.name: m for m in rtl.sizing_images(t, depths)}
    assert set(imgs) == set(rtl.SIZED_MEMORIES)
    assert imgs["weights"].width == 4 * 16 and imgs["weights"].depth == depths["weights"]
    assert not imgs["thresholds"].words.any()


def test_key_covers_the_targets_timing_fields():
    """Targets alike but for the accumulator width or the pipelining build different
    gateware: their cache keys differ (a shared key once gave a target the Verilog of one
    with other ``mem_regs``)."""
    import dataclasses

    base = synthetic.geometry_target(2, 2, 16)
    keys = {str(rtl.target_params(t)) for t in (
        base, dataclasses.replace(base, mem_regs=1), dataclasses.replace(base, popcount_levels=3),
        dataclasses.replace(base, acc_bits=20), dataclasses.replace(base, mem_regs=2))}
    assert len(keys) == 5
