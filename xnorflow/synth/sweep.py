"""Design-space sweeps: one synthesis per (board, geometry) in parallel processes, a table
(CSV, Markdown) and a plot of LUTs against G binary ops/s at Fmax with the Pareto front."""

from __future__ import annotations

import csv
import io
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from xnorflow.sw import files
from xnorflow.sw.boards import get_board
from xnorflow.sw.errors import UserError
from xnorflow.sw.targets import parse_geometry

from .build import SynthConfig, synthesize
from .tools import tool_env

__all__ = ["COLUMNS", "mark_pareto", "row_of", "sweep", "write_outputs"]

COLUMNS = ["board", "geometry", "design", "seed", "lut4", "ff", "lc_used", "lc_available",
           "lc_percent", "bram", "spram", "dsp", "fmax_mhz", "system_mhz", "timing_met",
           "gops", "ops_per_lut_cycle", "pareto", "error"]


def _one(board: str, geometry: str, design: str, seed: int, out: str) -> dict:
    """One build of the sweep (in a worker process): its report, or its error."""
    cfg = SynthConfig(board=board, geometry=geometry, design=design, seed=seed,
                      out_dir=str(Path(out) / board / geometry),
                      build_dir=str(Path(out) / ".build" / board / f"{geometry}-s{seed}"))
    try:
        return {"ok": True, "report": synthesize(cfg, progress=False)}
    except Exception as e:  # one failed build (does not fit, ...) must not stop the sweep
        return {"ok": False, "board": board, "geometry": geometry, "error": str(e)}


def row_of(result: dict, design: str, seed: int) -> dict:
    """The table row (:data:`COLUMNS`) of one build's result."""
    if not result["ok"]:
        return {"board": result["board"], "geometry": result["geometry"], "design": design,
                "seed": seed, "error": result["error"].splitlines()[0][:200]}
    r = result["report"]
    res = r["resources"]
    lc = res["logic_cells"]
    return {
        "board": r["board"], "geometry": r["geometry"], "design": r["design"], "seed": r["seed"],
        "lut4": res["lut4"], "ff": res["ff"], "lc_used": lc.get("used"),
        "lc_available": lc.get("available"),
        "lc_percent": round(r["lc_percent"], 1) if r.get("lc_percent") is not None else None,
        "bram": res["bram"].get("used", 0), "spram": res["spram"].get("used", 0),
        "dsp": res["dsp"].get("used", 0), "fmax_mhz": r["fmax_mhz"],
        "system_mhz": round(r["clock"]["system_mhz"], 3), "timing_met": r["timing_met"],
        "gops": round(r["peak_gops"], 3) if "peak_gops" in r else None,
        "ops_per_lut_cycle": (round(r["binary_ops_per_lut_per_cycle"], 4)
                              if "binary_ops_per_lut_per_cycle" in r else None),
        "error": "",
    }


def mark_pareto(rows: list[dict]) -> None:
    """``pareto`` = True for rows no other row beats on both fewer LUTs and more G ops/s
    (per board)."""
    for r in rows:
        r["pareto"] = False
        if r.get("gops") is None or r.get("lut4") is None:
            continue
        r["pareto"] = not any(
            o is not r and o.get("board") == r["board"] and o.get("gops") is not None
            and o["lut4"] <= r["lut4"] and o["gops"] >= r["gops"]
            and (o["lut4"] < r["lut4"] or o["gops"] > r["gops"])
            for o in rows
        )


def write_outputs(rows: list[dict], out: Path) -> None:
    """``out/sweep.csv``, ``sweep.md`` and ``sweep.png`` of ``rows``."""
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in COLUMNS})
    files.write_text(out / "sweep.csv", buf.getvalue())
    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        md.append("| " + " | ".join("" if r.get(k) is None else str(r.get(k, ""))
                                    for k in COLUMNS) + " |")
    files.write_text(out / "sweep.md", "\n".join(md) + "\n")
    plot(rows, out / "sweep.png")


def plot(rows: list[dict], path: Path) -> None:
    """LUT4 against G binary ops/s per board, the Pareto front dashed, Fmax annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for board in sorted({r["board"] for r in rows}):
        pts = [r for r in rows if r["board"] == board and r.get("gops") is not None]
        if not pts:
            continue
        sc = ax.scatter([r["lut4"] for r in pts], [r["gops"] for r in pts], label=board)
        front = sorted((r for r in pts if r.get("pareto")), key=lambda r: r["lut4"])
        ax.plot([r["lut4"] for r in front], [r["gops"] for r in front], "--",
                color=sc.get_facecolor()[0])
        for r in pts:
            ax.annotate(f"{r['geometry']}\n{r['fmax_mhz']:.0f} MHz", (r["lut4"], r["gops"]),
                        fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("LUT4")
    ax.set_ylabel("G binary ops/s at Fmax")
    ax.set_title("xnorflow design space (dashed: Pareto front per board)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    with files.atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def sweep(boards: list[str], geometries: list[str], *, design: str = "accelerator",
          seed: int = 1, jobs: int = 2, out: str | Path = "reports/sweep",
          progress: bool = True) -> list[dict]:
    """Run the builds in ``jobs`` processes; write CSV, Markdown and PNG; return the rows."""
    from tqdm import tqdm


    for b in boards:
        get_board(b)
    for g in geometries:
        parse_geometry(g)
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, not {jobs}")
    tool_env()
    out = Path(out)
    jobs_list = [(b, g) for b in boards for g in geometries]
    results = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futs = [pool.submit(_one, b, g, design, seed, str(out)) for b, g in jobs_list]
        for f in tqdm(as_completed(futs), total=len(futs), desc="sweep", disable=not progress):
            results.append(f.result())
    order = {bg: i for i, bg in enumerate(jobs_list)}
    rows = [row_of(r, design, seed) for r in results]
    rows.sort(key=lambda r: order[(r["board"], r["geometry"])])
    mark_pareto(rows)
    write_outputs(rows, out)
    return rows
