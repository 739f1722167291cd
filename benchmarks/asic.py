"""ASIC-oriented figures (docs/asic.md): every block at the targets' geometries on open cell
libraries, with area per binary MAC and the array's share of the accelerator's logic.

Run: ``.venv/bin/python benchmarks/asic.py [--only 2x2x32,4x4x32] [--blocks accelerator]``
(``--only ""``: only the clock-target sweep of the popcount and the PE).
Each (geometry, block) is one ``xnorflow asic`` report (:func:`xnorflow.asic.run_asic`; the
full reports, netlists and logs stay in ``build/asic/<geometry>/``); the rows go to
``benchmarks/results/asic.json`` and the table to ``asic.md``. A run replaces only the rows
it makes, so after a change of the control plane ``--blocks accelerator`` re-measures the
accelerator rows and the derived figures (array share, area per MAC) follow.

Geometries: the board targets' (``up5k`` 8x2x32, ``hx8k`` 4x4x32, ``ecp5-85f`` 8x8x32,
each with its own accumulator width, popcount pipelining and memory depths; a run of the
default geometries drops rows of geometries no longer in the list).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from xnorflow.asic import BLOCKS, FLOW_LABELS, LIMITS, AsicConfig, derived, run_asic  # noqa: E402
from xnorflow.sw import files  # noqa: E402
from xnorflow.sw.targets import TARGETS  # noqa: E402

GEOMETRIES = list(dict.fromkeys(TARGETS[t].geometry for t in ("up5k", "hx8k", "ecp5-85f")))
OUT = REPO / "benchmarks" / "results"


def _slim(rep: dict) -> dict:
    """A block report without its per-cell-type counts (those stay in build/asic/)."""
    out = dict(rep)
    for flow in ("generic", "sky130hd", "osu018"):
        out[flow] = {k: v for k, v in rep[flow].items()
                     if k not in ("cells_by_type", "library", "limits")}
        wp = out[flow].get("worst_path")
        if wp:
            out[flow]["worst_path"] = {k: v for k, v in wp.items() if k != "gates_on_path"}
    out.pop("limits", None)
    return out


def _per_geometry(results: dict) -> list[tuple[str, dict, dict]]:
    """``(geometry, {block: report}, derived figures)`` in table order."""
    out = []
    for geo in sorted(results["reports"], key=lambda g: (GEOMETRIES + [g]).index(g)):
        reps = {b: results["reports"][geo][b] for b in BLOCKS if b in results["reports"][geo]}
        out.append((geo, reps, derived(reps)))
    return out


def _f(v, nd=0):
    if v is None:
        return "-"
    return f"{v:,.{nd}f}" if isinstance(v, float) else f"{v:,}"


def write_md(results: dict, path: Path) -> None:
    table = _per_geometry(results)
    lines = ["# ASIC-oriented figures (`benchmarks/asic.py`, `xnorflow asic`)", "",
             "Logic of each block mapped with yosys (YoWASP) to: generic CMOS gates; "
             "sky130_fd_sc_hd cell **area only**; OSU018 0.18 um cells timed by OpenSTA. "
             "Limits of every figure: " + "; ".join(LIMITS) + ".", "",
             "- generic: " + FLOW_LABELS["generic"]["library"] + "; "
             + FLOW_LABELS["generic"]["limits"] + ".",
             "- sky130hd: " + FLOW_LABELS["sky130hd"]["library"] + "; "
             + FLOW_LABELS["sky130hd"]["limits"] + ".",
             "- OSU018: " + FLOW_LABELS["osu018"]["library"] + "; "
             + FLOW_LABELS["osu018"]["limits"] + ".", "",
             "## Per geometry: the array against the whole accelerator", "",
             "| geometry (target) | binary MACs/cycle | array um^2/MAC (sky130hd) | "
             "accelerator um^2/MAC (sky130hd) | array share of the logic (sky130hd area / "
             "OSU018 area / generic cells) | array implied clock (OSU018) | accelerator "
             "implied clock (OSU018) | accelerator memory bits (not mapped) |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    paths = []
    for geo, reps, d in table:
        R, C, W = (int(x) for x in geo.split("x"))
        arr, acc = reps.get("array"), reps.get("accelerator")
        share = " / ".join(f"{100 * x:.1f} %" if x is not None else "-" for x in (
            d.get("array_share_sky130hd"), d.get("array_share_osu018"),
            d.get("array_share_generic_cells")))
        fmax = [(r or {}).get("osu018", {}).get("worst_path", {}).get("fmax_mhz")
                for r in (arr, acc)]
        target = next(iter(reps.values()))["target"]
        lines.append(
            f"| {geo} ({target}) | {R * C * W:,} | "
            f"{_f(d.get('array_sky130hd_um2_per_binary_mac'), 1)} | "
            f"{_f(d.get('accelerator_sky130hd_um2_per_binary_mac'), 1)} | {share} | "
            f"{_f(fmax[0], 0)} MHz | {_f(fmax[1], 0)} MHz | "
            f"{_f(acc['memory_bits']) if acc else '-'} |")
        wp = (acc or {}).get("osu018", {}).get("worst_path", {})
        if wp.get("paths"):
            paths.append(f"- {geo}: `{wp['start_register']}` -> `{wp['end_register']}`, "
                         f"{wp['gates']} gates, {wp['min_period_ns']:.3f} ns")
    lines += ["", "Worst register-to-register path of each accelerator (OSU018):", "", *paths,
              "", "## Every block", "",
              "| geometry | block | generic cells | flip-flops | transistors | logic depth | "
              "sky130hd cells | sky130hd um^2 | OSU018 um^2 | worst reg-to-reg ns (OSU018) | "
              "implied MHz | memory bits | s (load) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    mems, designs, tools, clock = [], {}, {}, None
    for geo, reps, _ in table:
        for b, r in reps.items():
            g, sky, osu = r["generic"], r["sky130hd"], r["osu018"]
            wp = osu.get("worst_path", {})
            lines.append(
                f"| {geo} | {b} | {_f(g['cells'])} | {_f(g['flip_flops'])} | "
                f"{_f(g['transistors'])} | {_f(g['logic_depth'])} | {_f(sky.get('cells'))} | "
                f"{_f(sky.get('area_um2'))} | {_f(osu.get('area_um2'))} | "
                f"{_f(wp.get('min_period_ns'), 3)} | {_f(wp.get('fmax_mhz'), 1)} | "
                f"{_f(r['memory_bits'])} | {r['elapsed_s']:.0f} ({r['loadavg'][0]:.1f}) |")
            if r["memories"]:
                mems.append(f"- {geo}: " + ", ".join(
                    f"{m['name']} {m['words']:,} x {m['width']}"
                    + (f" ({m['read_ports']} read ports)" if m["read_ports"] > 1 else "")
                    for m in r["memories"]))
            designs.setdefault(geo, []).append(f"{b} = {r['design']}")
            tools, clock = r["tools"], r["clock_ns"]
    lines += ["", "Memories (black boxes: listed, not mapped; a memory with R read ports is one "
              "R-port RAM or R copies):", "", *mems, "", "What was built:", ""]
    lines += [f"- {geo}: " + "; ".join(ds) for geo, ds in designs.items()]
    sweep = results.get("clock_sweep")
    if sweep:
        lines += ["", "Clock target (`--clock-ns`: ABC's delay target for OSU018, OpenSTA's "
                  "period) against the result:", "",
                  "| block | clock target ns | OSU018 cells | OSU018 um^2 | worst reg-to-reg ns |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['geometry']} {r['block']} | {r['clock_ns']:g} | {r['osu018_cells']:,} | "
                  f"{r['osu018_um2']:,.0f} | {r['min_period_ns']:.3f} |" for r in sweep]
    lines += ["", "Tools: " + "; ".join(f"{k}: {v}" for k, v in tools.items()) + ".", "",
              f"Clock target for ABC's mapping to OSU018 and for OpenSTA: {clock} ns. The last "
              "column is the seconds each block took and the 1-minute load average beside it "
              "(a shared 2-core machine).", ""]
    files.write_text(path, "\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated geometries "
                    f"(default: {','.join(GEOMETRIES)})")
    ap.add_argument("--blocks", default=",".join(BLOCKS),
                    help="comma-separated blocks (default: all)")
    ap.add_argument("--rewrite", action="store_true", help="no runs: rewrite asic.md")
    ap.add_argument("--no-clock-sweep", action="store_true",
                    help="skip the popcount/PE runs at 1, 3 and 10 ns clock targets")
    args = ap.parse_args()
    jpath = OUT / "asic.json"
    results = json.loads(jpath.read_text()) if jpath.exists() else {"reports": {}}
    # --only "" runs no geometry (the clock sweep alone)
    geometries = [g for g in args.only.split(",") if g] if args.only is not None else GEOMETRIES
    blocks = tuple(b for b in BLOCKS if b in args.blocks.split(","))
    if args.only is None and not args.rewrite:  # the default set: rows of old geometries go
        results["reports"] = {g: r for g, r in results["reports"].items() if g in GEOMETRIES}
        _save(results, jpath)
    if not args.rewrite:
        for geo in geometries:
            t0 = time.time()
            res = run_asic(AsicConfig(geo, blocks, out_dir=str(REPO / "build" / "asic" / geo)),
                           progress=True)
            # re-read before writing: another run (--only other geometries) may have added rows
            if jpath.exists():
                results = json.loads(jpath.read_text())
            for b, rep in res["blocks"].items():
                results["reports"].setdefault(geo, {})[b] = _slim(rep)
            print(f"{geo}: {time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
            _save(results, jpath)
    if not args.rewrite and not args.no_clock_sweep and {"popcount", "pe"} <= set(blocks):
        results["clock_sweep"] = clock_sweep()
    _save(results, jpath)
    print((OUT / "asic.md").read_text())
    return 0


#: Clock targets of :func:`clock_sweep` (ns).
SWEEP_NS = (1.0, 3.0, 10.0)


def clock_sweep(geometry: str = "4x4x32") -> list[dict]:
    """The popcount and the PE mapped to OSU018 with ABC delay targets of 1, 3 and 10 ns:
    how much the implied clock depends on ``--clock-ns``."""
    rows = []
    for ns in SWEEP_NS:
        res = run_asic(AsicConfig(geometry, ("popcount", "pe"), clock_ns=ns,
                                  out_dir=str(REPO / "build" / "asic" / f"clock-{ns:g}ns")),
                       progress=False)
        for b, rep in res["blocks"].items():
            osu = rep["osu018"]
            rows.append({"geometry": geometry, "block": b, "clock_ns": ns,
                         "osu018_cells": osu["cells"], "osu018_um2": osu["area_um2"],
                         "min_period_ns": osu["worst_path"]["min_period_ns"]})
    return rows


def _save(results: dict, jpath: Path) -> None:
    results["derived"] = {geo: d for geo, _, d in _per_geometry(results)}
    results["limits"] = list(LIMITS)
    results["labels"] = FLOW_LABELS
    files.write_text(jpath, json.dumps(results, indent=2) + "\n")
    write_md(results, OUT / "asic.md")


if __name__ == "__main__":
    sys.exit(main())
