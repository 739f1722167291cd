"""What a build reports: yosys and nextpnr log parsing, ``report.json`` and ``report.md``.

A report (``report_version`` :data:`~xnorflow.sw.boards.REPORT_VERSION`, described in
``docs/synthesis.md``) holds resources (LUT4s, flip-flops, carries, logic cells / slices,
RAM blocks, SPRAM, DSPs, I/O), Fmax per clock with the nextpnr seed, and the predicted
images/s of a compiled model at that Fmax (performance model) next to the UART-bound
images/s. Readers find and check it with :func:`xnorflow.sw.boards.load_report`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from xnorflow.sw.boards import REPORT_VERSION
from xnorflow.sw.targets import parse_geometry

from . import outreg
from .tools import tool_versions


def parse_yosys_stat(log: str) -> dict[str, int]:
    """Cell counts of the last ``stat`` in a yosys log (the whole design, after synth_*)."""
    blocks = re.split(r"Printing statistics\.", log)
    if len(blocks) < 2:
        return {}
    last = blocks[-1]
    # yosys prints per-module blocks and, with a hierarchy, a "design hierarchy" total;
    # after synth_* with -flatten there is one module: take the last cell listing.
    cells: dict[str, int] = {}
    # robust form across yosys versions: lines "     <count>   <cell>" or "  <cell>  <count>"
    for line in last.splitlines():
        parts = line.split()
        if len(parts) == 2:
            a, b = parts
            if a.isdigit() and re.fullmatch(r"\$?[A-Z][\w$]*", b):
                cells[b] = int(a)
            elif b.isdigit() and re.fullmatch(r"\$?[A-Z][\w$]*", a):
                cells[a] = int(b)
    return cells


_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)
_FMAX = re.compile(
    r"Max frequency for clock\s+'([^']+)':\s+([\d.]+)\s+MHz\s+\((PASS|FAIL)\s+at\s+([\d.]+)\s+MHz\)"
)


def parse_nextpnr_log(log: str) -> dict:
    """Device utilisation (the last table), Fmax per clock (after routing) and the seed."""
    util: dict[str, dict] = {}
    tables = log.split("Device utilisation:")
    if len(tables) > 1:
        for m in _UTIL.finditer(tables[-1]):
            if m[1] in util:
                break
            util[m[1]] = {"used": int(m[2]), "available": int(m[3]), "percent": int(m[4])}
    fmax: dict[str, dict] = {}
    for m in _FMAX.finditer(log):  # later reports (after routing) overwrite earlier ones
        fmax[m[1]] = {"fmax_mhz": float(m[2]), "constraint_mhz": float(m[4]),
                      "pass": m[3] == "PASS"}
    seed = re.search(r"Generated random seed:\s*(\S+)|--seed[ =](\d+)", log)
    # ECP5: every LUT4 the design uses (logic, the two of each carry cell, distributed RAM)
    total = re.search(r"Total LUT4s:\s*(\d+)/", log)
    return {"utilisation": util, "fmax": fmax, "seed_in_log": seed and (seed[1] or seed[2]),
            "total_lut4": int(total[1]) if total else None}


def failure_message(build: Path, spec) -> str:
    for log, tool in (("top.tim", "nextpnr"), ("top.rpt", "yosys"), ("build.log", "build")):
        p = build / log
        if p.exists():
            errs = [ln.strip() for ln in p.read_text(errors="replace").splitlines()
                    if "ERROR" in ln or "error:" in ln.lower()]
            if errs:
                over = ""
                if tool == "nextpnr":  # say how much the design needed of what was missing
                    util = parse_nextpnr_log(p.read_text(errors="replace"))["utilisation"]
                    over = "; ".join(f"{k} {u['used']}/{u['available']} ({u['percent']} %)"
                                     for k, u in util.items() if u["used"] > u["available"])
                    over = f"; the design needs {over}" if over else ""
                return f"{tool} failed for {spec.name}: {errs[-1]}{over} (log: {p})"
    return f"build failed for {spec.name} (log: {build / 'build.log'})"


def predicted_rates(model, target, fmax_hz: float, baud: int,
                    clock_hz: float | None = None) -> dict:
    """Images/s of ``model``: computing at ``fmax_hz`` (performance model, one image per
    run), and over the host link at ``baud`` with the board running at ``clock_hz``
    (default ``fmax_hz``): the driver's stream of ``max_batch`` images per run
    (:func:`xnorflow.hw.link.throughput.link_rate`)."""
    from xnorflow.hw.link.throughput import image_bytes, link_rate
    from xnorflow.sw.perf import predict_network_cycles, program_cycles
    from xnorflow.sw.program import build_memories, decode_memories

    out: dict = {}
    cycles = int(predict_network_cycles(model, target))
    out["cycles_per_image"] = cycles
    out["images_per_s_compute"] = fmax_hz / cycles if cycles else None
    memories = build_memories(model, target)
    header, _ = decode_memories(memories)
    batch = int(header["max_batch"])
    run = int(program_cycles(memories, target, batch=batch))
    link = link_rate(baud, clock_hz or fmax_hz, batch, *image_bytes(header, target), run)
    out["link"] = link.to_json()
    out["images_per_s_link"] = link.images_per_s
    return out


def make_report(cfg, spec, top, build: Path, elapsed: float, target, model,
                info: dict) -> dict:
    """The report of the build of ``cfg`` (a :class:`~xnorflow.synth.build.SynthConfig`)
    for board ``spec`` whose logs are in ``build``; ``top`` is the
    :class:`~xnorflow.hw.boards.PlatformTop`, ``target`` the accelerator's target (None for a
    stand-in design), ``model`` a compiled model to predict images/s for, or None."""
    yosys_log = (build / "top.rpt").read_text(errors="replace")
    pnr_log = (build / "top.tim").read_text(errors="replace")
    cells = parse_yosys_stat(yosys_log)
    pnr = parse_nextpnr_log(pnr_log)
    util = pnr["utilisation"]
    if spec.family == "ice40":
        luts = cells.get("SB_LUT4", 0)
        ffs = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
        res = {
            "lut4": luts,
            "ff": ffs,
            "carry": cells.get("SB_CARRY", 0),
            "logic_cells": util.get("ICESTORM_LC", {}),
            "bram": util.get("ICESTORM_RAM", {}),
            "spram": util.get("ICESTORM_SPRAM", {}),
            "dsp": util.get("ICESTORM_DSP", {}),
            "io": util.get("SB_IO", {}),
            "pll": util.get("ICESTORM_PLL", {}),
            "global_buffers": util.get("SB_GB", {}),
        }
        lut_capacity = util.get("ICESTORM_LC", {}).get("available")
    else:
        # LUT4 cells plus the LUTs inside carry (CCU2C: 2 each) and RAM cells, as nextpnr
        # counts them: the figure binary ops / LUT / cycle divides by
        luts = pnr["total_lut4"] or cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
        ffs = sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF"))
        outregs = outreg.counts_in(build)  # read registers moved into the block RAMs
        if outregs:
            ffs -= outregs["flops"]
        res = {
            "lut4": luts,
            "lut4_cells": cells.get("LUT4", 0),
            "ff": ffs,
            "carry": cells.get("CCU2C", 0),
            "logic_cells": util.get("TRELLIS_COMB", {}),
            "bram": util.get("DP16KD", {}),
            "spram": {},
            "dsp": util.get("MULT18X18D", {}),
            "io": util.get("TRELLIS_IO", {}),
            "pll": util.get("EHXPLLL", {}),
            "bram_outregs": outregs,
        }
        lut_capacity = util.get("TRELLIS_COMB", {}).get("available")
    sys_clock = _sys_clock_name(pnr["fmax"])
    fmax = pnr["fmax"].get(sys_clock, {}).get("fmax_mhz") if sys_clock else None
    rows, cols, width = parse_geometry(cfg.geometry)
    report = {
        "report_version": REPORT_VERSION,
        "board": spec.name,
        "device": spec.device,
        "family": spec.family,
        "geometry": cfg.geometry,
        "design": info["design"],
        "target": info.get("target"),
        "memories": None if target is None else {
            n: {"width": w, "depth": d} for n, (w, d) in target.memories.items()},
        "seed": int(cfg.seed),
        "clock": {
            "oscillator_mhz": spec.clock_freq / 1e6,
            "system_mhz": top.freq / 1e6,
            "pll": None if top.pll is None else top.pll.params,
            "name": sys_clock,
        },
        "uart": {"baud": top.baud, "divisor": top.divisor, "timeout_cycles": top.timeout},
        "resources": res,
        "yosys_cells": cells,
        "fmax": pnr["fmax"],
        "fmax_mhz": fmax,
        "timing_met": bool(fmax is not None and fmax >= top.freq / 1e6),
        "build_seconds": round(elapsed, 1),
        "tools": tool_versions(yosys_log, spec.family),
    }
    if cfg.design in ("accelerator", "array") and fmax:
        macs_per_cycle = rows * cols * width
        report["peak_gops"] = 2 * macs_per_cycle * fmax * 1e6 / 1e9
        if luts:
            report["binary_ops_per_lut_per_cycle"] = 2 * macs_per_cycle / luts
    if lut_capacity and res["logic_cells"]:
        report["lc_percent"] = 100.0 * res["logic_cells"]["used"] / lut_capacity
    if model is not None and target is not None and fmax:
        report["model"] = {
            "path": str(cfg.model),
            "binary_macs": int(model.binary_macs),
            **predicted_rates(model, target, fmax * 1e6, top.baud, top.freq),
        }
    return report


def _sys_clock_name(fmax: dict) -> str | None:
    for name in fmax:
        if "sync" in name or name.endswith("clk"):
            return name
    return next(iter(fmax), None)


def _fmt(x, unit: str = "") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.2f}{unit}" if x < 1000 else f"{x:,.0f}{unit}"
    return f"{x}{unit}"


def _used(d: dict) -> str:
    if not d:
        return "0"
    return f"{d['used']} / {d['available']} ({d['percent']} %)"


def report_markdown(r: dict) -> str:
    """The human-readable ``report.md`` of a build report."""
    res = r["resources"]
    lines = [
        f"# {r['board']} ({r['device']}), geometry {r['geometry']}",
        "",
        f"Design synthesised: **{r['design']}**. nextpnr seed {r['seed']}. "
        f"Build time {r['build_seconds']} s. Tools: yosys {r['tools']['yosys']}, "
        f"nextpnr {r['tools']['nextpnr']}.",
        "",
        "| resource | used |",
        "|---|---|",
        f"| LUT4 | {res['lut4']} |",
        f"| flip-flops | {res['ff']} |",
        f"| carry cells | {res['carry']} |",
        f"| logic cells ({'ICESTORM_LC' if r['family'] == 'ice40' else 'TRELLIS_COMB'}) "
        f"| {_used(res['logic_cells'])} |",
        f"| RAM blocks ({'EBR 4 kbit' if r['family'] == 'ice40' else 'DP16KD 18 kbit'}) "
        f"| {_used(res['bram'])} |",
        f"| SPRAM (256 kbit) | {_used(res['spram'])} |",
        *([f"| RAM read registers moved into the RAM blocks (`OUTREG`) | "
           f"{res['bram_outregs']['ports']} of {res['bram_outregs']['ports_total']} read "
           f"ports, {res['bram_outregs']['flops']} flip-flops |"]
          if res.get("bram_outregs") else []),
        f"| DSP | {_used(res['dsp'])} |",
        f"| I/O | {_used(res['io'])} |",
        "",
        "| clock | Fmax (MHz) | constraint (MHz) | met |",
        "|---|---|---|---|",
    ]
    for name, f in r["fmax"].items():
        lines.append(f"| `{name}` | {f['fmax_mhz']:.2f} | {f['constraint_mhz']:.2f} | "
                     f"{'yes' if f['pass'] else 'NO'} |")
    clk = r["clock"]
    lines += [
        "",
        f"System clock: {clk['system_mhz']:.3f} MHz from the {clk['oscillator_mhz']:g} MHz "
        f"oscillator ({'PLL ' + json.dumps(clk['pll']) if clk['pll'] else 'no PLL'}); "
        f"timing {'met' if r['timing_met'] else '**NOT met**'}. UART {r['uart']['baud']} baud "
        f"(divisor {r['uart']['divisor']}), inter-byte timeout {r['uart']['timeout_cycles']} "
        "cycles.",
    ]
    if "peak_gops" in r:
        lines += ["", f"Peak {r['peak_gops']:.2f} G binary ops/s at Fmax; "
                  f"{r.get('binary_ops_per_lut_per_cycle', 0):.3f} binary ops / LUT / cycle."]
    if "array_lut_share" in r:
        lines += ["", f"The systolic array alone (yosys, same script): "
                  f"{r['resources']['array_lut4']} LUT4, {100 * r['array_lut_share']:.1f} % of "
                  f"the design's {r['resources']['lut4']} (`array_lut_share`)."]
    if "model" in r:
        mm = r["model"]
        ln = mm["link"]
        lines += [
            "",
            f"Model `{mm['path']}` ({mm['binary_macs']:,} binary MACs/image):",
            "",
            "| | images/s |",
            "|---|---|",
            f"| computing at Fmax (performance model, {_fmt(mm.get('cycles_per_image'))} "
            f"cycles/image, one image per run) | {_fmt(mm.get('images_per_s_compute'))} |",
            f"| over the host link (link model): UART at {ln['baud']:,.0f} baud, system clock "
            f"{ln['clock_mhz']:.2f} MHz, {ln['batch']} images per run of "
            f"{ln['run_cycles']:,} cycles, {ln['bytes_per_image']:.1f} bytes/image | "
            f"{_fmt(mm['images_per_s_link'])} |",
        ]
    lines.append("")
    return "\n".join(lines)
