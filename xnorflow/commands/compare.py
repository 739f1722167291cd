"""``xnorflow compare``: one model, one input set, several backends -> a report folder."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .run import add_board_args, add_data_args, check_shape, load_split

HELP = "run several backends on the same images and check they agree bit for bit"

DESCRIPTION = """\
Run a compiled model folder on the same images with several backends and compare every
hidden-layer output bit, accumulator, score and prediction against the golden model (or the
first backend when golden is not listed). Writes REPORT_DIR/report.md, report.json and
report.png: accuracy per backend, per-sample agreement, cycles per image, utilisation
(binary MACs / (R*C*W) / cycles) and images/s at the Fmax of the accelerator synthesised
for the target's board and geometry (./bitstreams/<board>/<geometry>/report.json, from
`xnorflow synth`) when one exists.

Exits 0 when every backend is bit-exact, 1 on any mismatch (the first differing sample,
layer and output position are printed), 2 on bad input. REPORT_DIR is checked before any
backend runs: it may be new, empty or an earlier compare report (replaced atomically), never
another kind of folder.
"""

EPILOG = """\
examples:
  xnorflow compare --model runs/mlp-up5k --backends golden,cpu,amaranth,icarus -o reports/mlp
  xnorflow compare --model runs/mlp-up5k --backends golden,verilator --limit 100 -o r
  xnorflow compare --model runs/mlp-up5k --backends golden,icarus --limit 2 --waves -o r
  xnorflow compare --model runs/mlp-up5k --backends golden,board --port /dev/ttyUSB1 -o r
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", required=True, metavar="DIR", help="compiled model folder")
    p.add_argument("--backends", "-b", default="golden,cpu,amaranth,icarus",
                   help="comma-separated backends (default: golden,cpu,amaranth,icarus)")
    add_data_args(p)
    p.add_argument("--waves", action="store_true",
                   help="simulated backends dump a waveform into REPORT_DIR")
    p.add_argument("--seed", type=int, default=0, help="seed of random stream stalls")
    p.add_argument("--skip-unavailable", action="store_true",
                   help="report backends that cannot run here instead of failing")
    p.add_argument("-o", "--output", metavar="REPORT_DIR", default="reports/compare",
                   help="report folder (default: reports/compare)")
    add_board_args(p)
    p.set_defaults(func=run)


def is_report_folder(folder: Path) -> bool:
    """Whether ``folder`` is empty or a report written by ``xnorflow compare`` (a
    ``report.json`` naming its backends and reference): the only folders ``-o`` replaces."""
    from xnorflow.sw import files

    return files.is_report_folder(folder, ("backends", "reference"))


def check_report_destination(out: Path) -> None:
    """Refuse ``-o`` before any backend runs when the report could not replace it: a file,
    a link, a mount point, or a folder that is not an earlier compare report (a model
    folder, a training run, a home folder)."""
    from xnorflow.sw.errors import UserError
    from xnorflow.sw.files import check_can_create, existing_folder_only

    existing_folder_only(out)
    if out.is_dir() and not is_report_folder(out):
        raise UserError(f"{out}: exists and is not a compare report folder (no report.json "
                        "from xnorflow compare); refusing to replace it: choose another -o")
    check_can_create(out)


def run(args) -> int:
    from xnorflow.sim import backends
    from xnorflow.sim.compare import compare, write_report
    from xnorflow.sw.errors import UserError

    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not names:
        raise UserError("--backends is empty; e.g. --backends golden,cpu,amaranth,icarus")
    for b in names:
        backends.check_backend(b)
    check_report_destination(Path(args.output))
    if "board" in names:
        backends.check_board_link(args.port, args.baud)
    mf = backends.load_model(args.model)
    x, y, ds = load_split(args)
    check_shape(mf, x, ds.name)
    with tempfile.TemporaryDirectory(prefix="xnorflow-waves-") as wdir:
        r = compare(args.model, x, names, labels=y,
                    waves_dir=Path(wdir) if args.waves else None, seed=args.seed,
                    skip_unavailable=args.skip_unavailable, port=args.port, baud=args.baud)
        out = write_report(r, args.output)
    for b in r.backends:
        p = r.perf[b]
        acc = r.accuracy[b]
        line = f"{b:>9}: accuracy {100 * acc:6.2f} %"
        if b in r.agreements:
            a = r.agreements[b]
            line += f", {a.samples_agree}/{a.samples} samples bit-exact vs {r.reference}"
        if p.get("cycles_per_image"):
            line += (f", {p['cycles_per_image']:.1f} cycles/image, "
                     f"utilisation {100 * p['utilisation']:.1f} %")
            if p.get("images_per_s_at_fmax"):
                line += f", {p['images_per_s_at_fmax']:.0f} images/s at {p['fmax_mhz']:.1f} MHz"
            elif p.get("images_per_s_at_clock"):
                line += (f", {p['images_per_s_at_clock']:.0f} images/s at "
                         f"{p['clock_mhz']:g} MHz (board clock)")
            if p.get("images_per_s_link"):
                ln = p["link"]
                line += (f", {p['images_per_s_link']:.0f} images/s over the link at "
                         f"{ln['baud']:,} baud ({ln['images_per_s_max_batch']:.0f} with "
                         f"{ln['max_batch']} per run)")
        print(line)
    for b, msg in r.unavailable.items():
        print(f"{b:>9}: unavailable: {msg}")
    print(f"report: {out / 'report.md'}")
    if not r.exact:
        name, m = r.first
        print(f"MISMATCH: backend {name} vs {r.reference}: first difference at {m}")
        return 1
    print(f"all {len(r.backends)} backends bit-exact on {r.samples} samples")
    return 0
