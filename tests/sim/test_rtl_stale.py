"""The Verilog cache never stores a design built from modules older than their files.

Regression: a benchmark process that had imported ``hw/host.py`` (the host decoder, now
``hw/link/decoder.py``) before its range-check fix generated the up5k accelerator after the
fix was committed, so the key (hashed from the files on disk) named the new sources while
the Verilog held the old decoder; every later ``xnorflow run -b icarus`` on up5k then failed
loading weights with "address range outside the memory" while the Amaranth backend (which
runs the current modules) passed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time

from xnorflow.sim import rtl
from xnorflow.sim.tb.standin import ByteTransform

MODULE = "xnorflow_test_rtl_stale_knob"


def _load(path, monkeypatch):
    spec = importlib.util.spec_from_file_location(MODULE, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, MODULE, mod)
    return mod


def test_stale_module_not_cached_under_new_key(tmp_path, monkeypatch):
    root = tmp_path / "pkg"
    (root / "hw").mkdir(parents=True)
    (root / "sw").mkdir()
    knob = root / "hw" / "knob.py"
    knob.write_text("DEPTH = 4\n")
    past = time.time() - 100
    os.utime(knob, (past, past))
    monkeypatch.setattr(rtl, "PACKAGE_ROOT", root)
    monkeypatch.setattr(rtl, "_process_start", lambda: past + 50)  # imported DEPTH = 4 ...
    cache = tmp_path / "cache"
    old = _load(knob, monkeypatch)
    assert rtl.stale_modules() == []
    a = rtl.generate("standin", lambda: ByteTransform(old.DEPTH), {}, root=cache)
    assert a.path.parent.name == f"standin-{a.key}"  # fresh modules: shared

    knob.write_text("DEPTH = 8\n")  # ... then someone edits the file under this process
    assert rtl.stale_modules() == [MODULE]
    b = rtl.generate("standin", lambda: ByteTransform(old.DEPTH), {}, root=cache)
    assert b.key != a.key and not b.cached
    shared = cache / "rtl" / f"standin-{b.key}" / "standin.v"
    assert not shared.exists(), "a stale design was cached under the new sources' key"
    assert b.path.read_text() == a.path.read_text()  # this process keeps its own design
    again = rtl.generate("standin", lambda: ByteTransform(old.DEPTH), {}, root=cache)
    assert again.cached and again.path == b.path

    # a later process imports the edited file: it must build (and share) the new design
    monkeypatch.setattr(rtl, "_process_start", lambda: time.time())
    new = _load(knob, monkeypatch)
    assert new.DEPTH == 8 and rtl.stale_modules() == []
    c = rtl.generate("standin", lambda: ByteTransform(new.DEPTH), {}, root=cache)
    assert c.key == b.key and not c.cached and c.path == shared
    assert c.path.read_text() != b.path.read_text()
