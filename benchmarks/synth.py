"""Synthesis goals (README): builds every target with one nextpnr seed and checks the goals.

Run: ``.venv/bin/python benchmarks/synth.py [--seed 1] [--only icebreaker,hx8k-evn,...]``.
Writes ``benchmarks/results/synth.json`` and ``synth.md``; each build leaves its bitstream,
logs and report in ``bitstreams/<board>/<geometry>/``. Rows: the goal geometries
(whole accelerator + UART), the board targets' own geometries (the bitstreams the compiler
targets: ``xnorflow compile --target up5k`` runs on ``icebreaker``'s), and the bare array +
UART at the goal geometries for reference (its Fmax and LUTs, no memories or control). A
build that does not fit is a row too, with the resources it needed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from xnorflow.sw import files  # noqa: E402
from xnorflow.sw.boards import bitstream_folder  # noqa: E402
from xnorflow.synth import SynthConfig, synthesize, tool_env  # noqa: E402
from xnorflow.synth.report import parse_nextpnr_log, parse_yosys_stat  # noqa: E402

#: The clock goals; every build asks its PLL for its board's goal (not the board's default
#: clock, one the accelerator meets), so that timing closure is judged at the goal.
GOAL_MHZ = {"icebreaker": 48, "hx8k-evn": 120, "ulx3s-85f": 150}
_ICE40_GOAL = (">= 512 binary MACs/cycle at >= 48 MHz, <= 90 % LCs, array >= 50 % of LUT4s "
               "(whole accelerator + UART)")
_ECP5_GOAL = ">= 150 MHz, >= 0.35 binary ops/LUT/cycle (whole accelerator)"


def _macs(r):
    from xnorflow.sw.targets import parse_geometry

    rows, cols, width = parse_geometry(r["geometry"])
    return rows * cols * width


def _ice40_ok(r):
    share = r.get("array_lut_share")
    return (r["fmax_mhz"] >= 48 and r["lc_percent"] <= 90 and _macs(r) >= 512
            and (share is None or share >= 0.5))


def _ecp5_ok(r):
    return r["fmax_mhz"] >= 150 and r.get("binary_ops_per_lut_per_cycle", 0) >= 0.35


def _targets():
    from xnorflow.sw.targets import TARGETS

    return TARGETS


# (board, geometry, design, memory depth overrides, goal text, check(report) -> bool):
# the board targets' own geometries (issue 14's goal geometries: up5k 8x2x32 = 512 MACs,
# hx8k 4x4x32, ecp5-85f 8x8x32), each beside its bare array + UART for reference
GOALS = [
    ("icebreaker", _targets()["up5k"].geometry, "accelerator", {}, _ICE40_GOAL, _ice40_ok),
    ("icebreaker", _targets()["up5k"].geometry, "array", {}, _ICE40_GOAL, _ice40_ok),
    ("hx8k-evn", _targets()["hx8k"].geometry, "accelerator", {}, ">= 120 MHz",
     lambda r: r["fmax_mhz"] >= 120),
    ("hx8k-evn", _targets()["hx8k"].geometry, "array", {}, ">= 120 MHz",
     lambda r: r["fmax_mhz"] >= 120),
    ("ulx3s-85f", _targets()["ecp5-85f"].geometry, "accelerator", {}, _ECP5_GOAL, _ecp5_ok),
]


def _key(board, geometry, design, depths):
    return f"{board} {geometry} {design}{' (small memories)' if depths else ''}"


def popcount_luts(width: int = 64) -> dict:
    """LUT4s of a bare pipelined popcount (yosys synth_ice40, no place and route)."""
    from amaranth.back import rtlil

    from xnorflow.hw.popcount import PopCount

    env = tool_env()
    with tempfile.TemporaryDirectory() as d:
        il = Path(d) / "pop.il"
        il.write_text(rtlil.convert(PopCount(width), name="top"))
        proc = subprocess.run([env["YOSYS"], "-q", "-p",
                               "read_rtlil pop.il; synth_ice40 -top top; tee -o stat.txt stat"],
                              capture_output=True, text=True, cwd=d)
        if proc.returncode:
            raise RuntimeError(f"yosys failed: {proc.stderr.strip()[-500:]}")
        cells = parse_yosys_stat("Printing statistics.\n" + (Path(d) / "stat.txt").read_text())
    return {"width": width, "lut4": cells.get("SB_LUT4", 0), "carry": cells.get("SB_CARRY", 0),
            "ff": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
            "goal": "<= 120 LUT4", "met": cells.get("SB_LUT4", 0) <= 120}


def build_folder(board: str, geometry: str, seed: int) -> Path:
    """Where a build of this benchmark runs (kept: a failed build's logs are read back)."""
    return REPO / "build" / "synth" / board / f"{geometry}-s{seed}"


def out_folder(board: str, geometry: str, design: str) -> Path:
    """Where a build is published: the whole accelerator's in ``bitstreams/`` (committed, the
    bitstream a board runs); a reference build (the bare array) in ``build/`` (not committed),
    so that it never replaces the accelerator's folder of the same geometry."""
    if design == "accelerator":
        return bitstream_folder(board, geometry, REPO / "bitstreams")
    return REPO / "build" / "synth-reference" / board / f"{geometry}-{design}"


def attempt_figures(board: str, geometry: str, seed: int) -> dict | None:
    """Resources of a failed build, from the logs it left (e.g. how many LCs it needed)."""
    d = build_folder(board, geometry, seed)
    out = {}
    if (d / "top.rpt").exists():
        cells = parse_yosys_stat((d / "top.rpt").read_text(errors="replace"))
        out["lut4"] = cells.get("SB_LUT4", cells.get("LUT4"))
        out["carry"] = cells.get("SB_CARRY", cells.get("CCU2C"))
    if (d / "top.tim").exists():
        util = parse_nextpnr_log((d / "top.tim").read_text(errors="replace"))["utilisation"]
        for key in ("ICESTORM_LC", "TRELLIS_COMB", "ICESTORM_RAM", "DP16KD", "ICESTORM_SPRAM"):
            if key in util:
                out[key] = util[key]
    return out or None


def build(board: str, geometry: str, design: str, seed: int, depths: dict,
          out_dir: Path | None = None) -> dict:
    t0 = time.time()
    try:
        out = out_dir or out_folder(board, geometry, design)
        return synthesize(SynthConfig(board=board, geometry=geometry, design=design, seed=seed,
                                      freq_mhz=GOAL_MHZ[board], depths=depths,
                                      out_dir=str(out),
                                      build_dir=str(build_folder(board, geometry, seed))),
                          progress=True)
    except Exception as e:  # a build that does not fit is a result too
        line = f"{type(e).__name__}: {str(e).splitlines()[0][:400]}"
        print(f"  {board} {geometry} {design} failed after {time.time() - t0:.0f} s: {line}",
              flush=True)
        if "--verbose" in sys.argv:
            traceback.print_exc()
        return {"error": line, "attempt": attempt_figures(board, geometry, seed),
                "build_seconds": round(time.time() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", default=None, metavar="S1,S2,...",
                    help="whole-accelerator rows: build with each seed (at most 3, as the "
                    "goals allow) and keep the best Fmax; every seed's Fmax is recorded")
    ap.add_argument("--only", default=None, help="comma-separated boards")
    ap.add_argument("--jobs", type=int, default=1,
                    help="with --seeds: build that many seeds at once, each into its own "
                    "folder, and publish the best seed's folder (no rebuild)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--import-rows", default=None, metavar="JSON",
                    help="no builds: take the rows of the --only boards from JSON (the output "
                    "of an earlier run) into results/synth.json and rewrite synth.md")
    args = ap.parse_args()
    if args.import_rows:
        return import_rows(Path(args.import_rows), set(args.only.split(",")) if args.only else None)
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "synth.json"
    results = json.loads(jpath.read_text()) if jpath.exists() else {"builds": []}
    results["seed"] = args.seed
    results["popcount64"] = popcount_luts(64)
    print(f"bare 64-bit popcount: {results['popcount64']}", flush=True)
    only = set(args.only.split(",")) if args.only else None
    for board, geometry, design, depths, goal, check in GOALS:
        if only and board not in only:
            continue
        key = _key(board, geometry, design, depths)
        seeds = [args.seed]
        if args.seeds and design == "accelerator":
            seeds = [int(x) for x in args.seeds.split(",")][:3]
        tries = {}
        if args.jobs > 1 and len(seeds) > 1:
            tries = parallel_seeds(board, geometry, design, seeds, depths, args.jobs)
        for seed in seeds:
            if seed in tries:
                continue
            print(f"building {key} (seed {seed}) ...", flush=True)
            tries[seed] = build(board, geometry, design, seed, depths)
        ok = {sd: t for sd, t in tries.items() if "error" not in t}
        seed = max(ok, key=lambda sd: ok[sd]["fmax_mhz"]) if ok else seeds[0]
        r = tries[seed]
        if args.jobs > 1 and len(seeds) > 1 and ok:
            r = publish(board, geometry, design, seed, r)
        elif len(seeds) > 1 and ok:  # the kept bitstream is the best seed's: rebuild it last
            r = build(board, geometry, design, seed, depths) if seed != seeds[-1] else r
        row = {"key": key, "board": board, "geometry": geometry, "design_kind": design,
               "goal": goal, "seed": seed, "depths": depths or "board target"}
        if len(seeds) > 1:
            row["fmax_mhz_by_seed"] = {str(sd): t.get("fmax_mhz") for sd, t in tries.items()}
        if "error" in r:
            row.update(met=False, error=r["error"], attempt=r["attempt"],
                       build_seconds=r["build_seconds"])
        else:
            row.update(
                design=r["design"],
                lut4=r["resources"]["lut4"], ff=r["resources"]["ff"],
                lc=r["resources"]["logic_cells"], lc_percent=r.get("lc_percent"),
                bram=r["resources"]["bram"], spram=r["resources"].get("spram"),
                dsp=r["resources"]["dsp"], fmax_mhz=r["fmax_mhz"],
                system_mhz=r["clock"]["system_mhz"], timing_met=r["timing_met"],
                ops_per_lut_cycle=r.get("binary_ops_per_lut_per_cycle"),
                array_lut_share=r.get("array_lut_share"),
                gops=r.get("peak_gops"), build_seconds=r["build_seconds"],
                met=bool(check(r)) and design == "accelerator",
                met_by_what_was_built=bool(check(r)),
            )
        # re-read before writing: another run (--only other boards) may have added rows
        if jpath.exists():
            results["builds"] = json.loads(jpath.read_text()).get("builds", [])
        results["builds"] = [b for b in results["builds"] if b.get("key") != key] + [row]
        _sort(results)
        files.write_text(jpath, json.dumps(results, indent=2, default=str) + "\n")
        write_md(results, out / "synth.md")
        print(f"  -> {json.dumps(row, default=str)}", flush=True)
    write_md(results, out / "synth.md")
    print((out / "synth.md").read_text())
    return 0


def _seed_out(board: str, geometry: str, seed: int) -> Path:
    return build_folder(board, geometry, seed) / "publish"


def parallel_seeds(board, geometry, design, seeds, depths, jobs) -> dict:
    """Build ``seeds`` ``jobs`` at a time, each into its own folder (:func:`_seed_out`)."""
    from concurrent.futures import ProcessPoolExecutor

    print(f"building {board} {geometry} {design}, seeds {seeds}, {jobs} at once ...",
          flush=True)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futs = {sd: pool.submit(build, board, geometry, design, sd, depths,
                                _seed_out(board, geometry, sd)) for sd in seeds}
        return {sd: f.result() for sd, f in futs.items()}


def publish(board, geometry, design, seed, result: dict) -> dict:
    """Copy the best seed's folder to where the build is published, its report's
    ``out_dir`` set to that folder (what a rebuild of that seed would have written)."""
    import shutil

    src, dst = _seed_out(board, geometry, seed), out_folder(board, geometry, design)
    tmp = dst.with_name(dst.name + ".publish-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    rpath = tmp / "report.json"
    if rpath.exists():
        rep = json.loads(rpath.read_text())
        rep["out_dir"] = str(dst)
        files.write_text(rpath, json.dumps(rep, indent=2) + "\n")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return {**result, "out_dir": str(dst)}


def import_rows(src: Path, boards: set | None) -> int:
    out = REPO / "benchmarks" / "results"
    jpath = out / "synth.json"
    results = json.loads(jpath.read_text())
    rows = {b.get("key"): b for b in results["builds"]}
    for b in json.loads(src.read_text())["builds"]:
        if boards is None or b["board"] in boards:
            rows[b.get("key")] = b
    results["builds"] = list(rows.values())
    _sort(results)
    files.write_text(jpath, json.dumps(results, indent=2, default=str) + "\n")
    write_md(results, out / "synth.md")
    print((out / "synth.md").read_text())
    return 0


def _sort(results: dict) -> None:
    """Rows in GOALS order; rows of an older layout of this script (no key) are dropped."""
    order = {_key(b, g, d, dep): i for i, (b, g, d, dep, *_r) in enumerate(GOALS)}
    results["builds"] = sorted((b for b in results["builds"] if b.get("key") in order),
                               key=lambda b: order[b["key"]])


def _needed(att: dict | None) -> str:
    need = []
    for key in ("ICESTORM_LC", "TRELLIS_COMB", "ICESTORM_RAM", "ICESTORM_SPRAM", "DP16KD"):
        if att and key in att:
            u = att[key]
            need.append(f"{key} {u['used']}/{u['available']} ({u['percent']} %)")
    if att and att.get("lut4"):
        need.append(f"{att['lut4']} LUT4 after yosys")
    return "; ".join(need)


def write_md(results: dict, path: Path) -> None:
    p = results["popcount64"]
    lines = [
        "# Synthesis goals (`benchmarks/synth.py`; the nextpnr seed of each build in its row)",
        "",
        "| board | geometry | what was built | LUT4 | FF | LCs | RAM | Fmax MHz | "
        "ops/LUT/cycle | array share | goal | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in results["builds"]:
        what = ("whole accelerator + UART" if b["design_kind"] == "accelerator"
                else "bare array + UART (reference)")
        if isinstance(b.get("depths"), dict):
            what += ", small memories"
        what += f", seed {b['seed']}"
        if b.get("fmax_mhz_by_seed"):
            what += (" (best of seeds " + ", ".join(
                f"{sd}: {f if f is None else f'{f:.2f}'} MHz"
                for sd, f in b["fmax_mhz_by_seed"].items()) + ")")
        if "error" in b:
            need = _needed(b.get("attempt"))
            lines.append(f"| {b['board']} | {b['geometry']} | {what}: **does not fit** "
                         f"({need or b['error'][:160]}) | | | | | | | {b['goal']} | no |")
            continue
        lc = b["lc"]
        ram = b["bram"].get("used", 0)
        spram = (b.get("spram") or {}).get("used", 0)
        opl = b.get("ops_per_lut_cycle")
        share = b.get("array_lut_share")
        met = ("yes" if b["met"] else "no" if b["design_kind"] == "accelerator" else
               f"reference ({'would meet' if b['met_by_what_was_built'] else 'misses'})")
        lines.append(
            f"| {b['board']} | {b['geometry']} | {what} | {b['lut4']} | {b['ff']} | "
            f"{lc.get('used')}/{lc.get('available')} ({b['lc_percent']:.1f} %) | "
            f"{ram} EBR{f' + {spram} SPRAM' if spram else ''} | {b['fmax_mhz']:.1f} | "
            f"{'' if opl is None else f'{opl:.3f}'} | "
            f"{'' if share is None else f'{100 * share:.0f} %'} | {b['goal']} | {met} |")
    lines += ["", "Every row is a board target's own geometry and memories: the bitstreams "
              "`xnorflow compile --target up5k` / `hx8k` / `ecp5-85f` models run on. The array "
              "share is the bare array's LUT4s (synthesised alone) over the whole design's.",
              "", f"Bare 64-bit popcount (`hw/popcount.py`, yosys `synth_ice40`): {p['lut4']} "
              f"LUT4 + {p['carry']} SB_CARRY, {p['ff']} FF; goal {p['goal']}: "
              f"{'met' if p['met'] else 'missed'}."]
    files.write_text(path, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
