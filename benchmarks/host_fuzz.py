"""Fuzz of the host command decoder (protocol 2): >= 10,000 random and mutated frames into the
whole accelerator in Amaranth's simulator (``xnorflow.sim.fuzz_host``), then STATUS and a
classify through the protocol against the golden model.

Every answer is checked against ``xnorflow.hw.link.protocol.request_status`` (the checks and
their order), READs against the memories, the write-only memories against the accepted
writes; hangs (no answer, ``host_in`` stuck, not ready after ``abort``) are counted.

Usage: .venv/bin/python benchmarks/host_fuzz.py [--frames 10000] [--seed 1]
Writes benchmarks/results/host_fuzz.json and host_fuzz.md; exits 1 on a mismatch, a hang or
a classify that differs from golden.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from xnorflow.sim.fuzz_host import KINDS, FuzzConfig, fuzz
from xnorflow.sw import files

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True).stdout.strip() or "?"
    except OSError:
        return "?"


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return v


def report_md(r: dict) -> str:
    s, c = r["stats"], r["classify"]
    lines = [
        "# Host decoder fuzz (benchmarks/host_fuzz.py)",
        "",
        f"command: `{r['command']}`; git {r['git_head']}; {r['date']}",
        f"geometry {r['geometry']} (depths {r['depths']}), model: {r['model']}",
        f"seed {r['seed']}, idle {r['idle']}, backpressure {r['backpressure']}, hang bound "
        f"{r['hang_bound_cycles']} cycles of silence",
        "",
        f"- frames answered: **{s['frames']}** in {s['cases']} cases; "
        f"**mismatches {s['mismatches']}**, **hangs {s['hangs']}**",
        f"- aborts {s['aborts']}; frames while a run was busy {s['frames_while_busy']} "
        f"(busy at the check not certain: {s['busy_ambiguous']}, either answer allowed)",
        f"- bytes sent {s['bytes_sent']}, received {s['bytes_received']}; memory "
        f"checkpoints {s['memory_checkpoints']} ({s['memory_words_compared']} words compared); "
        f"{s['read_words']} words READ, equal to the memory ({s['read_words_host_written']} "
        "of them known from the host's writes, not a run's: equal to what it wrote)",
        f"- after the fuzz: STATUS {r['after_status']}; classify of {c['images']} images "
        f"through the protocol: predictions {c['predictions']} (golden "
        f"{c['golden_predictions']}), scores equal {c['scores_equal']}, hidden maps equal "
        f"{c['hidden_equal']} ({c['hidden_compared']} compared): "
        f"**{'equal to golden' if c['equal_golden'] else 'DIFFERS FROM GOLDEN'}**",
        f"- {r['sim_cycles']} simulated cycles in {r['wall_s']:.1f} s "
        f"({s['frames'] / r['wall_s']:.0f} frames/s); load average {r['loadavg_before']} "
        f"before, {r['loadavg_after']} after ({r['cpus']} CPUs)",
        "",
        "| status | answers |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in s["statuses"].items()],
        "",
        "| case kind | cases | frames |",
        "|---|---|---|",
        *[f"| {k} | {s['cases_per_kind'].get(k, 0)} | {s['frames_per_kind'].get(k, 0)} |"
          for k in [*KINDS, "repair"]],
        "",
        "| command byte | frames |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in s["frames_per_command"].items()],
    ]
    if s["mismatch_examples"]:
        lines += ["", "First mismatches:", "", *[f"- {e}" for e in s["mismatch_examples"]]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=_positive, default=10_000, help="frames to answer")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT, help="results folder")
    args = ap.parse_args()
    if not args.out.is_dir():
        print(f"--out {args.out}: not a folder", file=sys.stderr)
        return 2
    cfg = FuzzConfig(frames=args.frames, seed=args.seed)
    before = [round(x, 2) for x in os.getloadavg()]
    with tqdm(total=cfg.frames, desc="host fuzz", unit="frame") as bar:
        r = fuzz(cfg, progress=bar.update)
    r = {"command": " ".join(["benchmarks/host_fuzz.py", *sys.argv[1:]]),
         "git_head": _git_head(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "python": sys.version.split()[0], "machine": platform.machine(),
         "cpus": os.cpu_count(), "loadavg_before": before,
         "loadavg_after": [round(x, 2) for x in os.getloadavg()], **r}
    md = report_md(r)
    files.write_text(args.out / "host_fuzz.json", json.dumps(r, indent=2) + "\n")
    files.write_text(args.out / "host_fuzz.md", md)
    print(md)
    s = r["stats"]
    return 0 if s["mismatches"] == 0 and s["hangs"] == 0 and r["classify"]["equal_golden"] else 1


if __name__ == "__main__":
    sys.exit(main())
