"""``xnorflow sweep``: synthesise geometries x boards in parallel; table + Pareto plot."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """\
examples:
  xnorflow sweep --boards icebreaker,hx8k-evn --geometries 1x2x32,2x2x32
  xnorflow sweep --boards ulx3s-85f --geometries 4x4x32,8x8x32 --jobs 1 -o reports/ecp5
  xnorflow sweep --boards icebreaker --geometries 2x2x16 --design loopback

Writes OUT/sweep.csv, OUT/sweep.md and OUT/sweep.png (LUTs vs G binary-ops/s at Fmax, the
Pareto front marked, Fmax annotated); each build also leaves its bitstream and report under
OUT/<board>/<geometry>/. A failed build (e.g. does not fit) is a row with its error.
"""


def register(sub) -> None:
    from xnorflow.synth.build import DESIGNS

    p = sub.add_parser(
        "sweep",
        help="synthesise many geometries x boards in parallel: CSV, Markdown, Pareto plot",
        description="Design-space sweep: one synthesis per (board, geometry), run in parallel "
        "processes, summarised as a table and a plot of LUTs, Fmax and G binary ops/s.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--boards", default="icebreaker,hx8k-evn",
                   help="comma-separated boards (default icebreaker,hx8k-evn)")
    p.add_argument("--geometries", default="1x2x32,2x2x32",
                   help="comma-separated ROWSxCOLSxWIDTH (default 1x2x32,2x2x32)")
    p.add_argument("--design", default="accelerator", choices=DESIGNS)
    p.add_argument("--seed", type=int, default=1, help="nextpnr seed for every build")
    p.add_argument("-j", "--jobs", type=int, default=2, help="parallel builds (default 2)")
    p.add_argument("-o", "--out", default="reports/sweep", help="output folder")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from xnorflow.synth.sweep import sweep

    rows = sweep([b.strip() for b in args.boards.split(",") if b.strip()],
                 [g.strip() for g in args.geometries.split(",") if g.strip()],
                 design=args.design, seed=args.seed, jobs=args.jobs, out=args.out,
                 progress=not args.quiet)
    print((Path(args.out) / "sweep.md").read_text(), end="")
    print(f"wrote {args.out}/sweep.csv, sweep.md, sweep.png")
    return 0 if all(not r.get("error") for r in rows) else 1
